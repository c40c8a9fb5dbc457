// bpe.c: the byte-level BPE engine (see bpe.h): merges by rank through a heap
// and a pair hash, pre-tokenizer splits with PCRE2, added tokens through a trie.
#define _POSIX_C_SOURCE 200809L
#define PCRE2_CODE_UNIT_WIDTH 8
#include "bpe.h"

#include <pcre2.h>
#include <stdint.h>
#include <string.h>

#include "common.h"
#include "tok_internal.h"

const char *const BPE_GPT2_REGEX =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char *const BPE_LLAMA3_REGEX =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

enum { BPE_MAX_STEPS = 8 };

typedef struct {
    uint64_t key;  // (a << 32) | b; UINT64_MAX: empty
    int rank, id;
} MergeSlot;

typedef struct {
    pcre2_code *re;  // NULL: prefix space only
    int prefix_space;
} Step;

// Trie of added-token contents: node 0 is the root.
typedef struct {
    int *first, *sibling, *tok;  // first child, next sibling, token id ending here (-1)
    unsigned char *byte;
    int n, cap;
    unsigned char first_byte[256];  // a token starts with this byte
    int count;
} Trie;

typedef struct {
    int id;
    unsigned char lstrip, rstrip;
} Special;

struct BpeModel {
    MergeSlot *merges;
    size_t mcap, mcount;
    Step steps[BPE_MAX_STEPS];
    int nsteps;
    int byte_tok[256];  // the single-byte token of each byte, or -1
    int ignore_merges, adds_bos;
    Special *special;  // indexed by Trie.tok's values through spec_of
    int nspecial, special_cap;
    Trie trie[2];  // [0]: normalized=false tokens, [1]: normalized=true
    pcre2_match_context *mctx;
};

// ---------------------------------------------------------------------------
// byte <-> unicode (GPT-2): printable Latin-1 bytes stand for themselves, the
// other 68 bytes for U+0100.. in byte order.

static int printable_byte(int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

int bpe_unicode_byte(unsigned cp) {
    if (cp < 256) return printable_byte((int)cp) ? (int)cp : -1;
    // the non-printable bytes in order: 0..32 (33), 127..160 (34), 173
    unsigned k = cp - 256;
    return k < 33 ? (int)k : k < 67 ? (int)(127 + k - 33) : k == 67 ? 173 : -1;
}

static unsigned utf8_decode(const unsigned char *s, int len) {
    if (len == 1) return s[0];
    unsigned cp = s[0] & (0x3F >> (len - 1));
    for (int i = 1; i < len; i++) cp = (cp << 6) | (s[i] & 0x3F);
    return cp;
}

size_t bpe_unmap_bytes(const char *s, size_t n, char *out) {
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int l = ps_utf8_len(u + i, n - i);
        if (l == 0) {  // not UTF-8: keep the byte
            out[o++] = s[i++];
            continue;
        }
        int byte = bpe_unicode_byte(utf8_decode(u + i, l));
        if (byte >= 0) {
            out[o++] = (char)byte;
        } else {
            memcpy(out + o, s + i, (size_t)l);
            o += (size_t)l;
        }
        i += (size_t)l;
    }
    return o;
}

// ---------------------------------------------------------------------------
// building

Tokenizer *bpe_alloc(int vocab_size) {
    Tokenizer *t = tok_alloc(vocab_size);
    t->kind = TOK_BPE;
    t->add_dummy_prefix = 0;
    for (int i = 0; i < vocab_size; i++) t->type[i] = 0;  // 0: not set yet
    BpeModel *m = xcalloc(1, sizeof(BpeModel));
    m->mcap = 1024;
    m->merges = xmalloc(m->mcap * sizeof(MergeSlot));
    for (size_t i = 0; i < m->mcap; i++) m->merges[i].key = UINT64_MAX;
    for (int b = 0; b < 256; b++) m->byte_tok[b] = -1;
    m->mctx = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(m->mctx, 10000000);
    t->bpe = m;
    return t;
}

int bpe_set_token(Tokenizer *t, int id, const char *s, size_t n, int type, const char *where) {
    if (id < 0 || id >= t->vocab_size)
        return ps_err_set("%s: token id %d outside [0, %d)", where, id, t->vocab_size);
    if (n > 65536) return ps_err_set("%s: token %d is %zu bytes long (limit 65536)", where, id, n);
    if (t->piece[id]) {
        int same = (size_t)t->piece_len[id] == n && memcmp(t->piece[id], s, n) == 0;
        if (type == TOK_PIECE_NORMAL) {
            if (!same) return ps_err_set("%s: id %d is given to two different tokens", where, id);
            return 0;
        }
        free(t->piece[id]);  // an added token's content replaces the vocabulary string
    }
    t->piece[id] = xmalloc(n + 1);
    memcpy(t->piece[id], s, n);
    t->piece[id][n] = 0;
    t->piece_len[id] = (int)n;
    t->type[id] = (unsigned char)type;
    return 0;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static MergeSlot *merge_slot(MergeSlot *tab, size_t cap, uint64_t key) {
    for (size_t i = mix64(key) & (cap - 1);; i = (i + 1) & (cap - 1))
        if (tab[i].key == key || tab[i].key == UINT64_MAX) return &tab[i];
}

void bpe_add_merge(Tokenizer *t, int a, int b, int rank, int new_id) {
    BpeModel *m = t->bpe;
    if (2 * (m->mcount + 1) > m->mcap) {
        size_t cap = m->mcap * 2;
        MergeSlot *tab = xmalloc(cap * sizeof(MergeSlot));
        for (size_t i = 0; i < cap; i++) tab[i].key = UINT64_MAX;
        for (size_t i = 0; i < m->mcap; i++)
            if (m->merges[i].key != UINT64_MAX)
                *merge_slot(tab, cap, m->merges[i].key) = m->merges[i];
        free(m->merges);
        m->merges = tab;
        m->mcap = cap;
    }
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    MergeSlot *s = merge_slot(m->merges, m->mcap, key);
    if (s->key == UINT64_MAX) m->mcount++;
    s->key = key;
    s->rank = rank;
    s->id = new_id;
}

static const MergeSlot *merge_find(const BpeModel *m, int a, int b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    const MergeSlot *s = merge_slot(m->merges, m->mcap, key);
    return s->key == key ? s : NULL;
}

int bpe_add_merge_strings(Tokenizer *t, const char *a, size_t an, const char *b, size_t bn,
                          int rank) {
    char small[512], *buf = an + bn <= sizeof small ? small : xmalloc(an + bn);
    size_t al = bpe_unmap_bytes(a, an, buf);
    size_t bl = bpe_unmap_bytes(b, bn, buf + al);
    int ia = piece_lookup(t, buf, al), ib = piece_lookup(t, buf + al, bl);
    int ic = piece_lookup(t, buf, al + bl);
    if (buf != small) free(buf);
    if (ia < 0 || ib < 0 || ic < 0) return ia < 0 ? 1 : ib < 0 ? 2 : 3;
    bpe_add_merge(t, ia, ib, rank, ic);
    return 0;
}

int bpe_add_split(Tokenizer *t, const char *pattern, int literal, int prefix_space,
                  const char *where) {
    BpeModel *m = t->bpe;
    if (m->nsteps == BPE_MAX_STEPS)
        return ps_err_set("%s: more than %d pre-tokenizer steps", where, BPE_MAX_STEPS);
    Step *st = &m->steps[m->nsteps];
    st->prefix_space = prefix_space;
    st->re = NULL;
    if (pattern) {
        int err;
        PCRE2_SIZE eoff;
        uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
        st->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &err, &eoff, NULL);
        if (!st->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            return ps_err_set("%s: bad pre-tokenizer regex: %s at offset %zu", where, (char *)msg,
                              (size_t)eoff);
        }
        pcre2_jit_compile(st->re, PCRE2_JIT_COMPLETE);  // the interpreter runs it otherwise
    }
    m->nsteps++;
    return 0;
}

static int trie_node(Trie *tr, int parent, unsigned char c, int create) {
    for (int k = tr->first[parent]; k >= 0; k = tr->sibling[k])
        if (tr->byte[k] == c) return k;
    if (!create) return -1;
    if (tr->n == tr->cap) {
        tr->cap *= 2;
        tr->first = xrealloc(tr->first, (size_t)tr->cap * sizeof(int));
        tr->sibling = xrealloc(tr->sibling, (size_t)tr->cap * sizeof(int));
        tr->tok = xrealloc(tr->tok, (size_t)tr->cap * sizeof(int));
        tr->byte = xrealloc(tr->byte, (size_t)tr->cap);
    }
    int k = tr->n++;
    tr->first[k] = -1;
    tr->tok[k] = -1;
    tr->byte[k] = c;
    tr->sibling[k] = tr->first[parent];
    tr->first[parent] = k;
    return k;
}

int bpe_add_special(Tokenizer *t, int id, int lstrip, int rstrip, int normalized,
                    const char *where) {
    BpeModel *m = t->bpe;
    if (id < 0 || id >= t->vocab_size || !t->piece[id])
        return ps_err_set("%s: added token id %d is not a token", where, id);
    if (t->piece_len[id] == 0) return ps_err_set("%s: added token %d is empty", where, id);
    Trie *tr = &m->trie[normalized ? 1 : 0];
    if (!tr->cap) {
        tr->cap = 64;
        tr->first = xmalloc(64 * sizeof(int));
        tr->sibling = xmalloc(64 * sizeof(int));
        tr->tok = xmalloc(64 * sizeof(int));
        tr->byte = xmalloc(64);
        tr->n = 1;
        tr->first[0] = tr->sibling[0] = tr->tok[0] = -1;
    }
    int node = 0;
    const unsigned char *s = (const unsigned char *)t->piece[id];
    for (int i = 0; i < t->piece_len[id]; i++) node = trie_node(tr, node, s[i], 1);
    if (m->nspecial == m->special_cap) {
        m->special_cap = m->special_cap ? 2 * m->special_cap : 64;
        m->special = xrealloc(m->special, (size_t)m->special_cap * sizeof(Special));
    }
    if (tr->tok[node] < 0) tr->count++;
    tr->tok[node] = m->nspecial;  // a later duplicate content wins, as in tokenizers
    m->special[m->nspecial++] =
        (Special){id, (unsigned char)(lstrip != 0), (unsigned char)(rstrip != 0)};
    tr->first_byte[s[0]] = 1;
    return 0;
}

void bpe_set_flags(Tokenizer *t, int ignore_merges, int adds_bos) {
    t->bpe->ignore_merges = ignore_merges;
    t->bpe->adds_bos = adds_bos;
}

int bpe_finish(Tokenizer *t, const char *file) {
    BpeModel *m = t->bpe;
    int set = 0;
    for (int id = 0; id < t->vocab_size; id++) {
        if (!t->piece[id]) {
            t->piece[id] = xcalloc(1, 1);
            t->type[id] = TOK_PIECE_UNUSED;
        } else {
            set++;
        }
    }
    if (set == 0) return ps_err_set("%s: no tokens", file);
    free(t->hslot);  // a reader may have indexed the vocabulary already
    build_index(t);
    t->newline_id = -1;  // '\n' merges with its neighbours in byte-level vocabularies
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int id = piece_lookup(t, &c, 1);
        m->byte_tok[b] = id >= 0 && t->type[id] == TOK_PIECE_NORMAL ? id : -1;
    }
    return 0;
}

static void trie_free(Trie *tr) {
    free(tr->first);
    free(tr->sibling);
    free(tr->tok);
    free(tr->byte);
}

void bpe_free(BpeModel *m) {
    if (!m) return;
    for (int i = 0; i < m->nsteps; i++) pcre2_code_free(m->steps[i].re);
    pcre2_match_context_free(m->mctx);
    trie_free(&m->trie[0]);
    trie_free(&m->trie[1]);
    free(m->special);
    free(m->merges);
    free(m);
}

// ---------------------------------------------------------------------------
// encoding

typedef struct {
    int rank, pos, id;
} Merge;

typedef struct {
    const Tokenizer *t;
    const BpeModel *m;
    pcre2_match_data *md;
    int *ids;
    size_t n, cap;
    int *sym, *prev, *next;  // the symbols of one word
    size_t wcap;
    Merge *heap;
    size_t nheap;
    char *tmp[BPE_MAX_STEPS];  // pieces with a prepended space, per step
    size_t tmpcap[BPE_MAX_STEPS];
    int warned;
} Enc;

static void push_id(Enc *e, int id) {
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 1024;
        e->ids = xrealloc(e->ids, e->cap * sizeof(int));
    }
    e->ids[e->n++] = id;
}

static int merge_before(const Merge *a, const Merge *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(Enc *e, Merge x) {
    size_t i = e->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_before(&x, &e->heap[p])) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = x;
}

static Merge heap_pop(Enc *e) {
    Merge top = e->heap[0], last = e->heap[--e->nheap];
    size_t n = e->nheap, i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, k = i;
        const Merge *best = &last;
        if (l < n && merge_before(&e->heap[l], best)) k = l, best = &e->heap[l];
        if (r < n && merge_before(&e->heap[r], best)) k = r;
        if (k == i) break;
        e->heap[i] = e->heap[k];
        i = k;
    }
    if (n > 0) e->heap[i] = last;
    return top;
}

static void push_pair(Enc *e, int left) {
    if (left < 0 || e->next[left] < 0) return;
    const MergeSlot *s = merge_find(e->m, e->sym[left], e->sym[e->next[left]]);
    if (s) heap_push(e, (Merge){s->rank, left, s->id});
}

// One word (a pre-tokenizer piece): its ids.
static void bpe_word(Enc *e, const char *w, size_t n) {
    const Tokenizer *t = e->t;
    const BpeModel *m = e->m;
    if (m->ignore_merges || n == 1) {
        int id = piece_lookup(t, w, n);
        if (id >= 0 && t->type[id] == TOK_PIECE_NORMAL) {
            push_id(e, id);
            return;
        }
    }
    if (n > e->wcap) {
        e->wcap = n;
        e->sym = xrealloc(e->sym, n * sizeof(int));
        e->prev = xrealloc(e->prev, n * sizeof(int));
        e->next = xrealloc(e->next, n * sizeof(int));
        e->heap = xrealloc(e->heap, 3 * n * sizeof(Merge));  // n-1 pairs + 2 per merge
    }
    int ns = 0;
    for (size_t i = 0; i < n; i++) {
        int id = m->byte_tok[(unsigned char)w[i]];
        if (id < 0) id = t->unk_id;  // no byte token: <unk>, or dropped (as tokenizers does)
        if (id < 0) continue;
        e->sym[ns] = id;
        e->prev[ns] = ns - 1;
        e->next[ns] = ns + 1;
        ns++;
    }
    if (ns == 0) return;
    e->next[ns - 1] = -1;
    e->nheap = 0;
    for (int i = 0; i + 1 < ns; i++) push_pair(e, i);
    while (e->nheap > 0) {
        Merge x = heap_pop(e);
        int r = e->sym[x.pos] < 0 ? -1 : e->next[x.pos];
        if (r < 0) continue;  // absorbed, or the last symbol
        const MergeSlot *s = merge_find(m, e->sym[x.pos], e->sym[r]);
        if (!s || s->id != x.id) continue;  // stale: a side changed since the push
        e->sym[x.pos] = x.id;
        e->sym[r] = -1;
        int nx = e->next[r];
        e->next[x.pos] = nx;
        if (nx >= 0) e->prev[nx] = x.pos;
        push_pair(e, e->prev[x.pos]);
        push_pair(e, x.pos);
    }
    for (int i = 0; i >= 0; i = e->next[i]) push_id(e, e->sym[i]);
}

static size_t utf8_len_at(const char *s, size_t n) {
    unsigned c = (unsigned char)s[0];
    size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    return l < n ? l : n;
}

// Pre-tokenizer step k on piece s[0..n), then the next steps, then BPE.
static void split_step(Enc *e, int k, const char *s, size_t n) {
    if (n == 0) return;
    if (k == e->m->nsteps) {
        bpe_word(e, s, n);
        return;
    }
    const Step *st = &e->m->steps[k];
    if (st->prefix_space && s[0] != ' ') {
        if (n + 1 > e->tmpcap[k]) {
            e->tmpcap[k] = 2 * (n + 1);
            e->tmp[k] = xrealloc(e->tmp[k], e->tmpcap[k]);
        }
        e->tmp[k][0] = ' ';
        memcpy(e->tmp[k] + 1, s, n);
        s = e->tmp[k];
        n++;
    }
    if (!st->re) {
        split_step(e, k + 1, s, n);
        return;
    }
    size_t off = 0, last = 0;
    while (off < n) {
        int rc = pcre2_match(st->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, e->md, e->m->mctx);
        if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)  // JIT stack or match limit: the interpreter
            rc = pcre2_match(st->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                             e->md, e->m->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            if (!e->warned++) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                fprintf(stderr,
                        "postshare: warning: tokenizer regex failed (%s) on a %zu-byte piece; the "
                        "rest of the piece is left unsplit\n",
                        (char *)msg, n);
            }
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t a = ov[0], b = ov[1];
        if (b <= a) {  // an empty match splits nothing
            if (a >= n) break;  // at the end: nothing left to step over (s[n] is not ours)
            off = a + utf8_len_at(s + a, n - a);
            continue;
        }
        split_step(e, k + 1, s + last, a - last);
        split_step(e, k + 1, s + a, b - a);
        last = off = b;
    }
    split_step(e, k + 1, s + last, n - last);
}

// Rust's char::is_whitespace (the Unicode White_Space property).
static int is_white(unsigned cp) {
    return (cp >= 9 && cp <= 13) || cp == ' ' || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

// Whitespace character ending at s[end] (exclusive), not before s[lo]: its length, or 0.
static size_t white_before(const char *s, size_t lo, size_t end) {
    if (end <= lo) return 0;
    size_t a = end - 1;
    while (a > lo && end - a < 4 && ((unsigned char)s[a] & 0xC0) == 0x80) a--;
    int l = ps_utf8_len((const unsigned char *)s + a, end - a);
    if (l == 0 || (size_t)l != end - a) return 0;
    return is_white(utf8_decode((const unsigned char *)s + a, l)) ? (size_t)l : 0;
}

static size_t white_at(const char *s, size_t i, size_t n) {
    int l = ps_utf8_len((const unsigned char *)s + i, n - i);
    return l && is_white(utf8_decode((const unsigned char *)s + i, l)) ? (size_t)l : 0;
}

// Cut the added tokens of trie `pass` out of s[0..n); the gaps go to the next
// pass (the normalized tokens), then to the pre-tokenizer.
static void added_split(Enc *e, int pass, const char *s, size_t n) {
    if (n == 0) return;
    if (pass == 2) {
        split_step(e, 0, s, n);
        return;
    }
    const Trie *tr = &e->m->trie[pass];
    if (tr->count == 0) {
        added_split(e, pass + 1, s, n);
        return;
    }
    size_t i = 0, last = 0;
    while (i < n) {
        if (!tr->first_byte[(unsigned char)s[i]]) {
            i++;
            continue;
        }
        int node = 0, best = -1;
        size_t best_len = 0;
        for (size_t j = i; j < n; j++) {
            node = trie_node((Trie *)tr, node, (unsigned char)s[j], 0);
            if (node < 0) break;
            if (tr->tok[node] >= 0) best = tr->tok[node], best_len = j + 1 - i;
        }
        if (best < 0) {
            i++;
            continue;
        }
        const Special *sp = &e->m->special[best];
        size_t a = i, b = i + best_len, w;
        if (sp->lstrip)
            while ((w = white_before(s, last, a)) > 0) a -= w;
        if (sp->rstrip)
            while (b < n && (w = white_at(s, b, n)) > 0) b += w;
        added_split(e, pass + 1, s + last, a - last);
        push_id(e, sp->id);
        last = i = b;
    }
    added_split(e, pass + 1, s + last, n - last);
}

// Length of the maximal invalid subpart at s (ps_utf8_len gave 0): the lead
// byte and the continuation bytes that could still have completed it.
static size_t bad_utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0)
        need = 2, lo = 0xA0;
    else if (c == 0xED)
        need = 2, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF)
        need = 2;
    else if (c == 0xF0)
        need = 3, lo = 0x90;
    else if (c == 0xF4)
        need = 3, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else
        return 1;
    size_t k = 1;
    if (k < n && s[k] >= lo && s[k] <= hi) {
        k++;
        while (k <= need && k < n && (s[k] & 0xC0) == 0x80) k++;
    }
    return k;
}

// text with invalid UTF-8 replaced by U+FFFD, or NULL when it is valid.
static char *sanitize(const char *text, size_t len, size_t *out_len) {
    const unsigned char *u = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        int l = u[i] < 0x80 ? 1 : ps_utf8_len(u + i, len - i);
        if (l == 0) break;
        i += (size_t)l;
    }
    if (i == len) return NULL;
    char *out = xmalloc(3 * len + 1);
    memcpy(out, text, i);
    size_t o = i;
    while (i < len) {
        int l = ps_utf8_len(u + i, len - i);
        if (l > 0) {
            memcpy(out + o, text + i, (size_t)l);
            o += (size_t)l;
            i += (size_t)l;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += bad_utf8_len(u + i, len - i);
        }
    }
    *out_len = o;
    return out;
}

int *bpe_encode(const Tokenizer *t, const char *text, size_t len, int add_bos, size_t *n) {
    Enc e = {0};
    e.t = t;
    e.m = t->bpe;
    e.md = pcre2_match_data_create(1, NULL);
    CHECK(e.md, "out of memory for PCRE2 match data");
    if (add_bos && e.m->adds_bos && t->bos_id >= 0) push_id(&e, t->bos_id);
    size_t sl = len;
    char *clean = sanitize(text, len, &sl);
    added_split(&e, 0, clean ? clean : text, sl);
    free(clean);
    pcre2_match_data_free(e.md);
    free(e.sym);
    free(e.prev);
    free(e.next);
    free(e.heap);
    for (int k = 0; k < BPE_MAX_STEPS; k++) free(e.tmp[k]);
    *n = e.n;
    if (!e.ids) e.ids = xmalloc(sizeof(int));
    return e.ids;
}
