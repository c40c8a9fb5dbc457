// train.c: `postshare train CONFIG.yaml [--set section.key=value ...]`, the
// training loop. It reads top to bottom: config -> weights -> model and
// optimizer -> data -> for each step {micro-batches: forward, backward;
// clip; AdamW; log; evaluate} -> save.
#include "train.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "eval.h"
#include "hf_io.h"
#include "job.h"
#include "loader.h"
#include "model.h"
#include "optim.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: postshare train CONFIG.yaml [--set section.key=value ...]\n"
            "  Trains the model the config describes; writes the run directory\n"
            "  (run.out_dir/run.name): config.yaml (resolved), metrics.jsonl, model/ (HF).\n"
            "  --set KEY=VALUE   override one config key (repeatable), e.g. --set train.steps=50\n"
            "  --keys            list every config key with its default and meaning\n");
}

static void fmt_hms(char *buf, size_t n, double s) {
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%d:%02d", t / 60, t % 60);
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

int train_run(const JobConfig *job) {
    train_set_threads(job->threads);

    // weights, model, optimizer
    HostWeights w = {0};
    initial_weights(job, &w);
    const LlamaConfig *mc = &w.t.cfg;
    const Backend *be = backend_get(job->backend);
    Model M;
    model_init(&M, be, mc);
    model_set_params(&M, w.params);
    const JobTrain *tr = &job->train;
    OptimConfig oc = {.lr = tr->lr, .min_lr = tr->min_lr, .warmup = tr->warmup,
                      .total_steps = tr->steps, .beta1 = tr->betas[0], .beta2 = tr->betas[1],
                      .eps = tr->eps, .weight_decay = tr->weight_decay, .clip = tr->clip};
    Optim opt;
    optim_init(&opt, &M, &oc);

    // data
    int B = job->data.batch_size, T = job->data.seq_len;
    if (T > mc->max_seq_len)
        ps_die("data.seq_len %d exceeds the model's max_seq_len %d", T, mc->max_seq_len);
    Loader *train = loader_open(job->data.train, T, mc->vocab_size, job->data.shuffle,
                                (uint64_t)job->run.seed);
    if (!train) ps_die("data.train: %s", ps_err_msg());
    Loader *val = loader_open(job->data.val, T, mc->vocab_size, 0, 0);
    if (!val) ps_die("data.val: %s", ps_err_msg());
    if (loader_num_windows(train) < (uint64_t)B || loader_num_windows(val) < (uint64_t)B)
        ps_die("data: need at least data.batch_size = %d sequences of %d tokens, but %s has %llu "
               "and %s has %llu",
               B, T, job->data.train, (unsigned long long)loader_num_windows(train),
               job->data.val, (unsigned long long)loader_num_windows(val));

    // Only now that the weights and the data are known good does the run
    // directory get touched, so a bad input never damages an earlier run.
    char *run_dir = job_run_dir(job);
    if (ps_mkdirs(run_dir) != 0) ps_die("%s", ps_err_msg());
    char *yaml = job_to_yaml(job);
    char *cfg_path = ps_path_join(run_dir, "config.yaml");
    if (ps_write_file_atomic(cfg_path, yaml, strlen(yaml)) != 0) ps_die("%s", ps_err_msg());
    free(yaml);
    free(cfg_path);

    char *metrics_path = ps_path_join(run_dir, "metrics.jsonl");
    FILE *metrics = xfopen(metrics_path, "w");
    long tokens_per_step = (long)B * T * tr->grad_accum;
    printf("postshare train: %s | backend %s | %zu parameters | L%d C%d heads %d/%d F%d V%d\n",
           run_dir, be->name, w.t.total, mc->n_layers, mc->dim, mc->n_heads, mc->n_kv_heads,
           mc->ffn_dim, mc->vocab_size);
    printf("data: %llu train sequences, %llu val sequences of %d tokens | %ld tokens/step\n",
           (unsigned long long)loader_num_windows(train),
           (unsigned long long)loader_num_windows(val), T, tokens_per_step);

    int *inp = xmalloc(sizeof(int) * (size_t)B * T), *tgt = xmalloc(sizeof(int) * (size_t)B * T);
    double t_start = ps_now(), t_log = t_start;
    long tokens_since_log = 0;
    EvalResult ev = eval_model(&M, val, B, T, job->data.val_batches);
    printf("step %5d/%d | val loss %.4f | val ppl %.2f | %ld tokens\n", 0, tr->steps, ev.loss,
           ev.ppl, ev.tokens);
    fprintf(metrics, "{\"step\":0,\"val_loss\":%.6f,\"val_ppl\":%.4f}\n", ev.loss, ev.ppl);
    float first_val = (float)ev.loss;
    t_log = ps_now();  // throughput counts training time only

    for (int step = 0; step < tr->steps; step++) {
        // forward/backward over the micro-batches; the gradient is the mean
        // over all counted tokens of each micro-batch, averaged over micro-batches
        model_zero_grads(&M);
        double loss_sum = 0.0;
        for (int micro = 0; micro < tr->grad_accum; micro++) {
            loader_next_batch(train, B, inp, tgt);
            float loss = model_forward(&M, inp, tgt, B, T);
            if (M.n_valid > 0) model_backward(&M, 1.0f / ((float)M.n_valid * tr->grad_accum));
            loss_sum += loss;
        }
        float loss = (float)(loss_sum / tr->grad_accum);
        float gnorm = optim_grad_norm(&M);
        if (!isfinite(loss) || !isfinite(gnorm))
            ps_die("step %d: loss %g, grad norm %g is not finite; lower train.lr or check the "
                   "data",
                   step + 1, loss, gnorm);
        float lr = optim_step(&opt, &M, step, gnorm);
        tokens_since_log += tokens_per_step;

        int last = step + 1 == tr->steps;
        if ((step + 1) % tr->log_every == 0 || last || step == 0) {
            double now = ps_now(), elapsed = now - t_start;
            double tps = tokens_since_log / (now - t_log);
            double eta = elapsed / (step + 1) * (tr->steps - step - 1);
            char e1[32], e2[32];
            fmt_hms(e1, sizeof e1, elapsed);
            fmt_hms(e2, sizeof e2, eta);
            printf("step %5d/%d | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | %s elapsed "
                   "| ETA %s\n",
                   step + 1, tr->steps, loss, lr, gnorm, tps, e1, e2);
            fflush(stdout);
            fprintf(metrics,
                    "{\"step\":%d,\"loss\":%.6f,\"lr\":%.6e,\"grad_norm\":%.6f,"
                    "\"tokens_per_s\":%.1f,\"elapsed_s\":%.3f}\n",
                    step + 1, loss, lr, gnorm, tps, elapsed);
            fflush(metrics);
            t_log = now;
            tokens_since_log = 0;
        }
        if ((tr->eval_every > 0 && (step + 1) % tr->eval_every == 0) || last) {
            ev = eval_model(&M, val, B, T, job->data.val_batches);
            printf("step %5d/%d | val loss %.4f | val ppl %.2f | %ld tokens | %.2fs\n", step + 1,
                   tr->steps, ev.loss, ev.ppl, ev.tokens, ev.seconds);
            fprintf(metrics, "{\"step\":%d,\"val_loss\":%.6f,\"val_ppl\":%.4f}\n", step + 1,
                    ev.loss, ev.ppl);
            fflush(metrics);
            t_log += ev.seconds;  // leave evaluation time out of the next tok/s
        }
    }
    fclose(metrics);
    printf("done: val loss %.4f -> %.4f (ppl %.2f -> %.2f) in %.1fs\n", first_val, ev.loss,
           exp(first_val), ev.ppl, ps_now() - t_start);

    if (job->train.save_final) {
        char *model_dir = ps_path_join(run_dir, "model");
        model_get_params(&M, w.params);
        if (hf_save(model_dir, &w, "float32") != 0) ps_die("saving the model: %s", ps_err_msg());
        printf("saved %s (HF format)\n", model_dir);
        free(model_dir);
    }
    free(inp);
    free(tgt);
    free(metrics_path);
    loader_close(train);
    loader_close(val);
    optim_free(&opt);
    model_free(&M);
    host_weights_free(&w);
    free(run_dir);
    return 0;
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
