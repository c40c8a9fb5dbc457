// sharereg.c: the PostShare regularizer: plan -> slice pairs, the CPU op
// (cpu_share_reg, the reference implementation of Backend.share_reg) and the
// per-pair statistics (see sharereg.h for the definitions of each divergence).
#include "sharereg.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

#include "common.h"

static const char *REG_NAMES[] = {"l2", "mse", "kl", "js", "kl2"};

int reg_type_parse(const char *s, RegType *out) {
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, REG_NAMES[i])) {
            *out = (RegType)i;
            return 0;
        }
    return ps_err_set("unknown regularizer type '%s' (expected l2, mse, kl, js or kl2)", s);
}

const char *reg_type_name(RegType t) {
    return (unsigned)t < 5 ? REG_NAMES[t] : "?";
}

int reg_targets_parse(const char *s, unsigned *mask) {
    *mask = 0;
    for (const char *p = s; *p; p++) {
        int c = tolower((unsigned char)*p);
        if (c == '[' || c == ']' || c == ',' || c == ' ' || c == '"' || c == '\'') continue;
        unsigned bit = c == 'q'   ? REG_Q
                       : c == 'k' ? REG_K
                       : c == 'v' ? REG_V
                       : c == 'o' ? REG_O
                                  : 0;
        if (!bit)
            return ps_err_set("regularizer targets '%s': '%c' is not one of q, k, v, o", s, *p);
        if (*mask & bit) return ps_err_set("regularizer targets '%s': '%c' given twice", s, *p);
        *mask |= bit;
    }
    if (!*mask) return ps_err_set("regularizer targets '%s': empty (choose from q, k, v, o)", s);
    return 0;
}

// Slice of unit u (G query heads + 1 kv head) for target m in layer l.
static ParamSlice unit_slice(const ParamTable *t, int l, int u, unsigned m) {
    const LlamaConfig *c = &t->cfg;
    int hd = cfg_head_dim(c), G = c->n_heads / c->n_kv_heads, C = c->dim;
    ParamSlice s;
    if (m == REG_O) {  // Wo [C, nh*hd]: columns u*G*hd .. (u+1)*G*hd
        s.off = param_layer(t, l, P_WO)->offset + (size_t)u * G * hd;
        s.rows = C;
        s.cols = G * hd;
        s.ld = c->n_heads * hd;
    } else {  // Wq rows u*G*hd..; Wk/Wv rows u*hd..
        ParamKind k = m == REG_Q ? P_WQ : m == REG_K ? P_WK : P_WV;
        int rows = m == REG_Q ? G * hd : hd;
        s.off = param_layer(t, l, k)->offset + (size_t)u * rows * C;
        s.rows = rows;
        s.cols = C;
        s.ld = C;
    }
    return s;
}

void reg_pairs_build(RegPairs *rp, const ParamTable *t, const SharePlan *plan, unsigned targets,
                     RegType type) {
    memset(rp, 0, sizeof *rp);
    int nt = 0;
    for (unsigned m = REG_Q; m <= REG_O; m <<= 1) nt += (targets & m) != 0;
    rp->n_pairs = plan->n;
    rp->n = plan->n * nt;
    rp->type = type;
    rp->a = xcalloc((size_t)rp->n + 1, sizeof(ParamSlice));
    rp->b = xcalloc((size_t)rp->n + 1, sizeof(ParamSlice));
    rp->pair = xcalloc((size_t)rp->n + 1, sizeof(int));
    int i = 0;
    for (int p = 0; p < plan->n; p++) {
        const ShareEntry *e = &plan->e[p];
        for (unsigned m = REG_Q; m <= REG_O; m <<= 1) {
            if (!(targets & m)) continue;
            rp->a[i] = unit_slice(t, e->layer, e->unit, m);
            rp->b[i] = unit_slice(t, e->src_layer, e->src_unit, m);
            rp->pair[i] = p;
            i++;
        }
    }
}

void reg_pairs_free(RegPairs *rp) {
    free(rp->a);
    free(rp->b);
    free(rp->pair);
    free(rp->w);
    memset(rp, 0, sizeof *rp);
}

static double slice_sumsq(const float *p, ParamSlice s) {
    double ss = 0.0;
    for (int r = 0; r < s.rows; r++)
        for (int c = 0; c < s.cols; c++) {
            double x = p[s.off + (size_t)r * s.ld + c];
            ss += x * x;
        }
    return ss;
}

int reg_pairs_normalize(RegPairs *rp, const float *params0) {
    if (rp->type != REG_L2 && rp->type != REG_MSE)
        return ps_err_set("normalize applies to l2 and mse; %s is already scale-free",
                          reg_type_name(rp->type));
    free(rp->w);
    rp->w = xcalloc((size_t)rp->n + 1, sizeof(double));
    for (int i = 0; i < rp->n; i++) {
        double m = 0.5 * (slice_sumsq(params0, rp->a[i]) + slice_sumsq(params0, rp->b[i]));
        double n = (double)rp->a[i].rows * rp->a[i].cols;
        double s = rp->type == REG_L2 ? sqrt(m) : m / n;
        rp->w[i] = s > 0 ? 1.0 / s : 1.0;
    }
    return 0;
}

static void mark_slice(ParamSlice s, size_t lo, size_t hi, float v, float *out) {
    for (int r = 0; r < s.rows; r++) {
        size_t a = s.off + (size_t)r * s.ld, b = a + (size_t)s.cols;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        for (size_t j = a; j < b; j++) out[j - lo] = v;
    }
}

void reg_pairs_lr_scale(const RegPairs *rp, size_t lo, size_t hi, float paired, float source,
                        float rest, float *out) {
    for (size_t j = lo; j < hi; j++) out[j - lo] = rest;
    // sources first: a unit that is also a target (not in a plan share_plan_make
    // makes, but a hand-written one) keeps the target's multiplier
    for (int i = 0; i < rp->n; i++) mark_slice(rp->b[i], lo, hi, source, out);
    for (int i = 0; i < rp->n; i++) mark_slice(rp->a[i], lo, hi, paired, out);
}

// ---------------------------------------------------------------- CPU op

static void gather(const float *p, ParamSlice s, double *out) {
#pragma omp parallel for
    for (int r = 0; r < s.rows; r++)
        for (int c = 0; c < s.cols; c++)
            out[(size_t)r * s.cols + c] = p[s.off + (size_t)r * s.ld + c];
}

static void scatter_add(float *g, ParamSlice s, const double *d, double scale) {
#pragma omp parallel for
    for (int r = 0; r < s.rows; r++)
        for (int c = 0; c < s.cols; c++)
            g[s.off + (size_t)r * s.ld + c] += (float)(scale * d[(size_t)r * s.cols + c]);
}

// Sum over n of f(i), in fixed chunks so that the result does not depend on
// the thread count (see cpu_ops.c).
#define RCHUNKS 64
#define CHUNKED_SUM(result, n, expr)                                       \
    do {                                                                   \
        double part_[RCHUNKS];                                             \
        size_t per_ = ((n) + RCHUNKS - 1) / RCHUNKS;                       \
        _Pragma("omp parallel for") for (int c_ = 0; c_ < RCHUNKS; c_++) { \
            size_t lo_ = (size_t)c_ * per_, hi_ = lo_ + per_;              \
            if (hi_ > (n)) hi_ = (n);                                      \
            double s_ = 0.0;                                               \
            for (size_t i = lo_; i < hi_; i++) s_ += (expr);               \
            part_[c_] = s_;                                                \
        }                                                                  \
        double t_ = 0.0;                                                   \
        for (int c_ = 0; c_ < RCHUNKS; c_++) t_ += part_[c_];              \
        (result) = t_;                                                     \
    } while (0)

// In place: x[n] -> softmax(x - min x) (= softmax(x)); returns nothing.
static void softmax_inplace(double *x, size_t n) {
    double mx = -INFINITY;
    for (size_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) x[i] = exp(x[i] - mx);
    double sum;
    CHUNKED_SUM(sum, n, x[i]);
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) x[i] /= sum;
}

// Probabilities are clamped away from 0 inside logs so that an underflowed
// softmax entry cannot produce inf * 0.
static inline double lg(double p) {
    return log(p > 1e-300 ? p : 1e-300);
}

double cpu_share_reg(void *grads_, const void *params_, const ParamSlice *a, const ParamSlice *b,
                     int n, int type, float scale, double *stats) {
    float *grads = grads_;
    const float *params = params_;
    size_t cap = 0;
    for (int i = 0; i < n; i++) {
        size_t k = (size_t)a[i].rows * a[i].cols;
        CHECK(k == (size_t)b[i].rows * b[i].cols, "pair %d: slices of different sizes", i);
        if (k > cap) cap = k;
    }
    double *x = xmalloc(sizeof(double) * (cap + 1)), *y = xmalloc(sizeof(double) * (cap + 1));
    double *gx = xmalloc(sizeof(double) * (cap + 1)), *gy = xmalloc(sizeof(double) * (cap + 1));
    double total = 0.0;
    for (int pi = 0; pi < n; pi++) {
        size_t k = (size_t)a[pi].rows * a[pi].cols;
        gather(params, a[pi], x);
        gather(params, b[pi], y);
        double dot, aa, bb, dd;
        CHUNKED_SUM(dot, k, x[i] * y[i]);
        CHUNKED_SUM(aa, k, x[i] * x[i]);
        CHUNKED_SUM(bb, k, y[i] * y[i]);
        CHUNKED_SUM(dd, k, (x[i] - y[i]) * (x[i] - y[i]));
        if (stats) {
            stats[4 * pi + 0] = dot;
            stats[4 * pi + 1] = aa;
            stats[4 * pi + 2] = bb;
            stats[4 * pi + 3] = dd;
        }
        double D = 0.0, ca = 0.0;  // ca: scale of (x - y) in the gradient (l2, mse)
        if (type == REG_L2) {
            D = sqrt(dd);
            ca = D > 1e-30 ? 1.0 / D : 0.0;  // subgradient 0 where the slices coincide
        } else if (type == REG_MSE) {
            D = dd / (double)k;
            ca = 2.0 / (double)k;
        } else {
            softmax_inplace(x, k);  // x = P
            softmax_inplace(y, k);  // y = Q
            double kl_pq, kl_qp, js_p, js_q;
            switch (type) {
                case REG_KL:
                    CHUNKED_SUM(kl_pq, k, x[i] * (lg(x[i]) - lg(y[i])));
                    D = kl_pq;
                    if (grads) {
                        // dKL/dx_j = P_j (log P_j - log Q_j - KL); dKL/dy_j = Q_j - P_j
#pragma omp parallel for
                        for (size_t j = 0; j < k; j++) {
                            gx[j] = x[j] * (lg(x[j]) - lg(y[j]) - kl_pq);
                            gy[j] = y[j] - x[j];
                        }
                    }
                    break;
                case REG_KL2:
                    CHUNKED_SUM(kl_pq, k, x[i] * (lg(x[i]) - lg(y[i])));
                    CHUNKED_SUM(kl_qp, k, y[i] * (lg(y[i]) - lg(x[i])));
                    D = kl_pq + kl_qp;
                    if (grads) {
#pragma omp parallel for
                        for (size_t j = 0; j < k; j++) {
                            gx[j] = x[j] * (lg(x[j]) - lg(y[j]) - kl_pq) + (x[j] - y[j]);
                            gy[j] = y[j] * (lg(y[j]) - lg(x[j]) - kl_qp) + (y[j] - x[j]);
                        }
                    }
                    break;
                case REG_JS:
                    // g_j = log(P_j / M_j) / 2 is dJS/dP_j (the M terms cancel);
                    // through the softmax: dJS/dx_j = P_j (g_j - sum_k P_k g_k).
                    CHUNKED_SUM(js_p, k, x[i] * (lg(x[i]) - lg(0.5 * (x[i] + y[i]))));
                    CHUNKED_SUM(js_q, k, y[i] * (lg(y[i]) - lg(0.5 * (x[i] + y[i]))));
                    D = 0.5 * (js_p + js_q);
                    if (grads) {
                        // sum_k P_k g_k = js_p / 2 and sum_k Q_k g'_k = js_q / 2
#pragma omp parallel for
                        for (size_t j = 0; j < k; j++) {
                            double m = lg(0.5 * (x[j] + y[j]));
                            gx[j] = x[j] * (0.5 * (lg(x[j]) - m) - 0.5 * js_p);
                            gy[j] = y[j] * (0.5 * (lg(y[j]) - m) - 0.5 * js_q);
                        }
                    }
                    break;
                default:
                    ps_die("unknown regularizer type %d", type);
            }
        }
        total += D;
        if (!grads) continue;
        if (type == REG_L2 || type == REG_MSE) {
#pragma omp parallel for
            for (size_t j = 0; j < k; j++) {
                gx[j] = ca * (x[j] - y[j]);
                gy[j] = -gx[j];
            }
        }
        scatter_add(grads, a[pi], gx, scale);
        scatter_add(grads, b[pi], gy, scale);
    }
    free(x);
    free(y);
    free(gx);
    free(gy);
    return total;
}

// ---------------------------------------------------------------- stats

RegStats reg_apply(const Backend *be, const RegPairs *rp, const void *params, void *grads,
                   float weight) {
    RegStats st;
    memset(&st, 0, sizeof st);
    if (rp->n_pairs == 0) return st;
    double *s = xcalloc((size_t)rp->n * 4 + 1, sizeof(double));
    double sum = 0.0;
    if (!rp->w) {
        sum = be->share_reg(grads, params, rp->a, rp->b, rp->n, rp->type,
                            weight / (float)rp->n_pairs, s);
    } else {  // normalized: one call per slice pair, each with its own constant weight
        for (int i = 0; i < rp->n; i++)
            sum += rp->w[i] * be->share_reg(grads, params, rp->a + i, rp->b + i, 1, rp->type,
                                            (float)(rp->w[i] * weight / rp->n_pairs), s + 4 * i);
    }
    st.R = sum / rp->n_pairs;
    // Combine the targets of each pair, then summarize over pairs.
    double *acc = xcalloc((size_t)rp->n_pairs * 4, sizeof(double));
    for (int i = 0; i < rp->n; i++)
        for (int j = 0; j < 4; j++) acc[4 * rp->pair[i] + j] += s[4 * i + j];
    st.cos_min = st.dist_min = INFINITY;
    st.cos_max = st.dist_max = -INFINITY;
    for (int p = 0; p < rp->n_pairs; p++) {
        double dot = acc[4 * p], aa = acc[4 * p + 1], bb = acc[4 * p + 2], dd = acc[4 * p + 3];
        double cs = aa > 0 && bb > 0 ? dot / sqrt(aa * bb) : 0.0;
        double dist = bb > 0 ? sqrt(dd / bb) : 0.0;
        st.cos_mean += cs / rp->n_pairs;
        st.dist_mean += dist / rp->n_pairs;
        st.cos_min = fmin(st.cos_min, cs);
        st.cos_max = fmax(st.cos_max, cs);
        st.dist_min = fmin(st.dist_min, dist);
        st.dist_max = fmax(st.dist_max, dist);
    }
    free(acc);
    free(s);
    return st;
}
