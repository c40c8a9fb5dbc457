// cuda_backend.h: the CUDA backend's extras beyond the op table (C API). The op
// table itself comes from backend_cuda_probe() (backend.h). These are for tests
// and benchmarks: the training loop and the model never call them.
#pragma once

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// Which attention kernels attention_fwd/attention_bwd run. Both keep the same
// saved state (per-row logsumexp and the backward's D = rowsum(dO * O)), so the
// choice may change between calls.
//   CUDA_ATTN_FLASH: tiled, tensor-core (wmma) kernels, memory O(B*H*T); the default.
//                    Falls back to NAIVE when hd > 128 or the GPU lacks the shared memory.
//   CUDA_ATTN_NAIVE: one thread block per query (or key) row, scalar fp32; the
//                    simple reference path (T <= 6000).
// The environment variable PS_CUDA_ATTENTION=naive|flash sets the initial choice.
typedef enum { CUDA_ATTN_FLASH = 0, CUDA_ATTN_NAIVE = 1 } CudaAttnImpl;
void cuda_set_attention_impl(CudaAttnImpl impl);
CudaAttnImpl cuda_get_attention_impl(void);

// Bytes held by the backend's allocations (alloc plus internal scratch and the
// cuBLASLt workspace): now, and the peak since the last cuda_reset_peak_bytes().
void cuda_mem_bytes(size_t *current, size_t *peak);
void cuda_reset_peak_bytes(void);
// Device memory in use by everything (CUDA context, libraries, other
// processes) and the device's total, from cudaMemGetInfo.
void cuda_device_memory(size_t *used, size_t *total);

// Name and compute capability (major*10 + minor) of the GPU in use; "" and 0
// before the backend was probed successfully.
const char *cuda_device_name(void);
int cuda_device_cc(void);

#ifdef __cplusplus
}
#endif
