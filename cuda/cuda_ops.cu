// cuda_ops.cu: the CUDA backend's non-matmul, non-attention ops: embedding
// forward/backward, RMSNorm forward/backward, RoPE, SwiGLU,
// cross-entropy, the fused (chunked) classifier, the gradient sum of squares
// and AdamW. Each kernel mirrors its fp32 reference in trainer/cpu_ops.c.
//
// Precision: bf16 tensors are read into fp32, all arithmetic and every
// reduction (norms, softmax, loss, column sums, sum of squares in fp64) is in
// fp32 or wider, and results are rounded to bf16 once, on store.
// Determinism: no atomics; each reduction has a fixed order that depends only
// on the shapes (per-row block reductions, two-pass column sums with a fixed
// number of row chunks, embedding rows grouped by token on the host).
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

#define NT 256  // threads per block of the row and elementwise kernels

// Blocks of NT threads to cover n elements (one element per thread).
static unsigned blocks_for(size_t n) {
    size_t b = (n + NT - 1) / NT;
    CHECK(b < 0x7fffffffu, "%zu elements are too many for one launch", n);
    return (unsigned)(b ? b : 1);
}

// ---------------------------------------------------------------- embedding

// out[i,:] = wte[tokens[i],:]; one block per row i.
__global__ void embedding_fwd_kernel(bf16 *out, const int *tokens, const bf16 *wte, int C) {
    const bf16 *src = wte + (size_t)tokens[blockIdx.x] * C;
    bf16 *dst = out + (size_t)blockIdx.x * C;
    for (int j = threadIdx.x; j < C; j += blockDim.x) dst[j] = src[j];
}

void cuda_embedding_fwd(void *out, const int *tokens, const void *wte, int BT, int C) {
    embedding_fwd_kernel<<<BT, NT>>>((bf16 *)out, tokens, (const bf16 *)wte, C);
    KERNEL_CHECK("embedding_fwd");
}

// dwte[tok[s],j] (fp32) += sum over the rows of segment s (rows with that token,
// in increasing row order) of dout[row,j], summed in fp32 and added once.
// grid (segments, column blocks); rows[], seg_start[nseg+1], seg_tok[nseg].
__global__ void embedding_bwd_kernel(float *dwte, const bf16 *dout, const int *rows,
                                     const int *seg_start, const int *seg_tok, int C) {
    int s = blockIdx.x, j = blockIdx.y * blockDim.x + threadIdx.x;
    if (j >= C) return;
    float acc = 0.0f;
    for (int r = seg_start[s]; r < seg_start[s + 1]; r++) acc += b2f(dout[(size_t)rows[r] * C + j]);
    dwte[(size_t)seg_tok[s] * C + j] += acc;
}

typedef struct {
    int tok, row;
} TokRow;
static int cmp_tokrow(const void *a, const void *b) {
    const TokRow *x = (const TokRow *)a, *y = (const TokRow *)b;
    if (x->tok != y->tok) return x->tok < y->tok ? -1 : 1;
    return x->row < y->row ? -1 : (x->row > y->row);
}

// Deterministic scatter-add: the host groups the rows by token (sorted by
// token, then row), so each embedding row is written by exactly one thread
// per column, which adds its rows in a fixed order. No atomics.
void cuda_embedding_bwd(void *dwte, const void *dout, const int *tokens, int BT, int C) {
    if (BT <= 0) return;
    int *htok = (int *)xmalloc(sizeof(int) * (size_t)BT);
    CUDA_CHECK(cudaMemcpy(htok, tokens, sizeof(int) * (size_t)BT, cudaMemcpyDeviceToHost));
    TokRow *tr = (TokRow *)xmalloc(sizeof(TokRow) * (size_t)BT);
    for (int i = 0; i < BT; i++) {
        tr[i].tok = htok[i];
        tr[i].row = i;
    }
    qsort(tr, (size_t)BT, sizeof(TokRow), cmp_tokrow);
    // one int array: rows[BT] | seg_start[nseg + 1] | seg_tok[nseg]   (nseg <= BT)
    int *h = (int *)xmalloc(sizeof(int) * (3 * (size_t)BT + 1));
    int *rows = h, *seg_start = h + BT, nseg = 0;
    int *seg_tok_tmp = htok;  // reuse: nseg <= BT
    for (int i = 0; i < BT; i++) {
        rows[i] = tr[i].row;
        if (i == 0 || tr[i].tok != tr[i - 1].tok) {
            seg_start[nseg] = i;
            seg_tok_tmp[nseg] = tr[i].tok;
            nseg++;
        }
    }
    seg_start[nseg] = BT;
    int *seg_tok = seg_start + nseg + 1;
    memcpy(seg_tok, seg_tok_tmp, sizeof(int) * (size_t)nseg);
    size_t nint = (size_t)BT + 2 * (size_t)nseg + 1;
    int *d = (int *)cuda_scratch(SCRATCH_EMBED, sizeof(int) * nint);
    CUDA_CHECK(cudaMemcpy(d, h, sizeof(int) * nint, cudaMemcpyHostToDevice));
    dim3 grid(nseg, cdiv(C, NT));
    embedding_bwd_kernel<<<grid, NT>>>((float *)dwte, (const bf16 *)dout, d, d + BT,
                                       d + BT + nseg + 1, C);
    KERNEL_CHECK("embedding_bwd");
    free(h);
    free(tr);
    free(htok);
}

// ---------------------------------------------------------------- RMSNorm

// One block per row: rstd = 1/sqrt(mean(x^2) + eps), out = x * rstd * w.
__global__ void rmsnorm_fwd_kernel(bf16 *out, float *rstd, const bf16 *inp, const bf16 *w, int C,
                                   float eps) {
    const bf16 *x = inp + (size_t)blockIdx.x * C;
    bf16 *y = out + (size_t)blockIdx.x * C;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        float v = b2f(x[j]);
        ss += v * v;
    }
    ss = block_sum(ss);
    float r = 1.0f / sqrtf(ss / C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int j = threadIdx.x; j < C; j += blockDim.x) y[j] = f2b(b2f(x[j]) * r * b2f(w[j]));
}

void cuda_rmsnorm_fwd(void *out, float *rstd, const void *inp, const void *w, int BT, int C,
                      float eps) {
    rmsnorm_fwd_kernel<<<BT, NT>>>((bf16 *)out, rstd, (const bf16 *)inp, (const bf16 *)w, C, eps);
    KERNEL_CHECK("rmsnorm_fwd");
}

// One block per row: dx_j += r w_j dy_j - (r^3 / C) x_j sum_k(dy_k w_k x_k).
__global__ void rmsnorm_bwd_dinp_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp,
                                        const bf16 *w, const float *rstd, int C) {
    size_t off = (size_t)blockIdx.x * C;
    const bf16 *x = inp + off, *dy = dout + off;
    bf16 *dx = dinp + off;
    float r = rstd[blockIdx.x];
    float dot = 0.0f;
    for (int j = threadIdx.x; j < C; j += blockDim.x) dot += b2f(dy[j]) * b2f(w[j]) * b2f(x[j]);
    dot = block_sum(dot);
    float coef = dot * r * r * r / C;
    for (int j = threadIdx.x; j < C; j += blockDim.x)
        dx[j] = f2b(b2f(dx[j]) + r * b2f(w[j]) * b2f(dy[j]) - coef * b2f(x[j]));
}

// Column sums in two passes with a fixed row split (deterministic, no atomics):
// partial[c, j] = sum over rows of chunk c of dy[i,j] x[i,j] rstd[i];
// grid (column blocks, chunks), each thread one column.
__global__ void rmsnorm_bwd_dw_partial_kernel(float *partial, const bf16 *dout, const bf16 *inp,
                                              const float *rstd, int BT, int C, int per) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    int a = blockIdx.y * per, b = min(BT, a + per);
    float acc = 0.0f;
    for (int i = a; i < b; i++) {
        size_t o = (size_t)i * C + j;
        acc += b2f(dout[o]) * b2f(inp[o]) * rstd[i];
    }
    partial[(size_t)blockIdx.y * C + j] = acc;
}

// dw[j] (fp32) += sum over chunks c (in order) of partial[c, j].
__global__ void column_sum_add_kernel(float *dw, const float *partial, int chunks, int C) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    float acc = 0.0f;
    for (int c = 0; c < chunks; c++) acc += partial[(size_t)c * C + j];
    dw[j] += acc;
}

void cuda_rmsnorm_bwd(void *dinp, void *dw, const void *dout, const void *inp, const void *w,
                      const float *rstd, int BT, int C) {
    rmsnorm_bwd_dinp_kernel<<<BT, NT>>>((bf16 *)dinp, (const bf16 *)dout, (const bf16 *)inp,
                                        (const bf16 *)w, rstd, C);
    KERNEL_CHECK("rmsnorm_bwd_dinp");
    // about 32 rows per chunk, at most 512 chunks: a function of BT only
    int chunks = (int)cdiv(BT, 32);
    if (chunks > 512) chunks = 512;
    int per = (int)cdiv(BT, chunks);
    chunks = (int)cdiv(BT, per);
    float *partial = (float *)cuda_scratch(SCRATCH_PARTIAL, sizeof(float) * (size_t)chunks * C);
    dim3 grid(cdiv(C, NT), chunks);
    rmsnorm_bwd_dw_partial_kernel<<<grid, NT>>>(partial, (const bf16 *)dout, (const bf16 *)inp,
                                                rstd, BT, C, per);
    KERNEL_CHECK("rmsnorm_bwd_dw_partial");
    column_sum_add_kernel<<<cdiv(C, NT), NT>>>((float *)dw, partial, chunks, C);
    KERNEL_CHECK("column_sum_add");
}

// ---------------------------------------------------------------- RoPE

// cos/sin tables [T, hd/2] in double precision, as in cpu_ops.c's rope_tables
// (the fp32 inv_freq[hd/2] of rope_inv_freq, params.h), rounded to fp32.
__global__ void rope_table_kernel(float *cosv, float *sinv, int T, int hd, const float *inv_freq) {
    int half = hd / 2;
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= T * half) return;
    int t = idx / half, i = idx % half;
    double inv = (double)inv_freq[i];
    double a = t * inv;
    cosv[idx] = (float)cos(a);
    sinv[idx] = (float)sin(a);
}

// One thread per rotated pair (i, i + hd/2) of the first nheads heads of each
// row of x (row (b, t) at x + (b*T + t)*ld):
// [x1, x2] -> [x1 c - x2 s, x2 c + x1 s], s = dir * sin (dir -1: the transpose).
__global__ void rope_kernel(bf16 *x, const float *cosv, const float *sinv, int T, int nheads,
                            int hd, int ld, float dir, size_t pairs) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= pairs) return;
    int half = hd / 2;
    int i = (int)(idx % half);
    size_t rest = idx / half;  // (b*T + t)*nheads + h
    int t = (int)((rest / nheads) % T);
    bf16 *v = x + (rest / nheads) * ld + (rest % nheads) * hd;
    float c = cosv[(size_t)t * half + i], s = dir * sinv[(size_t)t * half + i];
    float x1 = b2f(v[i]), x2 = b2f(v[i + half]);
    v[i] = f2b(x1 * c - x2 * s);
    v[i + half] = f2b(x2 * c + x1 * s);
}

// The table is rebuilt on every call (T * hd/2 values: one small kernel), so it
// never goes stale when another model's frequencies come in.
static void rope_apply(void *x, const float *inv_freq, int B, int T, int nheads, int hd, int ld,
                       float dir) {
    int half = hd / 2;
    if (half == 0) return;
    size_t tab = (size_t)T * half;
    float *cosv = (float *)cuda_scratch(SCRATCH_ROPE, 2 * sizeof(float) * tab), *sinv = cosv + tab;
    rope_table_kernel<<<blocks_for(tab), NT>>>(cosv, sinv, T, hd, inv_freq);
    KERNEL_CHECK("rope_table");
    size_t pairs = (size_t)B * T * nheads * half;
    rope_kernel<<<blocks_for(pairs), NT>>>((bf16 *)x, cosv, sinv, T, nheads, hd, ld, dir, pairs);
    KERNEL_CHECK("rope");
}

void cuda_rope_fwd(void *x, const float *inv_freq, int B, int T, int nheads, int hd, int ld) {
    rope_apply(x, inv_freq, B, T, nheads, hd, ld, 1.0f);
}
void cuda_rope_bwd(void *dx, const float *inv_freq, int B, int T, int nheads, int hd, int ld) {
    rope_apply(dx, inv_freq, B, T, nheads, hd, ld, -1.0f);
}

// ---------------------------------------------------------------- SwiGLU

// One thread per element i = r*F + c of out [N, F]; gu [N, 2F] holds gate at
// r*2F + c and up at r*2F + F + c.
__global__ void swiglu_fwd_kernel(bf16 *out, const bf16 *gu, size_t F, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t g_at = i / F * 2 * F + i % F;
    float g = b2f(gu[g_at]);
    out[i] = f2b(g / (1.0f + expf(-g)) * b2f(gu[g_at + F]));
}

void cuda_swiglu_fwd(void *out, const void *gu, int N, int F) {
    size_t n = (size_t)N * F;
    swiglu_fwd_kernel<<<blocks_for(n), NT>>>((bf16 *)out, (const bf16 *)gu, (size_t)F, n);
    KERNEL_CHECK("swiglu_fwd");
}

// d/dg silu(g) u = u sig (1 + g (1 - sig));  d/du = silu(g). dgu laid out like gu.
__global__ void swiglu_bwd_kernel(bf16 *dgu, const bf16 *dout, const bf16 *gu, size_t F, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t g_at = i / F * 2 * F + i % F;
    float g = b2f(gu[g_at]), u = b2f(gu[g_at + F]), d = b2f(dout[i]);
    float sig = 1.0f / (1.0f + expf(-g));
    dgu[g_at + F] = f2b(d * g * sig);
    dgu[g_at] = f2b(d * u * sig * (1.0f + g * (1.0f - sig)));
}

void cuda_swiglu_bwd(void *dgu, const void *dout, const void *gu, int N, int F) {
    size_t n = (size_t)N * F;
    swiglu_bwd_kernel<<<blocks_for(n), NT>>>((bf16 *)dgu, (const bf16 *)dout, (const bf16 *)gu,
                                             (size_t)F, n);
    KERNEL_CHECK("swiglu_bwd");
}

// ---------------------------------------------------------------- cross-entropy

// Row max and sum of exp(l - max) of one row of V logits (whole block).
__device__ __forceinline__ void row_softmax_stats(const bf16 *l, int V, float *mx, float *sum) {
    float m = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, b2f(l[j]));
    m = block_max(m);
    float s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(b2f(l[j]) - m);
    *sum = block_sum(s);
    *mx = m;
}

// One block per row: losses[i] = logsumexp(l) - l[target] (0 when target < 0).
__global__ void crossentropy_fwd_kernel(float *losses, const bf16 *logits, const int *targets,
                                        int V) {
    int t = targets[blockIdx.x];
    if (t < 0) {  // the whole block takes this branch
        if (threadIdx.x == 0) losses[blockIdx.x] = 0.0f;
        return;
    }
    const bf16 *l = logits + (size_t)blockIdx.x * V;
    float mx, sum;
    row_softmax_stats(l, V, &mx, &sum);
    if (threadIdx.x == 0) losses[blockIdx.x] = logf(sum) + mx - b2f(l[t]);
}

void cuda_crossentropy_fwd(float *losses, const void *logits, const int *targets, int BT, int V) {
    crossentropy_fwd_kernel<<<BT, NT>>>(losses, (const bf16 *)logits, targets, V);
    KERNEL_CHECK("crossentropy_fwd");
}

// One block per row, in place: l = scale * (softmax(l) - onehot(target)), 0 on
// ignored rows. Each thread rewrites only the columns it read.
__global__ void crossentropy_bwd_kernel(bf16 *logits, const int *targets, int V, float scale) {
    int t = targets[blockIdx.x];
    bf16 *l = logits + (size_t)blockIdx.x * V;
    if (t < 0) {
        for (int j = threadIdx.x; j < V; j += blockDim.x) l[j] = f2b(0.0f);
        return;
    }
    float mx, sum;
    row_softmax_stats(l, V, &mx, &sum);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float p = expf(b2f(l[j]) - mx) * inv;
        l[j] = f2b((p - (j == t ? 1.0f : 0.0f)) * scale);
    }
}

void cuda_crossentropy_bwd(void *logits, const int *targets, int BT, int V, float scale) {
    crossentropy_bwd_kernel<<<BT, NT>>>((bf16 *)logits, targets, V, scale);
    KERNEL_CHECK("crossentropy_bwd");
}

// ---------------------------------------------------------------- fused classifier

// The fused classifier works on chunks of rows: the logits of one chunk
// (rows x V, at most CLASSIFIER_CHUNK elements, 128 MiB of bf16) live in a
// scratch buffer, so neither the [BT,V] logits nor the probabilities are
// ever stored. Each chunk's logits are computed once: the losses, and in
// training (dlnf != NULL) the dlogits in place, that chunk's rows of dlnf and
// its share of the head gradient, added (fp32, beta 1) into dWh.
#define CLASSIFIER_CHUNK ((size_t)64 << 20)

static int classifier_rows(int BT, int V) {
    size_t r = CLASSIFIER_CHUNK / (size_t)V;
    if (r < 1) r = 1;
    return r < (size_t)BT ? (int)r : BT;
}

void cuda_classifier_fwd(float *losses, void *dlnf, void *dWh, const void *lnf, const void *Wh,
                         const int *targets, int BT, int C, int V, float scale) {
    int R = classifier_rows(BT, V);
    bf16 *lg = (bf16 *)cuda_scratch(SCRATCH_LOGITS, sizeof(bf16) * (size_t)R * V);
    for (int r0 = 0; r0 < BT; r0 += R) {
        int rows = BT - r0 < R ? BT - r0 : R;
        const bf16 *x = (const bf16 *)lnf + (size_t)r0 * C;
        cuda_matmul_fwd(lg, x, Wh, rows, C, V, NULL);
        cuda_crossentropy_fwd(losses + r0, lg, targets + r0, rows, V);
        if (dlnf) {
            cuda_crossentropy_bwd(lg, targets + r0, rows, V, scale);
            cuda_matmul_bwd((bf16 *)dlnf + (size_t)r0 * C, dWh, lg, x, Wh, rows, C, V, 0);
        }
    }
}

// ---------------------------------------------------------------- optimizer

// Per-block partial sums of x^2 in fp64 over a grid-stride loop; the grid size
// depends only on n, and the host adds the partials in order.
#define SUMSQ_MAX_BLOCKS 1024
__global__ void sumsq_kernel(double *partial, const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        double v = x[i];
        s += v * v;
    }
    s = block_reduce<double, 0>(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

double cuda_sumsq(const void *x, size_t n) {
    if (n == 0) return 0.0;
    unsigned G = cdiv(n, (size_t)NT * 16);
    if (G > SUMSQ_MAX_BLOCKS) G = SUMSQ_MAX_BLOCKS;
    double *partial = (double *)cuda_scratch(SCRATCH_PARTIAL, sizeof(double) * G);
    sumsq_kernel<<<G, NT>>>(partial, (const float *)x, n);
    KERNEL_CHECK("sumsq");
    double h[SUMSQ_MAX_BLOCKS];
    CUDA_CHECK(cudaMemcpy(h, partial, sizeof(double) * G, cudaMemcpyDeviceToHost));
    double s = 0.0;
    for (unsigned i = 0; i < G; i++) s += h[i];
    return s;
}

// PyTorch AdamW, the same fp32 expression order as cpu_adamw.
__global__ void adamw_kernel(float *master, bf16 *params, const float *grad, float *m, float *v,
                             size_t n, float beta1, float beta2, float eps, float grad_scale,
                             float step, float sbc2, float decay, float lrwd,
                             const float *lr_scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = grad[i] * grad_scale;
    float mi = beta1 * m[i] + (1.0f - beta1) * g;
    float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    float p;
    if (lr_scale) {  // as cpu_ops.c's adamw_scaled_k
        float sc = lr_scale[i];
        p = master[i] * (1.0f - lrwd * sc);
        p -= step * sc * mi / (sqrtf(vi) / sbc2 + eps);
    } else {
        p = master[i] * decay;
        p -= step * mi / (sqrtf(vi) / sbc2 + eps);
    }
    m[i] = mi;
    v[i] = vi;
    master[i] = p;
    params[i] = f2b(p);
}

void cuda_adamw(float *master, void *params, const void *grad, float *m, float *v, size_t n,
                float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                int t, const float *lr_scale) {
    if (n == 0) return;
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    float lrwd = lr * weight_decay;
    float step = lr / bc1, sbc2 = sqrtf(bc2), decay = 1.0f - lrwd;
    adamw_kernel<<<blocks_for(n), NT>>>(master, (bf16 *)params, (const float *)grad, m, v, n, beta1,
                                        beta2, eps, grad_scale, step, sbc2, decay, lrwd, lr_scale);
    KERNEL_CHECK("adamw");
}
