// backend.h: the op table ("one model, two op sets").
//
// The forward/backward sequence in model.c is written once against this table
// of function pointers. The CPU backend (cpu_ops.c) is the fp32 reference; the
// CUDA backend implements the same table with bf16 activations. Buffers passed
// to ops are backend memory ("device pointers"): the model never dereferences
// them. Activation and parameter buffers hold elements of the backend's compute
// type (act_bytes each: 4 on the CPU, 2 for bf16). Parameter gradients (dW, dw,
// dwte, dWh, grads, grad) and buffers named *_f32 are always fp32 (gradients,
// master weights, optimizer state, RMSNorm rstd, losses), so that gradients
// accumulate (over the rows of a batch, the terms of a backward and the
// micro-batches of a step) in fp32 on every backend.
//
// Shapes use: B batch, T time, BT = B*T rows, C model width, nh query heads,
// nkv key/value heads, hd head dim, F ffn width, V vocab. Matrices are
// row-major; weights are HF-shaped (out x in).
#pragma once

#include <stddef.h>
#include <stdint.h>

// A rows x cols block of the flat parameter buffer: element (r, c) sits at
// off + r*ld + c (elements). Used to name one head's slice of Wq/Wk/Wv (rows)
// or Wo (columns).
typedef struct {
    size_t off;
    int rows, cols, ld;
} ParamSlice;

typedef struct Backend {
    const char *name;
    size_t act_bytes;  // bytes per element of activations, params and grads

    // ---- memory ----
    void *(*alloc)(size_t bytes);  // zero-initialized
    void (*free)(void *p);
    void (*zero)(void *p, size_t bytes);
    void (*upload)(void *dst, const void *src, size_t bytes);    // host -> backend, raw bytes
    void (*download)(void *dst, const void *src, size_t bytes);  // backend -> host, raw bytes
    // Convert between host fp32 and backend compute-type buffers (n elements).
    void (*upload_f32)(void *dst, const float *src, size_t n);
    void (*download_f32)(float *dst, const void *src, size_t n);
    void (*synchronize)(void);
    // dst[r*dst_ld + c] = src[r*src_ld + c] for r < rows, c < cols (elements; no overlap).
    void (*copy2d)(void *dst, size_t dst_ld, const void *src, size_t src_ld, size_t rows,
                   size_t cols);

    // ---- forward ops ----
    // out[BT,C] = wte[tokens[i], :]
    void (*embedding_fwd)(void *out, const int *tokens, const void *wte, int BT, int C);
    // out[BT,C] = inp * rstd * w; rstd[BT] (fp32) saved for backward.
    void (*rmsnorm_fwd)(void *out, float *rstd, const void *inp, const void *w, int BT, int C,
                        float eps);
    // out[N,OC] = inp[N,IC] @ W[OC,IC]^T, + res[N,OC] when res != NULL (res may
    // be out itself: out +=). The residual goes into the GEMM's accumulator
    // (beta 1), so no separate zeroing or add pass runs over out.
    void (*matmul_fwd)(void *out, const void *inp, const void *W, int N, int IC, int OC,
                       const void *res);
    // RoPE (HF rotate_half convention) in place on the first nheads heads of
    // each row of x: row (b, t) starts at x + (b*T + t)*ld (elements; ld >=
    // nheads*hd), head h at + h*hd. Positions 0..T-1: pair (i, i + hd/2) at
    // position t turns by t * inv_freq[i]. inv_freq: backend memory, fp32 [hd/2]
    // (rope_inv_freq, params.h: the config's scaling is in it). The model turns
    // q and k (adjacent in each row of its fused [BT, qd + 2 kvd] buffer) in one call.
    void (*rope_fwd)(void *x, const float *inv_freq, int B, int T, int nheads, int hd, int ld);
    // Causal GQA attention: q [B,T,nh,hd] with rows ldq elements apart, k, v
    // [B,T,nkv,hd] with rows ldkv apart (dense: ldq = nh*hd, ldkv = nkv*hd; the
    // model's q, k, v are views of one [BT, qd + 2 kvd] buffer: ldq = ldkv =
    // qd + 2 kvd) -> out [B,T,nh,hd] (dense). state: backend-defined saved data
    // (attn_state_bytes) for the backward.
    void (*attention_fwd)(void *out, void *state, const void *q, const void *k, const void *v,
                          int ldq, int ldkv, int B, int T, int nh, int nkv, int hd);
    size_t (*attn_state_bytes)(int B, int T, int nh);
    // SwiGLU on the fused gate|up projection: gu [N, 2F] holds gate in columns
    // 0..F-1 and up in F..2F-1; out [N, F] = silu(gate) * up.
    void (*swiglu_fwd)(void *out, const void *gu, int N, int F);
    // Cross-entropy per row of logits[BT,V] against targets[BT] (target < 0 is
    // ignored: loss 0) into losses[BT] (fp32 backend buffer). tokens and
    // targets are int32 backend buffers.
    void (*crossentropy_fwd)(float *losses, const void *logits, const int *targets, int BT, int V);

    // ---- backward ops (parameter gradients are fp32 and accumulate: +=) ----
    // In place: logits[BT,V] becomes dlogits = scale * (softmax - onehot(target)), 0 on ignored
    // rows.
    void (*crossentropy_bwd)(void *logits, const int *targets, int BT, int V, float scale);
    // dinp[N,IC] (= or += when accumulate) dout @ W;  dW[OC,IC] (fp32) += dout^T @ inp.
    // Either output may be NULL to skip it.
    void (*matmul_bwd)(void *dinp, void *dW, const void *dout, const void *inp, const void *W,
                       int N, int IC, int OC, int accumulate);
    // dinp[BT,C] += d/dinp, dw[C] (fp32) += d/dw, given dout, inp, w and saved rstd.
    void (*rmsnorm_bwd)(void *dinp, void *dw, const void *dout, const void *inp, const void *w,
                        const float *rstd, int BT, int C);
    // Inverse rotation in place, on the same strided layout as rope_fwd.
    void (*rope_bwd)(void *dx, const float *inv_freq, int B, int T, int nheads, int hd, int ld);
    // dq (=) laid out like q (rows ldq apart), dk, dv (=) like k, v (rows ldkv
    // apart), from dout [B,T,nh,hd] (dense) and the saved state. Only the heads'
    // elements of each row are written.
    void (*attention_bwd)(void *dq, void *dk, void *dv, const void *dout, const void *state,
                          const void *q, const void *k, const void *v, int ldq, int ldkv, int B,
                          int T, int nh, int nkv, int hd);
    // dgu [N, 2F] (=: dgate in columns 0..F-1, dup in F..2F-1) from dout [N, F]
    // and the forward's gu.
    void (*swiglu_bwd)(void *dgu, const void *dout, const void *gu, int N, int F);
    // dwte[V,C] (fp32) += scatter of dout[BT,C] by tokens (deterministic order).
    void (*embedding_bwd)(void *dwte, const void *dout, const int *tokens, int BT, int C);

    // ---- optimizer ops ----
    // Sum of squares of n elements of an fp32 buffer (the gradients), in fp64 accumulation.
    double (*sumsq)(const void *x, size_t n);
    // AdamW on n elements: master_f32, m_f32, v_f32 updated from grad (fp32) * grad_scale;
    // params (compute type) receives the new master value. params may alias
    // master on backends whose compute type is fp32. lr_scale (device, [n], or
    // NULL for all 1): element i steps with lr * lr_scale[i] (its weight decay
    // too, as AdamW's is lr * weight_decay); 0 freezes the element (m, v still
    // move). Scale 1 gives the same bits as NULL.
    void (*adamw)(float *master, void *params, const void *grad, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  float grad_scale, int t, const float *lr_scale);

    // ---- PostShare regularizer (sharereg.h) ----
    // For each of n slice pairs (a[i] of the replaced unit, b[i] of its source,
    // both in the flat params buffer), the divergence D_type(a, b) (RegType);
    // returns sum_i D_i. With grads != NULL, adds scale * dD_i/d(params) into
    // grads for both slices. stats (host, [n][4] or NULL) receives per pair
    // <a,b>, |a|^2, |b|^2, |a-b|^2. grads is fp32; params the compute type.
    double (*share_reg)(void *grads, const void *params, const ParamSlice *a, const ParamSlice *b,
                        int n, int type, float scale, double *stats);

    // ---- optional ops (NULL where a backend lacks them; model.c then uses the ops above) ----
    // Fused LM head + cross-entropy, so that the [BT,V] logits and probabilities are
    // never stored (both backends compute them a chunk of rows at a time):
    // losses[BT] (fp32) of logits = lnf[BT,C] @ Wh[V,C]^T against targets[BT]
    // (int32; target < 0: loss 0), like matmul_fwd + crossentropy_fwd. With dlnf
    // != NULL, also the gradients of scale * sum(losses) while the logits are at
    // hand, like crossentropy_bwd + matmul_bwd (accumulate 0): dlnf[BT,C] (=) and
    // dWh[V,C] (fp32, +=). Training knows the loss scale before the forward
    // (model_forward_grad), so the logits are computed once per step (as llm.c does).
    void (*classifier_fwd)(float *losses, void *dlnf, void *dWh, const void *lnf, const void *Wh,
                           const int *targets, int BT, int C, int V, float scale);
    // Generation with a KV cache (model_forward_next): RoPE at positions
    // pos0..pos0+T-1 (rope_fwd is pos0 = 0; same strided layout), and causal
    // attention of Tq new queries q[B,Tq,nh,hd] (rows ldq apart) at positions
    // pos0..pos0+Tq-1 against the cache kc, vc [B,cap,nkv,hd] (dense), whose
    // rows 0..pos0+Tq-1 already hold their keys and values, into
    // out[B,Tq,nh,hd] (dense). Without them generation recomputes the prefix.
    void (*rope_fwd_at)(void *x, const float *inv_freq, int B, int T, int nheads, int hd, int ld,
                        int pos0);
    void (*attention_cached)(void *out, const void *q, int ldq, const void *kc, const void *vc,
                             int B, int Tq, int pos0, int cap, int nh, int nkv, int hd);
} Backend;

// The CPU reference backend (fp32, BLAS, OpenMP).
const Backend *backend_cpu(void);
// Pick a backend by name: "cpu", "cuda" or "auto" (CUDA when built and a GPU is
// present, else CPU). Dies with a clear message if "cuda" is asked and absent.
// "auto" loads the CUDA module only where ps_nvidia_driver_present().
const Backend *backend_get(const char *name);
// The CUDA backend when this build has one and a usable GPU (compute capability
// 8.0+) is present; else NULL, with the reason in *why (when why is not NULL).
// The first call loads the CUDA module and initializes the GPU; only a GPU that
// fails while being set up makes it die.
const Backend *backend_cuda_probe(const char **why);
// The CUDA backend (cuda/*.cu) is a shared module, libpostshare_cuda.so, built
// beside the programs and loaded only when a program first asks for CUDA, so
// that CPU runs never map the CUDA libraries (about 200 MB of RSS). Returns
// the module's symbol `name`, loading the module first; NULL with the reason in
// *why when the build has no CUDA backend or the module cannot be loaded
// (PS_CUDA_MODULE=/path/to/libpostshare_cuda.so overrides where it is looked for).
void *ps_cuda_module_sym(const char *name, const char **why);
// Whether this machine shows an NVIDIA driver: /dev/nvidiactl (also inside GPU
// containers), /proc/driver/nvidia/version or WSL2's /dev/dxg. Where none exists
// "auto" (backend, communicator) does not load the CUDA module at all; an
// explicit "cuda" or "nccl" still does, and reports what it finds.
int ps_nvidia_driver_present(void);
