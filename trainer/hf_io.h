// hf_io.h: import and export of HF LLaMA model directories (config.json +
// safetensors weights). Loading by MODEL spec is modelsrc.h's.
//
// The weights live on the host as one flat fp32 buffer laid out by the
// ParamTable (params.h); loading fills it tensor by tensor by HF name, saving
// walks the table in order.
#pragma once

#include "params.h"
#include "safetensors.h"

// Parse a transformers config.json into cfg. Only LLaMA is accepted
// (model_type "llama" / architectures containing "LlamaForCausalLM"), with an
// optional explicit head_dim and RoPE scaling "linear" or "llama3" (rope_scaling
// or rope_parameters); features the model does not implement (other RoPE
// scalings, attention/mlp biases, hidden_act other than silu) are rejected.
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

// What an export carries besides the weights: the special token ids of the
// model it came from, that model's generation_config.json, and the tokenizer
// written beside it (modelsrc.h's model_export_info fills it from a MODEL spec).
#define HF_MAX_EOS 8
typedef struct {
    int bos_id, pad_id;      // -1: unknown (null in config.json)
    int eos_id[HF_MAX_EOS];  // n_eos ids: a number in config.json, a list when more than one
    int n_eos;
    char tokenizer[1024];   // a tokenizer spec (tok_export_hf: its HF files); "": none
    char gen_config[1024];  // a generation_config.json copied byte for byte; "": one is written
    char from[1024];        // where the ids came from (messages)
} HfExport;
void hf_export_init(HfExport *x);
// The export info of an HF model folder (plain or compact shared): the ids from
// its config.json (bos_token_id, eos_token_id: a number or a list,
// pad_token_id), its generation_config.json, and the folder itself as the
// tokenizer when it holds tokenizer.json or tokenizer.model. 0, or -1 with ps_err set.
int hf_export_info(const char *dir, HfExport *x);

// Write DIR/config.json and DIR/model.safetensors; dtype is "float32" or
// "bfloat16" ("f32"/"fp32"/"bf16" also accepted). DIR is created if needed.
// Crash safety: an existing DIR/config.json is removed first, the weights are
// written atomically, and config.json is written (atomically) last, so a
// directory with a config.json always has complete, matching weights.
// A compact shared model (w->t.shared set) also gets DIR/plan.json, before
// config.json, and the "postshare_shared" marker in config.json.
// 0, or -1 with ps_err set.
int hf_save(const char *dir, const HostWeights *w, const char *dtype);
// hf_save that also writes what x describes (x NULL: the same as hf_save, no
// tokenizer and no ids): the tokenizer's HF files (tok_export_hf; a tokenizer
// that has no HF form, or fails to export, is a warning on stderr: the weights
// are still written), generation_config.json (x->gen_config copied, else
// written from the ids), and bos/eos/pad_token_id in config.json: x's, and
// where x has none, the tokenizer's (-1 everywhere: null). Every file is in
// place before config.json, and the whole folder is swapped in at once.
int hf_save_export(const char *dir, const HostWeights *w, const char *dtype, const HfExport *x);

// Describe every tensor of w (table order, HF names and shapes, fp32 source) for
// st_write in dtype dt; out has room for w->t.n entries. Returns w->t.n.
int hf_tensor_list(const HostWeights *w, StDtype dt, StWriteTensor *out);

// 1 when DIR/config.json marks a compact shared model (postshare share).
int hf_is_shared_dir(const char *dir);
