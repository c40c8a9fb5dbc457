// taskeval.c: log-likelihood scoring of tasks and their metrics (see taskeval.h).
#include "taskeval.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

const char *task_default_data_dir(void) {
    const char *e = getenv("POSTSHARE_EVAL_DATA");
    return e && *e ? e : "../shared/data/eval";
}

int task_add_bos(const TaskEvalOpts *o, const Tokenizer *tok) {
    // HF's LLaMA sentencepiece tokenizers add <s>; byte and GPT-2 style BPE ones add nothing
    return o->add_bos >= 0 ? o->add_bos : tok->kind == TOK_SPM && tok->bos_id >= 0;
}

void task_eval_opts_default(TaskEvalOpts *o) {
    memset(o, 0, sizeof *o);
    o->data_dir = task_default_data_dir();
    o->add_bos = -1;
}

int task_set_load(const char *tasks_csv, const TaskEvalOpts *o, TaskSet *s) {
    memset(s, 0, sizeof *s);
    char *list = xstrdup(tasks_csv);
    int rc = 0;
    for (char *save = NULL, *name = strtok_r(list, ",", &save); name;
         name = strtok_r(NULL, ",", &save)) {
        while (*name == ' ') name++;
        if (!*name) continue;
        const TaskDef *d = task_find(name);
        if (!d) {
            rc = -1;
            break;
        }
        for (int i = 0; i < s->n_tasks; i++)
            if (!strcmp(s->tasks[i].def.name, name)) {
                rc = ps_err_set("task '%s' is listed twice", name);
                break;
            }
        if (rc) break;
        Task t;
        if (task_load(d, o->data_dir, o->num_fewshot, &t)) {
            rc = -1;
            break;
        }
        task_subset(&t, o->limit, o->seed);
        s->tasks = xrealloc(s->tasks, sizeof(Task) * (size_t)(s->n_tasks + 1));
        s->tasks[s->n_tasks++] = t;
    }
    free(list);
    if (!rc && s->n_tasks == 0) rc = ps_err_set("no task named in '%s'", tasks_csv);
    if (rc) task_set_free(s);
    return rc;
}

void task_set_free(TaskSet *s) {
    for (int i = 0; i < s->n_tasks; i++) task_free(&s->tasks[i]);
    free(s->tasks);
    memset(s, 0, sizeof *s);
}

// ---------------------------------------------------------------------------
// Requests: one per (document, choice).
typedef struct {
    int *tok;     // context + continuation tokens, truncated to the last max_len + 1
    int n;        // tokens in tok (the input is tok[0 .. n-2])
    int contlen;  // continuation tokens (the last contlen of tok)
    double ll;
    int greedy;
} Req;

// Encode text (BOS when add_bos): lm-eval's tok_encode.
static int *enc(const Tokenizer *tok, const char *s, size_t len, int add_bos, size_t *n) {
    return tok_encode(tok, s, len, add_bos, n);
}

// HFLM._encode_pair + the truncation of _loglikelihood_tokens.
static void make_request(const Tokenizer *tok, int add_bos, int max_len, const char *ctx,
                         const char *cont, const int *ctx_enc_cached, size_t n_ctx_cached, Req *r) {
    size_t cl = strlen(ctx), keep = cl;
    while (keep > 0 && (ctx[keep - 1] == ' ' || ctx[keep - 1] == '\t' || ctx[keep - 1] == '\n' ||
                        ctx[keep - 1] == '\r' || ctx[keep - 1] == '\v' || ctx[keep - 1] == '\f'))
        keep--;
    size_t contn = strlen(cont);
    char *whole = xmalloc(cl + contn + 1);
    memcpy(whole, ctx, cl);
    memcpy(whole + cl, cont, contn + 1);
    size_t nw = 0, nc = n_ctx_cached;
    int *w, *c;
    if (keep == 0) {  // empty context: the prefix token, then enc(continuation)
        int prefix = tok->bos_id >= 0 ? tok->bos_id : tok->eos_id;
        CHECK(prefix >= 0, "an empty context needs a BOS or EOS token in the tokenizer");
        size_t ncont = 0;
        int *ce = enc(tok, whole, cl + contn, 0, &ncont);
        w = xmalloc(sizeof(int) * (ncont + 1));
        w[0] = prefix;
        memcpy(w + 1, ce, sizeof(int) * ncont);
        free(ce);
        nw = ncont + 1;
        nc = 1;
    } else {
        w = enc(tok, whole, cl + contn, add_bos, &nw);
        if (!ctx_enc_cached) {
            c = enc(tok, ctx, keep, add_bos, &nc);
            free(c);
        }
    }
    free(whole);
    int contlen = nw > nc ? (int)(nw - nc) : 0;
    size_t start = nw > (size_t)max_len + 1 ? nw - (size_t)max_len - 1 : 0;
    r->n = (int)(nw - start);
    r->tok = xmalloc(sizeof(int) * (size_t)(r->n ? r->n : 1));
    memcpy(r->tok, w + start, sizeof(int) * (size_t)r->n);
    r->contlen = contlen < r->n ? contlen : r->n - 1;
    free(w);
}

// Sort: longest input first, then by tokens (so identical inputs are adjacent).
static const Req *g_reqs;
static int cmp_req(const void *a, const void *b) {
    const Req *x = &g_reqs[*(const int *)a], *y = &g_reqs[*(const int *)b];
    if (x->n != y->n) return y->n - x->n;
    for (int i = 0; i < x->n - 1; i++)
        if (x->tok[i] != y->tok[i]) return x->tok[i] < y->tok[i] ? -1 : 1;
    return 0;
}
static int same_input(const Req *x, const Req *y) {
    return x->n == y->n && !memcmp(x->tok, y->tok, sizeof(int) * (size_t)(x->n - 1));
}

static void fmt_dur(char *buf, size_t cap, double s) {
    if (s < 0 || !isfinite(s)) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else
        snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
}

// Score every request: the forwards, batched.
static void score_requests(Model *M, Req *R, long nr, int batch_tokens, int progress,
                           TaskEvalStats *st) {
    int V = M->cfg.vocab_size;
    int *order = xmalloc(sizeof(int) * (size_t)(nr ? nr : 1));
    long n_in = 0;
    for (long i = 0; i < nr; i++) {
        if (R[i].contlen <= 0 || R[i].n < 2) {  // nothing to score: probability 1
            R[i].ll = 0.0;
            R[i].greedy = 1;
            continue;
        }
        order[n_in++] = (int)i;
    }
    g_reqs = R;
    qsort(order, (size_t)n_in, sizeof(int), cmp_req);
    // distinct inputs: [ustart[u], ustart[u+1]) of order share one input
    long *ustart = xmalloc(sizeof(long) * (size_t)(n_in + 1)), nu = 0;
    long total_tokens = 0;
    for (long i = 0; i < n_in; i++)
        if (i == 0 || !same_input(&R[order[i - 1]], &R[order[i]])) {
            ustart[nu++] = i;
            total_tokens += R[order[i]].n - 1;
        }
    ustart[nu] = n_in;
    int Tmax = nu ? R[order[0]].n - 1 : 1;
    if (batch_tokens <= 0) {  // keep the host logits near 128 MiB
        long b = (32L << 20) / V;
        batch_tokens = (int)(b < 256 ? 256 : b > 4096 ? 4096 : b);
    }
    int Bmax = batch_tokens / (Tmax > 0 ? Tmax : 1);
    if (Bmax < 1) Bmax = 1;
    int *tokens = xmalloc(sizeof(int) * (size_t)Bmax * Tmax);
    float *logits = xmalloc(sizeof(float) * (size_t)Bmax * Tmax * V);
    double t0 = ps_now(), last = t0;
    long done_tokens = 0;
    int tty = isatty(fileno(stderr));  // a terminal: one line redrawn; a log: a line per 10 s
    for (long u = 0; u < nu;) {
        int T = R[order[ustart[u]]].n - 1;  // longest of this batch (sorted)
        int B = batch_tokens / T;
        if (B < 1) B = 1;
        if (B > Bmax) B = Bmax;
        if (B > nu - u) B = (int)(nu - u);
        for (int b = 0; b < B; b++) {
            const Req *r = &R[order[ustart[u + b]]];
            int n = r->n - 1;
            memcpy(tokens + (size_t)b * T, r->tok, sizeof(int) * (size_t)n);
            for (int t = n; t < T; t++) tokens[(size_t)b * T + t] = 0;  // right padding
            done_tokens += n;
        }
        model_forward(M, tokens, NULL, B, T);
        model_get_logits(M, logits);
        for (int b = 0; b < B; b++)
            for (long k = ustart[u + b]; k < ustart[u + b + 1]; k++) {
                Req *r = &R[order[k]];
                double ll = 0.0;
                int greedy = 1;
                for (int j = 0; j < r->contlen; j++) {
                    int pos = r->n - 1 - r->contlen + j, target = r->tok[pos + 1];
                    const float *l = logits + ((size_t)b * T + pos) * V;
                    int am = 0;
                    float mx = l[0];
                    for (int v = 1; v < V; v++)
                        if (l[v] > mx) mx = l[v], am = v;
                    double s = 0.0;
                    for (int v = 0; v < V; v++) s += exp((double)l[v] - mx);
                    ll += (double)l[target] - mx - log(s);
                    greedy &= am == target;
                }
                r->ll = ll;
                r->greedy = greedy;
            }
        u += B;
        st->forwards += B;
        double now = ps_now();
        if (progress && (now - last > (tty ? 0.5 : 10.0) || u == nu)) {
            last = now;
            double rate = done_tokens / (now - t0 > 1e-9 ? now - t0 : 1e-9);
            char eta[32];
            fmt_dur(eta, sizeof eta, (total_tokens - done_tokens) / (rate > 0 ? rate : 1));
            fprintf(stderr, "%s[eval] %ld/%ld inputs | %ld/%ld tokens | %.0f tok/s | ETA %s%s",
                    tty ? "\r" : "", u, nu, done_tokens, total_tokens, rate, eta,
                    tty && u < nu ? "   " : "\n");
        }
    }
    st->tokens += done_tokens;
    free(tokens);
    free(logits);
    free(ustart);
    free(order);
}

// ---------------------------------------------------------------------------
// Metrics.
static double mean_of(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return n ? s / n : NAN;
}
// lm-eval's mean_stderr: sample stddev (n - 1) / sqrt(n).
static double mean_stderr(const double *x, int n) {
    if (n < 2) return NAN;
    double mu = mean_of(x, n), s = 0;
    for (int i = 0; i < n; i++) s += (x[i] - mu) * (x[i] - mu);
    return sqrt(s / (n - 1)) / sqrt((double)n);
}
// Bootstrap stderr of exp(-mean(ll)) (lm-eval: bootstrap_stderr, 100000 resamples).
static double ppl_bootstrap_stderr(const double *ll, int n, int iters) {
    if (n < 2) return NAN;
    Rng rng;
    rng_seed(&rng, 1234);
    double *res = xmalloc(sizeof(double) * (size_t)iters);
    for (int it = 0; it < iters; it++) {
        double s = 0;
        for (int i = 0; i < n; i++) s += ll[rng_u64(&rng) % (uint64_t)n];
        res[it] = exp(-s / n);
    }
    double se = mean_stderr(res, iters) * sqrt((double)iters);  // sample stddev of res
    free(res);
    return se;
}

// lm-eval's pooled_sample_stderr of groups of sizes n[g] with stderrs se[g]:
// sqrt(sum (n_g - 1) n_g se_g^2 / (N - G) / N). Groups with n_g = 0 are skipped;
// one without a stderr (a single document: lm-eval's "N/A") makes the pooled
// one N/A too, as lm-eval's group aggregation does.
static double pooled_stderr(const int *n, const double *se, int G) {
    double num = 0;
    long N = 0;
    int used = 0;
    for (int g = 0; g < G; g++) {
        if (n[g] == 0) continue;
        if (isnan(se[g])) return NAN;
        num += (double)(n[g] - 1) * se[g] * se[g] * n[g];
        N += n[g];
        used++;
    }
    return N > used ? sqrt(num / (double)(N - used) / (double)N) : NAN;
}

// MMLU as lm-eval aggregates it: acc is the mean over all questions (weight_by_size);
// its stderr pools the subjects' stderrs within each category (mmlu_stem, ...),
// then pools the four categories' (the group mmlu's aggregation of its subgroups).
static void pool_mmlu_stderr(const Task *T, const double *acc, TaskResult *r) {
    int n = T->n_docs, G = T->n_groups;
    double *x = xmalloc(sizeof(double) * (size_t)(n + 1));
    int *gn = xcalloc((size_t)G, sizeof(int));
    double *gse = xmalloc(sizeof(double) * (size_t)G);
    for (int g = 0; g < G; g++) {
        int m = 0;
        for (int d = 0; d < n; d++)
            if (T->docs[d].group == g) x[m++] = acc[d];
        gn[g] = m;
        gse[g] = mean_stderr(x, m);
    }
    int cn[TASK_MMLU_CATEGORIES] = {0};
    double cse[TASK_MMLU_CATEGORIES];
    for (int c = 0; c < TASK_MMLU_CATEGORIES; c++) {
        int m = 0;
        for (int d = 0; d < n; d++)
            if (T->group_cat[T->docs[d].group] == c) x[m++] = acc[d];
        // the category's subjects: their sizes and stderrs (others masked to size 0)
        int *sn = xcalloc((size_t)G, sizeof(int));
        for (int g = 0; g < G; g++) sn[g] = T->group_cat[g] == c ? gn[g] : 0;
        cn[c] = m;
        cse[c] = pooled_stderr(sn, gse, G);
        r->cat_n[c] = m;
        r->cat_acc[c] = m ? mean_of(x, m) : NAN;
        r->cat_acc_se[c] = cse[c];
        free(sn);
    }
    r->acc_se = pooled_stderr(cn, cse, TASK_MMLU_CATEGORIES);
    free(x);
    free(gn);
    free(gse);
}

int task_set_eval(Model *M, const Tokenizer *tok, const TaskSet *s, const TaskEvalOpts *o,
                  TaskResult *res, TaskEvalStats *st_out) {
    TaskEvalStats st = {0};
    double t0 = ps_now();
    int add_bos = task_add_bos(o, tok);
    int max_len = M->cfg.max_seq_len;
    long nr = 0;
    for (int t = 0; t < s->n_tasks; t++)
        for (int d = 0; d < s->tasks[t].n_docs; d++) nr += s->tasks[t].docs[d].n_choices;
    Req *R = xcalloc((size_t)(nr ? nr : 1), sizeof(Req));
    long k = 0;
    for (int t = 0; t < s->n_tasks; t++)
        for (int d = 0; d < s->tasks[t].n_docs; d++) {
            const TaskDoc *doc = &s->tasks[t].docs[d];
            // the context part: enc(context without trailing whitespace), shared by the choices
            size_t cl = strlen(doc->context), keep = cl, nc = 0;
            while (keep > 0 && strchr(" \t\n\r\v\f", doc->context[keep - 1])) keep--;
            int *ce = keep ? enc(tok, doc->context, keep, add_bos, &nc) : NULL;
            for (int c = 0; c < doc->n_choices; c++)
                make_request(tok, add_bos, max_len, doc->context, doc->conts[c], ce ? ce : NULL, nc,
                             &R[k++]);
            free(ce);
        }
    st.requests = nr;
    score_requests(M, R, nr, o->batch_tokens, o->progress, &st);

    FILE *sf = NULL;
    if (o->samples && !(sf = fopen(o->samples, "w"))) {
        for (long i = 0; i < nr; i++) free(R[i].tok);
        free(R);
        return ps_err_set("cannot write the samples file %s", o->samples);
    }
    k = 0;
    for (int t = 0; t < s->n_tasks; t++) {
        const Task *T = &s->tasks[t];
        TaskResult *r = &res[t];
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "%s", T->def.name);
        r->n = T->n_docs;
        r->shots = T->num_fewshot;
        r->metrics = T->def.metrics;
        double *acc = xmalloc(sizeof(double) * (size_t)(T->n_docs + 1));
        double *accn = xmalloc(sizeof(double) * (size_t)(T->n_docs + 1));
        double *ll1 = xmalloc(sizeof(double) * (size_t)(T->n_docs + 1));
        for (int d = 0; d < T->n_docs; d++) {
            const TaskDoc *doc = &T->docs[d];
            const Req *q = &R[k];
            int pred = 0, predn = 0;
            for (int c = 1; c < doc->n_choices; c++) {  // np.argmax: the first maximum
                if (q[c].ll > q[pred].ll) pred = c;
                if (q[c].ll / doc->choice_len[c] > q[predn].ll / doc->choice_len[predn]) predn = c;
            }
            if (T->def.fmt == TASK_FMT_LAMBADA)
                acc[d] = q[0].greedy;
            else
                acc[d] = pred == doc->gold;
            accn[d] = predn == doc->gold;
            ll1[d] = q[0].ll;
            if (sf) {
                fprintf(
                    sf,
                    "{\"task\": \"%s\", \"doc\": %d, \"group\": \"%s\", \"gold\": %d, \"ll\": [",
                    T->def.name, doc->index, T->group_names[doc->group], doc->gold);
                for (int c = 0; c < doc->n_choices; c++)
                    fprintf(sf, "%s%.17g", c ? ", " : "", q[c].ll);
                fprintf(sf, "], \"greedy\": [");
                for (int c = 0; c < doc->n_choices; c++)
                    fprintf(sf, "%s%d", c ? ", " : "", q[c].greedy);
                fprintf(sf, "], \"chars\": [");
                for (int c = 0; c < doc->n_choices; c++)
                    fprintf(sf, "%s%d", c ? ", " : "", doc->choice_len[c]);
                fprintf(sf, "], \"tokens\": [");
                for (int c = 0; c < doc->n_choices; c++)
                    fprintf(sf, "%s%d", c ? ", " : "", q[c].contlen);
                fprintf(sf, "], \"acc\": %g, \"acc_norm\": %g}\n", acc[d], accn[d]);
            }
            k += doc->n_choices;
        }
        int n = T->n_docs;
        r->acc = mean_of(acc, n);
        r->acc_se = mean_stderr(acc, n);
        r->acc_norm = mean_of(accn, n);
        r->acc_norm_se = mean_stderr(accn, n);
        if (T->def.metrics & TASK_M_PPL) {
            double m = mean_of(ll1, n);
            r->ppl = exp(-m);
            r->ppl_se = ppl_bootstrap_stderr(ll1, n, 100000);
        }
        if (T->def.fmt == TASK_FMT_MMLU) pool_mmlu_stderr(T, acc, r);
        free(acc);
        free(accn);
        free(ll1);
    }
    if (sf) fclose(sf);
    for (long i = 0; i < nr; i++) free(R[i].tok);
    free(R);
    st.seconds = ps_now() - t0;
    if (st_out) *st_out = st;
    return 0;
}

// ---------------------------------------------------------------------------
// Output.
static void json_num(cJSON *o, const char *k, double v) {
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

cJSON *task_results_json(const TaskResult *r, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "task", r[i].name);
        cJSON_AddNumberToObject(o, "n", r[i].n);
        cJSON_AddNumberToObject(o, "num_fewshot", r[i].shots);
        if (r[i].metrics & TASK_M_ACC) {
            json_num(o, "acc", r[i].acc);
            json_num(o, "acc_stderr", r[i].acc_se);
        }
        if (r[i].metrics & TASK_M_ACC_NORM) {
            json_num(o, "acc_norm", r[i].acc_norm);
            json_num(o, "acc_norm_stderr", r[i].acc_norm_se);
        }
        if (r[i].metrics & TASK_M_PPL) {
            json_num(o, "perplexity", r[i].ppl);
            json_num(o, "perplexity_stderr", r[i].ppl_se);
        }
        int has_cat = 0;
        for (int c = 0; c < TASK_MMLU_CATEGORIES; c++) has_cat |= r[i].cat_n[c] > 0;
        if (has_cat) {  // mmlu: lm-eval's mmlu_stem, mmlu_other, ... rows
            cJSON *cats = cJSON_AddObjectToObject(o, "categories");
            for (int c = 0; c < TASK_MMLU_CATEGORIES; c++) {
                cJSON *co = cJSON_AddObjectToObject(cats, task_mmlu_category_names[c]);
                cJSON_AddNumberToObject(co, "n", r[i].cat_n[c]);
                json_num(co, "acc", r[i].cat_acc[c]);
                json_num(co, "acc_stderr", r[i].cat_acc_se[c]);
            }
        }
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

const char *task_fmt_value(char *buf, size_t cap, double v, double se) {
    if (!isfinite(v))
        snprintf(buf, cap, "N/A");
    else if (!isfinite(se))
        snprintf(buf, cap, "%.4f", v);
    else
        snprintf(buf, cap, "%.4f ± %.4f", v, se);
    return buf;
}

void task_results_md(FILE *f, const TaskResult *r, int n) {
    fprintf(f, "| task | n | shots | acc | acc_norm | perplexity |\n|---|---|---|---|---|---|\n");
    for (int i = 0; i < n; i++) {
        char a[64] = "", b[64] = "", c[64] = "";
        if (r[i].metrics & TASK_M_ACC) task_fmt_value(a, sizeof a, r[i].acc, r[i].acc_se);
        if (r[i].metrics & TASK_M_ACC_NORM)
            task_fmt_value(b, sizeof b, r[i].acc_norm, r[i].acc_norm_se);
        if (r[i].metrics & TASK_M_PPL) task_fmt_value(c, sizeof c, r[i].ppl, r[i].ppl_se);
        fprintf(f, "| %s | %d | %d | %s | %s | %s |\n", r[i].name, r[i].n, r[i].shots, a, b, c);
        for (int k = 0; k < TASK_MMLU_CATEGORIES; k++)  // mmlu: its categories, as lm-eval prints
            if (r[i].cat_n[k] > 0)
                fprintf(f, "| - %s | %d | %d | %s | | |\n", task_mmlu_category_names[k],
                        r[i].cat_n[k], r[i].shots,
                        task_fmt_value(a, sizeof a, r[i].cat_acc[k], r[i].cat_acc_se[k]));
    }
}

int task_result_columns(const TaskResult *r, int n, char (*names)[80], double *vals, int max) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        static const struct {
            int bit;
            const char *suffix;
            size_t off;
        } M[] = {{TASK_M_ACC, "acc", offsetof(TaskResult, acc)},
                 {TASK_M_ACC_NORM, "acc_norm", offsetof(TaskResult, acc_norm)},
                 {TASK_M_PPL, "ppl", offsetof(TaskResult, ppl)}};
        for (int m = 0; m < 3; m++) {
            if (!(r[i].metrics & M[m].bit)) continue;
            if (k < max) {
                snprintf(names[k], 80, "%s.%s", r[i].name, M[m].suffix);
                vals[k] = *(const double *)((const char *)&r[i] + M[m].off);
            }
            k++;
        }
    }
    return k;
}
