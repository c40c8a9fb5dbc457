// params.c: builds the parameter table (names, shapes, offsets) from a config.
#include "params.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <stdlib.h>

#include "common.h"

int llama_config_validate(const LlamaConfig *c) {
    if (c->dim <= 0) return ps_err_set("model.dim must be > 0 (got %d)", c->dim);
    if (c->n_layers <= 0) return ps_err_set("model.n_layers must be > 0 (got %d)", c->n_layers);
    if (c->n_heads <= 0) return ps_err_set("model.n_heads must be > 0 (got %d)", c->n_heads);
    if (c->head_dim < 0) return ps_err_set("model.head_dim must be >= 0 (got %d)", c->head_dim);
    if (c->head_dim == 0 && c->dim % c->n_heads)
        return ps_err_set("model.dim (%d) must be divisible by n_heads (%d)", c->dim, c->n_heads);
    if (cfg_head_dim(c) % 2 || cfg_head_dim(c) <= 0)
        return ps_err_set("head dim %d must be even and > 0 for RoPE", cfg_head_dim(c));
    if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads)
        return ps_err_set("model.n_kv_heads (%d) must divide n_heads (%d)", c->n_kv_heads,
                          c->n_heads);
    if (c->ffn_dim <= 0) return ps_err_set("model.ffn_dim must be > 0 (got %d)", c->ffn_dim);
    if (c->vocab_size <= 0)
        return ps_err_set("model.vocab_size must be > 0 (got %d)", c->vocab_size);
    if (c->max_seq_len <= 0)
        return ps_err_set("model.max_seq_len must be > 0 (got %d)", c->max_seq_len);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return ps_err_set("model.rope_theta must be a finite number > 0 (got %g)", c->rope_theta);
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps))
        return ps_err_set("model.norm_eps must be a finite number > 0 (got %g)", c->norm_eps);
    const struct {
        const char *key;
        int v, hi;
    } b[] = {{"model.dim", c->dim, PS_MAX_DIM},
             {"model.n_layers", c->n_layers, PS_MAX_LAYERS},
             {"model.n_heads", c->n_heads, PS_MAX_HEADS},
             {"model.head_dim", c->head_dim, PS_MAX_DIM},
             {"model.ffn_dim", c->ffn_dim, PS_MAX_FFN},
             {"model.vocab_size", c->vocab_size, PS_MAX_VOCAB}};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (b[i].v > b[i].hi)
            return ps_err_set("%s is %d, above the supported maximum %d", b[i].key, b[i].v,
                              b[i].hi);
    // every factor is bounded above, so these fit in uint64
    uint64_t C = (uint64_t)c->dim, F = (uint64_t)c->ffn_dim, V = (uint64_t)c->vocab_size;
    uint64_t kvd = (uint64_t)c->n_kv_heads * (uint64_t)cfg_head_dim(c);
    uint64_t qd = (uint64_t)c->n_heads * (uint64_t)cfg_head_dim(c);
    uint64_t layer = C * (2 * qd + 2 * kvd + 3 * F + 2);
    uint64_t total = (uint64_t)c->n_layers * layer + V * C * (c->tie_embeddings ? 1 : 2) + C;
    if (total > PS_MAX_PARAMS)
        return ps_err_set("the model would have %llu parameters, above the supported maximum %llu",
                          (unsigned long long)total, (unsigned long long)PS_MAX_PARAMS);
    switch (c->rope_type) {
        case ROPE_DEFAULT:
            break;
        case ROPE_LINEAR:
            if (!(c->rope_factor > 0)) return ps_err_set("rope scaling linear: factor must be > 0");
            break;
        case ROPE_LLAMA3:
            if (!(c->rope_factor > 0) || !(c->rope_low_freq_factor > 0) ||
                !(c->rope_high_freq_factor > c->rope_low_freq_factor) || c->rope_orig_max_pos <= 0)
                return ps_err_set(
                    "rope scaling llama3: needs factor > 0, low_freq_factor > 0, "
                    "high_freq_factor > low_freq_factor and original_max_position_embeddings > 0 "
                    "(got %g, %g, %g, %d)",
                    c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor,
                    c->rope_orig_max_pos);
            break;
        default:
            return ps_err_set("unknown rope scaling type %d", c->rope_type);
    }
    return 0;
}

const char *rope_type_name(int rope_type) {
    static const char *const names[] = {"default", "linear", "llama3"};
    return rope_type >= 0 && rope_type <= ROPE_LLAMA3 ? names[rope_type] : "?";
}

// As transformers' _compute_default_rope_parameters, _compute_linear_scaling_rope_parameters
// and _compute_llama3_parameters (modeling_rope_utils.py); all three have attention factor 1.
void rope_inv_freq(const LlamaConfig *c, float *inv_freq) {
    int hd = cfg_head_dim(c), half = hd / 2;
    for (int i = 0; i < half; i++) {
        double f = pow((double)c->rope_theta, -2.0 * i / hd);
        if (c->rope_type == ROPE_LINEAR) {
            f /= c->rope_factor;
        } else if (c->rope_type == ROPE_LLAMA3) {
            double factor = c->rope_factor, lo = c->rope_low_freq_factor,
                   hi = c->rope_high_freq_factor, old = c->rope_orig_max_pos;
            double wavelen = 2.0 * 3.14159265358979323846 / f;
            if (wavelen > old / lo) {  // low frequencies: interpolated
                f /= factor;
            } else if (!(wavelen < old / hi)) {  // medium: a smooth blend of the two
                double smooth = (old / wavelen - lo) / (hi - lo);
                f = (1.0 - smooth) * f / factor + smooth * f;
            }  // high frequencies: unchanged
        }
        inv_freq[i] = (float)f;
    }
}

static void add(ParamTable *t, ParamKind kind, int layer, const char *name, int64_t rows,
                int64_t cols) {
    ParamEntry *e = &t->e[t->n];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->kind = kind;
    e->layer = layer;
    e->ndim = cols >= 0 ? 2 : 1;  // cols < 0: a vector (norm weights)
    e->shape[0] = rows;
    e->shape[1] = cols >= 0 ? cols : 1;
    e->numel = (size_t)rows * (size_t)e->shape[1];
    e->offset = t->total;
    e->decay = e->ndim == 2;
    t->total += e->numel;
    if (layer >= 0) t->layer_idx[layer * P_NUM_KINDS + kind] = t->n;
    t->n++;
}

// Lay out every tensor; with a share layout, the attention tensors of layer l
// hold only its n_own[l] owned units (ShareLayout in params.h). Wq, Wk, Wv and
// Wgate, Wup stay adjacent and in this order: model.c runs each group as one
// matrix (one GEMM for the output, dX and dW) and checks this.
static void build(ParamTable *t, const LlamaConfig *cfg, ShareLayout *shared) {
    CHECK(llama_config_validate(cfg) == 0, "%s", ps_err_msg());
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    t->shared = shared;
    int L = cfg->n_layers, C = cfg->dim, F = cfg->ffn_dim, V = cfg->vocab_size;
    int hd = cfg_head_dim(cfg), G = cfg->n_heads / cfg->n_kv_heads;
    // L <= PS_MAX_LAYERS (validated above): the counts below fit in int
    t->e = xcalloc(3 + 9 * (size_t)L, sizeof(ParamEntry));
    t->layer_idx = xmalloc(sizeof(int) * (size_t)L * P_NUM_KINDS);
    for (size_t i = 0; i < (size_t)L * P_NUM_KINDS; i++) t->layer_idx[i] = -1;
    char nm[96];
    t->embed = t->n;
    add(t, P_EMBED, -1, "model.embed_tokens.weight", V, C);
    for (int l = 0; l < L; l++) {
#define LNAME(s) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, s), nm)
        int own = shared ? shared->n_own[l] : cfg->n_kv_heads;  // units whose rows are stored
        int qd = own * G * hd, kvd = own * hd;
        add(t, P_ATTN_NORM, l, LNAME("input_layernorm.weight"), C, -1);
        add(t, P_WQ, l, LNAME("self_attn.q_proj.weight"), qd, C);
        add(t, P_WK, l, LNAME("self_attn.k_proj.weight"), kvd, C);
        add(t, P_WV, l, LNAME("self_attn.v_proj.weight"), kvd, C);
        add(t, P_WO, l, LNAME("self_attn.o_proj.weight"), C, qd);
        add(t, P_FFN_NORM, l, LNAME("post_attention_layernorm.weight"), C, -1);
        add(t, P_W_GATE, l, LNAME("mlp.gate_proj.weight"), F, C);
        add(t, P_W_UP, l, LNAME("mlp.up_proj.weight"), F, C);
        add(t, P_W_DOWN, l, LNAME("mlp.down_proj.weight"), C, F);
#undef LNAME
    }
    t->final_norm = t->n;
    add(t, P_FINAL_NORM, -1, "model.norm.weight", C, -1);
    if (cfg->tie_embeddings) {
        t->lm_head = t->embed;
    } else {
        t->lm_head = t->n;
        add(t, P_LM_HEAD, -1, "lm_head.weight", V, C);
    }
}

void param_table_build(ParamTable *t, const LlamaConfig *cfg) {
    build(t, cfg, NULL);
}

static ShareLayout *layout_new(int L, int U, int G) {
    ShareLayout *s = xcalloc(1, sizeof *s);
    s->units = U;
    s->group = G;
    s->src = xmalloc(sizeof(int) * (size_t)L * U);
    s->slot = xmalloc(sizeof(int) * (size_t)L * U);
    s->n_own = xcalloc((size_t)L, sizeof(int));
    return s;
}

void share_plan_src(const SharePlan *p, int *src) {
    int U = p->cfg.n_kv_heads, N = p->cfg.n_layers * U;
    for (int i = 0; i < N; i++) src[i] = i;
    for (int k = 0; k < p->n; k++)
        src[p->e[k].layer * U + p->e[k].unit] = p->e[k].src_layer * U + p->e[k].src_unit;
}

void share_plan_copy(SharePlan *dst, const SharePlan *src) {
    *dst = *src;
    dst->e = xmalloc(sizeof(ShareEntry) * (size_t)(src->n ? src->n : 1));
    memcpy(dst->e, src->e, sizeof(ShareEntry) * (size_t)src->n);
}

void share_plan_free(SharePlan *p) {
    free(p->e);
    memset(p, 0, sizeof *p);
}

void param_table_build_shared(ParamTable *t, const LlamaConfig *cfg, const SharePlan *plan) {
    CHECK(llama_config_validate(cfg) == 0, "%s", ps_err_msg());
    int L = cfg->n_layers, U = cfg->n_kv_heads, N = L * U;
    CHECK(plan->cfg.n_layers == L && plan->cfg.n_kv_heads == U && plan->cfg.n_heads == cfg->n_heads,
          "the plan is for another shape");
    ShareLayout *s = layout_new(L, U, cfg->n_heads / U);
    int *src = s->src;
    share_plan_src(plan, src);
    share_plan_copy(&s->plan, plan);
    for (int i = 0; i < N; i++) {
        CHECK(src[i] >= 0 && src[i] < N, "unit %d: source %d out of range", i, src[i]);
        CHECK(src[src[i]] == src[i], "unit %d: source %d is itself replaced (a chain)", i, src[i]);
        if (src[i] == i) {
            s->slot[i] = s->n_own[i / U]++;
        } else {
            s->slot[i] = -1;
            s->n_replaced++;
        }
    }
    build(t, cfg, s);
}

void param_table_copy(ParamTable *dst, const ParamTable *src) {
    if (src->shared)
        param_table_build_shared(dst, &src->cfg, &src->shared->plan);
    else
        param_table_build(dst, &src->cfg);
    CHECK(dst->total == src->total && dst->n == src->n, "table copy differs from its source");
}

void param_table_free(ParamTable *t) {
    if (t->shared) {
        free(t->shared->src);
        free(t->shared->slot);
        free(t->shared->n_own);
        share_plan_free(&t->shared->plan);
        free(t->shared);
    }
    free(t->e);
    free(t->layer_idx);
    memset(t, 0, sizeof *t);
}

int param_table_find(const ParamTable *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->e[i].name, name) == 0) return i;
    return -1;
}

const ParamEntry *param_layer(const ParamTable *t, int layer, ParamKind kind) {
    CHECK(layer >= 0 && layer < t->cfg.n_layers, "layer %d out of range", layer);
    int i = t->layer_idx[layer * P_NUM_KINDS + kind];
    CHECK(i >= 0, "no tensor of kind %d in layer %d", (int)kind, layer);
    return &t->e[i];
}

const ParamEntry *param_lm_head(const ParamTable *t) {
    return &t->e[t->lm_head];
}

void param_init_random(const ParamTable *t, float *params, uint64_t seed, float init_std) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < t->n; i++) {
        const ParamEntry *e = &t->e[i];
        float *p = params + e->offset;
        if (e->ndim == 1) {
            for (size_t j = 0; j < e->numel; j++) p[j] = 1.0f;
        } else {
            for (size_t j = 0; j < e->numel; j++) p[j] = init_std * rng_normal(&r);
        }
    }
}

void host_weights_free(HostWeights *w) {
    if (w->t.e) param_table_free(&w->t);
    free(w->params);
    memset(w, 0, sizeof *w);
}

void rope_rows_to_hf(float *dst, const float *src, int n_heads, int hd, int cols) {
    int half = hd / 2;
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < half; j++)
            for (int t = 0; t < 2; t++) {
                const float *s = src + ((size_t)h * hd + 2 * j + t) * cols;
                float *d = dst + ((size_t)h * hd + (size_t)t * half + j) * cols;
                memcpy(d, s, sizeof(float) * (size_t)cols);
            }
}

// A JSON number for a float, in its shortest decimal form that reads back as the
// same float, with ".0" kept on whole numbers (1e-05 rather than
// 9.99999974737875e-06, 10000.0 rather than 10000).
cJSON *hf_json_float(float x) {
    char buf[64];
    if (x == floorf(x) && fabsf(x) < 1e15f) {
        snprintf(buf, sizeof buf, "%.1f", (double)x);
    } else {
        for (int p = 1; p <= 9; p++) {
            snprintf(buf, sizeof buf, "%.*g", p, (double)x);
            if (strtof(buf, NULL) == x) break;
        }
    }
    return cJSON_CreateRaw(buf);
}

void hf_json_add_shape(cJSON *o, const LlamaConfig *c) {
    cJSON_AddNumberToObject(o, "hidden_size", c->dim);
    cJSON_AddNumberToObject(o, "intermediate_size", c->ffn_dim);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", cfg_head_dim(c));
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
}
