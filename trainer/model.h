// model.h: the LLaMA model: parameters, gradients and activations in backend
// memory, and the forward/backward pass written once against the op table.
#pragma once

#include "backend.h"
#include "params.h"

// Saved activations of the forward pass, one slab per layer (sized for the
// largest B x T the model was set up for). Compute-type backend buffers unless
// marked f32.
typedef struct {
    int B, T;              // capacity
    void *x;               // [L+1][BT,C] residual stream: x[l] enters layer l, x[L] leaves the last
    void *x_mid;           // [L][BT,C]   residual after attention
    void *ln1, *ln2;       // [L][BT,C]   RMSNorm outputs
    float *rstd1, *rstd2;  // [L][BT] f32
    void *qkv;             // [L][BT,qd+2kvd]  q | k | v per row (one GEMM; q, k after RoPE)
    void *att;             // [L][attn_state_bytes] backend-defined attention state
    void *ao;              // [L][BT,qd]  attention output before Wo (qd = nh*hd, kvd = nkv*hd)
    void *gu;              // [L][BT,2F]  gate | up per row (one GEMM)
    void *h;               // [L][BT,F]   SwiGLU: h = silu(gate) * up
    void *lnf;             // [BT,C]
    float *rstdf;          // [BT] f32
    void *logits;          // [BT,V] (dlogits after the backward's first op)
    float *losses;         // [BT] f32
    int *tokens, *targets;  // [BT] int32
    // backward scratch (reused across layers)
    void *dres;        // [BT,C] gradient of the residual stream
    void *dln;         // [BT,C]
    void *dqkv, *dao;  // like qkv, ao (one layer)
    void *dgu, *dh;    // [BT,2F], [BT,F]
} Activations;

typedef struct {
    const Backend *be;
    ParamTable t;  // layout of params and grads (and of master/m/v in the optimizer)
    LlamaConfig cfg;
    void *params;     // [t.total] compute type
    float *grads;     // [t.total] fp32, accumulated by backward (NULL when t.shared)
    size_t n_alloc;   // elements params and grads hold: t.total, or more after model_pad
    void *wscratch;   // compact shared models: one layer's full Wq|Wk|Wv|Wo, assembled per layer
    float *inv_freq;  // backend memory, fp32 [hd/2]: RoPE frequencies (rope_inv_freq)
    Activations a;
    size_t attn_state_per_layer;  // bytes
    // last forward
    int B, T;
    int recompute;     // 1: activations of one layer only; the backward recomputes each layer
    int forward_only;  // 1: no grads, no backward buffers, one layer of activations
    // KV cache for generation (model_cache_start): [L][B,cap,nkv*hd] keys (after
    // RoPE) and values; kv_len positions filled; kv_active during model_forward_next
    void *kv_k, *kv_v;
    int kv_B, kv_cap, kv_len, kv_active;
    int fused_loss;     // 1: it ran be->classifier_fwd (targets given), so no logits are stored
    int head_done;      // 1: it was model_forward_grad: the classifier's gradients are written
    float head_scale;   // ... with this loss scale
    int n_valid;        // number of targets that count toward the loss
    int *host_targets;  // [B*T] copy of the last targets
    // Data parallelism: model_backward calls grad_ready(ctx, lo, hi) as soon as
    // the gradients of elements [lo, hi) are final (the LM head and final norm,
    // then each layer from the last, then the embedding: every element once),
    // so their reduction can start while the backward goes on (zero.h). NULL:
    // no calls.
    void (*grad_ready)(void *ctx, size_t lo, size_t hi);
    void *grad_ready_ctx;
} Model;

// Create a model on backend be with the given config; params are zero.
void model_init(Model *M, const Backend *be, const LlamaConfig *cfg);
// Create a model with the layout of table t (copied). A compact shared table
// (t->shared, see share.h) gives an inference-only model: no gradients, and the
// forward assembles each layer that has replaced units into one layer-sized
// scratch (be->copy2d); model_backward refuses it.
void model_init_table(Model *M, const Backend *be, const ParamTable *t);
// Bytes of backend memory a model of table t holds as weights (act_bytes per
// element): its params, plus a compact shared model's one-layer scratch.
size_t model_weight_bytes(const ParamTable *t, size_t act_bytes);
// Grow params and grads to n elements (n >= t.total; the extra ones stay 0), so
// that data-parallel collectives can split them into equal shards (zero.h).
void model_pad(Model *M, size_t n);
void model_free(Model *M);
// Upload / download the flat fp32 parameter buffer (t.total floats).
void model_set_params(Model *M, const float *host);
// Set the params from a malloc'd host fp32 buffer of t.total floats and free it
// (*host becomes NULL). On the CPU backend the buffer itself becomes the
// parameters, so the weights are never in memory twice.
void model_take_params(Model *M, float **host);
void model_get_params(const Model *M, float *host);
void model_get_grads(const Model *M, float *host);
void model_zero_grads(Model *M);
// Activation recomputation (off by default): keep only each layer's input
// x[l] and recompute the layer's other activations in the backward (one more
// layer forward, bitwise the same values), so activation memory holds one
// layer instead of L. Frees the activations; the next forward re-reserves.
void model_set_recompute(Model *M, int on);
// Forward-only mode (on: eval, scoring, generation): frees the gradients and the
// activations; the forwards then keep two residual slabs and one layer's
// activations and allocate no backward buffers; model_backward refuses. Off
// gives back zeroed gradients. Compact shared models start in it.
void model_set_forward_only(Model *M, int on);
// Allocate activations for up to B x T (no-op if already large enough).
void model_reserve(Model *M, int B, int T);

// Forward on tokens[B,T]. With targets (ignore index: any negative value), returns
// the mean cross-entropy over counted targets (0 when none count); without
// targets returns 0 and only the logits are computed.
float model_forward(Model *M, const int *tokens, const int *targets, int B, int T);
// Per-token log-likelihoods: logprobs[i] (host, B*T floats) = log p(targets[i] |
// tokens of row b up to t) for i = b*T + t, 0 where targets[i] < 0. Returns the
// number of counted targets. The same values as model_forward's per-row losses
// (negated); with a fused classifier the [BT,V] logits are never stored.
int model_forward_logprobs(Model *M, const int *tokens, const int *targets, int B, int T,
                           float *logprobs);
// The number of targets that count (>= 0) among n: the forward's M->n_valid.
int model_count_targets(const int *targets, int n);
// Training forward: model_forward with targets, plus the classifier's part of
// model_backward(M, loss_scale) (the LM head's gradient and the gradient that
// enters the final norm) while the logits are at hand, so that a training step
// computes them once. The next model_backward must get the same loss_scale.
// With no counted target it writes no gradient (like model_forward).
float model_forward_grad(Model *M, const int *tokens, const int *targets, int B, int T,
                         float loss_scale);
// Backward of the last forward (which must have had targets): grads +=
// d(loss_scale * sum of per-token losses)/dparams. For a mean over one
// micro-batch, loss_scale = 1 / n_valid; with accumulation divide by the steps too.
// After model_forward (not _grad) it computes the classifier's gradients first
// (the logits again, on a backend with a fused classifier).
void model_backward(Model *M, float loss_scale);
// Make the grad_ready calls of a backward, in its order, without one (a rank
// whose micro-batch had no target to learn from still takes part in the
// reductions the others start).
void model_grads_ready_all(const Model *M);
// KV cache (generation): whether the backend has the ops for it; allocate one
// for B rows of up to cap positions (empty); free it (model_free does too).
int model_has_cache_ops(const Model *M);
void model_cache_start(Model *M, int B, int cap);
void model_cache_free(Model *M);
// Forward of T new tokens per row (tokens[B,T]) at positions kv_len..kv_len+T-1,
// attending to the cached positions; appends their keys and values and advances
// kv_len. model_get_logits then gives the new positions' logits [B,T,V]. Best in
// forward-only mode (no backward buffers).
void model_forward_next(Model *M, const int *tokens, int B, int T);
// Copy the last forward's logits [B,T,V] to host memory (fp32).
void model_get_logits(const Model *M, float *host);
