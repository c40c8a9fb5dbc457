// cpu_attention.c: causal grouped-query attention on the CPU.
//
// The backend's attention (cpu_attention_fwd/bwd) works on tiles of ATT_TILE
// query rows of one head: the tile's scores against the keys up to its last row
// are one sgemm (S = Q K^T), its output another (O = P V), so the causal mask
// wastes only the upper triangle of the diagonal block. The saved state is the
// log-sum-exp of each row's scaled scores, lse[B,nh,T] (O(T), like the CUDA
// backend's): the backward recomputes P = exp(S - lse) tile by tile, and with
// dP = dO V^T, D = rowsum(P * dP), dS = P (dP - D) scale it forms
// dQ = dS K, dK += dS^T Q, dV += P^T dO as sgemms. Query head h reads K/V head
// h / (nh/nkv) in place through the leading dimension: nothing is copied.
//
// Determinism: forward tasks are (b, h, tile), each writing its own rows; a
// backward task is (b, kv head), adding its group's heads and tiles into dK/dV
// in a fixed order. Inside the parallel loops OpenBLAS runs single-threaded,
// so the results do not depend on the thread count.
//
// The reference loops (cpu_attention_ref_*) are the scalar versions the backend
// ran before, with [B,nh,T,T] probabilities as their state; tests/test_cpu_attention.c
// checks the two against each other.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "common.h"
#include "cpu_kernels.h"

#define ATT_TILE 64

size_t cpu_attn_state_bytes(int B, int T, int nh) {
    return sizeof(float) * (size_t)B * nh * T;  // lse [B,nh,T]
}

// Row i of a tile (query t = t0 + i) over keys 0..n-1 (n = t1, the tile's end):
// the scaled scores s[0..t] become exp(s - lse) in place, the rest 0. With
// lse_out the row's lse is computed first (forward) and stored.
PS_CLONES static void softmax_rows(float *S, int rows, int n, int t0, const float *lse_in,
                                   float *lse_out) {
    for (int i = 0; i < rows; i++) {
        float *s = S + (size_t)i * n;
        int m = t0 + i + 1;  // keys 0..t0+i are visible
        float l;
        if (lse_out) {
            float mx = -INFINITY;
            for (int j = 0; j < m; j++) mx = s[j] > mx ? s[j] : mx;
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j < m; j++) {
                float e = ps_expf(s[j] - mx);
                s[j] = e;
                sum += e;
            }
            l = mx + logf(sum);
            lse_out[i] = l;
            float inv = 1.0f / sum;
#pragma omp simd
            for (int j = 0; j < m; j++) s[j] *= inv;
        } else {
            l = lse_in[i];
#pragma omp simd
            for (int j = 0; j < m; j++) s[j] = ps_expf(s[j] - l);
        }
        for (int j = m; j < n; j++) s[j] = 0.0f;
    }
}

// The forward over Tq query rows at positions p0..p0+Tq-1 of each batch row b,
// against keys 0..p0+Tq-1 (row b's keys start at k + b*kT*ks: kT = T for the
// training forward, the cache's capacity for cpu_attention_cached). Row
// strides: qs of q, ks of k and v; out is dense. lse, when not NULL, receives
// [B,nh,Tq].
static void attention_fwd_at(float *out, float *lse, const float *q, const float *k, const float *v,
                             int qs, int ks, int B, int Tq, int p0, int kT, int nh, int nkv,
                             int hd) {
    int group = nh / nkv, ntiles = (Tq + ATT_TILE - 1) / ATT_TILE;
    float scale = 1.0f / sqrtf((float)hd);
    int os = nh * hd;  // row stride of out
#pragma omp parallel
    {
        float *S = xmalloc(sizeof(float) * ((size_t)ATT_TILE * (p0 + Tq) + ATT_TILE));
        float *lse_tmp = S + (size_t)ATT_TILE * (p0 + Tq);
#pragma omp for collapse(3) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < nh; h++)
                for (int tile = 0; tile < ntiles; tile++) {
                    // the largest tiles first: they are the most work
                    int i0 = (ntiles - 1 - tile) * ATT_TILE;
                    int i1 = i0 + ATT_TILE < Tq ? i0 + ATT_TILE : Tq, rows = i1 - i0;
                    int n = p0 + i1;  // keys the tile sees
                    const float *qt = q + ((size_t)b * Tq + i0) * qs + (size_t)h * hd;
                    const float *kb = k + (size_t)b * kT * ks + (size_t)(h / group) * hd;
                    const float *vb = v + (size_t)b * kT * ks + (size_t)(h / group) * hd;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, hd, scale, qt, qs,
                                kb, ks, 0.0f, S, n);
                    softmax_rows(S, rows, n, p0 + i0, NULL,
                                 lse ? lse + ((size_t)b * nh + h) * Tq + i0 : lse_tmp);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, n, 1.0f, S, n,
                                vb, ks, 0.0f, out + ((size_t)b * Tq + i0) * os + (size_t)h * hd,
                                os);
                }
        free(S);
    }
}

void cpu_attention_fwd(void *out, void *state, const void *q, const void *k, const void *v, int ldq,
                       int ldkv, int B, int T, int nh, int nkv, int hd) {
    attention_fwd_at(out, state, q, k, v, ldq, ldkv, B, T, 0, T, nh, nkv, hd);
}

void cpu_attention_cached(void *out, const void *q, int ldq, const void *kc, const void *vc, int B,
                          int Tq, int pos0, int cap, int nh, int nkv, int hd) {
    attention_fwd_at(out, NULL, q, kc, vc, ldq, nkv * hd, B, Tq, pos0, cap, nh, nkv, hd);
}

// dS = P (dP - rowsum(P dP)) scale, in place over dP.
PS_CLONES static void softmax_bwd_rows(float *dP, const float *P, int rows, int n, float scale) {
    for (int i = 0; i < rows; i++) {
        const float *p = P + (size_t)i * n;
        float *d = dP + (size_t)i * n;
        float D = 0.0f;
#pragma omp simd reduction(+ : D)
        for (int j = 0; j < n; j++) D += p[j] * d[j];
#pragma omp simd
        for (int j = 0; j < n; j++) d[j] = p[j] * (d[j] - D) * scale;
    }
}

void cpu_attention_bwd(void *dq_, void *dk_, void *dv_, const void *dout_, const void *state,
                       const void *q_, const void *k_, const void *v_, int ldq, int ldkv, int B,
                       int T, int nh, int nkv, int hd) {
    float *dq = dq_, *dk = dk_, *dv = dv_;
    const float *dout = dout_, *lse = state, *q = q_, *k = k_, *v = v_;
    int group = nh / nkv, ntiles = (T + ATT_TILE - 1) / ATT_TILE;
    float scale = 1.0f / sqrtf((float)hd);
    int qs = ldq, ks = ldkv, os = nh * hd;  // row strides of q/dq, k/v/dk/dv, dout
#pragma omp parallel
    {
        float *P = xmalloc(sizeof(float) * (size_t)ATT_TILE * T);
        float *dP = xmalloc(sizeof(float) * (size_t)ATT_TILE * T);
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int kh = 0; kh < nkv; kh++) {
                const float *kb = k + (size_t)b * T * ks + (size_t)kh * hd;
                const float *vb = v + (size_t)b * T * ks + (size_t)kh * hd;
                float *dkb = dk + (size_t)b * T * ks + (size_t)kh * hd;
                float *dvb = dv + (size_t)b * T * ks + (size_t)kh * hd;
                // Tiles from the last: the first GEMMs into dK and dV (the group's
                // first head, the last tile: keys 0..T-1) write every row with
                // beta 0, the rest add (beta 1): no zeroing pass before them.
                for (int h = kh * group; h < (kh + 1) * group; h++)
                    for (int tile = ntiles - 1; tile >= 0; tile--) {
                        float beta = h == kh * group && tile == ntiles - 1 ? 0.0f : 1.0f;
                        int t0 = tile * ATT_TILE;
                        int t1 = t0 + ATT_TILE < T ? t0 + ATT_TILE : T, rows = t1 - t0;
                        size_t ro = ((size_t)b * T + t0) * qs + (size_t)h * hd;
                        const float *qt = q + ro;
                        const float *go = dout + ((size_t)b * T + t0) * os + (size_t)h * hd;
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, t1, hd, scale,
                                    qt, qs, kb, ks, 0.0f, P, t1);
                        softmax_rows(P, rows, t1, t0, lse + ((size_t)b * nh + h) * T + t0, NULL);
                        // dP = dO V^T
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, t1, hd, 1.0f, go,
                                    os, vb, ks, 0.0f, dP, t1);
                        // dV[0:t1] (=, then +=) P^T dO
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1, hd, rows, 1.0f, P,
                                    t1, go, os, beta, dvb, ks);
                        softmax_bwd_rows(dP, P, rows, t1, scale);
                        // dQ = dS K ; dK[0:t1] (=, then +=) dS^T Q
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, t1, 1.0f,
                                    dP, t1, kb, ks, 0.0f, dq + ro, qs);
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1, hd, rows, 1.0f, dP,
                                    t1, qt, qs, beta, dkb, ks);
                    }
            }
        free(P);
        free(dP);
    }
}

// ---------------------------------------------------------------- reference loops

size_t cpu_attention_ref_state_bytes(int B, int T, int nh) {
    return sizeof(float) * (size_t)B * nh * T * T;  // softmax probabilities [B,nh,T,T]
}

void cpu_attention_ref_fwd(float *out, float *att, float *lse, const float *q, const float *k,
                           const float *v, int B, int T, int nh, int nkv, int hd) {
    int group = nh / nkv;  // query heads per KV head: K/V are indexed, never copied
    float scale = 1.0f / sqrtf((float)hd);
    size_t qs = (size_t)nh * hd, ks = (size_t)nkv * hd;  // row strides of q and k/v
#pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++)
            for (int t = 0; t < T; t++) {
                int kh = h / group;
                const float *qt = q + ((size_t)b * T + t) * qs + (size_t)h * hd;
                float *p = att + (((size_t)b * nh + h) * T + t) * T;
                float mx = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const float *ks_ = k + ((size_t)b * T + s) * ks + (size_t)kh * hd;
                    float d = 0.0f;
                    for (int i = 0; i < hd; i++) d += qt[i] * ks_[i];
                    d *= scale;
                    p[s] = d;
                    if (d > mx) mx = d;
                }
                float sum = 0.0f;
                for (int s = 0; s <= t; s++) {
                    p[s] = expf(p[s] - mx);
                    sum += p[s];
                }
                if (lse) lse[((size_t)b * nh + h) * T + t] = mx + logf(sum);
                float inv = 1.0f / sum;
                for (int s = 0; s <= t; s++) p[s] *= inv;
                for (int s = t + 1; s < T; s++) p[s] = 0.0f;
                float *o = out + ((size_t)b * T + t) * qs + (size_t)h * hd;
                for (int i = 0; i < hd; i++) o[i] = 0.0f;
                for (int s = 0; s <= t; s++) {
                    const float *vs = v + ((size_t)b * T + s) * ks + (size_t)kh * hd;
                    for (int i = 0; i < hd; i++) o[i] += p[s] * vs[i];
                }
            }
}

void cpu_attention_ref_bwd(float *dq, float *dk, float *dv, const float *dout, const float *att,
                           const float *q, const float *k, const float *v, int B, int T, int nh,
                           int nkv, int hd) {
    int group = nh / nkv;
    float scale = 1.0f / sqrtf((float)hd);
    size_t qs = (size_t)nh * hd, ks = (size_t)nkv * hd;
    // One task per (b, kv head): the query heads of a group all add into the
    // same dk/dv rows, so they run in one task in a fixed order.
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < nkv; kh++) {
            float *dp = xmalloc(sizeof(float) * (size_t)T);
            for (int s = 0; s < T; s++) {
                memset(dk + ((size_t)b * T + s) * ks + (size_t)kh * hd, 0, sizeof(float) * hd);
                memset(dv + ((size_t)b * T + s) * ks + (size_t)kh * hd, 0, sizeof(float) * hd);
            }
            for (int h = kh * group; h < (kh + 1) * group; h++)
                for (int t = 0; t < T; t++) {
                    const float *p = att + (((size_t)b * nh + h) * T + t) * T;
                    const float *go = dout + ((size_t)b * T + t) * qs + (size_t)h * hd;
                    const float *qt = q + ((size_t)b * T + t) * qs + (size_t)h * hd;
                    float *dqt = dq + ((size_t)b * T + t) * qs + (size_t)h * hd;
                    // dp_s = dout_t . v_s ; ds_s = p_s (dp_s - sum_s' p_s' dp_s')
                    float pdp = 0.0f;
                    for (int s = 0; s <= t; s++) {
                        const float *vs = v + ((size_t)b * T + s) * ks + (size_t)kh * hd;
                        float d = 0.0f;
                        for (int i = 0; i < hd; i++) d += go[i] * vs[i];
                        dp[s] = d;
                        pdp += p[s] * d;
                    }
                    for (int i = 0; i < hd; i++) dqt[i] = 0.0f;
                    for (int s = 0; s <= t; s++) {
                        float ds = p[s] * (dp[s] - pdp) * scale;
                        const float *ksr = k + ((size_t)b * T + s) * ks + (size_t)kh * hd;
                        float *dks = dk + ((size_t)b * T + s) * ks + (size_t)kh * hd;
                        float *dvs = dv + ((size_t)b * T + s) * ks + (size_t)kh * hd;
                        for (int i = 0; i < hd; i++) {
                            dqt[i] += ds * ksr[i];
                            dks[i] += ds * qt[i];
                            dvs[i] += p[s] * go[i];
                        }
                    }
                }
            free(dp);
        }
}
