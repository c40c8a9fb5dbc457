// test_optim.c: the optimizer (trainer/optim.c) and the training step as
// trainer/train.c runs it.
//
//   fixture   K AdamW steps with gradient accumulation and clipping on the
//             tests/fixtures/mha_untied model against torch.optim.AdamW in
//             float64 (tests/make_adamw_fixture.py writes
//             tests/fixtures/adamw/reference.safetensors): per-step loss, grad
//             norm and lr, and every final parameter tensor.
//   schedule  optim_lr at its landmarks (warmup start/end, cosine midpoint, end).
//   decay     weight decay is decoupled and skips norm weights.
//   clipping  a clipped step equals an unclipped step on the pre-scaled gradient.
//   accum     two micro-batches of one sequence == one batch of two.
//   shards    two half-range optimizers == one full-range one, bitwise (ZeRO-1).
#include <math.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "hf_io.h"
#include "model.h"
#include "optim.h"
#include "safetensors.h"
#include "test.h"
#include "test_ref.h"

// Must match tests/make_adamw_fixture.py.
#define FIX_K 4
#define FIX_ACCUM 2
static const OptimConfig FIX_CFG = {.lr = 1e-2f,
                                    .min_lr = 1e-3f,
                                    .warmup = 2,
                                    .total_steps = 4,
                                    .beta1 = 0.9f,
                                    .beta2 = 0.95f,
                                    .eps = 1e-8f,
                                    .weight_decay = 0.1f,
                                    .clip = 3.0f};

// max|a - ref| / max|ref| (NaN counts as a failure).
// The mha_untied fixture model and its reference batch [B,T].
typedef struct {
    HostWeights w;
    int B, T;
    int *tok, *tgt;
} Case;

static void case_load(Case *c) {
    char dir[4096], refpath[4200];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/mha_untied", PS_SOURCE_DIR);
    snprintf(refpath, sizeof refpath, "%s/reference.safetensors", dir);
    CHECK(hf_load(dir, &c->w) == 0, "%s", ps_err_msg());
    StFile rf;
    CHECK(st_open(refpath, &rf) == 0, "%s", ps_err_msg());
    const StTensor *tt = st_find(&rf, "tokens");
    CHECK(tt && tt->ndim == 2, "%s: tokens [B,T] missing", refpath);
    c->B = (int)tt->shape[0];
    c->T = (int)tt->shape[1];
    c->tok = xmalloc(sizeof(int) * c->B * c->T);
    c->tgt = xmalloc(sizeof(int) * c->B * c->T);
    CHECK(st_read_i32(&rf, tt, c->tok) == 0, "%s", ps_err_msg());
    CHECK(st_read_i32(&rf, st_find(&rf, "targets"), c->tgt) == 0, "%s", ps_err_msg());
    st_close(&rf);
}

static void case_free(Case *c) {
    free(c->tok);
    free(c->tgt);
    host_weights_free(&c->w);
}

static void model_from_case(Model *M, const Case *c) {
    model_init(M, backend_cpu(), &c->w.t.cfg);
    model_set_params(M, c->w.params);
}

// One optimizer step exactly as trainer/train.c takes it: the batch [B,T] is
// split into `accum` micro-batches of B/accum sequences, each contributing its
// mean loss / accum to the gradient. Returns the mean micro-batch loss.
static float train_step(Model *M, Optim *o, const int *tok, const int *tgt, int B, int T, int accum,
                        int step, float *gnorm_out, float *lr_out) {
    int mb = B / accum;
    model_zero_grads(M);
    double loss_sum = 0.0;
    for (int micro = 0; micro < accum; micro++) {
        size_t off = (size_t)micro * mb * T;
        float loss = model_forward(M, tok + off, tgt + off, mb, T);
        if (M->n_valid > 0) model_backward(M, 1.0f / ((float)M->n_valid * accum));
        loss_sum += loss;
    }
    float gnorm = optim_grad_norm(M);
    float lr = optim_step(o, M, step, gnorm);
    if (gnorm_out) *gnorm_out = gnorm;
    if (lr_out) *lr_out = lr;
    return (float)(loss_sum / accum);
}

// ---- a. the torch AdamW reference ----

static void test_fixture(const Case *c) {
    char refpath[4200];
    snprintf(refpath, sizeof refpath, "%s/tests/fixtures/adamw/reference.safetensors",
             PS_SOURCE_DIR);
    StFile rf;
    CHECK(st_open(refpath, &rf) == 0, "%s", ps_err_msg());
    float *rloss = t_read_ref(&rf, "loss", FIX_K);
    float *rnorm = t_read_ref(&rf, "grad_norm", FIX_K);
    float *rlr = t_read_ref(&rf, "lr", FIX_K);

    Model M;
    model_from_case(&M, c);
    Optim o;
    optim_init(&o, &M, &FIX_CFG);
    int clipped = 0;
    for (int s = 0; s < FIX_K; s++) {
        float gnorm, lr;
        float loss = train_step(&M, &o, c->tok, c->tgt, c->B, c->T, FIX_ACCUM, s, &gnorm, &lr);
        double el = fabs(loss - rloss[s]) / fabs(rloss[s]);
        double en = fabs(gnorm - rnorm[s]) / fabs(rnorm[s]);
        double elr = fabs(lr - rlr[s]) / fabs(rlr[s]);
        T_CHECK(el <= 1e-5, "step %d: loss %.7f vs ref %.7f (rel %.2e)", s, loss, rloss[s], el);
        T_CHECK(en <= 1e-4, "step %d: grad norm %.7f vs ref %.7f (rel %.2e)", s, gnorm, rnorm[s],
                en);
        T_CHECK(elr <= 1e-6, "step %d: lr %.9g vs ref %.9g", s, lr, rlr[s]);
        clipped += gnorm > FIX_CFG.clip;
        printf("fixture step %d: loss %.6f (rel %.1e) grad norm %.6f (rel %.1e) lr %.6g%s\n", s,
               loss, el, gnorm, en, lr, gnorm > FIX_CFG.clip ? " clipped" : "");
    }
    T_CHECK(clipped > 0 && clipped < FIX_K,
            "fixture has clipped and unclipped steps (%d of %d clipped)", clipped, FIX_K);

    float *p = xmalloc(sizeof(float) * M.t.total);
    model_get_params(&M, p);
    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < M.t.n; i++) {
        const ParamEntry *e = &M.t.e[i];
        char name[128];
        snprintf(name, sizeof name, "param.%s", e->name);
        float *rp = t_read_ref(&rf, name, e->numel);
        double ep = t_rel_err(p + e->offset, rp, e->numel);
        T_CHECK(ep <= 1e-4, "%s: rel err %.3g after %d steps", name, ep, FIX_K);
        if (ep > worst) {
            worst = ep;
            worst_name = e->name;
        }
        free(rp);
    }
    printf("fixture: %d parameter tensors after %d steps, worst rel err %.2e (%s)\n", M.t.n, FIX_K,
           worst, worst_name);
    free(p);
    free(rloss);
    free(rnorm);
    free(rlr);
    st_close(&rf);
    optim_free(&o);
    model_free(&M);
}

// ---- b. schedule ----

static int close_to(float a, double b) {
    return fabs(a - b) <= 1e-6 * fabs(b);
}

static void test_schedule(void) {
    OptimConfig c = {.lr = 6e-4f, .min_lr = 6e-5f, .warmup = 10, .total_steps = 110};
    double lr = c.lr, mn = c.min_lr;
    T_CHECK(close_to(optim_lr(&c, 0), lr / 10), "step 0: %g, want lr/warmup %g", optim_lr(&c, 0),
            lr / 10);
    T_CHECK(close_to(optim_lr(&c, 4), lr * 5 / 10), "step 4: %g", optim_lr(&c, 4));
    T_CHECK(close_to(optim_lr(&c, 9), lr), "last warmup step: %g, want lr", optim_lr(&c, 9));
    T_CHECK(close_to(optim_lr(&c, 10), lr), "cosine start: %g, want lr", optim_lr(&c, 10));
    T_CHECK(close_to(optim_lr(&c, 60), (lr + mn) / 2), "cosine midpoint: %g, want %g",
            optim_lr(&c, 60), (lr + mn) / 2);
    T_CHECK(close_to(optim_lr(&c, 110), mn), "total_steps: %g, want min_lr", optim_lr(&c, 110));
    T_CHECK(close_to(optim_lr(&c, 1000), mn), "past total_steps: %g, want min_lr",
            optim_lr(&c, 1000));
    int mono = 1;
    for (int s = 10; s < 120; s++) mono &= optim_lr(&c, s + 1) <= optim_lr(&c, s);
    T_CHECK(mono, "lr is non-increasing after warmup");
    int inrange = 1;
    for (int s = 0; s < 120; s++) inrange &= optim_lr(&c, s) > 0 && optim_lr(&c, s) <= c.lr;
    T_CHECK(inrange, "lr stays in (0, lr]");

    OptimConfig z = c;  // no warmup: cosine from step 0
    z.warmup = 0;
    z.total_steps = 100;
    T_CHECK(close_to(optim_lr(&z, 0), lr), "warmup 0, step 0: %g, want lr", optim_lr(&z, 0));
    T_CHECK(close_to(optim_lr(&z, 50), (lr + mn) / 2), "warmup 0, midpoint: %g", optim_lr(&z, 50));
    T_CHECK(close_to(optim_lr(&z, 100), mn), "warmup 0, end: %g", optim_lr(&z, 100));
    printf("schedule: warmup 10 -> %g %g %g | mid %g | end %g; warmup 0 -> %g %g %g\n",
           optim_lr(&c, 0), optim_lr(&c, 9), optim_lr(&c, 10), optim_lr(&c, 60), optim_lr(&c, 110),
           optim_lr(&z, 0), optim_lr(&z, 50), optim_lr(&z, 100));
}

// ---- c. weight decay ----

static void test_decay(const Case *c) {
    Model M;
    model_from_case(&M, c);
    int flags_ok = 1;
    for (int i = 0; i < M.t.n; i++) flags_ok &= M.t.e[i].decay == (M.t.e[i].ndim == 2);
    T_CHECK(flags_ok, "decay flag set on exactly the 2-D tensors");

    // With zero gradients m = v = 0 and the Adam term is 0 / eps = 0, so all
    // that moves the parameters is the decoupled decay.
    OptimConfig cfg = FIX_CFG;
    cfg.lr = 0.5f;
    cfg.warmup = 0;
    cfg.weight_decay = 0.1f;
    Optim o;
    optim_init(&o, &M, &cfg);
    float *p0 = xmalloc(sizeof(float) * M.t.total), *p1 = xmalloc(sizeof(float) * M.t.total);
    model_get_params(&M, p0);
    model_zero_grads(&M);
    float lr = optim_step(&o, &M, 0, optim_grad_norm(&M));
    model_get_params(&M, p1);
    float shrink = 1.0f - lr * cfg.weight_decay;  // the same fp32 expression as the backend
    size_t bad_norm = 0, bad_mat = 0, n_norm = 0;
    for (int i = 0; i < M.t.n; i++) {
        const ParamEntry *e = &M.t.e[i];
        for (size_t j = e->offset; j < e->offset + e->numel; j++) {
            if (e->ndim == 1) {
                n_norm++;
                bad_norm += p1[j] != p0[j];
            } else {
                bad_mat += p1[j] != p0[j] * shrink;
            }
        }
    }
    T_CHECK(n_norm > 0 && bad_norm == 0, "%zu of %zu norm weights changed", bad_norm, n_norm);
    T_CHECK(bad_mat == 0, "%zu matrix elements not scaled by exactly %.9g", bad_mat, shrink);
    printf(
        "decay: lr %g wd %g: %zu matrix elements not scaled by %.6f, %zu of %zu norm weights "
        "changed\n",
        lr, cfg.weight_decay, bad_mat, shrink, bad_norm, n_norm);
    free(p0);
    free(p1);
    optim_free(&o);
    model_free(&M);
}

// ---- d. clipping ----

// Deterministic pseudo-random values in [-1, 1), scaled to L2 norm `norm`.
static void make_grad(float *g, size_t n, uint64_t seed, double norm) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        g[i] = (float)((double)(s >> 11) / 4503599627370496.0 - 1.0);
        ss += (double)g[i] * g[i];
    }
    double k = norm / sqrt(ss);
    for (size_t i = 0; i < n; i++) g[i] = (float)(g[i] * k);
}

static void set_grads(Model *M, const float *g) {
    M->be->upload(M->grads, g, M->t.total * sizeof(float));  // gradients are fp32
}

// Two optimizer steps on a fresh copy of the case's model: gradient g0 (the
// optimizer told its norm is n0), then g1 (norm n1). Returns the parameters.
// Two steps, because a single first Adam step is invariant to the gradient's
// scale (m / sqrt(v) is sign(g) up to eps): only the second step sees how the
// first gradient was scaled against the second.
// scale: per-parameter learning-rate multipliers (optim_set_lr_scale), or NULL.
static float *two_steps(const Case *c, const OptimConfig *cfg, const float *g0, float n0,
                        const float *g1, float n1, const float *scale) {
    Model M;
    model_from_case(&M, c);
    Optim o;
    optim_init(&o, &M, cfg);
    optim_set_lr_scale(&o, scale);
    set_grads(&M, g0);
    optim_step(&o, &M, 0, n0);
    set_grads(&M, g1);
    optim_step(&o, &M, 1, n1);
    float *p = xmalloc(sizeof(float) * M.t.total);
    model_get_params(&M, p);
    optim_free(&o);
    model_free(&M);
    return p;
}

// max |(a - p0) - (b - p0)| / max |b - p0|: difference of two updates relative to the update.
static double update_err(const float *a, const float *b, const float *p0, size_t n) {
    double md = 0.0, mu = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]), u = fabs((double)b[i] - p0[i]);
        if (!(d <= md)) md = d;
        if (u > mu) mu = u;
    }
    return mu > 0 ? md / mu : md;
}

static void test_clipping(const Case *c) {
    size_t n = c->w.t.total;
    const float clip = 1.0f, big = 10.0f, small = 0.5f;
    float *g0 = xmalloc(sizeof(float) * n), *g1 = xmalloc(sizeof(float) * n);
    float *g0s = xmalloc(sizeof(float) * n);
    make_grad(g0, n, 1, big);
    make_grad(g1, n, 2, small);
    for (size_t i = 0; i < n; i++) g0s[i] = g0[i] * (clip / big);  // pre-scaled to norm clip

    OptimConfig on = FIX_CFG, off = FIX_CFG, above = FIX_CFG;
    on.clip = clip;
    off.clip = 0.0f;
    above.clip = 2 * big;
    float *clipped = two_steps(c, &on, g0, big, g1, small, NULL);
    float *prescaled = two_steps(c, &off, g0s, clip, g1, small, NULL);
    float *raw = two_steps(c, &off, g0, big, g1, small, NULL);
    float *raw2 = two_steps(c, &off, g0, big, g1, small, NULL);
    float *high = two_steps(c, &above, g0, big, g1, small, NULL);
    const float *p0 = c->w.params;
    double e_clip = update_err(clipped, prescaled, p0, n);
    double e_raw = update_err(raw, prescaled, p0, n);
    // Not bitwise: optim_step scales by clip / (norm + 1e-6) like torch's
    // clip_grad_norm_, 1e-7 off clip / norm, and elements where m nearly
    // cancels in the second step amplify that to a few 1e-6.
    T_CHECK(e_clip <= 1e-4, "clipped update vs pre-scaled gradient: rel err %.3g", e_clip);
    // The check above means something only if clipping changes the result.
    T_CHECK(e_raw > 1e-2, "unclipped update differs from the clipped one (rel %.3g)", e_raw);
    T_CHECK(memcmp(raw, raw2, n * 4) == 0, "optimizer steps are deterministic");
    T_CHECK(memcmp(high, raw, n * 4) == 0, "a gradient below the clip threshold is not scaled");
    printf("clipping: clipped vs pre-scaled update rel err %.2e; unclipped differs by %.2e\n",
           e_clip, e_raw);
    free(g0);
    free(g1);
    free(g0s);
    free(clipped);
    free(prescaled);
    free(raw);
    free(raw2);
    free(high);
}

// ---- e. gradient accumulation ----

static void test_accum(const Case *c) {
    // Targets with the same number of counted positions in both sequences, so
    // the mean of the two micro-batch means is the mean over the batch.
    int B = 2, T = c->T;
    int *tgt = xmalloc(sizeof(int) * B * T);
    memcpy(tgt, c->tgt, sizeof(int) * B * T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            if (tgt[b * T + t] < 0) tgt[b * T + t] = (b + t) % c->w.t.cfg.vocab_size;
    tgt[0 * T + 2] = -100;
    tgt[1 * T + 5] = -100;

    Model M;
    model_from_case(&M, c);
    size_t n = M.t.total;
    float *full = xmalloc(sizeof(float) * n), *acc = xmalloc(sizeof(float) * n);
    model_zero_grads(&M);
    float loss_full = model_forward(&M, c->tok, tgt, B, T);
    int nv = M.n_valid;
    model_backward(&M, 1.0f / nv);
    model_get_grads(&M, full);

    model_zero_grads(&M);
    double loss_sum = 0.0;
    int nv_micro[2];
    for (int micro = 0; micro < 2; micro++) {
        loss_sum += model_forward(&M, c->tok + micro * T, tgt + micro * T, 1, T);
        nv_micro[micro] = M.n_valid;
        model_backward(&M, 1.0f / ((float)M.n_valid * 2));
    }
    model_get_grads(&M, acc);
    T_CHECK(nv_micro[0] == nv_micro[1] && nv_micro[0] * 2 == nv, "n_valid %d + %d vs %d",
            nv_micro[0], nv_micro[1], nv);
    double el = fabs(loss_sum / 2 - loss_full) / fabs(loss_full);
    T_CHECK(el <= 1e-5, "accumulated loss %.7f vs batch loss %.7f", loss_sum / 2, loss_full);
    double worst = 0.0;
    for (int i = 0; i < M.t.n; i++) {
        const ParamEntry *e = &M.t.e[i];
        double eg = t_rel_err(acc + e->offset, full + e->offset, e->numel);
        T_CHECK(eg <= 1e-5, "%s: accumulated grad rel err %.3g", e->name, eg);
        if (eg > worst) worst = eg;
    }
    printf("accum: 2 x B=1 vs B=2: loss rel err %.2e, worst grad rel err %.2e\n", el, worst);
    free(tgt);
    free(full);
    free(acc);
    model_free(&M);
}

// ---- f. shards ----

static void test_shards(const Case *c) {
    Model full, a, b;
    model_from_case(&full, c);
    model_from_case(&a, c);
    model_from_case(&b, c);
    size_t n = full.t.total, half = n / 2;
    // Split inside a tensor, which is the hard case for the per-tensor walk.
    for (int i = 0; i < full.t.n; i++)
        if (full.t.e[i].offset == half) half++;
    Optim of, oa, ob;
    optim_init(&of, &full, &FIX_CFG);
    optim_init_range(&oa, &a, &FIX_CFG, 0, half, NULL);
    optim_init_range(&ob, &b, &FIX_CFG, half, n, c->w.params);

    float *g = xmalloc(sizeof(float) * n);
    for (int s = 0; s < 3; s++) {
        // the same gradient everywhere; the norm is global, as ZeRO-1 all-reduces it
        make_grad(g, n, 10 + s, s == 0 ? 8.0 : 1.5);
        Model *ms[3] = {&full, &a, &b};
        for (int k = 0; k < 3; k++) set_grads(ms[k], g);
        float gn = optim_grad_norm(&full);
        optim_step(&of, &full, s, gn);
        optim_step(&oa, &a, s, gn);
        optim_step(&ob, &b, s, gn);
    }
    float *pf = xmalloc(sizeof(float) * n), *pa = xmalloc(sizeof(float) * n);
    float *pb = xmalloc(sizeof(float) * n), *joined = xmalloc(sizeof(float) * n);
    model_get_params(&full, pf);
    model_get_params(&a, pa);
    model_get_params(&b, pb);
    memcpy(joined, pa, half * 4);
    memcpy(joined + half, pb + half, (n - half) * 4);
    T_CHECK(memcmp(joined, pf, n * 4) == 0, "joined half-range params equal full-range params");
    T_CHECK(memcmp(pa + half, c->w.params + half, (n - half) * 4) == 0 &&
                memcmp(pb, c->w.params, half * 4) == 0,
            "a shard's optimizer leaves parameters outside its range untouched");
    T_CHECK(memcmp(pf, c->w.params, n * 4) != 0, "the steps moved the parameters");

    // optimizer state: each shard's [lo, hi) slice of master, m, v
    float *sf[3], *sj[3];
    for (int k = 0; k < 3; k++) {
        sf[k] = xmalloc(sizeof(float) * n);
        sj[k] = xmalloc(sizeof(float) * n);
    }
    optim_get_state(&of, sf[0], sf[1], sf[2]);
    optim_get_state(&oa, sj[0], sj[1], sj[2]);
    optim_get_state(&ob, sj[0] + half, sj[1] + half, sj[2] + half);
    int same = 1;
    for (int k = 0; k < 3; k++) same &= memcmp(sf[k], sj[k], n * 4) == 0;
    T_CHECK(same, "joined shard optimizer state equals the full state");
    printf("shards: split at %zu of %zu, params and state bitwise equal: %s\n", half, n,
           same && memcmp(joined, pf, n * 4) == 0 ? "yes" : "no");
    for (int k = 0; k < 3; k++) {
        free(sf[k]);
        free(sj[k]);
    }
    free(g);
    free(pf);
    free(pa);
    free(pb);
    free(joined);
    optim_free(&of);
    optim_free(&oa);
    optim_free(&ob);
    model_free(&full);
    model_free(&a);
    model_free(&b);
}

// Per-parameter learning-rate multipliers (PostShare's share.reg.lr_mult and
// rest_lr_mult): over two steps with weight decay, a parameter with scale 1
// moves bit for bit as without scales, one with scale 2 as with lr and min_lr
// doubled (powers of two scale floats exactly), and one with scale 0 stays put.
static void test_lr_scale(const Case *c) {
    size_t n = c->w.t.total;
    float *g0 = xmalloc(sizeof(float) * n), *g1 = xmalloc(sizeof(float) * n);
    float *sc = xmalloc(sizeof(float) * n);
    make_grad(g0, n, 3, 2.0);
    make_grad(g1, n, 4, 1.0);
    for (size_t i = 0; i < n; i++) sc[i] = (float)(i % 3);
    OptimConfig dbl = FIX_CFG;
    dbl.lr *= 2.0f;
    dbl.min_lr *= 2.0f;
    float *scaled = two_steps(c, &FIX_CFG, g0, 2.0f, g1, 1.0f, sc);
    float *plain = two_steps(c, &FIX_CFG, g0, 2.0f, g1, 1.0f, NULL);
    float *twice = two_steps(c, &dbl, g0, 2.0f, g1, 1.0f, NULL);
    size_t bad[3] = {0, 0, 0}, moved = 0;
    for (size_t i = 0; i < n; i++) {
        float want = i % 3 == 0 ? c->w.params[i] : i % 3 == 1 ? plain[i] : twice[i];
        bad[i % 3] += memcmp(&scaled[i], &want, sizeof(float)) != 0;
        moved += plain[i] != c->w.params[i];
    }
    T_CHECK(moved > n / 2, "the plain steps move the parameters (%zu of %zu)", moved, n);
    T_CHECK(bad[0] == 0, "lr scale 0: %zu parameters moved", bad[0]);
    T_CHECK(bad[1] == 0, "lr scale 1: %zu parameters differ from no scale", bad[1]);
    T_CHECK(bad[2] == 0, "lr scale 2: %zu parameters differ from lr x 2", bad[2]);
    free(scaled), free(plain), free(twice), free(g0), free(g1), free(sc);
}

int main(void) {
    Case c;
    case_load(&c);
    test_fixture(&c);
    test_schedule();
    test_decay(&c);
    test_clipping(&c);
    test_lr_scale(&c);
    test_accum(&c);
    test_shards(&c);
    case_free(&c);
    return t_summary();
}
