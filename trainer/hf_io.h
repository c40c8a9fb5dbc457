// hf_io.h: import and export of HF LLaMA model directories (config.json +
// safetensors weights), and model_load_any, which picks the loader from a spec.
//
// The weights live on the host as one flat fp32 buffer laid out by the
// ParamTable (params.h); loading fills it tensor by tensor by HF name, saving
// walks the table in order.
#pragma once

#include "params.h"
#include "safetensors.h"

struct cJSON;

// A compact shared model (postshare share) is a HostWeights whose table is
// compact (t.shared set, with its plan: see params.h).
typedef struct {
    ParamTable t;
    float *params;  // [t.total] fp32, layout from the table
} HostWeights;

// Parse a transformers config.json into cfg. Only plain LLaMA is accepted
// (model_type "llama" / architectures containing "LlamaForCausalLM"); features
// the model does not implement (rope_scaling, attention/mlp biases, a head_dim
// other than hidden/heads, hidden_act other than silu) are rejected.
// 0, or -1 with ps_err naming the file and the problem.
int hf_read_config(const char *config_json_path, LlamaConfig *cfg);

// A compact shared model's config.json (written by postshare share) carries the
// key "postshare_shared"; hf_read_config rejects it, so that such a folder is
// never taken for a plain HF model (load it with hf_load_shared or model_load_any).

// Load DIR/config.json and DIR/model.safetensors (or the shards listed in
// DIR/model.safetensors.index.json). Every tensor of the table must be present
// with exactly its HF shape (F32, F16 or BF16). Ignored: the rotary
// "inv_freq" buffers, and lm_head.weight in a tied checkpoint (the embedding is
// the one source, as in transformers). Any other tensor is an error.
// 0, or -1 with ps_err set (w is then left empty).
int hf_load(const char *dir, HostWeights *w);
// Load a compact shared model folder (postshare share): config.json with
// "postshare_shared", plan.json (share_plan_read, then checked against the
// config) and model.safetensors with the compact shapes the plan implies
// (param_table_build_shared), kept compact: w->t.shared is set.
// 0, or -1 with ps_err set.
int hf_load_shared(const char *dir, HostWeights *w);

// An HF folder opened without loading it: its config and its model.safetensors
// mapped read-only and validated (st_open), for reading single tensors in
// place (postshare match). Sharded folders are not mapped (-1: load them).
// 0, or -1 with ps_err set.
typedef struct {
    LlamaConfig cfg;
    int n;      // files
    StFile *f;  // [n]
} HfMapped;
int hf_map(const char *dir, HfMapped *m);
// The tensor of that name and its file, or NULL.
const StTensor *hf_mapped_find(const HfMapped *m, const char *name, const StFile **file);
void hf_unmap(HfMapped *m);

// Write DIR/config.json and DIR/model.safetensors; dtype is "float32" or
// "bfloat16" ("f32"/"fp32"/"bf16" also accepted). DIR is created if needed.
// Crash safety: an existing DIR/config.json is removed first, the weights are
// written atomically, and config.json is written (atomically) last, so a
// directory with a config.json always has complete, matching weights.
// A compact shared model (w->t.shared set) also gets DIR/plan.json, before
// config.json, and the "postshare_shared" marker in config.json.
// 0, or -1 with ps_err set.
int hf_save(const char *dir, const HostWeights *w, const char *dtype);

// A JSON number for a float in its shortest form that reads back as the same float.
struct cJSON *hf_json_float(float x);
// Add c's shape to a JSON object under config.json's names: hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
// head_dim, vocab_size.
void hf_json_add_shape(struct cJSON *o, const LlamaConfig *c);

// Describe every tensor of w (table order, HF names and shapes, fp32 source) for
// st_write in dtype dt; out has room for w->t.n entries. Returns w->t.n.
int hf_tensor_list(const HostWeights *w, StDtype dt, StWriteTensor *out);

void host_weights_free(HostWeights *w);

// Load a model from a spec: "hf:DIR", "llama2c:FILE", "shared:DIR",
// "ckpt:FILE" (a training checkpoint's fp32 master weights), or a bare path (a
// directory loads as HF, or as a compact shared model when its config.json
// says so; a file ending in .bin as llama2.c, one ending in .h5 as a
// checkpoint). Always gives a full model: a compact shared model is
// materialized (share_materialize).
// 0, or -1 with ps_err set.
int model_load_any(const char *spec, HostWeights *w);
// The same, but a compact shared model stays compact (w->t.shared set);
// for inference (eval), which runs it without materializing it.
int model_load_any_shared(const char *spec, HostWeights *w);
