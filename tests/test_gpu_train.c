// test_gpu_train.c: 50 steps of the default job (configs/default.yaml: its
// model, batch shape, AdamW settings, schedule and clipping) on the CUDA backend
// and on the CPU reference, from the same bf16-exact initial weights and the
// same batches. The GPU's loss curve (bf16 weights and activations, fp32 master
// weights) must stay within bf16 tolerance of the CPU's (fp32 everywhere):
// |loss_gpu - loss_cpu| <= 0.02 + 0.01 * loss_cpu at every step, and the loss
// must fall (else the comparison says little).
//
// The text is synthetic (so the test needs no data files): sentences of words
// drawn from a fixed random lexicon, byte-tokenized, cut into consecutive
// windows of T + 1 tokens. Skips (exit 0) without a GPU.
#include <math.h>
#include <string.h>

#include "job.h"
#include "model.h"
#include "optim.h"
#include "test_gpu.h"
#include "train.h"

#define STEPS 50

// A deterministic English-like byte stream of n tokens.
static int *synthetic_text(size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    enum { NWORDS = 300 };
    char words[NWORDS][10];
    for (int w = 0; w < NWORDS; w++) {
        int len = 1 + (int)(rng_u64(&r) % 8);
        for (int i = 0; i < len; i++) words[w][i] = (char)('a' + rng_u64(&r) % 26);
        words[w][len] = 0;
    }
    int *out = xmalloc(sizeof(int) * n);
    size_t at = 0;
    int in_sentence = 0;
    while (at < n) {
        // Zipf-like word choice: small indices are frequent
        double u = rng_uniform(&r);
        const char *w = words[(int)(NWORDS * u * u * u)];
        for (const char *ch = w; *ch && at < n; ch++)  // capitalized at a sentence start
            out[at++] = (unsigned char)(ch == w && !in_sentence ? *ch - 'a' + 'A' : *ch);
        int end = ++in_sentence > 4 + (int)(rng_u64(&r) % 8);
        if (end && at < n) out[at++] = '.';
        if (at < n) out[at++] = ' ';
        if (end) in_sentence = 0;
    }
    return out;
}

// STEPS optimizer steps of the job on backend be; losses[STEPS].
static void train(const Backend *be, const JobConfig *job, const LlamaConfig *cfg,
                  const float *init, const int *text, float *losses) {
    Model M;
    model_init(&M, be, cfg);
    model_set_params(&M, init);
    const JobTrain *tr = &job->train;
    OptimConfig oc = train_optim_config(job);
    Optim o;
    optim_init(&o, &M, &oc);
    int B = job->data.batch_size, T = job->data.seq_len;
    int *inp = xmalloc(sizeof(int) * B * T), *tgt = xmalloc(sizeof(int) * B * T);
    size_t window = 0;
    for (int s = 0; s < STEPS; s++) {
        model_zero_grads(&M);
        double sum = 0.0;
        for (int micro = 0; micro < tr->grad_accum; micro++) {
            for (int b = 0; b < B; b++, window++)
                for (int t = 0; t < T; t++) {
                    inp[b * T + t] = text[window * (T + 1) + t];
                    tgt[b * T + t] = text[window * (T + 1) + t + 1];
                }
            // as train.c: the classifier's gradients are written by the forward
            float scale = 1.0f / ((float)model_count_targets(tgt, B * T) * tr->grad_accum);
            sum += model_forward_grad(&M, inp, tgt, B, T, scale);
            model_backward(&M, scale);
        }
        losses[s] = (float)(sum / tr->grad_accum);
        optim_step(&o, &M, s, optim_grad_norm(&M));
    }
    free(inp);
    free(tgt);
    optim_free(&o);
    model_free(&M);
}

int main(void) {
    const Backend *G = gpu_or_skip();
    if (!G) return t_summary();
    JobConfig job;
    int rc = job_load(PS_SOURCE_DIR "/configs/default.yaml", 0, NULL, &job);
    T_CHECK(rc == 0, "configs/default.yaml: %s", ps_err_msg());
    if (rc) return t_summary();
    LlamaConfig cfg;
    CHECK(job_llama_config(&job, &cfg) == 0, "%s", ps_err_msg());
    int B = job.data.batch_size, T = job.data.seq_len;
    printf(
        "default job: %d steps of B %d x T %d (x%d micro-batches), L%d C%d heads %d/%d F%d V%d, "
        "lr %g warmup %d clip %g\n",
        STEPS, B, T, job.train.grad_accum, cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads,
        cfg.ffn_dim, cfg.vocab_size, job.train.lr, job.train.warmup, job.train.clip);

    ParamTable t;
    param_table_build(&t, &cfg);
    float *init = xmalloc(sizeof(float) * t.total);
    param_init_random(&t, init, (uint64_t)job.run.seed, job.model.init_std);
    for (size_t i = 0; i < t.total; i++) init[i] = t_bf16(init[i]);
    size_t ntok = (size_t)STEPS * job.train.grad_accum * B * (T + 1);
    int *text = synthetic_text(ntok, (uint64_t)job.run.seed);

    float lc[STEPS], lg[STEPS];
    train(backend_cpu(), &job, &cfg, init, text, lc);
    train(G, &job, &cfg, init, text, lg);
    double worst = 0.0;
    for (int s = 0; s < STEPS; s++) {
        double d = fabs((double)lg[s] - lc[s]), tol = 0.02 + 0.01 * lc[s];
        T_CHECK(d <= tol, "step %d: GPU loss %.4f vs CPU %.4f (|diff| %.4f > %.4f)", s + 1, lg[s],
                lc[s], d, tol);
        if (!(d <= worst)) worst = d;
        if (s % 5 == 0 || s == STEPS - 1)
            printf("step %2d: loss GPU %.4f CPU %.4f |diff| %.4f\n", s + 1, lg[s], lc[s], d);
    }
    printf("worst |loss diff| %.4f over %d steps\n", worst, STEPS);
    T_CHECK(lc[STEPS - 1] < lc[0] - 0.5f, "the CPU loss should fall by 0.5 (%.3f -> %.3f)", lc[0],
            lc[STEPS - 1]);
    free(init);
    free(text);
    param_table_free(&t);
    return t_summary();
}
