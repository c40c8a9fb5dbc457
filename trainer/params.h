// params.h: the LLaMA model configuration and the parameter table.
//
// All parameters live in ONE flat buffer. The table below gives, for every
// tensor, its HF name, its HF shape (out x in, row-major) and its offset (in
// elements) into that buffer. It is the single source of truth for the layout:
// the CPU and GPU backends, the optimizer, checkpoints, sharing and HF
// import/export all walk this table and never compute offsets themselves.
//
// Order (per layer l):
//   model.embed_tokens.weight                       [V, C]
//   model.layers.l.input_layernorm.weight           [C]
//   model.layers.l.self_attn.q_proj.weight          [nh*hd, C]
//   model.layers.l.self_attn.k_proj.weight          [nkv*hd, C]
//   model.layers.l.self_attn.v_proj.weight          [nkv*hd, C]
//   model.layers.l.self_attn.o_proj.weight          [C, nh*hd]
//   model.layers.l.post_attention_layernorm.weight  [C]
//   model.layers.l.mlp.gate_proj.weight             [F, C]
//   model.layers.l.mlp.up_proj.weight               [F, C]
//   model.layers.l.mlp.down_proj.weight             [C, F]
//   model.norm.weight                               [C]
//   lm_head.weight                                  [V, C]   (absent when tied)
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int dim;             // C: model width
    int n_layers;        // L
    int n_heads;         // nh: query heads
    int n_kv_heads;      // nkv: key/value heads (== nh for MHA; divides nh for GQA)
    int ffn_dim;         // F: SwiGLU hidden width
    int vocab_size;      // V
    int max_seq_len;     // longest T the model is meant for (RoPE needs no table)
    float rope_theta;    // RoPE base, 10000 for LLaMA 1/2
    float norm_eps;      // RMSNorm epsilon
    int tie_embeddings;  // 1: lm_head shares model.embed_tokens.weight
} LlamaConfig;

static inline int cfg_head_dim(const LlamaConfig *c) {
    return c->dim / c->n_heads;
}

// Validate a config; returns 0 or -1 with ps_err set (names the bad field).
int llama_config_validate(const LlamaConfig *c);

// Kinds of tensors, so that modules can ask "which one is this" without parsing names.
typedef enum {
    P_EMBED = 0,
    P_ATTN_NORM,
    P_WQ,
    P_WK,
    P_WV,
    P_WO,
    P_FFN_NORM,
    P_W_GATE,
    P_W_UP,
    P_W_DOWN,
    P_FINAL_NORM,
    P_LM_HEAD,
    P_NUM_KINDS
} ParamKind;

typedef struct {
    char name[96];  // HF name, e.g. "model.layers.3.self_attn.q_proj.weight"
    ParamKind kind;
    int layer;         // -1 for tensors outside the layers
    int ndim;          // 1 or 2
    int64_t shape[2];  // HF shape; shape[1] == 1 when ndim == 1
    size_t offset;     // element offset into the flat buffer
    size_t numel;
    int decay;  // 1: AdamW applies weight decay (matrices), 0: norms
} ParamEntry;

typedef struct {
    LlamaConfig cfg;
    int n;          // number of tensors
    ParamEntry *e;  // [n], in layout order
    size_t total;   // total elements in the flat buffer
    // quick access: index into e[] per (layer, kind), -1 if absent
    int *layer_idx;                  // [n_layers * P_NUM_KINDS]
    int embed, final_norm, lm_head;  // lm_head == embed when tied
} ParamTable;

void param_table_build(ParamTable *t, const LlamaConfig *cfg);
void param_table_free(ParamTable *t);
// Index of the tensor with this HF name, or -1.
int param_table_find(const ParamTable *t, const char *name);
// Entry for (layer, kind); kind in P_ATTN_NORM..P_W_DOWN.
const ParamEntry *param_layer(const ParamTable *t, int layer, ParamKind kind);
// The entry the LM head reads (the embedding when tied).
const ParamEntry *param_lm_head(const ParamTable *t);

// Scratch-initialize a flat buffer the way HF LlamaForCausalLM does:
// matrices ~ N(0, init_std), norm weights = 1.
void param_init_random(const ParamTable *t, float *params, uint64_t seed, float init_std);
