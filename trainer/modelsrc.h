// modelsrc.h: the one loader above the model formats. It parses a MODEL spec
// and calls the format's reader; the formats (hf_io, llama2c, gguf_llama,
// checkpoint, share's compact models) never call back up into it.
//
// Specs: "hf:DIR", "shared:DIR" (a compact shared model), "llama2c:FILE",
// "gguf:FILE" (llama.cpp), "ckpt:FILE" (a training checkpoint's fp32 master
// weights), or a bare path: a directory loads as HF, or as a compact shared
// model when its config.json says so; a file ending in .bin as llama2.c, .gguf
// as GGUF, .h5 as a checkpoint.
#pragma once

#include "hf_io.h"
#include "params.h"

// Always a full model: a compact shared model is materialized (share_materialize).
// 0, or -1 with ps_err set.
int model_load_any(const char *spec, HostWeights *w);
// The same, but a compact shared model stays compact (w->t.shared set);
// for inference (eval, generate), which runs it without materializing it.
int model_load_any_shared(const char *spec, HostWeights *w);

// What an HF export of the model `spec` carries besides its weights
// (hf_save_export): the special ids and generation_config.json of an HF folder,
// the ids and the tokenizer of a GGUF file (tokenizer.ggml.*), llama2.c's ids
// 1/2 (its tokenizer is a separate file: pass it as `tokenizer`), and for a
// training checkpoint those of its job's model.init with its data.tokenizer.
// tokenizer (NULL or ""): the tokenizer spec to export instead of the source's.
// 0, or -1 with ps_err set.
int model_export_info(const char *spec, const char *tokenizer, HfExport *x);
