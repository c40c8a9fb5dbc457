// loader.h: the training / validation data loader over a glob of token shards.
//
// Samples are windows of seq_len+1 consecutive tokens: inputs are the first
// seq_len, targets the same shifted by one. Inside each shard, windows start
// at 0, seq_len, 2*seq_len, ... (stride seq_len, so a window's last token is
// the next window's first input); the tail that does not fill a window is
// dropped. Windows never cross shard boundaries.
//
// The global window list is the concatenation over shards sorted by filename
// (strcmp order, independent of the locale). With shuffle, epoch e uses a
// permutation of that list drawn from an RNG seeded by (seed, e); sample k of
// the stream is window perm_e[k mod N] with e = k / N. Without shuffle the
// permutation is the identity. So the sample order is a pure function of
// (file list, seq_len, shuffle, seed, k): a data-parallel rank can read any
// sample index with loader_read_sample, and resuming only needs the sample
// counter (LoaderState).
//
// Every shard is opened (memory-mapped) and validated at loader_open.
// A Loader caches the current epoch permutations, so one Loader must not be
// read from two threads at once (open one per thread / rank instead).
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct Loader Loader;

// The whole position of a loader: save it in checkpoints, restore to resume.
typedef struct {
    uint64_t seed;       // shuffle seed
    uint64_t sample;     // index of the next sample loader_next_batch returns
    uint64_t n_windows;  // windows per epoch when saved (0 = do not check)
} LoaderState;

// Open every file matching the glob pattern (glob(3)). vocab_size > 0 makes
// each token be checked against it. Errors (no match, bad shard, no shard
// long enough for one window) return NULL with ps_err set.
Loader *loader_open(const char *pattern, int seq_len, int vocab_size, int shuffle, uint64_t seed);
void loader_close(Loader *L);

uint64_t loader_num_windows(const Loader *L);  // N: samples per epoch
uint64_t loader_num_tokens(const Loader *L);   // tokens in all shards
int loader_num_shards(const Loader *L);
const char *loader_shard_path(const Loader *L, int i);  // i-th shard, sorted
size_t loader_shard_tokens(const Loader *L, int i);     // tokens in the i-th shard
int loader_seq_len(const Loader *L);

// Read sample k (any k; epochs repeat with fresh permutations). inp and tgt
// receive seq_len ints each. Does not move the stream position.
void loader_read_sample(Loader *L, uint64_t k, int *inp, int *tgt);

// Where sample k comes from: the shard index and the token offset of its
// window in that shard (checkpoints record it for people; resuming needs only
// the sample counter).
void loader_locate(Loader *L, uint64_t k, int *shard, size_t *offset);

// Read samples k0 .. k0+B-1 into inp/tgt ([B, seq_len] row-major each); does
// not move the stream position. A data-parallel rank reads its micro-batches of
// a step's global batch with it, then every rank skips the whole global batch.
void loader_read_batch(Loader *L, uint64_t k0, int B, int *inp, int *tgt);
// Advance the stream position by n samples.
void loader_skip(Loader *L, uint64_t n);

// Read the next B samples (B consecutive sample indices) into inp/tgt
// ([B, seq_len] row-major each) and advance the position by B.
void loader_next_batch(Loader *L, int B, int *inp, int *tgt);

// Position save / restore. set_state fails (-1, ps_err) when the state's
// n_windows is non-zero and differs from this loader's (different data or
// seq_len: the saved position would mean another sample order).
LoaderState loader_get_state(const Loader *L);
int loader_set_state(Loader *L, LoaderState s);

// Back to sample 0: validation calls this, then reads its first N batches,
// so every evaluation sees the same samples.
void loader_reset(Loader *L);
