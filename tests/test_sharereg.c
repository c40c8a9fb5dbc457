// test_sharereg.c: the PostShare regularizer R and its gradient.
//
// For every divergence (l2, mse, kl, js, kl2) and several target sets, the
// analytic gradient of R (through reg_apply and the CPU op) must match central
// finite differences in double precision-friendly settings, on pairs that
// differ and on a pair whose slices are identical (where l2's gradient is the
// subgradient 0 and nothing may be NaN or inf). Also: R's value against a
// direct computation, slices of both units receiving gradient, and the stats.
#include <math.h>
#include <string.h>

#include "common.h"
#include "params.h"
#include "sharereg.h"
#include "test.h"

// A small GQA model (nh 4, nkv 2: units are KV groups of 2 query heads).
static const LlamaConfig CFG = {.dim = 8,
                                .n_layers = 3,
                                .n_heads = 4,
                                .n_kv_heads = 2,
                                .ffn_dim = 8,
                                .vocab_size = 5,
                                .max_seq_len = 8,
                                .rope_theta = 10000.0f,
                                .norm_eps = 1e-5f,
                                .tie_embeddings = 1};

static double reg_value(const RegPairs *rp, const float *p) {
    return reg_apply(backend_cpu(), rp, p, NULL, 1.0f).R;
}

// Direct l2/mse value of one pair of slices (independent of the op's code path).
static double direct_pair(const float *p, ParamSlice a, ParamSlice b, RegType type) {
    double dd = 0.0;
    size_t n = (size_t)a.rows * a.cols;
    for (int r = 0; r < a.rows; r++)
        for (int c = 0; c < a.cols; c++) {
            double d = (double)p[a.off + (size_t)r * a.ld + c] - p[b.off + (size_t)r * b.ld + c];
            dd += d * d;
        }
    return type == REG_L2 ? sqrt(dd) : dd / (double)n;
}

// normalize: the pairs weighted by reg_pairs_normalize at the (random) start.
static void check(RegType type, unsigned targets, const char *tname, int identical, int normalize) {
    ParamTable t;
    param_table_build(&t, &CFG);
    float *p = xmalloc(sizeof(float) * t.total);
    param_init_random(&t, p, 7 + targets + 31 * type, 0.5f);
    // Plan: L1.G0 <- L0.G1, L2.G1 <- L0.G1 (a shared source), L2.G0 <- L1.G1.
    ShareEntry e[3] = {{1, 0, 0, 1, 0.f}, {2, 0, 1, 1, 0.f}, {2, 1, 0, 1, 0.f}};
    SharePlan plan = {.cfg = CFG, .match = MATCH_QK, .ratio = 0.5, .n = 3, .e = e};
    RegPairs rp;
    reg_pairs_build(&rp, &t, &plan, targets, type);
    if (normalize) {
        T_CHECK(reg_pairs_normalize(&rp, p) == 0, "%s: normalize", reg_type_name(type));
        // the weights are the start's, fixed: move the params off the start
        for (size_t i = 0; i < t.total; i++) p[i] *= 1.0f + 0.1f * (float)(i % 5);
    }
    if (identical)  // make the first pair's slices coincide exactly
        for (int i = 0; i < rp.n; i++)
            if (rp.pair[i] == 0)
                for (int r = 0; r < rp.a[i].rows; r++)
                    for (int c = 0; c < rp.a[i].cols; c++)
                        p[rp.a[i].off + (size_t)r * rp.a[i].ld + c] =
                            p[rp.b[i].off + (size_t)r * rp.b[i].ld + c];

    float *g = xcalloc(t.total, sizeof(float));
    const float w = 0.7f;
    RegStats st = reg_apply(backend_cpu(), &rp, p, g, w);
    int finite = isfinite(st.R);
    for (size_t i = 0; i < t.total; i++) finite &= isfinite(g[i]);
    T_CHECK(finite, "%s/%s%s: NaN or inf in R or its gradient", reg_type_name(type), tname,
            identical ? "/identical" : "");

    if (type == REG_L2 || type == REG_MSE) {  // value against a direct computation
        double direct = 0.0;
        for (int i = 0; i < rp.n; i++)
            direct += direct_pair(p, rp.a[i], rp.b[i], type) * (rp.w ? rp.w[i] : 1.0);
        direct /= rp.n_pairs;
        T_CHECK(fabs(direct - st.R) <= 1e-9 * (1 + fabs(direct)), "%s/%s: R %.9g vs direct %.9g",
                reg_type_name(type), tname, st.R, direct);
    }

    // Finite differences over every coordinate of every slice involved.
    int bad = 0, checked = 0, touched_a = 0, touched_b = 0;
    const double h = 1e-3;
    for (int i = 0; i < rp.n; i++) {
        for (int side = 0; side < 2; side++) {
            ParamSlice s = side ? rp.b[i] : rp.a[i];
            for (int r = 0; r < s.rows; r += 3)
                for (int c = 0; c < s.cols; c += 2) {
                    size_t k = s.off + (size_t)r * s.ld + c;
                    float orig = p[k];
                    p[k] = orig + (float)h;
                    double up = reg_value(&rp, p);
                    p[k] = orig - (float)h;
                    double dn = reg_value(&rp, p);
                    p[k] = orig;
                    double fd = w * (up - dn) / (2 * h);
                    double an = g[k];
                    // l2 at coinciding slices: not differentiable; the central
                    // difference there is 0 per coordinate, as is the subgradient.
                    checked++;
                    if (!(fabs(fd - an) <= 1e-7 + 1e-3 * fabs(an))) {
                        if (bad < 5)
                            fprintf(stderr, "  %s/%s pair %d side %d (%d,%d): fd %.6g an %.6g\n",
                                    reg_type_name(type), tname, rp.pair[i], side, r, c, fd, an);
                        bad++;
                    }
                    if (g[k] != 0.0f) *(side ? &touched_b : &touched_a) += 1;
                }
        }
    }
    T_CHECK(bad == 0, "%s/%s%s: %d of %d gradient coordinates off", reg_type_name(type), tname,
            identical ? "/identical" : "", bad, checked);
    if (normalize)
        printf("  %s/%s%s normalized: %d coordinates match finite differences\n",
               reg_type_name(type), tname, identical ? "/identical" : "", checked);
    T_CHECK(touched_a > 0 && touched_b > 0, "%s/%s: both heads of a pair get gradient",
            reg_type_name(type), tname);
    T_CHECK(st.cos_min <= st.cos_mean && st.cos_mean <= st.cos_max && st.cos_max <= 1.0 + 1e-9,
            "cos stats ordered");
    if (identical) T_CHECK(st.dist_min == 0.0 && st.cos_max > 1.0 - 1e-9, "identical pair stats");
    reg_pairs_free(&rp);
    free(g);
    free(p);
    param_table_free(&t);
}

// Normalized R is scale-free: the weights c * p (normalized at c * p0) give
// the R of p (normalized at p0), for any c; the value at the start is the
// relative distance (l2: |a - b| / sqrt((|a|^2 + |b|^2) / 2) per slice pair).
// kl, js, kl2 are refused.
static void check_normalize_scale_free(RegType type) {
    ParamTable t;
    param_table_build(&t, &CFG);
    float *p = xmalloc(sizeof(float) * t.total), *q = xmalloc(sizeof(float) * t.total);
    param_init_random(&t, p, 11, 0.5f);
    ShareEntry e[2] = {{1, 0, 0, 1, 0.f}, {2, 1, 1, 0, 0.f}};
    SharePlan plan = {.cfg = CFG, .match = MATCH_QK, .ratio = 0.3, .n = 2, .e = e};
    RegPairs rp, rq;
    unsigned tg = REG_Q | REG_K | REG_V | REG_O;
    reg_pairs_build(&rp, &t, &plan, tg, type);
    reg_pairs_build(&rq, &t, &plan, tg, type);
    for (size_t i = 0; i < t.total; i++) q[i] = 37.0f * p[i];
    reg_pairs_normalize(&rp, p);
    reg_pairs_normalize(&rq, q);
    double Rp = reg_value(&rp, p), Rq = reg_value(&rq, q);
    T_CHECK(fabs(Rp - Rq) <= 1e-6 * Rp, "%s normalized: R(37 p) %.9g == R(p) %.9g",
            reg_type_name(type), Rq, Rp);
    // the start value by hand for the first slice pair
    double aa = 0, bb = 0, dd = 0;
    ParamSlice a = rp.a[0], b = rp.b[0];
    for (int r = 0; r < a.rows; r++)
        for (int c = 0; c < a.cols; c++) {
            double x = p[a.off + (size_t)r * a.ld + c], y = p[b.off + (size_t)r * b.ld + c];
            aa += x * x, bb += y * y, dd += (x - y) * (x - y);
        }
    double want = type == REG_L2 ? sqrt(dd) / sqrt(0.5 * (aa + bb)) : dd / (0.5 * (aa + bb));
    double got = rp.w[0] * direct_pair(p, a, b, type);
    T_CHECK(fabs(got - want) <= 1e-9 * want, "%s normalized pair: %.9g vs %.9g",
            reg_type_name(type), got, want);
    double raw = reg_apply(backend_cpu(),
                           &(RegPairs){.n_pairs = rp.n_pairs,
                                       .n = rp.n,
                                       .a = rp.a,
                                       .b = rp.b,
                                       .pair = rp.pair,
                                       .type = type},
                           q, NULL, 1.0f)
                     .R;
    T_CHECK(fabs(raw - Rq) > 1.0, "%s: unnormalized R(37 p) %.4g differs from normalized %.4g",
            reg_type_name(type), raw, Rq);
    reg_pairs_free(&rp);
    reg_pairs_free(&rq);
    RegPairs rk;
    reg_pairs_build(&rk, &t, &plan, tg, REG_KL);
    T_CHECK(reg_pairs_normalize(&rk, p) != 0 && strstr(ps_err_msg(), "kl"), "normalize refuses kl");
    reg_pairs_free(&rk);
    free(p);
    free(q);
    param_table_free(&t);
}

// reg_pairs_lr_scale marks exactly the elements of the pairs' slices (both
// units, the strided Wo columns included), also inside a sub-range [lo, hi);
// with a separate source multiplier the target slices keep theirs even where
// a unit is both (this hand-made plan's L1.G0).
static void check_lr_scale(void) {
    ParamTable t;
    param_table_build(&t, &CFG);
    ShareEntry e[2] = {{1, 0, 0, 1, 0.f}, {2, 1, 1, 0, 0.f}};
    SharePlan plan = {.cfg = CFG, .match = MATCH_QK, .ratio = 0.3, .n = 2, .e = e};
    RegPairs rp;
    reg_pairs_build(&rp, &t, &plan, REG_Q | REG_V | REG_O, REG_L2);
    // mark: 0 outside the pairs, 1 on a source-only element, 2 on a target's
    unsigned char *mark = xcalloc(t.total, 1);
    float *sc = xmalloc(sizeof(float) * t.total);
    for (int side = 1; side >= 0; side--)
        for (int i = 0; i < rp.n; i++) {
            ParamSlice s = side ? rp.b[i] : rp.a[i];
            for (int r = 0; r < s.rows; r++)
                for (int c = 0; c < s.cols; c++) mark[s.off + (size_t)r * s.ld + c] = 2 - side;
        }
    size_t lo = t.total / 3, hi = t.total - 7, npaired = 0, ntarget = 0, bad = 0;
    reg_pairs_lr_scale(&rp, 0, t.total, 4.0f, 4.0f, 0.0f, sc);
    for (size_t i = 0; i < t.total; i++) {
        bad += sc[i] != (mark[i] ? 4.0f : 0.0f);
        npaired += mark[i] != 0;
        ntarget += mark[i] == 2;
    }
    reg_pairs_lr_scale(&rp, lo, hi, 2.0f, 2.0f, 0.5f, sc);
    for (size_t i = lo; i < hi; i++) bad += sc[i - lo] != (mark[i] ? 2.0f : 0.5f);
    reg_pairs_lr_scale(&rp, lo, hi, 3.0f, 0.0f, 1.0f, sc);
    for (size_t i = lo; i < hi; i++)
        bad += sc[i - lo] != (mark[i] == 2 ? 3.0f : mark[i] ? 0.0f : 1.0f);
    // 3 distinct units (L1.G0 is a target and a source) x (q: 2 heads x 2 x 8
    // + v: 2 x 8 + o: 8 rows x 4 columns), 2 of them targets
    T_CHECK(bad == 0 && npaired == 3 * (32 + 16 + 32) && ntarget == 2 * (32 + 16 + 32),
            "lr scale: %zu wrong, %zu paired, %zu in targets", bad, npaired, ntarget);
    reg_pairs_free(&rp);
    free(mark);
    free(sc);
    param_table_free(&t);
}

int main(void) {
    struct {
        unsigned mask;
        const char *name;
    } sets[] = {{REG_Q, "q"},
                {REG_K, "k"},
                {REG_V, "v"},
                {REG_O, "o"},
                {REG_Q | REG_K | REG_V, "qkv"},
                {REG_Q | REG_K | REG_V | REG_O, "qkvo"}};
    for (int type = REG_L2; type <= REG_KL2; type++)
        for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++)
            for (int ident = 0; ident < 2; ident++) {
                check((RegType)type, sets[s].mask, sets[s].name, ident, 0);
                if (type == REG_L2 || type == REG_MSE)
                    check((RegType)type, sets[s].mask, sets[s].name, ident, 1);
            }
    check_normalize_scale_free(REG_L2);
    check_normalize_scale_free(REG_MSE);
    check_lr_scale();

    unsigned m;
    T_CHECK(reg_targets_parse("[q, k, v]", &m) == 0 && m == (REG_Q | REG_K | REG_V), "parse qkv");
    T_CHECK(reg_targets_parse("q,x", &m) != 0 && strstr(ps_err_msg(), "'x'"), "bad target");
    T_CHECK(reg_targets_parse("q,q", &m) != 0, "duplicate target");
    RegType rt;
    T_CHECK(reg_type_parse("js", &rt) == 0 && rt == REG_JS, "parse js");
    T_CHECK(reg_type_parse("l1", &rt) != 0 && strstr(ps_err_msg(), "l1"), "bad type");
    return t_summary();
}
