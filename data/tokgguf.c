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
