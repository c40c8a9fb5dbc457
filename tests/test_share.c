// test_share.c: head matching, the plan selection rule, plan validation and
// files, and DirectShare's compact and materialized models (share.h).
//   - a model where some heads (MHA) / KV groups (GQA) were made exact copies
//     of earlier ones: exactly those are chosen at the matching ratio, and the
//     compact model gives bitwise the logits of the original;
//   - ratio 0 is the identity plan; the replaced count is floor(R x L x units)
//     for several ratios on MHA, GQA and stories260K (skipped without
//     ../shared/data); an unreachable ratio is a clear error;
//   - the similarities equal a direct float64 computation for every match
//     function and do not depend on the thread count;
//   - the selection rule on hand-made similarities (fallback, stop, ties);
//   - compact and materialized models give the same logits; export -> import
//     round trips; every kind of bad plan is rejected with a clear message.
#define _XOPEN_SOURCE 700
#include <cjson/cJSON.h>
#include <ftw.h>
#include <math.h>
#include <omp.h>
#include <unistd.h>

#include "common.h"
#include "hf_io.h"
#include "modelsrc.h"
#include "model.h"
#include "params.h"
#include "share.h"
#include "test.h"
#include "test_share_util.h"

static char g_tmp[4096];

// dim 32, ffn 40, vocab 48, max_seq_len 32, rope_theta 1e4, eps 1e-5; L layers, nh/nkv heads.
static LlamaConfig cfg_of(int L, int nh, int nkv, int tied) {
    return (LlamaConfig){.dim = 32,
                         .n_layers = L,
                         .n_heads = nh,
                         .n_kv_heads = nkv,
                         .ffn_dim = 40,
                         .vocab_size = 48,
                         .max_seq_len = 32,
                         .rope_theta = 10000.0f,
                         .norm_eps = 1e-5f,
                         .tie_embeddings = tied};
}

// A random model of shape c and its plan (match qk) at ratio.
static void model_and_plan(HostWeights *w, SharePlan *p, const LlamaConfig *c, uint64_t seed,
                           double ratio) {
    make_model(w, c, seed);
    CHECK(share_plan_make(w, MATCH_QK, ratio, 0, p, NULL) == 0, "%s", ps_err_msg());
}

static int plan_has(const SharePlan *p, int l, int u, int sl, int su) {
    for (int k = 0; k < p->n; k++)
        if (p->e[k].layer == l && p->e[k].unit == u && p->e[k].src_layer == sl &&
            p->e[k].src_unit == su)
            return 1;
    return 0;
}

// Every source keeps its weights; the count is floor(ratio * units).
static void check_plan_shape(const SharePlan *p, const char *what) {
    int U = p->cfg.n_kv_heads, N = p->cfg.n_layers * U;
    T_CHECK(p->n == share_count_for_ratio(p->ratio, N), "%s: %d replaced, want floor(%g*%d)", what,
            p->n, p->ratio, N);
    for (int k = 0; k < p->n; k++) {
        const ShareEntry *e = &p->e[k];
        T_CHECK(e->src_layer < e->layer, "%s: source layer %d not before %d", what, e->src_layer,
                e->layer);
        int src_replaced = 0;
        for (int j = 0; j < p->n; j++)
            src_replaced |= p->e[j].layer == e->src_layer && p->e[j].unit == e->src_unit;
        T_CHECK(!src_replaced, "%s: L%d.%d's source L%d.%d is itself replaced", what, e->layer,
                e->unit, e->src_layer, e->src_unit);
    }
}

// ---------------------------------------------------------------------------

// Copies: L4, 4 heads (MHA) or 2 KV groups (GQA); copies[k] = {l, u, sl, su}.
static void test_copies(int nkv, const int (*copies)[4], int n_copies) {
    LlamaConfig c = cfg_of(4, 4, nkv, 0);
    HostWeights w;
    make_model(&w, &c, 11 + nkv);
    for (int k = 0; k < n_copies; k++)
        copy_unit(&w, copies[k][0], copies[k][1], copies[k][2], copies[k][3]);
    int N = c.n_layers * nkv;
    double ratio = (double)n_copies / N;
    SharePlan p;
    T_CHECK(share_plan_make(&w, MATCH_QK, ratio, 0, &p, NULL) == 0, "plan: %s", ps_err_msg());
    T_CHECK(p.n == n_copies, "nkv %d: %d replaced, want %d", nkv, p.n, n_copies);
    for (int k = 0; k < n_copies; k++)
        T_CHECK(plan_has(&p, copies[k][0], copies[k][1], copies[k][2], copies[k][3]),
                "nkv %d: copy L%d.%d <- L%d.%d not chosen", nkv, copies[k][0], copies[k][1],
                copies[k][2], copies[k][3]);
    for (int k = 0; k < p.n; k++)
        T_CHECK(p.e[k].sim > 0.99999f, "copy similarity %.7f", p.e[k].sim);

    HostWeights cw, mw;
    share_compact(&w, &p, &cw);
    size_t per_unit = (size_t)(2 * (4 / nkv) + 2) * cfg_head_dim(&c) * c.dim;
    T_CHECK(cw.t.total == w.t.total - per_unit * n_copies, "compact holds %zu, want %zu",
            cw.t.total, w.t.total - per_unit * n_copies);
    float *a = logits_of(&w, 2, 7), *b = logits_of(&cw, 2, 7);
    size_t nl = (size_t)2 * 7 * c.vocab_size;
    T_CHECK(memcmp(a, b, sizeof(float) * nl) == 0,
            "nkv %d: compact logits differ from the original", nkv);
    share_materialize(&cw, &mw);
    T_CHECK(mw.t.total == w.t.total && memcmp(mw.params, w.params, sizeof(float) * w.t.total) == 0,
            "nkv %d: materialized weights differ from the original with its copies", nkv);
    printf("copies (nkv %d): %d of %d units chosen, logits bitwise equal\n", nkv, p.n, N);
    free(a);
    free(b);
    host_weights_free(&mw);
    host_weights_free(&cw);
    share_plan_free(&p);
    host_weights_free(&w);
}

static void test_identity(void) {
    LlamaConfig c = cfg_of(3, 4, 2, 1);
    HostWeights w, cw;
    SharePlan p;
    model_and_plan(&w, &p, &c, 5, 0.0);
    T_CHECK(p.n == 0, "ratio 0 replaced %d", p.n);
    share_compact(&w, &p, &cw);
    T_CHECK(cw.t.total == w.t.total && memcmp(cw.params, w.params, sizeof(float) * w.t.total) == 0,
            "identity plan changed the weights");
    float *a = logits_of(&w, 1, 5), *b = logits_of(&cw, 1, 5);
    T_CHECK(memcmp(a, b, sizeof(float) * 5 * c.vocab_size) == 0, "identity logits differ");
    free(a);
    free(b);
    host_weights_free(&cw);
    share_plan_free(&p);
    host_weights_free(&w);
}

static void counts_on(const HostWeights *w, const char *name, const double *ratios, int nr) {
    const LlamaConfig *c = &w->t.cfg;
    int N = c->n_layers * c->n_kv_heads;
    for (int i = 0; i < nr; i++) {
        SharePlan p;
        int rc = share_plan_make(w, MATCH_QK, ratios[i], 0, &p, NULL);
        T_CHECK(rc == 0, "%s ratio %g: %s", name, ratios[i], ps_err_msg());
        if (rc) continue;
        char what[64];
        snprintf(what, sizeof what, "%s ratio %g", name, ratios[i]);
        check_plan_shape(&p, what);
        ShareCounts k = share_counts(&p);
        HostWeights cw;
        share_compact(w, &p, &cw);
        T_CHECK(cw.t.total == k.params_after, "%s: compact %zu params, counts say %zu", what,
                cw.t.total, k.params_after);
        printf("%s: %d of %d units replaced, %zu -> %zu parameters\n", what, p.n, N,
               k.params_before, k.params_after);
        host_weights_free(&cw);
        share_plan_free(&p);
    }
}

static void test_counts(void) {
    const double ratios[] = {0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.6};
    HostWeights w;
    LlamaConfig mha = cfg_of(6, 4, 4, 0), gqa = cfg_of(6, 4, 2, 1);
    make_model(&w, &mha, 21);
    counts_on(&w, "MHA L6x4", ratios, 7);
    // at most 5 of 6 layers can be replaced: 0.9 x 24 = 21 > 20
    SharePlan p;
    EXPECT_FAIL(share_plan_make(&w, MATCH_QK, 0.9, 0, &p, NULL), "ratio 0.9", "cannot replace 21",
                "at most 20");
    const double all[] = {20.0 / 24};  // every unit of layers >= 1: reached through fallbacks
    counts_on(&w, "MHA L6x4 (all)", all, 1);
    EXPECT_FAIL(share_plan_make(&w, MATCH_QK, 1.0, 0, &p, NULL), "outside [0, 1)");
    host_weights_free(&w);
    make_model(&w, &gqa, 22);
    counts_on(&w, "GQA L6x2", ratios, 7);
    host_weights_free(&w);

    const char *data = t_shared_data();
    if (!data) {
        T_SKIP("../shared/data not found: stories260K (GQA) count test skipped");
        return;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/models/stories260K/stories260K.bin", data);
    if (model_load_any(path, &w) != 0) {
        T_CHECK(0, "load %s: %s", path, ps_err_msg());
        return;
    }
    // 0.8: 16 of 20, every unit of layers 1..4 (the plain greedy rule stopped at 10)
    const double r2[] = {0.1, 0.2, 0.3, 0.5, 0.6, 0.8};
    counts_on(&w, "stories260K", r2, 6);
    host_weights_free(&w);
}

// Similarities against a direct float64 computation, for every match function.
static void test_match_values(void) {
    LlamaConfig c = cfg_of(3, 4, 2, 0);
    HostWeights w;
    make_model(&w, &c, 31);
    int L = c.n_layers, U = c.n_kv_heads, N = L * U, G = c.n_heads / U, hd = cfg_head_dim(&c);
    size_t rows[3] = {(size_t)G * hd, (size_t)hd, (size_t)hd}, C = (size_t)c.dim;
    const ParamKind kinds[3] = {P_WQ, P_WK, P_WV};
    const int use[5][3] = {{1, 1, 0}, {1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {1, 1, 1}};
    ShareLayerView *v = xmalloc(sizeof *v * (size_t)L);
    share_layer_views(&w.t, w.params, v);
    for (int f = 0; f < 5; f++) {
        ShareSim s;
        share_match(&c, v, (ShareMatchFn)f, 0, &s);
        double worst = 0;
        for (int i = U; i < N; i++)
            for (int j = 0; j < (i / U) * U; j++) {
                double dot = 0, ni = 0, nj = 0;
                for (int k = 0; k < 3; k++) {
                    if (!use[f][k]) continue;
                    const float *a = w.params + param_layer(&w.t, i / U, kinds[k])->offset +
                                     (i % U) * rows[k] * C;
                    const float *b = w.params + param_layer(&w.t, j / U, kinds[k])->offset +
                                     (j % U) * rows[k] * C;
                    for (size_t x = 0; x < rows[k] * C; x++)
                        dot += (double)a[x] * b[x], ni += (double)a[x] * a[x],
                            nj += (double)b[x] * b[x];
                }
                double d = fabs(dot / sqrt(ni * nj) - s.sim[(size_t)i * N + j]);
                if (d > worst) worst = d;
            }
        T_CHECK(worst < 1e-5, "match %s: max |sim - float64| = %.3g", share_match_name(f), worst);
        share_sim_free(&s);
    }
    // bitwise the same on 1 and 2 threads
    ShareSim s1, s2;
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    share_match(&c, v, MATCH_QKV, 0, &s1);
    omp_set_num_threads(2);
    share_match(&c, v, MATCH_QKV, 0, &s2);
    omp_set_num_threads(nt);
    T_CHECK(memcmp(s1.sim, s2.sim, sizeof(float) * (size_t)N * N) == 0,
            "similarities differ between 1 and 2 threads");
    share_sim_free(&s1);
    share_sim_free(&s2);
    free(v);
    host_weights_free(&w);
}

// The selection rule on hand-made similarities: 3 layers of one unit (A, B, C).
static void test_select_rule(void) {
    float sim[9] = {0};
    int best[3] = {-1, 0, -1};
    ShareSim s = {3, 1, 3, sim, best};
    SharePlan p;
    // B~A 0.9, C~B 0.8, C~A 0.7: B <- A first; C's best source B is now
    // replaced, so C takes its best still-available source, A.
    sim[1 * 3 + 0] = 0.9f, sim[2 * 3 + 1] = 0.8f, sim[2 * 3 + 0] = 0.7f, best[2] = 1;
    memset(&p, 0, sizeof p);
    T_CHECK(share_select(&s, 2, &p) == 0, "fallback: %s", ps_err_msg());
    T_CHECK(p.n == 2 && plan_has(&p, 1, 0, 0, 0) && plan_has(&p, 2, 0, 0, 0),
            "fallback: want B<-A, C<-A");
    share_plan_free(&p);
    // C~B 0.95 first: B becomes a source, so no free unit is left for a second
    // pair; the fallback replaces B by A and moves C to A.
    sim[2 * 3 + 1] = 0.95f, sim[2 * 3 + 0] = 0.5f;
    T_CHECK(share_select(&s, 1, &p) == 0 && p.n == 1 && plan_has(&p, 2, 0, 1, 0), "C<-B first");
    share_plan_free(&p);
    char fb[3];
    T_CHECK(share_select_ex(&s, 2, &p, fb) == 0 && p.n == 2 && plan_has(&p, 1, 0, 0, 0) &&
                plan_has(&p, 2, 0, 0, 0) && fb[1] && fb[2] && !fb[0],
            "fallback: want B<-A, C<-A, both marked");
    share_plan_free(&p);
    EXPECT_FAIL(share_select(&s, 3, &p), "cannot replace 3 of 3", "at most 2");
    // ties: equal similarities go to the lower target, then the lower source
    sim[1 * 3 + 0] = 0.5f, sim[2 * 3 + 1] = 0.5f, sim[2 * 3 + 0] = 0.5f, best[2] = 0;
    T_CHECK(share_select(&s, 1, &p) == 0 && plan_has(&p, 1, 0, 0, 0), "tie: lower target first");
    share_plan_free(&p);
}

// head_dim: 0, or an explicit head size (not dim / n_heads): the units' slices
// follow it, and a compact model with its plan saves and loads with it.
static void test_compact_vs_materialized(int nkv, int tied, int head_dim) {
    LlamaConfig c = cfg_of(5, 4, nkv, tied);
    c.head_dim = head_dim;
    HostWeights w, cw, mw;
    SharePlan p;
    model_and_plan(&w, &p, &c, 41 + nkv, 0.4);
    share_compact(&w, &p, &cw);
    share_materialize(&cw, &mw);
    float *a = logits_of(&cw, 2, 9), *b = logits_of(&mw, 2, 9), *o = logits_of(&w, 2, 9);
    size_t n = (size_t)2 * 9 * c.vocab_size;
    T_CHECK(memcmp(a, b, sizeof(float) * n) == 0, "nkv %d: compact and materialized logits differ",
            nkv);
    T_CHECK(memcmp(a, o, sizeof(float) * n) != 0, "nkv %d: sharing changed nothing", nkv);
    // the compact model's memory: its own weights plus one layer of scratch
    T_CHECK(model_weight_bytes(&cw.t, 4) == 4 * (cw.t.total + share_scratch_elems(&c)) &&
                cw.t.total < w.t.total,
            "compact weight bytes");
    if (head_dim) {  // saved and read back: the plan keeps the head size, the weights fit it
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/compact_hd%d", g_tmp, head_dim);
        HostWeights r;
        T_CHECK(hf_save(dir, &cw, "float32") == 0 && model_load_any_shared(dir, &r) == 0,
                "head_dim %d compact save/load: %s", head_dim, ps_err_msg());
        T_CHECK(r.t.shared && cfg_head_dim(&r.t.shared->plan.cfg) == head_dim &&
                    cfg_head_dim(&r.t.cfg) == head_dim && r.t.total == cw.t.total &&
                    !memcmp(r.params, cw.params, sizeof(float) * cw.t.total),
                "head_dim %d compact round trip", head_dim);
        host_weights_free(&r);
    }
    free(a);
    free(b);
    free(o);
    host_weights_free(&mw);
    host_weights_free(&cw);
    share_plan_free(&p);
    host_weights_free(&w);
}

static int plans_equal(const SharePlan *a, const SharePlan *b) {
    if (a->n != b->n || a->match != b->match || a->ratio != b->ratio ||
        strcmp(a->fingerprint, b->fingerprint))
        return 0;
    for (int k = 0; k < a->n; k++)
        if (memcmp(&a->e[k], &b->e[k], sizeof a->e[k])) return 0;
    return 1;
}

static void test_roundtrip(void) {
    LlamaConfig c = cfg_of(4, 4, 2, 0);
    HostWeights w, cw, mw, r;
    SharePlan p;
    model_and_plan(&w, &p, &c, 51, 0.5);
    share_compact(&w, &p, &cw);
    share_materialize(&cw, &mw);
    char cdir[4200], mdir[4200], pfile[4200];
    snprintf(cdir, sizeof cdir, "%s/compact", g_tmp);
    snprintf(mdir, sizeof mdir, "%s/materialized", g_tmp);
    snprintf(pfile, sizeof pfile, "%s/plan.json", g_tmp);

    // plan file
    SharePlan q;
    T_CHECK(share_plan_write(pfile, &p) == 0 && share_plan_read(pfile, &q) == 0, "plan io: %s",
            ps_err_msg());
    T_CHECK(plans_equal(&p, &q), "plan file round trip");
    share_plan_free(&q);

    // compact model: stays compact, bitwise
    T_CHECK(hf_save(cdir, &cw, "float32") == 0, "save compact: %s", ps_err_msg());
    T_CHECK(model_load_any_shared(cdir, &r) == 0, "load compact: %s", ps_err_msg());
    T_CHECK(r.t.shared && r.t.total == cw.t.total &&
                memcmp(r.params, cw.params, sizeof(float) * cw.t.total) == 0 &&
                plans_equal(&r.t.shared->plan, &p),
            "compact round trip");
    host_weights_free(&r);
    // model_load_any materializes it
    T_CHECK(model_load_any(cdir, &r) == 0 && !r.t.shared && r.t.total == mw.t.total &&
                memcmp(r.params, mw.params, sizeof(float) * mw.t.total) == 0,
            "model_load_any of a compact model = materialized");
    host_weights_free(&r);
    // a compact folder is never a plain HF model, and a plain one is not compact
    EXPECT_FAIL(hf_load(cdir, &r), "compact/config.json", "compact shared model");
    char spec[4300];
    snprintf(spec, sizeof spec, "hf:%s", cdir);
    EXPECT_FAIL(model_load_any(spec, &r), "compact shared model");
    T_CHECK(hf_save(mdir, &mw, "float32") == 0, "save materialized: %s", ps_err_msg());
    snprintf(spec, sizeof spec, "shared:%s", mdir);
    EXPECT_FAIL(model_load_any(spec, &r), "not a compact shared model");
    T_CHECK(hf_load(mdir, &r) == 0 && r.t.total == mw.t.total &&
                memcmp(r.params, mw.params, sizeof(float) * mw.t.total) == 0,
            "materialized round trip: %s", ps_err_msg());
    host_weights_free(&r);
    // bf16 compact: loads, values rounded
    T_CHECK(hf_save(cdir, &cw, "bfloat16") == 0 && model_load_any_shared(cdir, &r) == 0,
            "bf16 compact: %s", ps_err_msg());
    size_t bad = 0;
    for (size_t i = 0; i < cw.t.total && r.params; i++)
        bad += r.params[i] != bf16_to_f32(f32_to_bf16(cw.params[i]));
    T_CHECK(bad == 0, "bf16 compact: %zu values differ", bad);
    host_weights_free(&r);
    // a compact folder whose plan does not fit its weights
    char *cp = ps_path_join(cdir, "plan.json");
    SharePlan p2;
    CHECK(share_plan_make(&w, MATCH_QK, 0.25, 0, &p2, NULL) == 0, "%s", ps_err_msg());
    CHECK(share_plan_write(cp, &p2) == 0, "%s", ps_err_msg());
    EXPECT_FAIL(model_load_any(cdir, &r), "compact/model.safetensors", "has shape");
    free(cp);
    share_plan_free(&p2);

    host_weights_free(&mw);
    host_weights_free(&cw);
    share_plan_free(&p);
    host_weights_free(&w);
}

// Read a plan after editing its JSON text with fn(root); returns share_plan_read's rc.
static int read_edited(const char *good, void (*fn)(cJSON *), const char *path) {
    cJSON *root = cJSON_Parse(good);
    fn(root);
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    FILE *f = xfopen(path, "w");
    fputs(txt, f);
    fclose(f);
    free(txt);
    SharePlan p;
    int rc = share_plan_read(path, &p);
    if (rc == 0) share_plan_free(&p);
    return rc;
}

static cJSON *entry(cJSON *root, int k) {
    return cJSON_GetArrayItem(cJSON_GetObjectItem(root, "shared"), k);
}
static void set_num(cJSON *o, const char *key, double v) {
    cJSON_SetNumberValue(cJSON_GetObjectItem(o, key), v);
}
static void ed_layer_range(cJSON *r) {
    set_num(entry(r, 0), "layer", 4);
}
static void ed_head_range(cJSON *r) {
    set_num(entry(r, 0), "head", -1);
}
static void ed_src_range(cJSON *r) {
    set_num(entry(r, 1), "source_head", 9);
}
// entry 1's source becomes entry 0's (replaced) head
static void ed_chain(cJSON *r) {
    cJSON *a = entry(r, 0), *b = entry(r, 1);
    set_num(b, "source_layer", cJSON_GetObjectItem(a, "layer")->valuedouble);
    set_num(b, "source_head", cJSON_GetObjectItem(a, "head")->valuedouble);
}
// entries 0 and 1 take each other's weights
static void ed_cycle(cJSON *r) {
    ed_chain(r);
    cJSON *a = entry(r, 0), *b = entry(r, 1);
    set_num(a, "source_layer", cJSON_GetObjectItem(b, "layer")->valuedouble);
    set_num(a, "source_head", cJSON_GetObjectItem(b, "head")->valuedouble);
}
static void ed_self(cJSON *r) {
    cJSON *a = entry(r, 0);
    set_num(a, "source_layer", cJSON_GetObjectItem(a, "layer")->valuedouble);
    set_num(a, "source_head", cJSON_GetObjectItem(a, "head")->valuedouble);
}
static void ed_twice(cJSON *r) {
    cJSON *a = entry(r, 0), *b = entry(r, 1);
    set_num(b, "layer", cJSON_GetObjectItem(a, "layer")->valuedouble);
    set_num(b, "head", cJSON_GetObjectItem(a, "head")->valuedouble);
}
static void ed_counts(cJSON *r) {
    set_num(cJSON_GetObjectItem(r, "counts"), "params_after", 12);
}
static void ed_replaced(cJSON *r) {
    set_num(r, "replaced", 1);
}
static void ed_unknown(cJSON *r) {
    cJSON_AddNumberToObject(entry(r, 0), "sauce", 1);
}
static void ed_format(cJSON *r) {
    cJSON_ReplaceItemInObject(r, "format", cJSON_CreateString("something-else"));
}
static void ed_match(cJSON *r) {
    cJSON_ReplaceItemInObject(r, "match", cJSON_CreateString("qv"));
}
static void ed_ratio(cJSON *r) {
    set_num(r, "ratio", 1.5);
}
static void ed_sim(cJSON *r) {
    set_num(entry(r, 0), "similarity", 2);
}
static void ed_missing(cJSON *r) {
    cJSON_DeleteItemFromObject(entry(r, 1), "source_layer");
}
static void ed_shape(cJSON *r) {
    set_num(cJSON_GetObjectItem(r, "model"), "num_key_value_heads", 3);
}

static void test_bad_plans(void) {
    LlamaConfig c = cfg_of(4, 4, 4, 0);
    HostWeights w, w2;
    SharePlan p;
    model_and_plan(&w, &p, &c, 61, 0.25);
    CHECK(p.n == 4, "4 entries");
    char *good = share_plan_to_json(&p), path[4200];
    snprintf(path, sizeof path, "%s/bad_plan.json", g_tmp);
    EXPECT_FAIL(read_edited(good, ed_layer_range, path), "bad_plan.json", "shared[0]", "\"layer\"",
                "[0, 3]");
    EXPECT_FAIL(read_edited(good, ed_head_range, path), "bad_plan.json", "shared[0]", "\"head\"");
    EXPECT_FAIL(read_edited(good, ed_src_range, path), "shared[1]", "\"source_head\"");
    EXPECT_FAIL(read_edited(good, ed_chain, path), "bad_plan.json", "a chain", "itself replaced");
    EXPECT_FAIL(read_edited(good, ed_cycle, path), "bad_plan.json", "a cycle");
    EXPECT_FAIL(read_edited(good, ed_self, path), "a cycle", "from itself");
    EXPECT_FAIL(read_edited(good, ed_twice, path), "listed twice");
    EXPECT_FAIL(read_edited(good, ed_counts, path), "counts", "params_after");
    EXPECT_FAIL(read_edited(good, ed_replaced, path), "\"replaced\" is 1");
    EXPECT_FAIL(read_edited(good, ed_unknown, path), "unknown key \"sauce\"");
    EXPECT_FAIL(read_edited(good, ed_format, path), "\"format\"");
    EXPECT_FAIL(read_edited(good, ed_match, path), "\"match\"", "qv");
    EXPECT_FAIL(read_edited(good, ed_ratio, path), "\"ratio\"");
    EXPECT_FAIL(read_edited(good, ed_sim, path), "\"similarity\"");
    EXPECT_FAIL(read_edited(good, ed_missing, path), "shared[1]", "missing \"source_layer\"");
    EXPECT_FAIL(read_edited(good, ed_shape, path), "bad_plan.json", "model", "must divide");
    FILE *f = xfopen(path, "w");
    fputs("{\"format\": ", f);
    fclose(f);
    SharePlan q;
    EXPECT_FAIL(share_plan_read(path, &q), "bad_plan.json", "not valid JSON");
    snprintf(path, sizeof path, "%s/no_such_plan.json", g_tmp);
    EXPECT_FAIL(share_plan_read(path, &q), "no_such_plan.json");

    // against a model: another shape, other weights (allowed only with force)
    char fp[40];
    share_fingerprint(&w.t, w.params, fp);
    T_CHECK(share_plan_check(&p, &c, fp, 0, "plan.json") == 0, "good plan: %s", ps_err_msg());
    LlamaConfig other = cfg_of(4, 4, 2, 0);
    EXPECT_FAIL(share_plan_check(&p, &other, NULL, 0, "plan.json"), "plan.json",
                "different model shape", "num_key_value_heads");
    make_model(&w2, &c, 62);
    share_fingerprint(&w2.t, w2.params, fp);
    EXPECT_FAIL(share_plan_check(&p, &c, fp, 0, "plan.json"), "plan.json", "fingerprint mismatch",
                "--force");
    T_CHECK(share_plan_check(&p, &c, fp, 1, "plan.json") == 0, "--force accepts it");
    // the fingerprint sees one flipped bit of one attention weight, and only attention
    char f1[40], f2[40];
    share_fingerprint(&w.t, w.params, f1);
    float *x = w.params + param_layer(&w.t, 3, P_WO)->offset + 17;
    *x = nextafterf(*x, 1e9f);
    share_fingerprint(&w.t, w.params, f2);
    T_CHECK(strcmp(f1, f2) != 0, "fingerprint misses a changed Wo weight");
    w.params[param_layer(&w.t, 1, P_W_UP)->offset] += 1.0f;
    share_fingerprint(&w.t, w.params, f1);
    T_CHECK(strcmp(f1, f2) == 0, "fingerprint depends on MLP weights");
    free(good);
    share_plan_free(&p);
    host_weights_free(&w2);
    host_weights_free(&w);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/test_share_XXXXXX", PS_BINARY_DIR);
    CHECK(mkdtemp(g_tmp), "mkdtemp %s", g_tmp);
    const int mha[4][4] = {{2, 1, 0, 3}, {3, 0, 1, 2}, {3, 2, 0, 0}, {1, 1, 0, 1}};
    const int gqa[2][4] = {{2, 1, 0, 0}, {3, 0, 1, 1}};
    test_copies(4, mha, 4);
    test_copies(2, gqa, 2);
    test_identity();
    test_counts();
    test_match_values();
    test_select_rule();
    test_compact_vs_materialized(4, 0, 0);
    test_compact_vs_materialized(2, 1, 0);
    test_compact_vs_materialized(2, 0, 12);
    test_roundtrip();
    test_bad_plans();
    int rc = t_summary();
    if (rc == 0)
        nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    else
        fprintf(stderr, "test files kept in %s\n", g_tmp);
    return rc;
}
