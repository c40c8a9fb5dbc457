// train.h: the `train` subcommand and the training loop.
#pragma once

#include "hf_io.h"
#include "job.h"
#include "optim.h"

// Run a whole training job (the loop in train.c). Returns the exit status: 0,
// or PS_EXIT_INTERRUPTED (resume.h) after a SIGINT/SIGTERM checkpoint; dies on errors.
int train_run(const JobConfig *job);
// CLI entry: argv holds the arguments after "train".
int train_main(int argc, char **argv);
// The optimizer settings of a job (train.lr, betas, clip, ...).
OptimConfig train_optim_config(const JobConfig *job);
// Set the OpenMP and BLAS thread counts (threads <= 0: leave the defaults).
void train_set_threads(int threads);
// What a run's HF exports (model/, shared_hf/) carry besides the weights: the
// special ids and generation_config.json of model.init (model_export_info) and
// data.tokenizer's files. A model.init that cannot be read is a warning.
void train_export_info(const JobConfig *job, HfExport *x);
