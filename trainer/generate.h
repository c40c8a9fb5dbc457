// generate.h: text generation with a model and a tokenizer.
#pragma once

#include "model.h"
#include "tokenizer.h"

// Generate up to n_new tokens after prompt[0..n_prompt) (which must be non-empty,
// e.g. just BOS). temperature 0 is greedy (argmax); otherwise samples from
// softmax(logits / temperature) with rng seed. Stops early at EOS. Returns a
// malloc'd array of all tokens (prompt included) and its length in *n_out.
// use_cache: with a KV cache when the backend has its ops (else, or 0, each token
// recomputes the prefix); greedy output is the same either way.
int *generate_tokens(Model *M, const int *prompt, int n_prompt, int n_new, float temperature,
                     uint64_t seed, int eos_id, int use_cache, int *n_out);

// CLI: postshare generate MODEL --tokenizer SPEC [--steps N] [--prompt TEXT]
//      [--temperature F] [--seed N]
int generate_main(int argc, char **argv);
