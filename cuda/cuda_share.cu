// cuda_share.cu: the PostShare regularizer op (Backend.share_reg) on the GPU:
// for each pair of parameter slices (a: the replaced unit, b: its source) the
// divergence D_type(a, b) and, with grads, scale * dD/da and dD/db added into
// the bf16 gradients. It mirrors cpu_share_reg (trainer/sharereg.c, where the
// divergences are defined) in fp64 on the bf16 parameters.
//
// One launch computes every pair's reductions (one block per pair: dot, |a|^2,
// |b|^2, |a-b|^2 and, for the softmax divergences, the maxima, partition
// sums and KL/JS sums). The gradients then go in one launch per pair, in pair
// order, because a source slice may serve several pairs: no two threads ever
// update the same gradient element at once. Fixed reduction orders: bitwise
// deterministic.
#include <math.h>
#include <string.h>

#include "cuda_common.cuh"
extern "C" {
#include "sharereg.h"
}

// Per-pair results, in this order: dot, aa, bb, dd, mx, my, zx, zy, kl_pq, kl_qp, js_p, js_q.
enum { R_DOT, R_AA, R_BB, R_DD, R_MX, R_MY, R_ZX, R_ZY, R_KLPQ, R_KLQP, R_JSP, R_JSQ, R_N };

#define REG_THREADS 256

// Element j (row-major over rows x cols) of slice s in the flat buffer.
__device__ __forceinline__ size_t slice_at(const ParamSlice &s, size_t j) {
    return s.off + (j / s.cols) * (size_t)s.ld + j % s.cols;
}

// The same clamp as sharereg.c: an underflowed probability gives no inf * 0.
__device__ __forceinline__ double lg(double p) {
    return log(p > 1e-300 ? p : 1e-300);
}

// One block per pair i: the sums of R_N into res[i][R_N].
__global__ void share_reg_sums_kernel(double *res, const bf16 *params, const ParamSlice *a,
                                      const ParamSlice *b, int softmax) {
    ParamSlice A = a[blockIdx.x], B = b[blockIdx.x];
    size_t k = (size_t)A.rows * A.cols;
    double dot = 0, aa = 0, bb = 0, dd = 0, mx = -INFINITY, my = -INFINITY;
    for (size_t j = threadIdx.x; j < k; j += blockDim.x) {
        double x = b2f(params[slice_at(A, j)]), y = b2f(params[slice_at(B, j)]);
        dot += x * y, aa += x * x, bb += y * y, dd += (x - y) * (x - y);
        mx = x > mx ? x : mx, my = y > my ? y : my;
    }
    double r[R_N] = {0};
    r[R_DOT] = block_reduce<double, 0>(dot);
    r[R_AA] = block_reduce<double, 0>(aa);
    r[R_BB] = block_reduce<double, 0>(bb);
    r[R_DD] = block_reduce<double, 0>(dd);
    if (softmax) {  // P = softmax(x) = exp(x - mx) / zx, Q likewise
        mx = r[R_MX] = block_reduce<double, 1>(mx);
        my = r[R_MY] = block_reduce<double, 1>(my);
        double zx = 0, zy = 0;
        for (size_t j = threadIdx.x; j < k; j += blockDim.x) {
            zx += exp(b2f(params[slice_at(A, j)]) - mx);
            zy += exp(b2f(params[slice_at(B, j)]) - my);
        }
        zx = r[R_ZX] = block_reduce<double, 0>(zx);
        zy = r[R_ZY] = block_reduce<double, 0>(zy);
        double klpq = 0, klqp = 0, jsp = 0, jsq = 0;
        for (size_t j = threadIdx.x; j < k; j += blockDim.x) {
            double p = exp(b2f(params[slice_at(A, j)]) - mx) / zx;
            double q = exp(b2f(params[slice_at(B, j)]) - my) / zy;
            double m = lg(0.5 * (p + q));
            klpq += p * (lg(p) - lg(q));
            klqp += q * (lg(q) - lg(p));
            jsp += p * (lg(p) - m);
            jsq += q * (lg(q) - m);
        }
        r[R_KLPQ] = block_reduce<double, 0>(klpq);
        r[R_KLQP] = block_reduce<double, 0>(klqp);
        r[R_JSP] = block_reduce<double, 0>(jsp);
        r[R_JSQ] = block_reduce<double, 0>(jsq);
    }
    if (threadIdx.x == 0)
        for (int i = 0; i < R_N; i++) res[(size_t)blockIdx.x * R_N + i] = r[i];
}

// One thread per element of one pair: grads[a_j] += scale * dD/dx_j and
// grads[b_j] += scale * dD/dy_j (formulas of cpu_share_reg); r: the pair's sums.
__global__ void share_reg_grad_kernel(float *grads, const bf16 *params, ParamSlice A, ParamSlice B,
                                      const double *r, int type, double scale) {
    size_t k = (size_t)A.rows * A.cols, j = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= k) return;
    size_t ia = slice_at(A, j), ib = slice_at(B, j);
    double x = b2f(params[ia]), y = b2f(params[ib]), gx, gy;
    if (type == REG_L2 || type == REG_MSE) {
        double D = sqrt(r[R_DD]);  // the subgradient 0 where the slices coincide (l2)
        double ca = type == REG_MSE ? 2.0 / (double)k : (D > 1e-30 ? 1.0 / D : 0.0);
        gx = ca * (x - y);
        gy = -gx;
    } else {
        double p = exp(x - r[R_MX]) / r[R_ZX], q = exp(y - r[R_MY]) / r[R_ZY];
        if (type == REG_KL) {
            gx = p * (lg(p) - lg(q) - r[R_KLPQ]);
            gy = q - p;
        } else if (type == REG_KL2) {
            gx = p * (lg(p) - lg(q) - r[R_KLPQ]) + (p - q);
            gy = q * (lg(q) - lg(p) - r[R_KLQP]) + (q - p);
        } else {  // REG_JS
            double m = lg(0.5 * (p + q));
            gx = p * (0.5 * (lg(p) - m) - 0.5 * r[R_JSP]);
            gy = q * (0.5 * (lg(q) - m) - 0.5 * r[R_JSQ]);
        }
    }
    grads[ia] += (float)(scale * gx);
    grads[ib] += (float)(scale * gy);
}

double cuda_share_reg(void *grads, const void *params, const ParamSlice *a, const ParamSlice *b,
                      int n, int type, float scale, double *stats) {
    CHECK(type >= REG_L2 && type <= REG_KL2, "unknown regularizer type %d", type);
    if (n <= 0) return 0.0;
    for (int i = 0; i < n; i++)
        CHECK((size_t)a[i].rows * a[i].cols == (size_t)b[i].rows * b[i].cols && a[i].rows > 0 &&
                  a[i].cols > 0,
              "pair %d: slices of different or zero sizes", i);
    // scratch: a[n] | b[n] | res[n][R_N] (doubles, 8-byte aligned after the slices)
    size_t sl = sizeof(ParamSlice) * (size_t)n, sl8 = (2 * sl + 7) & ~(size_t)7;
    char *d = (char *)cuda_scratch(SCRATCH_REG, sl8 + sizeof(double) * R_N * (size_t)n);
    ParamSlice *da = (ParamSlice *)d, *db = (ParamSlice *)(d + sl);
    double *res = (double *)(d + sl8);
    CUDA_CHECK(cudaMemcpy(da, a, sl, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(db, b, sl, cudaMemcpyHostToDevice));
    int softmax = type != REG_L2 && type != REG_MSE;
    share_reg_sums_kernel<<<n, REG_THREADS>>>(res, (const bf16 *)params, da, db, softmax);
    KERNEL_CHECK("share_reg_sums");
    if (grads)
        for (int i = 0; i < n; i++) {
            size_t k = (size_t)a[i].rows * a[i].cols;
            share_reg_grad_kernel<<<cdiv(k, REG_THREADS), REG_THREADS>>>(
                (float *)grads, (const bf16 *)params, a[i], b[i], res + (size_t)i * R_N, type,
                (double)scale);
            KERNEL_CHECK("share_reg_grad");
        }
    double *h = (double *)xmalloc(sizeof(double) * R_N * (size_t)n);
    CUDA_CHECK(cudaMemcpy(h, res, sizeof(double) * R_N * (size_t)n, cudaMemcpyDeviceToHost));
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const double *r = h + (size_t)i * R_N;
        size_t k = (size_t)a[i].rows * a[i].cols;
        double D = type == REG_L2    ? sqrt(r[R_DD])
                   : type == REG_MSE ? r[R_DD] / (double)k
                   : type == REG_KL  ? r[R_KLPQ]
                   : type == REG_KL2 ? r[R_KLPQ] + r[R_KLQP]
                                     : 0.5 * (r[R_JSP] + r[R_JSQ]);
        total += D;
        if (stats) {
            stats[4 * i + 0] = r[R_DOT];
            stats[4 * i + 1] = r[R_AA];
            stats[4 * i + 2] = r[R_BB];
            stats[4 * i + 3] = r[R_DD];
        }
    }
    free(h);
    return total;
}
