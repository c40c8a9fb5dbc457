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
    int head_dim;        // hd; 0: dim / n_heads (HF's default when config.json has no head_dim)
    // RoPE scaling (HF rope_scaling / rope_parameters); ROPE_DEFAULT: plain RoPE and
    // the fields below are 0.
    int rope_type;                // RopeType
    float rope_factor;            // linear, llama3: frequencies divided by this
    float rope_low_freq_factor;   // llama3
    float rope_high_freq_factor;  // llama3
    int rope_orig_max_pos;        // llama3: original_max_position_embeddings
} LlamaConfig;

typedef enum { ROPE_DEFAULT = 0, ROPE_LINEAR = 1, ROPE_LLAMA3 = 2 } RopeType;
// "default", "linear", "llama3" (HF's rope_type names)
const char *rope_type_name(int rope_type);

static inline int cfg_head_dim(const LlamaConfig *c) {
    return c->head_dim > 0 ? c->head_dim : c->dim / c->n_heads;
}

// Upper bounds on a model's shape (every reader of a shape from a file applies
// them through llama_config_validate before anything is allocated): well above
// every released LLaMA (405B: C 16384, F 53248, L 126, nh 128, V 128256), low
// enough that every product of two of them fits in int64 and a count of units
// (L x nkv) or table entries (9 L + 3) in int.
#define PS_MAX_DIM 65536
#define PS_MAX_FFN (1 << 20)
#define PS_MAX_LAYERS 1024
#define PS_MAX_HEADS 1024
#define PS_MAX_VOCAB (1 << 24)
#define PS_MAX_PARAMS (1ULL << 40)  // 4 TiB of fp32

// The RoPE inverse frequencies inv_freq[hd/2] that HF's LlamaRotaryEmbedding
// uses for this config: theta^(-2i/hd), then the rope_type's scaling. Computed
// once on the host (in double, rounded to fp32) and given to both backends'
// rope ops, so the CPU and CUDA rotations use the same frequencies.
void rope_inv_freq(const LlamaConfig *c, float *inv_freq);

// Validate a config; returns 0 or -1 with ps_err set (names the bad field).
// Also bounds the shape (PS_MAX_*) and the parameter count.
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

// A sharing plan (made, checked and read/written by share.h; the types live
// here because the layout of a compact shared model follows from one).
// Match functions: which slices of a unit make its match vector.
// MATCH_QK..MATCH_QKV: cosine of concatenated slices; MATCH_CIRCUIT: the
// symmetry-aware circuit similarity (align.h); MATCH_CALIB: the calibration-aware
// output-error score (calib.h); MATCH_IMPORTANCE: that error scaled by the
// target's measured head importance (calib.h); MATCH_MEASURED: that error scaled
// by the loss increase measured when the target shares its best source (calib.h).
typedef enum {
    MATCH_QK = 0,
    MATCH_Q,
    MATCH_K,
    MATCH_V,
    MATCH_QKV,
    MATCH_CIRCUIT,
    MATCH_CALIB,
    MATCH_IMPORTANCE,
    MATCH_MEASURED
} ShareMatchFn;

// One replaced unit: (layer, unit) uses the weights of (src_layer, src_unit).
typedef struct {
    int layer, unit, src_layer, src_unit;
    float sim;  // similarity of the pair under the plan's match function
} ShareEntry;

typedef struct SharePlan {
    LlamaConfig cfg;       // the model shape the plan is for (shape fields only)
    char fingerprint[40];  // "fnv1a64:<16 hex>" of the attention weights (share_fingerprint)
    ShareMatchFn match;
    double ratio;
    int n;          // replaced units
    ShareEntry *e;  // [n], ordered by (layer, unit)
} SharePlan;

// src[L*U] from a plan: each unit's source unit, itself when it keeps its weights.
void share_plan_src(const SharePlan *p, int *src);
void share_plan_copy(SharePlan *dst, const SharePlan *src);
void share_plan_free(SharePlan *p);

// Where each attention unit of a compact shared model (postshare share, see
// docs/sharing.md) finds its weights. A unit is a KV group: its G = nh/nkv
// query heads plus their K/V head (under MHA, G = 1: one head). Unit u of layer
// l (flat index i = l*U + u) owns rows u*G*hd..(u+1)*G*hd of Wq, rows
// u*hd..(u+1)*hd of Wk and Wv, and the same columns of Wo as its Wq rows. In
// the compact table, layer l's q/k/v_proj keep only the rows of the units it
// owns and o_proj only their columns, in unit order; a replaced unit reads its
// source's slices from the source layer's tensors.
typedef struct {
    int units;   // U = n_kv_heads
    int group;   // G = n_heads / n_kv_heads query heads per unit
    int *src;    // [L*U] flat unit whose weights unit i uses: i itself when it owns them
    int *slot;   // [L*U] position of an owning unit among its layer's owned units; -1 if replaced
    int *n_own;  // [L] owned units per layer
    int n_replaced;
    SharePlan plan;  // the plan the layout comes from (a copy, saved with the model)
} ShareLayout;

typedef struct {
    LlamaConfig cfg;
    ShareLayout *shared;  // NULL: a full model; else a compact shared model (owned)
    int n;                // number of tensors
    ParamEntry *e;        // [n], in layout order
    size_t total;         // total elements in the flat buffer
    // quick access: index into e[] per (layer, kind), -1 if absent
    int *layer_idx;                  // [n_layers * P_NUM_KINDS]
    int embed, final_norm, lm_head;  // lm_head == embed when tied
} ParamTable;

void param_table_build(ParamTable *t, const LlamaConfig *cfg);
// The table of a compact shared model under a plan already checked for this
// shape (share_plan_read/check): like param_table_build, but layer l's q/k/v_proj
// are [n_own[l]*G*hd, C], [n_own[l]*hd, C] and o_proj [C, n_own[l]*G*hd] (see
// ShareLayout). A source must keep its own weights (no chains).
void param_table_build_shared(ParamTable *t, const LlamaConfig *cfg, const SharePlan *plan);
// Deep copy (the share layout included).
void param_table_copy(ParamTable *dst, const ParamTable *src);
void param_table_free(ParamTable *t);
// Index of the tensor with this HF name, or -1.
int param_table_find(const ParamTable *t, const char *name);
// Entry for (layer, kind); kind in P_ATTN_NORM..P_W_DOWN.
const ParamEntry *param_layer(const ParamTable *t, int layer, ParamKind kind);
// The entry the LM head reads (the embedding when tied).
const ParamEntry *param_lm_head(const ParamTable *t);

// A model on the host: a table and its flat fp32 buffer. Every model format
// reads into one (hf_io, llama2c, gguf_llama, checkpoint, share's compact models).
// A compact shared model (postshare share) is one whose table is compact (t.shared set).
typedef struct {
    ParamTable t;
    float *params;  // [t.total] fp32, layout from the table
} HostWeights;

void host_weights_free(HostWeights *w);

// Interleaved RoPE rows (llama2.c, and llama.cpp's GGUF q/k, which its converter
// permutes so) to HF's rotate_half order, for one projection src[n_heads*hd, cols]:
// within each head, row 2j becomes row j and row 2j+1 becomes row hd/2 + j, i.e.
// torch's w.view(n_heads, hd/2, 2, cols).transpose(1, 2).reshape(n_heads*hd, cols)
// (HF's convert_llama_weights_to_hf.py; the inverse of convert_hf_to_gguf.py's
// permute). src and dst must not overlap.
void rope_rows_to_hf(float *dst, const float *src, int n_heads, int hd, int cols);

// config.json pieces shared by hf_io.c and share.c (plans):
struct cJSON;
// A JSON number for a float in its shortest form that reads back as the same float.
struct cJSON *hf_json_float(float x);
// Add c's shape to a JSON object under config.json's names: hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
// head_dim, vocab_size.
void hf_json_add_shape(struct cJSON *o, const LlamaConfig *c);

// Scratch-initialize a flat buffer the way HF LlamaForCausalLM does:
// matrices ~ N(0, init_std), norm weights = 1.
void param_init_random(const ParamTable *t, float *params, uint64_t seed, float init_std);
