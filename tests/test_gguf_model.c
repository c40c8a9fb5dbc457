// test_gguf_model.c: LLaMA models from GGUF files (gguf_llama.c, via the loader's
// gguf: spec and a bare .gguf path).
//  - tests/fixtures/gguf_tiny/model.gguf (tests/make_gguf_fixture.py: GQA, untied,
//    head_dim 16, every supported tensor type, q/k rows permuted as llama.cpp's
//    converter does): our logits equal those of transformers, which loaded the same
//    file with its own dequantization and un-permutation (rel err <= 1e-4).
//  - hand-made F32 GGUF files (tests/gguf_build.h): the config from the metadata and
//    the q/k row order (a row's values name the HF row they must land in), and every
//    refusal: another architecture, a missing, unexpected or misshapen tensor, an
//    unsupported tensor type, rope_freqs, partial rotary, a damaged file.
#define _XOPEN_SOURCE 700
#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "backend.h"
#include "common.h"
#include "gguf_build.h"
#include "gguf_llama.h"
#include "hf_io.h"
#include "jsonio.h"
#include "model.h"
#include "modelsrc.h"
#include "safetensors.h"
#include "test.h"
#include "test_ref.h"
#include "tokenizer.h"

static char g_dir[] = "/tmp/test_gguf_model_XXXXXX";

static void test_fixture(void) {
    char path[4200], ref[4200], spec[4300];
    snprintf(path, sizeof path, "%s/tests/fixtures/gguf_tiny/model.gguf", PS_SOURCE_DIR);
    snprintf(ref, sizeof ref, "%s/tests/fixtures/gguf_tiny/reference.safetensors", PS_SOURCE_DIR);
    snprintf(spec, sizeof spec, "gguf:%s", path);
    HostWeights w, w2;
    int rc = model_load_any(spec, &w);
    T_CHECK(rc == 0, "load %s: %s", spec, ps_err_msg());
    if (rc) return;
    const LlamaConfig *c = &w.t.cfg;
    T_CHECK(c->dim == 64 && c->n_layers == 2 && c->n_heads == 4 && c->n_kv_heads == 2 &&
                cfg_head_dim(c) == 16 && c->ffn_dim == 128 &&
                c->vocab_size == 96 && !c->tie_embeddings && c->max_seq_len == 128 &&
                c->rope_theta == 10000.0f && c->norm_eps == 1e-5f,
            "gguf_tiny config");
    // a bare path ending in .gguf loads the same
    T_CHECK(model_load_any(path, &w2) == 0 && w2.t.total == w.t.total &&
                !memcmp(w2.params, w.params, sizeof(float) * w.t.total),
            "bare .gguf path: %s", ps_err_msg());
    host_weights_free(&w2);

    StFile rf;
    CHECK(st_open(ref, &rf) == 0, "%s", ps_err_msg());
    const StTensor *tt = st_find(&rf, "tokens");
    int B = (int)tt->shape[0], T = (int)tt->shape[1], V = c->vocab_size;
    int *tok = xmalloc(sizeof(int) * (size_t)B * T);
    CHECK(st_read_i32(&rf, tt, tok) == 0, "%s", ps_err_msg());
    Model M;
    model_init(&M, backend_cpu(), c);
    model_set_params(&M, w.params);
    model_forward(&M, tok, NULL, B, T);
    float *logits = xmalloc(sizeof(float) * (size_t)B * T * V);
    model_get_logits(&M, logits);
    float *want = t_read_ref(&rf, "logits", (size_t)B * T * V);
    double e = t_rel_err(logits, want, (size_t)B * T * V);
    printf("gguf_tiny (Q8_0, Q4_0, Q4_1, F16, BF16, F32): logits rel err vs transformers %.2e\n",
           e);
    T_CHECK(e <= 1e-4, "gguf_tiny logits rel err %.3g", e);
    free(want);
    free(logits);
    free(tok);
    model_free(&M);
    st_close(&rf);
    host_weights_free(&w);
}

// A hand-made F32 llama GGUF: C 8, 1 layer, 2 heads (hd 4), 1 KV head, F 16, V 5.
// Every value of row r of a q/k tensor is 1000*kind + r in the GGUF's (interleaved)
// row order; other tensors hold 0.5. Options damage it.
// O_TOK: no damage, V 12 and a byte-level BPE tokenizer in the metadata.
enum {
    O_NONE = 0,
    O_ARCH,
    O_MISSING,
    O_EXTRA,
    O_SHAPE,
    O_Q4K,
    O_ROPE_FREQS,
    O_PARTIAL,
    O_TRUNC,
    O_TOK
};

// O_TOK's tokenizer: byte-level strings (Ġ space, Ċ newline), types (3 control,
// 4 user-defined), bos 2, eos 1, pad 0 (not llama's 1/2), BOS added.
static const char *const TOK_STR[12] = {"<|pad|>",
                                        "<|eos|>",
                                        "<|bos|>",
                                        "a",
                                        "b",
                                        "\xc4\xa0",
                                        "ab",
                                        "\xc4\xa0"
                                        "a",
                                        "1",
                                        "2",
                                        "\xc4\x8a",
                                        "<|user|>"};
static const int32_t TOK_TYPE[12] = {3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4};
static const char *const TOK_MERGES[2] = {"a b", "\xc4\xa0 a"};

static void tok_meta(GB *b) {
    gb_kv_str(b, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(b, "tokenizer.ggml.pre", "smollm");
    gb_kv_arr_str(b, "tokenizer.ggml.tokens", 12, TOK_STR);
    gb_kv_arr_i32(b, "tokenizer.ggml.token_type", 12, TOK_TYPE);
    gb_kv_arr_str(b, "tokenizer.ggml.merges", 2, TOK_MERGES);
    gb_kv_u32(b, "tokenizer.ggml.bos_token_id", 2);
    gb_kv_u32(b, "tokenizer.ggml.eos_token_id", 1);
    gb_kv_u32(b, "tokenizer.ggml.padding_token_id", 0);
    gb_kv_bool(b, "tokenizer.ggml.add_bos_token", 1);
}

static const char *make(int opt) {
    static char path[256];
    snprintf(path, sizeof path, "%s/m%d.gguf", g_dir, opt);
    const int C = 8, F = 16, V = opt == O_TOK ? 12 : 5, HD = 4;
    struct {
        const char *name;
        uint64_t ne0, ne1;  // ne1 0: a vector
    } ts[] = {{"token_embd.weight", C, V},        {"blk.0.attn_norm.weight", C, 0},
              {"blk.0.attn_q.weight", C, 2 * HD}, {"blk.0.attn_k.weight", C, HD},
              {"blk.0.attn_v.weight", C, HD},     {"blk.0.attn_output.weight", 2 * HD, C},
              {"blk.0.ffn_norm.weight", C, 0},    {"blk.0.ffn_gate.weight", C, F},
              {"blk.0.ffn_up.weight", C, F},      {"blk.0.ffn_down.weight", F, C},
              {"output_norm.weight", C, 0},       {"extra.weight", C, 0}};
    int n = 11 + (opt == O_EXTRA || opt == O_ROPE_FREQS);
    if (opt == O_ROPE_FREQS) ts[11].name = "rope_freqs.weight", ts[11].ne0 = HD / 2;
    if (opt == O_MISSING) ts[4] = ts[--n];  // drop attn_v
    if (opt == O_SHAPE) ts[9].ne0 = F + 32;
    GB b;
    memset(&b, 0, sizeof b);
    gb_header(&b, 3, (uint64_t)n, opt == O_TOK ? 19 : 10);
    if (opt == O_TOK) tok_meta(&b);
    gb_kv_str(&b, "general.architecture", opt == O_ARCH ? "qwen2" : "llama");
    gb_kv_u32(&b, "llama.context_length", 32);
    gb_kv_u32(&b, "llama.embedding_length", C);
    gb_kv_u32(&b, "llama.block_count", 1);
    gb_kv_u32(&b, "llama.feed_forward_length", F);
    gb_kv_u32(&b, "llama.attention.head_count", 2);
    gb_kv_u32(&b, "llama.attention.head_count_kv", 1);
    gb_kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
    gb_kv_f32(&b, "llama.rope.freq_base", 500.0f);
    gb_kv_u32(&b, "llama.rope.dimension_count", opt == O_PARTIAL ? 2 : HD);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t ne[2] = {ts[i].ne0, ts[i].ne1};
        uint64_t cnt = ts[i].ne0 * (ts[i].ne1 ? ts[i].ne1 : 1);
        uint32_t type = 0;
        uint64_t bytes = 4 * cnt;
        if (opt == O_Q4K && i == 7) type = 12, ne[0] = 256, bytes = 144 * ts[i].ne1;
        gb_tinfo(&b, ts[i].name, ts[i].ne1 ? 2 : 1, ne, type, off);
        off += (bytes + 31) / 32 * 32;
    }
    gb_pad(&b, 32);
    for (int i = 0; i < n; i++) {
        uint64_t rows = ts[i].ne1 ? ts[i].ne1 : 1, cols = ts[i].ne0;
        if (opt == O_Q4K && i == 7) {
            uint8_t z[144] = {0};
            for (uint64_t r = 0; r < rows; r++) gb_put(&b, z, sizeof z);
        } else {
            int kind = !strcmp(ts[i].name, "blk.0.attn_q.weight")   ? 1
                       : !strcmp(ts[i].name, "blk.0.attn_k.weight") ? 2
                                                                    : 0;
            for (uint64_t r = 0; r < rows; r++)
                for (uint64_t k = 0; k < cols; k++) {
                    float v = kind ? (float)(1000 * kind + (int)r) : 0.5f;
                    gb_put(&b, &v, 4);
                }
        }
        gb_pad(&b, 32);
    }
    size_t len = opt == O_TRUNC ? b.n - 40 : b.n;
    FILE *fp = xfopen(path, "wb");
    fwrite(b.p, 1, len, fp);
    fclose(fp);
    free(b.p);
    return path;
}

static void test_handmade(void) {
    HostWeights w;
    const char *p = make(O_NONE);
    int rc = gguf_load_llama(p, &w);
    T_CHECK(rc == 0, "hand-made: %s", ps_err_msg());
    if (rc == 0) {
        const LlamaConfig *c = &w.t.cfg;
        T_CHECK(c->dim == 8 && c->n_heads == 2 && c->n_kv_heads == 1 && c->head_dim == 0 &&
                    cfg_head_dim(c) == 4 && c->vocab_size == 5 && c->tie_embeddings &&
                    c->rope_theta == 500.0f && c->norm_eps == 1e-6f && c->max_seq_len == 32,
                "hand-made config (tied: no output.weight)");
        // HF row h*hd + t*hd/2 + j comes from GGUF row h*hd + 2j + t
        const ParamEntry *q = param_layer(&w.t, 0, P_WQ), *k = param_layer(&w.t, 0, P_WK);
        static const int want_q[8] = {0, 2, 1, 3, 4, 6, 5, 7};
        int okq = 1, okk = 1;
        for (int r = 0; r < 8; r++)
            okq &= w.params[q->offset + (size_t)r * 8 + 3] == 1000 + want_q[r];
        for (int r = 0; r < 4; r++) okk &= w.params[k->offset + (size_t)r * 8] == 2000 + want_q[r];
        T_CHECK(okq && okk, "q/k rows back in HF order");
        host_weights_free(&w);
    }
    EXPECT_FAIL(gguf_load_llama(make(O_ARCH), &w), "m1.gguf", "\"qwen2\"", "not supported");
    EXPECT_FAIL(gguf_load_llama(make(O_MISSING), &w), "m2.gguf",
                "missing tensor 'blk.0.attn_v.weight'");
    EXPECT_FAIL(gguf_load_llama(make(O_EXTRA), &w), "m3.gguf", "unexpected tensor 'extra.weight'");
    EXPECT_FAIL(gguf_load_llama(make(O_SHAPE), &w), "m4.gguf", "'blk.0.ffn_down.weight'",
                "expected");
    EXPECT_FAIL(gguf_load_llama(make(O_Q4K), &w), "m5.gguf", "'blk.0.ffn_gate.weight'", "Q4_K",
                "not supported");
    EXPECT_FAIL(gguf_load_llama(make(O_ROPE_FREQS), &w), "m6.gguf", "rope_freqs");
    EXPECT_FAIL(gguf_load_llama(make(O_PARTIAL), &w), "m7.gguf", "dimension_count 2", "partial");
    EXPECT_FAIL(gguf_load_llama(make(O_TRUNC), &w), "m8.gguf", "past the end");
    char spec[300];
    snprintf(spec, sizeof spec, "gguf:%s/nope.gguf", g_dir);
    EXPECT_FAIL(model_load_any(spec, &w), "nope.gguf", "cannot open");
    int bos, eos, pad;
    T_CHECK(gguf_special_ids(make(O_NONE), &bos, &eos, &pad) == 0 && bos == -1 && eos == -1 &&
                pad == -1,
            "no special ids in the metadata");
}

// config.json / generation_config.json: key holds the number want.
static void check_id(const char *dir, const char *file, const char *key, int want) {
    char *p = ps_path_join(dir, file);
    size_t len;
    char *txt = ps_read_file(p, &len);
    cJSON *j = txt ? ps_json_parse(txt, len, p) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    T_CHECK(cJSON_IsNumber(v) && v->valueint == want, "%s: %s is not %d", p, key, want);
    cJSON_Delete(j);
    free(txt);
    free(p);
}

// An export of a GGUF model carries its tokenizer and its special ids: the
// tokenizer.json written from the metadata encodes as the GGUF tokenizer does.
static void test_export(void) {
    char spec[300], dir[300];
    snprintf(spec, sizeof spec, "gguf:%s", make(O_TOK));
    snprintf(dir, sizeof dir, "%s/export", g_dir);
    HfExport x;
    HostWeights w;
    T_CHECK(model_export_info(spec, NULL, &x) == 0 && x.bos_id == 2 && x.n_eos == 1 &&
                x.eos_id[0] == 1 && x.pad_id == 0 && !strcmp(x.tokenizer, spec),
            "export info of %s: %s", spec, ps_err_msg());
    int rc = model_load_any(spec, &w);
    T_CHECK(rc == 0, "%s", ps_err_msg());
    if (rc) return;
    T_CHECK(hf_save_export(dir, &w, "float32", &x) == 0, "export: %s", ps_err_msg());
    host_weights_free(&w);
    const char *files[2] = {"config.json", "generation_config.json"};
    for (int f = 0; f < 2; f++) {
        check_id(dir, files[f], "bos_token_id", 2);
        check_id(dir, files[f], "eos_token_id", 1);
        check_id(dir, files[f], "pad_token_id", 0);
    }
    Tokenizer *a = tok_open(spec), *b = tok_open(dir);
    T_CHECK(a && b, "tokenizers: %s", ps_err_msg());
    if (!a || !b) return;
    T_CHECK(b->bos_id == 2 && b->eos_id == 1, "export's tokenizer: bos %d eos %d", b->bos_id,
            b->eos_id);
    const char *texts[] = {"ab a\n12 <|user|>ba", "<|bos|>aab<|eos|> 21", "", "  a\n\nb"};
    for (int i = 0; i < 4; i++) {
        size_t na, nb;
        int *ia = tok_encode(a, texts[i], strlen(texts[i]), 1, &na);
        int *ib = tok_encode(b, texts[i], strlen(texts[i]), 1, &nb);
        T_CHECK(na == nb && !memcmp(ia, ib, na * sizeof(int)) && na > 0 && ia[0] == 2,
                "'%s': %zu ids from the GGUF, %zu from the export", texts[i], na, nb);
        free(ia);
        free(ib);
    }
    tok_free(a);
    tok_free(b);
    // a llama2.c model has no tokenizer of its own: the export says so and
    // carries llama2.c's ids; a sentencepiece GGUF tokenizer is not exported
    char note[512];
    int ids[3];
    char spm[4200];
    snprintf(spm, sizeof spm, "%s/../shared/data/tokenizers/llama2/ggml-vocab-llama-spm.gguf",
             PS_SOURCE_DIR);
    if (ps_is_file(spm)) {
        T_CHECK(
            tok_export_hf(spm, dir, ids, note, sizeof note) == 0 && strstr(note, "sentencepiece"),
            "sentencepiece GGUF: %s", note);
    } else {
        printf("SKIP: %s is absent: the sentencepiece GGUF case is skipped\n", spm);
    }
    ps_remove_tree(dir);
}

int main(void) {
    CHECK(mkdtemp(g_dir), "mkdtemp");
    test_fixture();
    test_handmade();
    test_export();
    for (int i = O_NONE; i <= O_TOK; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s/m%d.gguf", g_dir, i);
        unlink(p);
    }
    rmdir(g_dir);
    return t_summary();
}
