// gguf_llama.h: a LLaMA model from a GGUF file (llama.cpp), as a HostWeights.
//
// general.architecture must be "llama". The config comes from the llama.*
// metadata: context_length, embedding_length, block_count, feed_forward_length,
// attention.head_count, attention.head_count_kv (default head_count),
// attention.layer_norm_rms_epsilon, rope.freq_base (default 10000),
// attention.key_length (default embedding_length / head_count; value_length
// must equal it), rope.dimension_count (must be the head size: partial rotary
// is refused), rope.scaling.type none/linear (factor rope.scaling.factor); the
// vocab size from tokenizer.ggml.tokens or token_embd.weight; tied when
// output.weight is absent. Tensors (token_embd, output_norm, output,
// blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
// ffn_up, ffn_down}.weight) are converted to fp32 (F32, F16, BF16, Q8_0, Q4_0,
// Q4_1) and attn_q / attn_k get their rows back in HF order (rope_rows_to_hf:
// llama.cpp's converter interleaves them). Anything else (another architecture,
// tensor type or tensor, a rope_freqs tensor: Llama 3.1's scaling baked into
// per-frequency factors) is refused by name.
#pragma once

#include "params.h"

// 0, or -1 with ps_err naming the file and the problem (w is then empty).
int gguf_load_llama(const char *path, HostWeights *w);

// The tokenizer's special ids from the metadata (tokenizer.ggml.bos_token_id,
// eos_token_id, padding_token_id); -1 when absent. 0, or -1 with ps_err set.
int gguf_special_ids(const char *path, int *bos, int *eos, int *pad);
