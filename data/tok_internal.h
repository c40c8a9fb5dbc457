// tok_internal.h: tokenizer.c's helpers shared with the other tokenizer
// sources (bpe.c, tokjson.c, tiktoken.c, tokgguf.c). Not a public API.
#pragma once

#include <stddef.h>

#include "tokenizer.h"

// A Tokenizer with n empty pieces (kind TOK_SPM; callers change what differs).
Tokenizer *tok_alloc(int n);
// The piece hash over mergeable (normal and user) pieces: build, look up.
void build_index(Tokenizer *t);
int piece_lookup(const Tokenizer *t, const char *s, size_t n);
// Mark byte pieces and index a sentencepiece vocabulary (after its pieces,
// scores and types are set).
int finish_spm(Tokenizer *t, const char *path);

// The byte-level BPE specs (tokopen.c): tokenizer.json, tiktoken, GGUF,
// directories; also answers a tiktoken file given as `sp:`. Returns 1 when the
// spec is one of these (*out: the tokenizer, or NULL with ps_err_set), else 0.
int tok_open_ext(const char *spec, Tokenizer **out);

// ---------------------------------------------------------------------------
// HF files (tokjson.c)
#include <cjson/cJSON.h>

typedef struct {
    int id;
    char *content;
    int special, lstrip, rstrip, normalized;
} HfAddedToken;

typedef struct {
    HfAddedToken *v;
    int n;
} HfAdded;

// The directory of a file path ("." for a bare name); malloc'd.
char *tok_dir_of(const char *path);
// Read and parse a JSON file (size-bounded); NULL with ps_err_set (silent when
// quiet_missing and the file does not exist).
cJSON *hf_json_read(const char *path, int quiet_missing);
// tokenizer.json's "added_tokens" list or tokenizer_config.json's
// "added_tokens_decoder" object (key names the key in errors).
int hf_added_parse(const cJSON *x, const char *file, const char *key, HfAdded *out);
int hf_added_apply(Tokenizer *t, const HfAdded *a, const char *file);
void hf_added_free(HfAdded *a);
// bos/eos (and add_bos_token) from dir's tokenizer_config.json and config.json.
void hf_side_specials(Tokenizer *t, const char *dir, int *adds_bos, char *note, size_t note_cap);
// A parsed tokenizer.json (takes j); dir: where its side files are, or NULL.
Tokenizer *tok_hf_json_parse(const char *file, cJSON *j, const char *dir);
Tokenizer *tok_open_hf_json(const char *path);

// tiktoken.c: a tiktoken BPE file (lines "base64token rank").
int tiktoken_sniff(const char *path);  // 1: the file starts like a tiktoken file
Tokenizer *tok_open_tiktoken(const char *path);

// tokgguf.c: the tokenizer.ggml.* metadata of a GGUF file.
#include "gguf.h"
Tokenizer *tok_from_gguf(const GgufFile *g, const char *path);
Tokenizer *tok_open_gguf(const char *path);

// tokexport.c / tokgguf.c: a GGUF tokenizer's HF files (tok_export_hf); t is
// the tokenizer opened from g. 1 written, 0 no HF form (note), -1 error.
int tok_gguf_export_hf(const GgufFile *g, const char *path, const Tokenizer *t, const char *dir,
                       int ids[3], char *note, size_t note_cap);
// tokexport.c: write tokenizer_config.json and special_tokens_map.json for t's
// special tokens (bos/eos/unk/pad ids, -1 none); extra: more tokenizer_config keys (taken).
int tok_write_hf_side(const Tokenizer *t, const char *dir, const int ids[3], cJSON *extra);
// tokenizer.json's ByteLevel pre-tokenizer/decoder object (no prefix space).
cJSON *tok_json_byte_level(int use_regex);
