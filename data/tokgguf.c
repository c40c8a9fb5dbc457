// tokgguf.c: the tokenizer of a GGUF file, from its tokenizer.ggml.* metadata.
//
// tokenizer.ggml.model "gpt2": byte-level BPE (bpe.h): tokens (byte-level
// strings), merges ("a b"), token_type (3 control / 4 user-defined tokens are
// matched in the text as special tokens, as HF's GGUF conversion makes them),
// and the pre-tokenizer named by tokenizer.ggml.pre, as llama.cpp names them:
//   gpt-2                      GPT-2's regex (HF ByteLevel with use_regex)
//   smollm, starcoder          each digit alone, then GPT-2's regex (HF Digits
//                              individual_digits + ByteLevel: SmolLM/SmolLM2)
//   llama-bpe, smaug-bpe       Llama 3's regex, ignore_merges
// Other names are refused: their regexes differ and are not implemented.
// tokenizer.ggml.model "llama": sentencepiece BPE (tokens with U+2581 for
// spaces, scores, token types, add_space_prefix), encoded by tokenizer.c's
// sentencepiece code.
// bos/eos/unknown ids from tokenizer.ggml.{bos,eos,unknown}_token_id; BOS is
// added when tokenizer.ggml.add_bos_token says so (absent: llama and
// llama-bpe add it, others do not).
#define _POSIX_C_SOURCE 200809L
#include <string.h>

#include "bpe.h"
#include "common.h"
#include "gguf.h"
#include "jsonio.h"
#include "tok_internal.h"

enum { MAX_TOKENS = 1 << 22 };

typedef struct {
    const char *name;
    int digits, llama3;
} PreKind;

static const PreKind PRE[] = {
    {"gpt-2", 0, 0},     {"smollm", 1, 0},    {"starcoder", 1, 0},
    {"llama-bpe", 0, 1}, {"smaug-bpe", 0, 1},
};

// An optional id key: -1 when absent or outside the vocabulary.
static int opt_id(const GgufFile *g, const char *key, int n) {
    uint32_t v;
    if (!gguf_find(g, key) || gguf_get_u32(g, key, &v) != 0 || v >= (uint32_t)n) return -1;
    return (int)v;
}

static int opt_bool(const GgufFile *g, const char *key, int def) {
    int b;
    return gguf_find(g, key) && gguf_get_bool(g, key, &b) == 0 ? b : def;
}

static Tokenizer *from_bpe(const GgufFile *g, const char *path, const GgufStr *tok, int n,
                           const int32_t *type) {
    char *pre = NULL;
    if (gguf_find(g, "tokenizer.ggml.pre") && gguf_get_str(g, "tokenizer.ggml.pre", &pre) != 0)
        return NULL;
    const PreKind *pk = NULL;
    for (size_t i = 0; i < sizeof PRE / sizeof PRE[0]; i++)
        if (pre && !strcmp(pre, PRE[i].name)) pk = &PRE[i];
    if (!pk) {
        ps_err_set(
            "%s: tokenizer.ggml.pre '%s' is not supported (gpt-2, smollm, starcoder, "
            "llama-bpe and smaug-bpe are)",
            path, pre ? pre : "(absent: llama.cpp's default)");
        free(pre);
        return NULL;
    }
    GgufStr *mg = NULL;
    uint64_t nm = 0;
    if (gguf_get_arr_str(g, "tokenizer.ggml.merges", &mg, &nm) != 0) {
        free(pre);
        return NULL;
    }
    Tokenizer *t = bpe_alloc(n);
    char *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (tok[i].len + 1 > cap) buf = xrealloc(buf, cap = 2 * tok[i].len + 64);
        size_t bl = bpe_unmap_bytes(tok[i].p, tok[i].len, buf);
        rc = bpe_set_token(t, i, buf, bl, TOK_PIECE_NORMAL, path);
    }
    free(buf);
    if (rc == 0) build_index(t);
    for (uint64_t i = 0; i < nm && rc == 0; i++) {
        const char *s = mg[i].p, *sp = memchr(s, ' ', mg[i].len);
        size_t an = sp ? (size_t)(sp - s) : 0, bn = sp ? mg[i].len - an - 1 : 0;
        int miss = sp && an && bn ? bpe_add_merge_strings(t, s, an, sp + 1, bn, (int)i) : 4;
        if (miss)
            rc = ps_err_set("%s: tokenizer.ggml.merges[%llu] ('%.*s'): %s", path,
                            (unsigned long long)i, (int)(mg[i].len < 60 ? mg[i].len : 60), s,
                            miss == 4   ? "not two tokens separated by a space"
                            : miss == 3 ? "the merged token is not a token"
                                        : "a part is not a token");
    }
    free(mg);
    for (int i = 0; i < n && rc == 0 && type; i++)
        if (type[i] == 3 || type[i] == 4) {
            if (t->piece_len[i] == 0) continue;
            t->type[i] = type[i] == 3 ? TOK_PIECE_CONTROL : TOK_PIECE_USER;
            rc = bpe_add_special(t, i, 0, 0, 0, path);
        }
    if (rc == 0) rc = pk->digits ? bpe_add_split(t, "\\p{N}", 0, 0, path) : 0;
    if (rc == 0) rc = bpe_add_split(t, pk->llama3 ? BPE_LLAMA3_REGEX : BPE_GPT2_REGEX, 0, 0, path);
    t->bos_id = opt_id(g, "tokenizer.ggml.bos_token_id", n);
    t->eos_id = opt_id(g, "tokenizer.ggml.eos_token_id", n);
    t->unk_id = opt_id(g, "tokenizer.ggml.unknown_token_id", n);
    int adds_bos = opt_bool(g, "tokenizer.ggml.add_bos_token", pk->llama3);
    bpe_set_flags(t, pk->llama3, adds_bos && t->bos_id >= 0);
    if (rc == 0) rc = bpe_finish(t, path);
    if (rc != 0) {
        tok_free(t);
        free(pre);
        return NULL;
    }
    snprintf(t->desc, sizeof t->desc,
             "byte-level BPE from GGUF %.200s: %d tokens, %llu merges, pre-tokenizer %s; bos %d "
             "(%s), eos %d",
             path, n, (unsigned long long)nm, pre, t->bos_id,
             adds_bos && t->bos_id >= 0 ? "added" : "not added", t->eos_id);
    free(pre);
    return t;
}

static Tokenizer *from_spm(const GgufFile *g, const char *path, const GgufStr *tok, int n,
                           const int32_t *type) {
    float *score = NULL;
    uint64_t ns = 0;
    if (gguf_get_arr_f32(g, "tokenizer.ggml.scores", &score, &ns) != 0) return NULL;
    if (ns != (uint64_t)n) {
        free(score);
        ps_err_set("%s: tokenizer.ggml.scores has %llu entries for %d tokens", path,
                   (unsigned long long)ns, n);
        return NULL;
    }
    Tokenizer *t = tok_alloc(n);
    for (int i = 0; i < n; i++) {
        // sentencepiece's U+2581 (E2 96 81) becomes ' ', as tokenizer.c stores pieces
        char *p = xmalloc(tok[i].len + 1);
        size_t o = 0;
        for (const char *s = tok[i].p, *e = s + tok[i].len; s < e;) {
            int sp = e - s >= 3 && !memcmp(s, "\xE2\x96\x81", 3);
            p[o++] = sp ? ' ' : *s;
            s += sp ? 3 : 1;
        }
        p[o] = 0;
        t->piece[i] = p;
        t->piece_len[i] = (int)o;
        t->score[i] = score[i];
        int ty = type ? type[i] : TOK_PIECE_NORMAL;
        t->type[i] = (unsigned char)(ty >= 1 && ty <= 6 ? ty : TOK_PIECE_NORMAL);
    }
    free(score);
    t->bos_id = opt_id(g, "tokenizer.ggml.bos_token_id", n);
    t->eos_id = opt_id(g, "tokenizer.ggml.eos_token_id", n);
    t->unk_id = opt_id(g, "tokenizer.ggml.unknown_token_id", n);
    t->add_dummy_prefix = opt_bool(g, "tokenizer.ggml.add_space_prefix", 1);
    t->remove_extra_ws = 0;
    if (finish_spm(t, path) != 0) {
        tok_free(t);
        return NULL;
    }
    snprintf(t->desc, sizeof t->desc,
             "sentencepiece BPE from GGUF %.200s: %d pieces, bos %d, eos %d, add_dummy_prefix %d",
             path, n, t->bos_id, t->eos_id, t->add_dummy_prefix);
    return t;
}

Tokenizer *tok_from_gguf(const GgufFile *g, const char *path) {
    char *model = NULL;
    if (gguf_get_str(g, "tokenizer.ggml.model", &model) != 0) return NULL;
    int bpe = !strcmp(model, "gpt2"), spm = !strcmp(model, "llama");
    if (!bpe && !spm) {
        ps_err_set(
            "%s: tokenizer.ggml.model '%s' is not supported (gpt2 = byte-level BPE, llama = "
            "sentencepiece BPE)",
            path, model);
        free(model);
        return NULL;
    }
    free(model);
    GgufStr *tok = NULL;
    int32_t *type = NULL;
    uint64_t n = 0, nt = 0;
    if (gguf_get_arr_str(g, "tokenizer.ggml.tokens", &tok, &n) != 0) return NULL;
    Tokenizer *t = NULL;
    if (n == 0 || n > MAX_TOKENS) {
        ps_err_set("%s: tokenizer.ggml.tokens has %llu entries (expected 1 to %d)", path,
                   (unsigned long long)n, MAX_TOKENS);
    } else if (gguf_find(g, "tokenizer.ggml.token_type") &&
               (gguf_get_arr_i32(g, "tokenizer.ggml.token_type", &type, &nt) != 0 || nt != n)) {
        if (nt != n)
            ps_err_set("%s: tokenizer.ggml.token_type has %llu entries for %llu tokens", path,
                       (unsigned long long)nt, (unsigned long long)n);
    } else {
        t = bpe ? from_bpe(g, path, tok, (int)n, type) : from_spm(g, path, tok, (int)n, type);
    }
    free(tok);
    free(type);
    return t;
}

Tokenizer *tok_open_gguf(const char *path) {
    GgufFile g;
    if (gguf_open(path, &g) != 0) return NULL;
    Tokenizer *t = tok_from_gguf(&g, path);
    gguf_close(&g);
    return t;
}

// ---------------------------------------------------------------------------
// export: tokenizer.json from the metadata (tok_export_hf)

// The pre-tokenizer of a PRE row, as HF writes it for those models: GPT-2
// (ByteLevel with its regex), SmolLM (Digits individual, then that), Llama 3
// (a Split by its regex, then ByteLevel without one).
static cJSON *pre_json(const PreKind *pk) {
    if (!pk->digits && !pk->llama3) return tok_json_byte_level(1);
    cJSON *seq = cJSON_CreateObject(), *arr;
    cJSON_AddStringToObject(seq, "type", "Sequence");
    arr = cJSON_AddArrayToObject(seq, "pretokenizers");
    cJSON *first = cJSON_CreateObject();
    if (pk->digits) {
        cJSON_AddStringToObject(first, "type", "Digits");
        cJSON_AddBoolToObject(first, "individual_digits", 1);
    } else {
        cJSON_AddStringToObject(first, "type", "Split");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(first, "pattern"), "Regex",
                                BPE_LLAMA3_REGEX);
        cJSON_AddStringToObject(first, "behavior", "Isolated");
        cJSON_AddBoolToObject(first, "invert", 0);
    }
    cJSON_AddItemToArray(arr, first);
    cJSON_AddItemToArray(arr, tok_json_byte_level(pk->digits));
    return seq;
}

// post_processor: BOS first when the tokenizer adds it.
static cJSON *bos_template(const char *bos, int bos_id) {
    cJSON *pp = cJSON_CreateObject();
    cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
    const char *lists[2] = {"single", "pair"};
    for (int l = 0; l < 2; l++) {
        cJSON *a = cJSON_AddArrayToObject(pp, lists[l]);
        for (int k = 0; k <= l; k++) {
            cJSON *s = cJSON_CreateObject(), *q = cJSON_CreateObject();
            cJSON *st = cJSON_AddObjectToObject(s, "SpecialToken");
            cJSON_AddStringToObject(st, "id", bos);
            cJSON_AddNumberToObject(st, "type_id", k);
            cJSON *sq = cJSON_AddObjectToObject(q, "Sequence");
            cJSON_AddStringToObject(sq, "id", k ? "B" : "A");
            cJSON_AddNumberToObject(sq, "type_id", k);
            cJSON_AddItemToArray(a, s);
            cJSON_AddItemToArray(a, q);
        }
    }
    cJSON *sp = cJSON_AddObjectToObject(cJSON_AddObjectToObject(pp, "special_tokens"), bos);
    cJSON_AddStringToObject(sp, "id", bos);
    cJSON_AddItemToObject(sp, "ids", cJSON_CreateIntArray(&bos_id, 1));
    cJSON_AddItemToObject(sp, "tokens", cJSON_CreateStringArray(&bos, 1));
    return pp;
}

static cJSON *added_json(const Tokenizer *t, int id, int with_id) {
    cJSON *o = cJSON_CreateObject();
    if (with_id) cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddStringToObject(o, "content", t->piece[id]);
    cJSON_AddBoolToObject(o, "single_word", 0);
    cJSON_AddBoolToObject(o, "lstrip", 0);
    cJSON_AddBoolToObject(o, "rstrip", 0);
    cJSON_AddBoolToObject(o, "normalized", 0);
    cJSON_AddBoolToObject(o, "special", t->type[id] == TOK_PIECE_CONTROL);
    return o;
}

int tok_gguf_export_hf(const GgufFile *g, const char *path, const Tokenizer *t, const char *dir,
                       int ids[3], char *note, size_t note_cap) {
    ids[2] = opt_id(g, "tokenizer.ggml.padding_token_id", t->vocab_size);
    if (t->kind != TOK_BPE) {
        snprintf(note, note_cap,
                 "%s: its sentencepiece tokenizer (tokenizer.ggml.model llama) has no HF export "
                 "yet; only byte-level BPE (gpt2) GGUF tokenizers are written as tokenizer.json",
                 path);
        return 0;
    }
    // from_bpe has accepted everything read here
    char *pre = NULL;
    const PreKind *pk = NULL;
    if (gguf_get_str(g, "tokenizer.ggml.pre", &pre) != 0) return -1;
    for (size_t i = 0; i < sizeof PRE / sizeof PRE[0]; i++)
        if (!strcmp(pre, PRE[i].name)) pk = &PRE[i];
    free(pre);
    GgufStr *tok = NULL, *mg = NULL;
    uint64_t n = 0, nm = 0;
    if (!pk || gguf_get_arr_str(g, "tokenizer.ggml.tokens", &tok, &n) != 0) return -1;
    if (gguf_get_arr_str(g, "tokenizer.ggml.merges", &mg, &nm) != 0) {
        free(tok);
        return -1;
    }
    int adds_bos = opt_bool(g, "tokenizer.ggml.add_bos_token", pk->llama3) && t->bos_id >= 0;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON *extra = cJSON_CreateObject(), *dec = cJSON_CreateObject();
    cJSON_AddStringToObject(extra, "tokenizer_class", "PreTrainedTokenizerFast");
    cJSON_AddBoolToObject(extra, "add_bos_token", adds_bos);
    cJSON_AddBoolToObject(extra, "add_eos_token", 0);
    for (int i = 0; i < t->vocab_size; i++)
        if (t->type[i] == TOK_PIECE_CONTROL || t->type[i] == TOK_PIECE_USER) {
            char key[16];
            snprintf(key, sizeof key, "%d", i);
            cJSON_AddItemToArray(added, added_json(t, i, 1));
            cJSON_AddItemToObject(dec, key, added_json(t, i, 0));
        }
    cJSON_AddItemToObject(extra, "added_tokens_decoder", dec);
    cJSON_AddNullToObject(root, "normalizer");
    cJSON_AddItemToObject(root, "pre_tokenizer", pre_json(pk));
    if (adds_bos)
        cJSON_AddItemToObject(root, "post_processor", bos_template(t->piece[t->bos_id], t->bos_id));
    else
        cJSON_AddNullToObject(root, "post_processor");
    cJSON_AddItemToObject(root, "decoder", tok_json_byte_level(1));
    cJSON *m = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(m, "type", "BPE");
    cJSON_AddNullToObject(m, "dropout");
    cJSON_AddNullToObject(m, "unk_token");
    cJSON_AddNullToObject(m, "continuing_subword_prefix");
    cJSON_AddNullToObject(m, "end_of_word_suffix");
    cJSON_AddBoolToObject(m, "fuse_unk", 0);
    cJSON_AddBoolToObject(m, "byte_fallback", 0);
    cJSON_AddBoolToObject(m, "ignore_merges", pk->llama3);
    cJSON *vocab = cJSON_AddObjectToObject(m, "vocab"),
          *merges = cJSON_AddArrayToObject(m, "merges");
    char *s = NULL;
    size_t cap = 0;
    for (uint64_t i = 0; i < n + nm; i++) {  // the GGUF strings are the byte-level ones HF stores
        const GgufStr *x = i < n ? &tok[i] : &mg[i - n];
        if (x->len + 1 > cap) s = xrealloc(s, cap = 2 * x->len + 64);
        memcpy(s, x->p, x->len);
        s[x->len] = 0;
        if (i < n)
            cJSON_AddNumberToObject(vocab, s, (double)i);
        else
            cJSON_AddItemToArray(merges, cJSON_CreateString(s));
    }
    free(s);
    free(tok);
    free(mg);
    char *chat = NULL;
    if (gguf_find(g, "tokenizer.chat_template") &&
        gguf_get_str(g, "tokenizer.chat_template", &chat) == 0) {
        cJSON_AddStringToObject(extra, "chat_template", chat);
        free(chat);
    }
    char *p = ps_path_join(dir, "tokenizer.json");
    int rc = ps_json_write(p, root);
    free(p);
    cJSON_Delete(root);
    if (rc == 0) return tok_write_hf_side(t, dir, ids, extra) ? -1 : 1;
    cJSON_Delete(extra);
    return -1;
}
