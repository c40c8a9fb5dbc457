// taskeval.h: scoring tasks (tasks.h) on a model by log-likelihood, as
// lm-evaluation-harness's HFLM does (docs/tasks.md):
//   - each (context, continuation) pair is tokenized as HFLM's _encode_pair:
//     trailing spaces of the context move to the continuation, whole =
//     enc(context + continuation), context part = enc(context), continuation
//     tokens = whole[len(enc(context)):]; enc adds BOS when the tokenizer's
//     HF counterpart does (add_bos);
//   - the input is (context + continuation)[-(max_len + 1):][:-1] (truncated from
//     the left), and the log-likelihood is the sum over the continuation tokens
//     of log_softmax(logits)[token]; greedy = every continuation token is the argmax;
//   - requests with identical inputs (the choices of a question whose
//     continuations are single tokens, as MMLU's " A".." D") run once; inputs are
//     sorted by length (longest first) and batched up to a token budget.
// Metrics: acc (argmax of ll), acc_norm (argmax of ll / characters of the choice),
// lambada's acc (greedy) and perplexity exp(-mean ll); standard errors as lm-eval:
// sample stddev / sqrt(n) for means, bootstrap for perplexity, and MMLU's pooled
// stderr: over the subjects of each category, then over the categories (lm-eval's
// two-level group mmlu -> mmlu_stem/... -> subjects).
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "model.h"
#include "tasks.h"
#include "tokenizer.h"

typedef struct {
    char name[64];
    int n;                                                   // documents scored
    int shots;                                               // few-shot examples in each prompt
    int metrics;                                             // TASK_M_* bits present below
    double acc, acc_se, acc_norm, acc_norm_se, ppl, ppl_se;  // se: NAN when n < 2
    // mmlu: acc per category (task_mmlu_category_names), as lm-eval's mmlu_stem etc.
    int cat_n[TASK_MMLU_CATEGORIES];
    double cat_acc[TASK_MMLU_CATEGORIES], cat_acc_se[TASK_MMLU_CATEGORIES];
} TaskResult;

typedef struct {
    const char *data_dir;  // folder of the task data (the default: see task_default_data_dir)
    int limit;             // documents per task (per subject for mmlu); 0: all
    uint64_t seed;         // 0: the first `limit`; else a seeded subset
    int num_fewshot;       // mmlu only
    int add_bos;           // -1: task_add_bos's default; 0/1: force
    int batch_tokens;      // tokens per forward batch (0: from the vocabulary size)
    int progress;          // 1: a progress line with ETA on stderr
    const char *samples;   // per-document JSONL of log-likelihoods, or NULL
} TaskEvalOpts;

typedef struct {
    int n_tasks;
    Task *tasks;
} TaskSet;

typedef struct {
    long tokens;     // tokens run through the model (padding excluded)
    long requests;   // (context, continuation) pairs scored
    long forwards;   // distinct inputs run
    double seconds;  // scoring wall time (tokenization included)
} TaskEvalStats;

// $POSTSHARE_EVAL_DATA, else ../shared/data/eval.
const char *task_default_data_dir(void);
void task_eval_opts_default(TaskEvalOpts *o);
// Whether each encoding starts with BOS: o->add_bos, or by default as the HF
// counterpart of the tokenizer does (lm-eval 0.4.13 keeps the tokenizer's own
// add_special_tokens): yes for sentencepiece (LLaMA's <s>), no otherwise.
int task_add_bos(const TaskEvalOpts *o, const Tokenizer *tok);

// Load the comma-separated tasks (names from the task table) with o's data
// directory, few-shot count, limit and seed. 0, or -1 with ps_err set.
int task_set_load(const char *tasks_csv, const TaskEvalOpts *o, TaskSet *s);
void task_set_free(TaskSet *s);

// Score every task of s on M; res gets s->n_tasks results. 0, or -1 with ps_err
// (the samples file cannot be written). st may be NULL.
int task_set_eval(Model *M, const Tokenizer *tok, const TaskSet *s, const TaskEvalOpts *o,
                  TaskResult *res, TaskEvalStats *st);

// Results as a JSON list (cJSON array; caller owns it).
struct cJSON *task_results_json(const TaskResult *r, int n);
// Markdown table: | task | n | shots | acc | acc_norm | perplexity | (value ± stderr).
void task_results_md(FILE *f, const TaskResult *r, int n);
// Flat columns "task.metric" (acc, acc_norm, ppl) and their values, for tables and
// CSVs: writes at most max entries, returns how many there are.
int task_result_columns(const TaskResult *r, int n, char (*names)[80], double *vals, int max);
// "0.6130 ± 0.0114" (or "N/A") into buf.
const char *task_fmt_value(char *buf, size_t cap, double v, double se);
