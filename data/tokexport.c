// tokexport.c: a tokenizer's HF files for a model export (tok_export_hf,
// tokenizer.h). GGUF tokenizers are written by tokgguf.c.
#define _POSIX_C_SOURCE 200809L
#include <string.h>

#include "bpe.h"
#include "common.h"
#include "jsonio.h"
#include "tok_internal.h"

// The tokenizer files of an HF model folder, copied as they are.
static const char *const HF_TOK_FILES[] = {"tokenizer.json",
                                           "tokenizer_config.json",
                                           "special_tokens_map.json",
                                           "tokenizer.model",
                                           "added_tokens.json",
                                           "vocab.json",
                                           "merges.txt",
                                           NULL};

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

// Copy src to dir/name byte for byte.
static int copy_to(const char *src, const char *dir, const char *name) {
    size_t n;
    char *buf = ps_read_file(src, &n);
    if (!buf) return -1;
    char *dst = ps_path_join(dir, name);
    int rc = ps_write_file_atomic(dst, buf, n);
    free(dst);
    free(buf);
    return rc;
}

// The tokenizer files of folder src (json: a tokenizer.json of another name in
// it, copied as tokenizer.json).
static int copy_hf_files(const char *src, const char *json, const char *dir) {
    for (int i = 0; HF_TOK_FILES[i]; i++) {
        char *p = i == 0 && json ? xstrdup(json) : ps_path_join(src, HF_TOK_FILES[i]);
        int rc = ps_is_file(p) ? copy_to(p, dir, HF_TOK_FILES[i]) : 0;
        free(p);
        if (rc) return -1;
    }
    return 1;
}

cJSON *tok_json_byte_level(int use_regex) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", 0);
    cJSON_AddBoolToObject(o, "trim_offsets", 1);
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static void add_token(cJSON *o, const char *key, const Tokenizer *t, int id) {
    if (id >= 0 && id < t->vocab_size && t->piece[id])
        cJSON_AddStringToObject(o, key, t->piece[id]);
}

int tok_write_hf_side(const Tokenizer *t, const char *dir, const int ids[3], cJSON *extra) {
    cJSON *cfg = extra ? extra : cJSON_CreateObject(), *map = cJSON_CreateObject();
    const char *keys[4] = {"bos_token", "eos_token", "pad_token", "unk_token"};
    const int v[4] = {ids[0], ids[1], ids[2], t->unk_id};
    for (int k = 0; k < 4; k++) {
        add_token(cfg, keys[k], t, v[k]);
        add_token(map, keys[k], t, v[k]);
    }
    cJSON_AddBoolToObject(cfg, "clean_up_tokenization_spaces", 0);
    char *p = ps_path_join(dir, "tokenizer_config.json");
    int rc = ps_json_write(p, cfg);
    free(p);
    p = ps_path_join(dir, "special_tokens_map.json");
    if (rc == 0) rc = ps_json_write(p, map);
    free(p);
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    return rc;
}

// The byte tokenizer as HF byte-level BPE: token b is byte b (in GPT-2's
// byte-to-unicode alphabet), no merges, no regex split, ByteLevel decoder.
static int write_byte(const Tokenizer *t, const char *dir) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON_AddArrayToObject(root, "added_tokens");
    cJSON_AddNullToObject(root, "normalizer");
    cJSON_AddItemToObject(root, "pre_tokenizer", tok_json_byte_level(0));
    cJSON_AddNullToObject(root, "post_processor");
    cJSON_AddItemToObject(root, "decoder", tok_json_byte_level(1));
    cJSON *m = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(m, "type", "BPE");
    cJSON_AddBoolToObject(m, "byte_fallback", 0);
    cJSON_AddBoolToObject(m, "ignore_merges", 0);
    cJSON *vocab = cJSON_AddObjectToObject(m, "vocab");
    char *str[256] = {0};
    for (unsigned cp = 0; cp < 512; cp++) {  // GPT-2's alphabet: the code points below 324
        int b = bpe_unicode_byte(cp);
        if (b < 0 || str[b]) continue;
        str[b] = xmalloc(4);
        str[b][0] = cp < 0x80 ? (char)cp : (char)(0xC0 | (cp >> 6));
        str[b][1] = cp < 0x80 ? 0 : (char)(0x80 | (cp & 0x3F));
        str[b][2] = 0;
    }
    int rc = 0;
    for (int b = 0; b < 256; b++) {
        if (!str[b])
            rc = ps_err_set("byte tokenizer export: byte %d has no byte-level character", b);
        if (str[b]) cJSON_AddNumberToObject(vocab, str[b], b);
        free(str[b]);
    }
    cJSON_AddArrayToObject(m, "merges");
    char *p = ps_path_join(dir, "tokenizer.json");
    if (rc == 0) rc = ps_json_write(p, root);
    free(p);
    cJSON_Delete(root);
    cJSON *extra = cJSON_CreateObject();
    cJSON_AddStringToObject(extra, "tokenizer_class", "PreTrainedTokenizerFast");
    int none[3] = {-1, -1, -1};
    if (rc == 0)
        rc = tok_write_hf_side(t, dir, none, extra);
    else
        cJSON_Delete(extra);
    return rc ? -1 : 1;
}

// A sentencepiece model: its .model copied as tokenizer.model, with the
// tokenizer_config.json of transformers' LlamaTokenizer.
static int write_spm(const Tokenizer *t, const char *model, const char *dir, const int ids[3]) {
    if (copy_to(model, dir, "tokenizer.model") != 0) return -1;
    cJSON *extra = cJSON_CreateObject();
    cJSON_AddStringToObject(extra, "tokenizer_class", "LlamaTokenizer");
    cJSON_AddBoolToObject(extra, "add_bos_token", 1);
    cJSON_AddBoolToObject(extra, "add_eos_token", 0);
    cJSON_AddBoolToObject(extra, "legacy", 1);
    return tok_write_hf_side(t, dir, ids, extra) ? -1 : 1;
}

// The sentencepiece .model of an spm spec: sp:PATH, *.model, or the .model with
// the stem of a llama2.c tokenizer.bin beside it; NULL when there is none.
static char *spm_model_of(const char *spec) {
    const char *p = !strncmp(spec, "sp:", 3)        ? spec + 3
                    : !strncmp(spec, "llama2c:", 8) ? spec + 8
                                                    : spec;
    if (has_suffix(p, ".model")) return xstrdup(p);
    if (!has_suffix(p, ".bin")) return NULL;
    size_t n = strlen(p);
    char *m = xmalloc(n + 3);
    memcpy(m, p, n - 4);
    strcpy(m + n - 4, ".model");
    if (ps_is_file(m)) return m;
    free(m);
    return NULL;
}

int tok_export_hf(const char *spec, const char *dir, int ids[3], char *note, size_t note_cap) {
    ids[0] = ids[1] = ids[2] = -1;
    if (note_cap) note[0] = 0;
    Tokenizer *t = tok_open(spec);
    if (!t) return -1;
    ids[0] = t->bos_id;
    ids[1] = t->eos_id;
    const char *hf = !strncmp(spec, "hf:", 3) ? spec + 3 : NULL;
    const char *gg = !strncmp(spec, "gguf:", 5)  ? spec + 5
                     : has_suffix(spec, ".gguf") ? spec
                                                 : NULL;
    int rc;
    if (!strcmp(spec, "byte")) {
        rc = write_byte(t, dir);
    } else if (gg) {
        GgufFile g;
        rc = gguf_open(gg, &g);
        if (rc == 0) {
            rc = tok_gguf_export_hf(&g, gg, t, dir, ids, note, note_cap);
            gguf_close(&g);
        }
    } else if ((hf && ps_is_dir(hf)) || (!hf && ps_is_dir(spec))) {
        rc = copy_hf_files(hf ? hf : spec, NULL, dir);
    } else if (hf || has_suffix(spec, ".json")) {
        const char *json = hf ? hf : spec;
        char *d = tok_dir_of(json);
        rc = copy_hf_files(d, json, dir);
        free(d);
    } else if (t->kind == TOK_SPM) {
        char *model = spm_model_of(spec);
        rc = model ? write_spm(t, model, dir, ids) : 0;
        if (!model)
            snprintf(note, note_cap,
                     "the llama2.c tokenizer %s has no HF form (pass the sentencepiece .model it "
                     "was made from, or put it beside it with the same stem)",
                     spec);
        free(model);
    } else {
        rc = 0;
        snprintf(note, note_cap,
                 "the tiktoken file %s alone has no HF tokenizer files here (pass the model "
                 "folder that holds its tokenizer.json)",
                 spec);
    }
    tok_free(t);
    return rc;
}

int tok_check_vocab(const char *spec, int model_vocab) {
    Tokenizer *t = tok_open(spec);
    if (!t) return -1;
    int v = t->vocab_size;
    tok_free(t);
    if (v > model_vocab)
        return ps_err_set("tokenizer %s has %d ids but the model's vocab_size is %d", spec, v,
                          model_vocab);
    return 0;
}
