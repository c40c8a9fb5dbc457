// test_gpu_model.c: one full training step of the model on the CUDA backend
// against the CPU reference, and bitwise determinism of the GPU run.
//
// For each case (GQA untied, MHA tied, a head dim of 64 over several attention
// tiles) both backends start from the same bf16-exact weights and batch:
//   - loss within 5e-3 (relative), every parameter gradient within 3e-2 and
//     the logits of a forward without targets within 1e-2 (||gpu-cpu||/||cpu||;
//     bf16 activations and weights on the GPU, fp32 on the CPU);
//   - the optimizer step on the GPU against the CPU's AdamW given the GPU's own
//     gradients: fp32 master weights within 1e-6, bf16 params == bf16(master);
//   - gradient accumulation over 2 and 3 micro-batches: every gradient within 3e-2;
//   - two GPU runs of three steps (forward, backward, clip, AdamW; the last step
//     accumulates two micro-batches) from the same state give bitwise identical
//     params, gradients, masters and losses, also at one layer of the 1b preset
//     at T 1024;
//   - activation recomputation (model_set_recompute), and model_forward_grad
//     (the classifier's gradients written by the forward), give bitwise the
//     same loss and gradients, and model_pad keeps the parameters, on the GPU
//     and (these checks need no GPU, so they run everywhere) on the CPU.
// Skips the GPU checks (exit 0) without a GPU.
#include <math.h>
#include <string.h>

#include "model.h"
#include "optim.h"
#include "test_gpu.h"

static const Backend *G, *Cb;

typedef struct {
    const char *name;
    LlamaConfig cfg;
    int B, T;
} Case;

// Random weights (matrices N(0, 0.1), norms 1 + N(0, 0.1)), rounded to bf16.
static float *case_params(const ParamTable *t, uint64_t seed) {
    float *p = xmalloc(sizeof(float) * t->total);
    param_init_random(t, p, seed, 0.1f);
    Rng r;
    rng_seed(&r, seed + 1);
    for (int i = 0; i < t->n; i++)
        if (t->e[i].ndim == 1)
            for (size_t j = 0; j < t->e[i].numel; j++)
                p[t->e[i].offset + j] = 1.0f + 0.1f * rng_normal(&r);
    for (size_t i = 0; i < t->total; i++) p[i] = t_bf16(p[i]);
    return p;
}

// Random tokens and targets; two targets ignored.
static void case_batch(uint64_t seed, int BT, int V, int *tok, int *tgt) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < BT; i++) {
        tok[i] = (int)(rng_u64(&r) % V);
        tgt[i] = (int)(rng_u64(&r) % V);
    }
    tgt[0] = -100;
    tgt[BT - 1] = -1;
}

static const OptimConfig OPT = {.lr = 1e-3f,
                                .min_lr = 1e-4f,
                                .warmup = 0,
                                .total_steps = 10,
                                .beta1 = 0.9f,
                                .beta2 = 0.95f,
                                .eps = 1e-8f,
                                .weight_decay = 0.1f,
                                .clip = 1.0f};

// Forward and backward of the mean loss; the host gradients into g.
static float loss_and_grads(Model *M, const int *tok, const int *tgt, int B, int T, float *g) {
    model_zero_grads(M);
    float loss = model_forward(M, tok, tgt, B, T);
    model_backward(M, 1.0f / M->n_valid);
    model_get_grads(M, g);
    return loss;
}

// Gradient accumulation over `accum` micro-batches (train.c's scaling: each
// backward adds the gradient of its mean loss / accum) on both backends, from
// the same weights and batches: every parameter gradient within 3e-2.
static void check_accum(const Case *c, int accum, uint64_t seed) {
    Model Mc, Mg;
    model_init(&Mc, Cb, &c->cfg);
    model_init(&Mg, G, &c->cfg);
    size_t n = Mc.t.total;
    int BT = c->B * c->T;
    float *p = case_params(&Mc.t, seed);
    model_set_params(&Mc, p);
    model_set_params(&Mg, p);
    int *tok = xmalloc(sizeof(int) * BT), *tgt = xmalloc(sizeof(int) * BT);
    float *gc = xmalloc(sizeof(float) * n), *gg = xmalloc(sizeof(float) * n);
    Model *Ms[2] = {&Mc, &Mg};
    float *gs[2] = {gc, gg};
    for (int b = 0; b < 2; b++) {
        model_zero_grads(Ms[b]);
        for (int m = 0; m < accum; m++) {
            case_batch(seed + 20 + m, BT, c->cfg.vocab_size, tok, tgt);
            model_forward(Ms[b], tok, tgt, c->B, c->T);
            model_backward(Ms[b], 1.0f / ((float)Ms[b]->n_valid * accum));
        }
        model_get_grads(Ms[b], gs[b]);
    }
    double worst = 0.0;
    for (int i = 0; i < Mc.t.n; i++) {
        const ParamEntry *e = &Mc.t.e[i];
        double eg = t_rel_l2(gg + e->offset, gc + e->offset, e->numel);
        T_CHECK(eg <= 3e-2, "%s, %d micro-batches: gradient of %s: rel L2 err %.3g", c->name, accum,
                e->name, eg);
        if (!(eg <= worst)) worst = eg;
    }
    printf("%s: %d accumulated micro-batches: worst gradient rel err %.2e (tol 3e-2)\n", c->name,
           accum, worst);
    model_free(&Mc);
    model_free(&Mg);
    free(p), free(tok), free(tgt), free(gc), free(gg);
}

static void check_step(const Case *c, uint64_t seed) {
    printf("%s: B %d T %d, C %d L %d heads %d/%d F %d V %d, %s\n", c->name, c->B, c->T, c->cfg.dim,
           c->cfg.n_layers, c->cfg.n_heads, c->cfg.n_kv_heads, c->cfg.ffn_dim, c->cfg.vocab_size,
           c->cfg.tie_embeddings ? "tied" : "untied");
    Model Mc, Mg;
    model_init(&Mc, Cb, &c->cfg);
    model_init(&Mg, G, &c->cfg);
    size_t n = Mc.t.total;
    int BT = c->B * c->T, V = c->cfg.vocab_size;
    float *p = case_params(&Mc.t, seed);
    model_set_params(&Mc, p);
    model_set_params(&Mg, p);
    int *tok = xmalloc(sizeof(int) * BT), *tgt = xmalloc(sizeof(int) * BT);
    case_batch(seed + 2, BT, V, tok, tgt);

    float *gc = xmalloc(sizeof(float) * n), *gg = xmalloc(sizeof(float) * n);
    float lc = loss_and_grads(&Mc, tok, tgt, c->B, c->T, gc);
    float lg = loss_and_grads(&Mg, tok, tgt, c->B, c->T, gg);
    double el = fabs((double)lg - lc) / fabs(lc);
    T_CHECK(el <= 5e-3, "%s: loss %.6f vs CPU %.6f (rel %.2e)", c->name, lg, lc, el);
    printf("  loss %.6f (CPU %.6f), rel err %.2e (tol 5e-3)\n", lg, lc, el);
    double worst = 0.0;
    for (int i = 0; i < Mc.t.n; i++) {
        const ParamEntry *e = &Mc.t.e[i];
        double eg = t_rel_l2(gg + e->offset, gc + e->offset, e->numel);
        T_CHECK(eg <= 3e-2, "%s: gradient of %s: rel L2 err %.3g", c->name, e->name, eg);
        if (!(eg <= worst)) worst = eg;
        printf("  grad %-48s %.2e\n", e->name, eg);
    }
    printf("  worst gradient rel err %.2e (tol 3e-2)\n", worst);

    // logits of a forward without targets (the fused classifier only runs with targets)
    size_t nl = (size_t)BT * V;
    float *Lc = xmalloc(sizeof(float) * nl), *Lg = xmalloc(sizeof(float) * nl);
    model_forward(&Mc, tok, NULL, c->B, c->T);
    model_forward(&Mg, tok, NULL, c->B, c->T);
    model_get_logits(&Mc, Lc);
    model_get_logits(&Mg, Lg);
    double elog = t_rel_l2(Lg, Lc, nl);
    T_CHECK(elog <= 1e-2, "%s: logits rel err %.3g", c->name, elog);
    printf("  logits rel err %.2e (tol 1e-2)\n", elog);

    // AdamW on the GPU vs the CPU's AdamW given the same weights and the GPU's gradients.
    Model Mr;
    model_init(&Mr, Cb, &c->cfg);
    model_set_params(&Mr, p);
    Cb->upload(Mr.grads, gg, sizeof(float) * n);  // fp32 compute type: raw bytes
    Optim og, orf;
    optim_init(&og, &Mg, &OPT);
    optim_init(&orf, &Mr, &OPT);
    float ng = optim_grad_norm(&Mg), nr = optim_grad_norm(&Mr);
    T_CHECK(fabsf(ng - nr) <= 1e-6f * nr, "%s: grad norm %.9g vs CPU on the same grads %.9g",
            c->name, ng, nr);
    optim_step(&og, &Mg, 0, ng);
    optim_step(&orf, &Mr, 0, ng);
    float *mg = xmalloc(sizeof(float) * n), *mr = xmalloc(sizeof(float) * n);
    optim_get_state(&og, mg, NULL, NULL);
    optim_get_state(&orf, mr, NULL, NULL);
    double em = t_rel_l2(mg, mr, n);
    T_CHECK(em <= 1e-6, "%s: AdamW master weights rel err %.3g", c->name, em);
    model_get_params(&Mg, p);
    int same = 1;
    for (size_t i = 0; i < n; i++) same &= p[i] == t_bf16(mg[i]);
    T_CHECK(same, "%s: GPU params after AdamW are bf16(master)", c->name);
    printf("  AdamW masters vs CPU AdamW on the GPU's gradients: rel err %.2e (tol 1e-6)\n", em);

    optim_free(&og);
    optim_free(&orf);
    model_free(&Mr);
    model_free(&Mc);
    model_free(&Mg);
    free(p), free(tok), free(tgt), free(gc), free(gg), free(Lc), free(Lg), free(mg), free(mr);
}

// A model of case c on backend be with case_params(seed).
static void case_model(Model *M, const Backend *be, const Case *c, uint64_t seed) {
    model_init(M, be, &c->cfg);
    float *p = case_params(&M->t, seed);
    model_set_params(M, p);
    free(p);
}

// Activation recomputation gives bitwise the same loss and gradients on
// backend be (it recomputes each layer with the same ops on the same inputs).
static void check_recompute(const Backend *be, const Case *c, uint64_t seed) {
    Model M;
    case_model(&M, be, c, seed);
    size_t n = M.t.total;
    int BT = c->B * c->T;
    int *tok = xmalloc(sizeof(int) * BT), *tgt = xmalloc(sizeof(int) * BT);
    case_batch(seed + 3, BT, c->cfg.vocab_size, tok, tgt);
    float *g0 = xmalloc(sizeof(float) * n), *g1 = xmalloc(sizeof(float) * n);
    float l0 = loss_and_grads(&M, tok, tgt, c->B, c->T, g0);
    model_set_recompute(&M, 1);
    float l1 = loss_and_grads(&M, tok, tgt, c->B, c->T, g1);
    int same = l0 == l1 && !memcmp(g0, g1, sizeof(float) * n);
    T_CHECK(same, "%s on %s: recomputation changed the loss (%.9g vs %.9g) or the gradients",
            c->name, be->name, l0, l1);
    printf("%s on %s: activation recomputation gives %s loss and gradients\n", c->name, be->name,
           same ? "bitwise the same" : "DIFFERENT");
    model_free(&M);
    free(tok), free(tgt), free(g0), free(g1);
}

// model_forward_grad (the classifier's gradients written by the forward, as
// training runs) gives bitwise the same loss and gradients as model_forward +
// model_backward (which computes them in the backward: again from the logits on
// a backend with a fused classifier), over two accumulated micro-batches.
static void check_forward_grad(const Backend *be, const Case *c, uint64_t seed) {
    Model M;
    case_model(&M, be, c, seed);
    size_t n = M.t.total;
    int BT = c->B * c->T;
    int *tok = xmalloc(sizeof(int) * BT), *tgt = xmalloc(sizeof(int) * BT);
    float *g[2] = {xmalloc(sizeof(float) * n), xmalloc(sizeof(float) * n)}, l[2][2];
    for (int way = 0; way < 2; way++) {
        model_zero_grads(&M);
        for (int m = 0; m < 2; m++) {
            case_batch(seed + 30 + m, BT, c->cfg.vocab_size, tok, tgt);
            float scale = 1.0f / ((float)model_count_targets(tgt, BT) * 2);
            l[way][m] = way ? model_forward_grad(&M, tok, tgt, c->B, c->T, scale)
                            : model_forward(&M, tok, tgt, c->B, c->T);
            model_backward(&M, scale);
        }
        model_get_grads(&M, g[way]);
    }
    int same = !memcmp(l[0], l[1], sizeof l[0]) && !memcmp(g[0], g[1], sizeof(float) * n);
    T_CHECK(same, "%s on %s: model_forward_grad changed the losses or the gradients", c->name,
            be->name);
    printf("%s on %s: model_forward_grad vs model_forward + model_backward: %s\n", c->name,
           be->name, same ? "bitwise the same" : "DIFFERENT");
    model_free(&M);
    free(tok), free(tgt), free(g[0]), free(g[1]);
}

// model_pad (ZeRO-1's equal shards) keeps every parameter, zeroes the padding
// and the gradients. It copies the whole buffer as one row of copy2d (whose
// pitch is the buffer: the case CUDA's cudaMemcpy2D rejects above 2^31 bytes).
static void check_pad(const Backend *be, const Case *c, uint64_t seed) {
    Model M;
    model_init(&M, be, &c->cfg);
    size_t n = M.t.total, np = n + 61;
    float *p = case_params(&M.t, seed), *back = xmalloc(sizeof(float) * np);
    model_set_params(&M, p);
    model_pad(&M, np);
    be->download_f32(back, M.params, np);
    int ok = M.n_alloc == np && !memcmp(back, p, sizeof(float) * n);
    for (size_t i = n; i < np; i++) ok &= back[i] == 0.0f;
    be->download(back, M.grads, sizeof(float) * np);
    for (size_t i = 0; i < np; i++) ok &= back[i] == 0.0f;
    T_CHECK(ok, "%s on %s: model_pad lost parameters or left non-zero padding/gradients", c->name,
            be->name);
    printf("%s on %s: model_pad %zu -> %zu elements: %s\n", c->name, be->name, n, np,
           ok ? "parameters kept, padding and gradients 0" : "WRONG");
    model_free(&M);
    free(p), free(back);
}

// Three training steps on the GPU (the last with two accumulated micro-batches);
// returns an FNV-1a hash of the raw bytes of params, grads, master weights, m,
// v and the losses.
static uint64_t gpu_run(const Case *c, uint64_t seed) {
    Model M;
    model_init(&M, G, &c->cfg);
    size_t n = M.t.total, e = G->act_bytes;
    int BT = c->B * c->T;
    float *p = case_params(&M.t, seed);
    model_set_params(&M, p);
    Optim o;
    optim_init(&o, &M, &OPT);
    int *tok = xmalloc(sizeof(int) * BT), *tgt = xmalloc(sizeof(int) * BT);
    const int steps = 3;
    float losses[4];
    int nl = 0;
    for (int s = 0; s < steps; s++) {
        int accum = s == steps - 1 ? 2 : 1;
        model_zero_grads(&M);
        for (int m = 0; m < accum; m++) {
            case_batch(seed + 10 + 2 * s + m, BT, c->cfg.vocab_size, tok, tgt);
            losses[nl++] = model_forward(&M, tok, tgt, c->B, c->T);
            model_backward(&M, 1.0f / ((float)M.n_valid * accum));
        }
        optim_step(&o, &M, s, optim_grad_norm(&M));
    }
    size_t bytes = n * e > n * 4 ? n * e : n * 4;  // the largest of the buffers hashed
    float *buf = xcalloc(bytes + 3, 1);
    uint64_t h = ps_fnv1a64(PS_FNV1A64_BASIS, losses, (size_t)nl);
    G->download(buf, M.params, n * e);
    h = ps_fnv1a64(h, buf, (n * e + 3) / 4);
    G->download(buf, M.grads, n * 4);  // fp32
    h = ps_fnv1a64(h, buf, n);
    for (int k = 0; k < 3; k++) {
        optim_get_state(&o, k == 0 ? buf : NULL, k == 1 ? buf : NULL, k == 2 ? buf : NULL);
        h = ps_fnv1a64(h, buf, n);
    }
    optim_free(&o);
    model_free(&M);
    free(p), free(tok), free(tgt), free(buf);
    return h;
}

static void check_determinism(const Case *c, uint64_t seed) {
    uint64_t a = gpu_run(c, seed), b = gpu_run(c, seed);
    T_CHECK(a == b, "%s: two GPU runs of 3 steps differ (params, grads, optimizer state or losses)",
            c->name);
    printf("%s: two GPU runs of 3 steps (B %d T %d): %s (hashes %016llx %016llx)\n", c->name, c->B,
           c->T, a == b ? "bitwise identical" : "DIFFERENT", (unsigned long long)a,
           (unsigned long long)b);
}

int main(void) {
    // dim, layers, heads, kv heads, ffn, vocab, max_seq_len, theta, eps, tied, then
    // head_dim and RoPE scaling off (params.h); B, T
    Case cases[] = {
        {"gqa_untied",
         {48, 2, 6, 2, 80, 97, 64, 10000.0f, 1e-5f, 0, 0, 0, 0.0f, 0.0f, 0.0f, 0},
         3,
         37},
        {"mha_tied",
         {64, 2, 4, 4, 128, 300, 64, 10000.0f, 1e-6f, 1, 0, 0, 0.0f, 0.0f, 0.0f, 0},
         2,
         29},
        {"hd64_tiles",
         {256, 2, 4, 2, 512, 512, 256, 500000.0f, 1e-5f, 0, 0, 0, 0.0f, 0.0f, 0.0f, 0},
         2,
         130},
        // One layer of the 1b preset (bench_gpu.c) at T 1024, for determinism at a real
        // shape (cuBLASLt picks its algorithms for these sizes; many attention tiles).
        {"1b_layer",
         {2048, 1, 32, 4, 5632, 32000, 1024, 10000.0f, 1e-5f, 0, 0, 0, 0.0f, 0.0f, 0.0f, 0},
         1,
         1024},
    };
    Cb = backend_cpu();
    check_recompute(Cb, &cases[0], 5);  // needs no GPU: runs everywhere
    check_pad(Cb, &cases[0], 6);
    check_forward_grad(Cb, &cases[1], 8);
    G = gpu_or_skip();
    if (!G) return t_summary();
    check_pad(G, &cases[0], 6);
    check_forward_grad(G, &cases[1], 8);
    uint64_t seed = gpu_test_seed();
    int ncases = gpu_test_quick() ? 1 : 3;  // the 1b layer only for determinism
    for (int i = 0; i < ncases; i++) check_step(&cases[i], seed + 100 * i);
    check_accum(&cases[0], 3, seed + 11);
    if (!gpu_test_quick()) check_accum(&cases[ncases - 1], 2, seed + 13);
    check_determinism(&cases[ncases - 1], seed + 7);
    if (!gpu_test_quick()) check_determinism(&cases[3], seed + 17);
    check_recompute(G, &cases[ncases - 1], seed + 9);
    return t_summary();
}
