// test_data.c: token shards (round trip, corrupt files), the loader
// (determinism, epoch coverage, resume, validation order) and `prepare`
// end to end.
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <unistd.h>

#include "common.h"
#include "loader.h"
#include "prepare.h"
#include "shard.h"
#include "test.h"
#include "tokenizer.h"

static char g_tmp[256];

static char *tmp_path(const char *name) { return ps_path_join(g_tmp, name); }
static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

static void rm_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = ps_path_join(path, e->d_name);
            rm_tree(p);
            free(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

// ---------------------------------------------------------------------------
// shards

static void test_shard_roundtrip(void) {
    int toks16[1000], toks32[777];
    for (int i = 0; i < 1000; i++) toks16[i] = (i * 7919) % 50257;
    for (int i = 0; i < 777; i++) toks32[i] = (i * 104729) % 128256;
    toks16[999] = 50256;
    toks32[776] = 128255;
    char *p16 = tmp_path("r16.bin"), *p32 = tmp_path("r32.bin");
    T_CHECK(shard_write(p16, toks16, 1000, 50257) == 0, "write u16: %s", ps_err_msg());
    T_CHECK(shard_write(p32, toks32, 777, 128256) == 0, "write u32: %s", ps_err_msg());
    size_t len;
    char *raw = ps_read_file(p16, &len);
    int32_t h[3];
    memcpy(h, raw, sizeof h);
    T_CHECK(len == 1024 + 2 * 1000 && h[0] == 20240520 && h[1] == 1 && h[2] == 1000, "u16 header/size");
    free(raw);
    raw = ps_read_file(p32, &len);
    memcpy(h, raw, sizeof h);
    T_CHECK(len == 1024 + 4 * 777 && h[0] == 20240801 && h[1] == 7 && h[2] == 777, "u32 header/size");
    free(raw);
    size_t n;
    int *back = shard_read(p16, 50257, &n);
    T_CHECK(back && n == 1000 && memcmp(back, toks16, sizeof toks16) == 0, "u16 round trip");
    free(back);
    back = shard_read(p32, 128256, &n);
    T_CHECK(back && n == 777 && memcmp(back, toks32, sizeof toks32) == 0, "u32 round trip");
    free(back);
    // vocab exactly 65536 still fits uint16
    int big[2] = {0, 65535};
    T_CHECK(shard_write(p16, big, 2, 65536) == 0, "write 65536");
    raw = ps_read_file(p16, &len);
    T_CHECK(len == 1024 + 4, "vocab 65536 -> uint16 (%zu bytes)", len);
    free(raw);
    back = shard_read(p16, 65536, &n);
    T_CHECK(back && n == 2 && back[1] == 65535, "65535 round trip");
    free(back);
    // an empty shard is valid
    T_CHECK(shard_write(p16, big, 0, 512) == 0, "write empty");
    back = shard_read(p16, 512, &n);
    T_CHECK(back && n == 0, "empty shard");
    free(back);
    // writing an out-of-range token fails and names the file
    int badtok[3] = {1, 600, 2};
    T_CHECK(shard_write(p16, badtok, 3, 512) != 0 && contains(ps_err_msg(), "r16.bin") &&
                contains(ps_err_msg(), "600"),
            "write rejects token >= vocab: %s", ps_err_msg());
    unlink(p16);
    unlink(p32);
    free(p16);
    free(p32);
}

static void test_shard_errors(void) {
    int toks[300];
    for (int i = 0; i < 300; i++) toks[i] = i;
    char *path = tmp_path("bad_shard.bin");
    size_t len;
    CHECK(shard_write(path, toks, 300, 1000) == 0, "%s", ps_err_msg());
    char *good = ps_read_file(path, &len);
    Shard s;

    ps_write_file_atomic(path, good, len - 3);
    T_CHECK(shard_open(&s, path, 1000) != 0 && contains(ps_err_msg(), "truncated shard") &&
                contains(ps_err_msg(), "bad_shard.bin"),
            "truncated: %s", ps_err_msg());
    ps_write_file_atomic(path, good, 100);
    T_CHECK(shard_open(&s, path, 1000) != 0 && contains(ps_err_msg(), "truncated shard") &&
                contains(ps_err_msg(), "bad_shard.bin"),
            "shorter than header: %s", ps_err_msg());
    char *longer = xmalloc(len + 8);
    memcpy(longer, good, len);
    memset(longer + len, 0, 8);
    ps_write_file_atomic(path, longer, len + 8);
    T_CHECK(shard_open(&s, path, 1000) != 0 && contains(ps_err_msg(), "longer") &&
                contains(ps_err_msg(), "bad_shard.bin"),
            "longer: %s", ps_err_msg());
    free(longer);

    char *mod = xmalloc(len);
    memcpy(mod, good, len);
    int32_t v = 12345;
    memcpy(mod, &v, 4);
    ps_write_file_atomic(path, mod, len);
    T_CHECK(shard_open(&s, path, 1000) != 0 && contains(ps_err_msg(), "bad shard magic") &&
                contains(ps_err_msg(), "bad_shard.bin"),
            "magic: %s", ps_err_msg());
    memcpy(mod, good, len);
    v = 3;
    memcpy(mod + 4, &v, 4);
    ps_write_file_atomic(path, mod, len);
    T_CHECK(shard_open(&s, path, 1000) != 0 && contains(ps_err_msg(), "version") &&
                contains(ps_err_msg(), "bad_shard.bin"),
            "version: %s", ps_err_msg());
    free(mod);

    ps_write_file_atomic(path, good, len);
    T_CHECK(shard_open(&s, path, 250) != 0 && contains(ps_err_msg(), "bad_shard.bin") &&
                contains(ps_err_msg(), "token 250") && contains(ps_err_msg(), "position 250") &&
                contains(ps_err_msg(), "vocab size 250"),
            "token >= vocab: %s", ps_err_msg());
    T_CHECK(shard_open(&s, path, 300) == 0, "valid at vocab 300: %s", ps_err_msg());
    T_CHECK(s.n_tokens == 300 && shard_token(&s, 299) == 299, "tokens");
    shard_close(&s);
    T_CHECK(shard_open(&s, "/nonexistent/x.bin", 10) != 0 && contains(ps_err_msg(), "/nonexistent/x.bin"),
            "missing: %s", ps_err_msg());
    free(good);
    unlink(path);
    free(path);
}

// ---------------------------------------------------------------------------
// loader

#define SEQ 16

// Three shards whose tokens are a global running counter (so a window is
// identified by its first token), written out of name order, plus one too
// short for any window.
static int g_shard_len[3] = {537, 1000, 5};  // names s_a, s_b, s_c
static int g_base[3];

static void make_loader_shards(const char *dir) {
    const char *names[3] = {"s_a.bin", "s_b.bin", "s_c.bin"};
    int order[3] = {1, 2, 0};  // write order (checks the loader sorts by name)
    int base = 0;
    for (int k = 0; k < 3; k++) g_base[k] = base, base += g_shard_len[k];
    for (int j = 0; j < 3; j++) {
        int k = order[j];
        int *t = xmalloc((size_t)g_shard_len[k] * sizeof(int));
        for (int i = 0; i < g_shard_len[k]; i++) t[i] = g_base[k] + i;
        char *p = ps_path_join(dir, names[k]);
        CHECK(shard_write(p, t, (size_t)g_shard_len[k], 65536) == 0, "%s", ps_err_msg());
        free(p);
        free(t);
    }
}

// window index (in sorted order) from its first token; -1 if not a window start
static int window_of(int first) {
    int w = 0;
    for (int k = 0; k < 3; k++) {
        int nw = g_shard_len[k] > SEQ ? (g_shard_len[k] - 1) / SEQ : 0;
        int off = first - g_base[k];
        if (off >= 0 && off < g_shard_len[k]) return off % SEQ == 0 && off / SEQ < nw ? w + off / SEQ : -1;
        w += nw;
    }
    return -1;
}

static int sample_ok(const int *inp, const int *tgt) {
    for (int t = 0; t < SEQ; t++)
        if (inp[t] != inp[0] + t || tgt[t] != inp[t] + 1) return 0;
    return window_of(inp[0]) >= 0;
}

static void test_loader(void) {
    char *dir = tmp_path("shards");
    ps_mkdirs(dir);
    make_loader_shards(dir);
    char *pattern = ps_path_join(dir, "s_*.bin");
    const int N = (537 - 1) / SEQ + (1000 - 1) / SEQ;  // 33 + 62; s_c has none

    // sequential order = sorted shards, windows in order
    Loader *L = loader_open(pattern, SEQ, 65536, 0, 0);
    T_CHECK(L != NULL, "open: %s", ps_err_msg());
    if (!L) return;
    T_CHECK(loader_num_windows(L) == (uint64_t)N && loader_num_shards(L) == 3, "N=%llu shards=%d",
            (unsigned long long)loader_num_windows(L), loader_num_shards(L));
    T_CHECK(loader_num_tokens(L) == 537 + 1000 + 5, "tokens");
    T_CHECK(contains(loader_shard_path(L, 0), "s_a.bin") && contains(loader_shard_path(L, 2), "s_c.bin"),
            "sorted by name");
    int inp[4 * SEQ], tgt[4 * SEQ];
    int ok = 1;
    for (int k = 0; k < 2 * N; k++) {
        loader_read_sample(L, (uint64_t)k, inp, tgt);
        ok &= sample_ok(inp, tgt) && window_of(inp[0]) == k % N;
    }
    T_CHECK(ok, "sequential windows (incl. the second epoch) are in order and shifted targets are right");
    loader_close(L);

    // shuffled: each epoch is a permutation; epochs differ; seeds differ
    Loader *A = loader_open(pattern, SEQ, 65536, 1, 1234);
    Loader *B = loader_open(pattern, SEQ, 65536, 1, 1234);
    Loader *C = loader_open(pattern, SEQ, 65536, 1, 99);
    T_CHECK(A && B && C, "open shuffled");
    int *seen = xcalloc((size_t)N, sizeof(int));
    int *order0 = xmalloc((size_t)N * sizeof(int));
    int perm_ok = 1, same01 = 1, ident = 1, valid = 1;
    for (int e = 0; e < 3; e++) {
        memset(seen, 0, (size_t)N * sizeof(int));
        for (int i = 0; i < N; i++) {
            loader_read_sample(A, (uint64_t)(e * N + i), inp, tgt);
            valid &= sample_ok(inp, tgt);
            int w = window_of(inp[0]);
            if (w >= 0) seen[w]++;
            if (e == 0) order0[i] = w, ident &= w == i;
            if (e == 1) same01 &= order0[i] == w;
        }
        for (int w = 0; w < N; w++) perm_ok &= seen[w] == 1;
    }
    T_CHECK(valid, "shuffled samples are valid windows");
    T_CHECK(perm_ok, "every window exactly once per epoch (3 epochs)");
    T_CHECK(!ident && !same01, "shuffled order is not the identity and changes between epochs");

    // same seed -> same batches; different seed -> different
    int ia[4 * SEQ], ta[4 * SEQ], ib[4 * SEQ], tb[4 * SEQ], ic[4 * SEQ], tc[4 * SEQ];
    int same_ab = 1, same_ac = 1;
    for (int step = 0; step < 60; step++) {  // 240 samples: crosses two epoch boundaries
        loader_next_batch(A, 4, ia, ta);
        loader_next_batch(B, 4, ib, tb);
        loader_next_batch(C, 4, ic, tc);
        same_ab &= !memcmp(ia, ib, sizeof ia) && !memcmp(ta, tb, sizeof ta);
        same_ac &= !memcmp(ia, ic, sizeof ia);
    }
    T_CHECK(same_ab, "same seed gives the same batches");
    T_CHECK(!same_ac, "different seeds give different batches");

    // next_batch rows equal read_sample at the same indices
    loader_reset(A);
    loader_next_batch(A, 4, ia, ta);
    loader_next_batch(A, 4, ia, ta);
    int rows_ok = 1;
    for (int b = 0; b < 4; b++) {
        loader_read_sample(B, (uint64_t)(4 + b), inp, tgt);
        rows_ok &= !memcmp(inp, ia + b * SEQ, SEQ * sizeof(int)) && !memcmp(tgt, ta + b * SEQ, SEQ * sizeof(int));
    }
    T_CHECK(rows_ok, "batch rows are samples 4..7");

    // save / restore: resume in a fresh loader reproduces the continuation exactly
    loader_reset(A);
    for (int step = 0; step < 21; step++) loader_next_batch(A, 4, ia, ta);
    LoaderState st = loader_get_state(A);
    T_CHECK(st.sample == 84 && st.seed == 1234 && st.n_windows == (uint64_t)N, "state fields");
    int cont[10][4 * SEQ];
    for (int step = 0; step < 10; step++) loader_next_batch(A, 4, cont[step], ta);
    Loader *R = loader_open(pattern, SEQ, 65536, 1, 777);  // seed comes from the state
    T_CHECK(R && loader_set_state(R, st) == 0, "set_state: %s", ps_err_msg());
    int resumed = 1;
    for (int step = 0; step < 10 && R; step++) {
        loader_next_batch(R, 4, ib, tb);
        resumed &= !memcmp(ib, cont[step], sizeof ib);
    }
    T_CHECK(resumed, "restored loader continues identically (across an epoch boundary)");
    LoaderState wrong = st;
    wrong.n_windows = (uint64_t)N + 1;
    T_CHECK(R && loader_set_state(R, wrong) != 0 && contains(ps_err_msg(), "windows"),
            "state of other data refused: %s", ps_err_msg());
    loader_close(R);
    loader_close(A);
    loader_close(B);
    loader_close(C);
    free(seen);
    free(order0);

    // validation: unshuffled, reset gives the same first batches every time
    Loader *V = loader_open(pattern, SEQ, 65536, 0, 5);
    int v1[3][4 * SEQ], v2[4 * SEQ], tv[4 * SEQ];
    for (int i = 0; i < 3; i++) loader_next_batch(V, 4, v1[i], tv);
    loader_next_batch(V, 4, v2, tv);  // move on, as training would between evals
    loader_reset(V);
    int vsame = 1;
    for (int i = 0; i < 3; i++) {
        loader_next_batch(V, 4, v2, tv);
        vsame &= !memcmp(v1[i], v2, sizeof v2);
    }
    T_CHECK(vsame && v1[0][0] == 0 && v1[0][SEQ] == SEQ, "val loader deterministic after reset");
    loader_close(V);

    // errors
    char *nomatch = ps_path_join(dir, "nothing_*.bin");
    T_CHECK(loader_open(nomatch, SEQ, 65536, 0, 0) == NULL && contains(ps_err_msg(), "nothing_*.bin"),
            "empty glob: %s", ps_err_msg());
    free(nomatch);
    T_CHECK(loader_open(pattern, 5000, 65536, 0, 0) == NULL && contains(ps_err_msg(), "seq_len"),
            "no window fits: %s", ps_err_msg());
    T_CHECK(loader_open(pattern, SEQ, 1000, 0, 0) == NULL && contains(ps_err_msg(), "s_b.bin"),
            "token >= vocab names the shard: %s", ps_err_msg());
    char *junk = ps_path_join(dir, "s_d.bin");
    ps_write_file_atomic(junk, "junk", 4);
    T_CHECK(loader_open(pattern, SEQ, 65536, 0, 0) == NULL && contains(ps_err_msg(), "s_d.bin"),
            "corrupt shard in the glob: %s", ps_err_msg());
    free(junk);
    free(pattern);
    rm_tree(dir);
    free(dir);
}

// ---------------------------------------------------------------------------
// prepare

static int run_prepare(const char **args, int n) {
    char **argv = xmalloc((size_t)(n + 2) * sizeof(char *));
    argv[0] = "prepare";
    for (int i = 0; i < n; i++) argv[i + 1] = (char *)args[i];
    argv[n + 1] = NULL;
    fflush(stdout);
    int rc = prepare_main(n + 1, argv);
    fflush(stdout);
    free(argv);
    return rc;
}

// Concatenate DIR/PREFIX_SPLIT_%06d.bin shards; returns count and tokens.
static int read_split(const char *dir, const char *prefix, const char *split, int vocab, int **out, size_t *n,
                      size_t *max_shard) {
    *out = NULL;
    *n = 0;
    *max_shard = 0;
    int k = 0;
    for (;; k++) {
        char name[256];
        snprintf(name, sizeof name, "%s_%s_%06d.bin", prefix, split, k);
        char *p = ps_path_join(dir, name);
        if (!file_exists(p)) {
            free(p);
            break;
        }
        size_t m;
        int *t = shard_read(p, vocab, &m);
        free(p);
        if (!t) return -1;
        *out = xrealloc(*out, (*n + m + 1) * sizeof(int));
        memcpy(*out + *n, t, m * sizeof(int));
        *n += m;
        if (m > *max_shard) *max_shard = m;
        free(t);
    }
    return k;
}

static void test_prepare(void) {
    char *txt = tmp_path("corpus.txt"), *txt2 = tmp_path("corpus2.txt"), *out = tmp_path("prep");
    // 300 lines of varying length
    size_t cap = 1 << 16, len = 0;
    char *text = xmalloc(cap);
    for (int i = 0; i < 300; i++)
        len += (size_t)snprintf(text + len, cap - len, "line %d: the quick brown fox%.*s\n", i, i % 17,
                                "!!!!!!!!!!!!!!!!!!!!");
    ps_write_file_atomic(txt, text, len);
    const char *a1[] = {"--tokenizer", "byte", "--out", out, "--val-fraction", "0.1", "--shard-tokens", "2k",
                        "--prefix", "t", txt};
    T_CHECK(run_prepare(a1, 11) == 0, "prepare byte");
    int *tr, *va;
    size_t ntr, nva, mtr, mva;
    int str = read_split(out, "t", "train", 256, &tr, &ntr, &mtr);
    int sva = read_split(out, "t", "val", 256, &va, &nva, &mva);
    T_CHECK(str == (int)((ntr + 1999) / 2000) && str >= 4 && sva == 1, "shard counts %d %d", str, sva);
    T_CHECK(mtr <= 2000 && ntr + nva == len, "sizes: %zu + %zu vs %zu", ntr, nva, len);
    int same = ntr + nva == len;
    for (size_t i = 0; same && i < len; i++) same = (i < ntr ? tr[i] : va[i - ntr]) == (unsigned char)text[i];
    T_CHECK(same, "train + val tokens are the text's bytes");
    T_CHECK(ntr > 0 && tr[ntr - 1] == '\n' && nva > 0 && nva <= len / 10 + 1 && nva + 60 > len / 10,
            "val is the last ~10%% starting at a line: %zu of %zu", nva, len);
    free(tr);
    free(va);

    // a loader reads the result
    char *pat = ps_path_join(out, "t_train_*.bin");
    Loader *L = loader_open(pat, 64, 256, 1, 1);
    T_CHECK(L != NULL, "loader over prepared shards: %s", ps_err_msg());
    loader_close(L);
    free(pat);

    // rerun with bigger shards: stale train shards from the first run are removed
    const char *a2[] = {"--tokenizer", "byte", "--out", out, "--val-fraction=0.1", "--prefix", "t", txt};
    T_CHECK(run_prepare(a2, 8) == 0, "prepare again");
    str = read_split(out, "t", "train", 256, &tr, &ntr, &mtr);
    char *stale = ps_path_join(out, "t_train_000001.bin");
    T_CHECK(str == 1 && !file_exists(stale), "stale shards removed (%d shards)", str);
    free(stale);
    free(tr);

    // two documents from a file and stdin; val = second document's tail
    ps_write_file_atomic(txt2, "second document, one long line without newline", 47);
    FILE *saved = freopen(txt2, "r", stdin);
    T_CHECK(saved != NULL, "freopen stdin");
    const char *a3[] = {"--tokenizer", "byte", "--out", out, "--prefix", "two", "--val-fraction", "0.003", txt, "-"};
    T_CHECK(run_prepare(a3, 10) == 0, "prepare file + stdin");
    str = read_split(out, "two", "train", 256, &tr, &ntr, &mtr);
    sva = read_split(out, "two", "val", 256, &va, &nva, &mva);
    T_CHECK(ntr == len && nva == 47, "cut at the document start: %zu + %zu", ntr, nva);
    free(tr);
    free(va);

    // val fraction 0: no val shard
    const char *a4[] = {"--tokenizer", "byte", "--out", out, "--prefix", "nov", "--val-fraction", "0", txt};
    T_CHECK(run_prepare(a4, 9) == 0, "prepare without val");
    char *v0 = ps_path_join(out, "nov_val_000000.bin");
    T_CHECK(!file_exists(v0), "no val shard");
    free(v0);

    // errors
    const char *e1[] = {"--out", out, txt};
    T_CHECK(run_prepare(e1, 3) == 2, "missing --tokenizer is a usage error");
    const char *e2[] = {"--tokenizer", "byte", "--out", out, "/nonexistent/file.txt"};
    T_CHECK(run_prepare(e2, 5) == 1, "missing input file fails");
    const char *e3[] = {"--tokenizer", "byte", "--out", out, "--val-fraction", "1.5", txt};
    T_CHECK(run_prepare(e3, 7) == 2, "bad fraction");
    const char *e4[] = {"--tokenizer", "nope:x", "--out", out, txt};
    T_CHECK(run_prepare(e4, 5) == 1, "bad tokenizer");
    const char *e5[] = {"--help"};
    T_CHECK(run_prepare(e5, 1) == 0, "help");

    // spm tokenizer: every document starts with BOS (when the shared data is here)
    const char *data = t_shared_data();
    char *tokp = data ? ps_path_join(data, "models/stories260K/tok512.bin") : NULL;
    if (tokp && file_exists(tokp)) {
        char *spec = xmalloc(strlen(tokp) + 16);
        sprintf(spec, "llama2c:%s", tokp);
        const char *a5[] = {"--tokenizer", spec, "--out", out, "--prefix", "sp", "--val-fraction", "0.2", txt, txt2};
        T_CHECK(run_prepare(a5, 10) == 0, "prepare tok512");
        str = read_split(out, "sp", "train", 512, &tr, &ntr, &mtr);
        sva = read_split(out, "sp", "val", 512, &va, &nva, &mva);
        Tokenizer *t = tok_open(spec);
        size_t n1, n2;
        int *d1 = tok_encode(t, text, len, 1, &n1);
        int *d2 = tok_encode(t, "second document, one long line without newline", 47, 1, &n2);
        int ok = ntr + nva == n1 + n2 && tr[0] == 1;
        for (size_t i = 0; ok && i < n1 + n2; i++) {
            int got = i < ntr ? tr[i] : va[i - ntr];
            ok = got == (i < n1 ? d1[i] : d2[i - n1]);
        }
        T_CHECK(ok, "tok512 shards = BOS+doc1, BOS+doc2");
        T_CHECK(ntr > 0 && (tr[ntr - 1] == t->newline_id || ntr == n1), "val starts at a line");
        free(d1);
        free(d2);
        free(tr);
        free(va);
        tok_free(t);
        free(spec);
    } else {
        T_SKIP("shared tok512.bin not found: prepare with an spm tokenizer skipped");
    }
    free(tokp);
    free(text);
    free(txt);
    free(txt2);
    free(out);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/ps_data_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(g_tmp) != NULL, "mkdtemp %s", g_tmp);
    test_shard_roundtrip();
    test_shard_errors();
    test_loader();
    test_prepare();
    rm_tree(g_tmp);
    return t_summary();
}
