// calib.c: calibration Grams, the calibration-aware pair score, the units'
// output energy and the activation-aware merge (see calib.h).
#include "calib.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "common.h"
#include "model.h"

// ---------------------------------------------------------------------------
// collecting the Grams

// dst[n x n] (fp64) += the upper triangle of tmp (fp32), mirrored.
static void add_sym(double *dst, const float *tmp, int n) {
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++) {
            double v = tmp[(size_t)i * n + j];
            dst[(size_t)i * n + j] += v;
            if (j != i) dst[(size_t)j * n + i] += v;
        }
}

// The windows to use (the loader's first ones, max_tokens tokens rounded up to
// whole windows) and a CPU model of w reserved for batches of *B of them. The
// number of windows, or -1 with ps_err set (what: the caller, for the message).
static long open_model(const HostWeights *w, Loader *ld, long max_tokens, const char *what,
                       Model *M, int *B) {
    int T = loader_seq_len(ld);
    long nwin = (long)loader_num_windows(ld), want = (max_tokens + T - 1) / T;
    if (want > nwin) want = nwin;
    if (want < 1) return ps_err_set("%s: no window of %d tokens in the data", what, T);
    model_init_table(M, backend_cpu(), &w->t);
    model_set_params(M, w->params);
    *B = (int)(1024 / T) < 1 ? 1 : (int)(1024 / T);
    model_reserve(M, *B, T);
    return want;
}

int calib_collect(const HostWeights *w, Loader *ld, long max_tokens, CalibGrams *g) {
    CHECK(!w->t.shared, "calibration needs a full model");
    const LlamaConfig *c = &w->t.cfg;
    int L = c->n_layers, U = c->n_kv_heads, C = c->dim, hd = cfg_head_dim(c);
    int W = c->n_heads / U * hd, qd = c->n_heads * hd, T = loader_seq_len(ld);
    Model M;
    int B = 1;
    long want = open_model(w, ld, max_tokens, "calibration", &M, &B);
    if (want < 0) return -1;
    memset(g, 0, sizeof *g);
    g->L = L, g->U = U, g->C = C, g->W = W;
    g->gin = xcalloc((size_t)L * C * C, sizeof(double));
    g->gout = xcalloc((size_t)L * U * W * W, sizeof(double));
    const Backend *be = backend_cpu();
    size_t cap = (size_t)M.a.B * M.a.T;
    int *inp = xmalloc(sizeof(int) * (size_t)B * T), *tgt = xmalloc(sizeof(int) * (size_t)B * T);
    float *x = xmalloc(sizeof(float) * (size_t)B * T * (C > qd ? C : qd));
    float *tmp = xmalloc(sizeof(float) * (size_t)(C > W ? C : W) * (C > W ? C : W));
    for (long k0 = 0; k0 < want; k0 += B) {
        int b = (int)(want - k0 < B ? want - k0 : B), n = b * T;
        loader_read_batch(ld, (uint64_t)k0, b, inp, tgt);
        model_forward(&M, inp, NULL, b, T);
        for (int l = 0; l < L; l++) {
            be->download_f32(x, (const char *)M.a.ln1 + (size_t)l * cap * C * be->act_bytes,
                             (size_t)n * C);
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, C, n, 1.0f, x, C, 0.0f, tmp, C);
            add_sym(g->gin + (size_t)l * C * C, tmp, C);
            be->download_f32(x, (const char *)M.a.ao + (size_t)l * cap * qd * be->act_bytes,
                             (size_t)n * qd);
            for (int u = 0; u < U; u++) {
                cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, W, n, 1.0f, x + (size_t)u * W,
                            qd, 0.0f, tmp, W);
                add_sym(g->gout + ((size_t)l * U + u) * W * W, tmp, W);
            }
        }
        g->tokens += n;
    }
    free(inp);
    free(tgt);
    free(x);
    free(tmp);
    model_free(&M);
    return 0;
}

static int unit_rows(const LlamaConfig *c, int k);
static const ParamKind k_slice_kinds[4] = {P_WQ, P_WK, P_WV, P_WO};

// Where unit u's slice of kind k starts inside its layer's tensor (elements): rows
// (Wq/Wk/Wv) are contiguous [rows, C]; Wo columns have leading dimension nh*hd.
static size_t slice_offset(const LlamaConfig *c, int u, int k, size_t *ld, int *rows, int *cols) {
    int qd = c->n_heads * cfg_head_dim(c), W = qd / c->n_kv_heads;
    if (k < 3) {
        *rows = unit_rows(c, k), *cols = c->dim, *ld = (size_t)c->dim;
        return (size_t)u * *rows * c->dim;
    }
    *rows = c->dim, *cols = W, *ld = (size_t)qd;
    return (size_t)u * W;
}

// The mean loss on the loader's first windows (max_tokens tokens, at least one
// window) of the intact model (*base) and, for every unit t of layers >= 1 in
// turn, of the model with t changed (delta[t] = that loss - *base; 0 in layer 0):
// src NULL: t removed (its Wo columns zeroed: it adds nothing to the residual);
// else t's four slices replaced by those of unit src[t] (a copy share). Only the
// changed tensors of t's layer are uploaded (from scratch buffers: w is never
// written), one forward pass per unit on the CPU backend, all on the same tokens.
static long unit_sweep(const HostWeights *w, Loader *ld, long max_tokens, const int *src,
                       const char *what, double *delta, double *base) {
    const LlamaConfig *c = &w->t.cfg;
    int L = c->n_layers, U = c->n_kv_heads, T = loader_seq_len(ld);
    Model M;
    int B = 1;
    long want = open_model(w, ld, max_tokens, what, &M, &B);
    if (want < 0) return -1;
    const Backend *be = backend_cpu();
    int *inp = xmalloc(sizeof(int) * (size_t)want * T),
        *tgt = xmalloc(sizeof(int) * (size_t)want * T);
    for (long k = 0; k < want; k++)
        loader_read_batch(ld, (uint64_t)k, 1, inp + (size_t)k * T, tgt + (size_t)k * T);
    long counted = model_count_targets(tgt, (int)(want * T));
    size_t biggest = 0;
    for (int k = 0; k < 4; k++) {
        size_t n = param_layer(&w->t, 0, k_slice_kinds[k])->numel;
        biggest = n > biggest ? n : biggest;
    }
    float *tmp = xmalloc(sizeof(float) * biggest);
    for (int i = -1; i < L * U; i++) {
        int l = i < 0 ? 0 : i / U, u = i < 0 ? 0 : i % U;
        if (i >= 0 && l == 0) {
            delta[i] = 0;
            continue;  // layer 0 is never replaced
        }
        for (int k = 0; i >= 0 && k < 4; k++) {
            if (!src && k < 3) continue;  // removal touches Wo only
            const ParamEntry *pe = param_layer(&w->t, l, k_slice_kinds[k]);
            memcpy(tmp, w->params + pe->offset, sizeof(float) * pe->numel);
            size_t ldw;
            int rows, cols;
            float *d = tmp + slice_offset(c, u, k, &ldw, &rows, &cols);
            const float *s = NULL;
            if (src)
                s = w->params + param_layer(&w->t, src[i] / U, k_slice_kinds[k])->offset +
                    slice_offset(c, src[i] % U, k, &ldw, &rows, &cols);
            for (int r = 0; r < rows; r++) {
                if (s)
                    memcpy(d + (size_t)r * ldw, s + (size_t)r * ldw, sizeof(float) * (size_t)cols);
                else
                    memset(d + (size_t)r * ldw, 0, sizeof(float) * (size_t)cols);
            }
            be->upload_f32((char *)M.params + pe->offset * be->act_bytes, tmp, pe->numel);
        }
        double sum = 0;  // loss summed over counted targets
        for (long k0 = 0; k0 < want; k0 += B) {
            int b = (int)(want - k0 < B ? want - k0 : B);
            const int *tg = tgt + (size_t)k0 * T;
            int cnt = model_count_targets(tg, b * T);
            if (cnt) sum += (double)model_forward(&M, inp + (size_t)k0 * T, tg, b, T) * cnt;
        }
        double loss = counted ? sum / (double)counted : 0;
        if (i < 0) {
            *base = loss;
            continue;
        }
        delta[i] = loss - *base;
        for (int k = src ? 0 : 3; k < 4; k++) {  // restore what was changed
            const ParamEntry *pe = param_layer(&w->t, l, k_slice_kinds[k]);
            be->upload_f32((char *)M.params + pe->offset * be->act_bytes, w->params + pe->offset,
                           pe->numel);
        }
    }
    free(tmp);
    free(inp);
    free(tgt);
    model_free(&M);
    return want * T;
}

int calib_importance(const HostWeights *w, Loader *ld, long max_tokens, int verbose,
                     CalibGrams *g) {
    CHECK(!w->t.shared, "head importance needs a full model");
    const LlamaConfig *c = &w->t.cfg;
    int L = c->n_layers, U = c->n_kv_heads;
    double *imp = xcalloc((size_t)L * U, sizeof(double)), base = 0;
    long n = unit_sweep(w, ld, max_tokens, NULL, "head importance", imp, &base);
    if (n < 0) {
        free(imp);
        return -1;
    }
    free(g->imp);
    g->imp = imp, g->imp_base = base, g->imp_tokens = n;
    for (int i = U; verbose && i < L * U; i++)
        fprintf(stderr, "importance: layer %d unit %d: loss %.5f (%+.5f)\n", i / U, i % U,
                base + imp[i], imp[i]);
    return 0;
}

int calib_damage(const HostWeights *w, Loader *ld, long max_tokens, int verbose, CalibGrams *g) {
    CHECK(!w->t.shared, "measured sharing damage needs a full model");
    const LlamaConfig *c = &w->t.cfg;
    int L = c->n_layers, U = c->n_kv_heads;
    CHECK(g->gin && g->L == L && g->U == U && g->C == c->dim,
          "measured sharing damage needs the model's calibration Grams first");
    ShareLayerView *views = xcalloc((size_t)L, sizeof *views);
    share_layer_views(&w->t, w->params, views);
    ShareSim sim;
    calib_match(c, views, g, CALIB_SCORE_ERROR, &sim);
    free(views);
    double *dmg = xcalloc((size_t)L * U, sizeof(double)), base = 0;
    long n = unit_sweep(w, ld, max_tokens, sim.best, "measured sharing damage", dmg, &base);
    if (n < 0) {
        free(dmg);
        share_sim_free(&sim);
        return -1;
    }
    free(g->dmg);
    free(g->dmg_src);
    g->dmg = dmg, g->dmg_base = base, g->dmg_tokens = n;
    g->dmg_src = xmalloc(sizeof(int) * (size_t)L * U);
    memcpy(g->dmg_src, sim.best, sizeof(int) * (size_t)L * U);
    for (int i = U; verbose && i < L * U; i++)
        fprintf(stderr, "damage: layer %d unit %d <- layer %d unit %d: loss %.5f (%+.5f)\n", i / U,
                i % U, sim.best[i] / U, sim.best[i] % U, base + dmg[i], dmg[i]);
    share_sim_free(&sim);
    return 0;
}

void calib_free(CalibGrams *g) {
    free(g->gin);
    free(g->gout);
    free(g->imp);
    free(g->dmg);
    free(g->dmg_src);
    memset(g, 0, sizeof *g);
}

// ---------------------------------------------------------------------------
// slices

// Rows of one unit's slice of kind k (0 Wq, 1 Wk, 2 Wv) and its pointer.
static int unit_rows(const LlamaConfig *c, int k) {
    return (k == 0 ? c->n_heads / c->n_kv_heads : 1) * cfg_head_dim(c);
}
static const float *rows_of(const ShareLayerView *v, int k) {
    return k == 0 ? v->wq : k == 1 ? v->wk : v->wv;
}

// Unit u's Wo columns as a contiguous [C, W] matrix.
static void wo_unit(const LlamaConfig *c, const float *wo, int u, float *out) {
    int C = c->dim, qd = c->n_heads * cfg_head_dim(c), W = qd / c->n_kv_heads;
    for (int r = 0; r < C; r++)
        memcpy(out + (size_t)r * W, wo + (size_t)r * qd + (size_t)u * W, 4 * (size_t)W);
}

static float *to_float(const double *a, size_t n) {
    float *f = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) f[i] = (float)a[i];
    return f;
}

// <A, B> over n floats, fp64 accumulation.
static double dotf(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

// ---------------------------------------------------------------------------
// the pair score

// e[t*N + s] += the slice error of kind k for every pair; own[t] = e_k(t, 0).
static void slice_errors(const LlamaConfig *cfg, const ShareLayerView *views, const float *gl,
                         const float *H, int k, double *e, double *own) {
    int L = cfg->n_layers, U = cfg->n_kv_heads, N = L * U, C = cfg->dim;
    float *blk = xmalloc(sizeof(float) * (size_t)U * U);
    if (k < 3) {
        // e = <K_s, G_l> - 2 <A_t G_l, A_s> + <A_t G_l, A_t>, K_s = A_s^T A_s, l = t's layer.
        int r = unit_rows(cfg, k);
        size_t D = (size_t)r * C;
        float *P = xmalloc(sizeof(float) * (size_t)U * D);
        for (int l = 1; l < L; l++) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, U * r, C, C, 1.0f,
                        rows_of(&views[l], k), C, gl + (size_t)l * C * C, C, 0.0f, P, C);
            for (int u = 0; u < U; u++)
                own[l * U + u] = dotf(P + u * D, rows_of(&views[l], k) + u * D, D);
            for (int m = 0; m < l; m++) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, U, U, (int)D, 1.0f, P, (int)D,
                            rows_of(&views[m], k), (int)D, 0.0f, blk, U);
                for (int u = 0; u < U; u++)
                    for (int v = 0; v < U; v++)
                        e[(size_t)(l * U + u) * N + m * U + v] +=
                            own[l * U + u] - 2.0 * blk[u * U + v];
            }
        }
        free(P);
#pragma omp parallel
        {
            float *K = xmalloc(sizeof(float) * (size_t)C * C);
#pragma omp for schedule(dynamic, 1)
            for (int s = 0; s < N - U; s++) {
                int m = s / U;
                cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, C, r, 1.0f,
                            rows_of(&views[m], k) + (size_t)(s % U) * D, C, 0.0f, K, C);
                for (int i = 0; i < C; i++)
                    for (int j = 0; j < i; j++) K[(size_t)i * C + j] = K[(size_t)j * C + i];
                for (int l = m + 1; l < L; l++) {
                    double v = dotf(K, gl + (size_t)l * C * C, (size_t)C * C);
                    for (int u = 0; u < U; u++) e[(size_t)(l * U + u) * N + s] += v;
                }
            }
            free(K);
        }
    } else {
        // Wo: e = <B_s^T B_s, H_t> - 2 <B_t H_t, B_s> + <B_t H_t, B_t>, B = a unit's [C, W]
        // columns, H_t the target's output Gram.
        int W = cfg->n_heads / U * cfg_head_dim(cfg);
        size_t D = (size_t)C * W, WW = (size_t)W * W;
        float *B = xmalloc(sizeof(float) * (size_t)N * D),
              *P = xmalloc(sizeof(float) * (size_t)N * D);
        float *KO = xmalloc(sizeof(float) * (size_t)N * WW);
        for (int i = 0; i < N; i++) wo_unit(cfg, views[i / U].wo, i % U, B + i * D);
#pragma omp parallel for schedule(dynamic, 1)
        for (int i = 0; i < N; i++) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, W, W, 1.0f, B + i * D, W,
                        H + i * WW, W, 0.0f, P + i * D, W);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, W, W, C, 1.0f, B + i * D, W,
                        B + i * D, W, 0.0f, KO + i * WW, W);
            own[i] = dotf(P + i * D, B + i * D, D);
        }
        for (int l = 1; l < L; l++)
            for (int m = 0; m < l; m++) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, U, U, (int)D, 1.0f,
                            P + (size_t)l * U * D, (int)D, B + (size_t)m * U * D, (int)D, 0.0f, blk,
                            U);
                for (int u = 0; u < U; u++)
                    for (int v = 0; v < U; v++) {
                        int t = l * U + u, s = m * U + v;
                        e[(size_t)t * N + s] +=
                            dotf(KO + s * WW, H + t * WW, WW) - 2.0 * blk[u * U + v] + own[t];
                    }
            }
        free(B);
        free(P);
        free(KO);
    }
    free(blk);
}

void calib_match(const LlamaConfig *cfg, const ShareLayerView *views, const CalibGrams *g,
                 CalibScore score, ShareSim *out) {
    int L = cfg->n_layers, U = cfg->n_kv_heads, N = L * U, C = cfg->dim;
    int importance = score == CALIB_SCORE_IMPORTANCE, measured = score == CALIB_SCORE_MEASURED;
    CHECK(g->L == L && g->U == U && g->C == C, "calibration Grams of another model shape");
    CHECK(!importance || g->imp, "match 'importance' without head importance");
    CHECK(!measured || (g->dmg && g->dmg_src), "match 'measured' without measured damage");
    share_views_need_all(views, L,
                         importance ? "match 'importance'"
                         : measured ? "match 'measured'"
                                    : "match 'calib'");
    share_sim_alloc(cfg, out);
    double *d = xcalloc((size_t)N * N, sizeof(double)),
           *e = xmalloc(sizeof(double) * (size_t)N * N);
    double *own = xmalloc(sizeof(double) * (size_t)N), *d0 = xcalloc((size_t)N, sizeof(double));
    float *gl = to_float(g->gin, (size_t)L * C * C);
    float *H = to_float(g->gout, (size_t)N * g->W * g->W);
    for (int k = 0; k < 4; k++) {
        memset(e, 0, sizeof(double) * (size_t)N * N);
        memset(own, 0, sizeof(double) * (size_t)N);
        slice_errors(cfg, views, gl, H, k, e, own);
        for (int l = 1; l < L; l++) {
            double mean = 0;
            for (int u = 0; u < U; u++) mean += own[l * U + u] / U;
            if (!(mean > 0)) mean = 1;
            for (int t = l * U; t < (l + 1) * U; t++) {
                d0[t] += own[t] / mean / 4;
                for (int s = 0; s < l * U; s++)
                    d[(size_t)t * N + s] += e[(size_t)t * N + s] / mean / 4;
            }
        }
    }
    // importance: predicted loss increase imp+(t) * d(t, s) / d(t, 0), imp+ = max(imp, eps),
    // reported as 1 / (1 + increase / mean imp+).
    // measured: the same with the loss increase measured for t's calibration-best
    // source s* in place of the removal's: D(t, s) = dmg+(t) * d(t, s) / d(t, s*).
    // A measured sharing that lowers the loss (dmg < 0) ranks before one that costs
    // nothing: the damages are shifted by their minimum when it is negative, so
    // their order survives the floor (a removal's negative importance is floored).
    const double *meas = importance ? g->imp : measured ? g->dmg : NULL;
    double eps = 0, mimp = 0, shift = 0;
    if (meas) {
        for (int t = U; t < N; t++) mimp += fabs(meas[t]) / (N - U);
        eps = 1e-3 * mimp + 1e-30;
        for (int t = U; measured && t < N; t++) shift = fmin(shift, meas[t]);
        mimp = 0;
        for (int t = U; t < N; t++) mimp += fmax(meas[t] - shift, eps) / (N - U);
    }
    for (int t = U; t < N; t++) {
        double ref = importance ? d0[t] : measured ? d[(size_t)t * N + g->dmg_src[t]] : 1;
        for (int s = 0; s < (t / U) * U; s++) {
            double v = d[(size_t)t * N + s];
            v = v > 0 ? v : 0;
            if (meas) v = fmax(meas[t] - shift, eps) * v / (ref > 0 ? ref : 1) / mimp;
            out->sim[(size_t)t * N + s] = (float)(1.0 / (1.0 + v));
        }
    }
    share_sim_best(out);
    free(gl);
    free(H);
    free(d);
    free(d0);
    free(e);
    free(own);
}

void calib_output_energy(const LlamaConfig *cfg, const ShareLayerView *views, const CalibGrams *g,
                         double *energy) {
    int U = cfg->n_kv_heads, N = cfg->n_layers * U, C = cfg->dim, W = g->W;
    float *B = xmalloc(sizeof(float) * (size_t)C * W), *P = xmalloc(sizeof(float) * (size_t)C * W);
    for (int i = 0; i < N; i++) {
        float *H = to_float(g->gout + (size_t)i * W * W, (size_t)W * W);
        wo_unit(cfg, views[i / U].wo, i % U, B);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, W, W, 1.0f, B, W, H, W, 0.0f, P,
                    W);
        energy[i] = dotf(P, B, (size_t)C * W) / (g->tokens > 0 ? (double)g->tokens : 1.0);
        free(H);
    }
    free(B);
    free(P);
}

// ---------------------------------------------------------------------------
// merge

int calib_spd_solve(double *A, int n, double *B, int m) {
    // A = R^T R, R upper triangular, stored in A's upper triangle.
    for (int j = 0; j < n; j++) {
        double s = A[(size_t)j * n + j];
        for (int k = 0; k < j; k++) s -= A[(size_t)k * n + j] * A[(size_t)k * n + j];
        if (!(s > 0)) return -1;
        double rjj = sqrt(s);
        A[(size_t)j * n + j] = rjj;
        for (int i = j + 1; i < n; i++) {
            double t = A[(size_t)j * n + i];
            for (int k = 0; k < j; k++) t -= A[(size_t)k * n + j] * A[(size_t)k * n + i];
            A[(size_t)j * n + i] = t / rjj;
        }
    }
    // R^T Y = B, then R X = Y, column block by column block (rows of B).
    for (int i = 0; i < n; i++) {
        double *bi = B + (size_t)i * m;
        for (int k = 0; k < i; k++) {
            double r = A[(size_t)k * n + i];
            const double *bk = B + (size_t)k * m;
            for (int c = 0; c < m; c++) bi[c] -= r * bk[c];
        }
        for (int c = 0; c < m; c++) bi[c] /= A[(size_t)i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) {
        double *bi = B + (size_t)i * m;
        for (int k = i + 1; k < n; k++) {
            double r = A[(size_t)i * n + k];
            const double *bk = B + (size_t)k * m;
            for (int c = 0; c < m; c++) bi[c] -= r * bk[c];
        }
        for (int c = 0; c < m; c++) bi[c] /= A[(size_t)i * n + i];
    }
    return 0;
}

// Pointer to the first element of unit u's slice of kind k in a full model
// (slice_offset gives its layout).
static float *slice_at(HostWeights *w, int layer, int u, int k, size_t *ld, int *rows, int *cols) {
    return w->params + param_layer(&w->t, layer, k_slice_kinds[k])->offset +
           slice_offset(&w->t.cfg, u, k, ld, rows, cols);
}

void calib_merge(HostWeights *w, const SharePlan *plan, const CalibGrams *g) {
    const LlamaConfig *c = &w->t.cfg;
    int U = c->n_kv_heads, N = c->n_layers * U, C = c->dim, W = g->W;
    CHECK(g->L == c->n_layers && g->U == U && g->C == C,
          "calibration Grams of another model shape");
    int *src = xmalloc(sizeof(int) * (size_t)N);
    share_plan_src(plan, src);
    for (int s = 0; s < N; s++) {
        int members = 0;
        for (int i = 0; i < N; i++) members += src[i] == s && i != s;
        if (!members) continue;
        for (int k = 0; k < 4; k++) {
            int n = k < 3 ? C : W;  // the slice's input dimension
            size_t ld;
            int rows, cols;
            slice_at(w, s / U, s % U, k, &ld, &rows, &cols);
            double *A = xcalloc((size_t)n * n, sizeof(double));
            double *X = xcalloc((size_t)n * rows, sizeof(double));  // (sum_i A_i G_i)^T [n, rows]
            for (int i = 0; i < N; i++) {
                if (src[i] != s) continue;
                const double *G =
                    k < 3 ? g->gin + (size_t)(i / U) * C * C : g->gout + (size_t)i * W * W;
                float *a = slice_at(w, i / U, i % U, k, &ld, &rows, &cols);
                for (size_t j = 0; j < (size_t)n * n; j++) A[j] += G[j];
                // X[p][r] += sum_q G[p][q] a[r][q]
                for (int r = 0; r < rows; r++) {
                    const float *ar = a + (size_t)r * ld;
                    for (int p = 0; p < n; p++) {
                        const double *gp = G + (size_t)p * n;
                        double t = 0;
                        for (int q = 0; q < n; q++) t += gp[q] * ar[q];
                        X[(size_t)p * rows + r] += t;
                    }
                }
            }
            double tr = 0;
            for (int p = 0; p < n; p++) tr += A[(size_t)p * n + p];
            for (int p = 0; p < n; p++) A[(size_t)p * n + p] += 1e-6 * tr / n + 1e-30;
            CHECK(calib_spd_solve(A, n, X, rows) == 0,
                  "merge: the calibration Gram of %s's slices is not positive definite", "a unit");
            for (int i = 0; i < N; i++) {
                if (src[i] != s) continue;
                float *a = slice_at(w, i / U, i % U, k, &ld, &rows, &cols);
                for (int r = 0; r < rows; r++)
                    for (int p = 0; p < n; p++)
                        a[(size_t)r * ld + p] = (float)X[(size_t)p * rows + r];
            }
            free(A);
            free(X);
        }
    }
    free(src);
}

// ---------------------------------------------------------------------------
// file

static const char k_calib_magic[8] = {'P', 'S', 'C', 'A', 'L', 'I', 'B', '1'};
static const char k_imp_magic[8] = {'P', 'S', 'I', 'M', 'P', '0', '0', '1'};
static const char k_dmg_magic[8] = {'P', 'S', 'D', 'M', 'G', '0', '0', '1'};

// A per-unit loss sweep section (importance, damage) at p: magic, int64 tokens,
// float64 base loss, float64 values[n].
static void write_sweep(char *p, const char magic[8], long tokens, double base, const double *v,
                        size_t n) {
    int64_t t = tokens;
    memcpy(p, magic, 8);
    memcpy(p + 8, &t, 8);
    memcpy(p + 16, &base, 8);
    memcpy(p + 24, v, 8 * n);
}

static double *read_sweep(const char *p, size_t n, long *tokens, double *base) {
    int64_t t;
    memcpy(&t, p + 8, 8);
    memcpy(base, p + 16, 8);
    *tokens = (long)t;
    double *v = xmalloc(8 * n);
    memcpy(v, p + 24, 8 * n);
    return v;
}

int calib_write(const char *path, const CalibGrams *g) {
    size_t nin = (size_t)g->L * g->C * g->C, nout = (size_t)g->L * g->U * g->W * g->W;
    size_t n0 = 8 + 5 * 8 + 8 * (nin + nout), nimp = (size_t)g->L * g->U;
    size_t n1 = n0 + (g->imp ? 24 + 8 * nimp : 0);
    size_t n = n1 + (g->dmg ? 24 + 12 * nimp : 0);
    char *buf = xmalloc(n);
    memcpy(buf, k_calib_magic, 8);
    int64_t h[5] = {g->L, g->U, g->C, g->W, g->tokens};
    memcpy(buf + 8, h, sizeof h);
    memcpy(buf + 48, g->gin, 8 * nin);
    memcpy(buf + 48 + 8 * nin, g->gout, 8 * nout);
    if (g->imp) write_sweep(buf + n0, k_imp_magic, g->imp_tokens, g->imp_base, g->imp, nimp);
    if (g->dmg) {
        write_sweep(buf + n1, k_dmg_magic, g->dmg_tokens, g->dmg_base, g->dmg, nimp);
        for (size_t i = 0; i < nimp; i++) {
            int32_t v = g->dmg_src[i];
            memcpy(buf + n1 + 24 + 8 * nimp + 4 * i, &v, 4);
        }
    }
    int rc = ps_write_file_atomic(path, buf, n);
    free(buf);
    return rc;
}

int calib_read(const char *path, const LlamaConfig *cfg, CalibGrams *g) {
    memset(g, 0, sizeof *g);
    size_t len;
    char *buf = ps_read_file(path, &len);
    if (!buf) return -1;
    int64_t h[5];
    if (len < 48 || memcmp(buf, k_calib_magic, 8)) {
        free(buf);
        return ps_err_set("%s: not a calibration file (postshare calibrate)", path);
    }
    memcpy(h, buf + 8, sizeof h);
    int bad = 0;
    for (int i = 0; i < 4; i++) bad |= h[i] < 1 || h[i] > (1 << 20);
    if (bad || h[4] < 0) {
        free(buf);
        return ps_err_set("%s: bad calibration header", path);
    }
    // each count at most 2^40 by the bounds above; their products can overflow
    size_t nimp = (size_t)h[0] * h[1], nin, nout;
    if (ps_mul_size((size_t)h[0], (size_t)h[2] * h[2], &nin) ||
        ps_mul_size(nimp, (size_t)h[3] * h[3], &nout) || nin > len / 8 || nout > len / 8) {
        free(buf);
        return ps_err_set(
            "%s: its header (%lld layers x %lld units, dim %lld, unit width %lld) "
            "implies more Gram data than the file's %zu bytes (truncated?)",
            path, (long long)h[0], (long long)h[1], (long long)h[2], (long long)h[3], len);
    }
    size_t n0 = 48 + 8 * (nin + nout);
    // optional sections after the Grams, in this order: importance, damage
    size_t at = n0;
    int has_imp = len >= at + 24 + 8 * nimp && !memcmp(buf + at, k_imp_magic, 8);
    size_t at_imp = at;
    if (has_imp) at += 24 + 8 * nimp;
    int has_dmg = len >= at + 24 + 12 * nimp && !memcmp(buf + at, k_dmg_magic, 8);
    size_t at_dmg = at;
    if (has_dmg) at += 24 + 12 * nimp;
    if (len != at) {
        free(buf);
        return ps_err_set(
            "%s: %zu bytes, but its header implies %zu, %zu with head importance, %zu with "
            "measured damage, %zu with both (truncated?)",
            path, len, n0, n0 + 24 + 8 * nimp, n0 + 24 + 12 * nimp, n0 + 48 + 20 * nimp);
    }
    int *dmg_src = has_dmg ? xmalloc(sizeof(int) * nimp) : NULL;
    for (size_t i = 0; has_dmg && i < nimp; i++) {
        int32_t v;
        double d;
        memcpy(&v, buf + at_dmg + 24 + 8 * nimp + 4 * i, 4);
        memcpy(&d, buf + at_dmg + 24 + 8 * i, 8);
        long layer = (long)(i / (size_t)h[1]);
        if (layer == 0 ? v != -1 : (v < 0 || v >= layer * h[1]) || !isfinite(d)) {
            free(dmg_src);
            free(buf);
            return ps_err_set(
                "%s: measured damage of unit %zu (layer %ld): source %d or value %g is invalid "
                "(sources are units of earlier layers, -1 in layer 0)",
                path, i, layer, (int)v, d);
        }
        dmg_src[i] = v;
    }
    if (cfg) {
        int hd = cfg_head_dim(cfg), W = cfg->n_heads / cfg->n_kv_heads * hd;
        if (h[0] != cfg->n_layers || h[1] != cfg->n_kv_heads || h[2] != cfg->dim || h[3] != W) {
            free(dmg_src);
            free(buf);
            return ps_err_set(
                "%s: calibration for %lld layers x %lld units (dim %lld, unit width %lld), but "
                "the model has %d x %d (dim %d, unit width %d)",
                path, (long long)h[0], (long long)h[1], (long long)h[2], (long long)h[3],
                cfg->n_layers, cfg->n_kv_heads, cfg->dim, W);
        }
    }
    g->L = (int)h[0], g->U = (int)h[1], g->C = (int)h[2], g->W = (int)h[3], g->tokens = (long)h[4];
    g->gin = xmalloc(8 * nin);
    g->gout = xmalloc(8 * nout);
    memcpy(g->gin, buf + 48, 8 * nin);
    memcpy(g->gout, buf + 48 + 8 * nin, 8 * nout);
    if (has_imp) g->imp = read_sweep(buf + at_imp, nimp, &g->imp_tokens, &g->imp_base);
    if (has_dmg) g->dmg = read_sweep(buf + at_dmg, nimp, &g->dmg_tokens, &g->dmg_base);
    g->dmg_src = dmg_src;
    free(buf);
    return 0;
}
