// resume.h: the training loop's side of checkpoints: choosing the checkpoint a
// run continues from (checkpoint.resume), checking that it fits the job,
// restoring the model, optimizer and loader from it, saving the run's state
// (report, keep policy), and the graceful stop on SIGINT/SIGTERM.
//
// State crosses only through the host-copy functions of the model, optimizer
// and loader (model_set_params, optim_get_state/optim_set_state,
// loader_get_state/loader_set_state), so none of this knows which backend runs
// the model. The sharing plan is an opaque JSON payload: the loop passes its
// plan (NULL when there is none), the checkpoint stores it, and resuming
// requires the same one.
#pragma once

#include <stdio.h>

#include "checkpoint.h"
#include "job.h"
#include "optim.h"

// Exit status of `postshare train` that stopped on SIGINT or SIGTERM after
// writing a checkpoint (a second signal kills it by that signal instead).
#define PS_EXIT_INTERRUPTED 3

// What the loop tracks besides the model, the optimizer and the loader.
typedef struct {
    int64_t step;  // optimizer steps taken
    int64_t tokens_seen;
    double lr;              // of the last step
    double elapsed_s;       // training wall time so far
    double first_val_loss;  // the step-0 validation loss
} RunProgress;

typedef struct {
    int resumed;    // 0: the run starts fresh
    char *path;     // the checkpoint it continues from
    Checkpoint ck;  // its content; train.c takes ck.w (the weights) over
    int n_damaged;  // newer checkpoints that did not read back (auto): set aside later
    char **damaged;
} ResumePoint;

// Choose and read (verifying every checksum) the checkpoint to continue from:
// checkpoint.resume "none" starts fresh; a path must read back intact; "auto"
// takes the newest checkpoint of run_dir that reads back intact, saying which
// newer ones are damaged, and starts fresh when run_dir has none. Dies with a
// clear message when nothing valid is left to resume from. Changes no file.
void resume_find(const JobConfig *job, const char *run_dir, ResumePoint *rp);
// Read and verify the checkpoint at path (the one resume_find chose on rank 0,
// for the other ranks of a data-parallel job); dies when it does not read back.
void resume_open(const char *path, ResumePoint *rp);

// Die with a clear message unless the checkpoint can continue this job: the
// config keys that must not change, the model (w: the checkpoint's weights),
// the sharing plan (plan_json, NULL: none) and the train shards must match,
// the global batch (world ranks x batch_size x grad_accum) must be the
// checkpoint's, and train.steps must not be below the checkpoint's step.
// Prints the keys that changed harmlessly.
void resume_check(const JobConfig *job, const ResumePoint *rp, const HostWeights *w,
                  const char *plan_json, const Loader *train, int world);

// Die unless run_dir is free of checkpoints past the run's start (they belong
// to another history, and keeping the newest K would delete this run's own).
// Call before the run directory is changed.
void resume_guard_dir(const char *run_dir, const ResumePoint *rp);

// Once the run directory exists: set damaged checkpoints aside (renamed
// "*.damaged", never deleted) and remove temp files of dead writers.
void resume_tidy_dir(const char *run_dir, const ResumePoint *rp);

// Load the checkpoint's optimizer state for the optimizer's range [lo, hi)
// (master: the checkpoint's whole fp32 weights, already in the model) and the
// loader position; returns the run's progress. Frees what rp still holds of
// the checkpoint.
RunProgress resume_restore(ResumePoint *rp, Model *M, Optim *opt, Loader *train,
                           const float *master);
void resume_point_free(ResumePoint *rp);

// Open metrics.jsonl: truncated for a fresh run; for a resumed one, the lines
// past `step` (from steps the crash undid, or half-written) are dropped and
// the file is appended to.
FILE *resume_open_metrics(const char *path, int resumed, int64_t step);

// Write run_dir/ckpt-<step>.h5 from the state and the loader, print
// the time and throughput, and delete the checkpoints checkpoint.keep and
// checkpoint.keep_every do not keep. Dies on a write error (the earlier
// checkpoints are then untouched). Returns the seconds it took.
// The whole training state a checkpoint holds, on the host (a data-parallel
// job gathers the optimizer's shards onto rank 0 first).
typedef struct {
    const ParamTable *t;
    const float *master, *m, *v;  // [t->total] each
    int optim_t;                  // AdamW's step counter
    int world;                    // data-parallel ranks
} CkptState;

double resume_save(const JobConfig *job, const char *run_dir, const CkptState *state, Loader *train,
                   const RunProgress *p, const char *plan_json);

// SIGINT/SIGTERM: the first sets a flag the loop polls after each step; a
// second one removes a half-written checkpoint and kills the process by that
// signal at once.
void stop_signals_install(void);
int stop_signal_pending(void);  // the signal number, or 0
