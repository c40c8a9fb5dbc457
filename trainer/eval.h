// eval.h: token-level validation loss and perplexity of a model over a loader.
#pragma once

#include "loader.h"
#include "model.h"

typedef struct {
    double loss;     // mean cross-entropy per counted token (nats)
    double ppl;      // exp(loss)
    long tokens;     // tokens counted
    double seconds;  // wall time
} EvalResult;

// Evaluate on the first n_batches micro-batches of B x T from the loader's
// start (the loader is reset first, so every call sees the same tokens).
// n_batches <= 0 means one pass over every full batch of the loader.
EvalResult eval_model(Model *M, Loader *L, int B, int T, int n_batches);
