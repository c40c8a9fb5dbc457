// inspect.c: `postshare inspect CKPT [--config] [--plan]`: what a checkpoint
// holds (step, model, data position, RNG states, config and plan summaries,
// tensor list) and whether every checksum verifies. Exit 0 when the whole file
// reads back intact, 1 otherwise.
#include "inspect.h"

#include <cjson/cJSON.h>
#include <string.h>

#include "checkpoint.h"
#include "cliargs.h"
#include "common.h"
#include "job.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: postshare inspect CKPT.h5 [--config] [--plan]\n"
            "  Prints a checkpoint's step, model, data position, RNG states, a summary of its\n"
            "  config and sharing plan, and its tensors, reading every tensor back to verify\n"
            "  its checksums. Exit status 0 when the file is intact, 1 when it is not.\n"
            "  --config   also print the whole resolved job config (YAML)\n"
            "  --plan     also print the whole sharing plan (JSON)\n");
}

static void print_config_summary(const char *yaml, const char *path) {
    JobConfig j;
    if (job_load_string(yaml, path, 0, NULL, &j)) {
        printf("config: does not load: %s\n", ps_err_msg());
        return;
    }
    printf("config: run %s | model.init %s | seed %d\n", j.run.name, j.model.init, j.run.seed);
    printf("        data.train %s | seq_len %d x batch %d x grad_accum %d | shuffle %s\n",
           j.data.train, j.data.seq_len, j.data.batch_size, j.train.grad_accum,
           j.data.shuffle ? "on" : "off");
    printf("        steps %d | lr %g -> %g, warmup %d | weight_decay %g | clip %g\n", j.train.steps,
           j.train.lr, j.train.min_lr, j.train.warmup, j.train.weight_decay, j.train.clip);
    printf("        checkpoint every %d, keep %d, keep_every %d, final %s\n", j.checkpoint.every,
           j.checkpoint.keep, j.checkpoint.keep_every, j.checkpoint.final ? "on" : "off");
}

// The plan is opaque JSON here: summarize its top-level members.
static void print_plan_summary(const char *json) {
    if (!json) {
        printf("plan: none\n");
        return;
    }
    cJSON *root = cJSON_Parse(json);
    printf("plan: %zu bytes of JSON", strlen(json));
    if (!root) {
        printf(" (does not parse)\n");
        return;
    }
    const cJSON *it;
    const char *sep = ":";
    cJSON_ArrayForEach(it, root) {
        if (!it->string) continue;
        printf("%s %s", sep, it->string);
        if (cJSON_IsArray(it))
            printf(" [%d items]", cJSON_GetArraySize(it));
        else if (cJSON_IsObject(it))
            printf(" {%d keys}", cJSON_GetArraySize(it));
        else if (cJSON_IsNumber(it))
            printf(" %g", it->valuedouble);
        else if (cJSON_IsString(it))
            printf(" \"%.40s\"", it->valuestring);
        sep = ",";
    }
    printf("\n");
    cJSON_Delete(root);
}

typedef struct {
    int datasets, bad;
    const char *errs[3];  // this tensor's problems, by dataset
    char buf[3][512];
    int k;
} Verify;

// ckpt_read reports master, adam_m, adam_v of each tensor in turn: one line
// per tensor after its last dataset.
static void on_tensor(void *ctx, const ParamEntry *e, const char *dataset, const char *err) {
    Verify *v = ctx;
    v->datasets++;
    v->errs[v->k] = NULL;
    if (err) {
        v->bad++;
        snprintf(v->buf[v->k], sizeof v->buf[v->k], "%s", err);
        v->errs[v->k] = v->buf[v->k];
    }
    (void)dataset;
    if (++v->k < 3) return;
    v->k = 0;
    char shape[48];
    if (e->ndim == 1)
        snprintf(shape, sizeof shape, "[%lld]", (long long)e->shape[0]);
    else
        snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)e->shape[0],
                 (long long)e->shape[1]);
    int ok = !v->errs[0] && !v->errs[1] && !v->errs[2];
    printf("  %-48s %-14s %s\n", e->name, shape, ok ? "ok" : "DAMAGED");
    for (int k = 0; k < 3; k++)
        if (v->errs[k]) printf("      %s\n", v->errs[k]);
}

int inspect_main(int argc, char **argv) {
    const char *path = NULL;
    int show_config = 0, show_plan = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--config")) {
            show_config = 1;
        } else if (!strcmp(argv[i], "--plan")) {
            show_plan = 1;
        } else {
            cli_positional("inspect", argv[i], &path, "checkpoint");
        }
    }
    if (!path) {
        usage(stderr);
        ps_die("inspect: no checkpoint given");
    }
    CkptMeta m;
    LlamaConfig c;
    if (ckpt_read_meta(path, &m, &c)) ps_die("inspect: %s", ps_err_msg());
    printf("checkpoint %s | format %d | written by postshare %s at %s\n", path, m.format_version,
           m.program_version, m.created);
    printf("step %lld | %lld tokens seen | last lr %.3e | AdamW step %lld | %.1f s of training\n",
           (long long)m.step, (long long)m.tokens_seen, m.lr, (long long)m.optim_t, m.elapsed_s);
    printf("model: L%d C%d heads %d/%d F%d V%d max_seq_len %d rope_theta %g norm_eps %g%s\n",
           c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.ffn_dim, c.vocab_size, c.max_seq_len,
           c.rope_theta, c.norm_eps, c.tie_embeddings ? " | tied embeddings" : "");
    printf(
        "data: next sample %llu (epoch %llu, %s at token %lld) | %llu windows per epoch | "
        "shuffle %s, seed %llu\n",
        (unsigned long long)m.loader.sample, (unsigned long long)m.epoch, m.shard,
        (long long)m.shard_offset, (unsigned long long)m.loader.n_windows, m.shuffle ? "on" : "off",
        (unsigned long long)m.loader.seed);
    if (m.world_size > 0)
        printf("data parallel: written by %d rank(s) | global batch %lld sequences per step\n",
               m.world_size, (long long)m.global_batch);
    printf("rng:");
    for (int i = 0; i < m.n_rng; i++)
        printf(" %s=%llu", m.rng[i].name, (unsigned long long)m.rng[i].state);
    printf("\n");
    print_config_summary(m.config_yaml, path);
    print_plan_summary(m.plan_json);
    if (show_config) printf("---- config ----\n%s", m.config_yaml);
    if (show_plan && m.plan_json) printf("---- plan ----\n%s\n", m.plan_json);
    ckpt_meta_free(&m);

    printf("tensors (master, adam_m, adam_v):\n");
    Verify v;
    memset(&v, 0, sizeof v);
    CkptReadOpts o = {.optim = 1, .each = on_tensor, .ctx = &v};
    Checkpoint ck;
    CkptIoStats st = {0};
    int rc = ckpt_read(path, &ck, &o, &st);
    if (rc == 0) {
        printf("verified: %d datasets, every checksum ok (%.1f MB in %.2f s)\n", v.datasets,
               st.bytes / 1e6, st.seconds);
        ckpt_free(&ck);
        return 0;
    }
    fflush(stdout);
    fprintf(stderr, "postshare: error: inspect: %s\n", ps_err_msg());
    return 1;
}
