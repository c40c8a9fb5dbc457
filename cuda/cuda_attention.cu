// cuda_attention.cu: causal grouped-query attention, forward and backward, in
// two implementations that share one saved state (see cuda_backend.h):
//
//   naive: one thread block per query row (forward, dq) or key row (dk, dv),
//          scalar fp32 loops; the simple reference.
//   flash: tiled kernels on the tensor cores (wmma, bf16 in, fp32 accumulate)
//          with an online softmax, so no [T,T] matrix is ever stored. The default.
//
// Shapes: q, dq [B,T,nh,hd] with rows ldq elements apart; k, v, dk, dv
// [B,T,nkv,hd] with rows ldkv apart (the model passes views of its fused
// [BT, qd + 2 kvd] buffer); out, dout [B,T,nh,hd] dense. Query head h reads K/V
// head h / (nh/nkv) in place (no copies). Saved state, per layer, fp32:
//   lse[B,nh,T]  logsumexp of each query row's scaled scores (forward)
//   D[B,nh,T]    rowsum(dO * O), written by the backward's first kernel
// The backward recomputes the probabilities P = exp(S*scale - lse) from q and
// k. The op table does not pass O to the backward, so the dq kernel first
// recomputes O = P V for its rows (one extra pass) to get D; it then computes
// dq, and a second kernel computes dk and dv. Every output element is written
// by one thread in a fixed order: no atomics, bitwise deterministic.
#include <mma.h>
#include <stdio.h>

#include "cuda_common.cuh"

using namespace nvcuda;

static CudaAttnImpl g_impl = CUDA_ATTN_FLASH;
extern "C" void cuda_set_attention_impl(CudaAttnImpl impl) {
    g_impl = impl;
}
extern "C" CudaAttnImpl cuda_get_attention_impl(void) {
    return g_impl;
}

size_t cuda_attn_state_bytes(int B, int T, int nh) {
    return 2 * sizeof(float) * (size_t)B * nh * T;  // lse, then D
}

// ================================================================ naive

#define NAIVE_THREADS 128
#define NAIVE_SMEM_MAX (46 * 1024)  // dynamic bytes; the reductions add a little static memory

// One block per (t, h, b): scores of row t in shared memory (T floats).
__global__ void naive_fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                                 int T, int nh, int nkv, int hd, int ldq, int ldkv, float scale) {
    extern __shared__ float sc[];  // [t+1] scores, then probabilities
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z, kh = h / (nh / nkv);
    const bf16 *qt = q + ((size_t)b * T + t) * ldq + (size_t)h * hd;
    float mx = -INFINITY;
    for (int s = threadIdx.x; s <= t; s += blockDim.x) {
        const bf16 *ks = k + ((size_t)b * T + s) * ldkv + (size_t)kh * hd;
        float d = 0.0f;
        for (int i = 0; i < hd; i++) d += b2f(qt[i]) * b2f(ks[i]);
        d *= scale;
        sc[s] = d;
        mx = fmaxf(mx, d);
    }
    mx = block_max(mx);
    float sum = 0.0f;
    for (int s = threadIdx.x; s <= t; s += blockDim.x) {
        float p = expf(sc[s] - mx);
        sc[s] = p;
        sum += p;
    }
    sum = block_sum(sum);  // its barriers also publish sc[] to the whole block
    float inv = 1.0f / sum;
    bf16 *o = out + (((size_t)b * T + t) * nh + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s <= t; s++)
            acc += sc[s] * b2f(v[((size_t)b * T + s) * ldkv + (size_t)kh * hd + i]);
        o[i] = f2b(acc * inv);
    }
    if (threadIdx.x == 0) lse[((size_t)b * nh + h) * T + t] = mx + logf(sum);
}

// One block per (t, h, b): p_s, dp_s = dO_t . v_s; D_t = sum_s p_s dp_s;
// dq_t = scale * sum_s p_s (dp_s - D_t) k_s.
__global__ void naive_bwd_dq_kernel(bf16 *dq, float *Dst, const bf16 *dout, const float *lse,
                                    const bf16 *q, const bf16 *k, const bf16 *v, int T, int nh,
                                    int nkv, int hd, int ldq, int ldkv, float scale) {
    extern __shared__ float sh[];  // p[T], dp[T]
    float *p = sh, *dp = sh + T;
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z, kh = h / (nh / nkv);
    size_t row = ((size_t)b * nh + h) * T + t, qoff = ((size_t)b * T + t) * ldq + (size_t)h * hd;
    size_t ooff = (((size_t)b * T + t) * nh + h) * hd;  // dout: dense
    float L = lse[row];
    float pd = 0.0f;
    for (int s = threadIdx.x; s <= t; s += blockDim.x) {
        size_t koff = ((size_t)b * T + s) * ldkv + (size_t)kh * hd;
        float d = 0.0f, g = 0.0f;
        for (int i = 0; i < hd; i++) {
            d += b2f(q[qoff + i]) * b2f(k[koff + i]);
            g += b2f(dout[ooff + i]) * b2f(v[koff + i]);
        }
        float ps = expf(d * scale - L);
        p[s] = ps;
        dp[s] = g;
        pd += ps * g;
    }
    float D = block_sum(pd);
    if (threadIdx.x == 0) Dst[row] = D;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s <= t; s++)
            acc += p[s] * (dp[s] - D) * b2f(k[((size_t)b * T + s) * ldkv + (size_t)kh * hd + i]);
        dq[qoff + i] = f2b(acc * scale);
    }
}

// One block per (key row s, kv head, b), over the group's query heads in order:
// p_t, ds_t = p_t (dO_t . v_s - D_t) for t >= s; dv_s = sum p_t dO_t;
// dk_s = scale * sum ds_t q_t.
__global__ void naive_bwd_dkdv_kernel(bf16 *dk, bf16 *dv, const bf16 *dout, const float *lse,
                                      const float *Dst, const bf16 *q, const bf16 *k, const bf16 *v,
                                      int T, int nh, int nkv, int hd, int ldq, int ldkv,
                                      float scale) {
    extern __shared__ float sh[];  // p[T], ds[T], acc_k[hd], acc_v[hd]
    float *p = sh, *ds = sh + T, *acck = sh + 2 * T, *accv = acck + hd;
    int s = blockIdx.x, kh = blockIdx.y, b = blockIdx.z, group = nh / nkv;
    size_t koff = ((size_t)b * T + s) * ldkv + (size_t)kh * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) acck[i] = accv[i] = 0.0f;
    for (int g = 0; g < group; g++) {
        int h = kh * group + g;
        __syncthreads();  // the previous head's readers of p[] and ds[] are done
        for (int t = s + threadIdx.x; t < T; t += blockDim.x) {
            size_t qoff = ((size_t)b * T + t) * ldq + (size_t)h * hd;
            size_t ooff = (((size_t)b * T + t) * nh + h) * hd, row = ((size_t)b * nh + h) * T + t;
            float d = 0.0f, gv = 0.0f;
            for (int i = 0; i < hd; i++) {
                d += b2f(q[qoff + i]) * b2f(k[koff + i]);
                gv += b2f(dout[ooff + i]) * b2f(v[koff + i]);
            }
            float pt = expf(d * scale - lse[row]);
            p[t - s] = pt;
            ds[t - s] = pt * (gv - Dst[row]);
        }
        __syncthreads();
        for (int i = threadIdx.x; i < hd; i += blockDim.x) {  // each thread owns its i
            float a = 0.0f, c = 0.0f;
            for (int t = s; t < T; t++) {
                size_t qoff = ((size_t)b * T + t) * ldq + (size_t)h * hd;
                size_t ooff = (((size_t)b * T + t) * nh + h) * hd;
                a += p[t - s] * b2f(dout[ooff + i]);
                c += ds[t - s] * b2f(q[qoff + i]);
            }
            accv[i] += a;
            acck[i] += c * scale;
        }
    }
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        dk[koff + i] = f2b(acck[i]);
        dv[koff + i] = f2b(accv[i]);
    }
}

static void naive_fwd(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B,
                      int T, int nh, int nkv, int hd, int ldq, int ldkv, float scale) {
    size_t smem = sizeof(float) * (size_t)T;
    CHECK(smem <= NAIVE_SMEM_MAX, "naive attention supports T up to %d (T = %d)",
          (int)(NAIVE_SMEM_MAX / sizeof(float)), T);
    naive_fwd_kernel<<<dim3(T, nh, B), NAIVE_THREADS, smem>>>(out, lse, q, k, v, T, nh, nkv, hd,
                                                              ldq, ldkv, scale);
    KERNEL_CHECK("naive_attention_fwd");
}

static void naive_bwd(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const float *lse, float *D,
                      const bf16 *q, const bf16 *k, const bf16 *v, int B, int T, int nh, int nkv,
                      int hd, int ldq, int ldkv, float scale) {
    size_t smem_dq = 2 * sizeof(float) * (size_t)T, smem_kv = smem_dq + 2 * sizeof(float) * hd;
    CHECK(smem_kv <= NAIVE_SMEM_MAX,
          "naive attention backward: T = %d and hd = %d need %zu bytes "
          "of shared memory (limit %d)",
          T, hd, smem_kv, NAIVE_SMEM_MAX);
    naive_bwd_dq_kernel<<<dim3(T, nh, B), NAIVE_THREADS, smem_dq>>>(dq, D, dout, lse, q, k, v, T,
                                                                    nh, nkv, hd, ldq, ldkv, scale);
    KERNEL_CHECK("naive_attention_bwd_dq");
    naive_bwd_dkdv_kernel<<<dim3(T, nkv, B), NAIVE_THREADS, smem_kv>>>(
        dk, dv, dout, lse, D, q, k, v, T, nh, nkv, hd, ldq, ldkv, scale);
    KERNEL_CHECK("naive_attention_bwd_dkdv");
}

// ================================================================ flash

// Tiles: a block of 4 warps owns FB = 64 rows (queries in the forward and dq
// kernels, keys in the dk/dv kernel); warp w owns rows 16w..16w+15 and only
// ever touches those rows of the per-row buffers, so after the tiles are loaded
// (block barrier) each warp runs on its own with __syncwarp.
// Head dims are zero-padded to hdp = roundup(hd, 16) <= 128 in shared memory.
// Shared-memory rows are padded (+8 bf16 / +4 fp32) against bank conflicts
// while keeping wmma's 32-byte alignment of every 16-row / 16-column block.
#define FB 64   // rows per block
#define FK 64   // key rows per tile (forward, dq)
#define FQ2 32  // query rows per tile (dk/dv)
#define FLASH_THREADS 128
#define HD_MAX 128
#define LDS (FK + 4)    // fp32 score tiles [FB][FK]
#define LDP (FK + 8)    // bf16 probability tiles [FB][FK]
#define LDT (FQ2 + 4)   // fp32 transposed score tiles [FB][FQ2]
#define LDPT (FQ2 + 8)  // bf16 transposed probability tiles [FB][FQ2]

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> FragA;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> FragB;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> FragBT;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> FragC;

// The offset of the next 128-byte aligned piece of `bytes` bytes; advances *off.
__host__ __device__ static inline size_t carve(size_t *off, size_t bytes) {
    size_t at = *off;
    *off += (bytes + 127) & ~(size_t)127;
    return at;
}

// Shared-memory layouts (byte offsets), computed the same way on host and device.
typedef struct {
    size_t q, k, v, s, p, o, total;
} FwdLayout;  // forward: Q, K, V tiles, scores S, probabilities P, output accumulator O
__host__ __device__ static inline FwdLayout fwd_layout(int hdp) {
    FwdLayout L;
    size_t ldh = hdp + 8, ldo = hdp + 4, off = 0;
    L.q = carve(&off, FB * ldh * 2);
    L.k = carve(&off, FK * ldh * 2);
    L.v = carve(&off, FK * ldh * 2);
    L.s = carve(&off, FB * LDS * 4);
    L.p = carve(&off, FB * LDP * 2);
    L.o = carve(&off, FB * ldo * 4);
    L.total = off;
    return L;
}
typedef struct {
    size_t q, dout, k, v, s, dp, p, acc, total;
} DqLayout;  // dq: Q, dO, K, V tiles, S, dP, P (then dS), accumulator (O, then dQ)
__host__ __device__ static inline DqLayout dq_layout(int hdp) {
    DqLayout L;
    size_t ldh = hdp + 8, ldo = hdp + 4, off = 0;
    L.q = carve(&off, FB * ldh * 2);
    L.dout = carve(&off, FB * ldh * 2);
    L.k = carve(&off, FK * ldh * 2);
    L.v = carve(&off, FK * ldh * 2);
    L.s = carve(&off, FB * LDS * 4);
    L.dp = carve(&off, FB * LDS * 4);
    L.p = carve(&off, FB * LDP * 2);
    L.acc = carve(&off, FB * ldo * 4);
    L.total = off;
    return L;
}
typedef struct {
    size_t k, v, q, dout, st, dpt, pt, dst, dk, dv, lse, d, total;
} DkvLayout;  // dk/dv: K, V (FB rows), Q, dO (FQ2 rows), S^T, dP^T, P^T, dS^T, dK, dV, lse, D
__host__ __device__ static inline DkvLayout dkv_layout(int hdp) {
    DkvLayout L;
    size_t ldh = hdp + 8, ldo = hdp + 4, off = 0;
    L.k = carve(&off, FB * ldh * 2);
    L.v = carve(&off, FB * ldh * 2);
    L.q = carve(&off, FQ2 * ldh * 2);
    L.dout = carve(&off, FQ2 * ldh * 2);
    L.st = carve(&off, FB * LDT * 4);
    L.dpt = carve(&off, FB * LDT * 4);
    L.pt = carve(&off, FB * LDPT * 2);
    L.dst = carve(&off, FB * LDPT * 2);
    L.dk = carve(&off, FB * ldo * 4);
    L.dv = carve(&off, FB * ldo * 4);
    L.lse = carve(&off, FQ2 * 4);
    L.d = carve(&off, FQ2 * 4);
    L.total = off;
    return L;
}

// dst[r][d] (row stride ld) = row (row0 + r) of a [T, *] tensor whose row t
// starts at src + t*stride, for r < rows and d < hdp; zero where t >= T or d >= hd.
__device__ static void load_tile(bf16 *dst, int ld, const bf16 *src, size_t stride, int row0,
                                 int rows, int T, int hd, int hdp) {
    for (int idx = threadIdx.x; idx < rows * hdp; idx += blockDim.x) {
        int r = idx / hdp, d = idx % hdp, t = row0 + r;
        dst[r * ld + d] = (t < T && d < hd) ? src[(size_t)t * stride + d] : f2b(0.0f);
    }
}

// Warp-wide: out[16][n] (fp32, row stride ldo) = A[16][kd] B[n][kd]^T, where A
// and B are bf16 row-major in shared memory; n and kd are multiples of 16.
__device__ static void warp_abt(float *out, int ldo, const bf16 *A, int lda, const bf16 *B, int ldb,
                                int n, int kd) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800  // bf16 wmma: sm_80+
    for (int cb = 0; cb < n; cb += 16) {
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int kk = 0; kk < kd; kk += 16) {
            FragA a;
            FragBT bt;  // B^T: B row-major read as column-major
            wmma::load_matrix_sync(a, A + kk, lda);
            wmma::load_matrix_sync(bt, B + (size_t)cb * ldb + kk, ldb);
            wmma::mma_sync(acc, a, bt, acc);
        }
        wmma::store_matrix_sync(out + cb, acc, ldo, wmma::mem_row_major);
    }
#endif
}

// Warp-wide: acc[16][n] (fp32 in shared memory, row stride ldc) += A[16][kd] B[kd][n].
__device__ inline void warp_acc_ab(float *acc, int ldc, const bf16 *A, int lda, const bf16 *B,
                                   int ldb, int n, int kd) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    for (int cb = 0; cb < n; cb += 16) {
        FragC c;
        wmma::load_matrix_sync(c, acc + cb, ldc, wmma::mem_row_major);
        for (int kk = 0; kk < kd; kk += 16) {
            FragA a;
            FragB bm;
            wmma::load_matrix_sync(a, A + kk, lda);
            wmma::load_matrix_sync(bm, B + (size_t)kk * ldb + cb, ldb);
            wmma::mma_sync(c, a, bm, c);
        }
        wmma::store_matrix_sync(acc + cb, c, ldc, wmma::mem_row_major);
    }
#endif
}

// Row 0 of head h of batch b in a [B,T,heads,hd] tensor whose rows are ld
// elements apart (row t is t*ld further).
__device__ inline const bf16 *head_rows(const bf16 *x, int b, int T, size_t ld, int hd, int h) {
    return x + (size_t)b * T * ld + (size_t)h * hd;
}

// Block-wide step of the forward and dq kernels: once every warp is done with
// the previous tiles, load key tile k0 of K and V (kb, vb: head_rows), then
// this warp's 16 rows (r0..) of S = Q K^T into sS.
__device__ inline void kv_tile_scores(bf16 *sK, bf16 *sV, float *sS, const bf16 *sQ, const bf16 *kb,
                                      const bf16 *vb, size_t ks, int k0, int T, int hd, int hdp,
                                      int r0) {
    int ldh = hdp + 8;
    __syncthreads();
    load_tile(sK, ldh, kb, ks, k0, FK, T, hd, hdp);
    load_tile(sV, ldh, vb, ks, k0, FK, T, hd, hdp);
    __syncthreads();
    warp_abt(sS + r0 * LDS, LDS, sQ + r0 * ldh, ldh, sK, ldh, FK, hdp);
    __syncwarp();
}

// Forward. grid (ceil(T/FB), nh, B). For its 64 query rows the block walks the
// key tiles up to the diagonal; warp w keeps the running max m and sum l of its
// 16 rows in registers (every lane holds the same values) and rescales its rows
// of the O accumulator when the max grows. P is rounded to bf16 for the P V
// product; l sums the fp32 p.
__global__ void __launch_bounds__(FLASH_THREADS)
    flash_fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int T,
                     int nh, int nkv, int hd, int ldq, int ldkv, float scale) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    extern __shared__ __align__(128) unsigned char smem[];
    int hdp = (hd + 15) & ~15, ldh = hdp + 8, ldo = hdp + 4;
    FwdLayout L = fwd_layout(hdp);
    bf16 *sQ = (bf16 *)(smem + L.q), *sK = (bf16 *)(smem + L.k), *sV = (bf16 *)(smem + L.v);
    float *sS = (float *)(smem + L.s), *sO = (float *)(smem + L.o);
    bf16 *sP = (bf16 *)(smem + L.p);
    int q0 = blockIdx.x * FB, h = blockIdx.y, b = blockIdx.z, kh = h / (nh / nkv);
    size_t qs = (size_t)ldq, ks = (size_t)ldkv, os = (size_t)nh * hd;  // os: out (dense)
    const bf16 *qb = head_rows(q, b, T, qs, hd, h);
    const bf16 *kb = head_rows(k, b, T, ks, hd, kh), *vb = head_rows(v, b, T, ks, hd, kh);
    int lane = threadIdx.x & 31, r0 = (threadIdx.x >> 5) * 16;

    load_tile(sQ, ldh, qb, qs, q0, FB, T, hd, hdp);
    for (int i = threadIdx.x; i < FB * ldo; i += blockDim.x) sO[i] = 0.0f;
    float m_r[16], l_r[16];
#pragma unroll
    for (int i = 0; i < 16; i++) m_r[i] = -INFINITY, l_r[i] = 0.0f;

    int nkt = min(T - 1, q0 + FB - 1) / FK + 1;  // key tiles up to the diagonal
    for (int kt = 0; kt < nkt; kt++) {
        int k0 = kt * FK;
        kv_tile_scores(sK, sV, sS, sQ, kb, vb, ks, k0, T, hd, hdp, r0);  // S = Q K^T
#pragma unroll
        for (int i = 0; i < 16; i++) {  // online softmax; lane owns key columns lane, lane + 32
            int r = r0 + i, t = q0 + r;
            int c0 = k0 + lane, c1 = c0 + 32;
            float s0 = (t < T && c0 <= t) ? sS[r * LDS + lane] * scale : -INFINITY;
            float s1 = (t < T && c1 <= t) ? sS[r * LDS + lane + 32] * scale : -INFINITY;
            float m_new = fmaxf(m_r[i], warp_max(fmaxf(s0, s1)));
            float p0 = s0 == -INFINITY ? 0.0f : expf(s0 - m_new);
            float p1 = s1 == -INFINITY ? 0.0f : expf(s1 - m_new);
            float alpha = m_r[i] == -INFINITY ? 0.0f : expf(m_r[i] - m_new);
            l_r[i] = l_r[i] * alpha + warp_sum(p0 + p1);
            m_r[i] = m_new;
            sP[r * LDP + lane] = f2b(p0);
            sP[r * LDP + lane + 32] = f2b(p1);
            for (int d = lane; d < hdp; d += 32) sO[r * ldo + d] *= alpha;
        }
        __syncwarp();
        warp_acc_ab(sO + r0 * ldo, ldo, sP + r0 * LDP, LDP, sV, ldh, hdp, FK);  // O += P V
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 16; i++) {
        int r = r0 + i, t = q0 + r;
        if (t >= T) continue;
        float inv = 1.0f / l_r[i];
        for (int d = lane; d < hd; d += 32)
            out[os * ((size_t)b * T + t) + (size_t)h * hd + d] = f2b(sO[r * ldo + d] * inv);
        if (lane == 0) lse[((size_t)b * nh + h) * T + t] = m_r[i] + logf(l_r[i]);
    }
#else
    __trap();  // sm_80+ only; the host never launches it elsewhere
#endif
}

// Backward, part 1. grid (ceil(T/FB), nh, B). Pass 1 recomputes O = P V for
// the block's rows (P = exp(S*scale - lse)) and stores D = rowsum(dO * O).
// Pass 2: dP = dO V^T, dS = P (dP - D), dQ += dS K; dq = scale * dQ.
__global__ void __launch_bounds__(FLASH_THREADS)
    flash_bwd_dq_kernel(bf16 *dq, float *Dst, const bf16 *dout, const float *lse, const bf16 *q,
                        const bf16 *k, const bf16 *v, int T, int nh, int nkv, int hd, int ldq,
                        int ldkv, float scale) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    extern __shared__ __align__(128) unsigned char smem[];
    int hdp = (hd + 15) & ~15, ldh = hdp + 8, ldo = hdp + 4;
    DqLayout L = dq_layout(hdp);
    bf16 *sQ = (bf16 *)(smem + L.q), *sdO = (bf16 *)(smem + L.dout);
    bf16 *sK = (bf16 *)(smem + L.k), *sV = (bf16 *)(smem + L.v), *sP = (bf16 *)(smem + L.p);
    float *sS = (float *)(smem + L.s), *sdP = (float *)(smem + L.dp);
    float *sA = (float *)(smem + L.acc);
    int q0 = blockIdx.x * FB, h = blockIdx.y, b = blockIdx.z, kh = h / (nh / nkv);
    size_t qs = (size_t)ldq, ks = (size_t)ldkv, os = (size_t)nh * hd;  // os: dout (dense)
    size_t srow = ((size_t)b * nh + h) * T;
    const bf16 *qb = head_rows(q, b, T, qs, hd, h), *ob = head_rows(dout, b, T, os, hd, h);
    const bf16 *kb = head_rows(k, b, T, ks, hd, kh), *vb = head_rows(v, b, T, ks, hd, kh);
    int lane = threadIdx.x & 31, r0 = (threadIdx.x >> 5) * 16;

    load_tile(sQ, ldh, qb, qs, q0, FB, T, hd, hdp);
    load_tile(sdO, ldh, ob, os, q0, FB, T, hd, hdp);
    for (int i = threadIdx.x; i < FB * ldo; i += blockDim.x) sA[i] = 0.0f;
    float L_r[16], D_r[16];
#pragma unroll
    for (int i = 0; i < 16; i++) {
        int t = q0 + r0 + i;
        L_r[i] = t < T ? lse[srow + t] : 0.0f;
    }
    int nkt = min(T - 1, q0 + FB - 1) / FK + 1;

    // pass 1: sA = O = P V
    for (int kt = 0; kt < nkt; kt++) {
        int k0 = kt * FK;
        kv_tile_scores(sK, sV, sS, sQ, kb, vb, ks, k0, T, hd, hdp, r0);  // S = Q K^T
#pragma unroll
        for (int i = 0; i < 16; i++) {
            int r = r0 + i, t = q0 + r;
            for (int c = lane; c < FK; c += 32) {
                float p = (t < T && k0 + c <= t) ? expf(sS[r * LDS + c] * scale - L_r[i]) : 0.0f;
                sP[r * LDP + c] = f2b(p);
            }
        }
        __syncwarp();
        warp_acc_ab(sA + r0 * ldo, ldo, sP + r0 * LDP, LDP, sV, ldh, hdp, FK);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 16; i++) {  // D = rowsum(dO * O); then clear the row for dQ
        int r = r0 + i, t = q0 + r;
        float d = 0.0f;
        for (int c = lane; c < hd; c += 32) d += b2f(sdO[r * ldh + c]) * sA[r * ldo + c];
        D_r[i] = warp_sum(d);
        if (lane == 0 && t < T) Dst[srow + t] = D_r[i];
        for (int c = lane; c < hdp; c += 32) sA[r * ldo + c] = 0.0f;
    }

    // pass 2: sA = dQ = dS K
    for (int kt = 0; kt < nkt; kt++) {
        int k0 = kt * FK;
        kv_tile_scores(sK, sV, sS, sQ, kb, vb, ks, k0, T, hd, hdp, r0);        // S = Q K^T
        warp_abt(sdP + r0 * LDS, LDS, sdO + r0 * ldh, ldh, sV, ldh, FK, hdp);  // dP = dO V^T
        __syncwarp();
#pragma unroll
        for (int i = 0; i < 16; i++) {
            int r = r0 + i, t = q0 + r;
            for (int c = lane; c < FK; c += 32) {
                float p = (t < T && k0 + c <= t) ? expf(sS[r * LDS + c] * scale - L_r[i]) : 0.0f;
                sP[r * LDP + c] = f2b(p * (sdP[r * LDS + c] - D_r[i]));  // dS
            }
        }
        __syncwarp();
        warp_acc_ab(sA + r0 * ldo, ldo, sP + r0 * LDP, LDP, sK, ldh, hdp, FK);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 16; i++) {
        int r = r0 + i, t = q0 + r;
        if (t >= T) continue;
        for (int d = lane; d < hd; d += 32)
            dq[qs * ((size_t)b * T + t) + (size_t)h * hd + d] = f2b(sA[r * ldo + d] * scale);
    }
#else
    __trap();
#endif
}

// Backward, part 2. grid (ceil(T/FB), nkv, B): 64 key rows per block; for each
// query head of the group (in order) and each query tile of FQ2 rows at or
// after the keys: S^T = K Q^T, dP^T = V dO^T, P^T, dS^T = P^T (dP^T - D);
// dV += P^T dO, dK += dS^T Q. dk = scale * dK.
__global__ void __launch_bounds__(FLASH_THREADS)
    flash_bwd_dkdv_kernel(bf16 *dk, bf16 *dv, const bf16 *dout, const float *lse, const float *Dst,
                          const bf16 *q, const bf16 *k, const bf16 *v, int T, int nh, int nkv,
                          int hd, int ldq, int ldkv, float scale) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    extern __shared__ __align__(128) unsigned char smem[];
    int hdp = (hd + 15) & ~15, ldh = hdp + 8, ldo = hdp + 4;
    DkvLayout L = dkv_layout(hdp);
    bf16 *sK = (bf16 *)(smem + L.k), *sV = (bf16 *)(smem + L.v);
    bf16 *sQ = (bf16 *)(smem + L.q), *sdO = (bf16 *)(smem + L.dout);
    float *sST = (float *)(smem + L.st), *sdPT = (float *)(smem + L.dpt);
    bf16 *sPT = (bf16 *)(smem + L.pt), *sdST = (bf16 *)(smem + L.dst);
    float *sdK = (float *)(smem + L.dk), *sdV = (float *)(smem + L.dv);
    float *sL = (float *)(smem + L.lse), *sD = (float *)(smem + L.d);
    int k0 = blockIdx.x * FB, kh = blockIdx.y, b = blockIdx.z, group = nh / nkv;
    size_t qs = (size_t)ldq, ks = (size_t)ldkv, os = (size_t)nh * hd;  // os: dout (dense)
    const bf16 *kb = head_rows(k, b, T, ks, hd, kh), *vb = head_rows(v, b, T, ks, hd, kh);
    int lane = threadIdx.x & 31, r0 = (threadIdx.x >> 5) * 16;

    load_tile(sK, ldh, kb, ks, k0, FB, T, hd, hdp);
    load_tile(sV, ldh, vb, ks, k0, FB, T, hd, hdp);
    for (int i = threadIdx.x; i < FB * ldo; i += blockDim.x) sdK[i] = sdV[i] = 0.0f;
    int nqt = (T + FQ2 - 1) / FQ2;
    for (int g = 0; g < group; g++) {
        int h = kh * group + g;
        size_t srow = ((size_t)b * nh + h) * T;
        const bf16 *qb = head_rows(q, b, T, qs, hd, h), *ob = head_rows(dout, b, T, os, hd, h);
        for (int qt = k0 / FQ2; qt < nqt; qt++) {
            int q0 = qt * FQ2;
            __syncthreads();  // all warps are done with the previous Q, dO tiles
            load_tile(sQ, ldh, qb, qs, q0, FQ2, T, hd, hdp);
            load_tile(sdO, ldh, ob, os, q0, FQ2, T, hd, hdp);
            for (int i = threadIdx.x; i < FQ2; i += blockDim.x) {
                int t = q0 + i;
                sL[i] = t < T ? lse[srow + t] : 0.0f;
                sD[i] = t < T ? Dst[srow + t] : 0.0f;
            }
            __syncthreads();
            warp_abt(sST + r0 * LDT, LDT, sK + r0 * ldh, ldh, sQ, ldh, FQ2, hdp);    // S^T
            warp_abt(sdPT + r0 * LDT, LDT, sV + r0 * ldh, ldh, sdO, ldh, FQ2, hdp);  // dP^T
            __syncwarp();
            int t = q0 + lane;  // lane owns query column `lane` (FQ2 == 32)
#pragma unroll
            for (int i = 0; i < 16; i++) {
                int r = r0 + i, key = k0 + r;
                float p = (t < T && key <= t) ? expf(sST[r * LDT + lane] * scale - sL[lane]) : 0.0f;
                sPT[r * LDPT + lane] = f2b(p);
                sdST[r * LDPT + lane] = f2b(p * (sdPT[r * LDT + lane] - sD[lane]));
            }
            __syncwarp();
            warp_acc_ab(sdV + r0 * ldo, ldo, sPT + r0 * LDPT, LDPT, sdO, ldh, hdp, FQ2);
            warp_acc_ab(sdK + r0 * ldo, ldo, sdST + r0 * LDPT, LDPT, sQ, ldh, hdp, FQ2);
        }
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 16; i++) {
        int s = k0 + r0 + i;
        if (s >= T) continue;
        size_t o = ks * ((size_t)b * T + s) + (size_t)kh * hd;
        for (int d = lane; d < hd; d += 32) {
            dk[o + d] = f2b(sdK[(r0 + i) * ldo + d] * scale);
            dv[o + d] = f2b(sdV[(r0 + i) * ldo + d]);
        }
    }
#else
    __trap();
#endif
}

// Raise a kernel's dynamic shared-memory limit once (launches over 48 KB need it).
static void allow_smem(const void *kernel, size_t bytes, size_t *allowed) {
    if (bytes > *allowed) {
        CUDA_CHECK(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        *allowed = bytes;
    }
}

// Whether the flash kernels can run this head dim on this GPU; else the naive
// path runs (a note is printed once).
static int flash_ok(int hd) {
    // The current device's limit (the NCCL communicator may have chosen another GPU
    // than 0 for this rank before the backend started; it does not change later).
    static int optin = -1, warned = 0;
    if (optin < 0) {
        int dev = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    }
    int hdp = (hd + 15) & ~15;
    size_t need = fwd_layout(hdp).total;
    if (dq_layout(hdp).total > need) need = dq_layout(hdp).total;
    if (dkv_layout(hdp).total > need) need = dkv_layout(hdp).total;
    int ok = cuda_device_cc() >= 80 && hd <= HD_MAX && need <= (size_t)optin;
    if (!ok && !warned) {
        warned = 1;
        fprintf(stderr,
                "postshare: note: flash attention needs head dim <= %d and %zu bytes of shared "
                "memory per block (this GPU allows %d); using the naive attention kernels\n",
                HD_MAX, need, optin);
    }
    return ok;
}

static void check_shapes(int B, int T, int nh, int nkv, int hd, int ldq, int ldkv) {
    // (no '%' in a CHECK condition: it becomes part of the message's format string)
    CHECK(B > 0 && T > 0 && hd > 0 && nkv > 0 && nh == nh / nkv * nkv,
          "attention shapes B %d T %d nh %d nkv %d hd %d", B, T, nh, nkv, hd);
    CHECK(ldq >= nh * hd && ldkv >= nkv * hd,
          "attention row strides ldq %d ldkv %d (nh %d nkv %d hd %d)", ldq, ldkv, nh, nkv, hd);
    CHECK(B <= 65535 && nh <= 65535, "attention: B %d and nh %d must be <= 65535 (grid limit)", B,
          nh);
}

void cuda_attention_fwd(void *out, void *state, const void *q, const void *k, const void *v,
                        int ldq, int ldkv, int B, int T, int nh, int nkv, int hd) {
    check_shapes(B, T, nh, nkv, hd, ldq, ldkv);
    float *lse = (float *)state, scale = 1.0f / sqrtf((float)hd);
    if (g_impl == CUDA_ATTN_NAIVE || !flash_ok(hd)) {
        naive_fwd((bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, B, T, nh,
                  nkv, hd, ldq, ldkv, scale);
        return;
    }
    static size_t allowed = 48 * 1024;
    size_t smem = fwd_layout((hd + 15) & ~15).total;
    allow_smem((const void *)flash_fwd_kernel, smem, &allowed);
    flash_fwd_kernel<<<dim3(cdiv(T, FB), nh, B), FLASH_THREADS, smem>>>(
        (bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, T, nh, nkv, hd, ldq,
        ldkv, scale);
    KERNEL_CHECK("flash_attention_fwd");
}

void cuda_attention_bwd(void *dq, void *dk, void *dv, const void *dout, const void *state,
                        const void *q, const void *k, const void *v, int ldq, int ldkv, int B,
                        int T, int nh, int nkv, int hd) {
    check_shapes(B, T, nh, nkv, hd, ldq, ldkv);
    // The state is const in the op table, but its second half (D) is the
    // backward's own scratch: the forward never reads it.
    const float *lse = (const float *)state;
    float *D = (float *)state + (size_t)B * nh * T, scale = 1.0f / sqrtf((float)hd);
    if (g_impl == CUDA_ATTN_NAIVE || !flash_ok(hd)) {
        naive_bwd((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout, lse, D, (const bf16 *)q,
                  (const bf16 *)k, (const bf16 *)v, B, T, nh, nkv, hd, ldq, ldkv, scale);
        return;
    }
    static size_t allowed_dq = 48 * 1024, allowed_kv = 48 * 1024;
    int hdp = (hd + 15) & ~15;
    size_t smem_dq = dq_layout(hdp).total, smem_kv = dkv_layout(hdp).total;
    allow_smem((const void *)flash_bwd_dq_kernel, smem_dq, &allowed_dq);
    allow_smem((const void *)flash_bwd_dkdv_kernel, smem_kv, &allowed_kv);
    flash_bwd_dq_kernel<<<dim3(cdiv(T, FB), nh, B), FLASH_THREADS, smem_dq>>>(
        (bf16 *)dq, D, (const bf16 *)dout, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
        T, nh, nkv, hd, ldq, ldkv, scale);
    KERNEL_CHECK("flash_attention_bwd_dq");
    flash_bwd_dkdv_kernel<<<dim3(cdiv(T, FB), nkv, B), FLASH_THREADS, smem_kv>>>(
        (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout, lse, D, (const bf16 *)q, (const bf16 *)k,
        (const bf16 *)v, T, nh, nkv, hd, ldq, ldkv, scale);
    KERNEL_CHECK("flash_attention_bwd_dkdv");
}
