// job.c: the job configuration (see job.h): the key table, the libyaml reader,
// --set overrides, defaults, validation and the resolved-YAML writer.
//
// Everything is driven by KEYS[] below. A key is a dotted path; its first
// components name (possibly nested) sections, so "share.reg.weight" is read
// from
//     share:
//       reg:
//         weight: 0.1
// (a dotted key written directly, "train.lr: 1e-3", is read the same way).
// Defaults are stored as YAML text and go through the same typed setter as the
// file and the overrides, so there is exactly one conversion path per type.
#define _POSIX_C_SOURCE 200809L
#include "job.h"

#include "sharereg.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "common.h"

typedef enum { JT_INT, JT_FLOAT, JT_BOOL, JT_STRING, JT_FLOAT_LIST2 } JobType;

enum {
    JK_REQUIRED = 1,  // must be given (with JK_SCRATCH: only when model.init is scratch)
    JK_SCRATCH = 2,   // part of the scratch model: an error with any other init
    JK_NONEMPTY = 4,  // strings: "" is rejected
    // Resuming from a checkpoint compares the job with the one that wrote it:
    JK_FIXED = 8,   // must not change (model, data order, batch): resume stops
    JK_NOTE = 16,   // may change; resume reports it (no longer a bit-exact continuation)
    JK_STRLIST = 32,  // strings: a YAML list of scalars is also accepted, joined with ","
};

typedef struct {
    const char *key;  // dotted path
    JobType type;
    size_t off;       // offsetof(JobConfig, ...)
    size_t size;      // sizeof the field (capacity of strings)
    const char *def;  // default as YAML text; NULL: none (required, or zero)
    int flags;
    // numbers: allowed interval, e.g. "[1,inf)" or "[0,1)" (each element of a list);
    // strings: allowed values "a|b|pre:*|*.ext" ('*' = any non-empty rest or start). NULL: anything.
    const char *check;
    const char *doc;
} JobKey;

#define FIELD(f) offsetof(JobConfig, f), sizeof(((JobConfig *)0)->f)
#define JOB_LIST_MAX 16  // items in a list value (YAML or --set)

// clang-format off
static const JobKey KEYS[] = {
    {"run.name",             JT_STRING, FIELD(run.name),       "default",     JK_NONEMPTY, NULL, "run name; the run directory is out_dir/name"},
    {"run.out_dir",          JT_STRING, FIELD(run.out_dir),    "checkpoints", JK_NONEMPTY, NULL, "parent of the run directories"},
    {"run.seed",             JT_INT,    FIELD(run.seed),       "1337",        JK_FIXED, "[0,inf)", "seed of the scratch init and the data order"},

    {"model.init",           JT_STRING, FIELD(model.init),     "scratch",     JK_NONEMPTY | JK_FIXED, "scratch|hf:*|llama2c:*|ckpt:*|gguf:*", "scratch, hf:DIR (HF safetensors), llama2c:FILE, gguf:FILE (llama.cpp) or ckpt:FILE.h5 (a checkpoint's weights)"},
    {"model.dim",            JT_INT,    FIELD(model.dim),         NULL, JK_SCRATCH | JK_REQUIRED | JK_FIXED, "[1,inf)", "model width C"},
    {"model.n_layers",       JT_INT,    FIELD(model.n_layers),    NULL, JK_SCRATCH | JK_REQUIRED | JK_FIXED, "[1,inf)", "transformer blocks"},
    {"model.n_heads",        JT_INT,    FIELD(model.n_heads),     NULL, JK_SCRATCH | JK_REQUIRED | JK_FIXED, "[1,inf)", "query heads"},
    {"model.n_kv_heads",     JT_INT,    FIELD(model.n_kv_heads),  "0",  JK_SCRATCH | JK_FIXED, "[0,inf)", "key/value heads (GQA); 0: same as n_heads"},
    {"model.head_dim",       JT_INT,    FIELD(model.head_dim),    "0",  JK_SCRATCH | JK_FIXED, "[0,inf)", "head size; 0: dim / n_heads"},
    {"model.ffn_dim",        JT_INT,    FIELD(model.ffn_dim),     NULL, JK_SCRATCH | JK_REQUIRED | JK_FIXED, "[1,inf)", "SwiGLU hidden width F"},
    {"model.vocab_size",     JT_INT,    FIELD(model.vocab_size),  NULL, JK_SCRATCH | JK_REQUIRED | JK_FIXED, "[1,inf)", "vocabulary size V (256 for bytes)"},
    {"model.max_seq_len",    JT_INT,    FIELD(model.max_seq_len), NULL, JK_SCRATCH | JK_REQUIRED | JK_FIXED, "[1,inf)", "longest sequence the model is meant for"},
    {"model.rope_theta",     JT_FLOAT,  FIELD(model.rope_theta),  "10000", JK_SCRATCH | JK_FIXED, "(0,inf)", "RoPE base"},
    {"model.norm_eps",       JT_FLOAT,  FIELD(model.norm_eps),    "1e-5",  JK_SCRATCH | JK_FIXED, "(0,inf)", "RMSNorm epsilon"},
    {"model.tie_embeddings", JT_BOOL,   FIELD(model.tie_embeddings), "false", JK_SCRATCH | JK_FIXED, NULL, "lm_head shares the embedding"},
    {"model.init_std",       JT_FLOAT,  FIELD(model.init_std),    "0.02",  JK_SCRATCH | JK_FIXED, "(0,inf)", "std of the normal init of matrices"},

    {"data.train",           JT_STRING, FIELD(data.train),       NULL,   JK_REQUIRED | JK_NONEMPTY | JK_NOTE, NULL, "glob of training shards"},
    {"data.val",             JT_STRING, FIELD(data.val),         NULL,   JK_REQUIRED | JK_NONEMPTY | JK_NOTE, NULL, "glob of validation shards"},
    {"data.seq_len",         JT_INT,    FIELD(data.seq_len),     NULL,   JK_REQUIRED | JK_FIXED, "[1,inf)", "tokens per sequence T"},
    {"data.batch_size",      JT_INT,    FIELD(data.batch_size),  NULL,   JK_REQUIRED | JK_NOTE, "[1,inf)", "sequences per micro-batch B (per rank); the global batch ranks x B x grad_accum must stay the same to resume"},
    {"data.val_batches",     JT_INT,    FIELD(data.val_batches), "8",    0, "[1,inf)", "micro-batches per evaluation"},
    {"data.shuffle",         JT_BOOL,   FIELD(data.shuffle),     "true", JK_FIXED, NULL, "shuffle training sequences"},
    {"data.tokenizer",       JT_STRING, FIELD(data.tokenizer),   "byte", JK_NONEMPTY, "byte|llama2c:*|sp:*|tiktoken:*|hf:*|gguf:*|*.bin|*.model|*.json|*.gguf", "byte, llama2c:PATH, sp:PATH, tiktoken:PATH, hf:DIR|FILE.json, gguf:FILE, *.bin, *.model, *.json or *.gguf (the tokenizer of the data; recorded with the run)"},

    {"train.steps",          JT_INT,    FIELD(train.steps),        NULL,   JK_REQUIRED | JK_NOTE, "[1,inf)", "optimizer steps"},
    {"train.grad_accum",     JT_INT,    FIELD(train.grad_accum),   "1",    JK_NOTE, "[1,inf)", "micro-batches per optimizer step (per rank)"},
    {"train.lr",             JT_FLOAT,  FIELD(train.lr),           "3e-4", JK_NOTE, "[0,inf)", "peak learning rate"},
    {"train.min_lr",         JT_FLOAT,  FIELD(train.min_lr),       "-1",   JK_NOTE, NULL, "end of the cosine decay; negative: lr/10"},
    {"train.warmup",         JT_INT,    FIELD(train.warmup),       "0",    JK_NOTE, "[0,inf)", "linear warmup steps"},
    {"train.weight_decay",   JT_FLOAT,  FIELD(train.weight_decay), "0.1",  JK_NOTE, "[0,inf)", "AdamW weight decay (matrices only)"},
    {"train.betas",          JT_FLOAT_LIST2, FIELD(train.betas),   "[0.9, 0.95]", JK_NOTE, "[0,1)", "AdamW betas"},
    {"train.eps",            JT_FLOAT,  FIELD(train.eps),          "1e-8", JK_NOTE, "(0,inf)", "AdamW epsilon"},
    {"train.clip",           JT_FLOAT,  FIELD(train.clip),         "1.0",  JK_NOTE, "[0,inf)", "global grad-norm clip; 0 disables"},
    {"train.eval_every",     JT_INT,    FIELD(train.eval_every),   "0",    0, "[0,inf)", "steps between evaluations; 0: only at the end"},
    {"train.log_every",      JT_INT,    FIELD(train.log_every),    "10",   0, "[1,inf)", "steps between log lines"},
    {"train.save_final",     JT_BOOL,   FIELD(train.save_final),   "true", 0, NULL, "save the model in HF format (model/) at the end"},
    {"train.stop_after",     JT_INT,    FIELD(train.stop_after),   "0",    0, "[0,inf)", "end this run after this step with a checkpoint (the schedule still ends at steps); 0: off"},

    {"checkpoint.every",     JT_INT,    FIELD(checkpoint.every),   "1000", 0, "[0,inf)", "steps between checkpoints; 0: only at the end and on a signal"},
    {"checkpoint.keep",      JT_INT,    FIELD(checkpoint.keep),    "3",    0, "[0,inf)", "newest checkpoints kept; 0: keep all"},
    {"checkpoint.keep_every", JT_INT,   FIELD(checkpoint.keep_every), "0", 0, "[0,inf)", "also keep every checkpoint whose step is a multiple of this; 0: none"},
    {"checkpoint.final",     JT_BOOL,   FIELD(checkpoint.final),   "true", 0, NULL, "also write a checkpoint at the last step (the final model/ export is separate); false: none unless checkpoint.every divides train.steps"},
    {"checkpoint.resume",    JT_STRING, FIELD(checkpoint.resume),  "auto", JK_NONEMPTY, NULL, "auto (newest valid checkpoint of the run), none, or a checkpoint path"},

    {"share.ratio",          JT_FLOAT,  FIELD(share.ratio),       "0",     JK_FIXED, "[0,1)", "fraction of attention units (KV groups) to share; > 0 (or a plan) turns PostShare on"},
    {"share.match",          JT_STRING, FIELD(share.match),       "qk",    JK_FIXED, "qk|q|k|v|qkv", "match function: qk, q, k, v or qkv"},
    {"share.plan",           JT_STRING, FIELD(share.plan),        "",      JK_FIXED, NULL, "plan file from postshare match; empty: computed from the initial weights"},
    {"share.lm_weight",      JT_FLOAT,  FIELD(share.lm_weight),   "0.5",   JK_FIXED, "[0,inf)", "weight of the LM loss"},
    {"share.reg.type",       JT_STRING, FIELD(share.reg_type),    "l2",    JK_FIXED, "l2|mse|kl|js|kl2", "regularizer: l2, mse, kl, js or kl2"},
    {"share.reg.weight",     JT_FLOAT,  FIELD(share.reg_weight),  "0.5",   JK_FIXED, "[0,inf)", "weight of the regularizer R"},
    {"share.reg.targets",    JT_STRING, FIELD(share.reg_targets), "q,k,v", JK_FIXED | JK_NONEMPTY | JK_STRLIST, NULL, "slices pulled together: a subset of q, k, v, o"},
    {"share.reg.normalize",  JT_BOOL,   FIELD(share.reg_normalize), "false", JK_FIXED, NULL, "l2/mse: divide each slice pair's distance by its scale in the starting weights (l2: relative distance), so reg.weight means the same on any model"},
    {"share.reg.ramp_steps", JT_INT,    FIELD(share.reg_ramp_steps), "0",  JK_FIXED, "[0,inf)", "reg.weight ramps linearly from weight/N at step 1 to weight at step N; 0: constant"},
    {"share.reg.lr_mult",    JT_FLOAT,  FIELD(share.reg_lr_mult), "1",     JK_FIXED, "[0,inf)", "learning-rate multiplier of the slices R pulls together (both units of each pair)"},
    {"share.reg.pull",       JT_STRING, FIELD(share.reg_pull),    "both",  JK_FIXED, "both|target", "both: R moves both slices of each pair (the reference); target: only the replaced unit's slices move, its source is frozen (learning rate 0) and the hand-off copies it as pretrained"},
    {"share.reg.rest_lr_mult", JT_FLOAT, FIELD(share.rest_lr_mult), "1",   JK_FIXED, "[0,inf)", "learning-rate multiplier of every parameter R does not touch; 0 freezes them"},
    {"share.apply_after",    JT_BOOL,   FIELD(share.apply_after), "true",  0, NULL, "at the end: apply the plan, evaluate, write results.json/md and the shared model"},
    {"share.materialize",    JT_BOOL,   FIELD(share.materialize), "false", 0, NULL, "also save the shared model as a plain HF directory"},

    {"eval.tasks",           JT_STRING, FIELD(eval.tasks),        "",      JK_STRLIST, NULL, "tasks scored for every model of the results table at the end (docs/tasks.md), e.g. piqa,arc_easy; empty: none"},
    {"eval.limit",           JT_INT,    FIELD(eval.limit),        "0",     0, "[0,inf)", "documents per task (per subject for mmlu), the first N; 0: all"},
    {"eval.num_fewshot",     JT_INT,    FIELD(eval.num_fewshot),  "0",     0, "[0,64]", "mmlu: examples from its dev split in each prompt"},
    {"eval.test",            JT_STRING, FIELD(eval.test),         "",      0, NULL, "a test set evaluated for every model of the results table, beside data.val: a glob of token shards, or a .txt file tokenized with data.tokenizer; empty: none"},
    {"eval.test_batches",    JT_INT,    FIELD(eval.test_batches), "0",     0, "[0,inf)", "micro-batches of eval.test evaluated; 0: all of it"},
    {"eval.data_dir",        JT_STRING, FIELD(eval.data_dir),     "",      0, NULL, "folder of the task data; empty: $POSTSHARE_EVAL_DATA or ../shared/data/eval"},

    {"backend",              JT_STRING, FIELD(backend),            "auto", JK_NONEMPTY | JK_NOTE, "cpu|cuda|auto", "cpu, cuda or auto (cuda when available)"},
    {"threads",              JT_INT,    FIELD(threads),            "0",    JK_NOTE, "[0,inf)", "CPU threads per rank; 0: the OpenMP default (OMP_NUM_THREADS, else the cores divided among the node's ranks)"},
    {"comm_overlap",         JT_BOOL,   FIELD(comm_overlap),       "true", JK_NOTE, NULL, "start each layer's gradient reduction as soon as the backward has finished it (where the communicator can)"},
    {"comm",                 JT_STRING, FIELD(comm),               "auto", JK_NONEMPTY | JK_NOTE, "auto|single|mpi|nccl", "data-parallel communicator: auto (single, or under mpirun/srun nccl for cuda and mpi for cpu), single, mpi or nccl"},
};
// clang-format on

#define N_KEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

// ---------------------------------------------------------------------------
// Table look-ups

static int find_key(const char *path) {
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(KEYS[i].key, path) == 0) return i;
    return -1;
}

// A section is a proper dotted prefix of some key ("train", "share.reg").
static int is_section(const char *path) {
    size_t n = strlen(path);
    for (int i = 0; i < N_KEYS; i++)
        if (strncmp(KEYS[i].key, path, n) == 0 && KEYS[i].key[n] == '.') return 1;
    return 0;
}

static int is_scratch(const JobConfig *cfg) { return strcmp(cfg->model.init, "scratch") == 0; }

// Keys that do not apply to this config (the scratch shape of a loaded model).
static int key_inactive(const JobConfig *cfg, int i) {
    return (KEYS[i].flags & JK_SCRATCH) && !is_scratch(cfg);
}

static const char *type_name(JobType t) {
    switch (t) {
    case JT_INT: return "an integer";
    case JT_FLOAT: return "a number";
    case JT_BOOL: return "a boolean (true/false)";
    case JT_STRING: return "a string";
    case JT_FLOAT_LIST2: return "a list of 2 numbers like [0.9, 0.95]";
    }
    return "?";
}

static const char *short_type(JobType t) {
    switch (t) {
    case JT_INT: return "int";
    case JT_FLOAT: return "float";
    case JT_BOOL: return "bool";
    case JT_STRING: return "string";
    case JT_FLOAT_LIST2: return "[float, float]";
    }
    return "?";
}

// Edit distance, for "did you mean". Paths are short; longer ones are cut.
static int lev(const char *a, const char *b) {
    enum { M = 128 };
    int n = (int)strlen(a), m = (int)strlen(b);
    if (n > M - 1) n = M - 1;
    if (m > M - 1) m = M - 1;
    int prev[M], cur[M];
    for (int j = 0; j <= m; j++) prev[j] = j;
    for (int i = 1; i <= n; i++) {
        cur[0] = i;
        for (int j = 1; j <= m; j++) {
            int best = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < best) best = prev[j] + 1;
            if (cur[j - 1] + 1 < best) best = cur[j - 1] + 1;
            cur[j] = best;
        }
        memcpy(prev, cur, sizeof(int) * (size_t)(m + 1));
    }
    return prev[m];
}

static const char *last_component(const char *path) {
    const char *d = strrchr(path, '.');
    return d ? d + 1 : path;
}

// Writes " (did you mean 'x'?)" or " (keys in 'sec': a, b, ...)" or "" into buf.
// want_section: the unknown path holds a mapping, so suggest sections.
static void suggest(const char *path, int want_section, char *buf, size_t n) {
    buf[0] = 0;
    char best[256] = "";
    int best_d = INT_MAX;
    for (int i = 0; i < N_KEYS; i++) {
        const char *k = KEYS[i].key;
        if (!want_section) {
            int d = lev(path, k);
            const char *lp = last_component(path), *lk = last_component(k);
            size_t np = strlen(lp), nk = strlen(lk);
            // the right key in the wrong section ("data.steps") is a near miss too
            if (strcmp(lp, lk) == 0 && d > 1) d = 1;
            // so is a longer or shorter spelling in the right section ("train.lr_max")
            int same_sec = lp - path == lk - k && strncmp(path, k, (size_t)(lp - path)) == 0;
            if (same_sec && np >= 2 && nk >= 2 && strncmp(lp, lk, np < nk ? np : nk) == 0 && d > 1)
                d = 1;
            if (d < best_d) best_d = d, snprintf(best, sizeof best, "%s", k);
        } else {
            // every proper prefix of the key is a section name
            for (const char *dot = strchr(k, '.'); dot; dot = strchr(dot + 1, '.')) {
                char sec[256];
                snprintf(sec, sizeof sec, "%.*s", (int)(dot - k), k);
                int d = lev(path, sec);
                if (d < best_d) best_d = d, snprintf(best, sizeof best, "%s", sec);
            }
        }
    }
    // typos: about one edit per three characters of the name being typed
    int limit = (int)strlen(last_component(path)) / 3;
    if (limit < 2) limit = 2;
    if (best[0] && best_d <= limit) {
        snprintf(buf, n, " (did you mean '%s'?)", best);
        return;
    }
    // No close match: list what the enclosing section does accept.
    const char *dot = strrchr(path, '.');
    if (!dot) return;
    char sec[256];
    snprintf(sec, sizeof sec, "%.*s", (int)(dot - path), path);
    if (!is_section(sec)) return;
    size_t sl = strlen(sec);
    size_t used = (size_t)snprintf(buf, n, " (keys in '%s':", sec);
    int first = 1;
    for (int i = 0; i < N_KEYS && used < n; i++) {
        if (strncmp(KEYS[i].key, sec, sl) || KEYS[i].key[sl] != '.') continue;
        used += (size_t)snprintf(buf + used, n - used, "%s %s", first ? "" : ",", KEYS[i].key + sl + 1);
        first = 0;
    }
    if (used < n) snprintf(buf + used, n - used, ")");
}

// ---------------------------------------------------------------------------
// Error context: where a value came from, for messages.

typedef struct {
    const char *file;   // file name (or the name given to job_load_string); NULL: none
    const char *opt;    // the --set assignment being applied; NULL: reading the file
    int origin[N_KEYS];  // per key: 0 default, >0 file line, <0 -(override index + 1)
    char **overrides;
} Ctx;

// Prefix "file:line: " / "file: " / "--set a=b: " for a key's origin.
static void origin_prefix(const Ctx *c, int origin, char *buf, size_t n) {
    if (origin < 0 && c->overrides)
        snprintf(buf, n, "--set %s: ", c->overrides[-origin - 1]);
    else if (c->opt)
        snprintf(buf, n, "--set %s: ", c->opt);
    else if (c->file && origin > 0)
        snprintf(buf, n, "%s:%d: ", c->file, origin);
    else if (c->file)
        snprintf(buf, n, "%s: ", c->file);
    else
        buf[0] = 0;
}

__attribute__((format(printf, 3, 4))) static int fail(const Ctx *c, int line, const char *fmt, ...) {
    char msg[1536], pre[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    origin_prefix(c, line, pre, sizeof pre);
    return ps_err_set("%s%s", pre, msg);
}

// ---------------------------------------------------------------------------
// Typed setters: text -> field. One path for defaults, the file and --set.

static void trim(const char **s, size_t *n) {
    while (*n && isspace((unsigned char)**s)) (*s)++, (*n)--;
    while (*n && isspace((unsigned char)(*s)[*n - 1])) (*n)--;
}

static int parse_int(const char *s, int *out) {
    size_t n = strlen(s);
    trim(&s, &n);
    char buf[64];
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (*end || errno || v < INT_MIN || v > INT_MAX) return -1;
    *out = (int)v;
    return 0;
}

static int parse_float(const char *s, float *out) {
    size_t n = strlen(s);
    trim(&s, &n);
    char buf[64];
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    // reject nan/inf and values a float cannot hold; accept underflow to 0 (errno ERANGE)
    if (*end || !isfinite(v) || fabs(v) > FLT_MAX) return -1;
    *out = (float)v;
    return 0;
}

static int parse_bool(const char *s, int *out) {
    size_t n = strlen(s);
    trim(&s, &n);
    static const char *yes[] = {"true", "yes", "on"}, *no[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (n == strlen(yes[i]) && strncasecmp(s, yes[i], n) == 0) return *out = 1, 0;
        if (n == strlen(no[i]) && strncasecmp(s, no[i], n) == 0) return *out = 0, 0;
    }
    return -1;
}

// Set key i from a scalar (items == NULL, text) or a sequence (items[n_items]).
// `line` is the origin used in messages.
static int set_value(const Ctx *c, int line, JobConfig *cfg, int i, const char *text,
                     const char *const *items, int n_items) {
    const JobKey *k = &KEYS[i];
    char *field = (char *)cfg + k->off;
    if (k->type == JT_FLOAT_LIST2) {
        if (!items)
            return fail(c, line, "%s: expected %s, got '%s'", k->key, type_name(k->type), text);
        if (n_items != 2)
            return fail(c, line, "%s: expected %s, got %d element%s", k->key, type_name(k->type),
                        n_items, n_items == 1 ? "" : "s");
        float v[2];
        for (int j = 0; j < 2; j++)
            if (parse_float(items[j], &v[j]))
                return fail(c, line, "%s: expected %s, got element '%s'", k->key,
                            type_name(k->type), items[j]);
        memcpy(field, v, sizeof v);
        return 0;
    }
    char joined[1024];
    if (items && k->type == JT_STRING && (k->flags & JK_STRLIST)) {
        size_t n = 0;
        joined[0] = 0;
        for (int j = 0; j < n_items; j++) {
            n += (size_t)snprintf(joined + n, sizeof joined - n, "%s%s", j ? "," : "", items[j]);
            if (n >= sizeof joined) return fail(c, line, "%s: list too long", k->key);
        }
        text = joined, items = NULL;
    }
    if (items) return fail(c, line, "%s: expected %s, got a list", k->key, type_name(k->type));
    switch (k->type) {
    case JT_INT: {
        int v;
        if (parse_int(text, &v))
            return fail(c, line, "%s: expected %s, got '%s'", k->key, type_name(k->type), text);
        memcpy(field, &v, sizeof v);
        return 0;
    }
    case JT_FLOAT: {
        float v;
        if (parse_float(text, &v))
            return fail(c, line, "%s: expected %s, got '%s'", k->key, type_name(k->type), text);
        memcpy(field, &v, sizeof v);
        return 0;
    }
    case JT_BOOL: {
        int v;
        if (parse_bool(text, &v))
            return fail(c, line, "%s: expected %s, got '%s'", k->key, type_name(k->type), text);
        memcpy(field, &v, sizeof v);
        return 0;
    }
    case JT_STRING: {
        size_t n = strlen(text);
        if (n >= k->size)
            return fail(c, line, "%s: value too long (%zu characters, at most %zu)", k->key, n,
                        k->size - 1);
        // zero the whole field so that equal configs are equal byte for byte
        memset(field, 0, k->size);
        memcpy(field, text, n);
        return 0;
    }
    case JT_FLOAT_LIST2: break;
    }
    return 0;
}

// ---------------------------------------------------------------------------
// Defaults and the table self-check

static void table_selfcheck(void) {
    static int done;
    if (done) return;
    done = 1;
    for (int i = 0; i < N_KEYS; i++) {
        const JobKey *k = &KEYS[i];
        CHECK(strlen(k->key) < 200, "key path too long: %s", k->key);
        CHECK(find_key(k->key) == i, "duplicate key in the job table: %s", k->key);
        // a path cannot be both a key and a section: the YAML would be ambiguous
        CHECK(!is_section(k->key), "job table key '%s' is also a section", k->key);
        size_t want = k->type == JT_FLOAT_LIST2 ? 2 * sizeof(float)
                      : k->type == JT_FLOAT     ? sizeof(float)
                      : k->type == JT_STRING    ? k->size
                                                : sizeof(int);
        CHECK(k->size == want, "job table key '%s': field size does not match its type", k->key);
        CHECK(!(k->def && (k->flags & JK_REQUIRED)), "job table key '%s': required with a default",
              k->key);
    }
}

static int set_default(JobConfig *cfg, int i) {
    const JobKey *k = &KEYS[i];
    if (!k->def) return 0;
    Ctx c = {0};
    if (k->type == JT_FLOAT_LIST2) {
        // defaults of lists are written "[a, b]"
        char buf[128], *items[2];
        snprintf(buf, sizeof buf, "%s", k->def);
        char *p = buf + 1, *comma = strchr(p, ','), *close = strrchr(p, ']');
        CHECK(buf[0] == '[' && comma && close, "bad list default for %s", k->key);
        *comma = 0, *close = 0;
        items[0] = p, items[1] = comma + 1;
        return set_value(&c, 0, cfg, i, NULL, (const char *const *)items, 2);
    }
    return set_value(&c, 0, cfg, i, k->def, NULL, 0);
}

int job_set_defaults(JobConfig *cfg) {
    table_selfcheck();
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < N_KEYS; i++)
        CHECK(set_default(cfg, i) == 0, "bad default in the job table: %s", ps_err_msg());
    return 0;
}

// ---------------------------------------------------------------------------
// Validation

// Parse "[lo,hi)" style intervals. Bounds may be inf / -inf.
static int in_interval(const char *r, double v, char *desc, size_t n) {
    int lo_incl = r[0] == '[';
    char *end;
    double lo = strtod(r + 1, &end);
    CHECK(*end == ',', "bad interval '%s' in the job table", r);
    double hi = strtod(end + 1, &end);
    int hi_incl = *end == ']';
    if (isinf(hi))
        snprintf(desc, n, "%s %g", lo_incl ? ">=" : ">", lo);
    else if (isinf(lo))
        snprintf(desc, n, "%s %g", hi_incl ? "<=" : "<", hi);
    else
        snprintf(desc, n, "in %s", r);
    if (lo_incl ? v < lo : v <= lo) return 0;
    if (hi_incl ? v > hi : v >= hi) return 0;
    return 1;
}

static int matches_choice(const char *choices, const char *s) {
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        size_t ls = strlen(s);
        if (n > 1 && p[0] == '*') {  // "*.ext": any non-empty name ending in .ext
            if (ls > n - 1 && strncmp(s + ls - (n - 1), p + 1, n - 1) == 0) return 1;
        } else if (n && p[n - 1] == '*') {
            if (strncmp(s, p, n - 1) == 0 && ls > n - 1) return 1;
        } else if (strlen(s) == n && strncmp(s, p, n) == 0) {
            return 1;
        }
        p += n;
        if (*p == '|') p++;
    }
    return 0;
}

// Table checks for key i. Returns 0 or -1 with ps_err set (message starts with the key).
static int check_key(const JobConfig *cfg, int i) {
    const JobKey *k = &KEYS[i];
    const char *field = (const char *)cfg + k->off;
    char desc[128];
    switch (k->type) {
    case JT_INT: {
        int v;
        memcpy(&v, field, sizeof v);
        if (k->check && !in_interval(k->check, v, desc, sizeof desc))
            return ps_err_set("%s must be %s (got %d)", k->key, desc, v);
        break;
    }
    case JT_FLOAT: {
        float v;
        memcpy(&v, field, sizeof v);
        if (!isfinite(v)) return ps_err_set("%s must be finite", k->key);
        if (k->check && !in_interval(k->check, v, desc, sizeof desc))
            return ps_err_set("%s must be %s (got %g)", k->key, desc, v);
        break;
    }
    case JT_FLOAT_LIST2: {
        float v[2];
        memcpy(v, field, sizeof v);
        for (int j = 0; j < 2; j++) {
            if (!isfinite(v[j])) return ps_err_set("%s[%d] must be finite", k->key, j);
            if (k->check && !in_interval(k->check, v[j], desc, sizeof desc))
                return ps_err_set("%s[%d] must be %s (got %g)", k->key, j, desc, v[j]);
        }
        break;
    }
    case JT_BOOL: break;
    case JT_STRING:
        if ((k->flags & JK_NONEMPTY) && !field[0]) return ps_err_set("%s must not be empty", k->key);
        if (k->check && !matches_choice(k->check, field)) {
            // the doc of a key with choices spells them out
            return ps_err_set("%s must be %s (got '%s')", k->key, k->doc, field);
        }
        break;
    }
    return 0;
}

// Validation that names the offending key through *bad (-1: none in particular).
static int validate(const JobConfig *cfg, int *bad) {
    *bad = -1;
    for (int i = 0; i < N_KEYS; i++) {
        if (key_inactive(cfg, i)) continue;
        if (check_key(cfg, i)) return *bad = i, -1;
    }
    if (is_scratch(cfg)) {
        LlamaConfig lc;
        if (job_llama_config(cfg, &lc)) {
            // llama_config_validate names the field first ("model.n_kv_heads (3) must ...")
            char key[64];
            if (sscanf(ps_err_msg(), "%63[a-z_.]", key) == 1) *bad = find_key(key);
            return -1;
        }
        if (cfg->data.seq_len > cfg->model.max_seq_len)
            return *bad = find_key("data.seq_len"),
                   ps_err_set("data.seq_len (%d) must be <= model.max_seq_len (%d)",
                              cfg->data.seq_len, cfg->model.max_seq_len);
    }
    unsigned targets;
    if (reg_targets_parse(cfg->share.reg_targets, &targets)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ps_err_msg());
        return *bad = find_key("share.reg.targets"), ps_err_set("share.reg.targets: %s", msg);
    }
    if (cfg->share.reg_normalize && strcmp(cfg->share.reg_type, "l2") &&
        strcmp(cfg->share.reg_type, "mse"))
        return *bad = find_key("share.reg.normalize"),
               ps_err_set("share.reg.normalize applies to reg.type l2 and mse; %s is already "
                          "scale-free",
                          cfg->share.reg_type);
    if (job_share_active(cfg) && cfg->share.lm_weight == 0 && cfg->share.reg_weight == 0)
        return *bad = find_key("share.lm_weight"),
               ps_err_set("share.lm_weight and share.reg.weight are both 0: nothing to train");
    if (cfg->train.min_lr >= 0 && cfg->train.min_lr > cfg->train.lr)
        return *bad = find_key("train.min_lr"),
               ps_err_set("train.min_lr (%g) must be <= train.lr (%g)", cfg->train.min_lr,
                          cfg->train.lr);
    return 0;
}

int job_share_active(const JobConfig *cfg) {
    return cfg->share.ratio > 0 || cfg->share.plan[0] != 0;
}

int job_validate(const JobConfig *cfg) {
    int bad;
    return validate(cfg, &bad);
}

void job_resolve(JobConfig *cfg) {
    if (cfg->train.min_lr < 0) cfg->train.min_lr = cfg->train.lr / 10.0f;
    if (is_scratch(cfg) && cfg->model.n_kv_heads == 0) cfg->model.n_kv_heads = cfg->model.n_heads;
}

int job_llama_config(const JobConfig *cfg, LlamaConfig *out) {
    if (!is_scratch(cfg))
        return ps_err_set("model.init is '%s': the model shape comes from the checkpoint, not "
                          "from the job config",
                          cfg->model.init);
    const JobModel *m = &cfg->model;
    memset(out, 0, sizeof *out);
    out->dim = m->dim;
    out->n_layers = m->n_layers;
    out->n_heads = m->n_heads;
    out->n_kv_heads = m->n_kv_heads ? m->n_kv_heads : m->n_heads;
    // a head_dim equal to dim / n_heads is the default (0)
    out->head_dim = m->dim % m->n_heads == 0 && m->head_dim == m->dim / m->n_heads ? 0 : m->head_dim;
    out->ffn_dim = m->ffn_dim;
    out->vocab_size = m->vocab_size;
    out->max_seq_len = m->max_seq_len;
    out->rope_theta = m->rope_theta;
    out->norm_eps = m->norm_eps;
    out->tie_embeddings = m->tie_embeddings;
    return llama_config_validate(out);
}

// ---------------------------------------------------------------------------
// YAML reading (libyaml document API)

static int line_of(const yaml_node_t *n) { return (int)n->start_mark.line + 1; }

static const char *node_desc(const yaml_node_t *n) {
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a scalar";
}

static int walk(Ctx *c, yaml_document_t *doc, yaml_node_t *map, const char *prefix,
                JobConfig *cfg) {
    yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
    int np = (int)(map->data.mapping.pairs.top - pairs);
    for (int p = 0; p < np; p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, pairs[p].key);
        yaml_node_t *vn = yaml_document_get_node(doc, pairs[p].value);
        int kline = line_of(kn);
        if (kn->type != YAML_SCALAR_NODE)
            return fail(c, kline, "%s%skeys must be plain names, got %s", prefix,
                        prefix[0] ? ": " : "", node_desc(kn));
        const char *name = (const char *)kn->data.scalar.value;
        char path[256];
        if (snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", name) >=
            (int)sizeof path)
            return fail(c, kline, "key path too long: '%.60s...'", path);
        // duplicates inside one mapping (libyaml itself accepts them)
        for (int q = 0; q < p; q++) {
            yaml_node_t *other = yaml_document_get_node(doc, pairs[q].key);
            if (other->type == YAML_SCALAR_NODE &&
                strcmp((const char *)other->data.scalar.value, name) == 0)
                return fail(c, kline, "duplicate key '%s' (first on line %d)", path,
                            line_of(other));
        }
        // A sweep's list of points (sweep.c reads it); each point is a job without it.
        if (!prefix[0] && !strcmp(name, "sweep")) {
            cfg->has_sweep = kline;
            continue;
        }
        int i = find_key(path);
        if (i >= 0) {
            // a leaf may also be reached twice through a dotted key ("train.lr:" and "train: {lr:}")
            if (c->origin[i] > 0)
                return fail(c, kline, "duplicate key '%s' (first on line %d)", path, c->origin[i]);
            int vline = line_of(vn);
            if (vn->type == YAML_MAPPING_NODE)
                return fail(c, vline, "%s: expected %s, got a mapping", path,
                            type_name(KEYS[i].type));
            if (vn->type == YAML_SEQUENCE_NODE) {
                yaml_node_item_t *it = vn->data.sequence.items.start;
                int n = (int)(vn->data.sequence.items.top - it);
                const char *items[JOB_LIST_MAX];
                if (n > JOB_LIST_MAX)
                    return fail(c, vline, "%s: a list of %d items; at most %d", path, n,
                                JOB_LIST_MAX);
                for (int j = 0; j < n; j++) {
                    yaml_node_t *e = yaml_document_get_node(doc, it[j]);
                    if (e->type != YAML_SCALAR_NODE)
                        return fail(c, line_of(e), "%s: expected %s, got a nested %s", path,
                                    type_name(KEYS[i].type), node_desc(e));
                    items[j] = (const char *)e->data.scalar.value;
                }
                if (set_value(c, vline, cfg, i, NULL, items, n)) return -1;
            } else if (set_value(c, vline, cfg, i, (const char *)vn->data.scalar.value, NULL, 0)) {
                return -1;
            }
            c->origin[i] = kline;
        } else if (is_section(path)) {
            if (vn->type != YAML_MAPPING_NODE) {
                char sug[512];
                suggest(path, 0, sug, sizeof sug);
                return fail(c, kline, "'%s' is a section: expected a mapping of its keys, got %s%s",
                            path, node_desc(vn), sug);
            }
            if (walk(c, doc, vn, path, cfg)) return -1;
        } else {
            char sug[512];
            suggest(path, vn->type == YAML_MAPPING_NODE, sug, sizeof sug);
            return fail(c, kline, "unknown %s '%s'%s",
                        vn->type == YAML_MAPPING_NODE ? "section" : "key", path, sug);
        }
    }
    return 0;
}

// Bounds on a config's shape, checked on libyaml's event stream before the
// document is built: libyaml takes quadratic time on deep nesting (40,000 levels:
// 53 s), and a job is a shallow mapping of a few dozen keys.
#define JOB_YAML_DEPTH 32
#define JOB_YAML_EVENTS 100000

static int check_yaml_shape(Ctx *c, const char *text) {
    yaml_parser_t p;
    CHECK(yaml_parser_initialize(&p), "libyaml: cannot initialize the parser");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    int rc = 0, depth = 0;
    for (long events = 0;; events++) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) break;  // yaml_parser_load reports the syntax error
        int line = (int)ev.start_mark.line + 1;
        yaml_event_type_t ty = ev.type;
        yaml_event_delete(&ev);
        if (ty == YAML_MAPPING_START_EVENT || ty == YAML_SEQUENCE_START_EVENT) depth++;
        if (ty == YAML_MAPPING_END_EVENT || ty == YAML_SEQUENCE_END_EVENT) depth--;
        if (depth > JOB_YAML_DEPTH) {
            rc = fail(c, line, "nested deeper than %d levels: not a job config", JOB_YAML_DEPTH);
            break;
        }
        if (events > JOB_YAML_EVENTS) {
            rc = fail(c, line, "more than %d YAML nodes: not a job config", JOB_YAML_EVENTS);
            break;
        }
        if (ty == YAML_STREAM_END_EVENT) break;
    }
    yaml_parser_delete(&p);
    return rc;
}

int job_yaml_shape_ok(const char *yaml, const char *name) {
    Ctx c = {0};
    c.file = name;
    return check_yaml_shape(&c, yaml);
}

static int parse_yaml(Ctx *c, const char *text, JobConfig *cfg) {
    yaml_parser_t parser;
    yaml_document_t doc;
    if (check_yaml_shape(c, text)) return -1;
    CHECK(yaml_parser_initialize(&parser), "libyaml: cannot initialize the parser");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = ps_err_set("%s:%zu:%zu: malformed YAML: %s%s%s%s", c->file,
                            parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                            parser.problem ? parser.problem : "parse error",
                            parser.context ? " (" : "", parser.context ? parser.context : "",
                            parser.context ? ")" : "");
        yaml_parser_delete(&parser);
        return rc;
    }
    int rc = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0))
        rc = fail(c, 0, "empty config: expected a mapping of sections (run, model, data, train)");
    else if (root->type != YAML_MAPPING_NODE)
        rc = fail(c, line_of(root), "expected a mapping of sections at the top level, got %s",
                  node_desc(root));
    else
        rc = walk(c, &doc, root, "", cfg);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

// ---------------------------------------------------------------------------
// Overrides

static int apply_override(Ctx *c, int origin, JobConfig *cfg, const char *a) {
    const char *eq = strchr(a, '=');
    if (!eq) return fail(c, origin, "expected section.key=value");
    const char *ks = a;
    size_t kn = (size_t)(eq - a);
    trim(&ks, &kn);
    char key[256];
    if (kn >= sizeof key) return fail(c, origin, "key too long");
    memcpy(key, ks, kn);
    key[kn] = 0;
    int i = find_key(key);
    if (i < 0) {
        char sug[512];
        if (is_section(key))
            return fail(c, origin, "'%s' is a section, not a key; set one of its keys", key);
        suggest(key, 0, sug, sizeof sug);
        return fail(c, origin, "unknown key '%s'%s", key, sug);
    }
    const char *val = eq + 1;
    int rc;
    if (KEYS[i].type == JT_FLOAT_LIST2) {
        // "[a,b]" or "a,b"
        char buf[256];
        const char *s = val;
        size_t n = strlen(s);
        trim(&s, &n);
        if (n >= sizeof buf) return fail(c, origin, "%s: value too long", key);
        if (n >= 2 && s[0] == '[' && s[n - 1] == ']') s++, n -= 2;
        memcpy(buf, s, n);
        buf[n] = 0;
        const char *items[JOB_LIST_MAX];
        int ni = 0;
        char *p = buf;
        if (n) {
            for (;;) {
                char *comma = strchr(p, ',');
                if (ni == JOB_LIST_MAX)
                    return fail(c, origin, "%s: a list of more than %d items", key, JOB_LIST_MAX);
                items[ni++] = p;
                if (!comma) break;
                *comma = 0;
                p = comma + 1;
            }
        }
        rc = set_value(c, origin, cfg, i, NULL, items, ni);
    } else {
        // strings verbatim (paths may hold anything); numbers and booleans are trimmed
        rc = set_value(c, origin, cfg, i, val, NULL, 0);
    }
    if (rc) return -1;
    c->origin[i] = origin;
    return 0;
}

int job_apply_override(JobConfig *cfg, const char *assignment) {
    table_selfcheck();
    Ctx c = {0};
    c.opt = assignment;
    return apply_override(&c, 0, cfg, assignment);
}

// ---------------------------------------------------------------------------
// Loading

static int load_string(const char *yaml, const char *name, int n_overrides, char **overrides,
                       int allow_sweep, JobConfig *out) {
    JobConfig cfg;
    job_set_defaults(&cfg);
    Ctx c = {0};
    c.file = name ? name : "<config>";
    c.overrides = overrides;
    if (parse_yaml(&c, yaml, &cfg)) return -1;
    // A sweep config stands for many runs; training "the" job would silently
    // drop the sweep, so only the sweep command may read it.
    if (cfg.has_sweep && !allow_sweep)
        return fail(&c, cfg.has_sweep,
                    "the config has a sweep section (one run per point); run `postshare sweep "
                    "%s`",
                    c.file);
    for (int o = 0; o < n_overrides; o++)
        if (apply_override(&c, -(o + 1), &cfg, overrides[o])) return -1;

    // model.init decides which keys apply, so it is checked before them.
    int init = find_key("model.init");
    if (check_key(&cfg, init)) return fail(&c, c.origin[init], "%s", ps_err_msg());
    int scratch = is_scratch(&cfg);
    char missing[1024] = "";
    int n_missing = 0, first_missing = -1;
    for (int i = 0; i < N_KEYS; i++) {
        const JobKey *k = &KEYS[i];
        if ((k->flags & JK_SCRATCH) && !scratch) {
            if (c.origin[i])
                return fail(&c, c.origin[i],
                            "%s is set but model.init is '%s' (the shape comes from the "
                            "checkpoint); remove it",
                            k->key, cfg.model.init);
            continue;
        }
        if ((k->flags & JK_REQUIRED) && !c.origin[i]) {
            size_t u = strlen(missing);
            snprintf(missing + u, sizeof missing - u, "%s'%s'", n_missing ? ", " : "", k->key);
            if (first_missing < 0) first_missing = i;
            n_missing++;
        }
    }
    if (n_missing == 1)
        return fail(&c, 0, "missing required key %s (%s)", missing, KEYS[first_missing].doc);
    if (n_missing > 1) return fail(&c, 0, "missing required keys %s", missing);

    job_resolve(&cfg);
    int bad;
    if (validate(&cfg, &bad)) return fail(&c, bad >= 0 ? c.origin[bad] : 0, "%s", ps_err_msg());
    *out = cfg;
    return 0;
}

int job_load_string(const char *yaml, const char *name, int n_overrides, char **overrides,
                    JobConfig *out) {
    return load_string(yaml, name, n_overrides, overrides, 0, out);
}

int job_load_sweep_base(const char *yaml, const char *name, int n_overrides, char **overrides,
                        JobConfig *out) {
    return load_string(yaml, name, n_overrides, overrides, 1, out);
}

int job_load(const char *path, int n_overrides, char **overrides, JobConfig *out) {
    char *text = ps_read_file(path, NULL);
    if (!text) return -1;
    int rc = job_load_string(text, path, n_overrides, overrides, out);
    free(text);
    return rc;
}

// ---------------------------------------------------------------------------
// Writing

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

__attribute__((format(printf, 2, 3))) static void bprintf(Buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        CHECK(n >= 0, "vsnprintf failed");
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = 2 * b->cap + (size_t)n + 1;
        b->p = xrealloc(b->p, b->cap);
    }
}

// Shortest text that reads back as the same float, with a '.' in the mantissa so
// that YAML 1.1 readers (PyYAML) also see a float: "0.0003", "1.0e-05", "10000.0".
static void fmt_float(float v, char *buf, size_t n) {
    // whole numbers print whole ("10000.0", not "1e+04")
    if (fabsf(v) < 1e15f && v == truncf(v)) {
        snprintf(buf, n, "%.1f", (double)v);
        return;
    }
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    if (!strchr(buf, '.')) {
        char *e = strchr(buf, 'e');
        char tail[32];
        snprintf(tail, sizeof tail, "%s", e ? e : "");
        if (e) *e = 0;
        size_t u = strlen(buf);
        snprintf(buf + u, n - u, ".0%s", tail);
    }
}

static void fmt_value(const JobConfig *cfg, int i, Buf *b) {
    const JobKey *k = &KEYS[i];
    const char *field = (const char *)cfg + k->off;
    char t[64], u[64];
    switch (k->type) {
    case JT_INT: {
        int v;
        memcpy(&v, field, sizeof v);
        bprintf(b, "%d", v);
        break;
    }
    case JT_FLOAT: {
        float v;
        memcpy(&v, field, sizeof v);
        fmt_float(v, t, sizeof t);
        bprintf(b, "%s", t);
        break;
    }
    case JT_BOOL: {
        int v;
        memcpy(&v, field, sizeof v);
        bprintf(b, "%s", v ? "true" : "false");
        break;
    }
    case JT_FLOAT_LIST2: {
        float v[2];
        memcpy(v, field, sizeof v);
        fmt_float(v[0], t, sizeof t);
        fmt_float(v[1], u, sizeof u);
        bprintf(b, "[%s, %s]", t, u);
        break;
    }
    case JT_STRING:
        // always double-quoted: paths like "*.bin" or "hf:x" are then never misread
        bprintf(b, "\"");
        for (const unsigned char *s = (const unsigned char *)field; *s; s++) {
            if (*s == '"' || *s == '\\') bprintf(b, "\\%c", *s);
            else if (*s < 0x20 || *s == 0x7f) bprintf(b, "\\x%02x", *s);
            else bprintf(b, "%c", *s);
        }
        bprintf(b, "\"");
        break;
    }
}

// Emit the keys under `prefix` (e.g. "" or "share.reg."), nested sections in the
// order of their first key in the table.
static void emit_level(Buf *b, const JobConfig *cfg, const char *prefix, int depth) {
    size_t pl = strlen(prefix);
    int after_section = 0;  // top level: separate sections and what follows them
    for (int i = 0; i < N_KEYS; i++) {
        if (key_inactive(cfg, i) || strncmp(KEYS[i].key, prefix, pl)) continue;
        const char *rest = KEYS[i].key + pl;
        const char *dot = strchr(rest, '.');
        size_t cl = dot ? (size_t)(dot - rest) : strlen(rest);
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = !key_inactive(cfg, j) && strncmp(KEYS[j].key, prefix, pl) == 0 &&
                   strncmp(KEYS[j].key + pl, rest, cl) == 0 &&
                   (KEYS[j].key[pl + cl] == '.' || KEYS[j].key[pl + cl] == 0);
        if (seen) continue;
        if (dot) {
            if (depth == 0) bprintf(b, "\n"), after_section = 1;
            bprintf(b, "%*s%.*s:\n", 2 * depth, "", (int)cl, rest);
            char sub[256];
            snprintf(sub, sizeof sub, "%.*s.", (int)(pl + cl), KEYS[i].key);
            emit_level(b, cfg, sub, depth + 1);
        } else {
            if (after_section) bprintf(b, "\n"), after_section = 0;
            size_t start = b->len;
            bprintf(b, "%*s%s: ", 2 * depth, "", rest);
            fmt_value(cfg, i, b);
            size_t w = b->len - start;
            // with a plan file, the plan decides what is shared, not share.ratio
            int by_plan = !strcmp(KEYS[i].key, "share.ratio") && cfg->share.plan[0];
            bprintf(b, "%*s# %s\n", w < 40 ? (int)(40 - w) : 1, "",
                    by_plan ? "not used: share.plan decides (its ratio is in results.json)"
                            : KEYS[i].doc);
        }
    }
}

char *job_to_yaml(const JobConfig *cfg) {
    table_selfcheck();
    Buf b = {xmalloc(4096), 0, 4096};
    b.p[0] = 0;
    bprintf(&b, "# postshare job config, resolved: every key with its value, defaults included.\n");
    emit_level(&b, cfg, "", 0);
    return b.p;
}

void job_print(FILE *f, const JobConfig *cfg) {
    char *s = job_to_yaml(cfg);
    fputs(s, f);
    free(s);
}

void job_print_keys(FILE *f) {
    for (int i = 0; i < N_KEYS; i++) {
        const JobKey *k = &KEYS[i];
        char def[96];
        if (k->flags & JK_REQUIRED)
            snprintf(def, sizeof def, "required%s", k->flags & JK_SCRATCH ? " (scratch)" : "");
        else
            snprintf(def, sizeof def, "default %s", k->def ? k->def : "none");
        fprintf(f, "  %-22s %-14s %-22s %s%s%s\n", k->key, short_type(k->type), def, k->doc,
                k->check ? "; " : "", k->check ? k->check : "");
    }
}

char *job_run_dir(const JobConfig *cfg) { return ps_path_join(cfg->run.out_dir, cfg->run.name); }

int job_resume_diff(const JobConfig *saved, const JobConfig *cur, char **fixed, char **notes) {
    Buf b[2] = {{xmalloc(256), 0, 256}, {xmalloc(256), 0, 256}};  // fixed, notes
    b[0].p[0] = b[1].p[0] = 0;
    int n_fixed = 0;
    for (int i = 0; i < N_KEYS; i++) {
        const JobKey *k = &KEYS[i];
        // a key inactive on either side (the scratch shape of a loaded model)
        // has no value to compare; a change of model.init is reported itself
        if (!(k->flags & (JK_FIXED | JK_NOTE)) || key_inactive(saved, i) || key_inactive(cur, i))
            continue;
        if (memcmp((const char *)saved + k->off, (const char *)cur + k->off, k->size) == 0)
            continue;
        Buf *o = &b[(k->flags & JK_FIXED) ? 0 : 1];
        bprintf(o, "%s%s ", o->len ? ", " : "", k->key);
        fmt_value(saved, i, o);
        bprintf(o, " -> ");
        fmt_value(cur, i, o);
        n_fixed += (k->flags & JK_FIXED) != 0;
    }
    *fixed = b[0].p;
    *notes = b[1].p;
    return n_fixed;
}
