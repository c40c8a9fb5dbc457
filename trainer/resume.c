// resume.c: checkpoints in the training loop: choosing, checking and restoring
// the checkpoint a run continues from, saving with the keep policy, metrics
// on resume, and the SIGINT/SIGTERM stop (see resume.h).
#define _POSIX_C_SOURCE 200809L
#include "resume.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

// The train shards as "name<TAB>tokens\n" lines: what the data is, independent
// of where it lives (moving the shards is harmless, changing them is not).
static char *shards_text(const Loader *L) {
    size_t cap = 64, len = 0;
    char *s = xmalloc(cap);
    s[0] = 0;
    for (int i = 0; i < loader_num_shards(L); i++) {
        const char *name = base_name(loader_shard_path(L, i));
        size_t need = strlen(name) + 32;
        if (len + need > cap) s = xrealloc(s, cap = 2 * cap + need);
        len += (size_t)snprintf(s + len, cap - len, "%s\t%zu\n", name, loader_shard_tokens(L, i));
    }
    return s;
}

// Every RNG state of a run. A new source of randomness (dropout, sampling
// during training) adds an entry here and restores it by name in
// resume_restore. Today the only stream is the train loader's shuffle, whose
// state is (seed, sample) and travels as the loader state.
static int run_rngs(const JobConfig *job, const Loader *train, CkptRng *out) {
    int n = 0;
    snprintf(out[n].name, sizeof out[n].name, "run.seed");
    out[n++].state = (uint64_t)job->run.seed;
    snprintf(out[n].name, sizeof out[n].name, "loader.shuffle_seed");
    out[n++].state = loader_get_state(train).seed;
    return n;
}

// ---------------------------------------------------------------------------
// Choosing the checkpoint

static void report_read(const char *path, const Checkpoint *c, const CkptIoStats *st) {
    printf("resume: read %s (step %lld) in %.2f s (%.1f MB/s)\n", path, (long long)c->meta.step,
           st->seconds, st->bytes / 1e6 / (st->seconds > 0 ? st->seconds : 1e-9));
}

void resume_open(const char *path, ResumePoint *rp) {
    memset(rp, 0, sizeof *rp);
    CkptReadOpts all = {.optim = 1};
    CkptIoStats st;
    if (ckpt_read(path, &rp->ck, &all, &st)) ps_die("checkpoint.resume: %s", ps_err_msg());
    rp->resumed = 1;
    rp->path = xstrdup(path);
    report_read(path, &rp->ck, &st);
}

void resume_find(const JobConfig *job, const char *run_dir, ResumePoint *rp) {
    memset(rp, 0, sizeof *rp);
    const char *mode = job->checkpoint.resume;
    if (!strcmp(mode, "none")) return;
    if (strcmp(mode, "auto") != 0) {
        resume_open(mode, rp);
        return;
    }
    CkptReadOpts all = {.optim = 1};
    CkptIoStats st;
    CkptEntry *e;
    int n = ckpt_list(run_dir, &e);
    for (int i = 0; i < n && !rp->resumed; i++) {
        if (ckpt_read(e[i].path, &rp->ck, &all, &st) == 0) {
            rp->resumed = 1;
            rp->path = xstrdup(e[i].path);
            report_read(e[i].path, &rp->ck, &st);
            break;
        }
        // the message names the file: "PATH: what is wrong"
        fprintf(stderr, "postshare: warning: resume: damaged checkpoint %s\n", ps_err_msg());
        if (i + 1 < n)
            fprintf(stderr,
                    "postshare: warning: resume: falling back to the previous checkpoint, %s\n",
                    e[i + 1].path);
        rp->damaged = xrealloc(rp->damaged, sizeof(char *) * (size_t)(rp->n_damaged + 1));
        rp->damaged[rp->n_damaged++] = xstrdup(e[i].path);
    }
    ckpt_list_free(e, n);
    if (!rp->resumed && rp->n_damaged)
        ps_die(
            "resume: none of the %d checkpoint(s) in %s reads back intact (see above); nothing "
            "was changed. Resume from a copy with checkpoint.resume=PATH, or start over with "
            "checkpoint.resume=none and another run.name",
            rp->n_damaged, run_dir);
}

// ---------------------------------------------------------------------------
// Checking it fits

static void describe_model(const LlamaConfig *c, char *buf, size_t n) {
    snprintf(buf, n,
             "L%d C%d heads %d/%d hd %d F%d V%d max_seq_len %d rope_theta %g rope %s %g/%g/%g/%d "
             "norm_eps %g%s",
             c->n_layers, c->dim, c->n_heads, c->n_kv_heads, cfg_head_dim(c), c->ffn_dim,
             c->vocab_size, c->max_seq_len, c->rope_theta, rope_type_name(c->rope_type),
             c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor,
             c->rope_orig_max_pos, c->norm_eps, c->tie_embeddings ? " tied" : "");
}

// The first line of s for a message: tabs as spaces, "(none)" past the end.
static void message_line(const char *s, char *out, size_t n) {
    if (*s)
        snprintf(out, n, "%.*s", (int)strcspn(s, "\n"), s);
    else
        snprintf(out, n, "(none)");
    for (char *p = out; *p; p++)
        if (*p == '\t') *p = ' ';
}

// The first line where two texts differ, for messages.
static void first_diff_line(const char *a, const char *b, char *la, char *lb, size_t n) {
    while (*a && *a == *b) {
        const char *na = strchr(a, '\n'), *nb = strchr(b, '\n');
        if (!na || !nb || na - a != nb - b || strncmp(a, b, (size_t)(na - a))) break;
        a = na + 1, b = nb + 1;
    }
    message_line(a, la, n);
    message_line(b, lb, n);
}

void resume_check(const JobConfig *job, const ResumePoint *rp, const HostWeights *w,
                  const char *plan_json, const Loader *train, int world) {
    const CkptMeta *m = &rp->ck.meta;
    const char *path = rp->path;
    JobConfig saved;
    char name[1200];
    snprintf(name, sizeof name, "%s:/config", path);
    if (job_load_string(m->config_yaml, name, 0, NULL, &saved))
        ps_die("resume: the job config stored in the checkpoint does not load: %s", ps_err_msg());
    char *fixed, *notes;
    if (job_resume_diff(&saved, job, &fixed, &notes))
        ps_die(
            "resume: %s was written by a job that differs in settings that must stay the same "
            "to continue it: %s. Put them back, or start a new run (another run.name) with "
            "model.init: ckpt:%s to start from its weights",
            path, fixed, path);
    if (notes[0])
        printf(
            "resume: changed since the checkpoint (allowed; the run is no longer a bit-exact "
            "continuation): %s\n",
            notes);
    free(fixed);
    free(notes);

    LlamaConfig want;
    char a[256], b[256];
    if (job_llama_config(job, &want) == 0) {
        describe_model(&w->t.cfg, a, sizeof a);
        describe_model(&want, b, sizeof b);
        if (strcmp(a, b))
            ps_die("resume: %s holds a different model (%s) than the config describes (%s)", path,
                   a, b);
    }
    if ((m->plan_json == NULL) != (plan_json == NULL) ||
        (plan_json && strcmp(m->plan_json, plan_json) != 0))
        ps_die(
            "resume: the sharing plan differs from the one %s was trained with (%s -> %s); "
            "resuming would train another model",
            path, m->plan_json ? "a plan" : "no plan", plan_json ? "a different plan" : "no plan");

    char *now = shards_text(train);
    if (strcmp(now, m->train_shards) != 0) {
        first_diff_line(m->train_shards, now, a, b, sizeof a);
        ps_die(
            "resume: the training data differs from the checkpoint's (shard name and token "
            "count: checkpoint '%s', data.train '%s'); resuming would read other samples",
            a, b);
    }
    free(now);
    // The global batch (samples per step) must stay: the loader position counts
    // samples, and the schedule counts steps. Ranks, batch_size and grad_accum
    // may trade against each other (a checkpoint of N ranks resumes on M).
    int64_t saved_gb =
        m->global_batch ? m->global_batch : (int64_t)saved.data.batch_size * saved.train.grad_accum;
    int64_t gb = (int64_t)world * job->data.batch_size * job->train.grad_accum;
    if (gb != saved_gb)
        ps_die(
            "resume: the global batch would change from %lld samples per step (%s) to %lld (%d "
            "rank(s) x data.batch_size %d x train.grad_accum %d); keep ranks x batch_size x "
            "grad_accum = %lld to continue %s",
            (long long)saved_gb, m->world_size > 0 ? "as written" : "one rank", (long long)gb,
            world, job->data.batch_size, job->train.grad_accum, (long long)saved_gb, path);
    if (m->world_size > 0 && m->world_size != world)
        printf("resume: %s was written by %d rank(s); continuing on %d\n", path, m->world_size,
               world);
    if (job->train.steps < m->step)
        ps_die("resume: train.steps (%d) is below the step of %s (%lld); raise it to continue",
               job->train.steps, path, (long long)m->step);
}

static int is_damaged(const ResumePoint *rp, const char *path) {
    for (int i = 0; i < rp->n_damaged; i++)
        if (!strcmp(rp->damaged[i], path)) return 1;
    return 0;
}

void resume_guard_dir(const char *run_dir, const ResumePoint *rp) {
    int64_t start = rp->resumed ? rp->ck.meta.step : 0;
    CkptEntry *e;
    int n = ckpt_list(run_dir, &e);
    for (int i = 0; i < n; i++) {
        if (e[i].step <= start || is_damaged(rp, e[i].path)) continue;
        char from[1200];
        if (rp->resumed)
            snprintf(from, sizeof from, "from %s (step %lld)", rp->path, (long long)start);
        else
            snprintf(from, sizeof from, "from scratch (checkpoint.resume: none)");
        ps_die(
            "%s already holds %s, past this run's start %s; one directory cannot hold two "
            "histories. Move it away, continue it (checkpoint.resume: auto), or use another "
            "run.name",
            run_dir, e[i].path, from);
    }
    ckpt_list_free(e, n);
}

void resume_tidy_dir(const char *run_dir, const ResumePoint *rp) {
    for (int i = 0; i < rp->n_damaged; i++) {
        size_t n = strlen(rp->damaged[i]) + 16;
        char *aside = xmalloc(n);
        snprintf(aside, n, "%s.damaged", rp->damaged[i]);
        if (rename(rp->damaged[i], aside) == 0)
            printf("resume: kept the damaged %s as %s\n", rp->damaged[i], aside);
        else
            fprintf(stderr, "postshare: warning: cannot rename %s: %s\n", rp->damaged[i],
                    strerror(errno));
        free(aside);
    }
    ckpt_remove_stale_tmp(run_dir);
}

// ---------------------------------------------------------------------------
// Restoring

RunProgress resume_restore(ResumePoint *rp, Model *M, Optim *opt, Loader *train,
                           const float *master) {
    const Checkpoint *c = &rp->ck;
    CHECK(c->m && c->v, "the checkpoint was read without its optimizer state");
    // the optimizer's range [lo, hi) of the whole state (ZeRO-1: this rank's shard)
    size_t lo = opt->lo;
    optim_set_state(opt, M, master + lo, c->m + lo, c->v + lo, (int)c->meta.optim_t);
    if (loader_set_state(train, c->meta.loader)) ps_die("resume: %s: %s", rp->path, ps_err_msg());
    RunProgress p = {.step = c->meta.step,
                     .tokens_seen = c->meta.tokens_seen,
                     .lr = c->meta.lr,
                     .elapsed_s = c->meta.elapsed_s,
                     .first_val_loss = c->meta.first_val_loss};
    ckpt_free(&rp->ck);
    return p;
}

void resume_point_free(ResumePoint *rp) {
    ckpt_free(&rp->ck);
    for (int i = 0; i < rp->n_damaged; i++) free(rp->damaged[i]);
    free(rp->damaged);
    free(rp->path);
    memset(rp, 0, sizeof *rp);
}

FILE *resume_open_metrics(const char *path, int resumed, int64_t step) {
    if (!resumed) return xfopen(path, "w");
    size_t len;
    char *txt = ps_read_file(path, &len);
    if (txt) {
        // keep whole lines ("...}\n") of steps up to the checkpoint's, in place
        size_t out = 0;
        for (char *line = txt; *line;) {
            char *nl = strchr(line, '\n');
            if (!nl) break;  // a half-written last line
            long long s;
            size_t n = (size_t)(nl - line) + 1;
            if (sscanf(line, "{\"step\":%lld", &s) == 1 && s <= step && nl[-1] == '}') {
                memmove(txt + out, line, n);
                out += n;
            }
            line = nl + 1;
        }
        if (out != len && ps_write_file_atomic(path, txt, out) != 0) ps_die("%s", ps_err_msg());
        free(txt);
    }
    return xfopen(path, "a");
}

// ---------------------------------------------------------------------------
// Saving

// Delete what the keep policy does not keep: the newest `keep` (0: all) and
// every multiple of keep_every stay.
static void prune(const char *run_dir, int keep, int keep_every) {
    if (keep <= 0) return;
    CkptEntry *e;
    int n = ckpt_list(run_dir, &e), first = 1;
    for (int i = keep; i < n; i++) {
        if (keep_every > 0 && e[i].step % keep_every == 0) continue;
        if (unlink(e[i].path) != 0) {
            fprintf(stderr, "postshare: warning: cannot delete old checkpoint %s: %s\n", e[i].path,
                    strerror(errno));
        } else if (first) {
            first = 0;
            ckpt_test_point("prune");
        }
    }
    ckpt_list_free(e, n);
}

double resume_save(const JobConfig *job, const char *run_dir, const CkptState *state, Loader *train,
                   const RunProgress *p, const char *plan_json) {
    Checkpoint c;
    memset(&c, 0, sizeof c);
    c.w.t = *state->t;  // borrowed: the table is the layout of the buffers below
    c.w.params = (float *)state->master;
    c.m = (float *)state->m;
    c.v = (float *)state->v;

    CkptMeta *m = &c.meta;
    *m = (CkptMeta){
        .step = p->step,
        .tokens_seen = p->tokens_seen,
        .optim_t = state->optim_t,
        .lr = p->lr,
        .elapsed_s = p->elapsed_s,
        .first_val_loss = p->first_val_loss,
        .loader = loader_get_state(train),
        .shuffle = job->data.shuffle,
        .global_batch = (int64_t)state->world * job->data.batch_size * job->train.grad_accum,
        .world_size = state->world};
    m->epoch = m->loader.sample / loader_num_windows(train);
    int shard;
    size_t off;
    loader_locate(train, m->loader.sample, &shard, &off);
    snprintf(m->shard, sizeof m->shard, "%s", base_name(loader_shard_path(train, shard)));
    m->shard_offset = (int64_t)off;
    m->train_shards = shards_text(train);
    m->n_rng = run_rngs(job, train, m->rng);
    m->config_yaml = job_to_yaml(job);
    m->plan_json = (char *)plan_json;  // written, not freed

    char *path = ckpt_path(run_dir, p->step);
    CkptIoStats st;
    if (ckpt_write(path, &c, &st))
        ps_die("checkpoint at step %lld: %s (the earlier checkpoints are intact)",
               (long long)p->step, ps_err_msg());
    printf("checkpoint: wrote %s (%.1f MB) in %.2f s (%.1f MB/s)\n", path, st.bytes / 1e6,
           st.seconds, st.bytes / 1e6 / (st.seconds > 0 ? st.seconds : 1e-9));
    fflush(stdout);
    prune(run_dir, job->checkpoint.keep, job->checkpoint.keep_every);
    free(path);
    free(m->train_shards);
    free(m->config_yaml);
    return st.seconds;
}

// ---------------------------------------------------------------------------
// Signals

static volatile sig_atomic_t g_stop;

static void on_stop_signal(int sig) {
    if (g_stop) {
        // second signal: abort now. A half-written checkpoint goes (the
        // earlier ones are complete files under their own names), then the
        // process dies by this signal, so its status says what happened.
        const char *tmp = ckpt_active_tmp();
        if (tmp[0]) unlink(tmp);
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_stop = sig;
    static const char msg[] =
        "\npostshare: stop requested: finishing this step, then writing a checkpoint (send the "
        "signal again to abort at once)\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
}

void stop_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // file writes in progress go on
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int stop_signal_pending(void) {
    return g_stop;
}
