// tokenizer.c: byte and sentencepiece-BPE tokenizers; readers for llama2.c's
// tokenizer.bin and for sentencepiece .model protobufs (see tokenizer.h).
#define _POSIX_C_SOURCE 200809L
#include "tokenizer.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "bpe.h"
#include "common.h"
#include "tok_internal.h"

// ---------------------------------------------------------------------------
// piece hash: string -> id, for the pieces that may be produced by a merge

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

int piece_lookup(const Tokenizer *t, const char *s, size_t n) {
    size_t mask = t->hcap - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int id = t->hslot[i];
        if (id < 0) return -1;
        if ((size_t)t->piece_len[id] == n && memcmp(t->piece[id], s, n) == 0) return id;
    }
}

static int mergeable(int type) { return type == TOK_PIECE_NORMAL || type == TOK_PIECE_USER; }

// Build the hash over mergeable pieces (first id wins on duplicates) and derive
// the newline barrier property.
void build_index(Tokenizer *t) {
    size_t cap = 16;
    while (cap < 2 * (size_t)t->vocab_size) cap *= 2;
    t->hcap = cap;
    t->hslot = xmalloc(cap * sizeof(int));
    for (size_t i = 0; i < cap; i++) t->hslot[i] = -1;
    int nl_merges = 0;
    for (int id = 0; id < t->vocab_size; id++) {
        if (!mergeable(t->type[id]) || t->piece_len[id] == 0) continue;
        if (piece_lookup(t, t->piece[id], (size_t)t->piece_len[id]) >= 0) continue;
        size_t i = hash_bytes(t->piece[id], (size_t)t->piece_len[id]) & (cap - 1);
        while (t->hslot[i] >= 0) i = (i + 1) & (cap - 1);
        t->hslot[i] = id;
        if (t->piece_len[id] > 1 && memchr(t->piece[id], '\n', (size_t)t->piece_len[id])) nl_merges = 1;
    }
    if (nl_merges) {
        t->newline_id = -1;
    } else {
        int id = piece_lookup(t, "\n", 1);
        t->newline_id = id >= 0 ? id : t->byte_id['\n'] >= 0 ? t->byte_id['\n'] : t->unk_id;
    }
}

// "<0xHH>" -> HH, else -1
static int parse_byte_piece(const char *s, int n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

Tokenizer *tok_alloc(int n) {
    Tokenizer *t = xcalloc(1, sizeof(Tokenizer));
    t->kind = TOK_SPM;
    t->vocab_size = n;
    t->piece = xcalloc((size_t)n, sizeof(char *));
    t->piece_len = xcalloc((size_t)n, sizeof(int));
    t->score = xcalloc((size_t)n, sizeof(float));
    t->type = xcalloc((size_t)n, 1);
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1, t->bytes[b] = (char)b;
    t->bos_id = t->eos_id = t->unk_id = -1;
    t->add_dummy_prefix = 1;
    return t;
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    if (t->piece)
        for (int i = 0; i < t->vocab_size; i++) free(t->piece[i]);
    free(t->piece);
    free(t->piece_len);
    free(t->score);
    free(t->type);
    free(t->hslot);
    bpe_free(t->bpe);
    free(t);
}

// ---------------------------------------------------------------------------
// sentencepiece .model: a protobuf ModelProto. Only the fields we need are read:
//   1 pieces {1 piece, 2 score (float), 3 type}
//   2 trainer_spec {3 model_type, 24 treat_whitespace_as_suffix,
//                   40 unk_id, 41 bos_id, 42 eos_id}
//   3 normalizer_spec {1 name, 2 precompiled_charsmap, 3 add_dummy_prefix,
//                      4 remove_extra_whitespaces, 5 escape_whitespaces}

typedef struct {
    const unsigned char *p, *end;
} Pb;

static int pb_varint(Pb *b, uint64_t *v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end) return -1;
        unsigned char c = *b->p++;
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

// Next field: number, wire type, and its value (varint / fixed) or payload.
static int pb_next(Pb *b, uint32_t *field, int *wt, uint64_t *v, Pb *sub) {
    uint64_t key;
    if (pb_varint(b, &key) != 0) return -1;
    *field = (uint32_t)(key >> 3);
    *wt = (int)(key & 7);
    switch (*wt) {
    case 0: return pb_varint(b, v);
    case 1:
        if (b->end - b->p < 8) return -1;
        memcpy(v, b->p, 8);
        b->p += 8;
        return 0;
    case 5: {
        if (b->end - b->p < 4) return -1;
        uint32_t x;
        memcpy(&x, b->p, 4);
        *v = x;
        b->p += 4;
        return 0;
    }
    case 2: {
        uint64_t n;
        if (pb_varint(b, &n) != 0 || n > (uint64_t)(b->end - b->p)) return -1;
        sub->p = b->p;
        sub->end = b->p + n;
        b->p += n;
        return 0;
    }
    default: return -1;
    }
}

typedef struct {
    int n_pieces;
    int model_type;  // 1 unigram (default), 2 bpe
    int ws_suffix;
    int unk_id, bos_id, eos_id;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    char norm_name[64];
    size_t charsmap_len;
} SpmInfo;

// Parse a .model. With t == NULL only counts pieces and reads the specs; with
// t (allocated for info->n_pieces) also fills the pieces.
static int spm_parse(const char *path, const unsigned char *buf, size_t len, SpmInfo *info, Tokenizer *t) {
    SpmInfo d = {0, 1, 0, 0, 1, 2, 1, 1, 1, "", 0};
    *info = d;
    Pb b = {buf, buf + len};
    uint32_t f;
    int wt;
    uint64_t v;
    Pb sub;
    int np = 0;
    while (b.p < b.end) {
        if (pb_next(&b, &f, &wt, &v, &sub) != 0) goto bad;
        if (f == 1 && wt == 2) {
            if (t) {
                const unsigned char *s = NULL;
                size_t sl = 0;
                float score = 0;
                int type = TOK_PIECE_NORMAL;
                Pb q;
                while (sub.p < sub.end) {
                    if (pb_next(&sub, &f, &wt, &v, &q) != 0) goto bad;
                    if (f == 1 && wt == 2) {
                        s = q.p;
                        sl = (size_t)(q.end - q.p);
                    } else if (f == 2 && wt == 5) {
                        uint32_t x = (uint32_t)v;
                        memcpy(&score, &x, 4);
                    } else if (f == 3 && wt == 0) {
                        type = (int)v;
                    }
                }
                if (!s || sl == 0) return ps_err_set("%s: piece %d has no text", path, np);
                if (type < 1 || type > 6) return ps_err_set("%s: piece %d has unknown type %d", path, np, type);
                // store with U+2581 (E2 96 81) replaced by ' ', as tokenizer.bin does
                char *p = xmalloc(sl + 1);
                size_t o = 0;
                for (size_t i = 0; i < sl; i++) {
                    if (i + 2 < sl && s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) {
                        p[o++] = ' ';
                        i += 2;
                    } else {
                        p[o++] = (char)s[i];
                    }
                }
                p[o] = 0;
                t->piece[np] = p;
                t->piece_len[np] = (int)o;
                t->score[np] = score;
                t->type[np] = (unsigned char)type;
            }
            np++;
        } else if (f == 2 && wt == 2) {
            Pb q;
            while (sub.p < sub.end) {
                if (pb_next(&sub, &f, &wt, &v, &q) != 0) goto bad;
                if (wt != 0) continue;
                if (f == 3) info->model_type = (int)v;
                else if (f == 24) info->ws_suffix = (int)v;
                else if (f == 40) info->unk_id = (int)(int32_t)v;
                else if (f == 41) info->bos_id = (int)(int32_t)v;
                else if (f == 42) info->eos_id = (int)(int32_t)v;
            }
        } else if (f == 3 && wt == 2) {
            Pb q;
            while (sub.p < sub.end) {
                if (pb_next(&sub, &f, &wt, &v, &q) != 0) goto bad;
                if (f == 1 && wt == 2) {
                    size_t n = (size_t)(q.end - q.p);
                    if (n >= sizeof info->norm_name) n = sizeof info->norm_name - 1;
                    memcpy(info->norm_name, q.p, n);
                    info->norm_name[n] = 0;
                } else if (f == 2 && wt == 2) {
                    info->charsmap_len = (size_t)(q.end - q.p);
                } else if (wt == 0 && f == 3) {
                    info->add_dummy_prefix = v != 0;
                } else if (wt == 0 && f == 4) {
                    info->remove_extra_ws = v != 0;
                } else if (wt == 0 && f == 5) {
                    info->escape_ws = v != 0;
                }
            }
        }
    }
    info->n_pieces = np;
    if (np == 0) return ps_err_set("%s: no pieces: not a sentencepiece model", path);
    if (info->model_type != 2)
        return ps_err_set("%s: sentencepiece model type %d is not BPE (2); only BPE models are supported", path,
                          info->model_type);
    if (info->charsmap_len > 0)
        return ps_err_set("%s: normalizer '%s' (precompiled character map) is not supported; only 'identity'",
                          path, info->norm_name);
    if (info->ws_suffix || !info->escape_ws)
        return ps_err_set("%s: treat_whitespace_as_suffix / escape_whitespaces=false are not supported", path);
    return 0;
bad:
    return ps_err_set("%s: corrupt or truncated sentencepiece model (protobuf parse error at byte %zu of %zu)",
                      path, (size_t)(b.p - buf), len);
}

// Byte pieces, scores, and the fallback for text no piece covers; 0, or -1 with
// ps_err set (a file the encoder or decoder could not use safely).
int finish_spm(Tokenizer *t, const char *path) {
    for (int id = 0; id < t->vocab_size; id++) {
        if (isnan(t->score[id])) return ps_err_set("%s: piece %d has a NaN score", path, id);
        int bv = parse_byte_piece(t->piece[id], t->piece_len[id]);
        if (t->type[id] == TOK_PIECE_BYTE && bv < 0)
            return ps_err_set("%s: piece %d is typed BYTE but its text '%.16s' is not <0xHH>", path, id,
                              t->piece[id]);
        if (t->type[id] == TOK_PIECE_BYTE || (bv >= 0 && t->type[id] == TOK_PIECE_NORMAL)) {
            t->type[id] = TOK_PIECE_BYTE;
            if (t->byte_id[bv] < 0) t->byte_id[bv] = id;
        }
    }
    // Text that no piece covers becomes byte pieces, or <unk> when a byte has none.
    if (t->unk_id < 0)
        for (int b = 0; b < 256; b++)
            if (t->byte_id[b] < 0)
                return ps_err_set("%s: no <unk> piece and no byte piece <0x%02X>: such text could not be encoded",
                                  path, b);
    build_index(t);
    return 0;
}

static Tokenizer *open_spm_model(const char *path) {
    size_t len;
    char *buf = ps_read_file(path, &len);
    if (!buf) return NULL;
    SpmInfo info;
    if (spm_parse(path, (unsigned char *)buf, len, &info, NULL) != 0) {
        free(buf);
        return NULL;
    }
    Tokenizer *t = tok_alloc(info.n_pieces);
    if (spm_parse(path, (unsigned char *)buf, len, &info, t) != 0) {
        free(buf);
        tok_free(t);
        return NULL;
    }
    free(buf);
    int n = t->vocab_size;
    t->unk_id = info.unk_id >= 0 && info.unk_id < n ? info.unk_id : -1;
    t->bos_id = info.bos_id >= 0 && info.bos_id < n ? info.bos_id : -1;
    t->eos_id = info.eos_id >= 0 && info.eos_id < n ? info.eos_id : -1;
    t->add_dummy_prefix = info.add_dummy_prefix;
    t->remove_extra_ws = info.remove_extra_ws;
    if (finish_spm(t, path) != 0) {
        tok_free(t);
        return NULL;
    }
    snprintf(t->desc, sizeof t->desc,
             "sentencepiece BPE %s: %d pieces, bos %d, eos %d, add_dummy_prefix %d, remove_extra_ws %d", path,
             n, t->bos_id, t->eos_id, t->add_dummy_prefix, t->remove_extra_ws);
    return t;
}

// ---------------------------------------------------------------------------
// llama2.c tokenizer.bin

static Tokenizer *open_llama2c(const char *path) {
    size_t len;
    char *buf = ps_read_file(path, &len);
    if (!buf) return NULL;
    if (len < 4) {
        free(buf);
        ps_err_set("%s: truncated tokenizer.bin: %zu bytes, no max_token_length header", path, len);
        return NULL;
    }
    int32_t max_len;
    memcpy(&max_len, buf, 4);
    if (max_len <= 0 || max_len > (1 << 20)) {
        free(buf);
        ps_err_set("%s: corrupt tokenizer.bin: max_token_length %d", path, max_len);
        return NULL;
    }
    // pass 1: validate and count entries; pass 2: copy them
    int n = 0;
    size_t off = 4;
    while (off < len) {
        if (len - off < 8) {
            free(buf);
            ps_err_set("%s: truncated tokenizer.bin: entry %d at byte %zu needs an 8-byte score+length, only "
                       "%zu bytes left",
                       path, n, off, len - off);
            return NULL;
        }
        int32_t l;
        memcpy(&l, buf + off + 4, 4);
        if (l < 0 || l > max_len) {
            free(buf);
            ps_err_set("%s: corrupt tokenizer.bin: entry %d at byte %zu has length %d (max_token_length %d)",
                       path, n, off, l, max_len);
            return NULL;
        }
        if (len - off - 8 < (size_t)l) {
            free(buf);
            ps_err_set("%s: truncated tokenizer.bin: entry %d at byte %zu needs %d bytes of text, only %zu left",
                       path, n, off, l, len - off - 8);
            return NULL;
        }
        off += 8 + (size_t)l;
        n++;
    }
    if (n < 3) {
        free(buf);
        ps_err_set("%s: tokenizer.bin has %d entries; need at least <unk>, <s>, </s>", path, n);
        return NULL;
    }
    Tokenizer *t = tok_alloc(n);
    off = 4;
    for (int id = 0; id < n; id++) {
        int32_t l;
        memcpy(&t->score[id], buf + off, 4);
        memcpy(&l, buf + off + 4, 4);
        t->piece[id] = xmalloc((size_t)l + 1);
        memcpy(t->piece[id], buf + off + 8, (size_t)l);
        t->piece[id][l] = 0;
        t->piece_len[id] = l;
        // llama2.c convention: 0 <unk>, 1 <s>, 2 </s>
        t->type[id] = id == 0 ? TOK_PIECE_UNKNOWN : id < 3 ? TOK_PIECE_CONTROL : TOK_PIECE_NORMAL;
        off += 8 + (size_t)l;
    }
    free(buf);
    t->unk_id = 0;
    t->bos_id = 1;
    t->eos_id = 2;
    // normalizer flags: llama2.c's defaults, or those of a sentencepiece model
    // with the same stem beside the file (see tokenizer.h)
    const char *note = "llama2.c defaults: no .model beside it";
    size_t pl = strlen(path);
    if (pl > 4 && strcmp(path + pl - 4, ".bin") == 0) {
        char *mp = xmalloc(pl + 3);
        memcpy(mp, path, pl - 4);
        strcpy(mp + pl - 4, ".model");
        struct stat st;
        if (stat(mp, &st) == 0) {
            size_t ml;
            char *mb = ps_read_file(mp, &ml);
            SpmInfo info;
            if (mb && spm_parse(mp, (unsigned char *)mb, ml, &info, NULL) == 0 && info.n_pieces == n) {
                t->add_dummy_prefix = info.add_dummy_prefix;
                t->remove_extra_ws = info.remove_extra_ws;
                note = "flags from the .model beside it";
            } else {
                note = "llama2.c defaults: the .model beside it is unusable or of another size";
            }
            free(mb);
        }
        free(mp);
    }
    if (finish_spm(t, path) != 0) {
        tok_free(t);
        return NULL;
    }
    snprintf(t->desc, sizeof t->desc,
             "llama2.c tokenizer %.200s: %d pieces, bos 1, eos 2, add_dummy_prefix %d, remove_extra_ws %d (%s)",
             path, n, t->add_dummy_prefix, t->remove_extra_ws, note);
    return t;
}

static Tokenizer *open_byte(void) {
    Tokenizer *t = xcalloc(1, sizeof(Tokenizer));
    t->kind = TOK_BYTE;
    t->vocab_size = 256;
    t->bos_id = t->eos_id = t->unk_id = -1;
    t->newline_id = '\n';
    for (int b = 0; b < 256; b++) t->byte_id[b] = b, t->bytes[b] = (char)b;
    snprintf(t->desc, sizeof t->desc, "byte tokenizer: 256 ids = bytes, no BOS/EOS");
    return t;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

Tokenizer *tok_open(const char *spec) {
    if (!spec || !*spec) {
        ps_err_set("empty tokenizer spec");
        return NULL;
    }
    if (strcmp(spec, "byte") == 0) return open_byte();
    Tokenizer *ext;
    if (tok_open_ext(spec, &ext)) return ext;  // byte-level BPE, tiktoken, GGUF, directories (tokopen.c)
    if (strncmp(spec, "llama2c:", 8) == 0) return open_llama2c(spec + 8);
    if (strncmp(spec, "sp:", 3) == 0) return open_spm_model(spec + 3);
    if (ends_with(spec, ".bin")) return open_llama2c(spec);
    if (ends_with(spec, ".model")) return open_spm_model(spec);
    ps_err_set("unknown tokenizer spec '%s' (expected 'byte', 'llama2c:PATH', 'sp:PATH', 'tiktoken:PATH', "
               "'gguf:PATH', a tokenizer.json, a model directory, or a path ending in .bin, .model or .gguf)",
               spec);
    return NULL;
}

// ---------------------------------------------------------------------------
// encoding

typedef struct {
    int *v;
    size_t n, cap;
} IntVec;

static void iv_push(IntVec *a, int x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 256;
        a->v = xrealloc(a->v, a->cap * sizeof(int));
    }
    a->v[a->n++] = x;
}

// sentencepiece's identity normalization (see tokenizer.h). Writes into out
// (capacity 3*len + 1) and returns the normalized length.
static size_t normalize(const Tokenizer *t, const unsigned char *s, size_t len, char *out) {
    size_t i = 0, o = 0;
    int rem = t->remove_extra_ws;
    if (rem)
        while (i < len && s[i] == ' ') i++;
    if (i == len) return 0;
    if (t->add_dummy_prefix) out[o++] = ' ';
    int prev_space = rem;
    while (i < len) {
        int l = ps_utf8_len(s + i, len - i);
        if (l == 0) {  // malformed byte: U+FFFD, consuming one byte
            out[o++] = (char)0xEF;
            out[o++] = (char)0xBF;
            out[o++] = (char)0xBD;
            i++;
            prev_space = 0;
            continue;
        }
        if (l == 1 && s[i] == ' ') {
            if (!prev_space) out[o++] = ' ';
            prev_space = rem;
            i++;
            continue;
        }
        if (l == 3 && s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) {
            out[o++] = ' ';  // a literal U+2581 is the escaped space; not collapsed
        } else {
            memcpy(out + o, s + i, (size_t)l);
            o += (size_t)l;
        }
        i += (size_t)l;
        prev_space = 0;
    }
    if (rem)
        while (o > 0 && out[o - 1] == ' ') o--;
    return o;
}

typedef struct {
    float score;
    int left, right, size;
} Cand;

// max-heap order: higher score first, then the leftmost pair (sentencepiece's)
static int cand_before(const Cand *a, const Cand *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct {
    int *start, *len, *prev, *next;
    Cand *heap;
    size_t nheap, cap;  // cap: symbols the arrays can hold
} Work;

static void heap_push(Work *w, Cand c) {
    size_t i = w->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static Cand heap_pop(Work *w) {
    Cand top = w->heap[0];
    Cand last = w->heap[--w->nheap];
    size_t n = w->nheap, i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const Cand *best = &last;
        if (l < n && cand_before(&w->heap[l], best)) m = l, best = &w->heap[l];
        if (r < n && cand_before(&w->heap[r], best)) m = r;
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static void maybe_add_pair(const Tokenizer *t, Work *w, const char *s, int left, int right) {
    if (left < 0 || right < 0) return;
    int size = w->len[left] + w->len[right];
    int id = piece_lookup(t, s + w->start[left], (size_t)size);
    if (id < 0) return;
    Cand c = {t->score[id], left, right, size};
    heap_push(w, c);
}

static void emit_symbol(const Tokenizer *t, const char *s, int len, IntVec *out) {
    int id = piece_lookup(t, s, (size_t)len);
    if (id >= 0) {
        iv_push(out, id);
        return;
    }
    // byte fallback, or one <unk> for the symbol when a byte has no piece (finish_spm
    // made sure that there is an <unk> then)
    for (int i = 0; i < len; i++) {
        if (t->byte_id[(unsigned char)s[i]] < 0) {
            iv_push(out, t->unk_id);
            return;
        }
    }
    for (int i = 0; i < len; i++) iv_push(out, t->byte_id[(unsigned char)s[i]]);
}

// BPE-merge one segment s[0..n) and append its ids.
static void bpe_segment(const Tokenizer *t, Work *w, const char *s, size_t n, IntVec *out) {
    if (n == 0) return;
    if (n > w->cap) {
        w->cap = n;
        w->start = xrealloc(w->start, n * sizeof(int));
        w->len = xrealloc(w->len, n * sizeof(int));
        w->prev = xrealloc(w->prev, n * sizeof(int));
        w->next = xrealloc(w->next, n * sizeof(int));
        w->heap = xrealloc(w->heap, 3 * n * sizeof(Cand));  // n-1 initial pairs + 2 per merge
    }
    // characters (the text is valid UTF-8 after normalization)
    int ns = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = (unsigned char)s[i];
        int l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (i + (size_t)l > n) l = (int)(n - i);
        w->start[ns] = (int)i;
        w->len[ns] = l;
        w->prev[ns] = ns - 1;
        w->next[ns] = ns + 1;
        ns++;
        i += (size_t)l;
    }
    w->next[ns - 1] = -1;
    w->nheap = 0;
    for (int i = 0; i + 1 < ns; i++) maybe_add_pair(t, w, s, i, i + 1);
    while (w->nheap > 0) {
        Cand c = heap_pop(w);
        // stale candidates: a side was absorbed, or a side grew since the push
        if (w->len[c.left] == 0 || w->len[c.right] == 0 || w->len[c.left] + w->len[c.right] != c.size) continue;
        w->len[c.left] = c.size;
        w->len[c.right] = 0;
        int nx = w->next[c.right];
        w->next[c.left] = nx;
        if (nx >= 0) w->prev[nx] = c.left;
        maybe_add_pair(t, w, s, w->prev[c.left], c.left);
        maybe_add_pair(t, w, s, c.left, nx);
    }
    for (int i = 0; i >= 0; i = w->next[i]) emit_symbol(t, s + w->start[i], w->len[i], out);
}

int *tok_encode(const Tokenizer *t, const char *text, size_t len, int add_bos, size_t *n) {
    if (t->kind == TOK_BPE) return bpe_encode(t, text, len, add_bos, n);
    IntVec out = {0};
    if (add_bos && t->bos_id >= 0) iv_push(&out, t->bos_id);
    if (t->kind == TOK_BYTE) {
        for (size_t i = 0; i < len; i++) iv_push(&out, (unsigned char)text[i]);
    } else {
        CHECK(len < ((size_t)1 << 40), "text of %zu bytes is too large to encode at once", len);
        char *norm = xmalloc(3 * len + 2);
        size_t nl = normalize(t, (const unsigned char *)text, len, norm);
        Work w = {0};
        if (t->newline_id >= 0) {
            size_t a = 0;
            for (size_t i = 0; i <= nl; i++) {
                if (i == nl || norm[i] == '\n') {
                    CHECK(i - a < (size_t)1 << 30, "line of %zu bytes too long to encode", i - a);
                    bpe_segment(t, &w, norm + a, i - a, &out);
                    if (i < nl) iv_push(&out, t->newline_id);
                    a = i + 1;
                }
            }
        } else {
            CHECK(nl < (size_t)1 << 30, "text of %zu bytes too long to encode without line splitting", nl);
            bpe_segment(t, &w, norm, nl, &out);
        }
        free(w.start);
        free(w.len);
        free(w.prev);
        free(w.next);
        free(w.heap);
        free(norm);
    }
    *n = out.n;
    if (!out.v) out.v = xmalloc(sizeof(int));
    return out.v;
}

// ---------------------------------------------------------------------------
// decoding

const char *tok_decode(const Tokenizer *t, int prev_token, int token, size_t *len) {
    CHECK(token >= 0 && token < t->vocab_size, "token %d outside the vocabulary [0, %d)", token, t->vocab_size);
    if (t->kind == TOK_BYTE) {
        *len = 1;
        return &t->bytes[token];
    }
    if (t->type[token] == TOK_PIECE_BYTE) {
        int b = parse_byte_piece(t->piece[token], t->piece_len[token]);
        *len = 1;
        return &t->bytes[b];
    }
    const char *p = t->piece[token];
    size_t n = (size_t)t->piece_len[token];
    if (t->kind == TOK_SPM && prev_token >= 0 && prev_token == t->bos_id && n > 0 && p[0] == ' ') p++, n--;
    *len = n;
    return p;
}

char *tok_decode_all(const Tokenizer *t, const int *ids, size_t n, size_t *len) {
    size_t cap = 64, o = 0;
    char *out = xmalloc(cap);
    int after_start = t->kind == TOK_SPM && t->add_dummy_prefix;  // drop the first piece's dummy space
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id == t->bos_id) {
            after_start = t->kind == TOK_SPM;
            continue;
        }
        if (id == t->eos_id) continue;
        size_t l;
        const char *p = tok_decode(t, -1, id, &l);
        if (after_start && l > 0 && p[0] == ' ' && t->type[id] != TOK_PIECE_BYTE) p++, l--;
        after_start = 0;
        if (o + l + 1 > cap) {
            while (o + l + 1 > cap) cap *= 2;
            out = xrealloc(out, cap);
        }
        memcpy(out + o, p, l);
        o += l;
    }
    out[o] = 0;
    if (len) *len = o;
    return out;
}
