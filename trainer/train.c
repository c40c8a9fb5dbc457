// train.c: `postshare train CONFIG.yaml [--set section.key=value ...]`, the
// training loop. It reads top to bottom: config -> communicator -> the
// checkpoint to resume from, if any -> weights -> model and optimizer -> data
// -> (resume: check and restore) -> for each step {this rank's micro-batches:
// forward, backward; regularizer; reduce-scatter and global norm; AdamW on the
// shard; all-gather; log; evaluate; checkpoint} -> save.
//
// Data parallelism (ZeRO-1, zero.h) is always on: one process is world 1 and
// its collectives move nothing. Rank 0 alone touches the run directory
// (config, metrics, checkpoints, model, results), logs and evaluates; every
// rank trains.
#include "train.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "comm.h"
#include "common.h"
#include "eval.h"
#include "hf_io.h"
#include "modelsrc.h"
#include "job.h"
#include "loader.h"
#include "model.h"
#include "optim.h"
#include "postshare.h"
#include "resume.h"
#include "tokenizer.h"
#include "zero.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: postshare train CONFIG.yaml [--set section.key=value ...]\n"
            "  Trains the model the config describes; writes the run directory\n"
            "  (run.out_dir/run.name): config.yaml (resolved), metrics.jsonl, checkpoints\n"
            "  ckpt-<step>.h5 (HDF5) and model/ (HF). It continues from the newest valid\n"
            "  checkpoint there unless checkpoint.resume says otherwise.\n"
            "  --set KEY=VALUE   override one config key (repeatable), e.g. --set train.steps=50\n"
            "  --keys            list every config key with its default and meaning\n"
            "exit status: 0 done (or stopped at train.stop_after), 1 error, %d stopped by\n"
            "  SIGINT/SIGTERM after writing a checkpoint; a second signal kills it at once by\n"
            "  that signal (shells report 130 / 143), the earlier checkpoints intact\n",
            PS_EXIT_INTERRUPTED);
}

static void fmt_hms(char *buf, size_t n, double s) {
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%d:%02d", t / 60, t % 60);
}

OptimConfig train_optim_config(const JobConfig *job) {
    const JobTrain *tr = &job->train;
    OptimConfig oc = {.lr = tr->lr,
                      .min_lr = tr->min_lr,
                      .warmup = tr->warmup,
                      .total_steps = tr->steps,
                      .beta1 = tr->betas[0],
                      .beta2 = tr->betas[1],
                      .eps = tr->eps,
                      .weight_decay = tr->weight_decay,
                      .clip = tr->clip};
    return oc;
}

void train_set_threads(int threads) {
    if (threads > 0) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
    }
}

// Initial weights from the config: scratch (seeded random) or a model file.
static void initial_weights(const JobConfig *job, HostWeights *w) {
    if (!strcmp(job->model.init, "scratch")) {
        LlamaConfig cfg;
        if (job_llama_config(job, &cfg) != 0) ps_die("%s", ps_err_msg());
        param_table_build(&w->t, &cfg);
        w->params = xmalloc(sizeof(float) * w->t.total);
        param_init_random(&w->t, w->params, (uint64_t)job->run.seed, job->model.init_std);
    } else if (model_load_any(job->model.init, w) != 0) {
        ps_die("model.init: %s", ps_err_msg());
    }
}

// data.tokenizer must fit the model: every id it can produce below vocab_size.
// The default (byte, 256 ids) for a pretrained model of another vocabulary is
// refused too: the run would record the wrong tokenizer.
static void check_tokenizer(const JobConfig *job, int vocab) {
    Tokenizer *tok = tok_open(job->data.tokenizer);
    if (!tok) ps_die("data.tokenizer: %s", ps_err_msg());
    int tv = tok->vocab_size, byte = tok->kind == TOK_BYTE;
    tok_free(tok);
    if (tv > vocab)
        ps_die("data.tokenizer '%s' has %d ids but the model's vocab_size is %d: ids %d.. do not "
               "fit the model; set data.tokenizer to the model's own tokenizer",
               job->data.tokenizer, tv, vocab, vocab);
    if (byte && vocab != 256 && strcmp(job->model.init, "scratch") != 0)
        ps_die("data.tokenizer is 'byte' (256 ids; also the default when unset) but model.init '%s' has vocab_size "
               "%d: set data.tokenizer to the model's tokenizer (its directory, tokenizer.json, "
               "tokenizer.model or gguf:FILE)",
               job->model.init, vocab);
}

// The fp32 weights of the run into w->params (on rank 0; collective): the
// optimizer's master weights, gathered from the ranks' shards (on an fp32
// backend the model's replicated params are the masters).
static void final_weights(const Zero1 *z, const Model *M, const Optim *opt, HostWeights *w) {
    if (z->comm->rank == 0 && !w->params) w->params = xmalloc(sizeof(float) * w->t.total);
    if (opt->master_is_params) {
        if (z->comm->rank == 0) model_get_params(M, w->params);  // replicated
    } else
        zero1_gather_state(z, opt, w->params, NULL, NULL, 0);
}

// What the run's exports carry besides the weights: the special ids (and
// generation_config.json) of model.init, and data.tokenizer, the tokenizer the
// run trained with. Never fatal: the run's weights are what matters.
void train_export_info(const JobConfig *job, HfExport *x) {
    hf_export_init(x);
    if (strcmp(job->model.init, "scratch") != 0 &&
        model_export_info(job->model.init, NULL, x) != 0) {
        fprintf(stderr, "postshare: warning: the special ids of %s are unknown: %s\n",
                job->model.init, ps_err_msg());
        hf_export_init(x);
    }
    snprintf(x->tokenizer, sizeof x->tokenizer, "%s", job->data.tokenizer);
}

// run_dir/model in HF format, from the run's fp32 weights w.
static void save_model(const char *run_dir, const HostWeights *w, const HfExport *x) {
    char *model_dir = ps_path_join(run_dir, "model");
    if (hf_save_export(model_dir, w, "float32", x) != 0)
        ps_die("saving the model: %s", ps_err_msg());
    printf("saved %s (HF format)\n", model_dir);
    free(model_dir);
}

// The end of a finished run (collective; rank 0 writes): the model in HF
// format, then results.json/md (with PostShare's hand-off when the job has a
// share section).
static void finish_run(const JobConfig *job, const char *run_dir, const PostShare *ps,
                       const HostWeights *w0, HostWeights *w, const Zero1 *z, Model *M,
                       const Optim *opt, Loader *val, EvalResult ev) {
    int B = job->data.batch_size, T = job->data.seq_len;
    final_weights(z, M, opt, w);
    if (z->comm->rank != 0) return;
    HfExport x;
    train_export_info(job, &x);
    if (job->train.save_final) save_model(run_dir, w, &x);
    if (ps->active && job->share.apply_after)
        postshare_handoff(ps, job, run_dir, w0, w, val, B, T, postshare_stats(ps, M), &x);
    else
        postshare_results_plain(job, run_dir, w, ev);
}

// Write a checkpoint of step prog->step (collective: the optimizer's shards
// are gathered onto rank 0, which writes). Returns the seconds it took.
static double save_checkpoint(const JobConfig *job, const char *run_dir, const Zero1 *z,
                              const Model *M, const Optim *opt, Loader *train,
                              const RunProgress *prog, const char *plan_json) {
    double t0 = ps_now();
    int root = z->comm->rank == 0;
    size_t n = M->t.total;
    if (z->comm->world == 1 && opt->be == backend_cpu() && opt->lo == 0 && opt->hi >= n) {
        // One rank on the CPU: the optimizer's state is already whole in host memory
        // (its fp32 masters are the params); write it from there. Gathering would
        // hold five more copies of it at once (12 bytes per parameter of outputs, 8 of
        // staging: 2.7 GB for SmolLM2-135M), the peak of the whole run.
        CkptState st = {&M->t, opt->master, opt->m, opt->v, opt->t, 1};
        resume_save(job, run_dir, &st, train, prog, plan_json);
        return ps_now() - t0;
    }
    float *master = root ? xmalloc(n * 4) : NULL, *m = root ? xmalloc(n * 4) : NULL,
          *v = root ? xmalloc(n * 4) : NULL;
    zero1_gather_state(z, opt, master, m, v, 0);
    if (root) {
        CkptState st = {&M->t, master, m, v, opt->t, z->comm->world};
        resume_save(job, run_dir, &st, train, prog, plan_json);
    }
    free(master), free(m), free(v);
    return ps_now() - t0;
}

// The signal that stops the run, agreed by every rank (a signal may reach
// only some of them), so that all stop after the same step.
static int stop_signal_agreed(Comm *c) {
    int sig = stop_signal_pending();
    c->host_allreduce(c, &sig, 1, COMM_I32, COMM_MAX);
    return sig;
}

// The steps of a run whose weights, optimizer, data and resume point are set
// up: touches the run directory (rank 0), trains from prog->step to
// train.steps (or train.stop_after, or a signal), checkpoints, and saves the
// model. Returns the exit status.
static int run_steps(const JobConfig *job, const char *run_dir, const PostShare *ps,
                     const HostWeights *w0, ResumePoint *rp, HostWeights *w, Zero1 *z, Model *M,
                     Optim *opt, Loader *train, Loader *val, RunProgress *prog) {
    const char *plan_json = ps->plan_json;
    const JobTrain *tr = &job->train;
    const LlamaConfig *mc = &w->t.cfg;
    const Backend *be = M->be;
    Comm *comm = z->comm;
    int root = comm->rank == 0, world = comm->world;
    int B = job->data.batch_size, T = job->data.seq_len, accum = tr->grad_accum;
    // Only now that the weights, the data and the checkpoint are known good
    // does the run directory get touched, so a bad input never damages an
    // earlier run.
    FILE *metrics = NULL;
    if (root) {
        if (ps_mkdirs(run_dir) != 0) ps_die("%s", ps_err_msg());
        resume_tidy_dir(run_dir, rp);
        char *yaml = job_to_yaml(job);
        char *cfg_path = ps_path_join(run_dir, "config.yaml");
        if (ps_write_file_atomic(cfg_path, yaml, strlen(yaml)) != 0) ps_die("%s", ps_err_msg());
        free(yaml);
        free(cfg_path);
        char *metrics_path = ps_path_join(run_dir, "metrics.jsonl");
        metrics = resume_open_metrics(metrics_path, rp->resumed, prog->step);
        free(metrics_path);
    }
    // The global batch of a step: samples [base, base + G) of the loader's
    // stream, G = ranks x B x accumulation. Micro-batch j (0 <= j < world x
    // accum) is samples base + j*B ..; rank r runs j = r*accum .. r*accum +
    // accum-1. So the samples of a step depend on the seed and the step only:
    // 1 rank with accumulation 2 and 2 ranks without it see the same ones.
    uint64_t global_batch = (uint64_t)world * B * accum;
    long tokens_per_step = (long)global_batch * T;
    printf("postshare train: %s | backend %s | %zu parameters | L%d C%d heads %d/%d F%d V%d\n",
           run_dir, be->name, w->t.total, mc->n_layers, mc->dim, mc->n_heads, mc->n_kv_heads,
           mc->ffn_dim, mc->vocab_size);
    if (world > 1)
        printf(
            "data parallel: %d ranks (%s), ZeRO-1 shards of %zu parameters, gradient "
            "reduction %s\n",
            world, comm->name, z->shard,
            job->comm_overlap && comm->reduce_start ? "overlapped with the backward"
                                                    : "after the backward");
    printf("data: %llu train sequences, %llu val sequences of %d tokens | %ld tokens/step\n",
           (unsigned long long)loader_num_windows(train),
           (unsigned long long)loader_num_windows(val), T, tokens_per_step);
    if (rp->resumed)
        printf("resume: continuing at step %lld of %d (%lld tokens seen)\n", (long long)prog->step,
               tr->steps, (long long)prog->tokens_seen);

    int *inp = xmalloc(sizeof(int) * (size_t)B * T), *tgt = xmalloc(sizeof(int) * (size_t)B * T);
    double t_start = ps_now() - prog->elapsed_s, t_log;
    long tokens_since_log = 0;
    EvalResult ev = {0};
    stop_signals_install();
    if (!rp->resumed && root) {
        ev = eval_model(M, val, B, T, job->data.val_batches);
        printf("step %5d/%d | val loss %.4f | val ppl %.2f | %ld tokens\n", 0, tr->steps, ev.loss,
               ev.ppl, ev.tokens);
        fprintf(metrics, "{\"step\":0,\"val_loss\":%.6f,\"val_ppl\":%.4f", ev.loss, ev.ppl);
        if (ps->active) {  // where the planned pairs start from
            RegStats st = postshare_stats(ps, M);
            printf(
                "step %5d/%d | reg %.4f | pairs: cos %.3f [%.3f, %.3f] | dist %.3f [%.3f, "
                "%.3f]\n",
                0, tr->steps, st.R, st.cos_mean, st.cos_min, st.cos_max, st.dist_mean, st.dist_min,
                st.dist_max);
            fprintf(metrics,
                    ",\"reg_loss\":%.9g,\"cos_mean\":%.6f,\"cos_min\":%.6f,\"cos_max\":%.6f,"
                    "\"dist_mean\":%.6f,\"dist_min\":%.6f,\"dist_max\":%.6f",
                    st.R, st.cos_mean, st.cos_min, st.cos_max, st.dist_mean, st.dist_min,
                    st.dist_max);
        }
        fprintf(metrics, "}\n");
        prog->first_val_loss = ev.loss;
    }
    t_log = ps_now();  // throughput counts training time only
    // train.stop_after ends this run early; a run that starts at or past it runs to the end
    int stop_after = tr->stop_after > prog->step ? tr->stop_after : 0, sig = 0, stopped = 0;

    for (int step = (int)prog->step; step < tr->steps; step++) {
        // forward/backward over the micro-batches of every rank; the LM
        // gradient is the mean over all counted tokens of each micro-batch,
        // averaged over all micro-batches of all ranks (each backward scales by
        // 1 / (world x accum), and the reduction sums), times share.lm_weight
        // (1 without PostShare)
        model_zero_grads(M);
        // PostShare: + reg.weight * R over the plan's pairs, once per step. It
        // is counted exactly once: the parameters are replicated, so rank 0's
        // copy of every pair is the global one, and only rank 0 adds R's
        // gradient to its local gradient, which the reduction then sums with
        // the other ranks' LM gradients (R's term appears once in the sum). It
        // goes in first (R depends on the weights only), before any reduction
        // starts.
        // (Only rank 0 logs R; a non-finite R stops rank 0, which ends the job.)
        RegStats rs = {0};
        if (root) rs = postshare_step(ps, M, step);
        uint64_t base = loader_get_state(train).sample;
        double loss_sum = 0.0;
        for (int micro = 0; micro < accum; micro++) {
            uint64_t j = (uint64_t)comm->rank * accum + micro;
            loader_read_batch(train, base + j * B, B, inp, tgt);
            // the last backward hands each finished layer to the reduction
            if (micro == accum - 1 && job->comm_overlap) zero1_overlap_next(z, M);
            // the loss scale is known before the forward, which then writes the
            // classifier's gradients while it has the logits (computed once)
            int nv = model_count_targets(tgt, B * T);
            float scale = nv > 0 ? ps->lm_weight / ((float)nv * accum * world) : 0.0f;
            float loss = model_forward_grad(M, inp, tgt, B, T, scale);
            if (nv > 0)
                model_backward(M, scale);
            else
                model_grads_ready_all(M);  // no targets here, but the others reduce
            loss_sum += loss;
        }
        loader_skip(train, global_batch);
        comm->host_allreduce(comm, &loss_sum, 1, COMM_F64, COMM_SUM);
        float lm_loss = (float)(loss_sum / ((double)accum * world));
        float loss = ps->active ? ps->lm_weight * lm_loss + postshare_weight(ps, step) * (float)rs.R
                                : lm_loss;
        // ZeRO-1: sum the gradients into each rank's shard; the true global norm
        float gnorm = zero1_reduce_grads(z, M, opt);
        if (!isfinite(loss) || !isfinite(gnorm))
            ps_die(
                "step %d: loss %g, grad norm %g is not finite; lower train.lr or check the "
                "data",
                step + 1, loss, gnorm);
        // AdamW on this rank's shard, then every rank gets every updated shard
        float lr = optim_step(opt, M, step, gnorm);
        zero1_gather_params(z, M);
        tokens_since_log += tokens_per_step;
        prog->tokens_seen += tokens_per_step;
        prog->lr = lr;

        int last = step + 1 == tr->steps;
        if (root && ((step + 1) % tr->log_every == 0 || last || step == 0)) {
            double now = ps_now(), elapsed = now - t_start;
            double tps = tokens_since_log / (now - t_log);
            double eta = elapsed / (step + 1) * (tr->steps - step - 1);
            char e1[32], e2[32];
            fmt_hms(e1, sizeof e1, elapsed);
            fmt_hms(e2, sizeof e2, eta);
            printf(
                "step %5d/%d | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | %s elapsed "
                "| ETA %s\n",
                step + 1, tr->steps, loss, lr, gnorm, tps, e1, e2);
            fflush(stdout);
            // %.9g: floats round-trip exactly, so runs can be compared bit for bit
            if (ps->active)
                printf(
                    "           | lm %.4f | reg %.4f | pairs: cos %.3f [%.3f, %.3f] | dist "
                    "%.3f [%.3f, %.3f]\n",
                    lm_loss, rs.R, rs.cos_mean, rs.cos_min, rs.cos_max, rs.dist_mean, rs.dist_min,
                    rs.dist_max);
            fprintf(metrics,
                    "{\"step\":%d,\"loss\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,"
                    "\"tokens_per_s\":%.1f,\"elapsed_s\":%.3f,\"cpu_s\":%.3f",
                    step + 1, loss, lr, gnorm, tps, elapsed, ps_cpu_seconds());
            if (ps->active)
                fprintf(metrics,
                        ",\"lm_loss\":%.9g,\"reg_loss\":%.9g,\"reg_weight\":%.9g,"
                        "\"cos_mean\":%.6f,\"cos_min\":%.6f,\"cos_max\":%.6f,\"dist_mean\":%.6f,"
                        "\"dist_min\":%.6f,\"dist_max\":%.6f",
                        lm_loss, rs.R, postshare_weight(ps, step), rs.cos_mean, rs.cos_min,
                        rs.cos_max, rs.dist_mean, rs.dist_min, rs.dist_max);
            fprintf(metrics, "}\n");
            fflush(metrics);
            t_log = now;
            tokens_since_log = 0;
        }
        if (root && ((tr->eval_every > 0 && (step + 1) % tr->eval_every == 0) || last)) {
            ev = eval_model(M, val, B, T, job->data.val_batches);
            printf("step %5d/%d | val loss %.4f | val ppl %.2f | %ld tokens | %.2fs\n", step + 1,
                   tr->steps, ev.loss, ev.ppl, ev.tokens, ev.seconds);
            fprintf(metrics, "{\"step\":%d,\"val_loss\":%.6f,\"val_ppl\":%.4f}\n", step + 1,
                    ev.loss, ev.ppl);
            fflush(metrics);
            t_log += ev.seconds;  // leave evaluation time out of the next tok/s
        }
        // checkpoint after the step's logs and evaluation, so that everything
        // in metrics.jsonl up to its step stays valid when a run resumes from it
        sig = stop_signal_agreed(comm);
        stopped = step + 1 == stop_after && !last;
        int every = job->checkpoint.every;
        int final_ckpt = last && job->checkpoint.final;
        if (final_ckpt || sig || stopped || (every > 0 && (step + 1) % every == 0)) {
            prog->step = step + 1;
            prog->elapsed_s = ps_now() - t_start;
            t_log += save_checkpoint(job, run_dir, z, M, opt, train, prog, plan_json);
            sig = stop_signal_agreed(comm);  // came during the write: that checkpoint is current
        }
        if (sig || stopped) break;
    }
    if (metrics) fclose(metrics);
    free(inp);
    free(tgt);
    if (sig) {
        printf(
            "stopped by signal %d after step %lld of %d, checkpoint written; run the same "
            "command to resume (exit status %d)\n",
            sig, (long long)prog->step, tr->steps, PS_EXIT_INTERRUPTED);
        return PS_EXIT_INTERRUPTED;
    }
    if (stopped) {
        printf(
            "stopped after step %lld of %d (train.stop_after); run the same command to "
            "continue\n",
            (long long)prog->step, tr->steps);
        return 0;
    }
    printf("done: val loss %.4f -> %.4f (ppl %.2f -> %.2f) in %.1fs\n", prog->first_val_loss,
           ev.loss, exp(prog->first_val_loss), ev.ppl, ps_now() - t_start);

    finish_run(job, run_dir, ps, w0, w, z, M, opt, val, ev);
    return 0;
}

// Threads per rank: the job's, else OMP_NUM_THREADS, else the node's cores
// divided among the ranks on it (so two ranks on one machine do not fight).
static void set_rank_threads(const JobConfig *job, const Comm *comm) {
    int threads = job->threads;
    if (threads <= 0 && comm->local_world > 1 && !getenv("OMP_NUM_THREADS")) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores / comm->local_world > 1 ? (int)(cores / comm->local_world) : 1;
    }
    train_set_threads(threads);
}

// The checkpoint to continue from: rank 0 chooses (and only it may later set
// damaged files aside); the others read the file it chose.
static void find_resume_point(const JobConfig *job, const char *run_dir, Comm *comm,
                              ResumePoint *rp) {
    char path[4096] = "";
    if (comm->rank == 0) {
        resume_find(job, run_dir, rp);
        if (rp->resumed) snprintf(path, sizeof path, "%s", rp->path);
    }
    comm->host_broadcast(comm, path, sizeof path, 0);
    if (comm->rank != 0) {
        memset(rp, 0, sizeof *rp);
        if (path[0]) resume_open(path, rp);
    }
}

// Every rank must start from the same weights (each loads or draws them
// itself): compare a checksum of the fp32 buffer with rank 0's.
static void check_replicated(Comm *comm, const HostWeights *w) {
    if (comm->world == 1) return;
    uint64_t h = ps_fnv1a64(PS_FNV1A64_BASIS, w->params, w->t.total), h0 = h;
    comm->host_broadcast(comm, &h0, sizeof h0, 0);
    if (h0 != h)
        ps_die(
            "rank %d's starting weights differ from rank 0's (checksum %016llx vs %016llx): "
            "every rank must see the same model.init file",
            comm->rank, (unsigned long long)h, (unsigned long long)h0);
}

int train_run(const JobConfig *job) {
    // one process per rank; every rank runs this function
    Comm *comm = comm_init(job->comm, job->backend);
    if (comm->rank != 0 && !freopen("/dev/null", "w", stdout))  // only rank 0 logs
        ps_die("cannot silence stdout of rank %d", comm->rank);
    // Whole lines at once, as they come: under mpirun stdout is a pipe, and a
    // launcher tearing the job down (after a signal) must not lose the last lines.
    setvbuf(stdout, NULL, _IOLBF, 0);
    set_rank_threads(job, comm);
    char *run_dir = job_run_dir(job);
    // The checkpoint to continue from, if any: read and verified, no file touched yet.
    ResumePoint rp;
    find_resume_point(job, run_dir, comm, &rp);

    // weights, model, optimizer; w0: the starting weights, which PostShare
    // needs (its plan is made from them; its hand-off evaluates them)
    HostWeights w = {0}, w0 = {0};
    if (rp.resumed) {
        w = rp.ck.w;  // the checkpoint's fp32 master weights
        memset(&rp.ck.w, 0, sizeof rp.ck.w);
    } else {
        initial_weights(job, &w);
    }
    check_tokenizer(job, w.t.cfg.vocab_size);
    check_replicated(comm, &w);
    if (job_share_active(job)) {
        if (rp.resumed) {
            initial_weights(job, &w0);
        } else {
            param_table_copy(&w0.t, &w.t);
            w0.params = xmalloc(sizeof(float) * w.t.total);
            memcpy(w0.params, w.params, sizeof(float) * w.t.total);
        }
    }
    // eval.tasks and eval.test: read them now, so that a bad list fails before training
    JobTasks *jt;
    if (postshare_tasks_open(job, w.t.cfg.vocab_size, &jt)) ps_die("%s", ps_err_msg());
    postshare_tasks_close(jt);
    // PostShare: the plan (a resumed run keeps its checkpoint's) and the regularizer
    PostShare ps;
    if (postshare_init(&ps, job, job_share_active(job) ? &w0 : &w,
                       rp.resumed && job_share_active(job) ? rp.ck.meta.plan_json : NULL))
        ps_die("share: %s", ps_err_msg());
    // The sharing plan as JSON (NULL without PostShare): checkpoints store it,
    // and a resumed run must have the same plan.
    const char *plan_json = ps.plan_json;
    const LlamaConfig *mc = &w.t.cfg;
    const Backend *be = backend_get(job->backend);
    comm_check_backend(comm, be->name, be->act_bytes);
    Model M;
    model_init(&M, be, mc);
    model_set_params(&M, w.params);
    // ZeRO-1: this rank's shard of the optimizer (the whole buffer on one rank)
    Zero1 z;
    zero1_init(&z, comm, &M);
    const JobTrain *tr = &job->train;
    OptimConfig oc = train_optim_config(job);
    Optim opt;
    optim_init_range(&opt, &M, &oc, z.lo, z.hi, w.params);
    postshare_lr_scale(&ps, &opt);  // share.reg.lr_mult, share.reg.rest_lr_mult

    // data
    int B = job->data.batch_size, T = job->data.seq_len;
    if (T > mc->max_seq_len)
        ps_die("data.seq_len %d exceeds the model's max_seq_len %d", T, mc->max_seq_len);
    Loader *train =
        loader_open(job->data.train, T, mc->vocab_size, job->data.shuffle, (uint64_t)job->run.seed);
    if (!train) ps_die("data.train: %s", ps_err_msg());
    Loader *val = loader_open(job->data.val, T, mc->vocab_size, 0, 0);
    if (!val) ps_die("data.val: %s", ps_err_msg());
    if (loader_num_windows(train) < (uint64_t)B || loader_num_windows(val) < (uint64_t)B)
        ps_die(
            "data: need at least data.batch_size = %d sequences of %d tokens, but %s has %llu "
            "and %s has %llu",
            B, T, job->data.train, (unsigned long long)loader_num_windows(train), job->data.val,
            (unsigned long long)loader_num_windows(val));

    // A resumed run continues the checkpoint's optimizer state and data position.
    RunProgress prog = {0};
    if (rp.resumed) resume_check(job, &rp, &w, plan_json, train, comm->world);
    if (comm->rank == 0) resume_guard_dir(run_dir, &rp);
    // Every rank is set up (or one has failed and ended the job): only now may
    // rank 0 touch the run directory.
    comm->barrier(comm);
    int status = 0;
    if (rp.resumed) {
        prog = resume_restore(&rp, &M, &opt, train, w.params);
        if (prog.step >= tr->steps) {
            printf(
                "resume: %s is at step %lld = train.steps: the run is complete, nothing to "
                "train (raise train.steps to train further)\n",
                rp.path, (long long)prog.step);
            // a run stopped between its last checkpoint and the end of finish_run
            char *results = ps_path_join(run_dir, "results.json");
            int missing = comm->rank == 0 && access(results, F_OK) != 0;
            comm->host_broadcast(comm, &missing, sizeof missing, 0);
            if (missing) {
                EvalResult ev = {0};
                if (comm->rank == 0) ev = eval_model(&M, val, B, T, job->data.val_batches);
                finish_run(job, run_dir, &ps, &w0, &w, &z, &M, &opt, val, ev);
            }
            free(results);
        }
    }
    // The host copy of the weights is not needed while training (the model and the
    // optimizer hold them; 4 bytes per parameter): final_weights allocates it again
    // on rank 0 at the end. Only rank 0 writes the model and the results: the others
    // also drop w0 (their fp32 masters live in the optimizer's shard now).
    free(w.params), w.params = NULL;
    if (comm->rank != 0) free(w0.params), w0.params = NULL;
    if (prog.step < tr->steps) {
        status = run_steps(job, run_dir, &ps, &w0, &rp, &w, &z, &M, &opt, train, val, &prog);
    }
    resume_point_free(&rp);
    postshare_free(&ps);
    host_weights_free(&w0);
    loader_close(train);
    loader_close(val);
    optim_free(&opt);
    model_free(&M);
    host_weights_free(&w);
    free(run_dir);
    comm_free(comm);
    return status;
}

int train_main(int argc, char **argv) {
    const char *config = NULL;
    char **sets = xcalloc((size_t)argc + 1, sizeof(char *));
    int nsets = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            free(sets);
            return 0;
        } else if (!strcmp(argv[i], "--keys")) {
            job_print_keys(stdout);
            free(sets);
            return 0;
        } else if (!strcmp(argv[i], "--set")) {
            if (i + 1 >= argc) ps_die("--set needs a section.key=value argument");
            sets[nsets++] = argv[++i];
        } else if (!strncmp(argv[i], "--set=", 6)) {
            sets[nsets++] = argv[i] + 6;
        } else if (argv[i][0] == '-') {
            usage(stderr);
            ps_die("train: unknown option '%s'", argv[i]);
        } else if (!config) {
            config = argv[i];
        } else {
            ps_die("train: more than one config file given ('%s' and '%s')", config, argv[i]);
        }
    }
    if (!config) {
        usage(stderr);
        ps_die("train: no config file given");
    }
    JobConfig job;
    if (job_load(config, nsets, sets, &job) != 0) ps_die("%s", ps_err_msg());
    free(sets);
    return train_run(&job);
}
