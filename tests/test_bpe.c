// test_bpe.c: the byte-level BPE tokenizers (bpe.c, tokjson.c, tiktoken.c,
// tokopen.c): merge order and ties, both merge forms, ignore_merges, added
// tokens with lstrip/rstrip, invalid UTF-8, the specs (directories, tiktoken
// sniffing), damaged files (each error names the file and the key), decoding;
// and, when ../shared/data is here, Llama 3's files: known ids, BOS rules and
// the decode round trip of real text. (HF tokenizers' ids: test_bpe_hf.sh.)
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <unistd.h>

#include "common.h"
#include "gguf_build.h"
#include "test.h"
#include "tokenizer.h"

static char g_dir[512];

static const char *write_file(const char *name, const char *fmt, ...) {
    static char path[4][1024];
    static int k;
    char *p = path[k++ % 4];
    snprintf(p, 1024, "%s/%s", g_dir, name);
    char *slash = strrchr(p, '/');
    *slash = 0;
    ps_mkdirs(p);
    *slash = '/';
    FILE *f = fopen(p, "wb");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
    return p;
}

// A small byte-level tokenizer.json: vocab a b c ab bc abc Ġ Ġa x y aa, added
// <s> (11, special) and [L] (12, lstrip/rstrip); merges and flags given.
static const char *tiny_json(const char *name, const char *merges, const char *extra) {
    return write_file(name,
                      "{\"version\":\"1.0\",\"added_tokens\":["
                      "{\"id\":11,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
                      "{\"id\":12,\"content\":\"[L]\",\"special\":false,\"lstrip\":true,"
                      "\"rstrip\":true,\"normalized\":false}],"
                      "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\","
                      "\"add_prefix_space\":false,\"use_regex\":true},\"decoder\":{\"type\":"
                      "\"ByteLevel\"},\"model\":{\"type\":\"BPE\",%s\"vocab\":{\"a\":0,\"b\":1,"
                      "\"c\":2,\"ab\":3,\"bc\":4,\"abc\":5,\"\xc4\xa0\":6,\"\xc4\xa0\x61\":7,"
                      "\"x\":8,\"y\":9,\"aa\":10},\"merges\":[%s]}}",
                      extra, merges);
}

static int ids_are(const Tokenizer *t, const char *text, int n_expect, ...) {
    size_t n;
    int *ids = tok_encode(t, text, strlen(text), 0, &n);
    int ok = (int)n == n_expect;
    va_list ap;
    va_start(ap, n_expect);
    for (int i = 0; i < n_expect; i++) {
        int e = va_arg(ap, int);
        if (ok && ids[i] != e) ok = 0;
    }
    va_end(ap);
    if (!ok) {
        fprintf(stderr, "  '%s' ->", text);
        for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    free(ids);
    return ok;
}

static void test_merges(void) {
    Tokenizer *t =
        tok_open(tiny_json("t1/tokenizer.json", "\"a b\",\"b c\",\"\xc4\xa0 a\",\"a a\"", ""));
    T_CHECK(t != NULL, "open: %s", ps_err_msg());
    if (!t) return;
    T_CHECK(t->kind == TOK_BPE && t->vocab_size == 13, "kind %d vocab %d", t->kind, t->vocab_size);
    T_CHECK(ids_are(t, "abc", 2, 3, 2), "a b first (rank 0): ab c");
    T_CHECK(ids_are(t, "aaa", 2, 10, 0), "ties: leftmost pair merges first");
    T_CHECK(ids_are(t, "x a", 2, 8, 7),
            "' a' is one word (GPT-2 regex) and merges to \xc4\xa0\x61");
    T_CHECK(ids_are(t, "<s>abc", 3, 11, 3, 2), "special token cut out first");
    T_CHECK(ids_are(t, "x [L] y", 3, 8, 12, 9), "lstrip/rstrip absorb the spaces around [L]");
    T_CHECK(ids_are(t, "x<s> y", 4, 8, 11, 6, 9), "no strip on <s>: the space stays, unmerged");
    T_CHECK(ids_are(t, "", 0), "empty text: no ids");
    size_t n, dl;
    int *ids = tok_encode(t, "abc", 3, 1, &n);
    T_CHECK(n == 2, "no BOS added: the file has no post-processor template (got %zu ids)", n);
    char *back = tok_decode_all(t, ids, n, &dl);
    T_CHECK(dl == 3 && !memcmp(back, "abc", 3), "decode 'abc': '%s'", back);
    free(back);
    free(ids);
    const char *p = tok_decode(t, 11, 7, &dl);
    T_CHECK(dl == 2 && !memcmp(p, " a", 2), "a piece keeps its space after BOS (byte-level)");
    tok_free(t);

    // the other order, in the ["a", "b"] form; a repeated pair takes its later rank
    // (as HF tokenizers does: checked with the Python package)
    t = tok_open(tiny_json("t2/tokenizer.json", "[\"b\",\"c\"],[\"a\",\"b\"]", ""));
    T_CHECK(t && ids_are(t, "abc", 2, 0, 4), "b c first: a bc (%s)", t ? "" : ps_err_msg());
    tok_free(t);
    t = tok_open(tiny_json("t5/tokenizer.json", "[\"b\",\"c\"],[\"a\",\"b\"],[\"b\",\"c\"]", ""));
    T_CHECK(t && ids_are(t, "abc", 2, 3, 2), "b c repeated after a b: rank 2, so ab c");
    tok_free(t);
    t = tok_open(tiny_json("t3/tokenizer.json", "\"a b\",\"b c\"", "\"ignore_merges\":true,"));
    T_CHECK(t && ids_are(t, "abc", 1, 5), "ignore_merges: a vocabulary word is one token");
    tok_free(t);
    // invalid UTF-8 becomes U+FFFD: no byte token for it here, so it is dropped
    t = tok_open(tiny_json("t4/tokenizer.json", "\"a b\"", ""));
    T_CHECK(t && ids_are(t, "ab\xff", 1, 3), "invalid byte: U+FFFD, no token, dropped");
    tok_free(t);
}

static void expect_open_fails(const char *spec, const char *needle1, const char *needle2) {
    Tokenizer *t = tok_open(spec);
    const char *m = ps_err_msg();
    T_CHECK(t == NULL && strstr(m, needle1) && (!needle2 || strstr(m, needle2)),
            "%s: expected an error with '%s' / '%s', got '%s'", spec, needle1,
            needle2 ? needle2 : "", t ? "(opened)" : m);
    tok_free(t);
}

static void test_damaged(void) {
    const char *p =
        write_file("bad/a.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0");
    expect_open_fails(p, p, "not valid JSON");
    p = write_file("bad/b.json", "{\"added_tokens\": []}");
    expect_open_fails(p, p, "no \"model\"");
    p = tiny_json("bad/c.json", "\"a q\"", "");
    expect_open_fails(p, "merges[0]", "right part");
    p = tiny_json("bad/d.json", "\"a b\", 7", "");
    expect_open_fails(p, "merges[1]", "neither");
    p = write_file(
        "bad/e.json",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":"
        "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(ab\"},\"behavior\":\"Isolated\"}}");
    expect_open_fails(p, "pre_tokenizer Split", "bad pre-tokenizer regex");
    p = write_file(
        "bad/f.json",
        "{\"normalizer\":{\"type\":\"NFC\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
        "\"merges\":[]}}");
    expect_open_fails(p, "normalizer 'NFC'", NULL);
    p = write_file("bad/g.json",
                   "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999},\"merges\":[]}}");
    expect_open_fails(p, "model.vocab['a']", "not a token id");
    p = write_file("bad/h.json", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}");
    expect_open_fails(p, "model type 'Unigram'", NULL);
    p = write_file(
        "bad/i.json",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":"
        "{\"type\":\"Metaspace\"}}");
    expect_open_fails(p, "pre_tokenizer 'Metaspace'", NULL);
    p = write_file(
        "bad/j.json",
        "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"a\":0},\"merges\":[]}}");
    expect_open_fails(p, "byte_fallback", "tokenizer.model");
    p = write_file("bad/k.json",
                   "{\"added_tokens\":[{\"id\":5}],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
                   "\"merges\":[]}}");
    expect_open_fails(p, "added_tokens", "no content");
    p = write_file("bad/l.json",
                   "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]},"
                   "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}");
    expect_open_fails(p, "id 0 is given to two different tokens", NULL);
    // tiktoken
    p = write_file("tt/tokenizer.model", "YQ== 0\nYg== 1\nYWI= 2\n");
    char spec[1100];
    snprintf(spec, sizeof spec, "sp:%s", p);
    expect_open_fails(spec, "is a tiktoken BPE file", "tiktoken:");
    Tokenizer *t = tok_open(p);  // a bare .model path: detected
    T_CHECK(t && t->vocab_size == 3 + 256 && ids_are(t, "ab", 1, 2), "tiny tiktoken: %s",
            t ? t->desc : ps_err_msg());
    if (t) {
        size_t n;
        int *ids = tok_encode(t, "ab", 2, 1, &n);
        T_CHECK(n == 2 && ids[0] == 3 && t->bos_id == 3 && t->eos_id == 4,
                "Llama 3 layout: <|begin_of_text|> right after the ranks, added as BOS");
        free(ids);
    }
    tok_free(t);
    snprintf(spec, sizeof spec, "%s/tt", g_dir);
    t = tok_open(spec);
    T_CHECK(t && t->vocab_size == 259, "a directory with only a tiktoken tokenizer.model: %s",
            t ? t->desc : ps_err_msg());
    tok_free(t);
    p = write_file("tt2/tokenizer.model", "YQ== 0\nYg== 0\n");
    snprintf(spec, sizeof spec, "tiktoken:%s", p);
    expect_open_fails(spec, "rank 0 appears twice", "line 2");
    p = write_file("tt3/tokenizer.model", "YQ== 0\nY!== 1\n");
    snprintf(spec, sizeof spec, "tiktoken:%s", p);
    expect_open_fails(spec, "line 2", "base64");
    snprintf(spec, sizeof spec, "%s/bad", g_dir);
    expect_open_fails(spec, "without tokenizer.json or tokenizer.model", NULL);
}

// A GGUF file with a gpt2 tokenizer: tokens a b c ab Ġ <|x|> (control),
// merges "a b", and the given pre-tokenizer name.
static const char *tiny_gguf(const char *name, const char *pre, const char *merge) {
    static const char *const toks[] = {"a", "b", "c", "ab", "\xc4\xa0", "<|x|>", "1", "2"};
    int32_t tt[8] = {1, 1, 1, 1, 1, 3, 1, 1};
    const char *merges[1] = {merge};
    GB b;
    memset(&b, 0, sizeof b);
    gb_header(&b, 3, 0, 7);
    gb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(&b, "tokenizer.ggml.pre", pre);
    gb_kv_arr_str(&b, "tokenizer.ggml.tokens", 8, toks);
    gb_kv_arr_i32(&b, "tokenizer.ggml.token_type", 8, tt);
    gb_kv_arr_str(&b, "tokenizer.ggml.merges", 1, merges);
    gb_kv_u32(&b, "tokenizer.ggml.bos_token_id", 5);
    gb_kv_bool(&b, "tokenizer.ggml.add_bos_token", 1);
    gb_pad(&b, 32);
    const char *p = write_file(name, "%s", "");
    FILE *f = fopen(p, "wb");
    fwrite(b.p, 1, b.n, f);
    fclose(f);
    free(b.p);
    return p;
}

static void test_gguf(void) {
    Tokenizer *t = tok_open(tiny_gguf("g1.gguf", "smollm", "a b"));
    T_CHECK(t && t->kind == TOK_BPE && t->vocab_size == 8, "tiny GGUF: %s",
            t ? t->desc : ps_err_msg());
    if (t) {
        size_t n;
        int *ids = tok_encode(t, "ab<|x|>12c", 10, 1, &n);
        int want[] = {5, 3, 5, 6, 7, 2};  // BOS, ab, <|x|>, 1, 2 (digits apart), c
        T_CHECK(n == 6 && !memcmp(ids, want, sizeof want), "GGUF ids (n %zu)", n);
        free(ids);
    }
    tok_free(t);
    char spec[1100];
    snprintf(spec, sizeof spec, "gguf:%s", tiny_gguf("g2.gguf", "qwen2", "a b"));
    expect_open_fails(spec, "tokenizer.ggml.pre 'qwen2' is not supported", NULL);
    expect_open_fails(tiny_gguf("g3.gguf", "gpt-2", "a q"), "tokenizer.ggml.merges[0]",
                      "not a token");
    expect_open_fails(tiny_gguf("g4.gguf", "gpt-2", "ab"), "tokenizer.ggml.merges[0]", "space");
    const char *p = write_file("g5.gguf", "GGUF\x03");
    expect_open_fails(p, p, NULL);

    // Llama 2's vocabulary as a GGUF file (llama.cpp's, tokenizer.ggml.model
    // "llama") gives the ids of Llama 2's sentencepiece tokenizer.model
    const char *gg = PS_SOURCE_DIR "/../shared/data/tokenizers/llama2/ggml-vocab-llama-spm.gguf";
    const char *sp = PS_SOURCE_DIR "/../shared/data/tokenizers/llama2/tokenizer.model";
    const char *file = PS_SOURCE_DIR "/../shared/data/text/tinyshakespeare/input.txt";
    if (access(gg, R_OK) != 0 || access(sp, R_OK) != 0 || access(file, R_OK) != 0) {
        T_SKIP("no %s, %s or %s: the sentencepiece GGUF check is skipped", gg, sp, file);
        return;
    }
    Tokenizer *a = tok_open(gg), *b = tok_open(sp);
    T_CHECK(
        a && b && a->kind == TOK_SPM && a->vocab_size == 32000 && a->bos_id == 1 && a->eos_id == 2,
        "llama-spm GGUF: %s", a ? a->desc : ps_err_msg());
    size_t len;
    char *text = ps_read_file(file, &len);
    if (a && b && text) {
        int lines = 0, bad = 0;
        for (size_t i = 0; i < len;) {
            const char *nl = memchr(text + i, '\n', len - i);
            size_t e = nl ? (size_t)(nl - text) : len, na, nb;
            int *x = tok_encode(a, text + i, e - i, 1, &na),
                *y = tok_encode(b, text + i, e - i, 1, &nb);
            bad += na != nb || memcmp(x, y, na * sizeof(int)) != 0;
            lines++;
            free(x);
            free(y);
            i = e + 1;
        }
        T_CHECK(bad == 0, "llama-spm GGUF vs tokenizer.model: %d of %d lines differ", bad, lines);
        printf("llama-spm GGUF: %d tinyshakespeare lines, %d differ from tokenizer.model\n", lines,
               bad);
    }
    free(text);
    tok_free(a);
    tok_free(b);
}

static void test_llama3(void) {
    const char *dir = PS_SOURCE_DIR "/../shared/data/tokenizers/llama3";
    char json[1024], model[1024];
    snprintf(json, sizeof json, "%s/tokenizer.json", dir);
    snprintf(model, sizeof model, "%s/tokenizer.model", dir);
    if (access(json, R_OK) != 0 || access(model, R_OK) != 0) {
        T_SKIP("no %s: the Llama 3 checks are skipped", dir);
        return;
    }
    Tokenizer *t = tok_open(dir);  // the directory: tokenizer.json
    T_CHECK(t && t->vocab_size == 128256 && t->bos_id == 128000 && t->eos_id == 128001,
            "Llama 3 directory: %s", t ? t->desc : ps_err_msg());
    if (!t) return;
    T_CHECK(strstr(t->desc, "tokenizer.json") != NULL, "the directory opens tokenizer.json");
    // known ids (HF tokenizers): "Hello world" and a special token in text
    T_CHECK(ids_are(t, "Hello world", 2, 9906, 1917), "Hello world");
    T_CHECK(ids_are(t, "<|eot_id|>hi", 2, 128009, 6151), "special token in text");
    size_t n;
    int *ids = tok_encode(t, "hi", 2, 1, &n);
    T_CHECK(n == 1, "this tokenizer.json adds no BOS (no template, no add_bos_token)");
    free(ids);
    const char *file = PS_SOURCE_DIR "/../shared/data/text/tinyshakespeare/input.txt";
    size_t len;
    char *text = access(file, R_OK) == 0 ? ps_read_file(file, &len) : NULL;
    if (text) {
        ids = tok_encode(t, text, len, 0, &n);
        size_t dl;
        char *back = tok_decode_all(t, ids, n, &dl);
        T_CHECK(dl == len && memcmp(back, text, len) == 0,
                "decode(encode(tinyshakespeare)) == text");
        // streaming decode gives the same bytes
        size_t o = 0;
        int same = 1;
        for (size_t i = 0; i < n && same; i++) {
            size_t l;
            const char *p = tok_decode(t, i ? ids[i - 1] : -1, ids[i], &l);
            same = o + l <= len && memcmp(text + o, p, l) == 0;
            o += l;
        }
        T_CHECK(same && o == len, "token-by-token decode == text");
        printf("Llama 3: tinyshakespeare %zu bytes -> %zu tokens, round trip ok\n", len, n);
        free(back);
        free(ids);
        free(text);
    } else {
        T_SKIP("no %s: round trip skipped", file);
    }
    tok_free(t);
    char spec[1100];
    snprintf(spec, sizeof spec, "sp:%s", model);
    expect_open_fails(spec, "is a tiktoken BPE file", "tiktoken:");
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/test_bpe_tmp", PS_BINARY_DIR);
    test_merges();
    test_damaged();
    test_gguf();
    test_llama3();
    return t_summary();
}
