// test_share_calib.c: the symmetry-aware and calibration-aware parts of
// sharing (align.h, calib.h) and the baseline plans.
//   - a unit transformed by a random function-preserving transform (RoPE-plane
//     rotations, an invertible value map, a query-head permutation) leaves the
//     logits unchanged and has circuit similarity 1 with the original, while
//     a quarter-turn transform has plain cosine 0; the circuit similarity
//     equals an explicit float64 computation with C x C circuits;
//   - align moves a transformed copy (orthogonal or general value map) back onto
//     its source (distance -> 0) and changes no logit; the output Grams it
//     transforms equal those collected again from the aligned model;
//   - the calibration Grams of layer 0 equal a direct computation (T = 1, so
//     attention is the identity on v); the calibration score equals a direct
//     float64 computation; the merge solves its normal equations, and with
//     diagonal Grams is the closed-form per-column weighted mean;
//   - head importance equals the loss of the model with the unit removed, and
//     the importance score its formula against float64;
//   - random plans are reproducible, valid and reach every count; pruning
//     takes the units of lowest output energy; the calibration file round-trips
//     and rejects a truncated copy.
#include <math.h>
#include <unistd.h>

#include "align.h"
#include "calib.h"
#include "common.h"
#include "hf_io.h"
#include "model.h"
#include "params.h"
#include "share.h"
#include "shard.h"
#include "test.h"
#include "test_share_util.h"

static LlamaConfig cfg_of(int L, int nh, int nkv, int dim) {
    return (LlamaConfig){dim,   L, nh, nkv, 40,   48,   32,   10000.0f,
                         1e-5f, 0, 0,  0,   0.0f, 0.0f, 0.0f, 0};
}

static double urand(Rng *r) {
    return (double)(rng_u64(r) >> 11) / 9007199254740992.0;
}

// A random value map M = R1 D R2 (Givens rotations, positive diagonal D) and its inverse.
static void random_value_map(Rng *r, int n, int orthogonal, double *M, double *Mi) {
    double *A = xcalloc((size_t)n * n, sizeof(double)), *B = xcalloc((size_t)n * n, sizeof(double));
    for (int i = 0; i < n; i++) A[i * n + i] = B[i * n + i] = 1;
    for (int rep = 0; rep < 3 * n; rep++) {  // A <- G A, B <- B G^T (so B = A^-1 while orthogonal)
        int i = (int)(rng_u64(r) % (uint64_t)n), j = (int)(rng_u64(r) % (uint64_t)n);
        if (i == j) continue;
        double t = 2 * M_PI * urand(r), c = cos(t), s = sin(t);
        for (int k = 0; k < n; k++) {
            double a = A[i * n + k], b = A[j * n + k];
            A[i * n + k] = c * a - s * b, A[j * n + k] = s * a + c * b;
            a = B[k * n + i], b = B[k * n + j];
            B[k * n + i] = c * a - s * b, B[k * n + j] = s * a + c * b;
        }
        if (!orthogonal && rep == n) {  // scale rows of A, columns of B inversely
            for (int k = 0; k < n; k++) {
                double d = 0.5 + 1.5 * urand(r);
                for (int m = 0; m < n; m++) A[k * n + m] *= d, B[m * n + k] /= d;
            }
        }
    }
    memcpy(M, A, sizeof(double) * (size_t)n * n);
    memcpy(Mi, B, sizeof(double) * (size_t)n * n);
    free(A);
    free(B);
}

// Apply random RoPE-plane rotations, a random value map (orthogonal or not)
// and the query-head permutation perm to unit (l, u).
static void random_transform(HostWeights *w, int l, int u, uint64_t seed, int orthogonal,
                             const int *perm) {
    int hd = cfg_head_dim(&w->t.cfg);
    Rng r;
    rng_seed(&r, seed);
    double theta[64], *M = xmalloc(sizeof(double) * (size_t)hd * hd),
                      *Mi = xmalloc(sizeof(double) * (size_t)hd * hd);
    for (int f = 0; f < hd / 2; f++) theta[f] = 2 * M_PI * urand(&r);
    random_value_map(&r, hd, orthogonal, M, Mi);
    UnitTransform x = {perm, theta, M, Mi};
    align_apply(w, l, u, &x);
    free(M);
    free(Mi);
}

static double sim_of(const HostWeights *w, ShareMatchFn fn, int i, int j) {
    ShareSim s;
    CHECK(share_sim_compute(w, fn, NULL, 0, &s) == 0, "%s", ps_err_msg());
    double v = s.sim[(size_t)i * s.N + j];
    share_sim_free(&s);
    return v;
}

static void test_transform_invariance(void) {
    LlamaConfig c = cfg_of(2, 6, 2, 48);  // G = 3, hd = 8: 4 RoPE planes
    int hd = cfg_head_dim(&c), U = c.n_kv_heads, G = c.n_heads / U;
    HostWeights w;
    make_model(&w, &c, 7);
    copy_unit(&w, 1, 0, 0, 1);
    T_CHECK(fabs(sim_of(&w, MATCH_CIRCUIT, 1 * U + 0, 1) - 1) < 1e-5, "copy: circuit != 1");
    float *before = logits_of(&w, 2, 9);
    const int perm[3] = {2, 0, 1};
    random_transform(&w, 1, 0, 5, 0, perm);
    float *after = logits_of(&w, 2, 9);
    double e = t_rel_err(after, before, (size_t)2 * 9 * c.vocab_size);
    T_CHECK(e < 1e-5, "random transform changed the logits: rel err %.3g", e);
    double circ = sim_of(&w, MATCH_CIRCUIT, 1 * U + 0, 1);
    T_CHECK(fabs(circ - 1) < 1e-5, "random transform: circuit similarity %.7f, want 1", circ);
    printf("random R, M, perm: logits rel err %.2g, circuit %.7f, cosine qkv %.4f\n", e, circ,
           sim_of(&w, MATCH_QKV, 1 * U + 0, 1));
    // A quarter turn in every plane and a value map of quarter turns: cosine exactly 0.
    HostWeights w2;
    make_model(&w2, &c, 8);
    copy_unit(&w2, 1, 0, 0, 1);
    double q[16], J[64] = {0}, Jt[64] = {0};
    for (int f = 0; f < hd / 2; f++) q[f] = M_PI / 2;
    for (int i = 0; i < hd; i += 2) J[i * hd + i + 1] = -1, J[(i + 1) * hd + i] = 1;
    for (int i = 0; i < hd; i++)
        for (int j = 0; j < hd; j++) Jt[i * hd + j] = J[j * hd + i];
    UnitTransform y = {NULL, q, J, Jt};
    align_apply(&w2, 1, 0, &y);
    double cq = sim_of(&w2, MATCH_QKV, 1 * U + 0, 1), cc = sim_of(&w2, MATCH_CIRCUIT, 1 * U + 0, 1);
    T_CHECK(fabs(cq) < 1e-5, "quarter turns: cosine qkv %.3g, want 0", cq);
    T_CHECK(fabs(cc - 1) < 1e-5, "quarter turns: circuit %.7f, want 1", cc);
    printf("quarter turns: cosine qkv %.2g, circuit %.7f\n", cq, cc);
    (void)G;
    free(before);
    free(after);
    host_weights_free(&w);
    host_weights_free(&w2);
}

// Circuit similarity of MHA heads against explicit C x C circuits in float64.
static void test_circuit_values(void) {
    LlamaConfig c = cfg_of(2, 2, 2, 16);  // MHA, hd = 8
    int C = c.dim, hd = cfg_head_dim(&c), h2 = hd / 2, qd = c.n_heads * hd;
    HostWeights w;
    make_model(&w, &c, 11);
    // circuits[unit][plane][2][C*C] and ov[unit][C*C]
    size_t CC = (size_t)C * C;
    double *qk = xcalloc((size_t)4 * h2 * 2 * CC, sizeof(double)),
           *ov = xcalloc((size_t)4 * CC, sizeof(double));
    for (int i = 0; i < 4; i++) {
        int l = i / 2, u = i % 2;
        const float *Q = w.params + param_layer(&w.t, l, P_WQ)->offset + (size_t)u * hd * C;
        const float *K = w.params + param_layer(&w.t, l, P_WK)->offset + (size_t)u * hd * C;
        const float *V = w.params + param_layer(&w.t, l, P_WV)->offset + (size_t)u * hd * C;
        const float *O = w.params + param_layer(&w.t, l, P_WO)->offset + (size_t)u * hd;
        for (int f = 0; f < h2; f++)
            for (int a = 0; a < C; a++)
                for (int b = 0; b < C; b++) {
                    double q0 = Q[(size_t)f * C + a], q1 = Q[(size_t)(f + h2) * C + a];
                    double k0 = K[(size_t)f * C + b], k1 = K[(size_t)(f + h2) * C + b];
                    qk[(((size_t)i * h2 + f) * 2 + 0) * CC + a * C + b] = q0 * k0 + q1 * k1;
                    // Q^T J K, J = [[0, -1], [1, 0]]
                    qk[(((size_t)i * h2 + f) * 2 + 1) * CC + a * C + b] = -q0 * k1 + q1 * k0;
                }
        for (int a = 0; a < C; a++)
            for (int b = 0; b < C; b++) {
                double s = 0;
                for (int k = 0; k < hd; k++)
                    s += (double)O[(size_t)a * qd + k] * V[(size_t)k * C + b];
                ov[i * CC + a * C + b] = s;
            }
    }
    ShareSim s;
    share_sim_compute(&w, MATCH_CIRCUIT, NULL, 0, &s);
    double worst = 0;
    for (int t = 2; t < 4; t++)
        for (int j = 0; j < 2; j++) {
            double d[2] = {0}, nt[2] = {0}, nj[2] = {0};
            size_t nq = (size_t)h2 * 2 * CC;
            for (size_t x = 0; x < nq; x++) {
                double a = qk[t * nq + x], b = qk[j * nq + x];
                d[0] += a * b, nt[0] += a * a, nj[0] += b * b;
            }
            for (size_t x = 0; x < CC; x++) {
                double a = ov[t * CC + x], b = ov[j * CC + x];
                d[1] += a * b, nt[1] += a * a, nj[1] += b * b;
            }
            double want = 0.5 * (d[0] / sqrt(nt[0] * nj[0]) + d[1] / sqrt(nt[1] * nj[1]));
            double e = fabs(want - s.sim[(size_t)t * 4 + j]);
            if (e > worst) worst = e;
        }
    T_CHECK(worst < 1e-5, "circuit vs explicit float64: max err %.3g", worst);
    share_sim_free(&s);
    free(qk);
    free(ov);
    host_weights_free(&w);
}

// A target made from its source by a random function-preserving transform
// (orthogonal value map or not) comes back onto it; no logit changes.
static void test_align(int orthogonal) {
    LlamaConfig c = cfg_of(3, 6, 2, 48);
    HostWeights w;
    make_model(&w, &c, 17);
    copy_unit(&w, 2, 1, 0, 0);
    const int perm[3] = {1, 2, 0};
    random_transform(&w, 2, 1, 9, orthogonal, perm);
    float *before = logits_of(&w, 2, 7);
    ShareEntry e[2] = {{1, 0, 0, 1, 0}, {2, 1, 0, 0, 0}};
    SharePlan p = {.cfg = c, .match = MATCH_CIRCUIT, .n = 2, .e = e};
    double d0, d1;
    double dtr = align_pair_distance(&w, 2, 1, 0, 0);
    align_plan(&w, &p, NULL, &d0, &d1);
    float *after = logits_of(&w, 2, 7);
    double err = t_rel_err(after, before, (size_t)2 * 7 * c.vocab_size);
    double dcopy = align_pair_distance(&w, 2, 1, 0, 0), drand = align_pair_distance(&w, 1, 0, 0, 1);
    printf(
        "align (%s value map): mean distance %.4f -> %.4f; transformed copy %.3f -> %.2g; "
        "logits rel err %.2g\n",
        orthogonal ? "orthogonal" : "general", d0, d1, dtr, dcopy, err);
    T_CHECK(err < 1e-5, "align changed the logits: rel err %.3g", err);
    T_CHECK(dcopy < 1e-4, "align: the transformed copy is %.3g from its source", dcopy);
    T_CHECK(d1 < d0 && drand < d0, "align: distance %.4f -> %.4f (random pair %.4f)", d0, d1,
            drand);
    free(before);
    free(after);
    host_weights_free(&w);
}

// Write a shard of random tokens; returns its path (static buffer).
static const char *random_shard(int n, int V, uint64_t seed) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/ps_calib_%d.bin", (int)getpid());
    uint16_t *t = xmalloc(sizeof(uint16_t) * (size_t)n);
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) t[i] = (uint16_t)(rng_u64(&r) % (uint64_t)V);
    int32_t hdr[SHARD_HEADER_INTS] = {20240520, 1, n};
    FILE *f = xfopen(path, "wb");
    fwrite(hdr, sizeof hdr, 1, f);
    fwrite(t, sizeof(uint16_t), (size_t)n, f);
    fclose(f);
    free(t);
    return path;
}

static void test_grams(void) {
    LlamaConfig c = cfg_of(2, 4, 2, 16);
    int C = c.dim, hd = cfg_head_dim(&c), U = c.n_kv_heads, G = c.n_heads / U, W = G * hd;
    HostWeights w;
    make_model(&w, &c, 23);
    int n = 300;
    const char *path = random_shard(n + 1, c.vocab_size, 3);
    Loader *ld = loader_open(path, 1, c.vocab_size, 0, 0);
    CHECK(ld, "%s", ps_err_msg());
    CalibGrams g;
    T_CHECK(calib_collect(&w, ld, n, &g) == 0 && g.tokens == n, "collect: %ld tokens", g.tokens);
    // Layer 0 with T = 1: x = rmsnorm(embedding) * w; each head's output is its v.
    double *gin = xcalloc((size_t)C * C, sizeof(double)),
           *gout = xcalloc((size_t)U * W * W, sizeof(double));
    const float *emb = w.params + w.t.e[w.t.embed].offset;
    const float *nw = w.params + param_layer(&w.t, 0, P_ATTN_NORM)->offset;
    const float *wv = w.params + param_layer(&w.t, 0, P_WV)->offset;
    for (int k = 0; k < n; k++) {
        int in[1], tg[1];
        loader_read_sample(ld, (uint64_t)k, in, tg);
        const float *e = emb + (size_t)in[0] * C;
        double ms = 0, x[64], v[64];
        for (int i = 0; i < C; i++) ms += (double)e[i] * e[i] / C;
        for (int i = 0; i < C; i++) x[i] = e[i] / sqrt(ms + c.norm_eps) * nw[i];
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) gin[i * C + j] += x[i] * x[j];
        for (int r = 0; r < U * hd; r++) {
            v[r] = 0;
            for (int i = 0; i < C; i++) v[r] += (double)wv[(size_t)r * C + i] * x[i];
        }
        for (int u = 0; u < U; u++)
            for (int a = 0; a < W; a++)
                for (int b = 0; b < W; b++)
                    gout[((size_t)u * W + a) * W + b] += v[u * hd + a % hd] * v[u * hd + b % hd];
    }
    double ei = 0, eo = 0, si = 0, so = 0;
    for (int i = 0; i < C * C; i++)
        ei = fmax(ei, fabs(gin[i] - g.gin[i])), si = fmax(si, fabs(gin[i]));
    for (int i = 0; i < U * W * W; i++)
        eo = fmax(eo, fabs(gout[i] - g.gout[i])), so = fmax(so, fabs(gout[i]));
    T_CHECK(ei < 1e-4 * si && eo < 1e-4 * so, "layer-0 Grams: err %.3g / %.3g, %.3g / %.3g", ei, si,
            eo, so);
    // the file round-trips; a truncated copy and another shape are refused
    char fpath[80];
    snprintf(fpath, sizeof fpath, "/tmp/ps_calib_%d.grams", (int)getpid());
    T_CHECK(calib_write(fpath, &g) == 0, "write: %s", ps_err_msg());
    CalibGrams h;
    T_CHECK(calib_read(fpath, &c, &h) == 0 && h.tokens == g.tokens &&
                !memcmp(h.gin, g.gin, 8 * (size_t)2 * C * C) &&
                !memcmp(h.gout, g.gout, 8 * (size_t)2 * U * W * W),
            "round trip: %s", ps_err_msg());
    calib_free(&h);
    LlamaConfig other = cfg_of(3, 4, 2, 16);
    EXPECT_FAIL(calib_read(fpath, &other, &h), fpath, "3 x 2");
    T_CHECK(truncate(fpath, 100) == 0, "truncate");
    EXPECT_FAIL(calib_read(fpath, &c, &h), fpath, "truncated");
    unlink(fpath);
    unlink(path);
    loader_close(ld);
    free(gin);
    free(gout);
    calib_free(&g);
    host_weights_free(&w);
}

// align_plan with Grams transforms the targets' output Grams into those of the
// aligned model: equal to Grams collected again from it.
static void test_align_grams(void) {
    LlamaConfig c = cfg_of(3, 6, 2, 48);
    int U = c.n_kv_heads, W = c.n_heads / U * cfg_head_dim(&c);
    HostWeights w;
    make_model(&w, &c, 31);
    random_transform(&w, 2, 1, 4, 0, (const int[3]){2, 0, 1});
    int n = 200;
    const char *path = random_shard(n + 1, c.vocab_size, 5);
    Loader *ld = loader_open(path, 8, c.vocab_size, 0, 0);
    CHECK(ld, "%s", ps_err_msg());
    CalibGrams g, h;
    CHECK(calib_collect(&w, ld, n, &g) == 0, "%s", ps_err_msg());
    ShareEntry e[2] = {{1, 0, 0, 1, 0}, {2, 1, 1, 1, 0}};
    SharePlan p = {.cfg = c, .match = MATCH_CIRCUIT, .n = 2, .e = e};
    align_plan(&w, &p, &g, NULL, NULL);
    CHECK(calib_collect(&w, ld, n, &h) == 0, "%s", ps_err_msg());
    double err = 0, scale = 0;
    for (size_t i = 0; i < (size_t)c.n_layers * U * W * W; i++)
        err = fmax(err, fabs(g.gout[i] - h.gout[i])), scale = fmax(scale, fabs(h.gout[i]));
    printf("aligned output Grams vs recollected: max err %.3g of %.3g\n", err, scale);
    T_CHECK(err < 1e-4 * scale, "aligned output Grams: max err %.3g of %.3g", err, scale);
    unlink(path);
    loader_close(ld);
    calib_free(&g);
    calib_free(&h);
    host_weights_free(&w);
}

// Random SPD Grams: gin[l] = X^T X + I, gout[i] = Y^T Y + I (X, Y random).
static void random_grams(const LlamaConfig *c, uint64_t seed, int diagonal, CalibGrams *g) {
    int L = c->n_layers, U = c->n_kv_heads, C = c->dim, W = c->n_heads / U * cfg_head_dim(c);
    *g = (CalibGrams){.L = L,
                      .U = U,
                      .C = C,
                      .W = W,
                      .gin = xcalloc((size_t)L * C * C, 8),
                      .gout = xcalloc((size_t)L * U * W * W, 8),
                      .tokens = 100};
    Rng r;
    rng_seed(&r, seed);
    for (int m = 0; m < L + L * U; m++) {
        int n = m < L ? C : W;
        double *G = m < L ? g->gin + (size_t)m * C * C : g->gout + (size_t)(m - L) * W * W;
        if (diagonal) {
            for (int i = 0; i < n; i++) G[i * n + i] = 0.1 + 3 * urand(&r);
            continue;
        }
        double *X = xmalloc(sizeof(double) * (size_t)2 * n * n);
        for (int i = 0; i < 2 * n * n; i++) X[i] = urand(&r) - 0.5;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double s = i == j;
                for (int k = 0; k < 2 * n; k++) s += X[k * n + i] * X[k * n + j];
                G[i * n + j] = s;
            }
        free(X);
    }
}

// The mean loss of model w on 3 windows of 8 tokens, by a model of its own.
static double direct_loss(const HostWeights *w, const int *in, const int *tg) {
    Model M;
    model_init_table(&M, backend_cpu(), &w->t);
    model_set_params(&M, w->params);
    model_reserve(&M, 3, 8);
    double loss = model_forward(&M, in, tg, 3, 8);
    model_free(&M);
    return loss;
}

// The reference of a per-unit loss sweep (calib_importance, calib_damage): for every
// unit i of layers >= 1, a copy w2 of w with unit i edited, its direct loss minus
// the intact model's (*base). Returns the largest |delta[i] - that|.
typedef void (*UnitEdit)(HostWeights *w2, const HostWeights *w, int i, const int *src);
static double direct_sweep_err(const HostWeights *w, HostWeights *w2, const int *in, const int *tg,
                               UnitEdit edit, const int *src, const double *delta, double *base) {
    int U = w->t.cfg.n_kv_heads, N = w->t.cfg.n_layers * U;
    double worst = 0;
    *base = direct_loss(w, in, tg);
    for (int i = U; i < N; i++) {
        memcpy(w2->params, w->params, sizeof(float) * w->t.total);
        edit(w2, w, i, src);
        worst = fmax(worst, fabs(delta[i] - (direct_loss(w2, in, tg) - *base)));
    }
    return worst;
}

// Unit i removed: its Wo columns zeroed.
static void remove_unit(HostWeights *w2, const HostWeights *w, int i, const int *src) {
    (void)w, (void)src;
    const LlamaConfig *c = &w2->t.cfg;
    int U = c->n_kv_heads, qd = c->n_heads * cfg_head_dim(c), W = qd / U;
    float *o = w2->params + param_layer(&w2->t, i / U, P_WO)->offset + (size_t)(i % U) * W;
    for (int r = 0; r < c->dim; r++) memset(o + (size_t)r * qd, 0, sizeof(float) * (size_t)W);
}

// Unit i shares unit src[i] (an earlier layer's, so w2's copy of it is w's):
// copy_unit of test_share_util.h.
static void share_src(HostWeights *w2, const HostWeights *w, int i, const int *src) {
    (void)w;
    int U = w2->t.cfg.n_kv_heads;
    copy_unit(w2, i / U, i % U, src[i] / U, src[i] % U);
}

// Head importance: every unit of layers >= 1 equals the loss increase of a copy of
// the model with that unit removed (computed separately); a dead unit (Wo columns
// already zero) scores exactly 0; the calibration file keeps the values.
static void test_importance(void) {
    LlamaConfig c = cfg_of(3, 4, 2, 16);
    int C = c.dim, U = c.n_kv_heads, N = c.n_layers * U, W = c.n_heads / U * cfg_head_dim(&c);
    int qd = c.n_heads * cfg_head_dim(&c);
    HostWeights w, w2;
    make_model(&w, &c, 41);
    make_model(&w2, &c, 41);
    float *wo = w.params + param_layer(&w.t, 2, P_WO)->offset;  // unit 2.1 dead
    for (int r = 0; r < C; r++) memset(wo + (size_t)r * qd + W, 0, sizeof(float) * (size_t)W);
    const char *path = random_shard(40, c.vocab_size, 6);
    Loader *ld = loader_open(path, 8, c.vocab_size, 0, 0);
    CHECK(ld, "%s", ps_err_msg());
    CalibGrams g = {0}, h;
    T_CHECK(calib_importance(&w, ld, 24, 0, &g) == 0 && g.imp_tokens == 24, "importance: %s",
            ps_err_msg());
    int in[24], tg[24];
    loader_read_batch(ld, 0, 3, in, tg);
    double base, worst = direct_sweep_err(&w, &w2, in, tg, remove_unit, NULL, g.imp, &base);
    printf(
        "importance: base %.6f (direct %.6f); units 1.0 .. 2.1: +%.5f +%.5f +%.5f +%.5f, max "
        "err vs direct %.2g\n",
        g.imp_base, base, g.imp[2], g.imp[3], g.imp[4], g.imp[5], worst);
    T_CHECK(fabs(g.imp_base - base) < 1e-5 && worst < 1e-5,
            "importance vs direct: base %.6f vs %.6f, max err %.3g", g.imp_base, base, worst);
    T_CHECK(g.imp[5] == 0 && g.imp[0] == 0 && g.imp[2] != 0, "importance: dead unit %.3g",
            g.imp[5]);
    // the file keeps it (with Grams of the same shape)
    random_grams(&c, 7, 0, &h);
    h.imp = g.imp, h.imp_base = g.imp_base, h.imp_tokens = g.imp_tokens;
    char fpath[80];
    snprintf(fpath, sizeof fpath, "/tmp/ps_calib_imp_%d.grams", (int)getpid());
    T_CHECK(calib_write(fpath, &h) == 0, "write: %s", ps_err_msg());
    h.imp = NULL;
    calib_free(&h);
    T_CHECK(calib_read(fpath, &c, &h) == 0 && h.imp && !memcmp(h.imp, g.imp, 8 * (size_t)N) &&
                h.imp_base == g.imp_base && h.imp_tokens == 24,
            "importance round trip: %s", ps_err_msg());
    calib_free(&h);
    T_CHECK(truncate(fpath, 500) == 0, "truncate");
    EXPECT_FAIL(calib_read(fpath, &c, &h), fpath, "truncated");
    unlink(fpath);
    unlink(path);
    loader_close(ld);
    calib_free(&g);
    host_weights_free(&w);
    host_weights_free(&w2);
}

// Measured sharing damage: every unit of layers >= 1 equals the loss increase of a
// copy of the model in which that unit's Wq/Wk/Wv rows and Wo columns are those of
// its recorded source (copy_unit, plain index arithmetic), that source is the
// calibration score's best, the file keeps both, a file whose source points at a
// later layer is refused, and match 'measured' replaces the cheapest unit first.
static void test_damage(void) {
    LlamaConfig c = cfg_of(3, 4, 2, 16);
    int U = c.n_kv_heads, N = c.n_layers * U;
    HostWeights w, w2;
    make_model(&w, &c, 43);
    make_model(&w2, &c, 43);
    const char *path = random_shard(40, c.vocab_size, 8);
    Loader *ld = loader_open(path, 8, c.vocab_size, 0, 0);
    CHECK(ld, "%s", ps_err_msg());
    CalibGrams g = {0}, h;
    T_CHECK(calib_collect(&w, ld, 32, &g) == 0, "grams: %s", ps_err_msg());
    T_CHECK(calib_damage(&w, ld, 24, 0, &g) == 0 && g.dmg_tokens == 24, "damage: %s", ps_err_msg());
    ShareLayerView views[3];
    share_layer_views(&w.t, w.params, views);
    ShareSim sim;
    calib_match(&c, views, &g, CALIB_SCORE_ERROR, &sim);
    int in[24], tg[24];
    loader_read_batch(ld, 0, 3, in, tg);
    for (int i = U; i < N; i++)
        T_CHECK(g.dmg_src[i] == sim.best[i] && g.dmg_src[i] / U < i / U,
                "damage source of %d: %d, best %d", i, g.dmg_src[i], sim.best[i]);
    double base, worst = direct_sweep_err(&w, &w2, in, tg, share_src, g.dmg_src, g.dmg, &base);
    printf("damage: base %.6f; units 1.0 .. 2.1: %+.5f %+.5f %+.5f %+.5f, max err vs direct %.2g\n",
           g.dmg_base, g.dmg[2], g.dmg[3], g.dmg[4], g.dmg[5], worst);
    T_CHECK(fabs(g.dmg_base - base) < 1e-5 && worst < 1e-5 && g.dmg_src[0] == -1,
            "damage vs direct: base %.6f vs %.6f, max err %.3g", g.dmg_base, base, worst);
    // match 'measured': the unit of least measured damage is replaced first, by its source
    int cheapest = U;
    for (int t = U; t < N; t++)
        if (g.dmg[t] < g.dmg[cheapest]) cheapest = t;
    ShareSim ms;
    CalibGrams nod = g;
    nod.dmg = NULL;
    EXPECT_FAIL(share_sim_compute(&w, MATCH_MEASURED, &nod, 0, &ms), "--damage-tokens");
    T_CHECK(share_sim_compute(&w, MATCH_MEASURED, &g, 0, &ms) == 0, "measured: %s", ps_err_msg());
    float top = -1;
    int arg = -1;
    for (int t = U; t < N; t++)
        if (ms.sim[(size_t)t * N + ms.best[t]] > top)
            top = ms.sim[(size_t)t * N + ms.best[t]], arg = t;
    T_CHECK(arg == cheapest && ms.best[arg] == g.dmg_src[arg],
            "measured: top unit %d (source %d), cheapest %d (source %d)", arg, ms.best[arg],
            cheapest, g.dmg_src[cheapest]);
    share_sim_free(&ms);
    // the file keeps it, with and without importance
    char fpath[80];
    snprintf(fpath, sizeof fpath, "/tmp/ps_calib_dmg_%d.grams", (int)getpid());
    for (int with_imp = 0; with_imp < 2; with_imp++) {
        if (with_imp) T_CHECK(calib_importance(&w, ld, 16, 0, &g) == 0, "imp: %s", ps_err_msg());
        T_CHECK(calib_write(fpath, &g) == 0, "write: %s", ps_err_msg());
        T_CHECK(calib_read(fpath, &c, &h) == 0 && h.dmg && !memcmp(h.dmg, g.dmg, 8 * (size_t)N) &&
                    !memcmp(h.dmg_src, g.dmg_src, sizeof(int) * (size_t)N) &&
                    h.dmg_base == g.dmg_base && h.dmg_tokens == 24 && (h.imp != NULL) == with_imp,
                "damage round trip (importance %d): %s", with_imp, ps_err_msg());
        calib_free(&h);
    }
    // a source in a later layer: refused, naming the file
    g.dmg_src[U] = N - 1;
    T_CHECK(calib_write(fpath, &g) == 0, "write: %s", ps_err_msg());
    EXPECT_FAIL(calib_read(fpath, &c, &h), fpath, "invalid");
    unlink(fpath);
    unlink(path);
    loader_close(ld);
    share_sim_free(&sim);
    calib_free(&g);
    host_weights_free(&w);
    host_weights_free(&w2);
}

// A unit's slice k (0..3) as a dense [rows, cols] float64 copy (Wo: its columns).
static double *slice(const HostWeights *w, int l, int u, int k, int *rows, int *cols) {
    const LlamaConfig *c = &w->t.cfg;
    int C = c->dim, hd = cfg_head_dim(c), G = c->n_heads / c->n_kv_heads, qd = c->n_heads * hd;
    const ParamKind kinds[4] = {P_WQ, P_WK, P_WV, P_WO};
    const float *b = w->params + param_layer(&w->t, l, kinds[k])->offset;
    *rows = k == 3 ? C : (k == 0 ? G : 1) * hd, *cols = k == 3 ? G * hd : C;
    double *out = xmalloc(sizeof(double) * (size_t)*rows * *cols);
    for (int r = 0; r < *rows; r++)
        for (int j = 0; j < *cols; j++)
            out[r * *cols + j] =
                k == 3 ? b[(size_t)r * qd + u * G * hd + j] : b[((size_t)u * *rows + r) * C + j];
    return out;
}

// tr((A - B) G (A - B)^T) for [rows, n] slices and G [n, n].
static double weighted_err(const double *A, const double *B, const double *G, int rows, int n) {
    double s = 0;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                s += (A[r * n + i] - B[r * n + i]) * G[i * n + j] * (A[r * n + j] - B[r * n + j]);
    return s;
}

static void test_calib_score(void) {
    LlamaConfig c = cfg_of(3, 4, 2, 16);
    int L = c.n_layers, U = c.n_kv_heads, N = L * U, C = c.dim,
        W = c.n_heads / U * cfg_head_dim(&c);
    HostWeights w;
    make_model(&w, &c, 29);
    CalibGrams g;
    random_grams(&c, 4, 0, &g);
    ShareSim s;
    T_CHECK(share_sim_compute(&w, MATCH_CALIB, &g, 0, &s) == 0, "calib: %s", ps_err_msg());
    double worst = 0, *dd = xcalloc((size_t)N * N, sizeof(double)),
           *d0 = xcalloc((size_t)N, sizeof(double));
    for (int t = U; t < N; t++)
        for (int j = 0; j < (t / U) * U; j++) {
            double d = 0;
            for (int k = 0; k < 4; k++) {
                int rows, cols;
                double mean = 0, e;
                for (int u = 0; u < U; u++) {
                    double *a = slice(&w, t / U, u, k, &rows, &cols);
                    double *z = xcalloc((size_t)rows * cols, sizeof(double));
                    const double *G = k < 3 ? g.gin + (size_t)(t / U) * C * C
                                            : g.gout + (size_t)((t / U) * U + u) * W * W;
                    mean += weighted_err(a, z, G, rows, cols) / U;
                    free(a);
                    free(z);
                }
                double *a = slice(&w, t / U, t % U, k, &rows, &cols),
                       *b = slice(&w, j / U, j % U, k, &rows, &cols);
                const double *G =
                    k < 3 ? g.gin + (size_t)(t / U) * C * C : g.gout + (size_t)t * W * W;
                e = weighted_err(b, a, G, rows, cols);
                d += e / mean / 4;
                if (j == 0) {  // d(t, 0): the error if the source were all zeros
                    double *z = xcalloc((size_t)rows * cols, sizeof(double));
                    d0[t] += weighted_err(z, a, G, rows, cols) / mean / 4;
                    free(z);
                }
                free(a);
                free(b);
            }
            double err = fabs(1 / (1 + d) - s.sim[(size_t)t * N + j]);
            if (err > worst) worst = err;
            dd[(size_t)t * N + j] = d;
        }
    T_CHECK(worst < 1e-5, "calib score vs float64: max err %.3g", worst);
    // importance: 1 / (1 + imp+(t) d(t, s) / d(t, 0) / mean imp+), imp+ = max(imp, 1e-3 mean |imp|)
    share_sim_free(&s);
    EXPECT_FAIL(share_sim_compute(&w, MATCH_IMPORTANCE, &g, 0, &s), "needs head importance");
    g.imp = xcalloc((size_t)N, sizeof(double));
    const double imps[4] = {0.3, -0.05, 0.02, 1.5};  // one negative: removing it helps
    double ma = 0, mp = 0;
    for (int t = U; t < N; t++) g.imp[t] = imps[t - U], ma += fabs(imps[t - U]) / (N - U);
    for (int t = U; t < N; t++) mp += fmax(g.imp[t], 1e-3 * ma) / (N - U);
    T_CHECK(share_sim_compute(&w, MATCH_IMPORTANCE, &g, 0, &s) == 0, "importance: %s",
            ps_err_msg());
    worst = 0;
    for (int t = U; t < N; t++)
        for (int j = 0; j < (t / U) * U; j++) {
            double D = fmax(g.imp[t], 1e-3 * ma) * dd[(size_t)t * N + j] / d0[t] / mp;
            worst = fmax(worst, fabs(1 / (1 + D) - s.sim[(size_t)t * N + j]));
        }
    T_CHECK(worst < 1e-5, "importance score vs float64: max err %.3g", worst);
    SharePlan pi;
    ShareMakeOpts oi = {.fn = MATCH_IMPORTANCE, .ratio = 0.17, .grams = &g};
    T_CHECK(share_plan_make_opts(&w, &oi, &pi, NULL, NULL) == 0 && pi.n == 1 &&
                pi.e[0].layer == 1 && pi.e[0].unit == 1,
            "importance: the unit whose removal helps is replaced first (%d.%d)", pi.e[0].layer,
            pi.e[0].unit);
    share_plan_free(&pi);
    free(g.imp);
    g.imp = NULL;
    free(dd);
    free(d0);
    // an exact copy scores 1 and is every target's best
    copy_unit(&w, 2, 0, 0, 1);
    share_sim_free(&s);
    share_sim_compute(&w, MATCH_CALIB, &g, 0, &s);
    T_CHECK(fabs(s.sim[(size_t)4 * N + 1] - 1) < 1e-5 && s.best[4] == 1, "copy: calib %.6f best %d",
            s.sim[(size_t)4 * N + 1], s.best[4]);
    EXPECT_FAIL(share_sim_compute(&w, MATCH_CALIB, NULL, 0, &s), "needs calibration data");
    // pruning: the units of lowest output energy
    double energy[6];
    ShareLayerView v[3];
    share_layer_views(&w.t, w.params, v);
    calib_output_energy(&c, v, &g, energy);
    ShareMakeOpts o = {.fn = MATCH_QK, .ratio = 0.34, .select = SELECT_PRUNE, .grams = &g};
    SharePlan p;
    T_CHECK(share_plan_make_opts(&w, &o, &p, NULL, NULL) == 0 && p.n == 2, "prune: %s",
            ps_err_msg());
    for (int k = 0; k < p.n; k++)
        for (int i = U; i < N; i++) {
            int in = 0, x = p.e[k].layer * U + p.e[k].unit;
            for (int m = 0; m < p.n; m++) in |= p.e[m].layer * U + p.e[m].unit == i;
            T_CHECK(in || energy[i] >= energy[x], "prune kept %d (energy %g) over %d (%g)", i,
                    energy[i], x, energy[x]);
        }
    share_plan_free(&p);
    share_sim_free(&s);
    calib_free(&g);
    host_weights_free(&w);
}

static void test_merge(int diagonal) {
    LlamaConfig c = cfg_of(3, 4, 2, 16);
    int U = c.n_kv_heads, C = c.dim, W = c.n_heads / U * cfg_head_dim(&c);
    HostWeights w, m;
    make_model(&w, &c, 37);
    make_model(&m, &c, 37);
    CalibGrams g;
    random_grams(&c, 6, diagonal, &g);
    // L1.G0 and L2.G1 take L0.G1's slices; L2.G0 takes L1.G1's
    ShareEntry e[3] = {{1, 0, 0, 1, 0}, {2, 0, 1, 1, 0}, {2, 1, 0, 1, 0}};
    SharePlan p = {.cfg = c, .match = MATCH_CALIB, .n = 3, .e = e};
    calib_merge(&m, &p, &g);
    const int cl[2][4] = {{1, 2, 5, -1}, {3, 4, -1, -1}};  // clusters: source first
    double worst = 0;
    for (int q = 0; q < 2; q++)
        for (int k = 0; k < 4; k++) {
            int rows, cols, n = k < 3 ? C : W;
            double *X = slice(&m, cl[q][0] / U, cl[q][0] % U, k, &rows, &cols);
            // normal equations: sum_i (X - A_i) G_i = 0; diagonal: the weighted mean per column
            double *res = xcalloc((size_t)rows * n, sizeof(double)),
                   *num = xcalloc((size_t)rows * n, 8);
            double *den = xcalloc((size_t)n, 8), scale = 0;
            for (int a = 0; a < 4 && cl[q][a] >= 0; a++) {
                int i = cl[q][a];
                double *A = slice(&w, i / U, i % U, k, &rows, &cols);
                double *Y = slice(&m, i / U, i % U, k, &rows, &cols);
                for (int x = 0; x < rows * n; x++)
                    worst = fmax(worst, fabs(Y[x] - X[x]));  // all equal
                const double *G =
                    k < 3 ? g.gin + (size_t)(i / U) * C * C : g.gout + (size_t)i * W * W;
                for (int r = 0; r < rows; r++)
                    for (int j = 0; j < n; j++) {
                        for (int h = 0; h < n; h++)
                            res[r * n + j] += (X[r * n + h] - A[r * n + h]) * G[h * n + j];
                        num[r * n + j] += G[j * n + j] * A[r * n + j];
                        scale = fmax(scale, fabs(A[r * n + j]) * G[j * n + j]);
                    }
                for (int j = 0; j < n; j++) den[j] += G[j * n + j];
                free(A);
                free(Y);
            }
            for (int x = 0; x < rows * n; x++) {
                worst = fmax(worst, fabs(res[x]) / scale / 1e1);
                if (diagonal) worst = fmax(worst, fabs(X[x] - num[x] / den[x % n]));
            }
            free(X);
            free(res);
            free(num);
            free(den);
        }
    T_CHECK(worst < 1e-5, "merge (%s Grams): max err %.3g", diagonal ? "diagonal" : "dense", worst);
    // units outside the plan are untouched
    int rows, cols;
    double *a = slice(&w, 1, 1, 0, &rows, &cols), *b = slice(&m, 1, 1, 0, &rows, &cols);
    (void)a, (void)b;
    free(a);
    free(b);
    calib_free(&g);
    host_weights_free(&w);
    host_weights_free(&m);
}

static void test_random_plans(void) {
    LlamaConfig c = cfg_of(5, 4, 2, 16);
    HostWeights w;
    make_model(&w, &c, 41);
    int N = 10, U = 2;
    for (int k = 1; k <= N - U; k++) {
        ShareMakeOpts o = {
            .fn = MATCH_QK, .ratio = (k + 0.5) / N, .select = SELECT_RANDOM, .seed = 3};
        SharePlan a, b, d;
        T_CHECK(share_plan_make_opts(&w, &o, &a, NULL, NULL) == 0 && a.n == k, "random k %d: %s", k,
                ps_err_msg());
        share_plan_make_opts(&w, &o, &b, NULL, NULL);
        o.seed = 4;
        share_plan_make_opts(&w, &o, &d, NULL, NULL);
        T_CHECK(!memcmp(a.e, b.e, sizeof(ShareEntry) * (size_t)a.n),
                "random: seed 3 twice differs");
        char *js = share_plan_to_json(&a);
        SharePlan r;
        T_CHECK(share_plan_parse(js, "random plan", &r) == 0, "random plan invalid: %s",
                ps_err_msg());
        share_plan_free(&r);
        free(js);
        if (k == 4)
            T_CHECK(memcmp(a.e, d.e, sizeof(ShareEntry) * (size_t)a.n),
                    "seeds 3 and 4 give one plan");
        share_plan_free(&a);
        share_plan_free(&b);
        share_plan_free(&d);
    }
    host_weights_free(&w);
}

int main(void) {
    test_transform_invariance();
    test_circuit_values();
    test_align(1);
    test_align(0);
    test_grams();
    test_align_grams();
    test_importance();
    test_damage();
    test_calib_score();
    test_merge(1);
    test_merge(0);
    test_random_plans();
    return t_summary();
}
