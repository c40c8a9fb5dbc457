// test_model_fd.c: finite-difference check of the CPU model's backward pass.
//
// For a small random model (MHA untied, and GQA tied), every parameter tensor
// gets a few random coordinates plus its largest-gradient coordinate checked:
// the analytic gradient of the mean loss must match the central difference
// (L(p + h) - L(p - h)) / 2h. fp32 forward passes limit the precision of the
// difference, so the tolerance is |fd - g| <= 2e-3 + 3e-2 |g|; a wrong gradient
// formula is off by O(|g|) and fails it.
#include <math.h>

#include "backend.h"
#include "common.h"
#include "model.h"
#include "test.h"

static void check_case(const char *name, LlamaConfig cfg, int B, int T, uint64_t seed) {
    Model M;
    model_init(&M, backend_cpu(), &cfg);
    float *p = xmalloc(sizeof(float) * M.t.total);
    param_init_random(&M.t, p, seed, 0.3f);
    Rng r;
    rng_seed(&r, seed + 1);
    for (int i = 0; i < M.t.n; i++)  // norm weights away from 1 so their grads are generic
        if (M.t.e[i].ndim == 1)
            for (size_t j = 0; j < M.t.e[i].numel; j++)
                p[M.t.e[i].offset + j] = 1.0f + 0.3f * rng_normal(&r);
    model_set_params(&M, p);
    int BT = B * T;
    int *tok = xmalloc(sizeof(int) * BT), *tgt = xmalloc(sizeof(int) * BT);
    for (int i = 0; i < BT; i++) {
        tok[i] = (int)(rng_u64(&r) % cfg.vocab_size);
        tgt[i] = (int)(rng_u64(&r) % cfg.vocab_size);
    }
    tgt[1] = -100;  // an ignored target
    model_zero_grads(&M);
    model_forward(&M, tok, tgt, B, T);
    model_backward(&M, 1.0f / M.n_valid);
    float *g = xmalloc(sizeof(float) * M.t.total);
    model_get_grads(&M, g);

    const float h = 1e-2f;
    int bad = 0, checked = 0;
    for (int i = 0; i < M.t.n; i++) {
        const ParamEntry *e = &M.t.e[i];
        size_t coords[4];
        size_t argmax = 0;
        for (size_t j = 1; j < e->numel; j++)
            if (fabsf(g[e->offset + j]) > fabsf(g[e->offset + argmax])) argmax = j;
        coords[0] = argmax;
        for (int c = 1; c < 4; c++) coords[c] = rng_u64(&r) % e->numel;
        for (int c = 0; c < 4; c++) {
            size_t k = e->offset + coords[c];
            float orig = p[k];
            p[k] = orig + h;
            model_set_params(&M, p);
            double lp = model_forward(&M, tok, tgt, B, T);
            p[k] = orig - h;
            model_set_params(&M, p);
            double lm = model_forward(&M, tok, tgt, B, T);
            p[k] = orig;
            double fd = (lp - lm) / (2.0 * h);
            double an = g[k];
            checked++;
            if (!(fabs(fd - an) <= 2e-3 + 3e-2 * fabs(an))) {
                bad++;
                fprintf(stderr, "  %s %s[%zu]: analytic %.6g, finite difference %.6g\n", name,
                        e->name, coords[c], an, fd);
            }
        }
    }
    model_set_params(&M, p);
    T_CHECK(bad == 0, "%s: %d of %d coordinates disagree with finite differences", name, bad,
            checked);
    printf("%s: %d coordinates over %d tensors checked, %d off\n", name, checked, M.t.n, bad);
    free(p);
    free(g);
    free(tok);
    free(tgt);
    model_free(&M);
}

int main(void) {
    LlamaConfig mha = {.dim = 16,
                       .n_layers = 2,
                       .n_heads = 2,
                       .n_kv_heads = 2,
                       .ffn_dim = 24,
                       .vocab_size = 19,
                       .max_seq_len = 16,
                       .rope_theta = 10000.0f,
                       .norm_eps = 1e-5f,
                       .tie_embeddings = 0};
    LlamaConfig gqa = {.dim = 24,
                       .n_layers = 2,
                       .n_heads = 6,
                       .n_kv_heads = 2,
                       .ffn_dim = 20,
                       .vocab_size = 23,
                       .max_seq_len = 16,
                       .rope_theta = 100.0f,
                       .norm_eps = 1e-6f,
                       .tie_embeddings = 1};
    check_case("mha_untied", mha, 2, 5, 11);
    check_case("gqa_tied", gqa, 2, 7, 12);
    return t_summary();
}
