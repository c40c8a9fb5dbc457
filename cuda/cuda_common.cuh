// cuda_common.cuh: what the CUDA backend's .cu files share: the checking macros
// that every CUDA / cuBLAS call and kernel launch goes through, bf16 helpers,
// deterministic warp and block reductions, the backend's scratch buffers, and
// the declarations of the ops that cuda_backend.cu puts into the op table.
//
// Conventions: all work runs in order on the legacy default stream (stream 0),
// so an op's outputs are ready for the next op without extra synchronization,
// and host copies (cudaMemcpy) wait for the work before them. No kernel uses
// atomics: every reduction has a fixed order, so the same inputs give bitwise
// the same outputs (determinism).
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>

extern "C" {
#include "backend.h"
#include "common.h"
#include "cuda_backend.h"
}

typedef __nv_bfloat16 bf16;

// ---------------------------------------------------------------- checking

// A hint for the most common CUDA errors, printed with the error.
const char *cuda_hint(cudaError_t err);
// 1 when PS_CUDA_SYNC=1: every launch is followed by a device synchronize, so
// an asynchronous kernel fault is reported at the launch that caused it.
extern int cuda_sync_each_launch;

// CUDA_CHECK(call): die with file:line, the call, the CUDA error and a hint.
#define CUDA_CHECK(call)                                                                    \
    do {                                                                                    \
        cudaError_t err_ = (call);                                                          \
        if (err_ != cudaSuccess)                                                            \
            ps_die_at(__FILE__, __LINE__, "CUDA call failed: %s: %s (%s); hint: %s", #call, \
                      cudaGetErrorString(err_), cudaGetErrorName(err_), cuda_hint(err_));   \
    } while (0)

// CUBLAS_CHECK(call): the same for cuBLAS / cuBLASLt status codes.
#define CUBLAS_CHECK(call)                                                                 \
    do {                                                                                   \
        cublasStatus_t st_ = (call);                                                       \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                  \
            ps_die_at(__FILE__, __LINE__,                                                  \
                      "cuBLAS call failed: %s: %s; hint: shapes or alignment the library " \
                      "rejects, or an earlier kernel fault (rerun with PS_CUDA_SYNC=1)",   \
                      #call, cublasGetStatusString(st_));                                  \
    } while (0)

// KERNEL_CHECK("name"): after every launch: launch errors (bad configuration,
// too much shared memory) now, and with PS_CUDA_SYNC=1 also faults inside it.
#define KERNEL_CHECK(name) cuda_check_launch(__FILE__, __LINE__, (name))
void cuda_check_launch(const char *file, int line, const char *name);

// ---------------------------------------------------------------- helpers

static inline unsigned cdiv(size_t a, size_t b) {
    return (unsigned)((a + b - 1) / b);
}

__device__ __forceinline__ float b2f(bf16 x) {
    return __bfloat162float(x);
}
__device__ __forceinline__ bf16 f2b(float x) {
    return __float2bfloat16_rn(x);
}

// Warp reductions over all 32 lanes (xor butterfly: every lane gets the result,
// and the order of additions is fixed).
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename T>
__device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) {
        T w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

// Block reduction (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result. Each warp reduces, then every warp reduces the per-warp values in
// the same order, so all threads hold the same bits. IS_MAX selects max vs sum.
template <typename T, int IS_MAX>
__device__ __forceinline__ T block_reduce(T v) {
    __shared__ T part[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = IS_MAX ? warp_max(v) : warp_sum(v);
    __syncthreads();  // an earlier call's readers of part[] are done
    if (lane == 0) part[w] = v;
    __syncthreads();
    T init = IS_MAX ? (T)-INFINITY : (T)0;
    v = lane < nw ? part[lane] : init;
    return IS_MAX ? warp_max(v) : warp_sum(v);
}
__device__ __forceinline__ float block_sum(float v) {
    return block_reduce<float, 0>(v);
}
__device__ __forceinline__ float block_max(float v) {
    return block_reduce<float, 1>(v);
}

// ---------------------------------------------------------------- memory

// Device allocations counted in the backend's memory statistics.
void *cuda_malloc_tracked(size_t bytes);
void cuda_free_tracked(void *p);

// Scratch buffers private to the backend, one per purpose, grown on demand and
// kept. All work is in stream order, so an op may reuse its slot freely.
typedef enum {
    SCRATCH_PARTIAL = 0,  // per-block partial sums (RMSNorm dw, sumsq)
    SCRATCH_ROPE,         // RoPE cos/sin table
    SCRATCH_EMBED,        // embedding backward: rows sorted by token
    SCRATCH_LOGITS,       // fused classifier: one chunk of logits
    SCRATCH_REG,          // share_reg: slice descriptors and per-pair sums
    SCRATCH_COUNT
} ScratchSlot;
void *cuda_scratch(ScratchSlot slot, size_t bytes);

// Handles shared by the matmul code (created when the backend is probed).
cublasLtHandle_t cuda_lt_handle(void);
cublasHandle_t cuda_blas_handle(void);
// The stream every op runs on (the legacy default stream, 0). Work on another
// stream (the NCCL communicator's, comm_nccl.cu) is ordered against it by events.
cudaStream_t cuda_stream(void);

// ---------------------------------------------------------------- ops

// cuda_matmul.cu
void cuda_matmul_fwd(void *out, const void *inp, const void *W, int N, int IC, int OC,
                     const void *res);
// dW is fp32 (parameter gradients, backend.h).
void cuda_matmul_bwd(void *dinp, void *dW, const void *dout, const void *inp, const void *W, int N,
                     int IC, int OC, int accumulate);
// dW[OC,IC] (+)= dout[N,OC]^T @ inp[N,IC] into an fp32 buffer (beta: 0 or 1).
void cuda_matmul_dw_f32(float *dW, const void *dout, const void *inp, int N, int IC, int OC,
                        float beta);

// cuda_ops.cu
void cuda_embedding_fwd(void *out, const int *tokens, const void *wte, int BT, int C);
void cuda_embedding_bwd(void *dwte, const void *dout, const int *tokens, int BT, int C);
void cuda_rmsnorm_fwd(void *out, float *rstd, const void *inp, const void *w, int BT, int C,
                      float eps);
void cuda_rmsnorm_bwd(void *dinp, void *dw, const void *dout, const void *inp, const void *w,
                      const float *rstd, int BT, int C);
void cuda_rope_fwd(void *x, const float *inv_freq, int B, int T, int nheads, int hd, int ld);
void cuda_rope_bwd(void *dx, const float *inv_freq, int B, int T, int nheads, int hd, int ld);
void cuda_swiglu_fwd(void *out, const void *gu, int N, int F);
void cuda_swiglu_bwd(void *dgu, const void *dout, const void *gu, int N, int F);
void cuda_crossentropy_fwd(float *losses, const void *logits, const int *targets, int BT, int V);
void cuda_crossentropy_bwd(void *logits, const int *targets, int BT, int V, float scale);
void cuda_classifier_fwd(float *losses, void *dlnf, void *dWh, const void *lnf, const void *Wh,
                         const int *targets, int BT, int C, int V, float scale);
double cuda_sumsq(const void *x, size_t n);
void cuda_adamw(float *master, void *params, const void *grad, float *m, float *v, size_t n,
                float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                int t, const float *lr_scale);

// cuda_share.cu
double cuda_share_reg(void *grads, const void *params, const ParamSlice *a, const ParamSlice *b,
                      int n, int type, float scale, double *stats);

// cuda_attention.cu
size_t cuda_attn_state_bytes(int B, int T, int nh);
void cuda_attention_fwd(void *out, void *state, const void *q, const void *k, const void *v,
                        int ldq, int ldkv, int B, int T, int nh, int nkv, int hd);
void cuda_attention_bwd(void *dq, void *dk, void *dv, const void *dout, const void *state,
                        const void *q, const void *k, const void *v, int ldq, int ldkv, int B,
                        int T, int nh, int nkv, int hd);
