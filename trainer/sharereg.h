// sharereg.h: the PostShare regularizer R over a sharing plan's pairs.
//
//   R = (1/#pairs) * sum over pairs (target unit t, source unit s)
//                    sum over m in targets (a subset of q, k, v, o)
//                    D(W_m[t], W_m[s])
// where W_m[u] is unit u's slice (Wq/Wk/Wv rows, Wo columns; a unit is a KV
// group, see share.h) and D is one of (x = target slice, y = source slice,
// both flattened, n elements):
//   l2   ||x - y||_2 (Frobenius norm, not squared; the reference's choice).
//        Its gradient (x - y)/||x - y|| is undefined where x == y: there the
//        gradient is taken as 0 (the subgradient torch.norm also returns), so
//        no NaN or inf can appear.
//   mse  mean((x - y)^2) = ||x - y||^2 / n
//   kl   KL(P || Q) = sum_j P_j log(P_j / Q_j), P = softmax(x - min x), Q =
//        softmax(y - min y). Following the reference each slice is first
//        shifted to be non-negative; softmax is shift-invariant, so this equals
//        softmax(x). The sum is the true KL (no averaging over elements).
//   kl2  KL(P || Q) + KL(Q || P) (symmetric KL)
//   js   (KL(P || M) + KL(Q || M)) / 2 with M = (P + Q) / 2 (Jensen-Shannon)
// Both slices of a pair receive gradient. The op itself (Backend.share_reg)
// runs on the backend; this module turns a plan into slice descriptors and
// reports per-pair convergence statistics.
#pragma once

#include "backend.h"
#include "params.h"

typedef enum { REG_L2 = 0, REG_MSE, REG_KL, REG_JS, REG_KL2 } RegType;
enum { REG_Q = 1, REG_K = 2, REG_V = 4, REG_O = 8 };  // target bits

// "l2" | "mse" | "kl" | "js" | "kl2" -> type; 0, or -1 with ps_err set.
int reg_type_parse(const char *s, RegType *out);
const char *reg_type_name(RegType t);
// A list of targets like "q,k,v" or "[q, k, v, o]" -> bit mask; 0 or -1.
int reg_targets_parse(const char *s, unsigned *mask);

typedef struct {
    int n_pairs;        // plan entries
    int n;              // slices = n_pairs * popcount(targets)
    ParamSlice *a, *b;  // [n]: target-unit slice, source-unit slice
    int *pair;          // [n]: which plan entry slice i belongs to
    RegType type;
    double *w;  // [n] weight of slice pair i in R (reg_pairs_normalize), or NULL: all 1
} RegPairs;

// Slice descriptors of every (plan entry, target) in the full model table t.
void reg_pairs_build(RegPairs *rp, const ParamTable *t, const SharePlan *plan, unsigned targets,
                     RegType type);
void reg_pairs_free(RegPairs *rp);

// share.reg.normalize: weight each slice pair i by a constant taken from the
// starting weights params0 (host fp32, full layout), so that R is scale-free
// and reg.weight means the same on any model. With m_i = (|a_i|^2 + |b_i|^2)/2
// at the start: l2 divides ||a - b|| by sqrt(m_i) (a relative distance), mse
// divides ||a - b||^2 / n by m_i / n (a relative squared distance). A slice
// pair that starts at zero keeps weight 1. kl, js, kl2 (already scale-free)
// are refused: -1 with ps_err set.
int reg_pairs_normalize(RegPairs *rp, const float *params0);

// Per-parameter learning-rate multipliers for [lo, hi) of the full layout into
// out[hi - lo]: `paired` on every element of a target-unit slice, `source` on
// every element of a source-unit slice that is no target slice (in a plan from
// share_plan_make a replaced unit is never a source), `rest` elsewhere.
void reg_pairs_lr_scale(const RegPairs *rp, size_t lo, size_t hi, float paired, float source,
                        float rest, float *out);

// Convergence of the planned pairs (over the chosen targets together).
typedef struct {
    double R;                              // the regularizer value (1/#pairs) sum D
    double cos_mean, cos_min, cos_max;     // cosine similarity of each pair
    double dist_mean, dist_min, dist_max;  // relative distance |a - b| / |b|
} RegStats;

// R (and its stats) of the params; with grads != NULL also adds
// weight * dR/dparams into grads. R = (1/#pairs) sum_i w_i D_i (w_i = 1 unless
// normalized); the stats are of the raw slices either way.
RegStats reg_apply(const Backend *be, const RegPairs *rp, const void *params, void *grads,
                   float weight);
// The CPU implementation of Backend.share_reg (also the reference for others).
double cpu_share_reg(void *grads, const void *params, const ParamSlice *a, const ParamSlice *b,
                     int n, int type, float scale, double *stats);
