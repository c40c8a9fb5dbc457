// tasks.h: zero-shot (and few-shot) task definitions and data, as
// lm-evaluation-harness 0.4 defines them (docs/tasks.md gives each task's
// prompt, choices, metrics and the lm-eval source it follows).
//
// Every task is one row of a table (TaskDef): a data FORMAT (how the file reads
// into query, choices and gold) plus the prompt pieces. The built-in rows are
// piqa, arc_easy, openbookqa, boolq, hellaswag, lambada (= lm-eval's
// lambada_openai) and mmlu; a user adds rows of format "jsonl" (one JSON object
// per line: {"query": str, "choices": [str...], "gold": int}) with a small JSON
// file (task_defs_load). Loading a task turns each document into one request
// set: a context string and the continuation strings to score (the target
// delimiter already prepended), exactly the (context, continuation) pairs that
// lm-eval's construct_requests builds.
#pragma once

#include <stdint.h>

typedef enum {
    TASK_FMT_JSONL = 0,  // {"query", "choices", "gold"} per line (llm-foundry / user tasks)
    TASK_FMT_PIQA,       // {"goal", "sol1", "sol2"} + a labels file (one 0/1 per line)
    TASK_FMT_HELLASWAG,  // rowanz format: ctx_a, ctx_b, activity_label, endings, label
    TASK_FMT_LAMBADA,    // {"text"}: context = all but the last word, target = " " + last word
    TASK_FMT_MMLU,       // hendrycks CSVs (question,A,B,C,D,answer) in a zip, per subject
} TaskFormat;

enum { TASK_M_ACC = 1, TASK_M_ACC_NORM = 2, TASK_M_PPL = 4 };

typedef struct {
    char name[64];
    TaskFormat fmt;
    char file[1024];    // data file, relative to the data directory unless absolute
    char labels[1024];  // piqa: the labels file
    char strip[64];     // removed from the start of each query when present
    char prefix[256];   // prompt = prefix + query + suffix
    char suffix[256];
    char delim[16];    // target delimiter put before each choice (lm-eval: " ")
    int metrics;       // TASK_M_* bits
    char source[256];  // the lm-eval task it follows (for the docs and results)
} TaskDef;

typedef struct {
    char *context;    // the full prompt (description and few-shot examples included)
    int n_choices;    // 1 for lambada
    char **conts;     // [n_choices] continuation strings (delimiter + choice)
    int *choice_len;  // [n_choices] characters of the choice text (acc_norm's divisor)
    int gold;
    int group;  // mmlu: subject index; 0 otherwise
    int index;  // line / row in the source (0-based), for the samples file
} TaskDoc;

typedef struct {
    TaskDef def;
    int num_fewshot;
    int n_docs;
    TaskDoc *docs;
    int n_groups;        // mmlu: 57 subjects; 1 otherwise
    char **group_names;  // [n_groups]
    int *group_cat;      // [n_groups] mmlu: the subject's category (task_mmlu_categories), else 0
} Task;

// MMLU's four categories as lm-eval 0.4 nests its subjects (the groups mmlu_stem,
// mmlu_other, mmlu_social_sciences, mmlu_humanities of lm_eval/tasks/mmlu/default):
// the names, and the category of a subject (-1: not an MMLU subject).
enum { TASK_MMLU_CATEGORIES = 4 };
extern const char *const task_mmlu_category_names[TASK_MMLU_CATEGORIES];
int task_mmlu_category(const char *subject);

// The built-in table plus the user rows loaded so far.
int task_count(void);
const TaskDef *task_def_at(int i);
// Look a task up by name; NULL with ps_err set ("unknown task 'x'; known: ...").
const TaskDef *task_find(const char *name);
// Add the rows of a JSON file: a list of objects with "name", "file" and
// optionally "format" (jsonl only), "prefix", "suffix", "strip", "delim",
// "metrics" (list of "acc", "acc_norm"). A row may not reuse a built-in name.
// Returns 0, or -1 with ps_err naming the file and the problem (and no row of
// the file added).
int task_defs_load(const char *path);
// Forget the user rows (the built-in table stays).
void task_defs_reset(void);

// Read a task's documents from data_dir. num_fewshot > 0 is allowed only for
// mmlu (examples from the dev split, first n, as lm-eval's first_n sampler).
// Returns 0, or -1 with ps_err naming the file, line and problem.
int task_load(const TaskDef *d, const char *data_dir, int num_fewshot, Task *t);
// Keep limit documents (limit <= 0: all). seed == 0: the first limit (as
// lm-eval's --limit); otherwise a seeded random subset, kept in file order.
// mmlu applies the limit per subject, as lm-eval does for its subtasks.
void task_subset(Task *t, int limit, uint64_t seed);
void task_free(Task *t);
