// optim.h: AdamW over the flat parameter buffer, the learning-rate schedule
// and global-norm gradient clipping.
//
// State (fp32 master weights, m, v) lives in flat backend buffers with the
// parameter table's layout, so a contiguous range [lo, hi) of it is a shard
// that one data-parallel rank can own (ZeRO-1). optim_step updates exactly
// that range, walking the table so that each tensor gets its own decay.
#pragma once

#include "model.h"

typedef struct {
    float lr, min_lr;  // peak and final learning rate
    int warmup;        // linear warmup steps (from lr/warmup to lr)
    int total_steps;   // cosine decay from warmup to total_steps
    float beta1, beta2, eps, weight_decay;
    float clip;  // global-norm clip threshold; <= 0 disables
} OptimConfig;

typedef struct {
    OptimConfig cfg;
    const Backend *be;
    float *master;  // [hi-lo] fp32: master weights of [lo, hi) (on an fp32 backend, an
                    // alias of the model's params + lo)
    float *m, *v;   // [hi-lo] fp32
    int master_is_params;
    size_t lo, hi;    // the range this process updates (whole buffer for one rank)
    int t;            // number of steps taken
    float *lr_scale;  // [hi-lo] per-parameter learning-rate multipliers, or NULL (all 1)
} Optim;

// The optimizer of the whole parameter buffer; on a backend whose compute type
// is not fp32, the master weights start as the model's (rounded) params.
void optim_init(Optim *o, Model *M, const OptimConfig *cfg);
// The optimizer of parameters [lo, hi) only (a ZeRO-1 shard): its state holds
// hi - lo elements, and optim_step touches only those parameters. master
// (host, t.total floats, or NULL: the model's params) gives the fp32 master
// weights, so that a bf16 model's masters keep the bits its params lost.
void optim_init_range(Optim *o, Model *M, const OptimConfig *cfg, size_t lo, size_t hi,
                      const float *master);
void optim_free(Optim *o);
// Per-parameter learning-rate multipliers for [lo, hi) (host, hi - lo floats;
// NULL: all 1 again): parameter i steps with lr * scale[i - lo], its weight
// decay included; 0 freezes it. Not part of the checkpointed state: a run sets
// it from its config (PostShare's share.reg.lr_mult and share.reg.rest_lr_mult).
void optim_set_lr_scale(Optim *o, const float *scale);
// Learning rate at step (0-based): linear warmup to lr over `warmup` steps,
// then cosine decay to min_lr at total_steps (and min_lr after).
float optim_lr(const OptimConfig *cfg, int step);
// Global L2 norm of the model's gradients (one process).
float optim_grad_norm(const Model *M);
// Sum of squares of the gradients in the optimizer's range [lo, hi): data
// parallel ranks add theirs up for the global norm.
double optim_range_sumsq(const Optim *o, const Model *M);
// One AdamW step at `step` (0-based) using the model's gradients, clipped to
// cfg.clip by global norm `grad_norm`. Writes new parameters into the model.
// Returns the learning rate used.
float optim_step(Optim *o, Model *M, int step, float grad_norm);
// Host copies of the optimizer state (for checkpoints and tests). The state
// is the [lo, hi) slice of master, m and v plus the step counter o->t, which
// set_state restores too: AdamW's bias correction depends on it, so a resumed
// run that restarted it at 0 would take different steps.
void optim_get_state(const Optim *o, float *master, float *m, float *v);
void optim_set_state(Optim *o, Model *M, const float *master, const float *m, const float *v,
                     int t);
