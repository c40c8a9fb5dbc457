// test_smollm2.c: SmolLM2-135M-Instruct from its Q4_1 GGUF (scripts/fetch_smollm2.sh)
// against HF transformers, which loads the same GGUF with its own dequantization and
// q/k un-permutation (tests/make_smollm2_reference.py -> fixtures/smollm2/reference.json,
// float64): the config read from the metadata, the loss on two fixed 64-token windows
// (|ours - ref| <= 2e-5), and 50 greedily generated tokens, which must all match
// (in one teacher-forced forward, and by generate_tokens with the KV cache).
// Skips when the GGUF cannot be had (no cache, no PyPI).
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>

#include "backend.h"
#include "common.h"
#include "generate.h"
#include "model.h"
#include "modelsrc.h"
#include "test.h"

static int *int_array(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int *r = xmalloc(sizeof(int) * (size_t)(*n ? *n : 1)), i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) r[i++] = e->valueint;
    return r;
}

int main(void) {
    char why[4600];
    const char *gguf = t_smollm2_gguf(why, sizeof why);
    if (!gguf) {
        T_SKIP("%s", why);
        return t_summary();
    }
    char refp[4200];
    snprintf(refp, sizeof refp, "%s/tests/fixtures/smollm2/reference.json", PS_SOURCE_DIR);
    size_t len;
    char *txt = ps_read_file(refp, &len);
    CHECK(txt, "%s", ps_err_msg());
    cJSON *ref = cJSON_ParseWithLength(txt, len);
    CHECK(ref, "%s: not JSON", refp);
    struct stat st;
    CHECK(stat(gguf, &st) == 0, "%s", gguf);
    T_CHECK((double)st.st_size == cJSON_GetObjectItem(ref, "gguf_bytes")->valuedouble,
            "%s is not the file the reference was made from", gguf);

    char spec[4200];
    snprintf(spec, sizeof spec, "gguf:%s", gguf);
    HostWeights w;
    int rc = model_load_any(spec, &w);
    T_CHECK(rc == 0, "load %s: %s", spec, ps_err_msg());
    if (rc) return t_summary();
    const LlamaConfig *c = &w.t.cfg;
    T_CHECK(c->n_layers == 30 && c->dim == 576 && c->n_heads == 9 && c->n_kv_heads == 3 &&
                cfg_head_dim(c) == 64 && c->ffn_dim == 1536 && c->vocab_size == 49152 &&
                c->tie_embeddings && c->rope_theta == 100000.0f && c->norm_eps == 1e-5f &&
                c->max_seq_len == 8192 && c->rope_type == ROPE_DEFAULT,
            "SmolLM2 config from the GGUF metadata");

    Model M;
    model_init(&M, backend_cpu(), c);
    model_set_params(&M, w.params);
    // loss on the reference windows
    const cJSON *wins = cJSON_GetObjectItem(ref, "windows");
    int T = cJSON_GetObjectItem(ref, "T")->valueint, B = cJSON_GetArraySize(wins);
    int *tok = xmalloc(sizeof(int) * (size_t)B * T), *tgt = xmalloc(sizeof(int) * (size_t)B * T);
    for (int b = 0; b < B; b++) {
        int n;
        int *ids = int_array(cJSON_GetArrayItem(wins, b), &n);
        CHECK(n == T + 1, "window %d has %d ids", b, n);
        memcpy(tok + (size_t)b * T, ids, sizeof(int) * (size_t)T);
        memcpy(tgt + (size_t)b * T, ids + 1, sizeof(int) * (size_t)T);
        free(ids);
    }
    double loss = model_forward(&M, tok, tgt, B, T);
    double want = cJSON_GetObjectItem(ref, "loss")->valuedouble;
    printf("SmolLM2 loss over %d x %d tokens: %.7f, transformers %.7f (|diff| %.2e)\n", B, T, loss,
           want, fabs(loss - want));
    T_CHECK(fabs(loss - want) <= 2e-5, "loss %.7f vs transformers %.7f", loss, want);
    for (int b = 0; b < B; b++) {
        double lb = model_forward(&M, tok + (size_t)b * T, tgt + (size_t)b * T, 1, T);
        double wb = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "window_loss"), b)->valuedouble;
        T_CHECK(fabs(lb - wb) <= 2e-5, "window %d loss %.7f vs %.7f", b, lb, wb);
    }
    // greedy generation, token by token. All 50: one forward over prompt + the reference
    // tokens, whose argmax at every position must be the next reference token (a causal
    // model's logits at t depend only on tokens <= t, so this is what greedy decoding
    // computes); and postshare's own decoder (generate_tokens, with the KV cache).
    int np, ng;
    int *prompt = int_array(cJSON_GetObjectItem(ref, "prompt_ids"), &np);
    int *greedy = int_array(cJSON_GetObjectItem(ref, "greedy"), &ng);
    int L = np + ng - 1, V = c->vocab_size;
    int *full = xmalloc(sizeof(int) * (size_t)L);
    memcpy(full, prompt, sizeof(int) * (size_t)np);
    memcpy(full + np, greedy, sizeof(int) * (size_t)(ng - 1));
    model_forward(&M, full, NULL, 1, L);
    float *lg = xmalloc(sizeof(float) * (size_t)L * V);
    model_get_logits(&M, lg);
    int match = 0;
    for (; match < ng; match++) {
        const float *row = lg + (size_t)(np - 1 + match) * V;
        int best = 0;
        for (int v = 1; v < V; v++)
            if (row[v] > row[best]) best = v;
        if (best != greedy[match]) break;
    }
    printf("greedy: %d of %d tokens equal transformers' (teacher-forced argmax)\n", match, ng);
    T_CHECK(match == ng, "greedy tokens match only %d of %d", match, ng);
    const int n_dec = ng;  // with the KV cache: all 50 tokens cost little
    int n = 0;
    int *seq = generate_tokens(&M, prompt, np, n_dec, 0.0f, 0, -1, 1, &n);
    int dec = 0;
    while (dec < n_dec && np + dec < n && seq[np + dec] == greedy[dec]) dec++;
    printf("generate_tokens: %d of %d tokens equal transformers'\n", dec, n_dec);
    T_CHECK(dec == n_dec, "generate_tokens matches only %d of %d", dec, n_dec);
    free(full);
    free(lg);
    free(seq);
    free(prompt);
    free(greedy);
    free(tok);
    free(tgt);
    model_free(&M);
    host_weights_free(&w);
    cJSON_Delete(ref);
    free(txt);
    return t_summary();
}
