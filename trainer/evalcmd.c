// evalcmd.c: `postshare eval MODEL --data GLOB [--seq-len T] [--batch-size B]
// [--batches N] [--backend NAME] [--threads N]`: token-level validation loss and
// perplexity of any model form, with the tokens counted and the time taken; and
// `postshare eval MODEL --tasks LIST ...`: zero/few-shot task accuracy as
// lm-evaluation-harness computes it (taskeval.h, docs/tasks.md).
#include "evalcmd.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "backend.h"
#include "cliargs.h"
#include "common.h"
#include "eval.h"
#include "hf_io.h"
#include "modelsrc.h"
#include "taskeval.h"
#include "train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: postshare eval MODEL --data GLOB [options]\n"
            "       postshare eval MODEL --tasks LIST [task options]\n"
            "  MODEL                hf:DIR, llama2c:FILE.bin, gguf:FILE, shared:DIR, or a path\n"
            "                       (a compact shared model from postshare share runs compact)\n"
            "  --data GLOB          token shards to evaluate on (required)\n"
            "  --seq-len T          tokens per sequence (default: min(256, max_seq_len))\n"
            "  --batch-size B       sequences per batch (default 8)\n"
            "  --batches N          batches to evaluate (default 0 = the whole set)\n"
            "  --backend NAME       cpu | cuda | auto (default auto)\n"
            "  --threads N          CPU threads (default: all)\n"
            "task options (docs/tasks.md):\n"
            "  --tasks LIST         comma-separated: piqa,arc_easy,openbookqa,boolq,hellaswag,\n"
            "                       lambada,mmlu (and tasks added with --task-config)\n"
            "  --tokenizer SPEC     the model's tokenizer (default: DIR/tokenizer.model of an\n"
            "                       HF or compact model folder when present)\n"
            "  --data-dir DIR       task data (default $POSTSHARE_EVAL_DATA or\n"
            "                       ../shared/data/eval)\n"
            "  --limit N            documents per task (per subject for mmlu); 0 = all\n"
            "  --seed S             with --limit: a random subset from seed S (default 0 =\n"
            "                       the first N, as lm-eval's --limit)\n"
            "  --num-fewshot K      mmlu only: K examples from the dev split (default 0)\n"
            "  --task-config FILE   extra JSONL tasks (query/choices/gold), see docs/tasks.md\n"
            "  --out PREFIX         write PREFIX.json and PREFIX.md\n"
            "  --samples FILE       per-document log-likelihoods (JSONL)\n"
            "  --add-bos 0|1        prepend BOS (default: for sentencepiece tokenizers, as HF's)\n"
            "  --batch-tokens N     tokens per forward batch (default: from the vocabulary)\n");
}

// The tokenizer of a model spec when none is given: DIR/tokenizer.model.
static const char *default_tokenizer(const char *model, char *buf, size_t cap) {
    const char *dir = model;
    if (!strncmp(dir, "hf:", 3) || !strncmp(dir, "shared:", 7)) dir = strchr(dir, ':') + 1;
    struct stat sb;
    snprintf(buf, cap, "%s/tokenizer.model", dir);
    return stat(buf, &sb) == 0 ? buf : NULL;
}

static int write_text(const char *path, const char *text) {
    if (ps_write_file_atomic(path, text, strlen(text)) != 0) return -1;
    return 0;
}

static int run_tasks(const char *model, const char *backend, const char *tasks,
                     const char *tok_spec, const TaskEvalOpts *o, const char *out) {
    char tbuf[2048];
    if (!tok_spec) tok_spec = default_tokenizer(model, tbuf, sizeof tbuf);
    if (!tok_spec) ps_die("eval: --tasks needs --tokenizer (no tokenizer.model beside %s)", model);
    TaskSet set;
    if (task_set_load(tasks, o, &set)) ps_die("eval: %s", ps_err_msg());
    HostWeights w;
    if (model_load_any_shared(model, &w) != 0) ps_die("%s", ps_err_msg());
    Tokenizer *tok = tok_open(tok_spec);
    if (!tok) ps_die("%s", ps_err_msg());
    if (tok->vocab_size > w.t.cfg.vocab_size)
        ps_die("eval: tokenizer %s has %d tokens but the model's vocab_size is %d", tok_spec,
               tok->vocab_size, w.t.cfg.vocab_size);
    Model M;
    model_init_table(&M, backend_get(backend), &w.t);
    model_set_forward_only(&M, 1);
    model_take_params(&M, &w.params);
    int add_bos = task_add_bos(o, tok);
    printf("model %s | %zu parameters | tokenizer %s | BOS %s | max length %d\n", model, w.t.total,
           tok_spec, add_bos ? "yes" : "no", w.t.cfg.max_seq_len);
    for (int i = 0; i < set.n_tasks; i++)
        printf("task %-10s %5d documents | %s\n", set.tasks[i].def.name, set.tasks[i].n_docs,
               set.tasks[i].def.source);
    TaskResult *res = xcalloc((size_t)set.n_tasks, sizeof(TaskResult));
    TaskEvalStats st;
    if (task_set_eval(&M, tok, &set, o, res, &st)) ps_die("eval: %s", ps_err_msg());
    task_results_md(stdout, res, set.n_tasks);
    printf("%ld requests | %ld forwards | %ld tokens scored | %.2f s | %.0f tok/s\n", st.requests,
           st.forwards, st.tokens, st.seconds, st.tokens / (st.seconds > 0 ? st.seconds : 1e-9));
    if (out) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "model", model);
        cJSON_AddStringToObject(root, "tokenizer", tok_spec);
        cJSON_AddNumberToObject(root, "limit", o->limit);
        cJSON_AddNumberToObject(root, "seed", (double)o->seed);
        cJSON_AddBoolToObject(root, "add_bos", add_bos);
        cJSON_AddItemToObject(root, "results", task_results_json(res, set.n_tasks));
        cJSON_AddNumberToObject(root, "tokens_scored", (double)st.tokens);
        cJSON_AddNumberToObject(root, "seconds", st.seconds);
        char *js = cJSON_Print(root);
        cJSON_Delete(root);
        char *jp = xmalloc(strlen(out) + 8), *mp = xmalloc(strlen(out) + 8);
        sprintf(jp, "%s.json", out);
        sprintf(mp, "%s.md", out);
        char *md = NULL;
        size_t mdlen = 0;
        FILE *mf = open_memstream(&md, &mdlen);
        fprintf(mf, "# Task evaluation of %s\n\n", model);
        task_results_md(mf, res, set.n_tasks);
        fprintf(mf, "\n%ld tokens scored in %.2f s; tokenizer %s; limit %d; seed %llu.\n",
                st.tokens, st.seconds, tok_spec, o->limit, (unsigned long long)o->seed);
        fclose(mf);
        size_t jl = strlen(js);
        js = xrealloc(js, jl + 2);
        js[jl] = '\n';
        js[jl + 1] = 0;
        if (write_text(jp, js) || write_text(mp, md)) ps_die("eval: %s", ps_err_msg());
        printf("wrote %s and %s\n", jp, mp);
        free(js);
        free(md);
        free(jp);
        free(mp);
    }
    free(res);
    task_set_free(&set);
    model_free(&M);
    tok_free(tok);
    host_weights_free(&w);
    return 0;
}

int evalcmd_main(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *backend = "auto";
    int T = 0, B = 8, batches = 0, threads = 0;
    const char *tasks = NULL, *tok_spec = NULL, *out = NULL;
    TaskEvalOpts o;
    task_eval_opts_default(&o);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--data") && has_next) {
            data = argv[++i];
        } else if (!strcmp(a, "--seq-len") && has_next) {
            T = (int)cli_int("eval", a, argv[++i], 0, 1 << 30);
        } else if (!strcmp(a, "--batch-size") && has_next) {
            B = (int)cli_int("eval", a, argv[++i], 0, 1 << 30);
        } else if (!strcmp(a, "--batches") && has_next) {
            batches = (int)cli_int("eval", a, argv[++i], 0, 1 << 30);
        } else if (!strcmp(a, "--backend") && has_next) {
            backend = argv[++i];
        } else if (!strcmp(a, "--threads") && has_next) {
            threads = (int)cli_int("eval", a, argv[++i], 0, 1 << 30);
        } else if (!strcmp(a, "--tasks") && has_next) {
            tasks = argv[++i];
        } else if (!strcmp(a, "--tokenizer") && has_next) {
            tok_spec = argv[++i];
        } else if (!strcmp(a, "--data-dir") && has_next) {
            o.data_dir = argv[++i];
        } else if (!strcmp(a, "--limit") && has_next) {
            o.limit = (int)cli_int("eval", a, argv[++i], 0, 1 << 30);
        } else if (!strcmp(a, "--seed") && has_next) {
            o.seed = (uint64_t)cli_int("eval", a, argv[++i], 0, 0x7fffffffL);
        } else if (!strcmp(a, "--num-fewshot") && has_next) {
            o.num_fewshot = (int)cli_int("eval", a, argv[++i], 0, 64);
        } else if (!strcmp(a, "--task-config") && has_next) {
            if (task_defs_load(argv[++i])) ps_die("eval: %s", ps_err_msg());
        } else if (!strcmp(a, "--out") && has_next) {
            out = argv[++i];
        } else if (!strcmp(a, "--samples") && has_next) {
            o.samples = argv[++i];
        } else if (!strcmp(a, "--add-bos") && has_next) {
            o.add_bos = (int)cli_int("eval", a, argv[++i], 0, 1);
        } else if (!strcmp(a, "--batch-tokens") && has_next) {
            o.batch_tokens = (int)cli_int("eval", a, argv[++i], 1, 1 << 30);
        } else {
            cli_positional("eval", a, &model, "MODEL");
        }
    }
    if (model && tasks && !data) {
        train_set_threads(threads);
        o.progress = 1;
        return run_tasks(model, backend, tasks, tok_spec, &o, out);
    }
    if (!model || !data || tasks) {
        usage(stderr);
        ps_die("eval: MODEL and either --data or --tasks are required");
    }
    if (B < 1) ps_die("eval: --batch-size must be >= 1");
    train_set_threads(threads);
    HostWeights w;
    if (model_load_any_shared(model, &w) != 0) ps_die("%s", ps_err_msg());
    const LlamaConfig *c = &w.t.cfg;
    if (T == 0) T = c->max_seq_len < 256 ? c->max_seq_len : 256;
    if (T > c->max_seq_len)
        ps_die("eval: --seq-len %d exceeds the model's max_seq_len %d", T, c->max_seq_len);
    Loader *L = loader_open(data, T, c->vocab_size, 0, 0);
    if (!L) ps_die("eval: %s", ps_err_msg());
    Model M;
    model_init_table(&M, backend_get(backend), &w.t);
    model_set_forward_only(&M, 1);
    model_take_params(&M, &w.params);
    EvalResult r = eval_model(&M, L, B, T, batches);
    printf("model %s | %zu parameters | data %s\n", model, w.t.total, data);
    const ShareLayout *sh = w.t.shared;
    if (sh)
        printf("compact shared model: %d of %d %s reuse another's weights (plan ratio %g)\n",
               sh->n_replaced, c->n_layers * sh->units, sh->group == 1 ? "heads" : "KV groups",
               sh->plan.ratio);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("weights %.3f MiB in %s memory | peak RSS %.1f MiB\n",
           model_weight_bytes(&M.t, M.be->act_bytes) / 1048576.0, M.be->name,
           ru.ru_maxrss / 1024.0);
    printf("val loss %.4f | perplexity %.3f | %ld tokens | %.2f s | %.0f tok/s\n", r.loss, r.ppl,
           r.tokens, r.seconds, r.tokens / (r.seconds > 0 ? r.seconds : 1e-9));
    loader_close(L);
    model_free(&M);
    host_weights_free(&w);
    return 0;
}
