// share.h: head matching, sharing plans and DirectShare (docs/sharing.md).
//
// Defines the match (cosine similarity of every attention unit of layer l >= 1
// against every unit of layers 0..l-1, as normalized Gram-matrix blocks through
// BLAS), the plan (which units reuse which source's weights: the selection rule,
// its validation, its JSON file and the fingerprint of the weights it was made
// for), and the conversions between a full model and a compact shared one.
//
// A unit is a KV group: its G = nh/nkv query heads plus their K/V head (under
// MHA, G = 1 and a unit is one head). Unit u of layer l has the flat index
// i = l*U + u, U = n_kv_heads. It owns rows u*G*hd..(u+1)*G*hd of Wq, rows
// u*hd..(u+1)*hd of Wk and Wv (HF layout out x in), and the Wo columns that
// match its Wq rows.
#pragma once

#include "backend.h"
#include "params.h"
#include "safetensors.h"

// Match functions (ShareMatchFn, params.h): which slices of a unit make its
// match vector (concatenated, each flattened row-major).
const char *share_match_name(ShareMatchFn fn);
// "qk", "q", "k", "v" or "qkv"; 0, or -1 with ps_err set.
int share_match_parse(const char *s, ShareMatchFn *fn);

// One layer's attention weights (HF layout): wq [nh*hd, C], wk and wv [nkv*hd, C],
// wo [C, nh*hd]. Only those the match function reads need to be set. The match
// runs on these pointers alone, so it needs no full model (e.g. 7B-shaped
// benchmarks).
//
// The cosine match functions and the fingerprint also take a tensor in a
// 16-bit form (e.g. mapped from a bf16 safetensors file, never widened as a
// whole): when part p's float pointer (0 wq, 1 wk, 2 wv, 3 wo) is NULL, raw[p]
// holds it in raw_dtype[p] (ST_BF16 or ST_F16), converted in small chunks.
typedef struct {
    const float *wq, *wk, *wv, *wo;
    const void *raw[4];
    StDtype raw_dtype[4];
} ShareLayerView;

// The views of a full model's flat fp32 buffer, views[n_layers].
void share_layer_views(const ParamTable *t, const float *params, ShareLayerView *views);

// Similarities of every unit against every unit of the earlier layers.
typedef struct {
    int L, U, N;  // layers, units per layer, N = L*U
    float *sim;   // [N, N]: sim[i*N + j] = cos(unit i, unit j) for layer(j) < layer(i), else 0
    int *best;    // [N]: most similar earlier unit of unit i (ties: lowest index); -1 in layer 0
} ShareSim;

// Compute the similarities for cfg's shape from views[L]. Blocks of layer pairs
// (l, l') are cblas_sgemm products of the weights themselves ([U, D] views, no
// copies), one block per task, so memory beyond the weights is O(N^2 + threads
// * U^2). verbose: progress lines on stderr when it takes more than a few seconds.
void share_match(const LlamaConfig *cfg, const ShareLayerView *views, ShareMatchFn fn, int verbose,
                 ShareSim *out);
void share_sim_free(ShareSim *s);
// A zeroed ShareSim for cfg's shape; share_sim_best then sets every unit's
// best match (the most similar unit of an earlier layer, ties: lowest index;
// -1 in layer 0) from sim.
void share_sim_alloc(const LlamaConfig *cfg, ShareSim *s);
void share_sim_best(ShareSim *s);
// CHECK that every layer view of a match that reads all four tensors has them.
void share_views_need_all(const ShareLayerView *views, int n_layers, const char *what);

// SharePlan and ShareEntry: params.h.

// Parameter counts of the full model and of the compact model under a plan.
typedef struct {
    size_t params_before, params_after;  // whole model
    size_t attn_before, attn_after;      // Wq, Wk, Wv, Wo of all layers
} ShareCounts;
ShareCounts share_counts(const SharePlan *p);

// How many units a ratio replaces: floor(ratio * n_units), with ratio * n_units
// first rounded to 1e-9 so that e.g. 0.29 x 100 gives 29, not 28.
int share_count_for_ratio(double ratio, int n_units);

// The selection rule (docs/sharing.md): repeatedly take the pair (target,
// source) of highest similarity among the pairs still allowed, where a target
// is a unit of layer >= 1 that is neither replaced nor a source, and a source
// is an earlier-layer unit that is not replaced; ties go to the lower target,
// then the lower source. So units are ranked by best-match similarity, and a
// unit whose best source was replaced meanwhile competes with its best source
// still available. Stops after k pairs. Fills plan->n and plan->e (sorted by
// target); 0, or -1 with ps_err set when fewer than k pairs can be chosen.
int share_select(const ShareSim *s, int k, SharePlan *plan);

// share_select, and fallback[N] (may be NULL) marks the units whose pair came
// from the fallback: when no free unit of a layer >= 1 is left (all are
// sources), the source whose best still-available source is most similar is
// replaced by it, and the units it served move to their best still-available
// sources. So every k <= N - U (layer 0 is never replaced) is reached.
int share_select_ex(const ShareSim *s, int k, SharePlan *plan, char *fallback);
// Baselines with the same saving. Random: k distinct targets drawn uniformly
// from layers >= 1, each with a uniformly random source among the units of
// earlier layers that are not targets (seeded: the same seed gives the same
// plan). Prune: the k units of layers >= 1 with the lowest energy[N] (ties:
// lower index); each gets its most similar available source, but a pruning
// plan is meant for `share --combine prune`, which removes its targets.
int share_select_random(const ShareSim *s, int k, uint64_t seed, SharePlan *plan);
int share_select_prune(const ShareSim *s, const double *energy, int k, SharePlan *plan);

typedef enum { SELECT_GREEDY = 0, SELECT_RANDOM, SELECT_PRUNE } ShareSelect;
const char *share_select_name(ShareSelect sel);
int share_select_parse(const char *s, ShareSelect *sel);

struct CalibGrams;
// The similarities of fn on a full model: cosine (share_match), circuit
// (align_match_circuit) or calib (calib_match, which needs grams).
// 0, or -1 with ps_err set.
int share_sim_compute(const HostWeights *w, ShareMatchFn fn, const struct CalibGrams *grams,
                      int verbose, ShareSim *s);

typedef struct {
    ShareMatchFn fn;
    double ratio;
    ShareSelect select;
    uint64_t seed;                   // SELECT_RANDOM
    const struct CalibGrams *grams;  // MATCH_CALIB and SELECT_PRUNE need them
    int verbose;
} ShareMakeOpts;
// Match + select for a full model: the whole `postshare match` computation.
// fallback[N] (may be NULL) as in share_select_ex. 0, or -1 with ps_err set (a
// ratio outside [0, 1), a count that cannot be reached, missing Grams).
int share_plan_make_opts(const HostWeights *w, const ShareMakeOpts *o, SharePlan *plan,
                         ShareSim *sim_out, char *fallback);
// The selection part alone, from similarities already computed for a model of
// shape cfg with the given fingerprint (energy[N]: for SELECT_PRUNE).
int share_plan_select(const ShareSim *s, const LlamaConfig *cfg, const char *fingerprint,
                      const ShareMakeOpts *o, const double *energy, SharePlan *plan,
                      char *fallback);
int share_plan_make(const HostWeights *w, ShareMatchFn fn, double ratio, int verbose,
                    SharePlan *plan, ShareSim *sim_out);

// FNV-1a 64 over the fp32 bit patterns (one 32-bit word at a time) of every
// layer's Wq, Wk, Wv and Wo, in layer order, as "fnv1a64:<16 hex digits>".
void share_fingerprint(const ParamTable *t, const float *params, char out[40]);
// The same fingerprint from layer views (float or 16-bit forms of all four
// tensors); release (may be NULL) is called on each tensor's bytes once hashed.
void share_fingerprint_views(const LlamaConfig *cfg, const ShareLayerView *views, char out[40],
                             void (*release)(const void *p, size_t bytes));

// JSON plan file (format in docs/sharing.md). share_plan_write writes
// atomically. share_plan_read parses and checks the plan on its own terms:
// fields and types, heads in range for the plan's own model shape, no unit
// listed twice, no chain or cycle, counts that agree with the entries. Errors
// name the file and the entry. 0, or -1 with ps_err set (p is then empty).
char *share_plan_to_json(const SharePlan *p);
int share_plan_write(const char *path, const SharePlan *p);
int share_plan_read(const char *path, SharePlan *p);
// The same checks on plan JSON text; `what` names its source in messages.
int share_plan_parse(const char *json, const char *what, SharePlan *p);
// Check a plan against a model: the same shape, and (fingerprint != NULL) the
// same attention weights, unless force. `what` names the plan in messages.
// 0, or -1 with ps_err set.
int share_plan_check(const SharePlan *p, const LlamaConfig *cfg, const char *fingerprint, int force,
                     const char *what);
// "L3.H1" (MHA) or "L3.G1" (a KV group under GQA) for unit u of layer l.
const char *share_unit_name(const LlamaConfig *cfg, int layer, int unit, char buf[32]);

// The compact shared model of `full` under a plan already checked against it:
// out gets the compact table (param_table_build_shared, which keeps a copy of
// the plan) and its weights (each owned slice copied once).
void share_compact(const HostWeights *full, const SharePlan *plan, HostWeights *out);
// The ordinary full model a compact one stands for (replaced slices copied from
// their sources).
void share_materialize(const HostWeights *compact, HostWeights *full);

// Elements of one layer's full Wq, Wk, Wv, Wo together: the scratch a compact
// model's forward assembles a layer into.
size_t share_scratch_elems(const LlamaConfig *cfg);
// Assemble layer l of a compact model (table t, flat buffer in be's memory)
// into full-shaped wq [nh*hd, C], wk, wv [nkv*hd, C], wo [C, nh*hd] with
// be->copy2d: owned slices from layer l's tensors, replaced ones from their
// sources' tensors.
void share_assemble_layer(const ParamTable *t, const Backend *be, const void *flat, int l, void *wq,
                          void *wk, void *wv, void *wo);
