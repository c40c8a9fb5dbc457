// align.h: the symmetries of an attention unit (docs/sharing.md, "Symmetries"):
// function-preserving transforms, the symmetry-aware circuit similarity
// (`match: circuit`) and the alignment of a plan's targets to their sources.
//
// A unit's function is unchanged by
//   - a rotation in each RoPE frequency plane (rows f and f + hd/2 of a head,
//     HF rotate_half order), the same one applied to Wq of every query head of
//     the unit and to Wk (it commutes with RoPE);
//   - an invertible map M of its value space: Wv -> M Wv and, for every query
//     head g of the unit, its Wo columns Wo_g -> Wo_g M^-1;
//   - a permutation of its query heads (Wq row blocks and Wo column blocks).
#pragma once

#include "hf_io.h"
#include "share.h"

typedef struct {
    const int *perm;      // [G]: new query head g is old query head perm[g]; NULL: identity
    const double *theta;  // [hd/2]: rotation angle of each RoPE plane; NULL: none
    const double *M;      // [hd*hd] value map (row-major); NULL: identity
    const double *Minv;   // [hd*hd] its inverse (required with M)
} UnitTransform;

// Apply x to unit `unit` of layer `layer` of the full model w, in place:
// permutation first, then the rotations and the value map.
void align_apply(HostWeights *w, int layer, int unit, const UnitTransform *x);

// Circuit similarity of every unit against the units of earlier layers:
// per query head, the QK circuit (for each RoPE plane f the pair of C x C
// bilinear forms Q_f^T K_f and Q_f^T J K_f, J the 90-degree rotation, which
// RoPE at any offset combines) and the OV circuit Wo_g Wv; the similarity of
// two units is the mean of the QK and OV cosine similarities of these
// circuits, under the best pairing of their query heads (all G! when G <= 5,
// else greedy). Computed from 2 x 2 (QK) and hd x hd (OV) Gram blocks, never
// forming a C x C matrix. Invariant to every transform above.
void align_match_circuit(const LlamaConfig *cfg, const ShareLayerView *views, ShareSim *out);

// Move every target of the plan to the function-preserving transform of itself
// closest to its source: the query-head permutation and per-plane rotations
// that maximize the summed Wq, Wk inner products (closed form per plane), then
// the invertible value map M of least |M V_t - V_s|^2 + sum_g |Wo_tg M^-1 - Wo_sg|^2
// (least squares: the best of the orthogonal Procrustes solution and the two
// one-sided closed forms, refined by gradient descent). Changes no output of w.
// g (may be NULL): calibration Grams of w, whose targets' output Grams are
// transformed with them (H -> T H T^T, T the permutation and value map), so that
// they stay the Grams of the aligned model. before/after (may be NULL): mean over
// the plan's pairs of |target - source| / |source| over the unit's Wq, Wk, Wv rows
// and Wo columns.
struct CalibGrams;
void align_plan(HostWeights *w, const SharePlan *plan, struct CalibGrams *g, double *before,
                double *after);

// |target - source| / |source| of one pair of units (all four slices).
double align_pair_distance(const HostWeights *w, int tl, int tu, int sl, int su);
