// checkpoint.h: HDF5 training checkpoints: the file format (docs/checkpoints.md),
// a crash-safe writer, a reader that verifies every checksum, and the list of
// a run directory's checkpoints.
//
// A checkpoint holds everything a run needs to continue bit for bit: the fp32
// master weights and AdamW's m and v (one HDF5 group per tensor, under its HF
// name, unsharded, in the parameter table's order), the step, tokens seen and
// AdamW's bias-correction counter, the data loader position, the RNG states,
// the resolved job config (YAML text), the sharing plan when there is one
// (JSON text), and the format and program versions.
//
// Integrity: every dataset is chunked with HDF5's Fletcher32 filter, and the
// file uses the HDF5 1.10 format, whose metadata (superblock, object headers
// holding the attributes, chunk indexes) carries checksums too. A flipped bit
// anywhere that matters makes ckpt_read fail with a message naming the file
// and the tensor, never return wrong numbers.
//
// This module works on host buffers only. The training loop's side (what goes
// in, resume, pruning, signals) is resume.h.
#pragma once

#include <stdint.h>

#include "params.h"
#include "loader.h"

#define CKPT_FORMAT "postshare-checkpoint"
#define CKPT_FORMAT_VERSION 1
#define CKPT_MAX_RNG 8

// A named RNG state. Today: the run seed and the train loader's shuffle seed
// (its stream position is the loader state). A new RNG is one more entry.
typedef struct {
    char name[48];
    uint64_t state;
} CkptRng;

// Everything in a checkpoint except the tensors.
typedef struct {
    int64_t step;           // optimizer steps taken (= the LR schedule position)
    int64_t tokens_seen;    // training tokens consumed
    int64_t optim_t;        // AdamW's bias-correction step counter
    double lr;              // learning rate of the last step (informational)
    double elapsed_s;       // training wall time so far (logging only)
    double first_val_loss;  // the step-0 validation loss (for the run summary)
    // the train loader's position
    LoaderState loader;
    int shuffle;
    // informational: where the next sample comes from (inspect prints it)
    uint64_t epoch;
    char shard[256];       // base name of the shard holding the next sample
    int64_t shard_offset;  // its token offset in that shard
    int64_t global_batch;  // samples per optimizer step (ranks x batch x accumulation); 0: unknown
    int world_size;        // data-parallel ranks that wrote it (0: unknown, an older file)
    char *train_shards;    // "name<TAB>tokens\n" per train shard: what the data was
    int n_rng;
    CkptRng rng[CKPT_MAX_RNG];
    char *config_yaml;  // the resolved job config
    char *plan_json;    // the sharing plan; NULL when the run has none
    // filled by the reader
    int format_version;
    char program_version[32];
    char created[32];  // UTC time of writing, ISO 8601
} CkptMeta;

typedef struct {
    CkptMeta meta;
    HostWeights w;  // model config, parameter table and fp32 master weights
    float *m, *v;   // AdamW moments [w.t.total]; NULL when not read
} Checkpoint;

typedef struct {
    double seconds;
    double bytes;  // file size
} CkptIoStats;

// Write c to path through "path.tmp.<pid>": write, close, fsync, rename,
// fsync the directory. A crash at any point leaves either no file under path
// or the complete new one (and an earlier file under path untouched until the
// rename). Every string in c->meta may be NULL (plan_json: no plan). 0, or -1
// with ps_err set and the temp file removed. st may be NULL.
int ckpt_write(const char *path, const Checkpoint *c, CkptIoStats *st);
// Append the whole-file checksum trailer (what ckpt_write ends with) to the
// closed file at path: its bytes so far become the covered data, so ckpt_read
// takes them as intact and walks them in this process. The fuzzer seals its
// mutated files with it to reach the in-process reader. 0, or -1 with ps_err.
int ckpt_seal(const char *path);

// Called by ckpt_read for every tensor dataset it checks: err is NULL when the
// dataset read back intact, else what is wrong with it.
typedef void (*CkptTensorFn)(void *ctx, const ParamEntry *e, const char *dataset, const char *err);
typedef struct {
    int optim;          // also read AdamW m and v (else c->m, c->v stay NULL)
    CkptTensorFn each;  // NULL: stop at the first bad dataset; else report each one and go on
    void *ctx;
} CkptReadOpts;

// Read and verify a checkpoint (every checksum, every shape, nothing missing
// or extra). o may be NULL (weights only, stop at the first error). 0, or -1
// with ps_err naming the file and the problem (c is then freed). st may be NULL.
int ckpt_read(const char *path, Checkpoint *c, const CkptReadOpts *o, CkptIoStats *st);
// Only the metadata and the model config (no tensor is read).
int ckpt_read_meta(const char *path, CkptMeta *meta, LlamaConfig *cfg);
void ckpt_meta_free(CkptMeta *m);
void ckpt_free(Checkpoint *c);

// The master weights of a checkpoint as a model (model_load_any's "ckpt:PATH"
// and "*.h5"). 0, or -1 with ps_err set.
int ckpt_load_weights(const char *path, HostWeights *w);

// ---- a run directory's checkpoints: DIR/ckpt-<step, 8+ digits>.h5

// DIR/ckpt-%08lld.h5, freshly allocated.
char *ckpt_path(const char *dir, int64_t step);
typedef struct {
    int64_t step;
    char *path;
} CkptEntry;
// The checkpoints in dir, newest (highest step) first. Returns the count (0
// when dir does not exist); *out is freed with ckpt_list_free.
int ckpt_list(const char *dir, CkptEntry **out);
void ckpt_list_free(CkptEntry *e, int n);
// Remove temp files left in dir by writers that died (their process is gone).
void ckpt_remove_stale_tmp(const char *dir);

// The temp file being written right now ("" when none): a signal handler may
// unlink it before the process dies.
const char *ckpt_active_tmp(void);

// Test hooks, so that tests hit exact points of a write: with
// POSTSHARE_TEST_KILL_AT=PHASE:N[,PHASE:N...] in the environment, the N-th
// checkpoint write of this process raises SIGKILL at the named point;
// POSTSHARE_TEST_SIGNAL_AT (same syntax) raises SIGTERM there instead. Phases:
// create (temp file created, nothing written), tensors (half the tensors
// written), close (file closed, not synced), fsync (synced, not renamed),
// rename (renamed, directory not synced), prune (resume.c: after the first
// old checkpoint is deleted).
void ckpt_test_point(const char *phase);
