// tokjson.c: HF tokenizer.json (model BPE, ByteLevel pre-tokenizer) -> a
// byte-level BPE tokenizer (bpe.h), plus the HF side files read beside it and
// beside tiktoken files: tokenizer_config.json (added tokens, bos/eos names,
// add_bos_token) and config.json (bos/eos ids).
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <limits.h>
#include <string.h>

#include "bpe.h"
#include "common.h"
#include "tok_internal.h"

enum { MAX_ID = 1 << 22 };                       // largest accepted token id + 1
static const size_t MAX_JSON = (size_t)1 << 30;  // bytes of a tokenizer.json

void hf_added_free(HfAdded *a) {
    for (int i = 0; i < a->n; i++) free(a->v[i].content);
    free(a->v);
    a->v = NULL;
    a->n = 0;
}

static int get_bool(const cJSON *o, const char *key, int def) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(x) ? cJSON_IsTrue(x) : def;
}

// One added token object ({content, special, lstrip, rstrip, normalized, single_word}).
static int added_one(const cJSON *o, int id, const char *file, const char *key, HfAdded *out) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "content");
    if (!cJSON_IsObject(o) || !cJSON_IsString(c) || !c->valuestring[0])
        return ps_err_set("%s: %s: token %d has no content string", file, key, id);
    if (id < 0 || id >= MAX_ID)
        return ps_err_set("%s: %s: token id %d outside [0, %d)", file, key, id, MAX_ID);
    if (get_bool(o, "single_word", 0))
        return ps_err_set("%s: %s: token %d ('%.40s') is single_word, which is not supported", file,
                          key, id, c->valuestring);
    HfAddedToken *a = &out->v[out->n++];
    a->id = id;
    a->content = xmalloc(strlen(c->valuestring) + 1);
    strcpy(a->content, c->valuestring);
    a->special = get_bool(o, "special", 0);
    a->lstrip = get_bool(o, "lstrip", 0);
    a->rstrip = get_bool(o, "rstrip", 0);
    a->normalized = get_bool(o, "normalized", !a->special);
    return 0;
}

int hf_added_parse(const cJSON *x, const char *file, const char *key, HfAdded *out) {
    out->n = 0;
    out->v = NULL;
    if (!x || cJSON_IsNull(x)) return 0;
    int n = cJSON_GetArraySize(x);
    if (!cJSON_IsArray(x) && !cJSON_IsObject(x))
        return ps_err_set("%s: %s is not a list or an object", file, key);
    if (n > MAX_ID) return ps_err_set("%s: %s has %d entries (limit %d)", file, key, n, MAX_ID);
    out->v = xcalloc((size_t)n + 1, sizeof(HfAddedToken));
    const cJSON *o;
    cJSON_ArrayForEach(o, x) {
        int id;
        if (cJSON_IsArray(x)) {  // tokenizer.json: [{id, content, ...}]
            const cJSON *i = cJSON_GetObjectItemCaseSensitive(o, "id");
            // range first: converting an out-of-range double to int is undefined
            if (!cJSON_IsNumber(i) || !(i->valuedouble >= 0 && i->valuedouble < MAX_ID) ||
                i->valuedouble != (double)(int)i->valuedouble) {
                hf_added_free(out);
                return ps_err_set("%s: %s[%d] has no integer id in [0, %d)", file, key, out->n, MAX_ID);
            }
            id = (int)i->valuedouble;
        } else {  // tokenizer_config.json: {"ID": {content, ...}}
            char *end;
            long v = strtol(o->string, &end, 10);
            if (*end || end == o->string || v < 0 || v >= MAX_ID) {
                hf_added_free(out);
                return ps_err_set("%s: %s: key '%.40s' is not a token id", file, key, o->string);
            }
            id = (int)v;
        }
        if (added_one(o, id, file, key, out) != 0) {
            hf_added_free(out);
            return -1;
        }
    }
    return 0;
}

int hf_added_apply(Tokenizer *t, const HfAdded *a, const char *file) {
    for (int i = 0; i < a->n; i++) {
        const HfAddedToken *x = &a->v[i];
        if (bpe_set_token(t, x->id, x->content, strlen(x->content),
                          x->special ? TOK_PIECE_CONTROL : TOK_PIECE_USER, file) != 0 ||
            bpe_add_special(t, x->id, x->lstrip, x->rstrip, x->normalized, file) != 0)
            return -1;
    }
    return 0;
}

char *tok_dir_of(const char *path) {
    char *dir = xmalloc(strlen(path) + 2);
    strcpy(dir, path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        strcpy(dir, ".");
    return dir;
}

cJSON *hf_json_read(const char *path, int quiet_missing) {
    if (quiet_missing && !ps_is_file(path)) return NULL;
    size_t len;
    char *buf = ps_read_file_max(path, MAX_JSON, "a JSON tokenizer file", &len);
    if (!buf) return NULL;
    cJSON *j = cJSON_ParseWithLength(buf, len);
    if (!j) {
        const char *e = cJSON_GetErrorPtr();
        size_t at = e && e >= buf && e <= buf + len ? (size_t)(e - buf) : 0;
        ps_err_set("%s: not valid JSON (parse error near byte %zu of %zu)", path, at, len);
    }
    free(buf);
    return j;
}

// The id of a token given by its text (an added token's content or a raw
// vocabulary token), or -1.
static int id_of_text(const Tokenizer *t, const char *s) {
    size_t n = strlen(s);
    for (int id = 0; id < t->vocab_size; id++)
        if (t->type[id] == TOK_PIECE_CONTROL || t->type[id] == TOK_PIECE_USER)
            if ((size_t)t->piece_len[id] == n && memcmp(t->piece[id], s, n) == 0) return id;
    return n ? piece_lookup(t, s, n) : -1;
}

// A tokenizer_config.json special token entry: "text" or {"content": "text"}.
static const char *token_name(const cJSON *cfg, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(x)) x = cJSON_GetObjectItemCaseSensitive(x, "content");
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static char *side_path(const char *dir, const char *name) {
    return ps_path_join(dir && *dir ? dir : ".", name);
}

void hf_side_specials(Tokenizer *t, const char *dir, int *adds_bos, char *note, size_t note_cap) {
    char *p = side_path(dir, "tokenizer_config.json");
    cJSON *cfg = hf_json_read(p, 1);
    if (cfg) {
        const char *b = token_name(cfg, "bos_token"), *e = token_name(cfg, "eos_token");
        if (b) t->bos_id = id_of_text(t, b);
        if (e) t->eos_id = id_of_text(t, e);
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
        if (cJSON_IsBool(ab)) *adds_bos = cJSON_IsTrue(ab);
        snprintf(note, note_cap, "bos/eos from tokenizer_config.json");
        cJSON_Delete(cfg);
    }
    free(p);
    p = side_path(dir, "config.json");
    cJSON *mc = hf_json_read(p, 1);
    if (mc) {
        int *slot[2] = {&t->bos_id, &t->eos_id};
        const char *keys[2] = {"bos_token_id", "eos_token_id"};
        for (int k = 0; k < 2; k++) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(mc, keys[k]);
            if (cJSON_IsArray(x)) x = cJSON_GetArrayItem(x, 0);
            if (*slot[k] < 0 && cJSON_IsNumber(x) && x->valuedouble >= 0 &&
                x->valuedouble < t->vocab_size)
                *slot[k] = (int)x->valuedouble;
        }
        cJSON_Delete(mc);
    }
    free(p);
}

// ---------------------------------------------------------------------------
// tokenizer.json

typedef struct {
    const char *file;
    Tokenizer *t;
    int byte_level;
    char desc[160];
} Pre;

static const char *type_of(const cJSON *o) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(x) ? x->valuestring : "";
}

static void desc_add(Pre *p, const char *s) {
    size_t u = strlen(p->desc);
    snprintf(p->desc + u, sizeof p->desc - u, "%s%s", u ? "+" : "", s);
}

static int pre_tokenizer(Pre *p, const cJSON *o, int depth) {
    const char *ty = type_of(o);
    if (depth > 4) return ps_err_set("%s: pre_tokenizer: Sequence nested too deeply", p->file);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers"), *x;
        if (!cJSON_IsArray(seq))
            return ps_err_set("%s: pre_tokenizer: Sequence has no pretokenizers list", p->file);
        cJSON_ArrayForEach(x, seq) if (pre_tokenizer(p, x, depth + 1) != 0) return -1;
        return 0;
    }
    if (!strcmp(ty, "ByteLevel")) {
        int prefix = get_bool(o, "add_prefix_space", 0), re = get_bool(o, "use_regex", 1);
        p->byte_level = 1;
        desc_add(p, re ? "ByteLevel(gpt2 regex)" : "ByteLevel");
        if (!prefix && !re) return 0;
        return bpe_add_split(p->t, re ? BPE_GPT2_REGEX : NULL, 0, prefix,
                             "tokenizer.json pre_tokenizer ByteLevel");
    }
    if (!strcmp(ty, "Digits")) {
        int one = get_bool(o, "individual_digits", 0);
        desc_add(p, one ? "Digits(individual)" : "Digits");
        return bpe_add_split(p->t, one ? "\\p{N}" : "\\p{N}+", 0, 0, p->file);
    }
    if (!strcmp(ty, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(o, "behavior");
        if (!cJSON_IsString(re) && !cJSON_IsString(str))
            return ps_err_set(
                "%s: pre_tokenizer Split: pattern is neither {\"Regex\"} nor {\"String\"}",
                p->file);
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") != 0)
            return ps_err_set(
                "%s: pre_tokenizer Split: behavior '%s' is not supported (only Isolated)", p->file,
                cJSON_IsString(beh) ? beh->valuestring : "?");
        if (get_bool(o, "invert", 0))
            return ps_err_set("%s: pre_tokenizer Split: invert is not supported", p->file);
        desc_add(p, "Split");
        char where[300];
        snprintf(where, sizeof where, "%s: pre_tokenizer Split", p->file);
        return cJSON_IsString(re) ? bpe_add_split(p->t, re->valuestring, 0, 0, where)
                                  : bpe_add_split(p->t, str->valuestring, 1, 0, where);
    }
    return ps_err_set(
        "%s: pre_tokenizer '%s' is not supported (byte-level BPE takes ByteLevel, "
        "Split, Digits and Sequence)",
        p->file, ty);
}

// The BOS that post_processor's TemplateProcessing puts first, or NULL.
static const char *template_bos(const cJSON *pp, int depth) {
    const char *ty = type_of(pp);
    if (!strcmp(ty, "Sequence") && depth < 4) {
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(pp, "processors")) {
            const char *b = template_bos(x, depth + 1);
            if (b) return b;
        }
    }
    if (strcmp(ty, "TemplateProcessing") != 0) return NULL;
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pp, "single"), 0);
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(sp, "id");
    return cJSON_IsString(id) ? id->valuestring : NULL;
}

static int bad_model_key(const cJSON *model, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(model, key);
    if (!x || cJSON_IsNull(x) || cJSON_IsFalse(x)) return 0;
    if (cJSON_IsString(x) && !x->valuestring[0]) return 0;
    if (cJSON_IsNumber(x) && x->valuedouble == 0) return 0;
    return 1;
}

// merges[i]: "a b" or ["a", "b"] -> the byte strings of a and b.
static int merge_parts(const cJSON *x, const char **a, size_t *an, const char **b, size_t *bn) {
    if (cJSON_IsString(x)) {
        const char *s = x->valuestring, *sp = strchr(s, ' ');
        if (!sp || sp == s || !sp[1] || strchr(sp + 1, ' ')) return -1;
        *a = s, *an = (size_t)(sp - s), *b = sp + 1, *bn = strlen(sp + 1);
        return 0;
    }
    const cJSON *l = cJSON_GetArrayItem(x, 0), *r = cJSON_GetArrayItem(x, 1);
    if (!cJSON_IsArray(x) || cJSON_GetArraySize(x) != 2 || !cJSON_IsString(l) || !cJSON_IsString(r))
        return -1;
    *a = l->valuestring, *an = strlen(*a), *b = r->valuestring, *bn = strlen(*b);
    return 0;
}

static Tokenizer *fail_free(Tokenizer *t, cJSON *j, HfAdded *a) {
    tok_free(t);
    cJSON_Delete(j);
    if (a) hf_added_free(a);
    return NULL;
}

Tokenizer *tok_hf_json_parse(const char *file, cJSON *j, const char *dir) {
    HfAdded added = {0};
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (!cJSON_IsObject(model)) {
        ps_err_set("%s: no \"model\" object: not an HF tokenizer.json", file);
        return fail_free(NULL, j, NULL);
    }
    const char *mt = type_of(model);
    if (*mt && strcmp(mt, "BPE") != 0) {
        ps_err_set("%s: model type '%s' is not supported (only BPE)", file, mt);
        return fail_free(NULL, j, NULL);
    }
    if (bad_model_key(model, "byte_fallback")) {
        ps_err_set(
            "%s: model.byte_fallback: a sentencepiece-style BPE (Llama 2, Mistral) "
            "tokenizer.json is not supported; pass its tokenizer.model instead",
            file);
        return fail_free(NULL, j, NULL);
    }
    const char *unsupported[] = {"dropout", "continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 3; k++)
        if (bad_model_key(model, unsupported[k])) {
            ps_err_set("%s: model.%s is set, which is not supported", file, unsupported[k]);
            return fail_free(NULL, j, NULL);
        }
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        ps_err_set("%s: model.vocab (object) and model.merges (list) are required", file);
        return fail_free(NULL, j, NULL);
    }
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(j, "normalizer");
    if (norm && !cJSON_IsNull(norm) &&
        !(strcmp(type_of(norm), "Sequence") == 0 &&
          cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(norm, "normalizers")) == 0)) {
        ps_err_set(
            "%s: normalizer '%s' is not supported (byte-level BPE without a normalizer only)", file,
            type_of(norm));
        return fail_free(NULL, j, NULL);
    }
    if (hf_added_parse(cJSON_GetObjectItemCaseSensitive(j, "added_tokens"), file, "added_tokens",
                       &added) != 0)
        return fail_free(NULL, j, NULL);

    // ids: the vocabulary's and the added tokens'
    int max_id = -1, nv = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, vocab) {
        double v = cJSON_IsNumber(x) ? x->valuedouble : -1;
        if (v < 0 || v >= MAX_ID || v != (double)(int)v) {
            ps_err_set("%s: model.vocab['%.40s'] is not a token id in [0, %d)", file, x->string,
                       MAX_ID);
            return fail_free(NULL, j, &added);
        }
        if ((int)v > max_id) max_id = (int)v;
        nv++;
    }
    for (int i = 0; i < added.n; i++)
        if (added.v[i].id > max_id) max_id = added.v[i].id;
    if (max_id < 0) {
        ps_err_set("%s: model.vocab is empty", file);
        return fail_free(NULL, j, &added);
    }
    Tokenizer *t = bpe_alloc(max_id + 1);
    char *buf = NULL;
    size_t bufcap = 0;
    cJSON_ArrayForEach(x, vocab) {
        size_t n = strlen(x->string);
        if (n + 1 > bufcap) buf = xrealloc(buf, bufcap = 2 * n + 64);
        size_t bn = bpe_unmap_bytes(x->string, n, buf);
        char where[300];
        snprintf(where, sizeof where, "%s: model.vocab['%.40s']", file, x->string);
        if (bpe_set_token(t, (int)x->valuedouble, buf, bn, TOK_PIECE_NORMAL, where) != 0) {
            free(buf);
            return fail_free(t, j, &added);
        }
    }
    build_index(t);  // for the merges' lookups; bpe_finish indexes again

    int nm = cJSON_GetArraySize(merges), rank = 0;
    if (nm > 8 * MAX_ID) {
        ps_err_set("%s: model.merges has %d entries (limit %d)", file, nm, 8 * MAX_ID);
        free(buf);
        return fail_free(t, j, &added);
    }
    cJSON_ArrayForEach(x, merges) {
        const char *a, *b;
        size_t an, bn;
        if (merge_parts(x, &a, &an, &b, &bn) != 0) {
            ps_err_set("%s: model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", file, rank);
            free(buf);
            return fail_free(t, j, &added);
        }
        int miss = bpe_add_merge_strings(t, a, an, b, bn, rank);
        if (miss) {
            ps_err_set("%s: model.merges[%d] ('%.*s' + '%.*s'): %s is not in model.vocab", file,
                       rank, (int)(an < 40 ? an : 40), a, (int)(bn < 40 ? bn : 40), b,
                       miss == 1   ? "the left part"
                       : miss == 2 ? "the right part"
                                   : "the merged token");
            free(buf);
            return fail_free(t, j, &added);
        }
        rank++;
    }
    free(buf);
    if (hf_added_apply(t, &added, file) != 0) return fail_free(t, j, &added);

    Pre p = {file, t, 0, ""};
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer");
    if (!pre || cJSON_IsNull(pre)) {
        ps_err_set("%s: no pre_tokenizer: not a byte-level BPE tokenizer.json", file);
        return fail_free(t, j, &added);
    }
    if (pre_tokenizer(&p, pre, 0) != 0) return fail_free(t, j, &added);
    if (!p.byte_level) {
        ps_err_set(
            "%s: the pre_tokenizer has no ByteLevel step: not a byte-level BPE (only those "
            "are supported)",
            file);
        return fail_free(t, j, &added);
    }
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk)) t->unk_id = id_of_text(t, unk->valuestring);

    int adds_bos = 0;
    const char *bos = template_bos(cJSON_GetObjectItemCaseSensitive(j, "post_processor"), 0);
    if (bos && (t->bos_id = id_of_text(t, bos)) >= 0) adds_bos = 1;
    char note[80] = "no tokenizer_config.json";
    if (dir) hf_side_specials(t, dir, &adds_bos, note, sizeof note);
    bpe_set_flags(t, get_bool(model, "ignore_merges", 0), adds_bos && t->bos_id >= 0);
    if (bpe_finish(t, file) != 0) return fail_free(t, j, &added);
    snprintf(t->desc, sizeof t->desc,
             "byte-level BPE %.200s: %d ids (%d in the vocabulary, %d added), %d merges, "
             "pre-tokenizer %s%s; bos %d (%s), eos %d (%s)",
             file, t->vocab_size, nv, added.n, rank, p.desc,
             get_bool(model, "ignore_merges", 0) ? ", ignore_merges" : "", t->bos_id,
             adds_bos && t->bos_id >= 0 ? "added" : "not added", t->eos_id, note);
    hf_added_free(&added);
    cJSON_Delete(j);
    return t;
}

Tokenizer *tok_open_hf_json(const char *path) {
    cJSON *j = hf_json_read(path, 0);
    if (!j) return NULL;
    char *dir = tok_dir_of(path);
    Tokenizer *t = tok_hf_json_parse(path, j, dir);
    free(dir);
    return t;
}
