// tiktoken.c: a tiktoken BPE file (Llama 3's tokenizer.model: one line
// "base64(token bytes) rank" per token) -> a byte-level BPE tokenizer (bpe.h).
//
// tiktoken merges the adjacent pair whose concatenation has the lowest rank,
// and takes a whole piece that is a token as is; that is the BPE of bpe.h with
// merges (x, y) -> x+y of rank rank(x+y) for every split of every token into
// two tokens, and ignore_merges. The split regex is Llama 3's. The special
// tokens are not in the file: they come from tokenizer_config.json
// (added_tokens_decoder) or tokenizer.json (added_tokens) beside it, else
// Llama 3's layout is assumed: 256 tokens after the last rank, named as in
// Meta's llama3 tokenizer.py (<|begin_of_text|>, <|end_of_text|>,
// <|reserved_special_token_0..3|>, <|start_header_id|>, <|end_header_id|>,
// <|reserved_special_token_4|>, <|eot_id|>, <|reserved_special_token_5..250|>).
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include "bpe.h"
#include "common.h"
#include "tok_internal.h"

enum { MAX_RANK = 1 << 22, LLAMA3_SPECIALS = 256 };
static const size_t MAX_FILE = (size_t)256 << 20;

static int b64(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

// Standard base64 (with '=' padding) -> bytes; -1 when malformed.
static long b64_decode(const char *s, size_t n, char *out) {
    if (n == 0 || n % 4 != 0) return -1;
    size_t pad = s[n - 1] == '=' ? (s[n - 2] == '=' ? 2 : 1) : 0;
    long o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) {
            v[k] = i + (size_t)k >= n - pad ? 0 : b64((unsigned char)s[i + (size_t)k]);
            if (v[k] < 0) return -1;
        }
        unsigned w =
            (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        out[o++] = (char)(w >> 16);
        if (i + 4 < n || pad < 2) out[o++] = (char)(w >> 8);
        if (i + 4 < n || pad < 1) out[o++] = (char)w;
    }
    return o;
}

// One line "b64 rank": its parts, or -1.
static int parse_line(const char *s, size_t n, size_t *b64_len, long *rank) {
    const char *sp = memchr(s, ' ', n);
    if (!sp || sp == s || sp + 1 == s + n) return -1;
    long r = 0;
    for (const char *p = sp + 1; p < s + n; p++) {
        if (*p < '0' || *p > '9' || r > MAX_RANK) return -1;
        r = r * 10 + (*p - '0');
    }
    *b64_len = (size_t)(sp - s);
    *rank = r;
    return 0;
}

int tiktoken_sniff(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    const char *nl = memchr(buf, '\n', n);
    if (!nl) return 0;
    size_t bl;
    long r;
    size_t len = (size_t)(nl - buf);
    if (len && buf[len - 1] == '\r') len--;
    if (parse_line(buf, len, &bl, &r) != 0) return 0;
    char tmp[256];
    return b64_decode(buf, bl, tmp) > 0;
}

static void llama3_specials(HfAdded *a, int base) {
    static const char *first[10] = {"<|begin_of_text|>",
                                    "<|end_of_text|>",
                                    "<|reserved_special_token_0|>",
                                    "<|reserved_special_token_1|>",
                                    "<|reserved_special_token_2|>",
                                    "<|reserved_special_token_3|>",
                                    "<|start_header_id|>",
                                    "<|end_header_id|>",
                                    "<|reserved_special_token_4|>",
                                    "<|eot_id|>"};
    a->v = xcalloc(LLAMA3_SPECIALS, sizeof(HfAddedToken));
    a->n = LLAMA3_SPECIALS;
    for (int i = 0; i < LLAMA3_SPECIALS; i++) {
        char name[64];
        if (i < 10)
            snprintf(name, sizeof name, "%s", first[i]);
        else
            snprintf(name, sizeof name, "<|reserved_special_token_%d|>", i - 5);
        a->v[i].id = base + i;
        a->v[i].content = xmalloc(strlen(name) + 1);
        strcpy(a->v[i].content, name);
        a->v[i].special = 1;
    }
}

// The special tokens from the HF files beside the tiktoken file; 0 with a->n 0
// when there are none; -1 on a damaged side file.
static int side_specials(const char *dir, HfAdded *a, char *src, size_t cap) {
    a->n = 0;
    a->v = NULL;
    const char *names[2] = {"tokenizer_config.json", "tokenizer.json"};
    const char *keys[2] = {"added_tokens_decoder", "added_tokens"};
    for (int k = 0; k < 2; k++) {
        char *p = ps_path_join(dir, names[k]);
        cJSON *j = hf_json_read(p, 1);
        const cJSON *x = j ? cJSON_GetObjectItemCaseSensitive(j, keys[k]) : NULL;
        int rc = x ? hf_added_parse(x, p, keys[k], a) : 0;
        if (x && rc == 0) snprintf(src, cap, "special tokens from %s", names[k]);
        cJSON_Delete(j);
        free(p);
        if (rc != 0) return -1;
        if (a->n > 0) return 0;
    }
    return 0;
}

static Tokenizer *fail(Tokenizer *t, char *buf, HfAdded *a) {
    tok_free(t);
    free(buf);
    hf_added_free(a);
    return NULL;
}

Tokenizer *tok_open_tiktoken(const char *path) {
    size_t len;
    char *buf = ps_read_file_max(path, MAX_FILE, "a tiktoken file", &len);
    if (!buf) return NULL;
    HfAdded added = {0};
    // pass 1: validate, count, largest rank
    long max_rank = -1, lines = 0;
    for (size_t i = 0, ln = 1; i < len; ln++) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (buf + i)) : len - i;
        size_t e = n && buf[i + n - 1] == '\r' ? n - 1 : n;
        size_t bl;
        long r;
        char tmp[64];
        if (e > 0) {
            if (parse_line(buf + i, e, &bl, &r) != 0 || r >= MAX_RANK || bl > 4 * 65536 ||
                (bl <= 64 && b64_decode(buf + i, bl, tmp) <= 0)) {
                ps_err_set(
                    "%s: line %zu is not \"base64token rank\" (a tiktoken file has one token "
                    "and its rank, below %d, per line)",
                    path, ln, MAX_RANK);
                return fail(NULL, buf, &added);
            }
            if (r > max_rank) max_rank = r;
            lines++;
        }
        i += n + 1;
    }
    if (lines == 0) {
        ps_err_set("%s: no tokens: not a tiktoken file", path);
        return fail(NULL, buf, &added);
    }
    char *dir = tok_dir_of(path);
    char src[96];
    snprintf(src, sizeof src, "Llama 3 special tokens assumed (%d after the ranks)",
             LLAMA3_SPECIALS);
    if (side_specials(dir, &added, src, sizeof src) != 0) {
        free(dir);
        return fail(NULL, buf, &added);
    }
    if (added.n == 0) llama3_specials(&added, (int)max_rank + 1);
    int vocab = (int)max_rank + 1;
    for (int i = 0; i < added.n; i++)
        if (added.v[i].id >= vocab) vocab = added.v[i].id + 1;

    Tokenizer *t = bpe_alloc(vocab);
    char *tok = xmalloc(3 * 65536 + 8);
    for (size_t i = 0, ln = 1; i < len; ln++) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (buf + i)) : len - i;
        size_t e = n && buf[i + n - 1] == '\r' ? n - 1 : n;
        size_t bl = 0;
        long r = 0;
        if (e > 0) {
            parse_line(buf + i, e, &bl, &r);
            long tl = b64_decode(buf + i, bl, tok);
            char where[300];
            snprintf(where, sizeof where, "%s: line %zu", path, ln);
            if (tl <= 0) {
                ps_err_set("%s: bad base64", where);
                free(tok);
                free(dir);
                return fail(t, buf, &added);
            }
            if (t->piece[r]) ps_err_set("%s: rank %ld appears twice", where, r);
            if (t->piece[r] || bpe_set_token(t, (int)r, tok, (size_t)tl, TOK_PIECE_NORMAL, where)) {
                free(tok);
                free(dir);
                return fail(t, buf, &added);
            }
        }
        i += n + 1;
    }
    free(tok);
    free(buf);
    buf = NULL;
    build_index(t);
    long nmerges = 0;
    for (int id = 0; id <= max_rank; id++) {
        const char *p = t->piece[id];
        int n = p ? t->piece_len[id] : 0;
        if (p && piece_lookup(t, p, (size_t)n) != id) {
            ps_err_set("%s: rank %d repeats the token of rank %d", path, id,
                       piece_lookup(t, p, (size_t)n));
            free(dir);
            return fail(t, buf, &added);
        }
        for (int k = 1; k < n; k++) {
            int a = piece_lookup(t, p, (size_t)k);
            if (a < 0) continue;
            int b = piece_lookup(t, p + k, (size_t)(n - k));
            if (b < 0) continue;
            bpe_add_merge(t, a, b, id, id);
            nmerges++;
        }
    }
    if (hf_added_apply(t, &added, path) != 0 ||
        bpe_add_split(t, BPE_LLAMA3_REGEX, 0, 0, "Llama 3 split regex") != 0) {
        free(dir);
        return fail(t, buf, &added);
    }
    // Meta's Llama 3 code encodes with bos=True; the side files may say otherwise.
    int adds_bos = 1;
    t->bos_id = t->eos_id = -1;
    for (int i = 0; i < added.n; i++) {
        if (!strcmp(added.v[i].content, "<|begin_of_text|>")) t->bos_id = added.v[i].id;
        if (!strcmp(added.v[i].content, "<|end_of_text|>")) t->eos_id = added.v[i].id;
    }
    char note[80] = "Llama 3 names";
    hf_side_specials(t, dir, &adds_bos, note, sizeof note);
    free(dir);
    bpe_set_flags(t, 1, adds_bos && t->bos_id >= 0);
    if (bpe_finish(t, path) != 0) return fail(t, buf, &added);
    snprintf(t->desc, sizeof t->desc,
             "tiktoken BPE %.200s: %ld ranks + %d special tokens (%s), %ld merges, Llama 3 split "
             "regex; bos %d (%s), eos %d (%s)",
             path, lines, added.n, src, nmerges, t->bos_id,
             adds_bos && t->bos_id >= 0 ? "added" : "not added", t->eos_id, note);
    hf_added_free(&added);
    return t;
}
