// gguf_llama.c: LLaMA from GGUF (see gguf_llama.h).
#include "gguf_llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gguf.h"

// An optional u32 key: def when absent.
static int opt_u32(const GgufFile *g, const char *key, uint32_t def, uint32_t *out) {
    if (!gguf_find(g, key)) {
        *out = def;
        return 0;
    }
    return gguf_get_u32(g, key, out);
}

// A required positive int (bounded: these size the model).
static int req_int(const GgufFile *g, const char *key, int *out) {
    uint32_t v;
    if (gguf_get_u32(g, key, &v)) return -1;
    if (v == 0 || v > (1u << 30)) return ps_err_set("%s: %s = %u is out of range", g->path, key, v);
    *out = (int)v;
    return 0;
}

static int read_config(const GgufFile *g, LlamaConfig *c) {
    char *arch = NULL;
    if (gguf_get_str(g, "general.architecture", &arch)) return -1;
    int ok = strcmp(arch, "llama") == 0;
    if (!ok)
        ps_err_set("%s: architecture \"%s\" is not supported; only \"llama\" GGUF files are",
                   g->path, arch);
    free(arch);
    if (!ok) return -1;
    memset(c, 0, sizeof *c);
    uint32_t v;
    if (req_int(g, "llama.context_length", &c->max_seq_len) ||
        req_int(g, "llama.embedding_length", &c->dim) ||
        req_int(g, "llama.block_count", &c->n_layers) ||
        req_int(g, "llama.feed_forward_length", &c->ffn_dim) ||
        req_int(g, "llama.attention.head_count", &c->n_heads))
        return -1;
    if (opt_u32(g, "llama.attention.head_count_kv", (uint32_t)c->n_heads, &v)) return -1;
    c->n_kv_heads = (int)v;
    if (gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &c->norm_eps)) return -1;
    c->rope_theta = 10000.0f;
    if (gguf_find(g, "llama.rope.freq_base") &&
        gguf_get_f32(g, "llama.rope.freq_base", &c->rope_theta))
        return -1;
    uint32_t hd_default = c->dim % c->n_heads ? 0 : (uint32_t)(c->dim / c->n_heads), kl, vl, rd;
    if (opt_u32(g, "llama.attention.key_length", hd_default, &kl) ||
        opt_u32(g, "llama.attention.value_length", kl, &vl) ||
        opt_u32(g, "llama.rope.dimension_count", kl, &rd))
        return -1;
    if (kl == 0 || kl > 65536)
        return ps_err_set("%s: llama.attention.key_length = %u is out of range", g->path, kl);
    if (vl != kl)
        return ps_err_set(
            "%s: llama.attention.value_length %u differs from key_length %u; not "
            "supported",
            g->path, vl, kl);
    if (rd != kl)
        return ps_err_set(
            "%s: llama.rope.dimension_count %u is not the head size %u (partial "
            "rotary embeddings are not supported)",
            g->path, rd, kl);
    c->head_dim = kl == hd_default ? 0 : (int)kl;
    if (gguf_find(g, "llama.rope.scaling.type")) {
        char *st = NULL;
        if (gguf_get_str(g, "llama.rope.scaling.type", &st)) return -1;
        int r = 0;
        if (!strcmp(st, "linear")) {
            c->rope_type = ROPE_LINEAR;
            r = gguf_get_f32(g, "llama.rope.scaling.factor", &c->rope_factor);
        } else if (strcmp(st, "none") != 0) {
            r = ps_err_set("%s: llama.rope.scaling.type \"%s\" is not supported (none, linear)",
                           g->path, st);
        }
        free(st);
        if (r) return -1;
    }
    // vocab: the token list, else the embedding's rows
    const GgufKV *tk = gguf_find(g, "tokenizer.ggml.tokens");
    const GgufTensor *emb = gguf_tensor(g, "token_embd.weight");
    if (!emb) return ps_err_set("%s: missing tensor 'token_embd.weight'", g->path);
    uint64_t V = tk && tk->type == GGUF_ARRAY ? tk->n : emb->ne[1];
    if (V == 0 || V > (1u << 30))
        return ps_err_set("%s: vocab size %llu is out of range", g->path, (unsigned long long)V);
    c->vocab_size = (int)V;
    c->tie_embeddings = gguf_tensor(g, "output.weight") == NULL;
    if (llama_config_validate(c) != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ps_err_msg());
        return ps_err_set("%s: unsupported config: %s", g->path, msg);
    }
    return 0;
}

// GGUF name of table entry e ("blk.3.attn_q.weight"), into buf.
static void gguf_name(const ParamEntry *e, char *buf, size_t n) {
    static const char *const layer_names[P_NUM_KINDS] = {
        [P_ATTN_NORM] = "attn_norm", [P_WQ] = "attn_q",      [P_WK] = "attn_k",
        [P_WV] = "attn_v",           [P_WO] = "attn_output", [P_FFN_NORM] = "ffn_norm",
        [P_W_GATE] = "ffn_gate",     [P_W_UP] = "ffn_up",    [P_W_DOWN] = "ffn_down"};
    if (e->kind == P_EMBED)
        snprintf(buf, n, "token_embd.weight");
    else if (e->kind == P_FINAL_NORM)
        snprintf(buf, n, "output_norm.weight");
    else if (e->kind == P_LM_HEAD)
        snprintf(buf, n, "output.weight");
    else
        snprintf(buf, n, "blk.%d.%s.weight", e->layer, layer_names[e->kind]);
}

int gguf_load_llama(const char *path, HostWeights *w) {
    memset(w, 0, sizeof *w);
    GgufFile g;
    if (gguf_open(path, &g)) return -1;
    LlamaConfig cfg;
    int rc = -1;
    float *scratch = NULL;
    unsigned char *used = NULL;
    if (read_config(&g, &cfg)) goto done;
    if (gguf_tensor(&g, "rope_freqs.weight")) {
        ps_err_set(
            "%s: tensor 'rope_freqs.weight' (per-frequency RoPE factors, as llama.cpp "
            "writes Llama 3.1's rope scaling) is not supported; load the HF checkpoint "
            "instead",
            path);
        goto done;
    }
    param_table_build(&w->t, &cfg);
    w->params = xmalloc(sizeof(float) * w->t.total);
    used = xcalloc((size_t)g.n_tensors ? (size_t)g.n_tensors : 1, 1);
    int hd = cfg_head_dim(&cfg);
    for (int i = 0; i < w->t.n; i++) {
        const ParamEntry *e = &w->t.e[i];
        char name[96];
        gguf_name(e, name, sizeof name);
        const GgufTensor *t = gguf_tensor(&g, name);
        if (!t) {
            ps_err_set("%s: missing tensor '%s'", path, name);
            goto done;
        }
        used[t - g.t] = 1;
        if (gguf_check_convertible(&g, t)) goto done;
        // GGUF ne is innermost first: [cols, rows]
        int ok = e->ndim == 1 ? t->n_dims == 1 && t->ne[0] == (uint64_t)e->shape[0]
                              : t->n_dims == 2 && t->ne[0] == (uint64_t)e->shape[1] &&
                                    t->ne[1] == (uint64_t)e->shape[0];
        if (!ok) {
            ps_err_set(
                "%s: tensor '%s' has dims [%llu, %llu] (GGUF order), expected [%lld, %lld] "
                "for this config",
                path, name, (unsigned long long)t->ne[0],
                (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 1),
                (long long)(e->ndim == 1 ? e->shape[0] : e->shape[1]),
                (long long)(e->ndim == 1 ? 1 : e->shape[0]));
            goto done;
        }
        float *dst = w->params + e->offset;
        if (e->kind == P_WQ || e->kind == P_WK) {
            scratch = xrealloc(scratch, sizeof(float) * e->numel);
            if (gguf_tensor_f32(&g, t, scratch)) goto done;
            rope_rows_to_hf(dst, scratch, (int)(e->shape[0] / hd), hd, (int)e->shape[1]);
        } else if (gguf_tensor_f32(&g, t, dst)) {
            goto done;
        }
    }
    for (int64_t i = 0; i < g.n_tensors; i++)
        if (!used[i]) {
            ps_err_set(
                "%s: unexpected tensor '%s' (%s): not part of a LLaMA model with this "
                "config",
                path, g.t[i].name, gguf_ggml_type_name(g.t[i].type));
            goto done;
        }
    rc = 0;
done:
    if (rc) host_weights_free(w);
    free(scratch);
    free(used);
    gguf_close(&g);
    return rc;
}

int gguf_special_ids(const char *path, int *bos, int *eos, int *pad) {
    GgufFile g;
    if (gguf_open(path, &g)) return -1;
    const char *keys[3] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                           "tokenizer.ggml.padding_token_id"};
    int *out[3] = {bos, eos, pad}, rc = 0;
    for (int k = 0; k < 3; k++) *out[k] = -1;
    for (int k = 0; k < 3; k++) {
        uint32_t v;
        if (!gguf_find(&g, keys[k])) continue;
        if (gguf_get_u32(&g, keys[k], &v) || v > INT32_MAX) {
            rc = -1;
            break;
        }
        *out[k] = (int)v;
    }
    gguf_close(&g);
    return rc;
}
