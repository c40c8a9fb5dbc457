// calib.h: calibration statistics and what uses them (docs/sharing.md,
// "Calibration"): one forward pass over a few thousand tokens collects each
// layer's attention-input Gram and each unit's attention-output Gram; from them
// the calibration-aware pair score (the output error sharing would cause), the
// units' output energy (which units pruning removes), and the
// activation-aware merge of a plan's slices.
//
// Units, slices and flat indices are those of share.h: unit u of layer l owns
// Wq rows u*G*hd.., Wk and Wv rows u*hd.., and the Wo columns of its Wq rows;
// W = G*hd is a unit's width.
#pragma once

#include "hf_io.h"
#include "loader.h"
#include "share.h"

typedef struct CalibGrams {
    int L, U, C, W;   // layers, units per layer, model dim, unit width G*hd
    double *gin;      // [L][C*C]: sum over tokens of x x^T, x = the attention input
                      // (after the layer's RMSNorm): the input Gram of Wq, Wk, Wv
    double *gout;     // [L*U][W*W]: sum over tokens of a a^T, a = the unit's attention
                      // output (the input of its Wo columns)
    long tokens;      // tokens seen
    double *imp;      // [L*U] or NULL: head importance (calib_importance), 0 for layer 0
    double imp_base;  // the intact model's mean loss on the importance tokens
    long imp_tokens;  // tokens the importance was measured on
    double *dmg;      // [L*U] or NULL: measured sharing damage (calib_damage), 0 for layer 0
    int *dmg_src;     // [L*U]: the source each unit was measured with (-1 in layer 0)
    double dmg_base;  // the intact model's mean loss on the damage tokens
    long dmg_tokens;  // tokens the damage was measured on
} CalibGrams;

// Run the full model w (on the CPU backend) over the loader's first windows
// (seq_len T = loader_seq_len) until max_tokens tokens are seen (or the data
// ends), summing the Grams in fp64. 0, or -1 with ps_err set (no window).
int calib_collect(const HostWeights *w, Loader *ld, long max_tokens, CalibGrams *g);
void calib_free(CalibGrams *g);

// Head importance: for every unit of layers >= 1, the increase of the mean loss on
// the loader's first windows (max_tokens tokens, at least one window) when the unit
// is removed (its Wo columns zeroed: it adds nothing to the residual), one forward
// per unit (CPU backend), all on the same tokens. Fills g->imp (allocated),
// g->imp_base, g->imp_tokens. verbose: one line per unit on stderr.
// 0, or -1 with ps_err set (no window).
int calib_importance(const HostWeights *w, Loader *ld, long max_tokens, int verbose, CalibGrams *g);

// Measured sharing damage (needs g's Grams): for every unit t of layers >= 1, its
// calibration-best source s* (calib_match's best), and the increase of the mean
// loss on the loader's first windows when t's four slices are replaced by s*'s
// (a copy share of that one pair), one forward per unit as for the importance.
// Fills g->dmg, g->dmg_src, g->dmg_base, g->dmg_tokens. 0, or -1 with ps_err set.
int calib_damage(const HostWeights *w, Loader *ld, long max_tokens, int verbose, CalibGrams *g);

// Calibration-aware similarities: for a target unit t (layer >= 1) and a unit s
// of an earlier layer, the output error of t's slices if they were s's,
//   e_k(t, s) = tr((A_s - A_t) G (A_s - A_t)^T)
// per slice k (Wq, Wk, Wv with t's layer input Gram; Wo with t's output Gram,
// A^T in place of A), each relative to the mean e_k(t, 0) = tr(A_t G A_t^T) of
// t's layer, d = mean over the 4 slices, and sim = 1 / (1 + d): 1 for
// identical slices, about 1/3 for unrelated ones of equal size. All pairs from
// Gram blocks (cblas_sgemm) and per-unit products; views need wq, wk, wv, wo.
// importance (needs g->imp): the predicted loss increase of replacing t by s,
//   D(t, s) = imp+(t) * d(t, s) / d(t, 0),   imp+ = max(imp, 1e-3 * mean |imp|),
// the target's measured loss increase when removed times the part of its removal
// error that s leaves (d(t, 0): t's own slice energies relative to its layer's
// mean, i.e. the error if s were all zeros); sim = 1 / (1 + D / mean imp+).
// measured (needs g->dmg): the same with the loss increase measured for the pair
// (t, s*) itself, extrapolated to other sources by their errors,
//   D(t, s) = dmg+(t) * d(t, s) / d(t, s*),  dmg+ = max(dmg - min(0, min dmg), 1e-3 * mean |dmg|),
// so the selection replaces first the units whose measured sharing costs least
// (or helps most: the shift keeps the order of negative damages).
typedef enum { CALIB_SCORE_ERROR, CALIB_SCORE_IMPORTANCE, CALIB_SCORE_MEASURED } CalibScore;
void calib_match(const LlamaConfig *cfg, const ShareLayerView *views, const CalibGrams *g,
                 CalibScore score, ShareSim *out);

// Output energy of every unit per calibration token, energy[L*U]:
// tr(Wo_u H_u Wo_u^T) / tokens, the mean squared norm it adds to the residual.
void calib_output_energy(const LlamaConfig *cfg, const ShareLayerView *views, const CalibGrams *g,
                         double *energy);

// Activation-aware merge, in place on a full model: for each source s of the
// plan and the units that take its weights, every slice becomes the one that
// serves them all best on the calibration data,
//   W = (sum_i A_i G_i) (sum_i G_i)^-1   (A_i a unit's slice, out x in)
// with G_i the input Gram of unit i's layer (Wq, Wk, Wv) or unit i's output
// Gram (Wo), plus a 1e-6 relative ridge; the source and its targets all get W.
// Applying the plan afterwards (share_compact) then stores W once.
void calib_merge(HostWeights *w, const SharePlan *plan, const CalibGrams *g);

// Solve A X = B for symmetric positive definite A [n, n] and B [n, m]
// (row-major, fp64; X overwrites B) by Cholesky; A is overwritten. 0, or -1
// when A is not positive definite.
int calib_spd_solve(double *A, int n, double *B, int m);

// Calibration file (postshare calibrate): the 8 bytes "PSCALIB1", then int64
// L, U, C, W, tokens (little-endian), then gin and gout as float64; with head
// importance, then the 8 bytes "PSIMP001", int64 imp_tokens, float64 imp_base
// and imp[L*U] as float64; with measured damage, then the 8 bytes "PSDMG001",
// int64 dmg_tokens, float64 dmg_base, dmg[L*U] as float64 and dmg_src[L*U] as
// int32 (each in [0, l*U) for a unit of layer l >= 1, -1 in layer 0). Written atomically.
// calib_read checks the header, the size and (cfg != NULL) the model shape. 0, or -1 with ps_err
// naming the file.
int calib_write(const char *path, const CalibGrams *g);
int calib_read(const char *path, const LlamaConfig *cfg, CalibGrams *g);
