// tokopen.c: the tokenizer specs of the byte-level BPE family (tok_open
// hands them here): tokenizer.json, tiktoken, GGUF and model directories.
#define _POSIX_C_SOURCE 200809L
#include <string.h>

#include "common.h"
#include "tok_internal.h"

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static Tokenizer *open_model_file(const char *path) {
    if (tiktoken_sniff(path)) return tok_open_tiktoken(path);
    char *spec = xmalloc(strlen(path) + 4);
    strcpy(spec, "sp:");
    strcat(spec, path);
    Tokenizer *t = tok_open(spec);
    free(spec);
    return t;
}

// An HF model directory: tokenizer.json, else tokenizer.model (tiktoken or sentencepiece).
static Tokenizer *open_dir(const char *dir) {
    char *p = ps_path_join(dir, "tokenizer.json");
    Tokenizer *t = NULL;
    if (ps_is_file(p)) {
        t = tok_open_hf_json(p);
    } else {
        free(p);
        p = ps_path_join(dir, "tokenizer.model");
        if (ps_is_file(p))
            t = open_model_file(p);
        else
            ps_err_set("%s: a directory without tokenizer.json or tokenizer.model", dir);
    }
    free(p);
    return t;
}

int tok_open_ext(const char *spec, Tokenizer **out) {
    *out = NULL;
    if (!strncmp(spec, "tiktoken:", 9)) {
        *out = tok_open_tiktoken(spec + 9);
    } else if (!strncmp(spec, "hf:", 3)) {
        *out = ps_is_dir(spec + 3) ? open_dir(spec + 3) : tok_open_hf_json(spec + 3);
    } else if (!strncmp(spec, "sp:", 3)) {
        if (!tiktoken_sniff(spec + 3)) return 0;
        ps_err_set(
            "%s is a tiktoken BPE file (base64 token and rank per line, like Llama 3's "
            "tokenizer.model), not a sentencepiece model: pass it as tiktoken:%s, or pass "
            "the model directory or its tokenizer.json",
            spec + 3, spec + 3);
    } else if (!strncmp(spec, "gguf:", 5)) {
        *out = tok_open_gguf(spec + 5);
    } else if (has_suffix(spec, ".gguf")) {
        *out = tok_open_gguf(spec);
    } else if (has_suffix(spec, ".json")) {
        *out = tok_open_hf_json(spec);
    } else if (has_suffix(spec, ".model") && tiktoken_sniff(spec)) {
        *out = tok_open_tiktoken(spec);
    } else if (ps_is_dir(spec)) {
        *out = open_dir(spec);
    } else {
        return 0;
    }
    return 1;
}
