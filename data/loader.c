// loader.c: shard-glob data loader with seed-determined epoch shuffles (see loader.h).
#define _POSIX_C_SOURCE 200809L
#include "loader.h"

#include <glob.h>
#include <string.h>

#include "common.h"
#include "shard.h"

// Permutations of the two most recently used epochs are cached: readers move
// forward through the stream, so a batch (or the ranks of a step) straddling an
// epoch boundary touches at most two epochs and nothing is recomputed per sample.
#define PERM_CACHE 2

struct Loader {
    int n_shards;
    Shard *shards;
    uint64_t *first_window;  // [n_shards + 1]: global index of each shard's first window
    uint64_t n_windows;
    uint64_t n_tokens;
    int seq_len;
    int shuffle;
    uint64_t seed;
    uint64_t sample;
    uint32_t *perm[PERM_CACHE];   // window permutation, or NULL when unused
    uint64_t perm_epoch[PERM_CACHE];
    uint64_t perm_seed[PERM_CACHE];
    int perm_next;                // slot to overwrite next
};

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

Loader *loader_open(const char *pattern, int seq_len, int vocab_size, int shuffle, uint64_t seed) {
    if (seq_len <= 0) {
        ps_err_set("loader: seq_len must be positive (got %d)", seq_len);
        return NULL;
    }
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
        if (rc == 0) globfree(&g);
        ps_err_set("loader: no files match '%s'", pattern);
        return NULL;
    }
    if (rc != 0) {
        ps_err_set("loader: glob('%s') failed (code %d)", pattern, rc);
        return NULL;
    }
    // glob sorts with strcoll; re-sort with strcmp so the window order does
    // not depend on the locale.
    size_t n = g.gl_pathc;
    char **paths = xmalloc(n * sizeof(char *));
    for (size_t i = 0; i < n; i++) paths[i] = xstrdup(g.gl_pathv[i]);
    globfree(&g);
    qsort(paths, n, sizeof(char *), cmp_str);

    Loader *L = xcalloc(1, sizeof(Loader));
    L->shards = xcalloc(n, sizeof(Shard));
    L->first_window = xcalloc(n + 1, sizeof(uint64_t));
    L->seq_len = seq_len;
    L->shuffle = shuffle;
    L->seed = seed;
    for (size_t i = 0; i < n; i++) {
        if (shard_open(&L->shards[i], paths[i], vocab_size) != 0) {
            for (size_t j = i; j < n; j++) free(paths[j]);
            free(paths);
            loader_close(L);
            return NULL;
        }
        free(paths[i]);
        L->n_shards++;
        size_t nt = L->shards[i].n_tokens;
        uint64_t w = nt > (size_t)seq_len ? (uint64_t)((nt - 1) / (size_t)seq_len) : 0;
        L->first_window[i + 1] = L->first_window[i] + w;
        L->n_tokens += nt;
    }
    free(paths);
    L->n_windows = L->first_window[n];
    if (L->n_windows == 0) {
        ps_err_set("loader: '%s': no shard holds seq_len+1 = %d tokens (%llu tokens in %d shards)", pattern,
                   seq_len + 1, (unsigned long long)L->n_tokens, L->n_shards);
        loader_close(L);
        return NULL;
    }
    if (L->n_windows > UINT32_MAX) {
        ps_err_set("loader: '%s': %llu windows exceed the 2^32 supported", pattern,
                   (unsigned long long)L->n_windows);
        loader_close(L);
        return NULL;
    }
    return L;
}

void loader_close(Loader *L) {
    if (!L) return;
    for (int i = 0; i < L->n_shards; i++) shard_close(&L->shards[i]);
    free(L->shards);
    free(L->first_window);
    for (int i = 0; i < PERM_CACHE; i++) free(L->perm[i]);
    free(L);
}

uint64_t loader_num_windows(const Loader *L) { return L->n_windows; }
uint64_t loader_num_tokens(const Loader *L) { return L->n_tokens; }
int loader_num_shards(const Loader *L) { return L->n_shards; }
const char *loader_shard_path(const Loader *L, int i) { return L->shards[i].path; }
size_t loader_shard_tokens(const Loader *L, int i) { return L->shards[i].n_tokens; }
int loader_seq_len(const Loader *L) { return L->seq_len; }

// Uniform integer in [0, n) without modulo bias (rejection of the short top range).
static uint64_t rng_below(Rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = rng_u64(r);
    while (x >= limit);
    return x % n;
}

// The window permutation of one epoch (Fisher-Yates from an RNG seeded by
// mixing seed and epoch; rng_seed then scrambles with splitmix64).
static const uint32_t *epoch_perm(Loader *L, uint64_t epoch) {
    for (int i = 0; i < PERM_CACHE; i++)
        if (L->perm[i] && L->perm_epoch[i] == epoch && L->perm_seed[i] == L->seed) return L->perm[i];
    int slot = L->perm_next;
    L->perm_next = (L->perm_next + 1) % PERM_CACHE;
    uint64_t N = L->n_windows;
    if (!L->perm[slot]) L->perm[slot] = xmalloc(N * sizeof(uint32_t));
    uint32_t *p = L->perm[slot];
    for (uint64_t i = 0; i < N; i++) p[i] = (uint32_t)i;
    Rng r;
    rng_seed(&r, L->seed ^ (0xD1B54A32D192ED03ull * (epoch + 1)));
    for (uint64_t i = N - 1; i > 0; i--) {
        uint64_t j = rng_below(&r, i + 1);
        uint32_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    L->perm_epoch[slot] = epoch;
    L->perm_seed[slot] = L->seed;
    return p;
}

void loader_locate(Loader *L, uint64_t k, int *shard, size_t *offset) {
    uint64_t N = L->n_windows;
    uint64_t epoch = k / N, idx = k % N;
    uint64_t w = L->shuffle ? epoch_perm(L, epoch)[idx] : idx;
    // shard holding window w: the last s with first_window[s] <= w
    int lo = 0, hi = L->n_shards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (L->first_window[mid] <= w) lo = mid;
        else hi = mid - 1;
    }
    *shard = lo;
    *offset = (size_t)(w - L->first_window[lo]) * (size_t)L->seq_len;
}

void loader_read_sample(Loader *L, uint64_t k, int *inp, int *tgt) {
    int si;
    size_t off;
    loader_locate(L, k, &si, &off);
    const Shard *s = &L->shards[si];
    int T = L->seq_len;
    for (int t = 0; t < T; t++) {
        inp[t] = shard_token(s, off + (size_t)t);
        tgt[t] = shard_token(s, off + (size_t)t + 1);
    }
}

void loader_read_batch(Loader *L, uint64_t k0, int B, int *inp, int *tgt) {
    size_t T = (size_t)L->seq_len;
    for (int b = 0; b < B; b++) loader_read_sample(L, k0 + (uint64_t)b, inp + (size_t)b * T, tgt + (size_t)b * T);
}

void loader_skip(Loader *L, uint64_t n) {
    L->sample += n;
}

void loader_next_batch(Loader *L, int B, int *inp, int *tgt) {
    loader_read_batch(L, L->sample, B, inp, tgt);
    loader_skip(L, (uint64_t)B);
}

LoaderState loader_get_state(const Loader *L) {
    LoaderState s = {L->seed, L->sample, L->n_windows};
    return s;
}

int loader_set_state(Loader *L, LoaderState s) {
    if (s.n_windows != 0 && s.n_windows != L->n_windows)
        return ps_err_set("loader: saved position is for %llu windows per epoch but the data now has %llu "
                          "(different shards or seq_len); refusing to resume into another sample order",
                          (unsigned long long)s.n_windows, (unsigned long long)L->n_windows);
    L->seed = s.seed;
    L->sample = s.sample;
    return 0;
}

void loader_reset(Loader *L) { L->sample = 0; }
