// bench_match.c: times the head matching (share_match) and the plan selection
// (share_select) on random attention weights of a given shape, by default
// Llama-2-7B's (32 layers, 32 heads of dim 128, dim 4096). Only the tensors the
// match function reads are allocated, one per layer, and handed to share_match
// as per-layer pointers: no full model is built (a 7B fp32 model would not fit
// in memory). Run by experiments/bench_match.sh, which records peak memory.
//   bench_match [--layers L] [--heads H] [--kv-heads K] [--dim C] [--match F]
//               [--ratio R] [--seed S]
//   bench_match --write-hf DIR [shape options]: instead, write an HF folder of
//     that shape holding only the attention tensors, random, in bf16 (config.json
//     + model.safetensors), for timing `postshare match hf:DIR`, which reads
//     them in place (Wv and Wo, read only for the fingerprint, repeat one random
//     tensor in every layer to keep this writer's memory down).
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cliargs.h"
#include "common.h"
#include "hf_io.h"
#include "safetensors.h"
#include "share.h"

// Fill x[n] with uniform values in [-1, 1): independent streams per block, so
// the result does not depend on the thread count.
static void fill_random(float *x, size_t n, uint64_t seed) {
    const size_t block = 1 << 20;
    size_t nb = (n + block - 1) / block;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        Rng r;
        rng_seed(&r, seed * 1000003ULL + b);
        size_t end = (b + 1) * block < n ? (b + 1) * block : n;
        for (size_t i = b * block; i < end; i++) x[i] = 2.0f * rng_uniform(&r) - 1.0f;
    }
}

// bf16 copy of n random values.
static uint16_t *random_bf16(size_t n, uint64_t seed) {
    float *f = xmalloc(4 * n);
    fill_random(f, n, seed);
    uint16_t *h = xmalloc(2 * n);
    for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(f[i] * 0.02f);
    free(f);
    return h;
}

static int write_folder(const char *dir, const LlamaConfig *c, uint64_t seed) {
    int L = c->n_layers, hd = cfg_head_dim(c), C = c->dim;
    int64_t q = (int64_t)c->n_heads * hd, kv = (int64_t)c->n_kv_heads * hd;
    if (ps_mkdirs(dir) != 0) ps_die("bench_match: %s", ps_err_msg());
    StWriteTensor *t = xcalloc((size_t)4 * L, sizeof *t);
    uint16_t *v = random_bf16((size_t)kv * C, seed + 999),
             *o = random_bf16((size_t)q * C, seed + 998);
    char **names = xcalloc((size_t)4 * L, sizeof(char *));
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 4; k++) {
            int i = 4 * l + k;
            names[i] = xmalloc(96);
            snprintf(names[i], 96, "model.layers.%d.self_attn.%c_proj.weight", l, "qkvo"[k]);
            int64_t r = k == 0 ? q : k == 3 ? C : kv, cols = k == 3 ? q : C;
            const void *d = k == 0   ? random_bf16((size_t)r * cols, seed + 3 * l)
                            : k == 1 ? random_bf16((size_t)r * cols, seed + 3 * l + 1)
                            : k == 2 ? (const void *)v
                                     : (const void *)o;
            t[i] = (StWriteTensor){
                .name = names[i], .dtype = ST_BF16, .ndim = 2, .shape = {r, cols}, .data = d};
        }
    char *path = ps_path_join(dir, "model.safetensors");
    if (st_write(path, 4 * L, t) != 0) ps_die("bench_match: %s", ps_err_msg());
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
             "\"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d, "
             "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"vocab_size\": %d, "
             "\"max_position_embeddings\": %d, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, "
             "\"tie_word_embeddings\": false, \"hidden_act\": \"silu\"}\n",
             C, c->ffn_dim, L, c->n_heads, c->n_kv_heads, c->vocab_size, c->max_seq_len);
    char *cp = ps_path_join(dir, "config.json");
    if (ps_write_file_atomic(cp, cfg, strlen(cfg)) != 0) ps_die("bench_match: %s", ps_err_msg());
    printf("wrote %s: %d layers of bf16 Wq, Wk (random), Wv, Wo (one random tensor each)\n", dir,
           L);
    for (int i = 0; i < 4 * L; i++) {
        if (i % 4 < 2) free((void *)t[i].data);
        free(names[i]);
    }
    free(names);
    free(t);
    free(v);
    free(o);
    free(path);
    free(cp);
    return 0;
}

int main(int argc, char **argv) {
    // Llama-2-7B: dim, layers, heads, kv heads, ffn, vocab, max_seq_len, rope_theta, eps, tied
    LlamaConfig c = {.dim = 4096,
                     .n_layers = 32,
                     .n_heads = 32,
                     .n_kv_heads = 32,
                     .ffn_dim = 11008,
                     .vocab_size = 32000,
                     .max_seq_len = 4096,
                     .rope_theta = 10000.0f,
                     .norm_eps = 1e-5f};
    const char *match = "qk", *write_hf = NULL;
    double ratio = 0.3;
    long seed = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--layers"))
            c.n_layers = (int)cli_int("bench_match", a, v, 1, 1024);
        else if (!strcmp(a, "--heads"))
            c.n_heads = (int)cli_int("bench_match", a, v, 1, 1024);
        else if (!strcmp(a, "--kv-heads"))
            c.n_kv_heads = (int)cli_int("bench_match", a, v, 1, 1024);
        else if (!strcmp(a, "--dim"))
            c.dim = (int)cli_int("bench_match", a, v, 2, 1 << 16);
        else if (!strcmp(a, "--match"))
            match = v;
        else if (!strcmp(a, "--ratio"))
            ratio = cli_float("bench_match", a, v, 0, 0.999);
        else if (!strcmp(a, "--write-hf"))
            write_hf = v;
        else if (!strcmp(a, "--seed"))
            seed = cli_int("bench_match", a, v, 0, 1L << 30);
        else
            ps_die("bench_match: unknown option '%s'", a);
    }
    if (llama_config_validate(&c) != 0) ps_die("bench_match: %s", ps_err_msg());
    ShareMatchFn fn;
    if (share_match_parse(match, &fn) != 0) ps_die("bench_match: %s", ps_err_msg());
    int L = c.n_layers, U = c.n_kv_heads, hd = cfg_head_dim(&c);
    if (write_hf) return write_folder(write_hf, &c, (uint64_t)seed);
    size_t nq = (size_t)c.n_heads * hd * c.dim, nkv = (size_t)U * hd * c.dim;
    int need_q = fn == MATCH_QK || fn == MATCH_Q || fn == MATCH_QKV;
    int need_k = fn == MATCH_QK || fn == MATCH_K || fn == MATCH_QKV;
    int need_v = fn == MATCH_V || fn == MATCH_QKV;
    size_t per_layer = (need_q ? nq : 0) + (need_k ? nkv : 0) + (need_v ? nkv : 0);

    double t0 = ps_now();
    ShareLayerView *views = xcalloc((size_t)L, sizeof *views);
    float **bufs = xcalloc((size_t)L * 3, sizeof(float *));
    for (int l = 0; l < L; l++) {
        if (need_q) fill_random(bufs[3 * l] = xmalloc(4 * nq), nq, seed + 3 * l);
        if (need_k) fill_random(bufs[3 * l + 1] = xmalloc(4 * nkv), nkv, seed + 3 * l + 1);
        if (need_v) fill_random(bufs[3 * l + 2] = xmalloc(4 * nkv), nkv, seed + 3 * l + 2);
        views[l] =
            (ShareLayerView){.wq = bufs[3 * l], .wk = bufs[3 * l + 1], .wv = bufs[3 * l + 2]};
    }
    double t_fill = ps_now() - t0;

    t0 = ps_now();
    ShareSim s;
    share_match(&c, views, fn, 1, &s);
    double t_match = ps_now() - t0;
    t0 = ps_now();
    SharePlan p;
    memset(&p, 0, sizeof p);
    int k = share_count_for_ratio(ratio, s.N);
    if (share_select(&s, k, &p) != 0) ps_die("bench_match: %s", ps_err_msg());
    double t_select = ps_now() - t0;

    double pairs = (double)L * (L - 1) / 2, D = (double)per_layer / U;
    double flops = pairs * 2.0 * U * U * D, bytes = pairs * 2.0 * 4 * per_layer;
    printf("shape: %d layers, %d heads, %d kv heads, head dim %d, dim %d | match %s | %d threads\n",
           L, c.n_heads, U, hd, c.dim, share_match_name(fn), omp_get_max_threads());
    printf("weights read by the match: %.2f GiB (%.0f MiB per layer)\n",
           (double)per_layer * L * 4 / 1073741824.0, (double)per_layer * 4 / 1048576.0);
    printf(
        "fill %.1f s | match %.2f s (%.0f layer pairs, %.1f GFLOP/s, %.1f GB/s of weights "
        "streamed) | select %.3f s (%d of %d units)\n",
        t_fill, t_match, pairs, flops / t_match * 1e-9, bytes / t_match * 1e-9, t_select, p.n, s.N);
    printf("RESULT match_s=%.3f select_s=%.4f gflops=%.1f\n", t_match, t_select,
           flops / t_match * 1e-9);
    share_plan_free(&p);
    share_sim_free(&s);
    for (int i = 0; i < 3 * L; i++) free(bufs[i]);
    free(bufs);
    free(views);
    return 0;
}
