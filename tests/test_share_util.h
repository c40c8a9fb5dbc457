// test_share_util.h: helpers of the sharing tests (test_share.c,
// test_share_calib.c): a random model, a unit copied onto another (indexed
// from the HF layout directly, independently of share.c), and the logits of a
// model (full or compact) on a fixed batch.
#pragma once

#include <string.h>

#include "common.h"
#include "hf_io.h"
#include "model.h"
#include "params.h"

static inline void make_model(HostWeights *w, const LlamaConfig *c, uint64_t seed) {
    memset(w, 0, sizeof *w);
    param_table_build(&w->t, c);
    w->params = xmalloc(sizeof(float) * w->t.total);
    param_init_random(&w->t, w->params, seed, 0.3f);
}

// Make unit (l, u) an exact copy of unit (sl, su): its Wq, Wk, Wv rows and Wo
// columns, indexed here directly from the HF layout (independently of share.c).
static inline void copy_unit(HostWeights *w, int l, int u, int sl, int su) {
    const LlamaConfig *c = &w->t.cfg;
    int hd = cfg_head_dim(c), C = c->dim, G = c->n_heads / c->n_kv_heads, qd = c->n_heads * hd;
    float *P = w->params;
    const ParamKind rows_kinds[3] = {P_WQ, P_WK, P_WV};
    for (int k = 0; k < 3; k++) {
        int r = (k == 0 ? G : 1) * hd;  // rows per unit
        float *dst = P + param_layer(&w->t, l, rows_kinds[k])->offset + (size_t)u * r * C;
        float *src = P + param_layer(&w->t, sl, rows_kinds[k])->offset + (size_t)su * r * C;
        memcpy(dst, src, sizeof(float) * (size_t)r * C);
    }
    float *o = P + param_layer(&w->t, l, P_WO)->offset,
          *so = P + param_layer(&w->t, sl, P_WO)->offset;
    for (int i = 0; i < C; i++)
        for (int j = 0; j < G * hd; j++)
            o[(size_t)i * qd + u * G * hd + j] = so[(size_t)i * qd + su * G * hd + j];
}

// Logits [B*T*V] of w (full or compact) on a fixed batch.
static inline float *logits_of(const HostWeights *w, int B, int T) {
    int V = w->t.cfg.vocab_size, *tok = xmalloc(sizeof(int) * (size_t)B * T);
    Rng r;
    rng_seed(&r, 99);
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_u64(&r) % (uint64_t)V);
    Model M;
    model_init_table(&M, backend_cpu(), &w->t);
    model_set_params(&M, w->params);
    model_forward(&M, tok, NULL, B, T);
    float *out = xmalloc(sizeof(float) * (size_t)B * T * V);
    model_get_logits(&M, out);
    model_free(&M);
    free(tok);
    return out;
}
