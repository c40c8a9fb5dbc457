// generate.c: greedy or sampled generation (see generate.h). With a KV cache
// (backends with its ops: the CPU) the prompt runs once and each new token is
// one position's forward against the cached keys and values; without one each
// new token runs the full forward over the sequence so far.
#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cliargs.h"
#include "common.h"
#include "hf_io.h"
#include "modelsrc.h"
#include "train.h"

int *generate_tokens(Model *M, const int *prompt, int n_prompt, int n_new, float temperature,
                     uint64_t seed, int eos_id, int use_cache, int *n_out) {
    CHECK(n_prompt > 0, "generation needs a non-empty prompt (at least BOS)");
    int V = M->cfg.vocab_size, cap = n_prompt + n_new;
    if (cap > M->cfg.max_seq_len) cap = M->cfg.max_seq_len;
    CHECK(n_prompt <= cap, "prompt of %d tokens exceeds max_seq_len %d", n_prompt, cap);
    int *seq = xmalloc(sizeof(int) * (size_t)cap);
    memcpy(seq, prompt, sizeof(int) * (size_t)n_prompt);
    int n = n_prompt, fed = 0;  // fed: tokens in the KV cache
    use_cache = use_cache && model_has_cache_ops(M);
    if (use_cache) model_cache_start(M, 1, cap);
    float *logits = xmalloc(sizeof(float) * (size_t)(use_cache ? n_prompt : cap) * V);
    Rng rng;
    rng_seed(&rng, seed);
    while (n < cap) {
        int rows = n;  // positions whose logits the forward gives
        if (use_cache) {
            rows = n - fed;
            model_forward_next(M, seq + fed, 1, rows);
            fed = n;
        } else {
            model_forward(M, seq, NULL, 1, n);
        }
        model_get_logits(M, logits);
        const float *l = logits + (size_t)(rows - 1) * V;  // next-token logits at the last position
        int next = 0;
        if (temperature <= 0.0f) {
            for (int j = 1; j < V; j++)
                if (l[j] > l[next]) next = j;
        } else {
            float mx = l[0];
            for (int j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
            double sum = 0.0;
            for (int j = 0; j < V; j++) sum += exp((l[j] - mx) / temperature);
            double u = rng_uniform(&rng) * sum, acc = 0.0;
            next = V - 1;
            for (int j = 0; j < V; j++) {
                acc += exp((l[j] - mx) / temperature);
                if (acc >= u) {
                    next = j;
                    break;
                }
            }
        }
        seq[n++] = next;
        if (next == eos_id) break;
    }
    free(logits);
    if (use_cache) model_cache_free(M);
    *n_out = n;
    return seq;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: postshare generate MODEL --tokenizer SPEC [options]\n"
            "  MODEL               hf:DIR, llama2c:FILE.bin, gguf:FILE, shared:DIR, or a path\n"
            "  --tokenizer SPEC    byte | llama2c:FILE.bin | FILE.model (required)\n"
            "  --prompt TEXT       text to continue (default: empty, i.e. start from BOS)\n"
            "  --steps N           tokens to generate (default 256, capped by max_seq_len)\n"
            "  --temperature F     0 = greedy (default), > 0 samples\n"
            "  --seed N            sampling seed (default 1337)\n"
            "  --no-cache          recompute the whole prefix for every token (no KV cache)\n");
}

int generate_main(int argc, char **argv) {
    const char *model = NULL, *tok_spec = NULL, *prompt = "";
    int steps = 256;
    float temperature = 0.0f;
    uint64_t seed = 1337;
    int use_cache = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--tokenizer") && has_next) {
            tok_spec = argv[++i];
        } else if (!strcmp(a, "--prompt") && has_next) {
            prompt = argv[++i];
        } else if (!strcmp(a, "--steps") && has_next) {
            steps = (int)cli_int("generate", a, argv[++i], 1, 1 << 20);
        } else if (!strcmp(a, "--temperature") && has_next) {
            temperature = (float)cli_float("generate", a, argv[++i], 0.0, 100.0);
        } else if (!strcmp(a, "--no-cache")) {
            use_cache = 0;
        } else if (!strcmp(a, "--seed") && has_next) {
            seed = (uint64_t)cli_int("generate", a, argv[++i], 0, 0x7fffffffL);
        } else {
            cli_positional("generate", a, &model, "MODEL");
        }
    }
    if (!model || !tok_spec) {
        usage(stderr);
        ps_die("generate: MODEL and --tokenizer are required");
    }
    HostWeights w;
    if (model_load_any_shared(model, &w) != 0) ps_die("%s", ps_err_msg());
    Tokenizer *tok = tok_open(tok_spec);
    if (!tok) ps_die("%s", ps_err_msg());
    if (tok->vocab_size != w.t.cfg.vocab_size)
        ps_die("tokenizer %s has %d tokens but the model's vocab_size is %d", tok_spec,
               tok->vocab_size, w.t.cfg.vocab_size);
    size_t np = 0;
    int *ids = tok_encode(tok, prompt, strlen(prompt), 1, &np);
    if (np == 0) {  // byte tokenizer, empty prompt: start from a newline
        free(ids);
        ids = tok_encode(tok, "\n", 1, 1, &np);
    }
    Model M;
    model_init_table(&M, backend_get("auto"), &w.t);
    model_set_forward_only(&M, 1);
    model_take_params(&M, &w.params);
    int n = 0;
    int *seq =
        generate_tokens(&M, ids, (int)np, steps, temperature, seed, tok->eos_id, use_cache, &n);
    size_t len = 0;
    char *text = tok_decode_all(tok, seq, (size_t)n, &len);
    fwrite(text, 1, len, stdout);
    printf("\n");
    free(text);
    free(seq);
    free(ids);
    model_free(&M);
    tok_free(tok);
    host_weights_free(&w);
    return 0;
}
