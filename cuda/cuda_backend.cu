// cuda_backend.cu: the CUDA backend's op table (Backend "cuda", bf16 compute
// type), its memory ops (tracked allocations, scratch buffers, host fp32 <->
// device bf16 conversion), error reporting, and backend_cuda_probe(), which
// finds a usable GPU and creates the cuBLAS(Lt) handles on first use.
//
// Compute type: parameters, activations and gradients are bf16 (act_bytes 2).
// Buffers named *_f32 in backend.h (master weights, AdamW m/v, RMSNorm rstd,
// losses) are fp32. The ops themselves live in cuda_ops.cu (elementwise, norms,
// embedding, classifier, optimizer), cuda_matmul.cu (cuBLASLt),
// cuda_attention.cu and cuda_share.cu (the PostShare regularizer).
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

int cuda_sync_each_launch = 0;

// ---------------------------------------------------------------- errors

const char *cuda_hint(cudaError_t err) {
    switch (err) {
        case cudaErrorMemoryAllocation:
            return "out of GPU memory: lower data.batch_size or data.seq_len";
        case cudaErrorNoKernelImageForDevice:
        case cudaErrorInvalidDeviceFunction:
            return "this build has no code for the GPU's architecture: reconfigure with "
                   "-DCMAKE_CUDA_ARCHITECTURES=<compute capability, e.g. 90> and rebuild";
        case cudaErrorInsufficientDriver:
            return "the NVIDIA driver is older than this CUDA runtime: update the driver or "
                   "build with an older CUDA toolkit";
        case cudaErrorNoDevice:
            return "no NVIDIA GPU is visible (check CUDA_VISIBLE_DEVICES and nvidia-smi)";
        case cudaErrorIllegalAddress:
        case cudaErrorLaunchFailure:
        case cudaErrorMisalignedAddress:
            return "a kernel accessed memory out of bounds: rerun with PS_CUDA_SYNC=1 to see "
                   "which launch, or under compute-sanitizer";
        case cudaErrorLaunchOutOfResources:
        case cudaErrorInvalidConfiguration:
            return "a launch asked for more threads, registers or shared memory than the GPU "
                   "has: a bug in the launch configuration";
        default:
            return "rerun with PS_CUDA_SYNC=1 to find the failing launch";
    }
}

void cuda_check_launch(const char *file, int line, const char *name) {
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess && cuda_sync_each_launch) err = cudaDeviceSynchronize();
    if (err != cudaSuccess)
        ps_die_at(file, line, "CUDA kernel %s failed: %s (%s); hint: %s", name,
                  cudaGetErrorString(err), cudaGetErrorName(err), cuda_hint(err));
}

// ---------------------------------------------------------------- tracked memory

// Live allocations (pointer, size), so that frees can be subtracted from the
// byte count. There are few of them (tens per model), so a list suffices.
typedef struct {
    void *p;
    size_t bytes;
} Allocation;
static Allocation *g_allocs;
static size_t g_nallocs, g_cap_allocs, g_bytes_now, g_bytes_peak;

void *cuda_malloc_tracked(size_t bytes) {
    if (bytes == 0) return NULL;
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        ps_die(
            "cudaMalloc of %.3f GiB failed: %s (%.3f GiB free of %.3f GiB; this backend holds "
            "%.3f GiB); hint: %s",
            bytes / 1073741824.0, cudaGetErrorString(err), free_b / 1073741824.0,
            total_b / 1073741824.0, g_bytes_now / 1073741824.0, cuda_hint(err));
    }
    if (g_nallocs == g_cap_allocs) {
        g_cap_allocs = g_cap_allocs ? 2 * g_cap_allocs : 64;
        g_allocs = (Allocation *)xrealloc(g_allocs, g_cap_allocs * sizeof(Allocation));
    }
    g_allocs[g_nallocs].p = p;
    g_allocs[g_nallocs].bytes = bytes;
    g_nallocs++;
    g_bytes_now += bytes;
    if (g_bytes_now > g_bytes_peak) g_bytes_peak = g_bytes_now;
    return p;
}

void cuda_free_tracked(void *p) {
    if (!p) return;
    for (size_t i = 0; i < g_nallocs; i++)
        if (g_allocs[i].p == p) {
            g_bytes_now -= g_allocs[i].bytes;
            g_allocs[i] = g_allocs[--g_nallocs];
            CUDA_CHECK(cudaFree(p));
            return;
        }
    ps_die("cuda backend: free of %p, which this backend did not allocate", p);
}

extern "C" void cuda_mem_bytes(size_t *current, size_t *peak) {
    if (current) *current = g_bytes_now;
    if (peak) *peak = g_bytes_peak;
}
extern "C" void cuda_reset_peak_bytes(void) {
    g_bytes_peak = g_bytes_now;
}
extern "C" void cuda_device_memory(size_t *used, size_t *total) {
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (used) *used = total_b - free_b;
    if (total) *total = total_b;
}

static void *scratch_ptr[SCRATCH_COUNT];
static size_t scratch_cap[SCRATCH_COUNT];

void *cuda_scratch(ScratchSlot slot, size_t bytes) {
    if (bytes > scratch_cap[slot]) {
        // cudaFree waits for queued work, so no kernel still uses the old buffer.
        cuda_free_tracked(scratch_ptr[slot]);
        size_t cap = bytes + bytes / 4;  // some headroom against repeated growth
        scratch_ptr[slot] = cuda_malloc_tracked(cap);
        scratch_cap[slot] = cap;
    }
    return scratch_ptr[slot];
}

// ---------------------------------------------------------------- memory ops

static void *cu_alloc(size_t bytes) {
    void *p = cuda_malloc_tracked(bytes);
    if (p) CUDA_CHECK(cudaMemset(p, 0, bytes));  // the op table promises zeroed memory
    return p;
}
static void cu_free(void *p) {
    cuda_free_tracked(p);
}
static void cu_zero(void *p, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemset(p, 0, bytes));
}
static void cu_upload(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
static void cu_download(void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

// Host-side conversion through a staging buffer of CONVERT_CHUNK bf16 values,
// with common.c's round-to-nearest-even conversions (the same as the kernels').
#define CONVERT_CHUNK ((size_t)1 << 22)
static uint16_t *staging(void) {
    static uint16_t *buf;
    if (!buf) buf = (uint16_t *)xmalloc(CONVERT_CHUNK * sizeof(uint16_t));
    return buf;
}
static void cu_upload_f32(void *dst, const float *src, size_t n) {
    uint16_t *h = staging();
    for (size_t a = 0; a < n; a += CONVERT_CHUNK) {
        size_t m = n - a < CONVERT_CHUNK ? n - a : CONVERT_CHUNK;
        for (size_t i = 0; i < m; i++) h[i] = f32_to_bf16(src[a + i]);
        CUDA_CHECK(cudaMemcpy((uint16_t *)dst + a, h, m * 2, cudaMemcpyHostToDevice));
    }
}
static void cu_download_f32(float *dst, const void *src, size_t n) {
    uint16_t *h = staging();
    for (size_t a = 0; a < n; a += CONVERT_CHUNK) {
        size_t m = n - a < CONVERT_CHUNK ? n - a : CONVERT_CHUNK;
        CUDA_CHECK(cudaMemcpy(h, (const uint16_t *)src + a, m * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < m; i++) dst[a + i] = bf16_to_f32(h[i]);
    }
}
static void cu_synchronize(void) {
    CUDA_CHECK(cudaDeviceSynchronize());
}

// dst[r*dst_ld + c] = src[r*src_ld + c], bf16 elements. One row, or rows that
// are contiguous on both sides, is one plain copy: cudaMemcpy2D rejects pitches
// of 2^31 bytes or more (cudaDevAttrMaxPitch), and model_pad copies a whole
// parameter buffer as one row whose pitch is the buffer. Rows whose pitch is too
// large for cudaMemcpy2D are copied one by one.
static void cu_copy2d(void *dst, size_t dst_ld, const void *src, size_t src_ld, size_t rows,
                      size_t cols) {
    if (!rows || !cols) return;
    size_t e = sizeof(bf16);
    if (rows == 1 || (dst_ld == cols && src_ld == cols)) {
        CUDA_CHECK(cudaMemcpy(dst, src, rows * cols * e, cudaMemcpyDeviceToDevice));
        return;
    }
    if (dst_ld * e < ((size_t)1 << 31) && src_ld * e < ((size_t)1 << 31)) {
        CUDA_CHECK(cudaMemcpy2D(dst, dst_ld * e, src, src_ld * e, cols * e, rows,
                                cudaMemcpyDeviceToDevice));
        return;
    }
    for (size_t r = 0; r < rows; r++)
        CUDA_CHECK(cudaMemcpy((char *)dst + r * dst_ld * e, (const char *)src + r * src_ld * e,
                              cols * e, cudaMemcpyDeviceToDevice));
}

// ---------------------------------------------------------------- the op table

// Filled once by backend_cuda_probe (C++17 has no designated initializers);
// entries not set stay NULL, as in the C tables.
static Backend CUDA_BACKEND;
static void fill_table(Backend *b) {
    memset(b, 0, sizeof *b);
    b->name = "cuda";
    b->act_bytes = 2;
    b->alloc = cu_alloc;
    b->free = cu_free;
    b->zero = cu_zero;
    b->upload = cu_upload;
    b->download = cu_download;
    b->upload_f32 = cu_upload_f32;
    b->download_f32 = cu_download_f32;
    b->synchronize = cu_synchronize;
    b->copy2d = cu_copy2d;
    b->embedding_fwd = cuda_embedding_fwd;
    b->rmsnorm_fwd = cuda_rmsnorm_fwd;
    b->matmul_fwd = cuda_matmul_fwd;
    b->rope_fwd = cuda_rope_fwd;
    b->attention_fwd = cuda_attention_fwd;
    b->attn_state_bytes = cuda_attn_state_bytes;
    b->swiglu_fwd = cuda_swiglu_fwd;
    b->crossentropy_fwd = cuda_crossentropy_fwd;
    b->crossentropy_bwd = cuda_crossentropy_bwd;
    b->matmul_bwd = cuda_matmul_bwd;
    b->rmsnorm_bwd = cuda_rmsnorm_bwd;
    b->rope_bwd = cuda_rope_bwd;
    b->attention_bwd = cuda_attention_bwd;
    b->swiglu_bwd = cuda_swiglu_bwd;
    b->embedding_bwd = cuda_embedding_bwd;
    b->sumsq = cuda_sumsq;
    b->adamw = cuda_adamw;
    b->share_reg = cuda_share_reg;
    b->classifier_fwd = cuda_classifier_fwd;
}

// ---------------------------------------------------------------- probe and handles

static cublasLtHandle_t g_lt;
static cublasHandle_t g_blas;
static char g_device_name[256];
static int g_device_cc;

cublasLtHandle_t cuda_lt_handle(void) {
    return g_lt;
}
cublasHandle_t cuda_blas_handle(void) {
    return g_blas;
}
cudaStream_t cuda_stream(void) {
    return 0;
}
extern "C" const char *cuda_device_name(void) {
    return g_device_name;
}
extern "C" int cuda_device_cc(void) {
    return g_device_cc;
}

// The module's entry point: backend_cuda_probe (backend.c) loads this library
// on first use and calls it.
extern "C" const Backend *ps_cuda_module_probe(const char **why) {
    static int probed = 0;
    static const char *reason = NULL;
    static char msg[512];
    if (!probed) {
        probed = 1;
        int n = 0;
        cudaError_t err = cudaGetDeviceCount(&n);
        cudaDeviceProp prop;
        if (err != cudaSuccess) {
            snprintf(msg, sizeof msg,
                     "no usable NVIDIA GPU (cudaGetDeviceCount: %s, %s: no NVIDIA driver or GPU "
                     "here, or a driver older than this CUDA runtime)",
                     cudaGetErrorString(err), cudaGetErrorName(err));
            cudaGetLastError();  // leave no error state behind
            reason = msg;
        } else if (n == 0) {
            reason = "no NVIDIA GPU is visible (cudaGetDeviceCount returned 0)";
        } else {
            // The current device: 0, or the one the NCCL communicator chose for this
            // rank (comm_nccl runs before the backend starts).
            int dev = 0;
            CUDA_CHECK(cudaGetDevice(&dev));
            CUDA_CHECK(cudaSetDevice(dev));
            CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
            if (prop.major < 8) {
                snprintf(msg, sizeof msg,
                         "GPU %d (%s) has compute capability %d.%d; the CUDA backend needs 8.0 or "
                         "newer (bf16 tensor cores)",
                         dev, prop.name, prop.major, prop.minor);
                reason = msg;
            } else {
                snprintf(g_device_name, sizeof g_device_name, "%s", prop.name);
                g_device_cc = prop.major * 10 + prop.minor;
                const char *s = getenv("PS_CUDA_SYNC");
                cuda_sync_each_launch = s && s[0] == '1';
                const char *a = getenv("PS_CUDA_ATTENTION");
                if (a && !strcmp(a, "naive"))
                    cuda_set_attention_impl(CUDA_ATTN_NAIVE);
                else if (a && strcmp(a, "flash"))
                    ps_die("PS_CUDA_ATTENTION='%s': expected naive or flash", a);
                fill_table(&CUDA_BACKEND);
                CUBLAS_CHECK(cublasLtCreate(&g_lt));
                CUBLAS_CHECK(cublasCreate(&g_blas));
            }
        }
    }
    if (why) *why = reason;
    return reason ? NULL : &CUDA_BACKEND;
}
