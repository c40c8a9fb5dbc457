// cpu_ops.c: the CPU reference backend: every op of the table in backend.h in
// fp32, matmuls through BLAS (OpenBLAS), other loops with OpenMP.
//
// Determinism: the same inputs give bitwise the same outputs run after run.
// The loops written here also give the same bits on any thread count (each
// reduction has a fixed order; parallel loops only split independent outputs).
// OpenBLAS sgemm does not promise that across thread counts (last-bit
// differences between 1 and 2 threads), so bit-exact comparisons hold for a
// fixed thread count.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "cpu_kernels.h"
#include "sharereg.h"

// ---------------------------------------------------------------- memory

static void *cpu_alloc(size_t bytes) {
    return xcalloc(1, bytes);
}
static void cpu_free(void *p) {
    free(p);
}
static void cpu_zero(void *p, size_t bytes) {
    memset(p, 0, bytes);
}
static void cpu_copy(void *dst, const void *src, size_t bytes) {
    if (dst != src) memmove(dst, src, bytes);
}
static void cpu_upload_f32(void *dst, const float *src, size_t n) {
    cpu_copy(dst, src, n * 4);
}
static void cpu_download_f32(float *dst, const void *src, size_t n) {
    cpu_copy(dst, src, n * 4);
}
static void cpu_sync(void) {}
static void cpu_copy2d(void *dst, size_t dst_ld, const void *src, size_t src_ld, size_t rows,
                       size_t cols) {
    if (dst_ld == cols && src_ld == cols) {  // both contiguous: one block
        memcpy(dst, src, 4 * rows * cols);
        return;
    }
    for (size_t r = 0; r < rows; r++)
        memcpy((float *)dst + r * dst_ld, (const float *)src + r * src_ld, 4 * cols);
}

// ---------------------------------------------------------------- forward

static void cpu_embedding_fwd(void *out_, const int *tokens, const void *wte_, int BT, int C) {
    float *out = out_;
    const float *wte = wte_;
#pragma omp parallel for
    for (int i = 0; i < BT; i++)
        memcpy(out + (size_t)i * C, wte + (size_t)tokens[i] * C, 4 * (size_t)C);
}

static void cpu_rmsnorm_fwd(void *out_, float *rstd, const void *inp_, const void *w_, int BT,
                            int C, float eps) {
    float *out = out_;
    const float *inp = inp_, *w = w_;
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        double ss = 0.0;
        for (int j = 0; j < C; j++) ss += (double)x[j] * x[j];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        rstd[i] = r;
        for (int j = 0; j < C; j++) y[j] = x[j] * r * w[j];
    }
}

static void cpu_matmul_fwd(void *out, const void *inp, const void *W, int N, int IC, int OC,
                           const void *res) {
    // out[N,OC] = inp[N,IC] @ W[OC,IC]^T (+ res): the residual is copied in and
    // the GEMM accumulates onto it (beta 1; OpenBLAS runs a separate pass over C
    // for any beta != 1, zeroing it for beta 0)
    if (res && res != out) memcpy(out, res, sizeof(float) * (size_t)N * OC);
    if (N == 1) {
        // one row (generate's cached decode step): a matrix-vector product. OpenBLAS's
        // sgemm would first pack all of W, doubling the memory traffic of a step
        // that is bound by reading the weights once.
        cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, IC, 1.0f, W, IC, inp, 1, res ? 1.0f : 0.0f,
                    out, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, W, IC,
                res ? 1.0f : 0.0f, out, OC);
}

// cos/sin of position pos0 + t and frequency i (inv_freq from rope_inv_freq), in
// double for accuracy; tables are [T, hd/2].
static void rope_tables(float *cosv, float *sinv, int T, int hd, const float *inv_freq, int pos0) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        double inv = inv_freq[i];
        for (int t = 0; t < T; t++) {
            double a = (double)(pos0 + t) * inv;
            cosv[t * half + i] = (float)cos(a);
            sinv[t * half + i] = (float)sin(a);
        }
    }
}

// dir = +1: forward rotation; dir = -1: its transpose (the backward). Row
// (b, t) of x starts at x + (b*T + t)*ld; its first nheads heads turn.
static void rope_apply(float *x, const float *inv_freq, int B, int T, int nheads, int hd, int ld,
                       float dir, int pos0) {
    int half = hd / 2;
    float *cosv = xmalloc(sizeof(float) * (size_t)T * half);
    float *sinv = xmalloc(sizeof(float) * (size_t)T * half);
    rope_tables(cosv, sinv, T, hd, inv_freq, pos0);
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cosv + (size_t)t * half, *s = sinv + (size_t)t * half;
            for (int h = 0; h < nheads; h++) {
                float *v = x + ((size_t)b * T + t) * ld + (size_t)h * hd;
                for (int i = 0; i < half; i++) {
                    // HF rotate_half: [x1, x2] -> [x1 c - x2 s, x2 c + x1 s]
                    float x1 = v[i], x2 = v[i + half], si = dir * s[i];
                    v[i] = x1 * c[i] - x2 * si;
                    v[i + half] = x2 * c[i] + x1 * si;
                }
            }
        }
    free(cosv);
    free(sinv);
}

static void cpu_rope_fwd(void *x, const float *inv_freq, int B, int T, int nheads, int hd, int ld) {
    rope_apply(x, inv_freq, B, T, nheads, hd, ld, 1.0f, 0);
}

static void cpu_rope_fwd_at(void *x, const float *inv_freq, int B, int T, int nheads, int hd,
                            int ld, int pos0) {
    rope_apply(x, inv_freq, B, T, nheads, hd, ld, 1.0f, pos0);
}

// Element-wise ops run a PS_CLONES kernel over [lo, hi) chunks of EW_CHUNK
// elements in parallel (one chunk: no parallel region). The kernels are
// separate functions so that each is compiled for AVX2 + FMA and the baseline.
#define EW_CHUNK ((size_t)1 << 15)
#define EW_PARALLEL(n, call)                                                           \
    do {                                                                               \
        size_t nc_ = ((n) + EW_CHUNK - 1) / EW_CHUNK;                                  \
        _Pragma("omp parallel for if (nc_ > 1)") for (size_t c_ = 0; c_ < nc_; c_++) { \
            size_t lo = c_ * EW_CHUNK, hi = lo + EW_CHUNK < (n) ? lo + EW_CHUNK : (n); \
            call;                                                                      \
        }                                                                              \
    } while (0)

// Row-wise ops on N rows of F elements run over [lo, hi) row ranges of about
// EW_CHUNK elements in parallel, as EW_PARALLEL.
#define ROWS_PARALLEL(N, F, call)                                                          \
    do {                                                                                   \
        size_t per_ = EW_CHUNK / (size_t)(F) ? EW_CHUNK / (size_t)(F) : 1;                 \
        size_t nc_ = ((size_t)(N) + per_ - 1) / per_;                                      \
        _Pragma("omp parallel for if (nc_ > 1)") for (size_t c_ = 0; c_ < nc_; c_++) {     \
            size_t lo = c_ * per_, hi = lo + per_ < (size_t)(N) ? lo + per_ : (size_t)(N); \
            call;                                                                          \
        }                                                                                  \
    } while (0)

// Rows lo..hi-1 of gu [N, 2F] (gate | up) into out [N, F].
PS_CLONES static void swiglu_fwd_k(float *out, const float *gu, size_t F, size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; r++) {
        const float *g = gu + r * 2 * F, *u = g + F;
        float *o = out + r * F;
#pragma omp simd
        for (size_t i = 0; i < F; i++) o[i] = g[i] / (1.0f + ps_expf(-g[i])) * u[i];
    }
}

static void cpu_swiglu_fwd(void *out, const void *gu, int N, int F) {
    ROWS_PARALLEL(N, F, swiglu_fwd_k(out, gu, (size_t)F, lo, hi));
}

static void cpu_crossentropy_fwd(float *losses, const void *logits_, const int *targets, int BT,
                                 int V) {
    const float *logits = logits_;
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        if (targets[i] < 0) {
            losses[i] = 0.0f;
            continue;
        }
        const float *l = logits + (size_t)i * V;
        float mx = -INFINITY;
        for (int j = 0; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += exp((double)(l[j] - mx));
        losses[i] = (float)(log(sum) + mx - l[targets[i]]);
    }
}

// ---------------------------------------------------------------- backward

static void cpu_crossentropy_bwd(void *logits_, const int *targets, int BT, int V, float scale) {
    float *logits = logits_;
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        float *l = logits + (size_t)i * V;
        if (targets[i] < 0) {
            memset(l, 0, sizeof(float) * (size_t)V);
            continue;
        }
        float mx = -INFINITY;
        for (int j = 0; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += exp((double)(l[j] - mx));
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < V; j++) l[j] = expf(l[j] - mx) * inv * scale;
        l[targets[i]] -= scale;
    }
}

static void cpu_matmul_bwd(void *dinp, void *dW, const void *dout, const void *inp, const void *W,
                           int N, int IC, int OC, int accumulate) {
    // dinp[N,IC] = dout[N,OC] @ W[OC,IC]
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, OC, W, IC,
                    accumulate ? 1.0f : 0.0f, dinp, IC);
    // dW[OC,IC] += dout^T[OC,N] @ inp[N,IC]
    if (dW)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, OC, inp, IC,
                    1.0f, dW, IC);
}

static void cpu_rmsnorm_bwd(void *dinp_, void *dw_, const void *dout_, const void *inp_,
                            const void *w_, const float *rstd, int BT, int C) {
    float *dinp = dinp_, *dw = dw_;
    const float *dout = dout_, *inp = inp_, *w = w_;
    // y_j = w_j x_j r, r = (mean(x^2) + eps)^(-1/2)
    // dx_j = r w_j dy_j - r^3 / C * x_j * sum_k(dy_k w_k x_k)
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
        float *dx = dinp + (size_t)i * C;
        float r = rstd[i];
        double dot = 0.0;
        for (int j = 0; j < C; j++) dot += (double)dy[j] * w[j] * x[j];
        float coef = (float)(dot * r * r * r / C);
        for (int j = 0; j < C; j++) dx[j] += r * w[j] * dy[j] - coef * x[j];
    }
    // dw_j += sum_i dy_ij x_ij r_i: parallel over column blocks, rows in order.
    const int blk = 64;
#pragma omp parallel for
    for (int j0 = 0; j0 < C; j0 += blk) {
        int j1 = j0 + blk < C ? j0 + blk : C;
        float acc[64] = {0};
        for (int i = 0; i < BT; i++) {
            const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
            for (int j = j0; j < j1; j++) acc[j - j0] += dy[j] * x[j] * rstd[i];
        }
        for (int j = j0; j < j1; j++) dw[j] += acc[j - j0];
    }
}

static void cpu_rope_bwd(void *dx, const float *inv_freq, int B, int T, int nheads, int hd,
                         int ld) {
    rope_apply(dx, inv_freq, B, T, nheads, hd, ld, -1.0f, 0);
}

PS_CLONES static void swiglu_bwd_k(float *dgu, const float *dout, const float *gu, size_t F,
                                   size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; r++) {
        const float *g = gu + r * 2 * F, *u = g + F, *d = dout + r * F;
        float *dg = dgu + r * 2 * F, *du = dg + F;
#pragma omp simd
        for (size_t i = 0; i < F; i++) {
            float sig = 1.0f / (1.0f + ps_expf(-g[i]));
            float silu = g[i] * sig;
            du[i] = d[i] * silu;
            dg[i] = d[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
        }
    }
}

static void cpu_swiglu_bwd(void *dgu, const void *dout, const void *gu, int N, int F) {
    ROWS_PARALLEL(N, F, swiglu_bwd_k(dgu, dout, gu, (size_t)F, lo, hi));
}

static void cpu_embedding_bwd(void *dwte_, const void *dout_, const int *tokens, int BT, int C) {
    float *dwte = dwte_;
    const float *dout = dout_;
    // Parallel over column blocks; rows are added in order (deterministic).
    const int blk = 64;
#pragma omp parallel for
    for (int j0 = 0; j0 < C; j0 += blk) {
        int j1 = j0 + blk < C ? j0 + blk : C;
        for (int i = 0; i < BT; i++) {
            float *d = dwte + (size_t)tokens[i] * C;
            const float *g = dout + (size_t)i * C;
            for (int j = j0; j < j1; j++) d[j] += g[j];
        }
    }
}

// ---------------------------------------------------------------- fused classifier

// The classifier (LM head + cross-entropy) a chunk of rows at a time, like the
// CUDA backend's: the logits of at most CLASSIFIER_CHUNK elements live in one
// scratch buffer, never the whole [BT,V]. In training the same call turns them
// into dlogits in place and multiplies them into dlnf's rows (=) and the head
// gradient (+=), so each chunk's logits are computed once per step.
#define CLASSIFIER_CHUNK ((size_t)4 << 20)  // floats: 16 MiB

static int classifier_rows(int BT, int V) {
    size_t r = CLASSIFIER_CHUNK / (size_t)V;
    if (r < 16) r = 16;  // keeps the GEMMs efficient; at V = 256K still 16 MiB
    return r < (size_t)BT ? (int)r : BT;
}

// The log-sum-exp of logits l[V], vectorized (ps_expf): float sums over blocks
// of 256, added in double (one float sum over a 50K vocabulary drifts by 1e-5).
PS_CLONES static float row_lse(const float *l, int V) {
    float mx = -INFINITY;
    for (int j = 0; j < V; j++) mx = l[j] > mx ? l[j] : mx;
    double sum = 0.0;
    for (int j0 = 0; j0 < V; j0 += 256) {
        int j1 = j0 + 256 < V ? j0 + 256 : V;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int j = j0; j < j1; j++) s += ps_expf(l[j] - mx);
        sum += s;
    }
    return mx + (float)log(sum);
}

// In place: l = scale * (softmax(l) - onehot(target)).
PS_CLONES static void row_dlogits(float *l, int V, int target, float lse, float scale) {
#pragma omp simd
    for (int j = 0; j < V; j++) l[j] = ps_expf(l[j] - lse) * scale;
    l[target] -= scale;
}

// Per chunk: the logits, each counted row's loss and, in training (dlnf !=
// NULL), the dlogits in place from the same log-sum-exp, then dlnf's rows (=)
// and the head gradient (+=).
static void cpu_classifier_fwd(float *losses, void *dlnf, void *dWh, const void *lnf,
                               const void *Wh, const int *targets, int BT, int C, int V,
                               float scale) {
    int R = classifier_rows(BT, V);
    float *lg = xmalloc(sizeof(float) * (size_t)R * V);
    for (int r0 = 0; r0 < BT; r0 += R) {
        int rows = BT - r0 < R ? BT - r0 : R;
        const float *x = (const float *)lnf + (size_t)r0 * C;
        cpu_matmul_fwd(lg, x, Wh, rows, C, V, NULL);
#pragma omp parallel for
        for (int i = 0; i < rows; i++) {
            int t = targets[r0 + i];
            float *l = lg + (size_t)i * V;
            float lse = t < 0 ? 0.0f : row_lse(l, V);
            losses[r0 + i] = t < 0 ? 0.0f : lse - l[t];
            if (!dlnf) continue;
            if (t < 0)
                memset(l, 0, sizeof(float) * (size_t)V);
            else
                row_dlogits(l, V, t, lse, scale);
        }
        if (dlnf) cpu_matmul_bwd((float *)dlnf + (size_t)r0 * C, dWh, lg, x, Wh, rows, C, V, 0);
    }
    free(lg);
}

// ---------------------------------------------------------------- optimizer

// Fixed chunking: the sum does not depend on the thread count.
#define SUMSQ_CHUNKS 64
static double cpu_sumsq(const void *x_, size_t n) {
    const float *x = x_;
    double part[SUMSQ_CHUNKS];
    size_t per = (n + SUMSQ_CHUNKS - 1) / SUMSQ_CHUNKS;
#pragma omp parallel for
    for (int c = 0; c < SUMSQ_CHUNKS; c++) {
        size_t a = (size_t)c * per, b = a + per < n ? a + per : n;
        double s = 0.0;
        for (size_t i = a; i < b; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double s = 0.0;
    for (int c = 0; c < SUMSQ_CHUNKS; c++) s += part[c];
    return s;
}

typedef struct {
    float beta1, beta2, eps, grad_scale, step, sbc2, decay;
} AdamStep;

PS_CLONES static void adamw_k(float *master, float *params, const float *grad, float *m, float *v,
                              const AdamStep *s, size_t lo, size_t hi) {
    float b1 = s->beta1, b2 = s->beta2, eps = s->eps, gs = s->grad_scale, step = s->step,
          sbc2 = s->sbc2, decay = s->decay;
#pragma omp simd
    for (size_t i = lo; i < hi; i++) {
        float g = grad[i] * gs;
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        float p = master[i] * decay;
        p -= step * m[i] / (sqrtf(v[i]) / sbc2 + eps);
        master[i] = p;
        params[i] = p;
    }
}

// adamw_k with a learning-rate multiplier per element (lrwd = lr * weight_decay):
// decay 1 - lrwd * sc and step * sc, which are decay and step where sc == 1.
PS_CLONES static void adamw_scaled_k(float *master, float *params, const float *grad, float *m,
                                     float *v, const AdamStep *s, float lrwd, const float *lr_scale,
                                     size_t lo, size_t hi) {
    float b1 = s->beta1, b2 = s->beta2, eps = s->eps, gs = s->grad_scale, step = s->step,
          sbc2 = s->sbc2;
#pragma omp simd
    for (size_t i = lo; i < hi; i++) {
        float g = grad[i] * gs, sc = lr_scale[i];
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        float p = master[i] * (1.0f - lrwd * sc);
        p -= step * sc * m[i] / (sqrtf(v[i]) / sbc2 + eps);
        master[i] = p;
        params[i] = p;
    }
}

static void cpu_adamw(float *master, void *params, const void *grad, float *m, float *v, size_t n,
                      float lr, float beta1, float beta2, float eps, float weight_decay,
                      float grad_scale, int t, const float *lr_scale) {
    // PyTorch AdamW: p *= 1 - lr wd; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    float lrwd = lr * weight_decay;
    AdamStep st = {beta1, beta2, eps, grad_scale, lr / bc1, sqrtf(bc2), 1.0f - lrwd};
    if (lr_scale)
        EW_PARALLEL(n, adamw_scaled_k(master, params, grad, m, v, &st, lrwd, lr_scale, lo, hi));
    else
        EW_PARALLEL(n, adamw_k(master, params, grad, m, v, &st, lo, hi));
}

static const Backend CPU = {
    .name = "cpu",
    .act_bytes = 4,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .upload = cpu_copy,
    .download = cpu_copy,
    .upload_f32 = cpu_upload_f32,
    .download_f32 = cpu_download_f32,
    .synchronize = cpu_sync,
    .copy2d = cpu_copy2d,
    .embedding_fwd = cpu_embedding_fwd,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .matmul_fwd = cpu_matmul_fwd,
    .rope_fwd = cpu_rope_fwd,
    .attention_fwd = cpu_attention_fwd,
    .attn_state_bytes = cpu_attn_state_bytes,
    .swiglu_fwd = cpu_swiglu_fwd,
    .crossentropy_fwd = cpu_crossentropy_fwd,
    .crossentropy_bwd = cpu_crossentropy_bwd,
    .matmul_bwd = cpu_matmul_bwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .rope_bwd = cpu_rope_bwd,
    .attention_bwd = cpu_attention_bwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .embedding_bwd = cpu_embedding_bwd,
    .sumsq = cpu_sumsq,
    .adamw = cpu_adamw,
    .share_reg = cpu_share_reg,
    .classifier_fwd = cpu_classifier_fwd,
    .rope_fwd_at = cpu_rope_fwd_at,
    .attention_cached = cpu_attention_cached,
};

const Backend *backend_cpu(void) {
    return &CPU;
}
