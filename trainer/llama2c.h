// llama2c.h: loader for Karpathy's legacy llama2.c checkpoint format (.bin),
// e.g. the stories15M / stories260K TinyStories models.
//
// File layout (all little-endian):
//   7 x int32 header: dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//                     vocab_size (negative: an untied classifier follows), seq_len
//   fp32 tensors, each stacked over layers:
//     token_embedding [V, dim]
//     rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim],
//     wo [L, dim, dim], rms_ffn [L, dim],
//     w1 [L, hidden, dim] (gate), w2 [L, dim, hidden] (down), w3 [L, hidden, dim] (up)
//     rms_final [dim]
//     freq_cis_real [seq_len, head_dim/2], freq_cis_imag [seq_len, head_dim/2] (unused)
//     wcls [V, dim] (only when vocab_size < 0)
// rms_norm eps is 1e-5 and rope_theta 10000 (fixed by llama2.c).
//
// llama2.c rotates interleaved pairs (2i, 2i+1) of each head; our model (like HF)
// rotates pairs (i, i + head_dim/2). The q/k rows are permuted on load exactly as
// HF's convert_llama_weights_to_hf.py does (rope_rows_to_hf, params.h), so the
// loaded model computes the same function.
#pragma once

#include "params.h"

// Load a llama2.c .bin into w (fresh table + fp32 buffer). The file size must
// match the header exactly. 0, or -1 with ps_err naming the file and problem.
int llama2c_load(const char *path, HostWeights *w);
