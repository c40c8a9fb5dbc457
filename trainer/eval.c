// eval.c: validation loss and perplexity (see eval.h).
#include "eval.h"

#include <math.h>

#include "common.h"

EvalResult eval_model(Model *M, Loader *L, int B, int T, int n_batches) {
    EvalResult r = {0};
    double t0 = ps_now();
    loader_reset(L);
    long avail = (long)(loader_num_windows(L) / (uint64_t)B);
    if (n_batches <= 0 || n_batches > avail) n_batches = (int)avail;
    CHECK(n_batches > 0, "validation set has fewer than %d sequences of %d tokens", B, T);
    int *inp = xmalloc(sizeof(int) * (size_t)B * T), *tgt = xmalloc(sizeof(int) * (size_t)B * T);
    double sum = 0.0;
    for (int i = 0; i < n_batches; i++) {
        loader_next_batch(L, B, inp, tgt);
        float loss = model_forward(M, inp, tgt, B, T);
        sum += (double)loss * M->n_valid;
        r.tokens += M->n_valid;
    }
    free(inp);
    free(tgt);
    r.loss = r.tokens ? sum / r.tokens : 0.0;
    r.ppl = exp(r.loss);
    r.seconds = ps_now() - t0;
    return r;
}
