// test_gpu_ops.c: every op of the CUDA backend against the CPU reference op
// (trainer/cpu_ops.c) on the same fresh random inputs, at several shapes,
// including odd sizes and partial tiles.
//
// Inputs are rounded to bf16 first, so both backends compute from identical
// values and the error is the GPU op's own. Each output is compared as
// ||gpu - cpu|| / ||cpu|| (test_gpu.h): bf16 outputs within 1e-2, fp32 outputs
// (RMSNorm rstd, losses, AdamW state) within 1e-4 or tighter. Outputs that the
// op overwrites (=) are poisoned with NaN on the GPU first, so an element the
// op fails to write fails the check; outputs that accumulate (+=) start from
// random values. Skips (exit 0) without a GPU.
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "params.h"
#include "test_gpu.h"

static const Backend *G, *Cb;  // the GPU backend and the CPU reference
static Rng rng;
static int quick;
static int g_argc;
static char **g_argv;

// Whether the command line asks for this group of tests: no arguments run every
// group; `test_gpu_ops attention` (for example) runs only that one, as check.sh's
// short sanitizer runs do. Groups: memory embedding rmsnorm matmul rope attention
// elementwise crossentropy classifier share_reg optimizer.
static const char *GROUPS[] = {"memory",     "embedding", "rmsnorm",     "matmul",
                               "rope",       "attention", "elementwise", "crossentropy",
                               "classifier", "share_reg", "optimizer"};
static int want(const char *group) {
    if (g_argc < 2) return 1;
    for (int i = 1; i < g_argc; i++)
        if (!strcmp(g_argv[i], group)) return 1;
    return 0;
}

// One tensor on both backends. f32: an fp32 buffer on both (else the GPU copy
// holds the compute type, bf16). host: the values both copies started from.
typedef struct {
    size_t n;
    int f32;
    float *host;
    void *c, *g;
} Pair;

static void gpu_put(const Pair *p, const float *h) {
    if (p->f32)
        G->upload(p->g, h, p->n * 4);
    else
        G->upload_f32(p->g, h, p->n);
}

// n values N(0, scale^2) rounded to bf16 (scale 0: zeros); poison: the GPU
// copy is NaN instead (an output the op must overwrite).
static Pair pair(size_t n, int f32, float scale, int poison) {
    Pair p = {.n = n, .f32 = f32};
    p.host = xmalloc(4 * n);
    for (size_t i = 0; i < n; i++)
        p.host[i] = scale != 0.0f ? t_bf16(scale * rng_normal(&rng)) : 0.0f;
    p.c = Cb->alloc(4 * n);
    Cb->upload(p.c, p.host, 4 * n);
    p.g = G->alloc(n * (f32 ? 4 : G->act_bytes));
    if (poison) {
        float *nan = xmalloc(4 * n);
        for (size_t i = 0; i < n; i++) nan[i] = NAN;
        gpu_put(&p, nan);
        free(nan);
    } else {
        gpu_put(&p, p.host);
    }
    return p;
}
static Pair input(size_t n, float scale) {
    return pair(n, 0, scale, 0);
}
static Pair output(size_t n) {
    return pair(n, 0, 0.0f, 1);
}

static void pair_free(Pair *p) {
    free(p->host);
    Cb->free(p->c);
    G->free(p->g);
}

static void gpu_get(const Pair *p, float *h) {
    if (p->f32)
        G->download(h, p->g, p->n * 4);
    else
        G->download_f32(h, p->g, p->n);
}

// The GPU copy against the CPU copy; returns the error.
static double check(const Pair *p, double tol, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static double check(const Pair *p, double tol, const char *fmt, ...) {
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    float *g = xmalloc(4 * p->n), *c = xmalloc(4 * p->n);
    gpu_get(p, g);
    Cb->download(c, p->c, 4 * p->n);
    double e = t_rel_l2(g, c, p->n);
    T_CHECK(e <= tol, "%s: rel L2 error %.3g (tolerance %.0e)", what, e, tol);
    printf("  %-58s %.2e (tol %.0e)\n", what, e, tol);
    free(g);
    free(c);
    return e;
}

// int32 buffers (tokens, targets) on both backends.
static void ints(int *h, size_t n, void **c, void **g) {
    *c = Cb->alloc(4 * n);
    *g = G->alloc(4 * n);
    Cb->upload(*c, h, 4 * n);
    G->upload(*g, h, 4 * n);
}

// ---------------------------------------------------------------- memory

static void test_memory(void) {
    printf("memory\n");
    size_t n = 1001;
    float *h = xmalloc(4 * n), *back = xmalloc(4 * n);
    void *g = G->alloc(n * G->act_bytes);
    G->download_f32(back, g, n);
    int zero = 1;
    for (size_t i = 0; i < n; i++) zero &= back[i] == 0.0f;
    T_CHECK(zero, "alloc returns zeroed memory");
    for (size_t i = 0; i < n; i++) h[i] = t_bf16(3.0f * rng_normal(&rng));
    G->upload_f32(g, h, n);
    G->download_f32(back, g, n);
    T_CHECK(!memcmp(h, back, 4 * n), "bf16-exact values survive upload_f32/download_f32");
    for (size_t i = 0; i < n; i++) h[i] = 3.0f * rng_normal(&rng);
    G->upload_f32(g, h, n);
    G->download_f32(back, g, n);
    int rne = 1;
    for (size_t i = 0; i < n; i++) rne &= back[i] == t_bf16(h[i]);
    T_CHECK(rne, "upload_f32 rounds to nearest even like f32_to_bf16");
    G->zero(g, n * G->act_bytes);
    G->download_f32(back, g, n);
    zero = 1;
    for (size_t i = 0; i < n; i++) zero &= back[i] == 0.0f;
    T_CHECK(zero, "zero clears");
    unsigned char raw[77], rawback[77];
    for (int i = 0; i < 77; i++) raw[i] = (unsigned char)rng_u64(&rng);
    G->upload(g, raw, sizeof raw);
    G->download(rawback, g, sizeof raw);
    T_CHECK(!memcmp(raw, rawback, sizeof raw), "raw upload/download round trip");
    G->free(g);
    free(h);
    free(back);

    if (G->copy2d && Cb->copy2d) {  // a 5x7 block between row strides 11 and 9, at offsets
        Pair src = input(11 * 13, 1.0f), dst = input(9 * 8, 1.0f);
        size_t e = G->act_bytes;
        Cb->copy2d((float *)dst.c + 1, 9, (float *)src.c + 3, 11, 5, 7);
        G->copy2d((char *)dst.g + 1 * e, 9, (char *)src.g + 3 * e, 11, 5, 7);
        check(&dst, 0.0, "copy2d 5x7 (strides 11 -> 9)");
        pair_free(&src);
        pair_free(&dst);
    }
}

// copy2d's contract on backend be, against a host loop: strided rows; one row
// whose row strides are far beyond the buffers (model_pad copies a whole
// parameter buffer as one row: only row 0 may be touched, and cudaMemcpy2D
// rejects pitches of 2^31 bytes or more); rows contiguous on both sides; zero
// rows. Elements outside the block must keep their values. Runs on the CPU
// without a GPU too.
static void test_copy2d_contract(const Backend *be) {
    if (!be->copy2d) return;
    Rng r;
    rng_seed(&r, 77);
    size_t n = 300, e = be->act_bytes;
    float *hs = xmalloc(4 * n), *hd = xmalloc(4 * n), *want = xmalloc(4 * n), *got = xmalloc(4 * n);
    void *s = be->alloc(n * e), *d = be->alloc(n * e);
    struct {
        size_t rows, cols, dst_ld, src_ld, dst_off, src_off;
        const char *what;
    } cs[] = {{5, 7, 9, 11, 1, 3, "5x7, row strides 11 -> 9"},
              {1, 150, (size_t)1 << 40, (size_t)1 << 41, 2, 5, "one row, strides 2^40/2^41"},
              {4, 37, 37, 37, 0, 1, "4x37 contiguous on both sides"},
              {0, 9, 9, 9, 0, 0, "zero rows"}};
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        for (size_t i = 0; i < n; i++)
            hs[i] = t_bf16(rng_normal(&r)), hd[i] = t_bf16(rng_normal(&r));
        be->upload_f32(s, hs, n);
        be->upload_f32(d, hd, n);
        memcpy(want, hd, 4 * n);
        for (size_t row = 0; row < cs[k].rows; row++)
            for (size_t c = 0; c < cs[k].cols; c++)
                want[cs[k].dst_off + row * cs[k].dst_ld + c] =
                    hs[cs[k].src_off + row * cs[k].src_ld + c];
        be->copy2d((char *)d + cs[k].dst_off * e, cs[k].dst_ld, (char *)s + cs[k].src_off * e,
                   cs[k].src_ld, cs[k].rows, cs[k].cols);
        be->download_f32(got, d, n);
        T_CHECK(!memcmp(got, want, 4 * n), "%s copy2d %s: wrong or stray elements", be->name,
                cs[k].what);
        printf("  %s copy2d %s: %s\n", be->name, cs[k].what,
               memcmp(got, want, 4 * n) ? "WRONG" : "exact");
    }
    be->free(s), be->free(d);
    free(hs), free(hd), free(want), free(got);
}

// ---------------------------------------------------------------- ops

static void test_embedding(int BT, int C, int V) {
    int *tok = xmalloc(sizeof(int) * BT);
    for (int i = 0; i < BT; i++) tok[i] = (int)(rng_u64(&rng) % V);
    void *tc, *tg;
    ints(tok, BT, &tc, &tg);
    Pair wte = input((size_t)V * C, 1.0f), out = output((size_t)BT * C);
    Cb->embedding_fwd(out.c, tc, wte.c, BT, C);
    G->embedding_fwd(out.g, tg, wte.g, BT, C);
    check(&out, 0.0, "embedding_fwd BT %d C %d V %d (exact)", BT, C, V);
    // += into random fp32 values (parameter gradients are fp32 on every backend)
    Pair dout = input((size_t)BT * C, 1.0f), dwte = pair((size_t)V * C, 1, 1.0f, 0);
    Cb->embedding_bwd(dwte.c, dout.c, tc, BT, C);
    G->embedding_bwd(dwte.g, dout.g, tg, BT, C);
    check(&dwte, 1e-5, "embedding_bwd dwte (fp32 +=) BT %d C %d V %d", BT, C, V);
    pair_free(&wte), pair_free(&out), pair_free(&dout), pair_free(&dwte);
    Cb->free(tc), G->free(tg);
    free(tok);
}

static void test_rmsnorm(int BT, int C) {
    float eps = 1e-5f;
    Pair x = input((size_t)BT * C, 2.0f), w = input(C, 1.0f), out = output((size_t)BT * C);
    Pair rstd = pair(BT, 1, 0.0f, 1);
    Cb->rmsnorm_fwd(out.c, rstd.c, x.c, w.c, BT, C, eps);
    G->rmsnorm_fwd(out.g, rstd.g, x.g, w.g, BT, C, eps);
    check(&out, 1e-2, "rmsnorm_fwd out BT %d C %d", BT, C);
    check(&rstd, 1e-5, "rmsnorm_fwd rstd (fp32) BT %d C %d", BT, C);
    // Backward from the CPU's rstd on both, so that only the backward differs.
    float *r = xmalloc(4 * (size_t)BT);
    Cb->download(r, rstd.c, 4 * (size_t)BT);
    G->upload(rstd.g, r, 4 * (size_t)BT);
    free(r);
    Pair dout = input((size_t)BT * C, 1.0f), dx = input((size_t)BT * C, 1.0f);
    Pair dw = pair(C, 1, 1.0f, 0);
    Cb->rmsnorm_bwd(dx.c, dw.c, dout.c, x.c, w.c, rstd.c, BT, C);
    G->rmsnorm_bwd(dx.g, dw.g, dout.g, x.g, w.g, rstd.g, BT, C);
    check(&dx, 1e-2, "rmsnorm_bwd dinp (+=) BT %d C %d", BT, C);
    check(&dw, 1e-4, "rmsnorm_bwd dw (fp32 +=) BT %d C %d", BT, C);
    pair_free(&x), pair_free(&w), pair_free(&out), pair_free(&rstd);
    pair_free(&dout), pair_free(&dx), pair_free(&dw);
}

// W sits at an odd element offset inside its buffer (like a tensor inside the
// flat parameter buffer), so the GPU matmul must handle 2-byte alignment.
static void test_matmul(int N, int IC, int OC) {
    Pair x = input((size_t)N * IC, 1.0f), Wbuf = input((size_t)OC * IC + 1, 1.0f);
    void *Wc = (float *)Wbuf.c + 1, *Wg = (char *)Wbuf.g + G->act_bytes;
    Pair out = output((size_t)N * OC);
    Cb->matmul_fwd(out.c, x.c, Wc, N, IC, OC, NULL);
    G->matmul_fwd(out.g, x.g, Wg, N, IC, OC, NULL);
    check(&out, 1e-2, "matmul_fwd N %d IC %d OC %d", N, IC, OC);
    // with a residual: into another buffer (copied, then beta 1), and in place (out +=)
    Pair res = input((size_t)N * OC, 1.0f), out2 = output((size_t)N * OC);
    Cb->matmul_fwd(out2.c, x.c, Wc, N, IC, OC, res.c);
    G->matmul_fwd(out2.g, x.g, Wg, N, IC, OC, res.g);
    check(&out2, 1e-2, "matmul_fwd + res N %d IC %d OC %d", N, IC, OC);
    Cb->matmul_fwd(res.c, x.c, Wc, N, IC, OC, res.c);
    G->matmul_fwd(res.g, x.g, Wg, N, IC, OC, res.g);
    check(&res, 1e-2, "matmul_fwd += N %d IC %d OC %d", N, IC, OC);
    pair_free(&res), pair_free(&out2);
    Pair dout = input((size_t)N * OC, 1.0f), dx = output((size_t)N * IC);
    Pair dW = pair((size_t)OC * IC, 1, 1.0f, 0);
    Cb->matmul_bwd(dx.c, dW.c, dout.c, x.c, Wc, N, IC, OC, 0);
    G->matmul_bwd(dx.g, dW.g, dout.g, x.g, Wg, N, IC, OC, 0);
    check(&dx, 1e-2, "matmul_bwd dinp (=) N %d IC %d OC %d", N, IC, OC);
    check(&dW, 1e-4, "matmul_bwd dW (fp32 +=) N %d IC %d OC %d", N, IC, OC);
    // accumulate into dinp; dW skipped (NULL)
    Cb->matmul_bwd(dx.c, NULL, dout.c, x.c, Wc, N, IC, OC, 1);
    G->matmul_bwd(dx.g, NULL, dout.g, x.g, Wg, N, IC, OC, 1);
    check(&dx, 1e-2, "matmul_bwd dinp (+=, dW NULL) N %d IC %d OC %d", N, IC, OC);
    pair_free(&x), pair_free(&Wbuf), pair_free(&out), pair_free(&dout), pair_free(&dx),
        pair_free(&dW);
}

// rope_type: ROPE_DEFAULT, or ROPE_LLAMA3 with original_max_position_embeddings 32
// (so the three frequency bands all occur at hd >= 16). Rows carry one more head
// that the op must leave alone (ld = (nh + 1) hd), as the model's fused q|k|v rows.
static void test_rope(int B, int T, int nh, int hd, float theta, int rope_type) {
    int ld = (nh + 1) * hd;
    size_t n = (size_t)B * T * ld;
    Pair x = input(n, 1.0f);
    LlamaConfig rc = {.dim = nh * hd, .n_heads = nh, .head_dim = hd, .rope_theta = theta};
    if (rope_type == ROPE_LLAMA3)
        rc.rope_type = ROPE_LLAMA3, rc.rope_factor = 8.0f, rc.rope_low_freq_factor = 1.0f,
        rc.rope_high_freq_factor = 4.0f, rc.rope_orig_max_pos = 32;
    float inv[256];
    rope_inv_freq(&rc, inv);
    size_t ib = sizeof(float) * (size_t)(hd / 2);
    float *ic = Cb->alloc(ib), *ig = G->alloc(ib);
    Cb->upload(ic, inv, ib);
    G->upload(ig, inv, ib);
    Cb->rope_fwd(x.c, ic, B, T, nh, hd, ld);
    G->rope_fwd(x.g, ig, B, T, nh, hd, ld);
    check(&x, 1e-2, "rope_fwd B %d T %d heads %d hd %d theta %g %s", B, T, nh, hd, theta,
          rope_type_name(rope_type));
    Cb->rope_bwd(x.c, ic, B, T, nh, hd, ld);
    G->rope_bwd(x.g, ig, B, T, nh, hd, ld);
    check(&x, 1e-2, "rope_bwd B %d T %d heads %d hd %d", B, T, nh, hd);
    Cb->free(ic);
    G->free(ig);
    float *back = xmalloc(4 * n);  // the backward undoes the forward (rotation transpose)
    G->download_f32(back, x.g, n);
    double e = t_rel_l2(back, x.host, n);
    T_CHECK(e <= 1e-2, "rope_bwd(rope_fwd(x)) != x: %.3g", e);
    free(back);
    pair_free(&x);
}

// The worst row of the GPU copy against the CPU copy: over rows of len
// elements, max |gpu - cpu| / max |cpu| in that row (rows whose max is below
// 1e-3 of the whole tensor's largest value are measured against that floor), so
// one bad row cannot hide in the global L2 error. Returns the error.
static double check_rows(const Pair *p, size_t len, double tol, const char *what) {
    float *g = xmalloc(4 * p->n), *c = xmalloc(4 * p->n);
    gpu_get(p, g);
    Cb->download(c, p->c, 4 * p->n);
    double gmax = 0.0, worst = 0.0;
    for (size_t i = 0; i < p->n; i++) gmax = fmax(gmax, fabs(c[i]));
    size_t worst_row = 0;
    for (size_t r = 0; r < p->n / len; r++) {
        double md = 0.0, mr = 1e-3 * gmax;
        for (size_t j = r * len; j < (r + 1) * len; j++) {
            double d = fabs((double)g[j] - c[j]);
            md = isnan(d) || isnan(md) ? NAN : fmax(md, d);
            mr = fmax(mr, fabs(c[j]));
        }
        double e = mr > 0 ? md / mr : md;
        if (!(e <= worst)) worst = e, worst_row = r;
    }
    T_CHECK(worst <= tol, "%s: worst row %zu: max abs error / row max %.3g (tolerance %.0e)", what,
            worst_row, worst, tol);
    printf("  %-58s %.2e (tol %.0e)\n", "(worst row)", worst, tol);
    free(g);
    free(c);
    return worst;
}

// q and k are N(0, qk^2): qk 1 gives scores q.k/sqrt(hd) of about N(0, 1), a
// flat softmax; qk 3 gives N(0, 81), a peaked one (a few keys take most of the
// weight, as in trained models). Every output is checked by its relative L2
// error and by its worst row (one (token, head) row of hd values). q, k, v (and
// dq, dk, dv) are laid out as the model passes them: column blocks of one
// [B*T, qd + 2 kvd] buffer (v too is N(0, qk^2) there).
static void test_attention(int B, int T, int nh, int nkv, int hd, float qk, const char *impl) {
    int qd = nh * hd, kvd = nkv * hd, ld = qd + 2 * kvd;
    size_t nq = (size_t)B * T * qd, nqkv = (size_t)B * T * ld, ec = 4, eg = G->act_bytes;
    Pair qkv = input(nqkv, qk), out = output(nq);
#define VIEW(p, side, e, col) ((char *)(p).side + (size_t)(col) * (e))
    void *sc = Cb->alloc(Cb->attn_state_bytes(B, T, nh)),
         *sg = G->alloc(G->attn_state_bytes(B, T, nh));
    Cb->attention_fwd(out.c, sc, qkv.c, VIEW(qkv, c, ec, qd), VIEW(qkv, c, ec, qd + kvd), ld, ld, B,
                      T, nh, nkv, hd);
    G->attention_fwd(out.g, sg, qkv.g, VIEW(qkv, g, eg, qd), VIEW(qkv, g, eg, qd + kvd), ld, ld, B,
                     T, nh, nkv, hd);
    char what[5][160];
    const char *names[5] = {"fwd out", "bwd dq|dk|dv", "", "", ""};
    for (int i = 0; i < 4; i++)
        snprintf(what[i], sizeof what[i], "attention %s %s B %d T %d nh %d nkv %d hd %d qk %g",
                 impl, names[i], B, T, nh, nkv, hd, qk);
    check(&out, 1e-2, "%s", what[0]);
    check_rows(&out, hd, 5e-2, what[0]);
    Pair dout = input(nq, 1.0f), dqkv = output(nqkv);  // every element of dqkv is written
    Cb->attention_bwd(dqkv.c, VIEW(dqkv, c, ec, qd), VIEW(dqkv, c, ec, qd + kvd), dout.c, sc, qkv.c,
                      VIEW(qkv, c, ec, qd), VIEW(qkv, c, ec, qd + kvd), ld, ld, B, T, nh, nkv, hd);
    G->attention_bwd(dqkv.g, VIEW(dqkv, g, eg, qd), VIEW(dqkv, g, eg, qd + kvd), dout.g, sg, qkv.g,
                     VIEW(qkv, g, eg, qd), VIEW(qkv, g, eg, qd + kvd), ld, ld, B, T, nh, nkv, hd);
#undef VIEW
    check(&dqkv, 1e-2, "%s", what[1]);
    check_rows(&dqkv, hd, 5e-2, what[1]);
    pair_free(&qkv), pair_free(&out), pair_free(&dout), pair_free(&dqkv);
    Cb->free(sc), G->free(sg);
}

// SwiGLU on N rows of the fused gate|up buffer [N, 2F].
static void test_elementwise(int N, int F) {
    size_t n = (size_t)N * F;
    Pair gu = input(2 * n, 2.0f), out = output(n);
    Cb->swiglu_fwd(out.c, gu.c, N, F);
    G->swiglu_fwd(out.g, gu.g, N, F);
    check(&out, 1e-2, "swiglu_fwd N %d F %d", N, F);
    Pair dout = input(n, 1.0f), dgu = output(2 * n);
    Cb->swiglu_bwd(dgu.c, dout.c, gu.c, N, F);
    G->swiglu_bwd(dgu.g, dout.g, gu.g, N, F);
    check(&dgu, 1e-2, "swiglu_bwd dgate|dup N %d F %d", N, F);
    pair_free(&gu), pair_free(&out), pair_free(&dout), pair_free(&dgu);
}

// Targets: random, with about one in five ignored (-1).
static int *random_targets(int BT, int V) {
    int *t = xmalloc(sizeof(int) * BT);
    for (int i = 0; i < BT; i++) t[i] = rng_u64(&rng) % 5 == 0 ? -1 : (int)(rng_u64(&rng) % V);
    return t;
}

static void test_crossentropy(int BT, int V) {
    int *tgt = random_targets(BT, V);
    void *tc, *tg;
    ints(tgt, BT, &tc, &tg);
    Pair lg = input((size_t)BT * V, 3.0f), loss = pair(BT, 1, 0.0f, 1);
    Cb->crossentropy_fwd(loss.c, lg.c, tc, BT, V);
    G->crossentropy_fwd(loss.g, lg.g, tg, BT, V);
    check(&loss, 1e-4, "crossentropy_fwd losses (fp32) BT %d V %d", BT, V);
    float scale = 1.0f / BT;
    Cb->crossentropy_bwd(lg.c, tc, BT, V, scale);
    G->crossentropy_bwd(lg.g, tg, BT, V, scale);
    check(&lg, 1e-2, "crossentropy_bwd dlogits BT %d V %d", BT, V);
    pair_free(&lg), pair_free(&loss);
    Cb->free(tc), G->free(tg);
    free(tgt);
}

// The fused classifier against the CPU's unfused ops (matmul + cross-entropy):
// the losses alone, then the losses and the gradients of one call (training).
static void test_classifier(int BT, int C, int V) {
    if (!G->classifier_fwd) return;
    int *tgt = random_targets(BT, V);
    void *tc, *tg;
    ints(tgt, BT, &tc, &tg);
    Pair x = input((size_t)BT * C, 1.0f), W = input((size_t)V * C, 0.3f);
    Pair loss = pair(BT, 1, 0.0f, 1), loss2 = pair(BT, 1, 0.0f, 1), dx = output((size_t)BT * C);
    Pair dW = pair((size_t)V * C, 1, 0.01f, 0);
    float *logits = Cb->alloc(4 * (size_t)BT * V);
    Cb->matmul_fwd(logits, x.c, W.c, BT, C, V, NULL);
    Cb->crossentropy_fwd(loss.c, logits, tc, BT, V);
    G->classifier_fwd(loss.g, NULL, NULL, x.g, W.g, tg, BT, C, V, 0.0f);
    // fp32 losses, but from bf16-rounded GPU logits (the CPU's are fp32): bf16 tolerance
    check(&loss, 1e-2, "classifier_fwd losses BT %d C %d V %d", BT, C, V);
    float scale = 1.0f / BT;
    Cb->crossentropy_bwd(logits, tc, BT, V, scale);
    Cb->matmul_bwd(dx.c, dW.c, logits, x.c, W.c, BT, C, V, 0);
    G->classifier_fwd(loss2.g, dx.g, dW.g, x.g, W.g, tg, BT, C, V, scale);
    check(&dx, 1e-2, "classifier_fwd with gradients: dlnf (=) BT %d C %d V %d", BT, C, V);
    check(&dW, 1e-2, "classifier_fwd with gradients: dWhead (fp32 +=) BT %d C %d V %d", BT, C, V);
    float *l1 = xmalloc(4 * (size_t)BT), *l2 = xmalloc(4 * (size_t)BT);
    G->download(l1, loss.g, 4 * (size_t)BT);
    G->download(l2, loss2.g, 4 * (size_t)BT);
    T_CHECK(!memcmp(l1, l2, 4 * (size_t)BT),
            "classifier_fwd: the losses differ with and without gradients (BT %d V %d)", BT, V);
    free(l1), free(l2);
    Cb->free(logits);
    pair_free(&x), pair_free(&W), pair_free(&loss), pair_free(&loss2), pair_free(&dx),
        pair_free(&dW);
    Cb->free(tc), G->free(tg);
    free(tgt);
}

static void test_sumsq(size_t n) {
    Pair x = pair(n, 1, 2.0f, 0);  // sumsq is over fp32 buffers (the gradients)
    double c = Cb->sumsq(x.c, n), g = G->sumsq(x.g, n);
    double e = fabs(g - c) / c;  // identical fp32 values, fp64 sums: only the order differs
    T_CHECK(e <= 1e-10, "sumsq n %zu: %.17g vs %.17g", n, g, c);
    printf("  %-58s %.2e (tol 1e-10)\n", "sumsq", e);
    pair_free(&x);
}

// scaled: a per-element learning-rate multiplier in [0, 3) (0 for every 7th element).
static void test_adamw(size_t n, int scaled) {
    Pair master = pair(n, 1, 0.0f, 0), m = pair(n, 1, 0.0f, 0), v = pair(n, 1, 0.0f, 0);
    Pair params = output(n);
    float *h = xmalloc(4 * n);  // the same start on both: masters ~N(0, 0.1), params = bf16(master)
    for (size_t i = 0; i < n; i++) h[i] = t_bf16(0.1f * rng_normal(&rng));
    Cb->upload(master.c, h, 4 * n), G->upload(master.g, h, 4 * n);
    Pair sc = pair(n, 1, 0.0f, 0);
    if (scaled) {
        for (size_t i = 0; i < n; i++) h[i] = i % 7 ? 3.0f * (float)(i % 11) / 11.0f : 0.0f;
        Cb->upload(sc.c, h, 4 * n), G->upload(sc.g, h, 4 * n);
    }
    for (int t = 1; t <= 3; t++) {
        Pair grad = pair(n, 1, 1e-2f, 0);  // fp32 gradients
        Cb->adamw(master.c, master.c, grad.c, m.c, v.c, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, t,
                  scaled ? sc.c : NULL);
        G->adamw(master.g, params.g, grad.g, m.g, v.g, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, t,
                 scaled ? sc.g : NULL);
        pair_free(&grad);
    }
    pair_free(&sc);
    check(&master, 1e-6, "adamw%s master (fp32) n %zu, 3 steps", scaled ? " lr_scale" : "", n);
    check(&m, 1e-6, "adamw m (fp32) n %zu", n);
    check(&v, 1e-6, "adamw v (fp32) n %zu", n);
    float *pg = xmalloc(4 * n);
    G->download(h, master.g, 4 * n);
    G->download_f32(pg, params.g, n);
    int same = 1;
    for (size_t i = 0; i < n; i++) same &= pg[i] == t_bf16(h[i]);
    T_CHECK(same, "adamw: params == bf16(master) for every element");
    free(pg);
    free(h);
    pair_free(&master), pair_free(&m), pair_free(&v), pair_free(&params);
}

// The PostShare regularizer op: every divergence, with its value, per-pair
// statistics and gradients, on strided slices of one flat buffer; the last two
// pairs share their source slice (as several replaced units can).
static void test_share_reg(void) {
    if (!G->share_reg || !Cb->share_reg) return;
    size_t n = 1200;
    ParamSlice a[3] = {{0, 8, 16, 40}, {400, 1, 128, 128}, {1000, 16, 8, 9}};
    ParamSlice b[3] = {{20, 8, 16, 40}, {600, 4, 32, 50}, {600, 4, 32, 50}};
    Pair p = input(n, 0.5f);
    const char *names[] = {"l2", "mse", "kl", "js", "kl2"};
    for (int type = 0; type < 5; type++) {
        Pair g = pair(n, 1, 0.01f, 0);  // fp32 gradients accumulate (+=) into random values
        double sc[12], sg[12];
        double rc = Cb->share_reg(g.c, p.c, a, b, 3, type, 0.7f, sc);
        double rg = G->share_reg(g.g, p.g, a, b, 3, type, 0.7f, sg);
        double rn = G->share_reg(NULL, p.g, a, b, 3, type, 0.7f, NULL);  // value only
        double e = fabs(rg - rc) / fabs(rc), es = t_rel_l2_d(sg, sc, 12);
        T_CHECK(e <= 1e-9 && rn == rg, "share_reg %s: %.17g (value only %.17g) vs CPU %.17g",
                names[type], rg, rn, rc);
        T_CHECK(es <= 1e-9, "share_reg %s: pair statistics rel err %.3g", names[type], es);
        printf("  %-58s %.2e (tol 1e-9)\n", names[type], e);
        check(&g, 1e-5, "share_reg %s gradients (fp32 +=)", names[type]);
        pair_free(&g);
    }
    pair_free(&p);
}

int main(int argc, char **argv) {
    g_argc = argc, g_argv = argv;
    for (int i = 1; i < argc; i++) {  // a misspelt group must not pass by running nothing
        int known = 0;
        for (size_t k = 0; k < sizeof GROUPS / sizeof GROUPS[0]; k++)
            known |= !strcmp(argv[i], GROUPS[k]);
        if (!known) {
            fprintf(stderr, "test_gpu_ops: unknown group '%s' (see want() in %s)\n", argv[i],
                    __FILE__);
            return 2;
        }
    }
    Cb = backend_cpu();
    test_copy2d_contract(Cb);  // needs no GPU: runs everywhere
    G = gpu_or_skip();
    if (!G) return t_summary();
    test_copy2d_contract(G);
    rng_seed(&rng, gpu_test_seed());
    quick = gpu_test_quick();

    if (want("memory")) {
        test_memory();
    }
    if (want("embedding")) {
        printf("embedding\n");
        test_embedding(7, 17, 5);
        test_embedding(300, 130, 7);  // many repeats of each token
        if (!quick) test_embedding(2048, 256, 1000);
    }
    if (want("rmsnorm")) {
        printf("rmsnorm\n");
        test_rmsnorm(1, 7);
        test_rmsnorm(33, 96);
        if (!quick) test_rmsnorm(1000, 1000);
    }
    if (want("matmul")) {
        printf("matmul\n");
        test_matmul(3, 5, 7);
        test_matmul(64, 128, 96);
        if (!quick) test_matmul(257, 300, 129), test_matmul(512, 512, 1024);
    }
    if (want("rope")) {
        printf("rope\n");
        test_rope(2, 5, 3, 8, 10000.0f, ROPE_DEFAULT);
        test_rope(1, 67, 4, 64, 10000.0f, ROPE_DEFAULT);
        test_rope(1, 67, 4, 64, 500000.0f, ROPE_LLAMA3);
        if (!quick) test_rope(2, 130, 2, 128, 500000.0f, ROPE_DEFAULT);
    }
    if (want("attention")) {
        printf("attention\n");
        // (B, T, nh, nkv, hd, qk scale): single row, GQA, MQA, tiles partly filled, hd not a
        // multiple of 16; peaked softmax (qk 3); the 1b preset's heads (32/4, hd 64) at T
        // 1024; T 2048 at hd 128; hd 160 and 256, which flash cannot run (the naive fallback)
        float shapes[][6] = {
            {1, 1, 1, 1, 8, 1},      {2, 5, 4, 2, 8, 1},      {2, 67, 6, 2, 16, 3},
            {2, 64, 2, 2, 20, 1},    {1, 33, 2, 1, 160, 3},   {1, 130, 4, 4, 64, 1},
            {1, 129, 2, 1, 72, 3},   {1, 200, 8, 1, 128, 1},  {1, 1024, 32, 4, 64, 1},
            {1, 1024, 32, 4, 64, 3}, {1, 2048, 4, 1, 128, 3}, {2, 300, 4, 2, 256, 1}};
        int nshapes = quick ? 5 : (int)(sizeof shapes / sizeof shapes[0]);
        const char *impl_names[2] = {"flash", "naive"};
        for (int impl = 0; impl < 2; impl++) {  // both implementations (cuda_backend.h)
#ifdef PS_HAVE_CUDA
            cuda_set_attention_impl(impl == 0 ? CUDA_ATTN_FLASH : CUDA_ATTN_NAIVE);
#endif
            for (int s = 0; s < nshapes; s++) {
                float *x = shapes[s];
                // the naive kernels at the largest shapes only add minutes
                if (impl == 1 && x[1] * x[2] >= 8192) continue;
                test_attention((int)x[0], (int)x[1], (int)x[2], (int)x[3], (int)x[4], x[5],
                               impl_names[impl]);
            }
        }
#ifdef PS_HAVE_CUDA
        cuda_set_attention_impl(CUDA_ATTN_FLASH);
#endif
    }
    if (want("elementwise")) {
        printf("swiglu\n");
        test_elementwise(1, 1);
        test_elementwise(7, 143);
        if (!quick) test_elementwise(129, 508);
    }
    if (want("crossentropy")) {
        printf("cross-entropy\n");
        test_crossentropy(5, 7);
        test_crossentropy(64, 1000);
        if (!quick) test_crossentropy(33, 32000);
    }
    if (want("classifier")) {
        printf("fused classifier\n");
        test_classifier(37, 48, 97);
        if (!quick) test_classifier(300, 64, 1000);
        // more than one chunk of logits (64M per chunk): each adds into the fp32 head gradient
        if (!quick) test_classifier(2100, 64, 32000);
    }
    if (want("share_reg")) {
        printf("PostShare regularizer\n");
        test_share_reg();
    }
    if (want("optimizer")) {
        printf("optimizer\n");
        test_sumsq(1);
        test_sumsq(1000);
        if (!quick) test_sumsq(3000001);
        test_adamw(1001, 0);
        test_adamw(1001, 1);
        if (!quick) test_adamw(300000, 1);
    }
    return t_summary();
}
