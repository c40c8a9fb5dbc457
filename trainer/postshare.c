// postshare.c: PostShare in the training loop (see postshare.h): plan and
// pairs from the job, the regularizer step, and the end-of-run hand-off.
#include "postshare.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "share.h"

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
        printf("postshare: plan %s: %d of %d units shared\n", sh->plan, ps->plan.n,
               cfg->n_layers * cfg->n_kv_heads);
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
    ps->active = 1;
    ps->lm_weight = sh->lm_weight;
    ps->reg_weight = sh->reg_weight;
    ps->plan_json = share_plan_to_json(&ps->plan);
    printf("postshare: loss = %g * LM + %g * R (%s over %s, %d pairs)\n", ps->lm_weight,
           ps->reg_weight, sh->reg_type, sh->reg_targets, ps->plan.n);
    return 0;
}

void postshare_free(PostShare *ps) {
    if (ps->active) {
        share_plan_free(&ps->plan);
        reg_pairs_free(&ps->pairs);
    }
    free(ps->plan_json);
    memset(ps, 0, sizeof *ps);
}

RegStats postshare_step(const PostShare *ps, Model *M) {
    RegStats st;
    memset(&st, 0, sizeof st);
    if (!ps->active) return st;
    return reg_apply(M->be, &ps->pairs, M->params, ps->reg_weight > 0 ? M->grads : NULL,
                     ps->reg_weight);
}

RegStats postshare_stats(const PostShare *ps, const Model *M) {
    RegStats st;
    memset(&st, 0, sizeof st);
    if (!ps->active) return st;
    return reg_apply(M->be, &ps->pairs, M->params, NULL, 0.0f);
}

// ---------------------------------------------------------------- hand-off

typedef struct {
    const char *name, *what;
    size_t params, bytes;
    EvalResult ev;
} ResultRow;

static ResultRow eval_weights(const JobConfig *job, const char *name, const char *what,
                              const HostWeights *w, Loader *val, int B, int T) {
    Model M;
    model_init_table(&M, backend_get(job->backend), &w->t);
    model_set_forward_only(&M, 1);
    model_set_params(&M, w->params);
    ResultRow r = {name, what, w->t.total, model_weight_bytes(&w->t, sizeof(float)), {0, 0, 0, 0}};
    r.ev = eval_model(&M, val, B, T, job->data.val_batches);
    model_free(&M);
    printf("  %-12s %-44s val loss %.4f  ppl %8.3f\n", name, what, r.ev.loss, r.ev.ppl);
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
    return o;
}

static void write_json(const char *run_dir, cJSON *root) {
    char *txt = cJSON_Print(root);
    char *path = ps_path_join(run_dir, "results.json");
    if (ps_write_file_atomic(path, txt, strlen(txt)) != 0) ps_die("%s", ps_err_msg());
    free(txt);
    free(path);
}

static void write_md(const char *run_dir, const ResultRow *rows, int n, const char *head) {
    size_t cap = 16384, len = 0;
    char *md = xmalloc(cap);
    len += (size_t)snprintf(md + len, cap - len,
                            "# Results\n\n%s\n\n| model | what | params | bytes | val loss | val "
                            "ppl | resident bytes |\n|---|---|---:|---:|---:|---:|---:|\n",
                            head);
    for (int i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(md + len, cap - len,
                                "| %s | %s | %zu | %zu | %.4f | %.3f | %zu |\n", rows[i].name,
                                rows[i].what, rows[i].params, rows[i].params * sizeof(float),
                                rows[i].ev.loss, rows[i].ev.ppl, rows[i].bytes);
    char *path = ps_path_join(run_dir, "results.md");
    if (ps_write_file_atomic(path, md, strlen(md)) != 0) ps_die("%s", ps_err_msg());
    free(path);
    free(md);
}

static void save_model(const char *run_dir, const char *sub, const HostWeights *w) {
    char *dir = ps_path_join(run_dir, sub);
    if (hf_save(dir, w, "float32") != 0) ps_die("saving %s: %s", dir, ps_err_msg());
    printf("saved %s\n", dir);
    free(dir);
}

void postshare_handoff(const PostShare *ps, const JobConfig *job, const char *run_dir,
                       const HostWeights *start, const HostWeights *final, Loader *val, int B,
                       int T, RegStats last) {
    const JobShare *sh = &job->share;
    printf("postshare: hand-off: applying the plan (%d units) and evaluating on %s\n", ps->plan.n,
           job->data.val);
    HostWeights direct, shared;
    share_compact(start, &ps->plan, &direct);
    share_compact(final, &ps->plan, &shared);
    ResultRow rows[4];
    rows[0] = eval_weights(job, "start", "starting model", start, val, B, T);
    rows[1] =
        eval_weights(job, "directshare", "plan applied to the starting model", &direct, val, B, T);
    rows[2] = eval_weights(job, "posttrained", "post-trained, before sharing", final, val, B, T);
    rows[3] = eval_weights(job, "postshare", "plan applied to the post-trained model", &shared, val,
                           B, T);

    cJSON *root = cJSON_CreateObject();
    cJSON *models = cJSON_AddArrayToObject(root, "models");
    for (int i = 0; i < 4; i++) cJSON_AddItemToArray(models, row_json(&rows[i]));
    cJSON *s = cJSON_AddObjectToObject(root, "share");
    cJSON_AddNumberToObject(s, "ratio", ps->plan.ratio);
    cJSON_AddStringToObject(s, "match", share_match_name(ps->plan.match));
    cJSON_AddStringToObject(s, "reg_type", sh->reg_type);
    cJSON_AddNumberToObject(s, "reg_weight", ps->reg_weight);
    cJSON_AddNumberToObject(s, "lm_weight", ps->lm_weight);
    cJSON_AddStringToObject(s, "targets", sh->reg_targets);
    cJSON_AddNumberToObject(s, "pairs", ps->plan.n);
    cJSON *f = cJSON_AddObjectToObject(root, "final");
    cJSON_AddNumberToObject(f, "reg_loss", last.R);
    cJSON_AddNumberToObject(f, "cos_mean", last.cos_mean);
    cJSON_AddNumberToObject(f, "dist_mean", last.dist_mean);
    cJSON_AddNumberToObject(f, "dist_max", last.dist_max);
    char head[2048];
    snprintf(head, sizeof head,
             "Sharing %d attention units (ratio %g, match %s); post-trained with %g * LM + %g * R "
             "(%s over %s). Validation: %s, %ld tokens. bytes: the fp32 weights stored (each "
             "shared slice once); resident bytes: what evaluation holds in memory, a compact "
             "model's one-layer scratch for assembling shared layers included.",
             ps->plan.n, ps->plan.ratio, share_match_name(ps->plan.match), ps->lm_weight,
             ps->reg_weight, sh->reg_type, sh->reg_targets, job->data.val, rows[0].ev.tokens);
    write_md(run_dir, rows, 4, head);
    write_json(run_dir, root);  // last: its presence marks the run finished (sweeps)
    cJSON_Delete(root);
    save_model(run_dir, "shared", &shared);
    if (sh->materialize) {
        HostWeights mat;
        share_materialize(&shared, &mat);
        save_model(run_dir, "shared_hf", &mat);
        host_weights_free(&mat);
    }
    printf("\n%-12s %12s %12s %10s %10s\n", "model", "params", "bytes", "val loss", "val ppl");
    for (int i = 0; i < 4; i++)
        printf("%-12s %12zu %12zu %10.4f %10.3f\n", rows[i].name, rows[i].params,
               rows[i].params * sizeof(float), rows[i].ev.loss, rows[i].ev.ppl);
    printf("(results.md and results.json in %s)\n", run_dir);
    host_weights_free(&direct);
    host_weights_free(&shared);
}

void postshare_results_plain(const JobConfig *job, const char *run_dir, const HostWeights *final,
                             EvalResult ev) {
    ResultRow r = {"trained", "the trained model", final->t.total,
                   model_weight_bytes(&final->t, sizeof(float)), ev};
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "models"), row_json(&r));
    char head[1200];
    snprintf(head, sizeof head, "Validation: %s, %ld tokens.", job->data.val, ev.tokens);
    write_md(run_dir, &r, 1, head);
    write_json(run_dir, root);
    cJSON_Delete(root);
}
