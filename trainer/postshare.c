// postshare.c: PostShare in the training loop (see postshare.h): plan and
// pairs from the job, the regularizer step, and the end-of-run hand-off.
#include "postshare.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "common.h"
#include "shard.h"
#include "share.h"
#include "taskeval.h"

int postshare_init(PostShare *ps, const JobConfig *job, const HostWeights *w0,
                   const char *resume_plan_json) {
    memset(ps, 0, sizeof *ps);
    ps->lm_weight = 1.0f;
    if (!job_share_active(job) && !resume_plan_json) return 0;
    const JobShare *sh = &job->share;
    const LlamaConfig *cfg = &w0->t.cfg;
    char fp[40];
    share_fingerprint(&w0->t, w0->params, fp);
    if (resume_plan_json) {
        // the weights moved since the plan was made: check the shape only
        if (share_plan_parse(resume_plan_json, "the checkpoint's plan", &ps->plan) ||
            share_plan_check(&ps->plan, cfg, NULL, 0, "the checkpoint's plan"))
            return -1;
    } else if (sh->plan[0]) {
        if (share_plan_read(sh->plan, &ps->plan) ||
            share_plan_check(&ps->plan, cfg, fp, 0, sh->plan))
            return -1;
        printf("postshare: plan %s: %d of %d units shared (ratio %.4g)\n", sh->plan, ps->plan.n,
               cfg->n_layers * cfg->n_kv_heads,
               (double)ps->plan.n / (cfg->n_layers * cfg->n_kv_heads));
    } else {
        ShareMatchFn fn;
        if (share_match_parse(sh->match, &fn)) return -1;
        if (share_plan_make(w0, fn, sh->ratio, 1, &ps->plan, NULL)) return -1;
        printf(
            "postshare: plan computed from the starting weights (match %s, ratio %g): %d of %d "
            "units shared\n",
            sh->match, sh->ratio, ps->plan.n, cfg->n_layers * cfg->n_kv_heads);
    }
    RegType type;
    unsigned targets;
    if (reg_type_parse(sh->reg_type, &type) || reg_targets_parse(sh->reg_targets, &targets))
        return -1;
    reg_pairs_build(&ps->pairs, &w0->t, &ps->plan, targets, type);
    // the scales of the starting weights (w0 is them on a resumed run too)
    if (sh->reg_normalize && reg_pairs_normalize(&ps->pairs, w0->params)) {
        reg_pairs_free(&ps->pairs);
        share_plan_free(&ps->plan);
        return -1;
    }
    ps->active = 1;
    ps->lm_weight = sh->lm_weight;
    ps->reg_weight = sh->reg_weight;
    ps->ramp_steps = sh->reg_ramp_steps;
    ps->lr_mult = sh->reg_lr_mult;
    ps->rest_lr_mult = sh->rest_lr_mult;
    ps->pull_target = strcmp(sh->reg_pull, "target") == 0;
    ps->plan_json = share_plan_to_json(&ps->plan);
    printf("postshare: loss = %g * LM + %g * R (%s%s over %s, %d pairs)", ps->lm_weight,
           ps->reg_weight, sh->reg_type, sh->reg_normalize ? ", normalized" : "", sh->reg_targets,
           ps->plan.n);
    if (ps->ramp_steps > 0) printf(", weight ramped over %d steps", ps->ramp_steps);
    if (ps->pull_target)
        printf(", sources frozen, lr x %g on the targets, x %g elsewhere", ps->lr_mult,
               ps->rest_lr_mult);
    else if (ps->lr_mult != 1.0f || ps->rest_lr_mult != 1.0f)
        printf(", lr x %g on the paired slices, x %g elsewhere", ps->lr_mult, ps->rest_lr_mult);
    printf("\n");
    return 0;
}

float postshare_weight(const PostShare *ps, int step) {
    if (ps->ramp_steps <= 0 || step + 1 >= ps->ramp_steps) return ps->reg_weight;
    return ps->reg_weight * (float)(step + 1) / (float)ps->ramp_steps;
}

void postshare_lr_scale(const PostShare *ps, Optim *opt) {
    if (!ps->active || (ps->lr_mult == 1.0f && ps->rest_lr_mult == 1.0f && !ps->pull_target))
        return;
    float *sc = xmalloc(sizeof(float) * (opt->hi - opt->lo + 1));
    reg_pairs_lr_scale(&ps->pairs, opt->lo, opt->hi, ps->lr_mult,
                       ps->pull_target ? 0.0f : ps->lr_mult, ps->rest_lr_mult, sc);
    optim_set_lr_scale(opt, sc);
    free(sc);
}

void postshare_free(PostShare *ps) {
    if (ps->active) {
        share_plan_free(&ps->plan);
        reg_pairs_free(&ps->pairs);
    }
    free(ps->plan_json);
    memset(ps, 0, sizeof *ps);
}

RegStats postshare_step(const PostShare *ps, Model *M, int step) {
    RegStats st;
    memset(&st, 0, sizeof st);
    if (!ps->active) return st;
    float w = postshare_weight(ps, step);
    return reg_apply(M->be, &ps->pairs, M->params, w > 0 ? M->grads : NULL, w);
}

RegStats postshare_stats(const PostShare *ps, const Model *M) {
    RegStats st;
    memset(&st, 0, sizeof st);
    if (!ps->active) return st;
    return reg_apply(M->be, &ps->pairs, M->params, NULL, 0.0f);
}

// ---------------------------------------------------------------- hand-off

#define MAX_TASK_COLS 64

// The job's tasks (eval.tasks) and test set (eval.test), loaded once for every
// row; tasks.n_tasks 0: no tasks, test NULL: no test set.
struct JobTasks {
    TaskSet set;
    TaskEvalOpts opts;
    Tokenizer *tok;
    Loader *test;
    int test_batches;
};

typedef struct {
    const char *name, *what;
    size_t params, bytes;
    EvalResult ev;
    TaskResult *tasks;  // [n_tasks], or NULL
    int n_tasks;
    int has_test;
    EvalResult test;  // on eval.test
} ResultRow;

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

// eval.test as a loader: shards, or a text file tokenized (as one document,
// like `postshare prepare`) into a shard that is unlinked once mapped.
static Loader *open_test(const JobConfig *job, const Tokenizer *tok, int vocab) {
    const char *path = job->eval.test;
    int T = job->data.seq_len;
    if (!has_suffix(path, ".txt")) return loader_open(path, T, vocab, 0, 0);
    size_t len, n;
    char *text = ps_read_file(path, &len);
    if (!text) return NULL;
    int *ids = tok_encode(tok, text, len, 1, &n);
    free(text);
    char dir[] = "/tmp/postshare_test_XXXXXX";
    Loader *L = NULL;
    if (!mkdtemp(dir)) {
        ps_err_set("%s: cannot make a temporary directory for its tokens", path);
    } else {
        char *shard = ps_path_join(dir, "test_000000.bin");
        if (shard_write(shard, ids, n, vocab) == 0) L = loader_open(shard, T, vocab, 0, 0);
        unlink(shard);
        rmdir(dir);
        free(shard);
    }
    free(ids);
    return L;
}

int postshare_tasks_open(const JobConfig *job, int vocab, JobTasks **out) {
    *out = NULL;
    if (!job->eval.tasks[0] && !job->eval.test[0]) return 0;
    JobTasks *jt = xcalloc(1, sizeof *jt);
    task_eval_opts_default(&jt->opts);
    if (job->eval.data_dir[0]) jt->opts.data_dir = job->eval.data_dir;
    jt->opts.limit = job->eval.limit;
    jt->opts.num_fewshot = job->eval.num_fewshot;
    jt->test_batches = job->eval.test_batches;
    char msg[1024];
    if (job->eval.tasks[0] && task_set_load(job->eval.tasks, &jt->opts, &jt->set)) {
        snprintf(msg, sizeof msg, "%s", ps_err_msg());  // ps_err_set must not read its own buffer
        free(jt);
        return ps_err_set("eval.tasks: %s", msg);
    }
    *out = jt;
    if (job->eval.tasks[0] || has_suffix(job->eval.test, ".txt")) {
        jt->tok = tok_open(job->data.tokenizer);
        if (!jt->tok) {
            snprintf(msg, sizeof msg, "%s", ps_err_msg());
            postshare_tasks_close(jt);
            *out = NULL;
            return ps_err_set("%s needs data.tokenizer: %s",
                              job->eval.tasks[0] ? "eval.tasks" : "eval.test", msg);
        }
    }
    if (job->eval.test[0]) {
        jt->test = open_test(job, jt->tok, vocab);
        if (!jt->test || loader_num_windows(jt->test) < (uint64_t)job->data.batch_size) {
            snprintf(msg, sizeof msg, "%s",
                     jt->test ? "fewer sequences of data.seq_len tokens than data.batch_size"
                              : ps_err_msg());
            postshare_tasks_close(jt);
            *out = NULL;
            return ps_err_set("eval.test %s: %s", job->eval.test, msg);
        }
    }
    return 0;
}

void postshare_tasks_close(JobTasks *jt) {
    if (!jt) return;
    if (jt->set.n_tasks) task_set_free(&jt->set);
    tok_free(jt->tok);
    if (jt->test) loader_close(jt->test);
    free(jt);
}

// The test set's numbers for the model M into r (when the job has one).
static void eval_test(Model *M, const JobTasks *jt, int B, int T, ResultRow *r) {
    if (!jt || !jt->test) return;
    r->has_test = 1;
    r->test = eval_model(M, jt->test, B, T, jt->test_batches);
    printf("  %-12s %-44s test loss %.4f ppl %8.3f (%ld tokens)\n", r->name, "", r->test.loss,
           r->test.ppl, r->test.tokens);
}

static ResultRow eval_weights(const JobConfig *job, const char *name, const char *what,
                              const HostWeights *w, Loader *val, int B, int T, const JobTasks *jt) {
    Model M;
    model_init_table(&M, backend_get(job->backend), &w->t);
    model_set_forward_only(&M, 1);
    model_set_params(&M, w->params);
    ResultRow r = {.name = name,
                   .what = what,
                   .params = w->t.total,
                   .bytes = model_weight_bytes(&w->t, sizeof(float))};
    r.ev = eval_model(&M, val, B, T, job->data.val_batches);
    printf("  %-12s %-44s val loss %.4f  ppl %8.3f\n", name, what, r.ev.loss, r.ev.ppl);
    eval_test(&M, jt, B, T, &r);
    if (jt && jt->set.n_tasks) {
        r.n_tasks = jt->set.n_tasks;
        r.tasks = xcalloc((size_t)r.n_tasks, sizeof(TaskResult));
        if (task_set_eval(&M, jt->tok, &jt->set, &jt->opts, r.tasks, NULL))
            ps_die("eval.tasks: %s", ps_err_msg());
        char names[MAX_TASK_COLS][80];
        double vals[MAX_TASK_COLS];
        int nc = task_result_columns(r.tasks, r.n_tasks, names, vals, MAX_TASK_COLS);
        printf("  %-12s", "");
        for (int c = 0; c < nc && c < MAX_TASK_COLS; c++) printf(" %s %.4f", names[c], vals[c]);
        printf("\n");
    }
    model_free(&M);
    fflush(stdout);
    return r;
}

static cJSON *row_json(const ResultRow *r) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddStringToObject(o, "what", r->what);
    cJSON_AddNumberToObject(o, "params", (double)r->params);
    cJSON_AddNumberToObject(o, "bytes", (double)r->params * sizeof(float));
    cJSON_AddNumberToObject(o, "resident_bytes", (double)r->bytes);
    cJSON_AddNumberToObject(o, "val_loss", r->ev.loss);
    cJSON_AddNumberToObject(o, "val_ppl", r->ev.ppl);
    cJSON_AddNumberToObject(o, "val_tokens", (double)r->ev.tokens);
    if (r->has_test) {
        cJSON_AddNumberToObject(o, "test_loss", r->test.loss);
        cJSON_AddNumberToObject(o, "test_ppl", r->test.ppl);
        cJSON_AddNumberToObject(o, "test_tokens", (double)r->test.tokens);
    }
    if (r->tasks) cJSON_AddItemToObject(o, "tasks", task_results_json(r->tasks, r->n_tasks));
    return o;
}

// "Test: PATH, N tokens." after the head of results.md, when there is a test set.
static void test_head(const JobConfig *job, const ResultRow *r, char *head, size_t cap) {
    size_t u = strlen(head);
    if (r->has_test)
        snprintf(head + u, cap - u, " Test: %s, %ld tokens.", job->eval.test, r->test.tokens);
}

static void write_json(const char *run_dir, cJSON *root) {
    char *txt = cJSON_Print(root);
    char *path = ps_path_join(run_dir, "results.json");
    if (ps_write_file_atomic(path, txt, strlen(txt)) != 0) ps_die("%s", ps_err_msg());
    free(txt);
    free(path);
}

// The extra columns of a row: the test set's loss and perplexity, the tasks
// ("piqa.acc" ...) with "value ± stderr" cells.
static int task_cells(const ResultRow *r, char (*names)[80], char (*cells)[64]) {
    int k = 0;
    if (r->has_test) {  // the test set's columns first
        snprintf(names[k], 80, "test loss");
        snprintf(cells[k++], 64, "%.4f", r->test.loss);
        snprintf(names[k], 80, "test ppl");
        snprintf(cells[k++], 64, "%.3f", r->test.ppl);
    }
    for (int t = 0; t < r->n_tasks && k < MAX_TASK_COLS - 3; t++) {
        const TaskResult *x = &r->tasks[t];
        if (x->metrics & TASK_M_ACC) {
            snprintf(names[k], 80, "%s acc", x->name);
            task_fmt_value(cells[k++], 64, x->acc, x->acc_se);
        }
        if (x->metrics & TASK_M_ACC_NORM) {
            snprintf(names[k], 80, "%s acc_norm", x->name);
            task_fmt_value(cells[k++], 64, x->acc_norm, x->acc_norm_se);
        }
        if (x->metrics & TASK_M_PPL) {
            snprintf(names[k], 80, "%s ppl", x->name);
            task_fmt_value(cells[k++], 64, x->ppl, x->ppl_se);
        }
    }
    return k;
}

static void write_md(const char *run_dir, const ResultRow *rows, int n, const char *head) {
    char *md = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&md, &len);
    char names[MAX_TASK_COLS][80], cells[MAX_TASK_COLS][64];
    int nc = task_cells(&rows[0], names, cells);
    fprintf(f,
            "# Results\n\n%s\n\n| model | what | params | bytes | val loss | val ppl | "
            "resident bytes |",
            head);
    for (int c = 0; c < nc; c++) fprintf(f, " %s |", names[c]);
    fprintf(f, "\n|---|---|---:|---:|---:|---:|---:|");
    for (int c = 0; c < nc; c++) fprintf(f, "---:|");
    fprintf(f, "\n");
    for (int i = 0; i < n; i++) {
        fprintf(f, "| %s | %s | %zu | %zu | %.4f | %.3f | %zu |", rows[i].name, rows[i].what,
                rows[i].params, rows[i].params * sizeof(float), rows[i].ev.loss, rows[i].ev.ppl,
                rows[i].bytes);
        task_cells(&rows[i], names, cells);
        for (int c = 0; c < nc; c++) fprintf(f, " %s |", cells[c]);
        fprintf(f, "\n");
    }
    if (rows[0].n_tasks)
        fprintf(f,
                "\nTasks (docs/tasks.md): value ± standard error, as lm-evaluation-harness "
                "computes them.\n");
    fclose(f);
    char *path = ps_path_join(run_dir, "results.md");
    if (ps_write_file_atomic(path, md, strlen(md)) != 0) ps_die("%s", ps_err_msg());
    free(path);
    free(md);
}

// The console table: parameters, bytes, loss, perplexity and the task columns.
static void print_rows(const ResultRow *rows, int n) {
    char names[MAX_TASK_COLS][80], cells[MAX_TASK_COLS][64];
    int nc = task_cells(&rows[0], names, cells);
    printf("\n%-12s %12s %12s %10s %10s", "model", "params", "bytes", "val loss", "val ppl");
    for (int c = 0; c < nc; c++) printf(" %18s", names[c]);
    printf("\n");
    for (int i = 0; i < n; i++) {
        printf("%-12s %12zu %12zu %10.4f %10.3f", rows[i].name, rows[i].params,
               rows[i].params * sizeof(float), rows[i].ev.loss, rows[i].ev.ppl);
        task_cells(&rows[i], names, cells);
        for (int c = 0; c < nc; c++) printf(" %18s", cells[c]);
        printf("\n");
    }
}

static void save_model(const char *run_dir, const char *sub, const HostWeights *w,
                       const HfExport *x) {
    char *dir = ps_path_join(run_dir, sub);
    if (hf_save_export(dir, w, "float32", x) != 0) ps_die("saving %s: %s", dir, ps_err_msg());
    printf("saved %s\n", dir);
    free(dir);
}

void postshare_handoff(const PostShare *ps, const JobConfig *job, const char *run_dir,
                       const HostWeights *start, const HostWeights *final, Loader *val, int B,
                       int T, RegStats last, const HfExport *x) {
    const JobShare *sh = &job->share;
    printf("postshare: hand-off: applying the plan (%d units) and evaluating on %s\n", ps->plan.n,
           job->data.val);
    JobTasks *jt;
    if (postshare_tasks_open(job, start->t.cfg.vocab_size, &jt)) ps_die("%s", ps_err_msg());
    HostWeights direct, shared;
    share_compact(start, &ps->plan, &direct);
    share_compact(final, &ps->plan, &shared);
    ResultRow rows[4];
    rows[0] = eval_weights(job, "start", "starting model", start, val, B, T, jt);
    rows[1] = eval_weights(job, "directshare", "plan applied to the starting model", &direct, val,
                           B, T, jt);
    rows[2] =
        eval_weights(job, "posttrained", "post-trained, before sharing", final, val, B, T, jt);
    rows[3] = eval_weights(job, "postshare", "plan applied to the post-trained model", &shared, val,
                           B, T, jt);

    cJSON *root = cJSON_CreateObject();
    cJSON *models = cJSON_AddArrayToObject(root, "models");
    for (int i = 0; i < 4; i++) cJSON_AddItemToArray(models, row_json(&rows[i]));
    // the ratio shared: units replaced / units (a plan file's own "ratio" is what
    // it was made for, and a hand-made plan may have none)
    const LlamaConfig *c = &start->t.cfg;
    int units = c->n_layers * c->n_kv_heads;
    double ratio = (double)ps->plan.n / units;
    const char *plan = sh->plan[0] ? sh->plan : "computed from the starting weights";
    cJSON *s = cJSON_AddObjectToObject(root, "share");
    cJSON_AddNumberToObject(s, "ratio", ratio);
    cJSON_AddNumberToObject(s, "units", units);
    cJSON_AddStringToObject(s, "plan", plan);
    cJSON_AddNumberToObject(s, "plan_ratio", ps->plan.ratio);
    cJSON_AddStringToObject(s, "match", share_match_name(ps->plan.match));
    cJSON_AddStringToObject(s, "reg_type", sh->reg_type);
    cJSON_AddNumberToObject(s, "reg_weight", ps->reg_weight);
    cJSON_AddNumberToObject(s, "lm_weight", ps->lm_weight);
    cJSON_AddStringToObject(s, "targets", sh->reg_targets);
    cJSON_AddBoolToObject(s, "reg_normalize", sh->reg_normalize);
    cJSON_AddNumberToObject(s, "reg_ramp_steps", sh->reg_ramp_steps);
    cJSON_AddNumberToObject(s, "reg_lr_mult", sh->reg_lr_mult);
    cJSON_AddNumberToObject(s, "rest_lr_mult", sh->rest_lr_mult);
    cJSON_AddStringToObject(s, "reg_pull", sh->reg_pull);
    cJSON_AddNumberToObject(s, "pairs", ps->plan.n);
    cJSON *f = cJSON_AddObjectToObject(root, "final");
    cJSON_AddNumberToObject(f, "reg_loss", last.R);
    cJSON_AddNumberToObject(f, "cos_mean", last.cos_mean);
    cJSON_AddNumberToObject(f, "dist_mean", last.dist_mean);
    cJSON_AddNumberToObject(f, "dist_max", last.dist_max);
    char head[3400];
    snprintf(head, sizeof head,
             "Sharing %d of %d attention units (ratio %.4g, match %s, plan %s); post-trained "
             "with %g * LM + %g * R "
             "(%s%s over %s). Validation: %s, %ld tokens. bytes: the fp32 weights stored (each "
             "shared slice once); resident bytes: what evaluation holds in memory, a compact "
             "model's one-layer scratch for assembling shared layers included.",
             ps->plan.n, units, ratio, share_match_name(ps->plan.match), plan, ps->lm_weight,
             ps->reg_weight, sh->reg_type, sh->reg_normalize ? ", normalized" : "", sh->reg_targets,
             job->data.val, rows[0].ev.tokens);
    test_head(job, &rows[0], head, sizeof head);
    write_md(run_dir, rows, 4, head);
    write_json(run_dir, root);  // last: its presence marks the run finished (sweeps)
    cJSON_Delete(root);
    save_model(run_dir, "shared", &shared, x);
    if (sh->materialize) {
        HostWeights mat;
        share_materialize(&shared, &mat);
        save_model(run_dir, "shared_hf", &mat, x);
        host_weights_free(&mat);
    }
    print_rows(rows, 4);
    printf("(results.md and results.json in %s)\n", run_dir);
    for (int i = 0; i < 4; i++) free(rows[i].tasks);
    postshare_tasks_close(jt);
    host_weights_free(&direct);
    host_weights_free(&shared);
}

void postshare_results_plain(const JobConfig *job, const char *run_dir, const HostWeights *final,
                             EvalResult ev) {
    ResultRow r = {.name = "trained",
                   .what = "the trained model",
                   .params = final->t.total,
                   .bytes = model_weight_bytes(&final->t, sizeof(float)),
                   .ev = ev};
    JobTasks *jt;
    if (postshare_tasks_open(job, final->t.cfg.vocab_size, &jt)) ps_die("%s", ps_err_msg());
    if (jt) {  // the validation numbers are the run's; tasks and test need a forward of their own
        Model M;
        model_init_table(&M, backend_get(job->backend), &final->t);
        model_set_forward_only(&M, 1);
        model_set_params(&M, final->params);
        eval_test(&M, jt, job->data.batch_size, job->data.seq_len, &r);
        r.n_tasks = jt->set.n_tasks;
        r.tasks = r.n_tasks ? xcalloc((size_t)r.n_tasks, sizeof(TaskResult)) : NULL;
        if (r.n_tasks && task_set_eval(&M, jt->tok, &jt->set, &jt->opts, r.tasks, NULL))
            ps_die("eval.tasks: %s", ps_err_msg());
        model_free(&M);
        print_rows(&r, 1);
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "models"), row_json(&r));
    char head[3400];
    snprintf(head, sizeof head, "Validation: %s, %ld tokens.", job->data.val, ev.tokens);
    test_head(job, &r, head, sizeof head);
    write_md(run_dir, &r, 1, head);
    write_json(run_dir, root);
    cJSON_Delete(root);
    free(r.tasks);
    postshare_tasks_close(jt);
}
