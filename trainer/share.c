// share.c: head matching (all-pairs cosine similarity through BLAS Gram
// blocks), the plan selection rule, plan validation and JSON I/O, the weights
// fingerprint, and the full <-> compact shared model conversions (see share.h
// and docs/sharing.md).
#include "share.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "align.h"
#include "calib.h"
#include "common.h"
#include "jsonio.h"

// ---------------------------------------------------------------------------
// match functions

static const char *k_match_names[] = {"qk",      "q",     "k",          "v",       "qkv",
                                      "circuit", "calib", "importance", "measured"};

const char *share_match_name(ShareMatchFn fn) {
    return k_match_names[fn];
}

int share_match_parse(const char *s, ShareMatchFn *fn) {
    for (int i = 0; i < (int)(sizeof k_match_names / sizeof k_match_names[0]); i++)
        if (!strcmp(s, k_match_names[i])) {
            *fn = (ShareMatchFn)i;
            return 0;
        }
    return ps_err_set(
        "unknown match function '%s' (expected qk, q, k, v, qkv, circuit, calib, importance or "
        "measured)",
        s);
}

// The slices a match function reads, in order: 0 = Wq, 1 = Wk, 2 = Wv (its name
// spells them). Returns how many.
static int match_parts(ShareMatchFn fn, int parts[3]) {
    int n = 0;
    for (const char *c = k_match_names[fn]; *c; c++) parts[n++] = *c == 'q' ? 0 : *c == 'k' ? 1 : 2;
    return n;
}

static const float *view_part(const ShareLayerView *v, int part) {
    return part == 0 ? v->wq : part == 1 ? v->wk : part == 2 ? v->wv : v->wo;
}

// n elements of part `part` of a view from element offset off, as fp32: the
// float tensor itself (nothing copied) or the 16-bit one converted into buf.
static const float *view_floats(const ShareLayerView *v, int part, size_t off, size_t n,
                                float *buf) {
    const float *f = view_part(v, part);
    if (f) return f + off;
    const char *r = (const char *)v->raw[part] + 2 * off;
    if (v->raw_dtype[part] == ST_BF16)
        bf16_to_f32_n(buf, r, n);
    else
        f16_to_f32_n(buf, r, n);
    return buf;
}

void share_layer_views(const ParamTable *t, const float *params, ShareLayerView *views) {
    CHECK(!t->shared, "matching needs a full model, not a compact shared one");
    for (int l = 0; l < t->cfg.n_layers; l++) {
        views[l] = (ShareLayerView){.wq = params + param_layer(t, l, P_WQ)->offset,
                                    .wk = params + param_layer(t, l, P_WK)->offset,
                                    .wv = params + param_layer(t, l, P_WV)->offset,
                                    .wo = params + param_layer(t, l, P_WO)->offset};
    }
}

// ---------------------------------------------------------------------------
// similarities

void share_match(const LlamaConfig *cfg, const ShareLayerView *views, ShareMatchFn fn, int verbose,
                 ShareSim *out) {
    CHECK(fn <= MATCH_QKV, "share_match computes the cosine match functions only, not '%s'",
          share_match_name(fn));
    int L = cfg->n_layers, U = cfg->n_kv_heads, G = cfg->n_heads / U, N = L * U;
    size_t hd = (size_t)cfg_head_dim(cfg), C = (size_t)cfg->dim;
    int parts[3], np = match_parts(fn, parts);
    size_t D[3];  // match-vector length of each part for one unit: a unit's rows, flattened
    for (int p = 0; p < np; p++) {
        D[p] = (parts[p] == 0 ? (size_t)G : 1) * hd * C;
        CHECK(D[p] <= INT_MAX, "a unit's slice has %zu elements, more than BLAS takes", D[p]);
        for (int l = 0; l < L; l++)
            CHECK(view_part(&views[l], parts[p]) ||
                      (views[l].raw[parts[p]] && (views[l].raw_dtype[parts[p]] == ST_BF16 ||
                                                  views[l].raw_dtype[parts[p]] == ST_F16)),
                  "layer %d: match '%s' needs W%c", l, share_match_name(fn), "qkv"[parts[p]]);
    }
    share_sim_alloc(cfg, out);

    // Squared norms of the match vectors (fp64 accumulation).
    double *nrm = xcalloc((size_t)N, sizeof(double));
#pragma omp parallel
    {
        float *buf = xmalloc(sizeof(float) * 65536);
#pragma omp for schedule(static)
        for (int i = 0; i < N; i++)
            for (int p = 0; p < np; p++)
                for (size_t o = 0; o < D[p]; o += 65536) {
                    size_t n = D[p] - o < 65536 ? D[p] - o : 65536;
                    const float *x =
                        view_floats(&views[i / U], parts[p], (size_t)(i % U) * D[p] + o, n, buf);
                    nrm[i] += cblas_dsdot((int)n, x, 1, x, 1);
                }
        free(buf);
    }

    // Layer pairs (l, l') with l' < l. Wq of a layer viewed as [U, G*hd*C] is
    // already the matrix of its units' q vectors (a unit's rows are contiguous),
    // so the Gram block of (l, l') is the sum over parts of X_l X_l'^T: sgemm on
    // the weights themselves, no copies. The sum runs over column chunks
    // [k0, k0+kc) of every part (sub-matrices with leading dimension D), sized so
    // that one chunk of every layer stays in cache while all pairs use it: the
    // weights are then read from memory about once instead of L-1 times. Within
    // a chunk each pair is one task with a single-threaded sgemm (OpenBLAS runs
    // serially inside an OpenMP region), and chunks are added in a fixed order,
    // so the result does not depend on the thread count.
    int npairs = L * (L - 1) / 2;
    int *pl = xmalloc(sizeof(int) * (size_t)(npairs ? npairs : 1));
    int *pm = xmalloc(sizeof(int) * (size_t)(npairs ? npairs : 1));
    for (int l = 1, k = 0; l < L; l++)
        for (int m = 0; m < l; m++, k++) pl[k] = l, pm[k] = m;
    float *gram = xcalloc((size_t)(npairs ? npairs : 1) * U * U, sizeof(float));
    const size_t cache_floats = (size_t)4 << 20;  // ~16 MiB: a chunk of every layer
    size_t kc = cache_floats / ((size_t)L * U);
    kc = kc < 256 ? 256 : kc;
    size_t total = 0, done = 0;  // columns, for progress
    for (int p = 0; p < np; p++) total += D[p];
    // 16-bit tensors: each chunk of every layer is converted into cbuf first
    // (layer l's units at cbuf + l*U*kc, leading dimension kn).
    float *cbuf = NULL;
    const float **cp = xmalloc(sizeof(float *) * (size_t)L);
    int *cld = xmalloc(sizeof(int) * (size_t)L);
    for (int p = 0; p < np; p++)
        for (int l = 0; l < L; l++)
            if (!view_part(&views[l], parts[p]) && !cbuf)
                cbuf = xmalloc(sizeof(float) * (size_t)L * U * kc);
    double t0 = ps_now(), last = t0;
    for (int p = 0; p < np; p++)
        for (size_t k0 = 0; k0 < D[p]; k0 += kc) {
            int kn = (int)(D[p] - k0 < kc ? D[p] - k0 : kc);
            float beta = p == 0 && k0 == 0 ? 0.0f : 1.0f;
#pragma omp parallel for schedule(static)
            for (int l = 0; l < L; l++) {
                const float *f = view_part(&views[l], parts[p]);
                if (f) {
                    cp[l] = f + k0, cld[l] = (int)D[p];
                    continue;
                }
                float *b = cbuf + (size_t)l * U * kc;
                for (int u = 0; u < U; u++)
                    view_floats(&views[l], parts[p], (size_t)u * D[p] + k0, (size_t)kn,
                                b + (size_t)u * kn);
                cp[l] = b, cld[l] = kn;
            }
#pragma omp parallel for schedule(dynamic, 1)
            for (int k = 0; k < npairs; k++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, U, U, kn, 1.0f, cp[pl[k]],
                            cld[pl[k]], cp[pm[k]], cld[pm[k]], beta, gram + (size_t)k * U * U, U);
            done += (size_t)kn;
            double now = ps_now();
            if (verbose && now - last >= 2.0) {
                last = now;
                fprintf(stderr, "match: %.0f%% of the weights | %.1f s elapsed | ETA %.0f s\n",
                        100.0 * done / total, now - t0, (now - t0) * (total - done) / done);
            }
        }
    if (verbose && ps_now() - t0 >= 2.0)
        fprintf(stderr, "match: %d layer pairs in %.1f s\n", npairs, ps_now() - t0);
    free(cbuf);
    free(cp);
    free(cld);
    for (int k = 0; k < npairs; k++)
        for (int u = 0; u < U; u++)
            for (int v = 0; v < U; v++) {
                int i = pl[k] * U + u, j = pm[k] * U + v;
                double den = sqrt(nrm[i] * nrm[j]);
                double s = den > 0 ? gram[((size_t)k * U + u) * U + v] / den : 0.0;
                out->sim[(size_t)i * N + j] = (float)(s > 1 ? 1 : s < -1 ? -1 : s);
            }
    free(gram);
    free(pl);
    free(pm);
    free(nrm);

    share_sim_best(out);
}

void share_sim_alloc(const LlamaConfig *cfg, ShareSim *s) {
    int L = cfg->n_layers, U = cfg->n_kv_heads, N = L * U;
    memset(s, 0, sizeof *s);
    s->L = L, s->U = U, s->N = N;
    s->sim = xcalloc((size_t)N * N, sizeof(float));
    s->best = xmalloc(sizeof(int) * (size_t)N);
}

// Best match of each unit among the units of earlier layers: j < l*U.
void share_sim_best(ShareSim *s) {
    int N = s->N, U = s->U;
    for (int i = 0; i < N; i++) {
        int lim = (i / U) * U, b = -1;
        for (int j = 0; j < lim; j++)
            if (b < 0 || s->sim[(size_t)i * N + j] > s->sim[(size_t)i * N + b]) b = j;
        s->best[i] = b;
    }
}

void share_views_need_all(const ShareLayerView *views, int n_layers, const char *what) {
    for (int l = 0; l < n_layers; l++)
        CHECK(views[l].wq && views[l].wk && views[l].wv && views[l].wo,
              "layer %d: %s needs Wq, Wk, Wv and Wo", l, what);
}

void share_sim_free(ShareSim *s) {
    free(s->sim);
    free(s->best);
    memset(s, 0, sizeof *s);
}

// ---------------------------------------------------------------------------
// the plan

int share_count_for_ratio(double ratio, int n_units) {
    return (int)floor(ratio * n_units + 1e-9);
}

// Best unit of an earlier layer than t that is not replaced (ties: lowest index).
static int best_available(const ShareSim *s, const char *role, int t) {
    int b = -1, N = s->N, lim = (t / s->U) * s->U;
    for (int j = 0; j < lim; j++)
        if (role[j] != 1 && (b < 0 || s->sim[(size_t)t * N + j] > s->sim[(size_t)t * N + b])) b = j;
    return b;
}

// The plan's entries from src[N] (-1: keeps its weights).
static void plan_from_src(const ShareSim *s, const int *src, int got, SharePlan *plan) {
    int N = s->N, U = s->U;
    plan->n = got;
    plan->e = xcalloc((size_t)(got ? got : 1), sizeof(ShareEntry));
    for (int i = 0, n = 0; i < N; i++)
        if (src[i] >= 0)
            plan->e[n++] =
                (ShareEntry){i / U, i % U, src[i] / U, src[i] % U, s->sim[(size_t)i * N + src[i]]};
}

static int too_many(int k, int N, int U) {
    return ps_err_set(
        "cannot replace %d of %d units: at most %d can be (every replaced unit needs a source "
        "in an earlier layer that is not itself replaced, and layer 0 is never replaced); use a "
        "lower ratio",
        k, N, N - U);
}

int share_select_ex(const ShareSim *s, int k, SharePlan *plan, char *fallback) {
    int N = s->N, U = s->U;
    if (k > N - U) return too_many(k, N, U);
    // role: 0 free, 1 replaced, 2 source. cand[i]: i's best source among the
    // units not replaced when last looked at (it may have been replaced since).
    char *role = xcalloc((size_t)N, 1);
    int *cand = xmalloc(sizeof(int) * (size_t)N), *src = xmalloc(sizeof(int) * (size_t)N);
    for (int i = 0; i < N; i++) cand[i] = s->best[i], src[i] = -1;
    for (int i = 0; fallback && i < N; i++) fallback[i] = 0;
#define SIM(i, j) s->sim[(size_t)(i)*N + (j)]
    int got = 0;
    while (got < k) {
        // The free target with the highest similarity to its candidate; ties
        // keep the lowest target index.
        int t = -1;
        for (int i = U; i < N; i++)
            if (!role[i] && cand[i] >= 0 && (t < 0 || SIM(i, cand[i]) > SIM(t, cand[t]))) t = i;
        if (t < 0) break;
        int j = cand[t];
        if (role[j] == 1) {
            // Its best source was replaced: its best source still available
            // (ties: lowest index) competes again.
            cand[t] = best_available(s, role, t);
            continue;
        }
        role[t] = 1;
        role[j] = 2;
        src[t] = j;
        got++;
    }
    // Every unit of layers >= 1 left is a source now. To go on, replace the
    // source whose best available source is most similar and move the units it
    // served to their best available sources (fallbacks). Layer 0 is never
    // replaced, so this reaches any k <= N - U.
    while (got < k) {
        int t = -1, tb = -1;
        for (int i = U; i < N; i++) {
            if (role[i] == 1) continue;
            int b = best_available(s, role, i);
            if (b >= 0 && (t < 0 || SIM(i, b) > SIM(t, tb))) t = i, tb = b;
        }
        CHECK(t >= 0, "selection: no unit left to replace");
        role[t] = 1;
        src[t] = tb;
        role[tb] = 2;
        if (fallback) fallback[t] = 1;
        for (int x = U; x < N; x++)
            if (src[x] == t) {
                int b = best_available(s, role, x);
                src[x] = b;
                role[b] = 2;
                if (fallback) fallback[x] = 1;
            }
        got++;
    }
#undef SIM
    plan_from_src(s, src, got, plan);
    free(role);
    free(cand);
    free(src);
    return 0;
}

int share_select(const ShareSim *s, int k, SharePlan *plan) {
    return share_select_ex(s, k, plan, NULL);
}

int share_select_random(const ShareSim *s, int k, uint64_t seed, SharePlan *plan) {
    int N = s->N, U = s->U;
    if (k > N - U) return too_many(k, N, U);
    Rng r;
    rng_seed(&r, seed);
    int *ord = xmalloc(sizeof(int) * (size_t)(N - U + 1)), *src = xmalloc(sizeof(int) * (size_t)N);
    char *role = xcalloc((size_t)N, 1);
    for (int i = 0; i < N - U; i++) ord[i] = U + i;
    for (int i = N - U - 1; i > 0; i--) {  // Fisher-Yates
        int j = (int)(rng_u64(&r) % (uint64_t)(i + 1)), t = ord[i];
        ord[i] = ord[j], ord[j] = t;
    }
    for (int i = 0; i < N; i++) src[i] = -1;
    for (int i = 0; i < k; i++) role[ord[i]] = 1;
    // Each target takes a uniformly random unit of an earlier layer that is not replaced.
    for (int i = U; i < N; i++) {
        if (role[i] != 1) continue;
        int lim = (i / U) * U, n = 0;
        for (int j = 0; j < lim; j++) n += role[j] != 1;
        int pick = (int)(rng_u64(&r) % (uint64_t)n);
        for (int j = 0; j < lim; j++)
            if (role[j] != 1 && pick-- == 0) {
                src[i] = j;
                break;
            }
    }
    plan_from_src(s, src, k, plan);
    free(ord);
    free(src);
    free(role);
    return 0;
}

int share_select_prune(const ShareSim *s, const double *energy, int k, SharePlan *plan) {
    int N = s->N, U = s->U;
    if (k > N - U) return too_many(k, N, U);
    char *role = xcalloc((size_t)N, 1);
    int *src = xmalloc(sizeof(int) * (size_t)N);
    for (int i = 0; i < N; i++) src[i] = -1;
    for (int n = 0; n < k;
         n++) {  // the k units of layers >= 1 of lowest energy (ties: lower index)
        int b = -1;
        for (int i = U; i < N; i++)
            if (!role[i] && (b < 0 || energy[i] < energy[b])) b = i;
        role[b] = 1;
    }
    for (int i = U; i < N; i++)
        if (role[i] == 1) src[i] = best_available(s, role, i);
    plan_from_src(s, src, k, plan);
    free(role);
    free(src);
    return 0;
}

const char *share_select_name(ShareSelect sel) {
    return sel == SELECT_RANDOM ? "random" : sel == SELECT_PRUNE ? "prune" : "greedy";
}

int share_select_parse(const char *s, ShareSelect *sel) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, share_select_name((ShareSelect)i))) {
            *sel = (ShareSelect)i;
            return 0;
        }
    return ps_err_set("unknown selection rule '%s' (expected greedy, random or prune)", s);
}

int share_sim_compute(const HostWeights *w, ShareMatchFn fn, const CalibGrams *grams, int verbose,
                      ShareSim *s) {
    const ParamTable *t = &w->t;
    int calib = fn == MATCH_CALIB || fn == MATCH_IMPORTANCE || fn == MATCH_MEASURED;
    if (calib && !grams)
        return ps_err_set(
            "match '%s' needs calibration data (postshare match --match %s --calib FILE)",
            share_match_name(fn), share_match_name(fn));
    if (fn == MATCH_IMPORTANCE && !grams->imp)
        return ps_err_set(
            "match 'importance' needs head importance in the calibration file (postshare "
            "calibrate --importance-tokens N)");
    if (fn == MATCH_MEASURED && !grams->dmg)
        return ps_err_set(
            "match 'measured' needs measured sharing damage in the calibration file (postshare "
            "calibrate --damage-tokens N)");
    ShareLayerView *views = xcalloc((size_t)t->cfg.n_layers, sizeof *views);
    share_layer_views(t, w->params, views);
    if (calib)
        calib_match(&t->cfg, views, grams,
                    fn == MATCH_IMPORTANCE ? CALIB_SCORE_IMPORTANCE
                    : fn == MATCH_MEASURED ? CALIB_SCORE_MEASURED
                                           : CALIB_SCORE_ERROR,
                    s);
    else if (fn == MATCH_CIRCUIT)
        align_match_circuit(&t->cfg, views, s);
    else
        share_match(&t->cfg, views, fn, verbose, s);
    free(views);
    return 0;
}

int share_plan_select(const ShareSim *s, const LlamaConfig *cfg, const char *fingerprint,
                      const ShareMakeOpts *o, const double *energy, SharePlan *plan,
                      char *fallback) {
    memset(plan, 0, sizeof *plan);
    if (!(o->ratio >= 0 && o->ratio < 1)) return ps_err_set("ratio %g is outside [0, 1)", o->ratio);
    plan->cfg = *cfg;
    snprintf(plan->fingerprint, sizeof plan->fingerprint, "%s", fingerprint);
    plan->match = o->fn;
    plan->ratio = o->ratio;
    int k = share_count_for_ratio(o->ratio, s->N), rc;
    for (int i = 0; fallback && i < s->N; i++) fallback[i] = 0;
    if (o->select == SELECT_RANDOM) {
        rc = share_select_random(s, k, o->seed, plan);
    } else if (o->select == SELECT_PRUNE) {
        CHECK(energy, "selection 'prune' needs the units' energy");
        rc = share_select_prune(s, energy, k, plan);
    } else {
        rc = share_select_ex(s, k, plan, fallback);
    }
    if (rc != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ps_err_msg());
        ps_err_set("ratio %g: %s", o->ratio, msg);
    }
    return rc;
}

int share_plan_make_opts(const HostWeights *w, const ShareMakeOpts *o, SharePlan *plan,
                         ShareSim *sim_out, char *fallback) {
    memset(plan, 0, sizeof *plan);
    if (!(o->ratio >= 0 && o->ratio < 1)) return ps_err_set("ratio %g is outside [0, 1)", o->ratio);
    if (o->select == SELECT_PRUNE && !o->grams)
        return ps_err_set(
            "selection 'prune' ranks units by their calibrated output energy: it "
            "needs calibration data (--calib FILE)");
    const ParamTable *t = &w->t;
    ShareSim s;
    if (share_sim_compute(w, o->fn, o->grams, o->verbose, &s)) return -1;
    double *energy = NULL;
    if (o->select == SELECT_PRUNE) {
        energy = xmalloc(sizeof(double) * (size_t)s.N);
        ShareLayerView *views = xcalloc((size_t)t->cfg.n_layers, sizeof *views);
        share_layer_views(t, w->params, views);
        calib_output_energy(&t->cfg, views, o->grams, energy);
        free(views);
    }
    char fp[40];
    share_fingerprint(t, w->params, fp);
    int rc = share_plan_select(&s, &t->cfg, fp, o, energy, plan, fallback);
    free(energy);
    if (sim_out && rc == 0)
        *sim_out = s;
    else
        share_sim_free(&s);
    return rc;
}

int share_plan_make(const HostWeights *w, ShareMatchFn fn, double ratio, int verbose,
                    SharePlan *plan, ShareSim *sim_out) {
    ShareMakeOpts o = {.fn = fn, .ratio = ratio, .verbose = verbose};
    return share_plan_make_opts(w, &o, plan, sim_out, NULL);
}

ShareCounts share_counts(const SharePlan *p) {
    const LlamaConfig *c = &p->cfg;
    size_t hd = (size_t)cfg_head_dim(c), C = (size_t)c->dim,
           G = (size_t)(c->n_heads / c->n_kv_heads);
    size_t per_unit = (2 * G + 2) * hd * C;  // Wq rows + Wk rows + Wv rows + Wo columns
    ShareCounts k;
    ParamTable t;
    param_table_build(&t, c);
    k.params_before = t.total;
    param_table_free(&t);
    k.attn_before = per_unit * (size_t)c->n_kv_heads * (size_t)c->n_layers;
    k.attn_after = k.attn_before - per_unit * (size_t)p->n;
    k.params_after = k.params_before - per_unit * (size_t)p->n;
    return k;
}

void share_fingerprint(const ParamTable *t, const float *params, char out[40]) {
    CHECK(!t->shared, "the fingerprint is of a full model's weights");
    const ParamKind kinds[4] = {P_WQ, P_WK, P_WV, P_WO};
    uint64_t h = PS_FNV1A64_BASIS;
    for (int l = 0; l < t->cfg.n_layers; l++)
        for (int k = 0; k < 4; k++) {
            const ParamEntry *e = param_layer(t, l, kinds[k]);
            h = ps_fnv1a64(h, params + e->offset, e->numel);
        }
    snprintf(out, 40, "fnv1a64:%016llx", (unsigned long long)h);
}

void share_fingerprint_views(const LlamaConfig *cfg, const ShareLayerView *views, char out[40],
                             void (*release)(const void *p, size_t bytes)) {
    size_t hd = (size_t)cfg_head_dim(cfg), C = (size_t)cfg->dim;
    size_t n[4] = {cfg->n_heads * hd * C, cfg->n_kv_heads * hd * C, cfg->n_kv_heads * hd * C,
                   C * cfg->n_heads * hd};
    float *buf = xmalloc(sizeof(float) * 65536);
    uint64_t h = PS_FNV1A64_BASIS;
    for (int l = 0; l < cfg->n_layers; l++)
        for (int k = 0; k < 4; k++) {
            const ShareLayerView *v = &views[l];
            CHECK(view_part(v, k) || v->raw[k], "layer %d: the fingerprint needs W%c", l,
                  "qkvo"[k]);
            for (size_t o = 0; o < n[k]; o += 65536) {
                size_t m = n[k] - o < 65536 ? n[k] - o : 65536;
                h = ps_fnv1a64(h, view_floats(v, k, o, m, buf), m);
            }
            if (release)
                release(view_part(v, k) ? (const void *)view_part(v, k) : v->raw[k],
                        n[k] * (view_part(v, k) ? 4 : 2));
        }
    free(buf);
    snprintf(out, 40, "fnv1a64:%016llx", (unsigned long long)h);
}

const char *share_unit_name(const LlamaConfig *cfg, int layer, int unit, char buf[32]) {
    snprintf(buf, 32, "L%d.%c%d", layer, cfg->n_kv_heads == cfg->n_heads ? 'H' : 'G', unit);
    return buf;
}

// ---------------------------------------------------------------------------
// plan JSON

#define PLAN_FORMAT "postshare-share-plan"
#define PLAN_VERSION 1

static const char *unit_kind(const LlamaConfig *c) {
    return c->n_kv_heads == c->n_heads ? "head" : "kv_group";
}

char *share_plan_to_json(const SharePlan *p) {
    const LlamaConfig *c = &p->cfg;
    ShareCounts k = share_counts(p);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", PLAN_FORMAT);
    cJSON_AddNumberToObject(root, "version", PLAN_VERSION);
    cJSON *m = cJSON_AddObjectToObject(root, "model");
    hf_json_add_shape(m, c);
    cJSON_AddBoolToObject(m, "tie_word_embeddings", c->tie_embeddings);
    cJSON_AddStringToObject(root, "fingerprint", p->fingerprint);
    cJSON_AddStringToObject(root, "match", share_match_name(p->match));
    cJSON_AddNumberToObject(root, "ratio", p->ratio);
    cJSON_AddStringToObject(root, "unit", unit_kind(c));
    cJSON_AddNumberToObject(root, "units", c->n_layers * c->n_kv_heads);
    cJSON_AddNumberToObject(root, "replaced", p->n);
    cJSON *ct = cJSON_AddObjectToObject(root, "counts");
    cJSON_AddNumberToObject(ct, "params_before", (double)k.params_before);
    cJSON_AddNumberToObject(ct, "params_after", (double)k.params_after);
    cJSON_AddNumberToObject(ct, "attention_params_before", (double)k.attn_before);
    cJSON_AddNumberToObject(ct, "attention_params_after", (double)k.attn_after);
    cJSON_AddNumberToObject(ct, "bytes_before_f32", 4.0 * (double)k.params_before);
    cJSON_AddNumberToObject(ct, "bytes_after_f32", 4.0 * (double)k.params_after);
    cJSON *arr = cJSON_AddArrayToObject(root, "shared");
    for (int i = 0; i < p->n; i++) {
        const ShareEntry *e = &p->e[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "layer", e->layer);
        cJSON_AddNumberToObject(o, "head", e->unit);
        cJSON_AddNumberToObject(o, "source_layer", e->src_layer);
        cJSON_AddNumberToObject(o, "source_head", e->src_unit);
        cJSON_AddItemToObject(o, "similarity", hf_json_float(e->sim));
        cJSON_AddItemToArray(arr, o);
    }
    char *txt = cJSON_Print(root);
    CHECK(txt, "cJSON_Print failed");
    cJSON_Delete(root);
    size_t n = strlen(txt);
    txt = xrealloc(txt, n + 2);
    txt[n] = '\n';
    txt[n + 1] = 0;
    return txt;
}

int share_plan_write(const char *path, const SharePlan *p) {
    char *txt = share_plan_to_json(p);
    int rc = ps_write_file_atomic(path, txt, strlen(txt));
    free(txt);
    return rc;
}

// Strict readers of one JSON field; each names the file and the field.
static int only_keys(const cJSON *o, const char *const *keys, const char *path, const char *where) {
    for (const cJSON *e = o->child; e; e = e->next) {
        int ok = 0;
        for (int i = 0; keys[i]; i++) ok |= !strcmp(e->string, keys[i]);
        if (!ok) return ps_err_set("%s: %sunknown key \"%s\"", path, where, e->string);
    }
    return 0;
}

static int get_int(const cJSON *o, const char *key, long lo, long hi, long *out, const char *path,
                   const char *where) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return ps_err_set("%s: %smissing \"%s\"", path, where, key);
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < (double)lo || d > (double)hi)
        return ps_err_set("%s: %s\"%s\" must be an integer in [%ld, %ld]", path, where, key, lo,
                          hi);
    *out = (long)d;
    return 0;
}

static const char *get_str(const cJSON *o, const char *key, const char *path) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v)) {
        ps_err_set("%s: \"%s\" must be a string", path, key);
        return NULL;
    }
    return v->valuestring;
}

static int cmp_entry(const void *a, const void *b) {
    const ShareEntry *x = a, *y = b;
    if (x->layer != y->layer) return x->layer - y->layer;
    return x->unit - y->unit;
}

static int read_model(const cJSON *m, const char *path, LlamaConfig *c) {
    static const char *const keys[] = {
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim",    "intermediate_size", "vocab_size",          "tie_word_embeddings",
        NULL};
    if (!cJSON_IsObject(m)) return ps_err_set("%s: \"model\" must be an object", path);
    if (only_keys(m, keys, path, "model: ")) return -1;
    long v[7];
    for (int i = 0; i < 7; i++)
        if (get_int(m, keys[i], 1, INT_MAX, &v[i], path, "model: ")) return -1;
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(m, "tie_word_embeddings");
    if (!cJSON_IsBool(tie))
        return ps_err_set("%s: model: \"tie_word_embeddings\" must be true or false", path);
    *c = (LlamaConfig){.dim = (int)v[0],
                       .n_layers = (int)v[1],
                       .n_heads = (int)v[2],
                       .n_kv_heads = (int)v[3],
                       .ffn_dim = (int)v[5],
                       .vocab_size = (int)v[6],
                       .max_seq_len = 1,
                       .rope_theta = 10000.0f,
                       .norm_eps = 1e-5f,
                       .tie_embeddings = cJSON_IsTrue(tie)};
    // an explicit head_dim (not hidden_size / num_attention_heads) is kept as such
    if (!(c->dim % c->n_heads == 0 && v[4] == c->dim / c->n_heads)) c->head_dim = (int)v[4];
    if (llama_config_validate(c) != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ps_err_msg());
        return ps_err_set("%s: model: %s", path, msg);
    }
    return 0;
}

// Every unit's source must keep its own weights. A replaced source is a chain,
// or a cycle when following the sources comes back to the start.
static int check_sources(const SharePlan *p, const int *src, const int *entry_of,
                         const char *path) {
    const LlamaConfig *c = &p->cfg;
    int U = c->n_kv_heads, N = c->n_layers * U;
    char a[32], b[32], d[32];
    for (int i = 0; i < N; i++) {
        int s = src[i];
        if (s == i || src[s] == s) continue;
        share_unit_name(c, i / U, i % U, a);
        share_unit_name(c, s / U, s % U, b);
        int x = s, steps = 0;
        while (src[x] != x && x != i && steps++ < N) x = src[x];
        if (x == i)
            return ps_err_set(
                "%s: shared[%d]: a cycle: %s takes its weights from %s, and following the "
                "sources from %s leads back to %s",
                path, entry_of[i], a, b, b, a);
        return ps_err_set(
            "%s: shared[%d]: a chain: %s takes its weights from %s, which is itself replaced "
            "(by %s); a replaced head never serves as a source",
            path, entry_of[i], a, b, share_unit_name(c, src[s] / U, src[s] % U, d));
    }
    return 0;
}

int share_plan_read(const char *path, SharePlan *p) {
    memset(p, 0, sizeof *p);
    size_t len;
    char *txt = ps_read_file(path, &len);
    if (!txt) return -1;
    int rc = share_plan_parse(txt, path, p);
    free(txt);
    return rc;
}

int share_plan_parse(const char *json, const char *path, SharePlan *p) {
    memset(p, 0, sizeof *p);
    cJSON *root = ps_json_parse(json, strlen(json), path);
    int rc = -1, *src = NULL, *entry_of = NULL;
    if (!root) goto done;
    if (!cJSON_IsObject(root)) {
        ps_err_set("%s: not a sharing plan: not a JSON object", path);
        goto done;
    }
    static const char *const keys[] = {"format",   "version", "model",  "fingerprint",
                                       "match",    "ratio",   "unit",   "units",
                                       "replaced", "counts",  "shared", NULL};
    if (only_keys(root, keys, path, "")) goto done;
    const char *fmt = get_str(root, "format", path);
    if (!fmt) goto done;
    if (strcmp(fmt, PLAN_FORMAT)) {
        ps_err_set("%s: \"format\" is \"%s\", expected \"%s\"", path, fmt, PLAN_FORMAT);
        goto done;
    }
    long ver;
    if (get_int(root, "version", PLAN_VERSION, PLAN_VERSION, &ver, path, "")) goto done;
    if (read_model(cJSON_GetObjectItemCaseSensitive(root, "model"), path, &p->cfg)) goto done;
    const LlamaConfig *c = &p->cfg;
    int U = c->n_kv_heads, L = c->n_layers, N = L * U;
    const char *fp = get_str(root, "fingerprint", path), *mt = get_str(root, "match", path);
    const char *uk = get_str(root, "unit", path);
    if (!fp || !mt || !uk) goto done;
    if (strlen(fp) >= sizeof p->fingerprint) {
        ps_err_set("%s: \"fingerprint\" is too long", path);
        goto done;
    }
    snprintf(p->fingerprint, sizeof p->fingerprint, "%s", fp);
    if (share_match_parse(mt, &p->match)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ps_err_msg());
        ps_err_set("%s: \"match\": %s", path, msg);
        goto done;
    }
    if (strcmp(uk, unit_kind(c))) {
        ps_err_set("%s: \"unit\" is \"%s\" but the model's shape makes it \"%s\"", path, uk,
                   unit_kind(c));
        goto done;
    }
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "ratio");
    if (!cJSON_IsNumber(r) || !(r->valuedouble >= 0 && r->valuedouble < 1)) {
        ps_err_set("%s: \"ratio\" must be a number in [0, 1)", path);
        goto done;
    }
    p->ratio = r->valuedouble;
    long units = 0, replaced = 0;
    if (get_int(root, "units", N, N, &units, path, "") ||
        get_int(root, "replaced", 0, N, &replaced, path, ""))
        goto done;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "shared");
    if (!cJSON_IsArray(arr)) {
        ps_err_set("%s: \"shared\" must be an array", path);
        goto done;
    }
    p->n = cJSON_GetArraySize(arr);
    if (p->n != replaced) {
        ps_err_set("%s: \"replaced\" is %ld but \"shared\" lists %d heads", path, replaced, p->n);
        goto done;
    }
    p->e = xcalloc((size_t)(p->n ? p->n : 1), sizeof(ShareEntry));
    src = xmalloc(sizeof(int) * (size_t)N);
    entry_of = xmalloc(sizeof(int) * (size_t)N);
    for (int i = 0; i < N; i++) src[i] = i, entry_of[i] = -1;
    static const char *const ekeys[] = {"layer",       "head",       "source_layer",
                                        "source_head", "similarity", NULL};
    int k = 0;
    char where[64], a[32];
    for (const cJSON *o = arr->child; o; o = o->next, k++) {
        snprintf(where, sizeof where, "shared[%d]: ", k);
        if (!cJSON_IsObject(o)) {
            ps_err_set("%s: %snot an object", path, where);
            goto done;
        }
        if (only_keys(o, ekeys, path, where)) goto done;
        long v[4] = {0, 0, 0, 0};
        if (get_int(o, "layer", 0, L - 1, &v[0], path, where) ||
            get_int(o, "head", 0, U - 1, &v[1], path, where) ||
            get_int(o, "source_layer", 0, L - 1, &v[2], path, where) ||
            get_int(o, "source_head", 0, U - 1, &v[3], path, where)) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", ps_err_msg());
            ps_err_set("%s (the plan's model has %d layers of %d %ss)", msg, L, U, unit_kind(c));
            goto done;
        }
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(o, "similarity");
        if (!cJSON_IsNumber(sv) || !(sv->valuedouble >= -1 && sv->valuedouble <= 1)) {
            ps_err_set("%s: %s\"similarity\" must be a number in [-1, 1]", path, where);
            goto done;
        }
        ShareEntry *e = &p->e[k];
        *e = (ShareEntry){(int)v[0], (int)v[1], (int)v[2], (int)v[3], (float)sv->valuedouble};
        int i = e->layer * U + e->unit, s = e->src_layer * U + e->src_unit;
        share_unit_name(c, e->layer, e->unit, a);
        if (entry_of[i] >= 0) {
            ps_err_set("%s: %s%s is listed twice (also shared[%d])", path, where, a, entry_of[i]);
            goto done;
        }
        if (s == i) {
            ps_err_set("%s: %sa cycle: %s takes its weights from itself", path, where, a);
            goto done;
        }
        entry_of[i] = k;
        src[i] = s;
    }
    if (check_sources(p, src, entry_of, path)) goto done;
    qsort(p->e, (size_t)p->n, sizeof(ShareEntry), cmp_entry);

    // The counts must be the ones these entries give.
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(root, "counts");
    if (!cJSON_IsObject(ct)) {
        ps_err_set("%s: \"counts\" must be an object", path);
        goto done;
    }
    ShareCounts want = share_counts(p);
    static const char *const ckeys[] = {"params_before",
                                        "params_after",
                                        "attention_params_before",
                                        "attention_params_after",
                                        "bytes_before_f32",
                                        "bytes_after_f32",
                                        NULL};
    double wv[6] = {(double)want.params_before,       (double)want.params_after,
                    (double)want.attn_before,         (double)want.attn_after,
                    4.0 * (double)want.params_before, 4.0 * (double)want.params_after};
    if (only_keys(ct, ckeys, path, "counts: ")) goto done;
    for (int i = 0; i < 6; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(ct, ckeys[i]);
        if (!cJSON_IsNumber(v) || v->valuedouble != wv[i]) {
            ps_err_set("%s: counts: \"%s\" is %s but the entries give %.0f (edited by hand?)", path,
                       ckeys[i], cJSON_IsNumber(v) ? "different" : "missing", wv[i]);
            goto done;
        }
    }
    rc = 0;
done:
    cJSON_Delete(root);
    free(src);
    free(entry_of);
    if (rc) share_plan_free(p);
    return rc;
}

int share_plan_check(const SharePlan *p, const LlamaConfig *cfg, const char *fingerprint, int force,
                     const char *what) {
    const LlamaConfig *a = &p->cfg;
    const struct {
        const char *name;
        int plan, model;
    } f[] = {{"hidden_size", a->dim, cfg->dim},
             {"num_hidden_layers", a->n_layers, cfg->n_layers},
             {"num_attention_heads", a->n_heads, cfg->n_heads},
             {"num_key_value_heads", a->n_kv_heads, cfg->n_kv_heads},
             {"head_dim", cfg_head_dim(a), cfg_head_dim(cfg)},
             {"intermediate_size", a->ffn_dim, cfg->ffn_dim},
             {"vocab_size", a->vocab_size, cfg->vocab_size},
             {"tie_word_embeddings", a->tie_embeddings, cfg->tie_embeddings}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].plan != f[i].model)
            return ps_err_set(
                "%s: the plan is for a different model shape: %s is %d in the plan but %d in "
                "the model",
                what, f[i].name, f[i].plan, f[i].model);
    if (fingerprint && strcmp(fingerprint, p->fingerprint) && !force)
        return ps_err_set(
            "%s: fingerprint mismatch: the plan was made for attention weights %s, but the "
            "model's are %s (other weights of the same shape); pass --force to apply it anyway",
            what, p->fingerprint, fingerprint);
    return 0;
}

// ---------------------------------------------------------------------------
// full <-> compact

size_t share_scratch_elems(const LlamaConfig *cfg) {
    size_t hd = (size_t)cfg_head_dim(cfg), C = (size_t)cfg->dim;
    return 2 * hd * C * ((size_t)cfg->n_heads + (size_t)cfg->n_kv_heads);
}

// Copy one unit's slice between two attention tensors of the same kind (elements
// of be->act_bytes): the unit sits at slot fs of `from`, which holds fn units,
// and goes to slot ts of `to`, which holds tn units. Wq/Wk/Wv slices are
// contiguous rows; a Wo slice is G*hd columns of every one of its C rows.
static void copy_unit(const Backend *be, const LlamaConfig *c, ParamKind kind, void *to, int tn,
                      int ts, const void *from, int fn, int fs) {
    size_t hd = (size_t)cfg_head_dim(c), C = (size_t)c->dim,
           G = (size_t)(c->n_heads / c->n_kv_heads);
    size_t e = be->act_bytes;
    if (kind == P_WO) {
        size_t w = G * hd;  // columns per unit
        be->copy2d((char *)to + ts * w * e, tn * w, (const char *)from + fs * w * e, fn * w, C, w);
    } else {
        size_t rows = (kind == P_WQ ? G : 1) * hd;
        be->copy2d((char *)to + ts * rows * C * e, C, (const char *)from + fs * rows * C * e, C,
                   rows, C);
    }
}

static const ParamKind k_attn[4] = {P_WQ, P_WK, P_WV, P_WO};

void share_assemble_layer(const ParamTable *t, const Backend *be, const void *flat, int l, void *wq,
                          void *wk, void *wv, void *wo) {
    const ShareLayout *s = t->shared;
    CHECK(s, "share_assemble_layer needs a compact shared model");
    int U = s->units;
    void *dst[4] = {wq, wk, wv, wo};
    for (int u = 0; u < U; u++) {
        int i = l * U + u, j = s->src[i], sl = j / U;
        for (int k = 0; k < 4; k++) {
            const ParamEntry *e = param_layer(t, sl, k_attn[k]);
            copy_unit(be, &t->cfg, k_attn[k], dst[k], U, u,
                      (const char *)flat + e->offset * be->act_bytes, s->n_own[sl], s->slot[j]);
        }
    }
}

void share_compact(const HostWeights *full, const SharePlan *plan, HostWeights *out) {
    CHECK(!full->t.shared, "share_compact needs a full model");
    const LlamaConfig *c = &full->t.cfg;
    int U = c->n_kv_heads;
    memset(out, 0, sizeof *out);
    param_table_build_shared(&out->t, c, plan);
    out->params = xmalloc(sizeof(float) * out->t.total);
    const ShareLayout *s = out->t.shared;
    const Backend *be = backend_cpu();  // host fp32 buffers are CPU-backend memory
    for (int i = 0; i < out->t.n; i++) {
        const ParamEntry *to = &out->t.e[i], *from = &full->t.e[i];  // same order, same names
        CHECK(!strcmp(to->name, from->name), "tables disagree at %d", i);
        if (to->numel == from->numel) {
            memcpy(out->params + to->offset, full->params + from->offset, 4 * to->numel);
            continue;
        }
        int l = to->layer;  // an attention tensor of a layer with replaced units
        for (int u = 0; u < U; u++)
            if (s->slot[l * U + u] >= 0)
                copy_unit(be, c, to->kind, out->params + to->offset, s->n_own[l],
                          s->slot[l * U + u], full->params + from->offset, U, u);
    }
}

void share_materialize(const HostWeights *compact, HostWeights *full) {
    CHECK(compact->t.shared, "share_materialize needs a compact shared model");
    memset(full, 0, sizeof *full);
    param_table_build(&full->t, &compact->t.cfg);
    full->params = xmalloc(sizeof(float) * full->t.total);
    for (int i = 0; i < full->t.n; i++) {
        const ParamEntry *to = &full->t.e[i], *from = &compact->t.e[i];
        if (to->numel == from->numel)
            memcpy(full->params + to->offset, compact->params + from->offset, 4 * to->numel);
    }
    const ShareLayout *s = compact->t.shared;
    for (int l = 0; l < full->t.cfg.n_layers; l++) {
        if (s->n_own[l] == s->units) continue;  // copied whole above
        float *w[4];
        for (int k = 0; k < 4; k++)
            w[k] = full->params + param_layer(&full->t, l, k_attn[k])->offset;
        share_assemble_layer(&compact->t, backend_cpu(), compact->params, l, w[0], w[1], w[2],
                             w[3]);
    }
}
