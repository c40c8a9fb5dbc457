// evalcmd.c: `postshare eval MODEL --data GLOB [--seq-len T] [--batch-size B]
// [--batches N] [--backend NAME] [--threads N]`: token-level validation loss and
// perplexity of any model form, with the tokens counted and the time taken.
#include "evalcmd.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "backend.h"
#include "cliargs.h"
#include "common.h"
#include "eval.h"
#include "hf_io.h"
#include "train.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: postshare eval MODEL --data GLOB [options]\n"
            "  MODEL                hf:DIR, llama2c:FILE.bin, shared:DIR, or a path (a compact\n"
            "                       shared model from postshare share runs compact)\n"
            "  --data GLOB          token shards to evaluate on (required)\n"
            "  --seq-len T          tokens per sequence (default: min(256, max_seq_len))\n"
            "  --batch-size B       sequences per batch (default 8)\n"
            "  --batches N          batches to evaluate (default 0 = the whole set)\n"
            "  --backend NAME       cpu | cuda | auto (default auto)\n"
            "  --threads N          CPU threads (default: all)\n");
}

int evalcmd_main(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *backend = "auto";
    int T = 0, B = 8, batches = 0, threads = 0;
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
        } else {
            cli_positional("eval", a, &model, "MODEL");
        }
    }
    if (!model || !data) {
        usage(stderr);
        ps_die("eval: MODEL and --data are required");
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
