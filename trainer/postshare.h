// postshare.h: PostShare in the training loop: the job's share section turned
// into a plan and regularizer pairs, the regularizer added to each step's
// gradient, and the hand-off at the end of a run (apply the plan to the
// post-trained weights, evaluate the four models, write results.json/md and the
// shared model). The loss is lm_weight * LM + reg.weight * R (sharereg.h).
#pragma once

#include "eval.h"
#include "hf_io.h"
#include "job.h"
#include "model.h"
#include "optim.h"
#include "sharereg.h"

typedef struct {
    int active;                   // the job has a share section
    SharePlan plan;               // which units share
    RegPairs pairs;               // the regularizer's slice pairs (full model layout)
    float lm_weight;              // 1 when inactive
    float reg_weight;             // 0 when inactive
    int ramp_steps;               // share.reg.ramp_steps
    float lr_mult, rest_lr_mult;  // share.reg.lr_mult, share.reg.rest_lr_mult
    int pull_target;              // share.reg.pull == target: the sources are frozen
    char *plan_json;              // the plan as JSON (stored in checkpoints); NULL when inactive
} PostShare;

// Set up from the job. The plan is, in order of precedence: resume_plan_json
// (the plan a resumed checkpoint was trained with), share.plan (a file, checked
// against the starting weights w0: shape and fingerprint), or computed from w0
// with share.match and share.ratio. Prints a line about it. 0, or -1 with
// ps_err set (a bad plan file, a ratio that cannot be met...).
int postshare_init(PostShare *ps, const JobConfig *job, const HostWeights *w0,
                   const char *resume_plan_json);
void postshare_free(PostShare *ps);

// The weight of R at step (0-based): reg_weight, ramped linearly over
// share.reg.ramp_steps (reg_weight * min(1, (step + 1) / ramp_steps)).
float postshare_weight(const PostShare *ps, int step);
// Add postshare_weight(step) * dR/dparams to the model's gradients and return
// R and the pair statistics of the current weights.
RegStats postshare_step(const PostShare *ps, Model *M, int step);
// share.reg.lr_mult / rest_lr_mult / pull: the optimizer's per-parameter
// learning-rate multipliers over its range: lr_mult on the target units' slices,
// on the sources' too unless pull is target (then 0), rest_lr_mult elsewhere
// (left at all 1 when that is all 1).
void postshare_lr_scale(const PostShare *ps, Optim *opt);
// The same statistics without touching gradients.
RegStats postshare_stats(const PostShare *ps, const Model *M);

// The end of a run with share.apply_after: evaluate on the validation loader
// the starting model (start), DirectShare of it, the post-trained model
// (final), and PostShare (the plan applied to final); write
// run_dir/results.json and results.md, save run_dir/shared/ (compact) and, with
// share.materialize, run_dir/shared_hf/ (plain HF) with what x describes
// (train_export_info: ids, generation config, tokenizer); print the table.
void postshare_handoff(const PostShare *ps, const JobConfig *job, const char *run_dir,
                       const HostWeights *start, const HostWeights *final, Loader *val, int B,
                       int T, RegStats last, const HfExport *x);

// The job's eval.tasks loaded (data read, tokenizer opened) and its eval.test
// set opened (shards for a model of `vocab` tokens, windows of data.seq_len; a
// .txt file tokenized with data.tokenizer first) for the results table; *out
// NULL when the job names neither. 0, or -1 with ps_err set. Runs call it once
// at the start too, so that a bad task list or test set fails before training.
typedef struct JobTasks JobTasks;
int postshare_tasks_open(const JobConfig *job, int vocab, JobTasks **out);
void postshare_tasks_close(JobTasks *jt);

// results.json for a run without a share section: the trained model's row.
void postshare_results_plain(const JobConfig *job, const char *run_dir, const HostWeights *final,
                             EvalResult ev);
