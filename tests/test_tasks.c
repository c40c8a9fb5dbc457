// test_tasks.c: task evaluation (tasks.h, taskeval.h). One tiny file per data
// format: the prompts and continuations are checked against hand-written
// strings (lm-eval 0.4's templates worked out by hand: docs/tasks.md), and the
// scores against an independent computation: each (context, continuation)
// pair concatenated, truncated from the left, and run through model_forward
// WITH targets (the training cross-entropy), whose loss gives the expected
// log-likelihood; the expected acc / acc_norm / greedy follow from those.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "model.h"
#include "params.h"
#include "taskeval.h"
#include "tasks.h"
#include "test.h"

static char g_dir[4096];

static void write_file(const char *name, const char *text) {
    char *p = ps_path_join(g_dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    free(p);
}

static const char *PIQA =
    "{\"goal\": \"Open a jar\", \"sol1\": \"Twist the lid.\", \"sol2\": \"Hit it.\"}\n"
    "{\"goal\": \"Dry socks\", \"sol1\": \"Hang them up.\", \"sol2\": \"Eat them.\"}\n";
static const char *PIQA_LABELS = "1\n0\n";
static const char *HELLASWAG =
    "{\"activity_label\": \"Removing ice\", \"ctx_a\": \"A man [header] stands.\", \"ctx_b\": "
    "\"THE man\", \"endings\": [\"  scrapes [title] the car.\", \"x  y\", \"z [a] [b]c\", "
    "\"w\"], \"label\": 2}\n";
static const char *LAMBADA =
    "{\"text\": \"He said hello to Bob\"}\n{\"text\": \"aaaa aaaa aaaa aaaa aaaa\"}\n";
static const char *MINE =  // a user task: strip "Q: ", prefix "<", suffix ">"
    "{\"query\": \"Q: sky color\", \"choices\": [\"blue\", \"green\", \"a long answer\"], "
    "\"gold\": 0}\n\n"
    "{\"query\": \"Q: 0123456789012345678901234567890123456789012345678901234567890\", "
    "\"choices\": [\"yes\", \"no\"], \"gold\": 1}\n";
static const char *MINE_CFG =
    "[{\"name\": \"mine\", \"file\": \"mine.jsonl\", \"strip\": \"Q: \", \"prefix\": \"<\", "
    "\"suffix\": \">\", \"metrics\": [\"acc\", \"acc_norm\"]}]";

// Expected (ll, greedy) of one pair, independently of taskeval.c.
static double expect_ll(Model *M, const char *ctx, const char *cont, int *greedy) {
    int maxlen = M->cfg.max_seq_len, V = M->cfg.vocab_size;
    size_t cl = strlen(ctx), keep = cl;
    while (keep && ctx[keep - 1] == ' ') keep--;  // byte tokens: only the split point moves
    size_t n = cl + strlen(cont);
    int contlen = (int)(n - keep);
    unsigned char *all = xmalloc(n + 1);
    memcpy(all, ctx, cl);
    memcpy(all + cl, cont, strlen(cont));
    size_t start = n > (size_t)maxlen + 1 ? n - maxlen - 1 : 0;
    int T = (int)(n - start) - 1;
    int *tok = xmalloc(sizeof(int) * T), *tgt = xmalloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) {
        tok[t] = all[start + t];
        tgt[t] = t >= T - contlen ? all[start + t + 1] : -1;
    }
    float loss = model_forward(M, tok, tgt, 1, T);
    double ll = -(double)loss * M->n_valid;
    model_forward(M, tok, NULL, 1, T);
    float *lg = xmalloc(sizeof(float) * (size_t)T * V);
    model_get_logits(M, lg);
    *greedy = 1;
    for (int t = T - contlen; t < T; t++) {
        int am = 0;
        for (int v = 1; v < V; v++)
            if (lg[(size_t)t * V + v] > lg[(size_t)t * V + am]) am = v;
        *greedy &= am == tgt[t];
    }
    free(lg);
    free(tok);
    free(tgt);
    free(all);
    return ll;
}

static int n_chars(const char *s) {
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

// MMLU's stderr as lm-eval 0.4 aggregates the group mmlu: each category's stderr
// pools its subjects' (pooled_sample_stderr), then the categories' are pooled.
// Written out here from the formula, independently of taskeval.c.
static double pool(const double *n, const double *se, int k) {
    double num = 0, N = 0;
    int used = 0;
    for (int i = 0; i < k; i++)
        if (n[i] > 0) num += (n[i] - 1) * n[i] * se[i] * se[i], N += n[i], used++;
    return sqrt(num / (N - used) / N);  // NAN when one is NAN (lm-eval's N/A)
}

static int same(double a, double b) {
    return (isnan(a) && isnan(b)) || fabs(a - b) < 1e-12;
}

static void check_mmlu_stderr(const Task *T, const TaskResult *r, const double *acc) {
    double cn[4], cse[4];
    for (int c = 0; c < 4; c++) {
        double gn[64], gse[64], sum_c = 0;
        int k = 0;
        for (int g = 0; g < T->n_groups; g++) {
            if (T->group_cat[g] != c) continue;
            double s = 0, s2 = 0, m = 0;
            for (int d = 0; d < T->n_docs; d++)
                if (T->docs[d].group == g) s += acc[d], s2 += acc[d] * acc[d], m++;
            double var = m > 1 ? (s2 - s * s / m) / (m - 1) : 0;  // sample variance
            gn[k] = m;
            gse[k++] = m > 1 ? sqrt(var / m) : NAN;  // lm-eval: "N/A" for one document
            sum_c += s;
        }
        cn[c] = 0;
        for (int i = 0; i < k; i++) cn[c] += gn[i];
        cse[c] = cn[c] > 0 ? pool(gn, gse, k) : 0;
        T_CHECK(r->cat_n[c] == (int)cn[c], "mmlu category %d: n %d, expected %g", c, r->cat_n[c],
                cn[c]);
        if (cn[c] > 0)
            T_CHECK(fabs(r->cat_acc[c] - sum_c / cn[c]) < 1e-12 && same(r->cat_acc_se[c], cse[c]),
                    "mmlu category %d: acc %g se %g, expected %g %g", c, r->cat_acc[c],
                    r->cat_acc_se[c], sum_c / cn[c], cse[c]);
    }
    double want = pool(cn, cse, 4);
    T_CHECK(same(r->acc_se, want), "mmlu: pooled stderr %.10f, expected %.10f", r->acc_se, want);
}

// Score the task set, then check every document of every task against expect_ll.
static void check_scores(Model *M, const Tokenizer *tok, TaskSet *s, const char *samples) {
    TaskEvalOpts o;
    task_eval_opts_default(&o);
    o.samples = samples;
    o.batch_tokens = 100;  // several batches, padded rows
    TaskResult *res = xcalloc((size_t)s->n_tasks, sizeof(TaskResult));
    TaskEvalStats st;
    T_CHECK(task_set_eval(M, tok, s, &o, res, &st) == 0, "%s", ps_err_msg());
    size_t len = 0;
    char *text = ps_read_file(samples, &len);
    T_CHECK(text != NULL, "no samples file");
    char *line = text;
    for (int t = 0; t < s->n_tasks; t++) {
        const Task *T = &s->tasks[t];
        double acc = 0, accn = 0;
        double *line_acc = xcalloc((size_t)T->n_docs + 1, sizeof(double));
        for (int d = 0; d < T->n_docs; d++) {
            const TaskDoc *doc = &T->docs[d];
            char *nl = strchr(line, '\n');
            *nl = 0;
            cJSON *j = cJSON_Parse(line);
            line = nl + 1;
            const cJSON *lls = cJSON_GetObjectItem(j, "ll"), *gr = cJSON_GetObjectItem(j, "greedy");
            T_CHECK(!strcmp(cJSON_GetObjectItem(j, "task")->valuestring, T->def.name), "order");
            int pred = 0, predn = 0, g0 = 0;
            double best = -INFINITY, bestn = -INFINITY;
            for (int c = 0; c < doc->n_choices; c++) {
                int greedy = 0;
                double want = expect_ll(M, doc->context, doc->conts[c], &greedy);
                double got = cJSON_GetArrayItem(lls, c)->valuedouble;
                T_CHECK(fabs(got - want) < 1e-4, "%s doc %d choice %d: ll %.6f, expected %.6f",
                        T->def.name, d, c, got, want);
                T_CHECK(cJSON_GetArrayItem(gr, c)->valueint == greedy, "%s doc %d greedy",
                        T->def.name, d);
                const char *choice = doc->conts[c] + strlen(T->def.delim);
                if (want > best) best = want, pred = c;
                if (want / n_chars(choice) > bestn) bestn = want / n_chars(choice), predn = c;
                if (c == 0) g0 = greedy;
            }
            line_acc[d] = T->def.fmt == TASK_FMT_LAMBADA ? g0 : pred == doc->gold;
            acc += line_acc[d];
            accn += predn == doc->gold;
            cJSON_Delete(j);
        }
        int n = T->n_docs;
        T_CHECK(res[t].n == n, "%s: n", T->def.name);
        T_CHECK(fabs(res[t].acc - acc / n) < 1e-12, "%s: acc %g, expected %g", T->def.name,
                res[t].acc, acc / n);
        if (T->def.metrics & TASK_M_ACC_NORM)
            T_CHECK(fabs(res[t].acc_norm - accn / n) < 1e-12, "%s: acc_norm %g, expected %g",
                    T->def.name, res[t].acc_norm, accn / n);
        // lm-eval's mean_stderr of 0/1 values: sqrt(p (1 - p) n / (n - 1)) / sqrt(n)
        double p = acc / n, se = sqrt(p * (1 - p) * n / (n - 1)) / sqrt((double)n);
        if (n < 2)
            T_CHECK(isnan(res[t].acc_se), "%s: stderr of one document", T->def.name);
        else if (T->n_groups == 1)
            T_CHECK(fabs(res[t].acc_se - se) < 1e-12, "%s: stderr %g, expected %g", T->def.name,
                    res[t].acc_se, se);
        else
            check_mmlu_stderr(T, &res[t], line_acc);
        free(line_acc);
    }
    free(text);
    free(res);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/test_tasks_tmp", PS_BINARY_DIR);
    ps_mkdirs(g_dir);
    write_file("piqa.jsonl", PIQA);
    write_file("piqa.lst", PIQA_LABELS);
    write_file("hellaswag.jsonl", HELLASWAG);
    write_file("lambada.jsonl", LAMBADA);
    write_file("mine.jsonl", MINE);
    write_file("mine.json", MINE_CFG);
    write_file("bad.jsonl", "{\"query\": \"q\", \"choices\": [\"a\"], \"gold\": 0}\n{oops\n");
    write_file("dup.jsonl", "{\"query\": \"q\", \"choices\": [\"a\"], \"gold\": 0, \"gold\": 1}\n");
    write_file("arr.jsonl", "[1, 2]\n");
    char *cfg_path = ps_path_join(g_dir, "mine.json");
    T_CHECK(task_defs_load(cfg_path) == 0, "%s", ps_err_msg());
    EXPECT_FAIL(task_defs_load(cfg_path), "already defined");
    // all or nothing: a good row before a bad one is not added
    write_file("half.json", "[{\"name\": \"good1\", \"file\": \"mine.jsonl\"}, {\"name\": \"x\"}]");
    char *half = ps_path_join(g_dir, "half.json");
    EXPECT_FAIL(task_defs_load(half), "half.json", "needs \"name\" and \"file\"");
    T_CHECK(task_find("good1") == NULL, "a row of a rejected task file was added");
    free(half);
    free(cfg_path);

    // The built-in rows, pointed at the small files (same format, same prompt pieces).
    TaskDef piqa = *task_find("piqa"), hs = *task_find("hellaswag"), lam = *task_find("lambada");
    TaskDef mmlu = *task_find("mmlu");
    strcpy(piqa.file, "piqa.jsonl");
    strcpy(piqa.labels, "piqa.lst");
    strcpy(hs.file, "hellaswag.jsonl");
    strcpy(lam.file, "lambada.jsonl");
    snprintf(mmlu.file, sizeof mmlu.file, "%s/tests/fixtures/tasks/mmlu/mmlu.zip", PS_SOURCE_DIR);
    T_CHECK(task_find("nope") == NULL && strstr(ps_err_msg(), "piqa, arc_easy"), "unknown task");

    Task t[6];
    T_CHECK(task_load(&piqa, g_dir, 0, &t[0]) == 0, "%s", ps_err_msg());
    T_CHECK(t[0].n_docs == 2 && t[0].docs[0].gold == 1 && t[0].docs[1].gold == 0, "piqa labels");
    T_CHECK(!strcmp(t[0].docs[0].context, "Question: Open a jar\nAnswer:"), "piqa: %s",
            t[0].docs[0].context);
    T_CHECK(!strcmp(t[0].docs[0].conts[0], " Twist the lid.") &&
                !strcmp(t[0].docs[0].conts[1], " Hit it."),
            "piqa choices");

    T_CHECK(task_load(&hs, g_dir, 0, &t[1]) == 0, "%s", ps_err_msg());
    T_CHECK(!strcmp(t[1].docs[0].context, "Removing ice: A man stands. The man"), "hellaswag: %s",
            t[1].docs[0].context);
    T_CHECK(!strcmp(t[1].docs[0].conts[0], " scrapes. the car.") &&
                !strcmp(t[1].docs[0].conts[1], " x y") && !strcmp(t[1].docs[0].conts[2], " z c"),
            "hellaswag endings: '%s' '%s' '%s'", t[1].docs[0].conts[0], t[1].docs[0].conts[1],
            t[1].docs[0].conts[2]);
    T_CHECK(t[1].docs[0].gold == 2 && t[1].docs[0].choice_len[0] == 17, "hellaswag gold/len");

    T_CHECK(task_load(&lam, g_dir, 0, &t[2]) == 0, "%s", ps_err_msg());
    T_CHECK(!strcmp(t[2].docs[0].context, "He said hello to") &&
                !strcmp(t[2].docs[0].conts[0], " Bob") && t[2].docs[0].n_choices == 1,
            "lambada split: '%s' '%s'", t[2].docs[0].context, t[2].docs[0].conts[0]);

    T_CHECK(task_load(task_find("mine"), g_dir, 0, &t[3]) == 0, "%s", ps_err_msg());
    T_CHECK(t[3].n_docs == 2 && !strcmp(t[3].docs[0].context, "<sky color>") &&
                !strcmp(t[3].docs[0].conts[2], " a long answer"),
            "user task: %s", t[3].docs[0].context);

    T_CHECK(task_load(&mmlu, g_dir, 0, &t[4]) == 0, "%s", ps_err_msg());
    T_CHECK(t[4].n_docs == 7 && t[4].n_groups == 3, "mmlu: %d docs", t[4].n_docs);
    T_CHECK(t[4].group_cat[0] == 0 && t[4].group_cat[1] == 0 && t[4].group_cat[2] == 3 &&
                !strcmp(task_mmlu_category_names[3], "humanities"),
            "mmlu categories: %d %d %d", t[4].group_cat[0], t[4].group_cat[1], t[4].group_cat[2]);
    T_CHECK(task_mmlu_category("professional_law") == 3 && task_mmlu_category("virology") == 1 &&
                task_mmlu_category("sociology") == 2 && task_mmlu_category("anatomy") == 0 &&
                task_mmlu_category("cooking") == -1,
            "mmlu category table");
    T_CHECK(!strcmp(t[4].docs[0].context,
                    "The following are multiple choice questions (with answers) about anatomy.\n\n"
                    "What is x?\nA. x1\nB. x2\nC. x3\nD. x4\nAnswer:"),
            "mmlu 0-shot: %s", t[4].docs[0].context);
    T_CHECK(!strcmp(t[4].docs[1].context,
                    "The following are multiple choice questions (with answers) about anatomy.\n\n"
                    "Quoted \"q\"\nA. p\nB. q\nC. r\nD. s\nAnswer:") &&
                t[4].docs[0].gold == 2 && t[4].docs[1].gold == 0 &&
                !strcmp(t[4].docs[0].conts[3], " D"),
            "mmlu csv quoting: %s", t[4].docs[1].context);
    T_CHECK(task_load(&mmlu, g_dir, 2, &t[5]) == 0, "%s", ps_err_msg());
    T_CHECK(!strcmp(t[5].docs[2].context,
                    "The following are multiple choice questions (with answers) about high school "
                    "biology.\n\nBio dev?\nA. e\nB. f\nC. g\nD. h\nAnswer: A\n\nBio dev 2?\nA. i\n"
                    "B. j\nC. k\nD. l\nAnswer: B\n\nCells?\nA. one\nB. two\nC. three\nD. four\n"
                    "Answer:"),
            "mmlu 2-shot: %s", t[5].docs[2].context);
    T_CHECK(!strncmp(t[5].docs[1].context + strlen("The following are multiple choice questions "
                                                   "(with answers) about anatomy.\n\n"),
                     "Dev one?\nA. a1\nB. b1\nC. c1\nD. d1\nAnswer: B\n\nDev\ntwo?\nA. a2\nB. b2, "
                     "with comma\nC. c2",
                     60),
            "mmlu dev quoting: %s", t[5].docs[1].context);
    Task bad;
    EXPECT_FAIL(task_load(&mmlu, g_dir, 3, &bad), "anatomy_dev.csv", "fewer than --num-fewshot 3");
    {  // lying zips: a member claiming 2 GiB uncompressed; a name running past the end
        size_t zl = 0;
        unsigned char *z = (unsigned char *)ps_read_file(mmlu.file, &zl);
        T_CHECK(z != NULL, "read %s", mmlu.file);
        unsigned char *cd = NULL;
        const char *member = "data/test/anatomy_test.csv";  // its central directory entry
        for (size_t i = 0; i + 46 + strlen(member) <= zl && !cd; i++)
            if (!memcmp(z + i, "PK\x01\x02", 4) && !memcmp(z + i + 46, member, strlen(member)))
                cd = z + i;
        T_CHECK(cd != NULL, "no central directory in the fixture zip");
        TaskDef lie = mmlu;
        snprintf(lie.file, sizeof lie.file, "%.900s/lie.zip", g_dir);
        unsigned char save = cd[27];
        cd[27] = 0x7f;  // uncompressed size (offset 24, little-endian) |= 0x7f000000
        T_CHECK(ps_write_file_atomic(lie.file, z, zl) == 0, "write lie.zip");
        EXPECT_FAIL(task_load(&lie, g_dir, 0, &bad), "lie.zip", "over the 64 MiB limit");
        cd[27] = save;
        cd[28] = 0xff, cd[29] = 0xff;  // name length 65535
        T_CHECK(ps_write_file_atomic(lie.file, z, zl) == 0, "write lie.zip");
        EXPECT_FAIL(task_load(&lie, g_dir, 0, &bad), "lie.zip", "runs past the end");
        free(z);
    }
    EXPECT_FAIL(task_load(&piqa, g_dir, 1, &bad), "only supported for mmlu");
    TaskDef badd = *task_find("mine");
    strcpy(badd.file, "bad.jsonl");
    EXPECT_FAIL(task_load(&badd, g_dir, 0, &bad), "bad.jsonl:2", "not valid JSON");
    strcpy(badd.file, "nonstr.jsonl");  // a choice that is not a string (was a double free)
    write_file("nonstr.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", 2], \"gold\": 0}\n");
    EXPECT_FAIL(task_load(&badd, g_dir, 0, &bad), "nonstr.jsonl:1", "\"choices\": [str, ...]");
    strcpy(badd.file, "dup.jsonl");
    EXPECT_FAIL(task_load(&badd, g_dir, 0, &bad), "dup.jsonl:1", "duplicate key");
    strcpy(badd.file, "arr.jsonl");
    EXPECT_FAIL(task_load(&badd, g_dir, 0, &bad), "arr.jsonl:1", "not a JSON object");
    strcpy(badd.file, "missing.jsonl");
    EXPECT_FAIL(task_load(&badd, g_dir, 0, &bad), "missing.jsonl", "--data-dir");

    // Subsets: the first N (lm-eval's --limit), per subject for mmlu; a seeded one.
    Task sub;
    T_CHECK(task_load(&mmlu, g_dir, 0, &sub) == 0, "%s", ps_err_msg());
    task_subset(&sub, 1, 0);
    T_CHECK(sub.n_docs == 3 && sub.docs[0].index == 0 && sub.docs[1].group == 1 &&
                sub.docs[2].group == 2,
            "mmlu limit");
    task_free(&sub);
    T_CHECK(task_load(&mmlu, g_dir, 0, &sub) == 0, "%s", ps_err_msg());
    int picked[2] = {0, 0};
    for (uint64_t seed = 1; seed <= 20; seed++) {
        Task s2;
        task_load(&mmlu, g_dir, 0, &s2);
        task_subset(&s2, 1, seed);
        picked[s2.docs[0].index]++;
        task_free(&s2);
    }
    T_CHECK(picked[0] > 0 && picked[1] > 0, "seeded subsets vary: %d %d", picked[0], picked[1]);
    task_free(&sub);

    // Scores: a random model over bytes, max length 40 (the long user query is truncated).
    LlamaConfig c = {.dim = 32,
                     .n_layers = 2,
                     .n_heads = 4,
                     .n_kv_heads = 2,
                     .ffn_dim = 40,
                     .vocab_size = 256,
                     .max_seq_len = 40,
                     .rope_theta = 10000.0f,
                     .norm_eps = 1e-5f};
    Model M;
    model_init(&M, backend_get("cpu"), &c);
    ParamTable pt;
    param_table_build(&pt, &c);
    float *w = xmalloc(sizeof(float) * pt.total);
    param_init_random(&pt, w, 7, 0.5f);
    model_set_params(&M, w);
    Tokenizer *tok = tok_open("byte");
    TaskSet s = {6, t};
    char *samples = ps_path_join(g_dir, "samples.jsonl");
    check_scores(&M, tok, &s, samples);
    // The task table front end: names, limit, duplicates.
    TaskSet s2;
    TaskEvalOpts o;
    task_eval_opts_default(&o);
    o.data_dir = g_dir;
    o.limit = 1;
    T_CHECK(task_set_load("mine", &o, &s2) == 0 && s2.n_tasks == 1 && s2.tasks[0].n_docs == 1, "%s",
            ps_err_msg());
    task_set_free(&s2);
    EXPECT_FAIL(task_set_load("mine,mine", &o, &s2), "listed twice");
    EXPECT_FAIL(task_set_load("mine,bogus", &o, &s2), "unknown task 'bogus'");
    for (int i = 0; i < 6; i++) task_free(&t[i]);
    free(samples);
    free(w);
    param_table_free(&pt);
    tok_free(tok);
    model_free(&M);
    return t_summary();
}
