// bench_gpu.c: training throughput of the CUDA backend on one GPU: tokens/s,
// MFU and peak memory of full training steps (forward, backward, global-norm
// clip, AdamW with fp32 masters), as train.c runs them, on random tokens.
//
//   ps_bench_gpu --preset 125m|1b [--batch B] [--seq T] [--steps N] [--warmup W]
//                [--recompute 0|1] [--peak-tflops P] [--json FILE]
// --recompute 1 turns on activation recomputation (model_set_recompute).
// Presets (untied, V 32000, T 2048 by default):
//   125m: C 768, L 12, heads 12/12, F 2048         (134M parameters, 85M non-embedding)
//   1b:   C 2048, L 22, heads 32/4, F 5632 (GQA)   (1.1B, TinyLlama's shape)
//
// MFU = model FLOPs per second / the GPU's dense bf16 peak (989 TFLOP/s for the
// H100/H200 SXM; 312 for the A100; --peak-tflops overrides). Model FLOPs per
// token = 6 N + 6 L T d_attn, where N counts the non-embedding parameters
// (the layers and the final norm: neither the embedding table nor the LM head)
// and 6 L T d_attn is causal attention (QK^T and PV, forward and backward, half
// of the T x T scores); bench_torch.py counts the same way. Peak memory is the
// backend's own allocations (params, grads, master/m/v, activations, scratch,
// the cuBLASLt workspace); the JSON line also gives the device's used memory.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "cuda_backend.h"
#include "model.h"
#include "optim.h"

typedef struct {
    const char *name;
    LlamaConfig cfg;
    int B;  // default micro-batch at T 2048
} Preset;

static const Preset PRESETS[] = {
    {"125m",
     {.dim = 768,
      .n_layers = 12,
      .n_heads = 12,
      .n_kv_heads = 12,
      .ffn_dim = 2048,
      .vocab_size = 32000,
      .max_seq_len = 2048,
      .rope_theta = 10000.0f,
      .norm_eps = 1e-5f},
     16},
    {"1b",
     {.dim = 2048,
      .n_layers = 22,
      .n_heads = 32,
      .n_kv_heads = 4,
      .ffn_dim = 5632,
      .vocab_size = 32000,
      .max_seq_len = 2048,
      .rope_theta = 10000.0f,
      .norm_eps = 1e-5f},
     8},
};

static void usage(void) {
    fprintf(stderr,
            "usage: ps_bench_gpu --preset 125m|1b [--batch B] [--seq T] [--steps N] "
            "[--warmup W] [--recompute 0|1] [--peak-tflops P] [--json FILE]\n");
    exit(2);
}

// Fast random weights (timing must not run on zeros): matrices uniform with
// std 0.02, norm weights 1. Each chunk has its own generator (any thread count
// gives the same values).
static void fast_init(const ParamTable *t, float *p) {
    const size_t chunk = (size_t)1 << 20;
    const float a = 0.02f * sqrtf(3.0f);
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < (t->total + chunk - 1) / chunk; c++) {
        Rng r;
        rng_seed(&r, 1234 + c);
        size_t end = (c + 1) * chunk < t->total ? (c + 1) * chunk : t->total;
        for (size_t i = c * chunk; i < end; i++) p[i] = a * (2.0f * rng_uniform(&r) - 1.0f);
    }
    for (int i = 0; i < t->n; i++)
        if (t->e[i].ndim == 1)
            for (size_t j = 0; j < t->e[i].numel; j++) p[t->e[i].offset + j] = 1.0f;
}

int main(int argc, char **argv) {
    const char *preset = NULL, *json = NULL;
    int B = 0, T = 2048, steps = 10, warmup = 3, recompute = 0;
    double peak = 0.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--preset"))
            preset = v;
        else if (!strcmp(a, "--batch"))
            B = atoi(v);
        else if (!strcmp(a, "--seq"))
            T = atoi(v);
        else if (!strcmp(a, "--steps"))
            steps = atoi(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atoi(v);
        else if (!strcmp(a, "--recompute"))
            recompute = atoi(v);
        else if (!strcmp(a, "--peak-tflops"))
            peak = atof(v) * 1e12;
        else if (!strcmp(a, "--json"))
            json = v;
        else
            usage();
        i++;
    }
    const Preset *P = NULL;
    for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++)
        if (preset && !strcmp(preset, PRESETS[i].name)) P = &PRESETS[i];
    if (!P || T <= 0 || steps <= 0 || warmup < 0) usage();
    if (B <= 0) B = P->B;
    LlamaConfig cfg = P->cfg;
    if (T > cfg.max_seq_len) cfg.max_seq_len = T;

    const char *why = NULL;
    const Backend *be = backend_cuda_probe(&why);
    if (!be) ps_die("ps_bench_gpu needs a GPU: %s", why);
    const char *dev = cuda_device_name();
    if (peak <= 0.0) peak = strstr(dev, "A100") ? 312e12 : 989e12;

    Model M;
    model_init(&M, be, &cfg);
    model_set_recompute(&M, recompute);
    float *host = xmalloc(sizeof(float) * M.t.total);
    fast_init(&M.t, host);
    model_set_params(&M, host);
    free(host);
    OptimConfig oc = {.lr = 3e-4f,
                      .min_lr = 3e-5f,
                      .warmup = 10,
                      .total_steps = 1000,
                      .beta1 = 0.9f,
                      .beta2 = 0.95f,
                      .eps = 1e-8f,
                      .weight_decay = 0.1f,
                      .clip = 1.0f};
    Optim o;
    optim_init(&o, &M, &oc);

    int BT = B * T;
    int *tok = xmalloc(sizeof(int) * BT), *tgt = xmalloc(sizeof(int) * BT);
    Rng r;
    rng_seed(&r, 42);
    double t0 = 0.0;
    float loss0 = 0.0f, loss = 0.0f;
    cuda_reset_peak_bytes();
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) {
            be->synchronize();
            t0 = ps_now();
        }
        for (int i = 0; i < BT; i++) tok[i] = (int)(rng_u64(&r) % cfg.vocab_size);
        for (int i = 0; i < BT; i++) tgt[i] = i % T == T - 1 ? -1 : tok[i + 1];
        model_zero_grads(&M);
        float scale = 1.0f / (float)model_count_targets(tgt, B * T);
        loss = model_forward_grad(&M, tok, tgt, B, T, scale);
        model_backward(&M, scale);
        optim_step(&o, &M, s, optim_grad_norm(&M));
        if (s == 0) loss0 = loss;
    }
    be->synchronize();
    double dt = ps_now() - t0;

    const ParamTable *t = &M.t;
    size_t C = (size_t)cfg.dim, V = (size_t)cfg.vocab_size;
    double n_total = (double)t->total;
    double n_nonemb = n_total - (double)V * C * (cfg.tie_embeddings ? 1 : 2);
    double d_attn = (double)cfg.n_heads * cfg_head_dim(&cfg);
    double flops_tok = 6.0 * n_nonemb + 6.0 * cfg.n_layers * (double)T * d_attn;
    double tps = (double)BT * steps / dt;
    double mfu = tps * flops_tok / peak;
    size_t cur = 0, pk = 0;
    cuda_mem_bytes(&cur, &pk);
    size_t dev_used = 0, dev_total = 0;
    cuda_device_memory(&dev_used, &dev_total);

    printf(
        "postshare %s%s on %s: B %d x T %d, %.1fM params (%.1fM non-embedding), %d steps in "
        "%.2f s: %.0f tokens/s, %.1f ms/step, MFU %.1f%% (peak %.0f TFLOP/s), peak memory "
        "%.2f GiB (device in use %.2f GiB), loss %.3f -> %.3f\n",
        P->name, recompute ? " (recompute)" : "", dev, B, T, n_total / 1e6, n_nonemb / 1e6, steps,
        dt, tps, 1e3 * dt / steps, 100 * mfu, peak / 1e12, pk / 1073741824.0,
        dev_used / 1073741824.0, loss0, loss);
    if (json) {
        FILE *f = xfopen(json, "a");
        fprintf(f,
                "{\"impl\":\"postshare\",\"preset\":\"%s\",\"device\":\"%s\",\"B\":%d,\"T\":%d,"
                "\"micro_batch\":%d,\"grad_accum\":1,\"steps\":%d,\"params\":%.0f,"
                "\"params_nonembed\":%.0f,\"flops_per_token\":%.6g,\"tokens_per_s\":%.1f,"
                "\"step_ms\":%.2f,\"mfu\":%.4f,\"peak_tflops\":%.1f,\"peak_mem_gib\":%.3f,"
                "\"device_used_gib\":%.3f,\"loss_first\":%.4f,\"loss_last\":%.4f,"
                "\"attention\":\"%s\",\"recompute\":%d}\n",
                P->name, dev, B, T, B, steps, n_total, n_nonemb, flops_tok, tps, 1e3 * dt / steps,
                mfu, peak / 1e12, pk / 1073741824.0, dev_used / 1073741824.0, loss0, loss,
                cuda_get_attention_impl() == CUDA_ATTN_FLASH ? "flash" : "naive", recompute);
        fclose(f);
    }
    free(tok);
    free(tgt);
    optim_free(&o);
    model_free(&M);
    return 0;
}
