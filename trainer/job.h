// job.h: the job configuration of `postshare train CONFIG.yaml [--set k=v ...]`.
//
// A job is a YAML mapping of sections (run, model, data, train) plus a few
// top-level scalars (backend, threads). Every key the trainer understands is one
// row of a static table in job.c: its dotted path ("train.lr"), type, place in
// JobConfig, default, flags, allowed range and a one-line doc. Parsing, the
// --set overrides, defaults, range checks, the "did you mean" suggestions and
// the resolved-YAML writer all walk that table, so adding a key (or a whole new
// section such as share.reg.weight) is one struct field plus one table row.
//
// Loading never exits: errors return -1 with ps_err_set, and the message names
// the file (or the --set option), the line when known and the key path.
#pragma once

#include <stdio.h>

#include "params.h"

#define JOB_NAME_MAX 128   // run names, backend names
#define JOB_PATH_MAX 1024  // paths, globs, init/tokenizer specs

typedef struct {
    char name[JOB_NAME_MAX];  // run directory is out_dir/name
    char out_dir[JOB_PATH_MAX];
    int seed;  // model init, data order, everything random
} JobRun;

typedef struct {
    char init[JOB_PATH_MAX];  // "scratch" | "hf:DIR" | "llama2c:FILE"
    // The scratch shape: only with init == scratch (error otherwise, the shape
    // then comes from the checkpoint). After job_load n_kv_heads is resolved.
    int dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab_size, max_seq_len;
    float rope_theta, norm_eps;
    int tie_embeddings;  // bool
    float init_std;      // N(0, init_std) for matrices at scratch init
} JobModel;

typedef struct {
    char train[JOB_PATH_MAX];      // glob of training shards
    char val[JOB_PATH_MAX];        // glob of validation shards
    int seq_len;                   // tokens per sequence (T)
    int batch_size;                // sequences per micro-batch (B)
    int val_batches;               // micro-batches per evaluation
    int shuffle;                   // bool
    char tokenizer[JOB_PATH_MAX];  // "byte" | "llama2c:PATH" (used by generate)
} JobData;

typedef struct {
    int steps;           // optimizer steps
    int grad_accum;      // micro-batches per optimizer step
    float lr, min_lr;    // cosine from lr to min_lr after warmup; min_lr resolved by job_load
    int warmup;          // linear warmup steps (may exceed steps: the schedule clamps)
    float weight_decay;  // AdamW, matrices only
    float betas[2];
    float eps;
    float clip;      // global grad-norm clip; 0 disables
    int eval_every;  // 0: only at the end
    int log_every;
    int save_final;  // bool
    int stop_after;  // end this run after this step (with a checkpoint); 0: off
} JobTrain;

typedef struct {
    int every;                  // steps between checkpoints; 0: only at the end (and on a signal)
    int keep;                   // newest checkpoints kept; 0: all
    int keep_every;             // also keep checkpoints whose step is a multiple of this; 0: none
    int final;                  // bool: a checkpoint at the last step (resume, inspect)
    char resume[JOB_PATH_MAX];  // "auto" | "none" | a checkpoint path
} JobCheckpoint;

// PostShare (docs/postshare.md): active when ratio > 0 or a plan file is given.
// Loss = lm_weight * LM + reg.weight * R over the plan's pairs (sharereg.h).
typedef struct {
    float ratio;              // fraction of units (KV groups) replaced
    char match[16];           // qk | q | k | v | qkv
    char plan[JOB_PATH_MAX];  // a plan file; "": computed from the initial weights
    float lm_weight;          // weight of the LM loss
    char reg_type[16];        // l2 | mse | kl | js | kl2
    float reg_weight;         // weight of R
    char reg_targets[64];     // subset of q,k,v,o, e.g. "q,k,v"
    int reg_normalize;        // bool: each slice pair's D divided by its start scale
    int reg_ramp_steps;       // reg.weight ramps linearly from 0 over this many steps; 0: off
    float reg_lr_mult;        // learning-rate multiplier of the paired slices
    float rest_lr_mult;       // learning-rate multiplier of every other parameter (0 freezes)
    char reg_pull[8];         // both | target: which slices of a pair move (target: sources frozen)
    int apply_after;          // bool: share and evaluate at the end of the run
    int materialize;          // bool: also save the shared model as a plain HF dir
} JobShare;

// Task evaluation at the end of a run (taskeval.h): each model of the results
// table is also scored on these tasks with the job's data.tokenizer.
typedef struct {
    char tasks[512];              // comma-separated task names; "": none
    int limit;                    // documents per task (per subject for mmlu); 0: all
    int num_fewshot;              // mmlu's few-shot examples
    char data_dir[JOB_PATH_MAX];  // "": $POSTSHARE_EVAL_DATA or ../shared/data/eval
    char test[JOB_PATH_MAX];      // a test set: token shards (glob) or a .txt file; "": none
    int test_batches;             // micro-batches of the test set; 0: all of it
} JobEval;

typedef struct {
    JobRun run;
    JobModel model;
    JobData data;
    JobTrain train;
    JobCheckpoint checkpoint;
    JobShare share;
    JobEval eval;
    char backend[JOB_NAME_MAX];  // "cpu" | "cuda" | "auto"
    int threads;                 // CPU threads; 0 = all cores
    char comm[JOB_NAME_MAX];     // "auto" | "single" | "mpi" | "nccl" (comm.h)
    int comm_overlap;            // reduce gradients during the backward (zero.h)
    // Line of a top-level `sweep:` section (postshare sweep, sweep.h), 0: none.
    // Its content is not a job's: only job_load_sweep_base accepts it, and skips it.
    int has_sweep;
} JobConfig;

// 1 when the job has an active share section (PostShare).
int job_share_active(const JobConfig *cfg);

// Zero the struct and apply every table default. Always returns 0.
int job_set_defaults(JobConfig *cfg);

// Defaults, then path, then the overrides in order, then the required-key
// check, job_resolve and job_validate. Returns 0 or -1 with ps_err set.
int job_load(const char *path, int n_overrides, char **overrides, JobConfig *out);

// Same as job_load on YAML text held in memory; `name` stands for the file in
// error messages.
int job_load_string(const char *yaml, const char *name, int n_overrides, char **overrides,
                    JobConfig *out);

// The bounds on a config's shape (nesting depth, node count) that job_load checks
// before libyaml builds the document; for other readers of job-like YAML (the
// sweep section). 0, or -1 with ps_err set naming `name` and the line.
int job_yaml_shape_ok(const char *yaml, const char *name);

// Same as job_load_string, but a top-level `sweep:` section is allowed: it is
// skipped (out->has_sweep gives its line) and left to `postshare sweep` to read.
// job_load and job_load_string refuse such a config (it describes many runs).
int job_load_sweep_base(const char *yaml, const char *name, int n_overrides, char **overrides,
                        JobConfig *out);

// Apply one "section.key=value" assignment (the --set option). Values are read
// like YAML scalars; lists as "[0.9,0.95]"; strings verbatim. Returns 0 or -1.
int job_apply_override(JobConfig *cfg, const char *assignment);

// Fill the derived defaults: train.min_lr < 0 -> lr/10, model.n_kv_heads 0 ->
// n_heads (scratch only). job_load calls it; programmatic builders should too.
void job_resolve(JobConfig *cfg);

// Range checks from the table plus cross-field checks (scratch shape, init and
// tokenizer specs, seq_len <= max_seq_len, min_lr <= lr). Returns 0 or -1.
int job_validate(const JobConfig *cfg);

// The LlamaConfig of a scratch model; -1 with ps_err set if init is not scratch
// or the shape is invalid.
int job_llama_config(const JobConfig *cfg, LlamaConfig *out);

// The resolved config as YAML (every key, defaults included, with its doc as a
// comment), which job_load reads back to an identical struct. Keys that belong
// to the scratch shape are left out when init is not scratch. Caller frees.
char *job_to_yaml(const JobConfig *cfg);

// job_to_yaml written to f.
void job_print(FILE *f, const JobConfig *cfg);

// Every known key with its type, default and doc (for `postshare --help`-style output).
void job_print_keys(FILE *f);

// out_dir/name, freshly allocated.
char *job_run_dir(const JobConfig *cfg);

// Compare a job about to resume (cur) with the one that wrote the checkpoint
// (saved). Each key's row says whether it may change on resume: keys marked
// fixed (model, data order, batch shape) must be equal, and their differences
// are listed in *fixed as "key old -> new, ..."; keys marked note (optimizer
// settings, steps, threads, ...) may change, and are listed in *notes; the
// rest (logging, evaluation, checkpoint policy, run name) are free. Returns the
// number of fixed differences. The caller frees *fixed and *notes.
int job_resume_diff(const JobConfig *saved, const JobConfig *cur, char **fixed, char **notes);
