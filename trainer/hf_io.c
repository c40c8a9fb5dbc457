// hf_io.c: HF LLaMA directory import/export (config.json + safetensors); see hf_io.h.
//
// Loading is strict on purpose: a checkpoint is accepted only when it is
// exactly the model the config describes (every table tensor present once with
// its HF shape, nothing unknown), because a silently ignored tensor (a bias, a
// scaling factor) would make our forward pass differ from the one the weights
// were trained with.
#define _POSIX_C_SOURCE 200809L
#include "hf_io.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "jsonio.h"
#include "safetensors.h"
#include "share.h"
#include "tokenizer.h"

// ---------------------------------------------------------------------------
// config.json

// Integer field: absent/null -> def (or an error when def < 0); else a
// positive integer.
static int cfg_int(const cJSON *root, const char *path, const char *key, int def, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (def < 0) return ps_err_set("%s: required key \"%s\" is missing", path, key);
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!(d > 0) || d != floor(d) || d > 2147483647.0)
        return ps_err_set("%s: \"%s\" must be a positive integer", path, key);
    *out = (int)d;
    return 0;
}

static int cfg_pos_float(const cJSON *root, const char *path, const char *key, float def,
                         float *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || !isfinite((float)v->valuedouble))
        return ps_err_set("%s: \"%s\" must be a positive number within float range", path, key);
    *out = (float)v->valuedouble;
    return 0;
}

static int cfg_bool(const cJSON *root, const char *path, const char *key, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        *out = 0;
        return 0;
    }
    if (!cJSON_IsBool(v)) return ps_err_set("%s: \"%s\" must be true or false", path, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

// Check that this is a plain LLaMA and that no unsupported feature is on.
static int check_arch(const cJSON *root, const char *path) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const char *first_arch = NULL;
    int has_llama = 0;
    if (cJSON_IsArray(ar)) {
        const cJSON *a;
        cJSON_ArrayForEach(a, ar) {
            if (!cJSON_IsString(a)) continue;
            if (!first_arch) first_arch = a->valuestring;
            if (strcmp(a->valuestring, "LlamaForCausalLM") == 0) has_llama = 1;
        }
    }
    if (mt && !cJSON_IsNull(mt)) {
        if (!cJSON_IsString(mt)) return ps_err_set("%s: \"model_type\" must be a string", path);
        if (strcmp(mt->valuestring, "llama") != 0)
            return ps_err_set(
                "%s: unsupported architecture: model_type \"%s\"%s%s%s; only "
                "LLaMA (model_type \"llama\", LlamaForCausalLM) is supported",
                path, mt->valuestring, first_arch ? " (architectures: " : "",
                first_arch ? first_arch : "", first_arch ? ")" : "");
    }
    if (first_arch && !has_llama)
        return ps_err_set(
            "%s: unsupported architecture \"%s\"; only LlamaForCausalLM is "
            "supported",
            path, first_arch);
    if ((!mt || cJSON_IsNull(mt)) && !has_llama)
        return ps_err_set(
            "%s: neither \"model_type\": \"llama\" nor \"architectures\": "
            "[\"LlamaForCausalLM\"] is given; cannot tell this is a LLaMA model",
            path);

    // Features our LLaMA does not implement: refuse rather than compute something else.
    const char *bias_keys[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, bias_keys[i]);
        if (cJSON_IsTrue(b))
            return ps_err_set("%s: %s = true is not supported (the model has no biases)", path,
                              bias_keys[i]);
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && !cJSON_IsNull(act) &&
        !(cJSON_IsString(act) && strcmp(act->valuestring, "silu") == 0))
        return ps_err_set("%s: hidden_act \"%s\" is not supported; only \"silu\"", path,
                          cJSON_IsString(act) ? act->valuestring : "?");
    return 0;
}

// A positive number from a rope_scaling object; key is "rope_scaling" or "rope_parameters".
static int rope_num(const cJSON *rs, const char *path, const char *key, const char *field,
                    double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rs, field);
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0))
        return ps_err_set("%s: %s.%s must be a positive number%s", path, key, field,
                          v ? "" : " (missing)");
    *out = v->valuedouble;
    return 0;
}

// rope_scaling (transformers 4) / rope_parameters (transformers 5): null, plain
// RoPE ({"rope_type": "default"}), "linear" (factor) or "llama3" (factor,
// low_freq_factor, high_freq_factor, original_max_position_embeddings). A
// rope_theta given inside (transformers 5) overrides c->rope_theta. Other types
// (dynamic, yarn, longrope, ...) and unknown fields are refused by name.
static int read_rope(const cJSON *root, const char *path, const char *key, LlamaConfig *c) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!rs || cJSON_IsNull(rs)) return 0;
    if (!cJSON_IsObject(rs)) return ps_err_set("%s: \"%s\" must be an object or null", path, key);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!ty) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *tn = ty ? (cJSON_IsString(ty) ? ty->valuestring : "?") : "default";
    int type;
    if (!strcmp(tn, "default"))
        type = ROPE_DEFAULT;
    else if (!strcmp(tn, "linear"))
        type = ROPE_LINEAR;
    else if (!strcmp(tn, "llama3"))
        type = ROPE_LLAMA3;
    else
        return ps_err_set(
            "%s: %s of type \"%s\" is not supported (supported: default, linear, llama3; "
            "dynamic, yarn, longrope and others change RoPE with the sequence length or "
            "need attention scaling this model does not implement)",
            path, key, tn);
    double v = 0;
    for (const cJSON *e = rs->child; e; e = e->next) {
        const char *f = e->string;
        if (!strcmp(f, "rope_type") || !strcmp(f, "type")) continue;
        if (!strcmp(f, "rope_theta")) {
            if (rope_num(rs, path, key, f, &v)) return -1;
            c->rope_theta = (float)v;
            continue;
        }
        int ok = (type != ROPE_DEFAULT && !strcmp(f, "factor")) ||
                 (type == ROPE_LLAMA3 &&
                  (!strcmp(f, "low_freq_factor") || !strcmp(f, "high_freq_factor") ||
                   !strcmp(f, "original_max_position_embeddings")));
        if (!ok)
            return ps_err_set("%s: %s of type \"%s\" with \"%s\" is not supported", path, key, tn,
                              f);
    }
    if (type == ROPE_DEFAULT) return 0;
    LlamaConfig prev = *c;  // rope_scaling's, when rope_parameters repeats it
    c->rope_type = type;
    if (rope_num(rs, path, key, "factor", &v)) return -1;
    c->rope_factor = (float)v;
    if (type == ROPE_LLAMA3) {
        if (rope_num(rs, path, key, "low_freq_factor", &v)) return -1;
        c->rope_low_freq_factor = (float)v;
        if (rope_num(rs, path, key, "high_freq_factor", &v)) return -1;
        c->rope_high_freq_factor = (float)v;
        if (rope_num(rs, path, key, "original_max_position_embeddings", &v)) return -1;
        if (v != (int)v)
            return ps_err_set(
                "%s: %s.original_max_position_embeddings must be an "
                "integer",
                path, key);
        c->rope_orig_max_pos = (int)v;
    }
    if (prev.rope_type != ROPE_DEFAULT &&
        (prev.rope_type != c->rope_type || prev.rope_factor != c->rope_factor ||
         prev.rope_low_freq_factor != c->rope_low_freq_factor ||
         prev.rope_high_freq_factor != c->rope_high_freq_factor ||
         prev.rope_orig_max_pos != c->rope_orig_max_pos))
        return ps_err_set("%s: rope_scaling and rope_parameters give different scalings", path);
    return 0;
}

// The key that marks a compact shared model's config.json; its value names the
// plan file in the folder: "postshare_shared": {"plan": "plan.json"}.
#define SHARED_KEY "postshare_shared"

// Shard and plan file names come from JSON: plain names inside DIR only.
static int bad_file_name(const char *s) {
    return !s[0] || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0;
}

// hf_read_config, for a plain model (want_shared 0) or a compact shared one
// (want_shared 1: the marker is required and plan_name[256] receives its plan file).
static int read_config(const char *path, LlamaConfig *cfg, int want_shared, char *plan_name) {
    size_t len;
    char *txt = ps_read_file(path, &len);
    if (!txt) return -1;
    cJSON *root = ps_json_parse(txt, len, path);
    free(txt);
    if (!root) return -1;
    int rc = -1;
    LlamaConfig c;
    memset(&c, 0, sizeof c);
    if (!cJSON_IsObject(root)) {
        ps_err_set("%s: malformed config: not a JSON object", path);
        goto done;
    }
    const cJSON *mark = cJSON_GetObjectItemCaseSensitive(root, SHARED_KEY);
    if (mark && !want_shared) {
        ps_err_set(
            "%s: this folder holds a compact shared model (written by postshare share), not a "
            "plain HF model; load it by its bare path or as shared:DIR",
            path);
        goto done;
    }
    if (want_shared) {
        const cJSON *pn = cJSON_GetObjectItemCaseSensitive(mark, "plan");
        if (!mark) {
            ps_err_set("%s: not a compact shared model (no \"" SHARED_KEY "\" key)", path);
            goto done;
        }
        if (!cJSON_IsString(pn) || bad_file_name(pn->valuestring) ||
            strlen(pn->valuestring) >= 256) {
            ps_err_set("%s: \"" SHARED_KEY
                       "\" must be {\"plan\": FILE} naming a file in the folder",
                       path);
            goto done;
        }
        snprintf(plan_name, 256, "%s", pn->valuestring);
    }
    if (check_arch(root, path)) goto done;
    if (cfg_int(root, path, "hidden_size", -1, &c.dim) ||
        cfg_int(root, path, "num_hidden_layers", -1, &c.n_layers) ||
        cfg_int(root, path, "num_attention_heads", -1, &c.n_heads) ||
        cfg_int(root, path, "intermediate_size", -1, &c.ffn_dim) ||
        cfg_int(root, path, "vocab_size", -1, &c.vocab_size))
        goto done;
    if (cfg_int(root, path, "num_key_value_heads", c.n_heads, &c.n_kv_heads)) goto done;
    // very old conversions call it max_sequence_length; 2048 is LLaMA-1's context
    int msl = 2048;
    if (cfg_int(root, path, "max_sequence_length", 2048, &msl) ||
        cfg_int(root, path, "max_position_embeddings", msl, &c.max_seq_len))
        goto done;
    if (cfg_pos_float(root, path, "rope_theta", 10000.0f, &c.rope_theta) ||
        cfg_pos_float(root, path, "rms_norm_eps", 1e-6f, &c.norm_eps) ||
        cfg_bool(root, path, "tie_word_embeddings", &c.tie_embeddings) ||
        read_rope(root, path, "rope_scaling", &c) || read_rope(root, path, "rope_parameters", &c))
        goto done;
    // head_dim: absent means hidden_size / num_attention_heads (stored as 0)
    int hd = 0;
    if (cfg_int(root, path, "head_dim", 0, &hd)) goto done;
    if (hd && !(c.dim % c.n_heads == 0 && hd == c.dim / c.n_heads)) c.head_dim = hd;
    if (llama_config_validate(&c) != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ps_err_msg());
        ps_err_set("%s: invalid config: %s", path, msg);
        goto done;
    }
    *cfg = c;
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

int hf_read_config(const char *path, LlamaConfig *cfg) {
    return read_config(path, cfg, 0, NULL);
}

// ---------------------------------------------------------------------------
// loading

int hf_tensor_list(const HostWeights *w, StDtype dt, StWriteTensor *out) {
    for (int i = 0; i < w->t.n; i++) {
        const ParamEntry *e = &w->t.e[i];
        memset(&out[i], 0, sizeof out[i]);
        out[i].name = e->name;
        out[i].dtype = dt;
        out[i].ndim = e->ndim;
        out[i].shape[0] = e->shape[0];
        out[i].shape[1] = e->shape[1];
        out[i].f32 = w->params + e->offset;
    }
    return w->t.n;
}


// "model.layers.<N>.self_attn.rotary_emb.inv_freq" (old transformers saved the
// RoPE frequencies as a buffer) or "model.rotary_emb.inv_freq": derived from the
// config, never trained, so ignored.
static int is_inv_freq(const char *name) {
    if (strcmp(name, "model.rotary_emb.inv_freq") == 0) return 1;
    const char *pre = "model.layers.", *suf = ".self_attn.rotary_emb.inv_freq";
    size_t np = strlen(pre);
    if (strncmp(name, pre, np) != 0) return 0;
    const char *p = name + np;
    if (!isdigit((unsigned char)*p)) return 0;
    while (isdigit((unsigned char)*p)) p++;
    return strcmp(p, suf) == 0;
}

// One weight_map entry of a sharded model's index: tensor name -> shard file.
typedef struct {
    const char *name, *file;
    int pos;  // place in the index
} IndexEntry;

static int cmp_index_name(const void *a, const void *b) {
    return strcmp(((const IndexEntry *)a)->name, ((const IndexEntry *)b)->name);
}

static int cmp_index_file(const void *a, const void *b) {
    const IndexEntry *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : x->pos - y->pos;
}

static int cmp_index_pos(const void *a, const void *b) {
    return ((const IndexEntry *)a)->pos - ((const IndexEntry *)b)->pos;
}

typedef struct {
    HostWeights *w;
    unsigned char *seen;  // [t.n]
    IndexEntry *map;      // sharded only: the weight_map sorted by name
    int n_map;
    int n_processed;  // tensors met in the files (ignored ones included)
} LoadCtx;

// Copy every tensor of one safetensors file into the flat buffer.
static int load_file(LoadCtx *L, const char *path, const char *fname) {
    StFile f;
    if (st_open(path, &f) != 0) return -1;
    const ParamTable *t = &L->w->t;
    char a[128], b[128];
    for (int i = 0; i < f.n; i++) {
        const StTensor *st = &f.t[i];
        L->n_processed++;
        if (L->map) {
            IndexEntry key = {st->name, NULL, 0};
            const IndexEntry *m =
                bsearch(&key, L->map, (size_t)L->n_map, sizeof key, cmp_index_name);
            if (!m || strcmp(m->file, fname) != 0) {
                ps_err_set("%s: tensor '%s' is in this shard but the index maps it to %s", path,
                           st->name, m ? m->file : "no file");
                goto fail;
            }
        }
        if (is_inv_freq(st->name)) continue;
        int idx = param_table_find(t, st->name);
        if (idx < 0) {
            // Tied checkpoints may still carry lm_head.weight (a copy of the embedding);
            // like transformers, the embedding wins and the copy is ignored.
            if (t->cfg.tie_embeddings && strcmp(st->name, "lm_head.weight") == 0) continue;
            ps_err_set(
                "%s: unexpected tensor '%s' (shape %s): not part of a LLaMA model with "
                "this config",
                path, st->name, st_shape_str(a, sizeof a, st->ndim, st->shape));
            goto fail;
        }
        const ParamEntry *e = &t->e[idx];
        if (L->seen[idx]) {
            ps_err_set("%s: tensor '%s' appears in more than one shard", path, st->name);
            goto fail;
        }
        int ok = st->ndim == e->ndim && st->shape[0] == e->shape[0] &&
                 (e->ndim == 1 || st->shape[1] == e->shape[1]);
        if (!ok) {
            ps_err_set("%s: tensor '%s' has shape %s, expected %s", path, st->name,
                       st_shape_str(a, sizeof a, st->ndim, st->shape),
                       st_shape_str(b, sizeof b, e->ndim, e->shape));
            goto fail;
        }
        if (st_read_f32(&f, st, L->w->params + e->offset) != 0) goto fail;
        L->seen[idx] = 1;
    }
    st_close(&f);
    return 0;
fail:
    st_close(&f);
    return -1;
}

static double file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (double)st.st_size : 0;
}

// The weights buffer, once the files are known to be big enough for the config's
// model (at 2 bytes a parameter, the smallest dtype we read): a config.json that
// lies about its shape fails here instead of asking for a huge allocation. (Small
// models skip this check: the per-tensor checks then name the tensor that is off.)
#define PRECHECK_BYTES (64.0 * 1024 * 1024)
static int alloc_params(HostWeights *w, double have, const char *files) {
    double need = 2.0 * (double)w->t.total;
    if (have < need && need > PRECHECK_BYTES)
        return ps_err_set(
            "%s: the safetensors files hold %.0f bytes but config.json describes a model of "
            "%zu parameters (at least %.0f bytes): the config does not match the weights",
            files, have, w->t.total, need);
    w->params = xmalloc(sizeof(float) * w->t.total);
    return 0;
}

// hf_load (want_shared 0) and hf_load_shared (1): the same strict loading, of
// the full table or of the compact one the folder's plan implies.
static int load_dir(const char *dir, HostWeights *w, int want_shared) {
    memset(w, 0, sizeof *w);
    if (!ps_is_dir(dir)) return ps_err_set("%s: not a directory (expected an HF model folder)", dir);
    char *cfg_path = ps_path_join(dir, "config.json");
    char *single = ps_path_join(dir, "model.safetensors");
    char *index = ps_path_join(dir, "model.safetensors.index.json");
    char *index_txt = NULL;
    cJSON *index_root = NULL;
    LoadCtx L = {w, NULL, NULL, 0, 0};
    IndexEntry *shards = NULL;
    int rc = -1;
    LlamaConfig cfg;
    if (!ps_is_file(cfg_path)) {
        ps_err_set("%s: missing config.json in the model folder", cfg_path);
        goto done;
    }
    char plan_name[256];
    if (read_config(cfg_path, &cfg, want_shared, plan_name) != 0) goto done;
    if (want_shared) {
        char *plan_path = ps_path_join(dir, plan_name);
        SharePlan plan;
        int bad = share_plan_read(plan_path, &plan);
        if (!bad) {
            bad = share_plan_check(&plan, &cfg, NULL, 0, plan_path);
            if (!bad) param_table_build_shared(&w->t, &cfg, &plan);
            share_plan_free(&plan);
        }
        free(plan_path);
        if (bad) goto done;
    } else {
        param_table_build(&w->t, &cfg);
    }
    L.seen = xcalloc((size_t)w->t.n, 1);
    const char *where;  // for "missing" messages
    if (ps_is_file(single)) {
        where = single;
        if (alloc_params(w, file_size(single), single) != 0 ||
            load_file(&L, single, "model.safetensors") != 0)
            goto done;
    } else if (ps_is_file(index)) {
        where = index;
        size_t len;
        index_txt = ps_read_file(index, &len);
        if (!index_txt) goto done;
        index_root = ps_json_parse(index_txt, len, index);
        if (!index_root) goto done;
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(index_root, "weight_map");
        if (!cJSON_IsObject(wm)) {
            ps_err_set("%s: malformed index: no \"weight_map\" object", index);
            goto done;
        }
        // The index lists each tensor once (ps_json_parse refuses duplicate keys),
        // plus at most one RoPE buffer per layer and a tied copy of lm_head.
        int n_map = cJSON_GetArraySize(wm), most = 2 * w->t.n + 2;
        if (n_map > most) {
            ps_err_set("%s: weight_map lists %d tensors; a model with this config has at most %d",
                       index, n_map, most);
            goto done;
        }
        L.map = xmalloc(sizeof *L.map * (size_t)(n_map ? n_map : 1));
        // Check every shard name before reading anything.
        for (const cJSON *m = wm->child; m; m = m->next) {
            if (!cJSON_IsString(m) || bad_file_name(m->valuestring)) {
                ps_err_set("%s: weight_map entry '%s' must name a file in the folder", index,
                           m->string);
                goto done;
            }
            L.map[L.n_map] = (IndexEntry){m->string, m->valuestring, L.n_map};
            L.n_map++;
        }
        // Each distinct shard once, in order of first mention (sort by file, keep the
        // first of each run, back to index order).
        shards = xmalloc(sizeof *shards * (size_t)(n_map ? n_map : 1));
        memcpy(shards, L.map, sizeof *shards * (size_t)n_map);
        qsort(shards, (size_t)n_map, sizeof *shards, cmp_index_file);
        int n_shards = 0;
        for (int i = 0; i < n_map; i++)
            if (i == 0 || strcmp(shards[i].file, shards[i - 1].file) != 0)
                shards[n_shards++] = shards[i];
        qsort(shards, (size_t)n_shards, sizeof *shards, cmp_index_pos);
        for (int i = 0; i < n_shards; i++) {
            char *shard = ps_path_join(dir, shards[i].file);
            int ok = ps_is_file(shard);
            free(shard);
            if (!ok) {
                ps_err_set("%s: weight_map puts '%s' in %s, which does not exist", index,
                           shards[i].name, shards[i].file);
                goto done;
            }
        }
        double have = 0;
        for (int i = 0; i < n_shards; i++) {
            char *shard = ps_path_join(dir, shards[i].file);
            have += file_size(shard);
            free(shard);
        }
        if (alloc_params(w, have, index) != 0) goto done;
        qsort(L.map, (size_t)n_map, sizeof *L.map, cmp_index_name);
        for (int i = 0; i < n_shards; i++) {
            char *shard = ps_path_join(dir, shards[i].file);
            int r = load_file(&L, shard, shards[i].file);
            free(shard);
            if (r != 0) goto done;
        }
    } else {
        char *ptbin = ps_path_join(dir, "pytorch_model.bin");
        int has_pt = ps_is_file(ptbin);
        free(ptbin);
        ps_err_set("%s: no model.safetensors or model.safetensors.index.json in the folder%s", dir,
                   has_pt ? " (only pytorch_model.bin, which is not supported: convert "
                            "it to safetensors)"
                          : "");
        goto done;
    }
    char a[128];
    for (int i = 0; i < w->t.n; i++) {
        if (!L.seen[i]) {
            const ParamEntry *e = &w->t.e[i];
            ps_err_set("%s: missing tensor '%s' (expected shape %s)", where, e->name,
                       st_shape_str(a, sizeof a, e->ndim, e->shape));
            goto done;
        }
    }
    if (L.map && L.n_processed != L.n_map) {
        ps_err_set("%s: the index lists %d tensors but the shards hold %d", index, L.n_map,
                   L.n_processed);
        goto done;
    }
    rc = 0;
done:
    if (rc != 0) host_weights_free(w);
    free(L.seen);
    free(L.map);
    free(shards);
    cJSON_Delete(index_root);
    free(index_txt);
    free(cfg_path);
    free(single);
    free(index);
    return rc;
}

int hf_load(const char *dir, HostWeights *w) {
    return load_dir(dir, w, 0);
}

int hf_map(const char *dir, HfMapped *m) {
    memset(m, 0, sizeof *m);
    if (!ps_is_dir(dir)) return ps_err_set("%s: not a directory (expected an HF model folder)", dir);
    char *cfg_path = ps_path_join(dir, "config.json"),
         *single = ps_path_join(dir, "model.safetensors");
    int rc = -1;
    char plan_name[256];
    if (!ps_is_file(cfg_path)) {
        ps_err_set("%s: missing config.json in the model folder", cfg_path);
        goto done;
    }
    if (read_config(cfg_path, &m->cfg, 0, plan_name) != 0) goto done;
    if (!ps_is_file(single)) {
        ps_err_set("%s: no model.safetensors (a sharded folder is loaded, not mapped)", dir);
        goto done;
    }
    m->f = xcalloc(1, sizeof(StFile));
    if (st_open(single, &m->f[0]) != 0) goto done;
    m->n = 1;
    rc = 0;
done:
    if (rc) hf_unmap(m);
    free(cfg_path);
    free(single);
    return rc;
}

const StTensor *hf_mapped_find(const HfMapped *m, const char *name, const StFile **file) {
    for (int i = 0; i < m->n; i++) {
        const StTensor *t = st_find(&m->f[i], name);
        if (t) {
            *file = &m->f[i];
            return t;
        }
    }
    return NULL;
}

void hf_unmap(HfMapped *m) {
    for (int i = 0; i < m->n; i++) st_close(&m->f[i]);
    free(m->f);
    memset(m, 0, sizeof *m);
}

int hf_load_shared(const char *dir, HostWeights *w) {
    return load_dir(dir, w, 1);
}

// ---------------------------------------------------------------------------
// saving

void hf_export_init(HfExport *x) {
    memset(x, 0, sizeof *x);
    x->bos_id = x->pad_id = -1;
}

// config.json's value of key: a non-negative id, or a list of them (eos).
static int json_ids(const cJSON *v, int *out, int cap) {
    int n = 0;
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= INT32_MAX)
        out[n++] = (int)v->valuedouble;
    const cJSON *e;
    if (cJSON_IsArray(v))
        cJSON_ArrayForEach(e, v) if (n < cap && cJSON_IsNumber(e) && e->valuedouble >= 0 &&
                                     e->valuedouble <= INT32_MAX) out[n++] = (int)e->valuedouble;
    return n;
}

int hf_export_info(const char *dir, HfExport *x) {
    hf_export_init(x);
    snprintf(x->from, sizeof x->from, "%s/config.json", dir);
    size_t len;
    char *txt = ps_read_file(x->from, &len);
    cJSON *root = txt ? ps_json_parse(txt, len, x->from) : NULL;
    free(txt);
    if (!root) return -1;
    json_ids(cJSON_GetObjectItemCaseSensitive(root, "bos_token_id"), &x->bos_id, 1);
    json_ids(cJSON_GetObjectItemCaseSensitive(root, "pad_token_id"), &x->pad_id, 1);
    x->n_eos =
        json_ids(cJSON_GetObjectItemCaseSensitive(root, "eos_token_id"), x->eos_id, HF_MAX_EOS);
    cJSON_Delete(root);
    char *p = ps_path_join(dir, "generation_config.json");
    if (ps_is_file(p)) snprintf(x->gen_config, sizeof x->gen_config, "%s", p);
    free(p);
    const char *tok_files[] = {"tokenizer.json", "tokenizer.model"};
    for (int i = 0; i < 2 && !x->tokenizer[0]; i++) {
        p = ps_path_join(dir, tok_files[i]);
        if (ps_is_file(p)) snprintf(x->tokenizer, sizeof x->tokenizer, "hf:%s", dir);
        free(p);
    }
    return 0;
}

static void add_id(cJSON *o, const char *key, int id) {
    if (id >= 0)
        cJSON_AddNumberToObject(o, key, id);
    else
        cJSON_AddNullToObject(o, key);
}

static void add_eos(cJSON *o, const int *eos, int n) {
    if (n == 1) {
        add_id(o, "eos_token_id", eos[0]);
    } else if (n == 0) {
        cJSON_AddNullToObject(o, "eos_token_id");
    } else {
        cJSON *a = cJSON_AddArrayToObject(o, "eos_token_id");
        for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(eos[i]));
    }
}

// The ids an export writes (x's, else the tokenizer's), its tokenizer files and
// generation_config.json, into the fresh directory dir.
static int write_export_extras(const char *dir, const HfExport *x, HfExport *ids) {
    hf_export_init(ids);
    if (!x) return 0;
    *ids = *x;
    int tok[3] = {-1, -1, -1};
    if (x->tokenizer[0]) {
        char note[512] = "";
        int r = tok_export_hf(x->tokenizer, dir, tok, note, sizeof note);
        if (r < 0)
            fprintf(stderr,
                    "postshare: warning: the export %s has no tokenizer: exporting tokenizer "
                    "'%s' failed: %s\n",
                    dir, x->tokenizer, ps_err_msg());
        else if (r == 0)
            fprintf(stderr, "postshare: warning: the export %s has no tokenizer: %s\n", dir, note);
    } else {
        fprintf(stderr,
                "postshare: warning: the export %s has no tokenizer (none is known for its "
                "source %s; convert and share take --tokenizer)\n",
                dir, x->from[0] ? x->from : "(unknown)");
    }
    // the model's ids first; the tokenizer's where the model has none
    if (ids->bos_id < 0) ids->bos_id = tok[0];
    if (ids->n_eos == 0 && tok[1] >= 0) ids->eos_id[ids->n_eos++] = tok[1];
    if (ids->pad_id < 0) ids->pad_id = tok[2];
    if (tok[0] >= 0 && ids->bos_id != tok[0])
        fprintf(stderr, "postshare: warning: %s: bos_token_id %d, but the tokenizer's BOS is %d\n",
                dir, ids->bos_id, tok[0]);
    char *gp = ps_path_join(dir, "generation_config.json");
    int rc = 0;
    if (x->gen_config[0]) {
        size_t n;
        char *g = ps_read_file(x->gen_config, &n);
        rc = g ? ps_write_file_atomic(gp, g, n) : -1;
        free(g);
    } else {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddBoolToObject(root, "_from_model_config", 1);
        add_id(root, "bos_token_id", ids->bos_id);
        add_eos(root, ids->eos_id, ids->n_eos);
        if (ids->pad_id >= 0) cJSON_AddNumberToObject(root, "pad_token_id", ids->pad_id);
        rc = ps_json_write(gp, root);
        cJSON_Delete(root);
    }
    free(gp);
    return rc;
}

// Write a complete export into the fresh directory dir (hf_save below).
static int write_export(const char *dir, const HostWeights *w, const char *dtype,
                        const HfExport *x) {
    StDtype dt;
    const char *torch_dtype;
    if (!strcmp(dtype, "float32") || !strcmp(dtype, "f32") || !strcmp(dtype, "fp32")) {
        dt = ST_F32;
        torch_dtype = "float32";
    } else if (!strcmp(dtype, "bfloat16") || !strcmp(dtype, "bf16")) {
        dt = ST_BF16;
        torch_dtype = "bfloat16";
    } else {
        return ps_err_set("hf_save: unsupported dtype \"%s\" (use float32 or bfloat16)", dtype);
    }
    if (ps_mkdirs(dir) != 0) return -1;
    char *cfg_path = ps_path_join(dir, "config.json");
    char *st_path = ps_path_join(dir, "model.safetensors");
    int rc = -1;
    cJSON *root = NULL;
    const ParamTable *t = &w->t;
    StWriteTensor *wt = xcalloc((size_t)t->n, sizeof *wt);
    hf_tensor_list(w, dt, wt);
    int r = st_write(st_path, t->n, wt);
    free(wt);
    if (r != 0) goto done;
    if (t->shared) {  // a compact shared model: its plan, before the config that points to it
        char *plan_path = ps_path_join(dir, "plan.json");
        r = share_plan_write(plan_path, &t->shared->plan);
        free(plan_path);
        if (r != 0) goto done;
    }

    HfExport ids;
    if (write_export_extras(dir, x, &ids) != 0) goto done;

    const LlamaConfig *c = &t->cfg;
    root = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(root, "model_type", "llama");
    hf_json_add_shape(root, c);
    cJSON_AddNumberToObject(root, "max_position_embeddings", c->max_seq_len);
    cJSON_AddItemToObject(root, "rope_theta", hf_json_float(c->rope_theta));
    if (c->rope_type == ROPE_DEFAULT) {
        cJSON_AddNullToObject(root, "rope_scaling");
    } else {  // transformers 4's key; transformers 5 reads it too
        cJSON *rs = cJSON_AddObjectToObject(root, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", rope_type_name(c->rope_type));
        cJSON_AddItemToObject(rs, "factor", hf_json_float(c->rope_factor));
        if (c->rope_type == ROPE_LLAMA3) {
            cJSON_AddItemToObject(rs, "low_freq_factor", hf_json_float(c->rope_low_freq_factor));
            cJSON_AddItemToObject(rs, "high_freq_factor", hf_json_float(c->rope_high_freq_factor));
            cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c->rope_orig_max_pos);
        }
    }
    cJSON_AddItemToObject(root, "rms_norm_eps", hf_json_float(c->norm_eps));
    cJSON_AddBoolToObject(root, "tie_word_embeddings", c->tie_embeddings);
    cJSON_AddStringToObject(root, "hidden_act", "silu");
    cJSON_AddBoolToObject(root, "attention_bias", 0);
    cJSON_AddItemToObject(root, "attention_dropout", hf_json_float(0.0f));
    cJSON_AddBoolToObject(root, "mlp_bias", 0);
    add_id(root, "bos_token_id", ids.bos_id);
    add_eos(root, ids.eos_id, ids.n_eos);
    if (ids.pad_id >= 0) cJSON_AddNumberToObject(root, "pad_token_id", ids.pad_id);
    cJSON_AddItemToObject(root, "initializer_range", hf_json_float(0.02f));
    cJSON_AddNumberToObject(root, "pretraining_tp", 1);
    cJSON_AddBoolToObject(root, "use_cache", 1);
    // transformers < 4.56 reads torch_dtype, later versions dtype
    cJSON_AddStringToObject(root, "torch_dtype", torch_dtype);
    cJSON_AddStringToObject(root, "dtype", torch_dtype);
    if (t->shared)
        cJSON_AddStringToObject(cJSON_AddObjectToObject(root, SHARED_KEY), "plan", "plan.json");
    if (ps_json_write(cfg_path, root) != 0) goto done;
    rc = 0;
done:
    cJSON_Delete(root);
    free(cfg_path);
    free(st_path);
    return rc;
}

// The export is written beside dir (dir.tmp.<pid>) and swapped in only when it is
// complete: a failed save (a full disk) leaves the previous model/ as it was.
int hf_save(const char *dir, const HostWeights *w, const char *dtype) {
    return hf_save_export(dir, w, dtype, NULL);
}

int hf_save_export(const char *dir, const HostWeights *w, const char *dtype, const HfExport *x) {
    size_t n = strlen(dir) + 32;
    char *tmp = xmalloc(n);
    snprintf(tmp, n, "%s.tmp.%d", dir, (int)getpid());
    // not carried over from a previous export: stale weights, and a tokenizer or
    // generation config that this export does not have would belong to another model
    static const char *const weights[] = {".safetensors",
                                          ".safetensors.index.json",
                                          "tokenizer.json",
                                          "tokenizer_config.json",
                                          "special_tokens_map.json",
                                          "tokenizer.model",
                                          "generation_config.json",
                                          NULL};
    int rc = ps_remove_tree(tmp);
    if (rc == 0) rc = write_export(tmp, w, dtype, x);
    if (rc != 0) {
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", ps_err_msg());
        ps_remove_tree(tmp);
        ps_err_set("%s (the previous %s, if any, is unchanged)", msg, dir);
    } else {
        rc = ps_dir_replace(tmp, dir, weights);
    }
    free(tmp);
    return rc;
}

// ---------------------------------------------------------------------------
// compact shared model folders

int hf_is_shared_dir(const char *dir) {
    char *cfg_path = ps_path_join(dir, "config.json");
    size_t len;
    char *txt = ps_is_file(cfg_path) ? ps_read_file(cfg_path, &len) : NULL;
    cJSON *root = txt ? cJSON_ParseWithLength(txt, len) : NULL;
    int yes = cJSON_IsObject(root) && cJSON_GetObjectItemCaseSensitive(root, SHARED_KEY) != NULL;
    cJSON_Delete(root);
    free(txt);
    free(cfg_path);
    return yes;
}
