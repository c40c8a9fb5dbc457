// test_stories260k.c: the real pretrained llama2.c model loads through the
// llama2.c importer (GQA, tied) and its greedy decode from BOS, through our
// forward pass and tokenizer, starts with the text its README documents.
// Skips when ../shared/data is absent.
#include <string.h>

#include "backend.h"
#include "common.h"
#include "generate.h"
#include "hf_io.h"
#include "modelsrc.h"
#include "model.h"
#include "test.h"
#include "tokenizer.h"

int main(void) {
    const char *data = t_shared_data();
    if (!data) {
        T_SKIP("../shared/data not found: stories260K decode test skipped");
        return t_summary();
    }
    char mpath[4200], tpath[4200];
    snprintf(mpath, sizeof mpath, "%s/models/stories260K/stories260K.bin", data);
    snprintf(tpath, sizeof tpath, "%s/models/stories260K/tok512.bin", data);
    HostWeights w;
    int rc = model_load_any(mpath, &w);
    T_CHECK(rc == 0, "load %s: %s", mpath, ps_err_msg());
    if (rc) return t_summary();
    const LlamaConfig *c = &w.t.cfg;
    T_CHECK(c->n_heads == 8 && c->n_kv_heads == 4 && c->tie_embeddings, "GQA tied config");
    Tokenizer *tok = tok_open(tpath);
    T_CHECK(tok != NULL, "tokenizer: %s", ps_err_msg());
    if (!tok) return t_summary();

    Model M;
    model_init(&M, backend_cpu(), c);
    model_set_params(&M, w.params);
    int bos = tok->bos_id, n = 0;
    int *seq = generate_tokens(&M, &bos, 1, 40, 0.0f, 0, tok->eos_id, 1, &n);
    // greedy with the KV cache = greedy recomputing the prefix, over 200 tokens
    int n_c = 0, n_r = 0;
    int *seq_c = generate_tokens(&M, &bos, 1, 200, 0.0f, 0, -1, 1, &n_c);
    int *seq_r = generate_tokens(&M, &bos, 1, 200, 0.0f, 0, -1, 0, &n_r);
    T_CHECK(n_c == 201 && n_r == 201 && !memcmp(seq_c, seq_r, sizeof(int) * 201),
            "greedy decode with the KV cache differs from the one without (%d vs %d tokens)", n_c,
            n_r);
    free(seq_c);
    free(seq_r);
    size_t len;
    char *text = tok_decode_all(tok, seq, (size_t)n, &len);
    const char *expect =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
        "park.";
    printf("greedy decode: %s\n", text);
    T_CHECK(strncmp(text, expect, strlen(expect)) == 0, "decode starts with the README text");
    free(text);
    free(seq);
    model_free(&M);
    tok_free(tok);
    host_weights_free(&w);
    return t_summary();
}
