// model.c: the LLaMA forward and backward passes, written once against the op
// table (backend.h). Nothing here knows whether the ops run on a CPU or a GPU.
//
// Per layer l (x = residual stream [BT,C]):
//   ln1 = rmsnorm(x, w_attn_norm)
//   q|k|v = ln1 [Wq;Wk;Wv]^T [BT,qd+2kvd]  (qd = nh*hd, kvd = nkv*hd; one GEMM)
//   q, k = rope(q), rope(k)
//   ao = causal_gqa_attention(q, k, v) [BT,qd]
//   x_mid = x + ao Wo^T
//   ln2 = rmsnorm(x_mid, w_ffn_norm)
//   gate|up = ln2 [Wgate;Wup]^T [BT,2F]     (one GEMM)
//   h = silu(gate) * up [BT,F]
//   x_next = x_mid + h Wdown^T
// Wq, Wk, Wv and Wgate, Wup are adjacent in the flat parameter buffer (params.c
// lays them out so), so each group is one [rows, C] weight matrix and its
// gradient one [rows, C] block: one GEMM each for the output, dX and dW.
// then lnf = rmsnorm(x_L), logits = lnf Whead^T [BT,V], loss = mean CE.
#include "model.h"

#include <string.h>

#include "common.h"
#include "share.h"

// Pointer to slab l of a per-layer buffer with `per` elements of `bytes` each.
static inline void *slab(void *base, int l, size_t per, size_t bytes) {
    return (char *)base + (size_t)l * per * bytes;
}
// Pointer to tensor e inside the flat compute-type parameter buffer, and inside
// the flat fp32 gradient buffer.
static inline void *pview(const Model *M, void *flat, const ParamEntry *e) {
    return (char *)flat + e->offset * M->be->act_bytes;
}
static inline float *gview(const Model *M, const ParamEntry *e) {
    return M->grads + e->offset;
}

// The saved activations of layer l (views into the per-layer slabs).
typedef struct {
    void *x, *xmid, *xnext, *ln1, *ln2, *qkv, *ao, *att, *gu, *h;
    float *rstd1, *rstd2;
} LayerActs;

static LayerActs layer_acts(const Model *M, int l) {
    const Activations *a = &M->a;
    const LlamaConfig *c = &M->cfg;
    size_t e = M->be->act_bytes, capBT = (size_t)a->B * a->T, C = (size_t)c->dim;
    size_t F = (size_t)c->ffn_dim, hd = (size_t)cfg_head_dim(c);
    size_t qd = hd * c->n_heads, kvd = hd * c->n_kv_heads;
    // with recomputation or forward-only every layer uses the one slab;
    // forward-only keeps two residual slabs, the layer's input and output
    int s = M->recompute || M->forward_only ? 0 : l;
    int xi = M->forward_only ? l & 1 : l, xo = M->forward_only ? (l + 1) & 1 : l + 1;
    LayerActs la = {
        .x = slab(a->x, xi, capBT * C, e),
        .xmid = slab(a->x_mid, s, capBT * C, e),
        .xnext = slab(a->x, xo, capBT * C, e),
        .ln1 = slab(a->ln1, s, capBT * C, e),
        .ln2 = slab(a->ln2, s, capBT * C, e),
        .qkv = slab(a->qkv, s, capBT * (qd + 2 * kvd), e),
        .ao = slab(a->ao, s, capBT * qd, e),
        .att = slab(a->att, s, M->attn_state_per_layer, 1),
        .gu = slab(a->gu, s, capBT * 2 * F, e),
        .h = slab(a->h, s, capBT * F, e),
        .rstd1 = slab(a->rstd1, s, capBT, 4),
        .rstd2 = slab(a->rstd2, s, capBT, 4),
    };
    return la;
}

void model_init(Model *M, const Backend *be, const LlamaConfig *cfg) {
    ParamTable t;
    param_table_build(&t, cfg);
    model_init_table(M, be, &t);
    param_table_free(&t);
}

// The forward and backward run Wq|Wk|Wv and Wgate|Wup as one matrix each: the
// table must place them adjacently, in this order (params.c does, for full and
// compact tables alike).
static void check_fused_layout(const ParamTable *t) {
    for (int l = 0; l < t->cfg.n_layers; l++) {
        const ParamEntry *q = param_layer(t, l, P_WQ), *k = param_layer(t, l, P_WK),
                         *v = param_layer(t, l, P_WV), *g = param_layer(t, l, P_W_GATE),
                         *u = param_layer(t, l, P_W_UP);
        CHECK(k->offset == q->offset + q->numel && v->offset == k->offset + k->numel &&
                  u->offset == g->offset + g->numel,
              "layer %d: Wq, Wk, Wv and Wgate, Wup must be adjacent in the parameter table", l);
    }
}

void model_init_table(Model *M, const Backend *be, const ParamTable *t) {
    check_fused_layout(t);
    memset(M, 0, sizeof *M);
    M->be = be;
    M->cfg = t->cfg;
    param_table_copy(&M->t, t);
    M->n_alloc = M->t.total;
    M->params = be->alloc(M->t.total * be->act_bytes);
    int half = cfg_head_dim(&M->cfg) / 2;
    float *inv = xmalloc(sizeof(float) * (size_t)half);
    rope_inv_freq(&M->cfg, inv);
    M->inv_freq = be->alloc(sizeof(float) * (size_t)half);
    be->upload(M->inv_freq, inv, sizeof(float) * (size_t)half);
    free(inv);
    if (M->t.shared) {  // inference only: no gradients; one layer's assembled attention weights
        M->forward_only = 1;
        CHECK(be->copy2d, "backend %s cannot run a compact shared model (no copy2d op)", be->name);
        if (M->t.shared->n_replaced)
            M->wscratch = be->alloc(share_scratch_elems(&M->cfg) * be->act_bytes);
    } else {
        M->grads = be->alloc(M->t.total * sizeof(float));
    }
}

void model_pad(Model *M, size_t n) {
    CHECK(M->grads && n >= M->t.total,
          "model_pad: a trainable model, to at least its %zu parameters", M->t.total);
    if (n == M->n_alloc) return;
    const Backend *be = M->be;
    size_t e = be->act_bytes;
    void *p = be->alloc(n * e);  // zeroed: the padding stays 0
    be->copy2d(p, M->t.total, M->params, M->t.total, 1, M->t.total);
    be->free(M->params);
    be->free(M->grads);
    M->params = p;
    M->grads = be->alloc(n * sizeof(float));
    M->n_alloc = n;
}

size_t model_weight_bytes(const ParamTable *t, size_t act_bytes) {
    int scratch = t->shared && t->shared->n_replaced;
    return (t->total + (scratch ? share_scratch_elems(&t->cfg) : 0)) * act_bytes;
}

static void free_acts(Model *M) {
    const Backend *be = M->be;
    Activations *a = &M->a;
    void *bufs[] = {a->x,     a->x_mid,  a->ln1,    a->ln2,    a->rstd1,   a->rstd2,
                    a->qkv,   a->att,    a->ao,     a->gu,     a->h,       a->lnf,
                    a->rstdf, a->logits, a->losses, a->tokens, a->targets, a->dres,
                    a->dln,   a->dqkv,   a->dao,    a->dgu,    a->dh};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->free(bufs[i]);
    memset(a, 0, sizeof *a);
}

void model_free(Model *M) {
    free_acts(M);
    model_cache_free(M);
    M->be->free(M->params);
    if (M->grads) M->be->free(M->grads);
    if (M->wscratch) M->be->free(M->wscratch);
    M->be->free(M->inv_freq);
    free(M->host_targets);
    param_table_free(&M->t);
    memset(M, 0, sizeof *M);
}

void model_reserve(Model *M, int B, int T) {
    Activations *a = &M->a;
    if (a->x && B <= a->B && T <= a->T) return;
    free_acts(M);
    const Backend *be = M->be;
    const LlamaConfig *c = &M->cfg;
    size_t L = (size_t)c->n_layers, BT = (size_t)B * T, C = (size_t)c->dim, F = (size_t)c->ffn_dim;
    size_t hd = (size_t)cfg_head_dim(c), qd = hd * c->n_heads, kvd = hd * c->n_kv_heads;
    size_t V = (size_t)c->vocab_size, e = be->act_bytes;
    a->B = B;
    a->T = T;
    M->attn_state_per_layer = be->attn_state_bytes(B, T, c->n_heads);
    // Forward-only: two residual slabs (a layer's input and output), one layer's
    // activations, no backward buffers.
    a->x = be->alloc((M->forward_only ? 2 : L + 1) * BT * C * e);
    // Saved per-layer activations: every layer's, or one layer's when the
    // backward recomputes each layer from its input x[l] (M->recompute).
    size_t Ls = M->recompute || M->forward_only ? 1 : L;
    a->x_mid = be->alloc(Ls * BT * C * e);
    a->ln1 = be->alloc(Ls * BT * C * e);
    a->ln2 = be->alloc(Ls * BT * C * e);
    a->rstd1 = be->alloc(Ls * BT * 4);
    a->rstd2 = be->alloc(Ls * BT * 4);
    a->qkv = be->alloc(Ls * BT * (qd + 2 * kvd) * e);
    a->att = be->alloc(Ls * M->attn_state_per_layer);
    a->ao = be->alloc(Ls * BT * qd * e);
    a->gu = be->alloc(Ls * BT * 2 * F * e);
    a->h = be->alloc(Ls * BT * F * e);
    a->lnf = be->alloc(BT * C * e);
    a->rstdf = be->alloc(BT * 4);
    // With a fused classifier (be->classifier_fwd) only forwards without targets
    // need the [BT,V] logits: model_forward allocates them on first such use.
    a->logits = be->classifier_fwd ? NULL : be->alloc(BT * V * e);
    a->losses = be->alloc(BT * 4);
    a->tokens = be->alloc(BT * 4);
    a->targets = be->alloc(BT * 4);
    M->host_targets = xrealloc(M->host_targets, BT * sizeof(int));
    if (M->forward_only) return;
    a->dres = be->alloc(BT * C * e);
    a->dln = be->alloc(BT * C * e);
    a->dqkv = be->alloc(BT * (qd + 2 * kvd) * e);
    a->dao = be->alloc(BT * qd * e);
    a->dgu = be->alloc(BT * 2 * F * e);
    a->dh = be->alloc(BT * F * e);
}

void model_set_recompute(Model *M, int on) {
    free_acts(M);  // the slabs change size
    M->recompute = on != 0;
}

void model_set_forward_only(Model *M, int on) {
    free_acts(M);  // the slabs change
    M->forward_only = on != 0;
    const Backend *be = M->be;
    if (M->forward_only && M->grads) {
        be->free(M->grads);
        M->grads = NULL;
    } else if (!M->forward_only && !M->grads && !M->t.shared) {
        M->grads = be->alloc(M->n_alloc * sizeof(float));
    }
}

void model_set_params(Model *M, const float *host) {
    M->be->upload_f32(M->params, host, M->t.total);
}
void model_take_params(Model *M, float **host) {
    if (M->be == backend_cpu() && M->n_alloc == M->t.total) {  // same allocator, same type
        M->be->free(M->params);
        M->params = *host;
    } else {
        model_set_params(M, *host);
        free(*host);
    }
    *host = NULL;
}

void model_get_params(const Model *M, float *host) {
    M->be->download_f32(host, M->params, M->t.total);
}
void model_get_grads(const Model *M, float *host) {
    CHECK(M->grads,
          "a compact shared or forward-only model has no gradients (it is for inference)");
    M->be->download(host, M->grads, M->t.total * sizeof(float));
}
void model_zero_grads(Model *M) {
    CHECK(M->grads,
          "a compact shared or forward-only model has no gradients (it is for inference)");
    M->be->zero(M->grads, M->n_alloc * sizeof(float));
}

// Layer l's forward on the last forward's batch: from x[l] the saved activations
// of the layer and (unless saved_only) x[l+1]. The backward calls it with
// saved_only = 1 to recompute a layer's activations when M->recompute is set:
// the same ops on the same inputs, so they come out bitwise the same.
static void layer_forward(Model *M, int l, int saved_only) {
    const Backend *be = M->be;
    const LlamaConfig *c = &M->cfg;
    int B = M->B, T = M->T, BT = B * T, C = c->dim, F = c->ffn_dim;
    int nh = c->n_heads, nkv = c->n_kv_heads, hd = cfg_head_dim(c);
    int qd = nh * hd, kvd = nkv * hd;
    size_t e = be->act_bytes;
#define W(kind) pview(M, M->params, param_layer(&M->t, l, kind))
    LayerActs la = layer_acts(M, l);
    void *x = la.x, *xmid = la.xmid, *xnext = la.xnext, *ln1 = la.ln1, *ln2 = la.ln2;
    float *rstd1 = la.rstd1, *rstd2 = la.rstd2;
    void *qkv = la.qkv, *ao = la.ao, *att = la.att, *gu = la.gu, *h = la.h;
    int ld = qd + 2 * kvd;  // row stride of qkv: q, k, v are column blocks of it
    void *q = qkv, *k = (char *)qkv + (size_t)qd * e, *v = (char *)k + (size_t)kvd * e;
    void *wqkv = W(P_WQ), *wo = W(P_WO);  // Wq|Wk|Wv: one [qd+2kvd, C] matrix
    if (M->t.shared && M->t.shared->n_own[l] < nkv) {
        // Compact shared model, a layer with replaced units: assemble its full
        // Wq [qd,C], Wk, Wv [kvd,C] (adjacent, as in a full layer), Wo [C,qd]
        // into the one-layer scratch.
        void *wq = M->wscratch;
        void *wk = (char *)wq + (size_t)qd * C * e;
        void *wv = (char *)wk + (size_t)kvd * C * e;
        wo = (char *)wv + (size_t)kvd * C * e;
        share_assemble_layer(&M->t, be, M->params, l, wq, wk, wv, wo);
        wqkv = wq;
    }

    // attention block
    be->rmsnorm_fwd(ln1, rstd1, x, W(P_ATTN_NORM), BT, C, c->norm_eps);
    be->matmul_fwd(qkv, ln1, wqkv, BT, C, ld, NULL);
    // RoPE turns the q and k heads, the first nh + nkv heads of each row, in one call
    if (M->kv_active) {  // generation: new positions kv_len.., keys and values into the cache
        int p0 = M->kv_len, cap = M->kv_cap;
        be->rope_fwd_at(qkv, M->inv_freq, B, T, nh + nkv, hd, ld, p0);
        void *kc = slab(M->kv_k, l, (size_t)B * cap * kvd, e);
        void *vc = slab(M->kv_v, l, (size_t)B * cap * kvd, e);
        for (int b = 0; b < B; b++) {
            size_t at = ((size_t)b * cap + p0) * kvd * e, from = (size_t)b * T * ld * e;
            be->copy2d((char *)kc + at, kvd, (char *)k + from, ld, T, kvd);
            be->copy2d((char *)vc + at, kvd, (char *)v + from, ld, T, kvd);
        }
        be->attention_cached(ao, q, ld, kc, vc, B, T, p0, cap, nh, nkv, hd);
    } else {
        be->rope_fwd(qkv, M->inv_freq, B, T, nh + nkv, hd, ld);
        be->attention_fwd(ao, att, q, k, v, ld, ld, B, T, nh, nkv, hd);
    }
    be->matmul_fwd(xmid, ao, wo, BT, qd, C, x);  // x_mid = x + ao Wo^T
    // MLP block
    be->rmsnorm_fwd(ln2, rstd2, xmid, W(P_FFN_NORM), BT, C, c->norm_eps);
    be->matmul_fwd(gu, ln2, W(P_W_GATE), BT, C, 2 * F, NULL);  // Wgate|Wup: one [2F, C] matrix
    be->swiglu_fwd(h, gu, BT, F);
    if (!saved_only) {
        be->matmul_fwd(xnext, h, W(P_W_DOWN), BT, F, C, xmid);  // x_next = x_mid + h Wdown^T
    }
#undef W
}

// The forward; with targets, the per-row losses stay in a->losses (backend memory).
int model_count_targets(const int *targets, int n) {
    int c = 0;
    for (int i = 0; i < n; i++) c += targets[i] >= 0;
    return c;
}

// The classifier's gradients without a fused classifier: the stored logits
// become dlogits in place, then the LM head's gradient (+=) and dln (=).
static void head_grad_unfused(Model *M, float loss_scale) {
    const Backend *be = M->be;
    Activations *a = &M->a;
    int BT = M->B * M->T, C = M->cfg.dim, V = M->cfg.vocab_size;
    const ParamEntry *head = param_lm_head(&M->t);
    be->crossentropy_bwd(a->logits, a->targets, BT, V, loss_scale);
    be->matmul_bwd(a->dln, gview(M, head), a->logits, a->lnf, pview(M, M->params, head), BT, C, V,
                   0);
}

// The forward; with grad (and a counted target) also the classifier's gradients
// of loss_scale * sum of the per-row losses (model_forward_grad).
static void forward(Model *M, const int *tokens, const int *targets, int B, int T, int grad,
                    float loss_scale) {
    const Backend *be = M->be;
    const LlamaConfig *c = &M->cfg;
    model_reserve(M, B, T);
    Activations *a = &M->a;
    int L = c->n_layers, BT = B * T, C = c->dim, V = c->vocab_size;
    size_t e = be->act_bytes, capBT = (size_t)a->B * a->T;
    M->B = B;
    M->T = T;
    for (int i = 0; i < BT; i++)
        CHECK(tokens[i] >= 0 && tokens[i] < V, "token %d at position %d is outside the vocab (%d)",
              tokens[i], i, V);
    be->upload(a->tokens, tokens, (size_t)BT * sizeof(int));

    be->embedding_fwd(a->x, a->tokens, pview(M, M->params, &M->t.e[M->t.embed]), BT, C);
    for (int l = 0; l < L; l++) layer_forward(M, l, 0);
    void *xL = slab(a->x, M->forward_only ? L & 1 : L, capBT * C, e);
    be->rmsnorm_fwd(a->lnf, a->rstdf, xL, pview(M, M->params, &M->t.e[M->t.final_norm]), BT, C,
                    c->norm_eps);
    void *head = pview(M, M->params, param_lm_head(&M->t));
    // With targets and a fused classifier (both backends have one) the logits are never stored.
    M->fused_loss = targets && be->classifier_fwd;
    if (!M->fused_loss) {
        if (!a->logits) a->logits = be->alloc(capBT * V * e);
        be->matmul_fwd(a->logits, a->lnf, head, BT, C, V, NULL);
    }

    M->n_valid = 0;
    M->head_done = 0;
    if (!targets) return;
    memcpy(M->host_targets, targets, (size_t)BT * sizeof(int));
    for (int i = 0; i < BT; i++)
        CHECK(targets[i] < V, "target %d at position %d is outside the vocab (%d)", targets[i], i,
              V);
    M->n_valid = model_count_targets(targets, BT);
    be->upload(a->targets, targets, (size_t)BT * sizeof(int));
    M->head_done = grad && M->n_valid > 0;
    M->head_scale = loss_scale;
    if (M->fused_loss)
        be->classifier_fwd(a->losses, M->head_done ? a->dln : NULL,
                           M->head_done ? gview(M, param_lm_head(&M->t)) : NULL, a->lnf, head,
                           a->targets, BT, C, V, loss_scale);
    else
        be->crossentropy_fwd(a->losses, a->logits, a->targets, BT, V);
    if (M->head_done && !M->fused_loss) head_grad_unfused(M, loss_scale);
}

// The mean loss of the last forward over its counted targets (0 when none count).
static float mean_loss(const Model *M) {
    int BT = M->B * M->T;
    float *losses = xmalloc(sizeof(float) * (size_t)BT);
    M->be->download(losses, M->a.losses, sizeof(float) * (size_t)BT);
    double sum = 0.0;
    for (int i = 0; i < BT; i++) sum += losses[i];
    free(losses);
    return M->n_valid ? (float)(sum / M->n_valid) : 0.0f;
}

float model_forward(Model *M, const int *tokens, const int *targets, int B, int T) {
    forward(M, tokens, targets, B, T, 0, 0.0f);
    return targets ? mean_loss(M) : 0.0f;
}

float model_forward_grad(Model *M, const int *tokens, const int *targets, int B, int T,
                         float loss_scale) {
    CHECK(targets && M->grads && !M->forward_only,
          "model_forward_grad needs targets and a trainable model (not forward-only)");
    forward(M, tokens, targets, B, T, 1, loss_scale);
    return mean_loss(M);
}

int model_forward_logprobs(Model *M, const int *tokens, const int *targets, int B, int T,
                           float *logprobs) {
    forward(M, tokens, targets, B, T, 0, 0.0f);
    size_t BT = (size_t)B * T;
    M->be->download(logprobs, M->a.losses, sizeof(float) * BT);
    for (size_t i = 0; i < BT; i++) logprobs[i] = targets[i] < 0 ? 0.0f : -logprobs[i];
    return M->n_valid;
}

int model_has_cache_ops(const Model *M) {
    return M->be->rope_fwd_at && M->be->attention_cached && M->be->copy2d;
}

void model_cache_start(Model *M, int B, int cap) {
    CHECK(model_has_cache_ops(M), "backend %s has no KV-cache ops", M->be->name);
    model_cache_free(M);
    const LlamaConfig *c = &M->cfg;
    size_t n = (size_t)c->n_layers * B * cap * cfg_head_dim(c) * c->n_kv_heads;
    M->kv_k = M->be->alloc(n * M->be->act_bytes);
    M->kv_v = M->be->alloc(n * M->be->act_bytes);
    M->kv_B = B;
    M->kv_cap = cap;
    M->kv_len = 0;
}

void model_cache_free(Model *M) {
    if (M->kv_k) M->be->free(M->kv_k);
    if (M->kv_v) M->be->free(M->kv_v);
    M->kv_k = M->kv_v = NULL;
    M->kv_B = M->kv_cap = M->kv_len = 0;
}

void model_forward_next(Model *M, const int *tokens, int B, int T) {
    CHECK(M->kv_k && B == M->kv_B && M->kv_len + T <= M->kv_cap,
          "model_forward_next: %d tokens after %d do not fit the KV cache (%d rows of %d)", T,
          M->kv_len, M->kv_B, M->kv_cap);
    M->kv_active = 1;
    forward(M, tokens, NULL, B, T, 0, 0.0f);
    M->kv_active = 0;
    M->kv_len += T;
}

void model_get_logits(const Model *M, float *host) {
    CHECK(!M->fused_loss,
          "backend %s fuses the classifier of forwards with targets: run the "
          "forward without targets to get logits",
          M->be->name);
    CHECK(!M->head_done,
          "model_forward_grad turned the logits into their gradients: run the "
          "forward without targets to get logits");
    M->be->download_f32(host, M->a.logits, (size_t)M->B * M->T * M->cfg.vocab_size);
}

// Tell the grad_ready hook (if any) that the gradients of elements [lo, hi)
// are final.
static void announce(const Model *M, size_t lo, size_t hi) {
    if (M->grad_ready && hi > lo) M->grad_ready(M->grad_ready_ctx, lo, hi);
}

// Start of layer l's parameters in the flat buffer (l = L: the end of the
// layers). The table lays out: embedding | layer 0 | ... | layer L-1 | final
// norm | lm_head (untied).
static size_t layer_start(const Model *M, int l) {
    if (l == M->cfg.n_layers) return M->t.e[M->t.final_norm].offset;
    return param_layer(&M->t, l, P_ATTN_NORM)->offset;
}

void model_grads_ready_all(const Model *M) {
    int L = M->cfg.n_layers;
    announce(M, layer_start(M, L), M->t.total);
    for (int l = L - 1; l >= 0; l--) announce(M, layer_start(M, l), layer_start(M, l + 1));
    announce(M, 0, layer_start(M, 0));
}

void model_backward(Model *M, float loss_scale) {
    // Not built for compact shared models (a source's gradient would have to
    // gather its replicas' gradients): they are for inference; materialize to train.
    CHECK(!M->t.shared, "backward on a compact shared model is not supported; materialize it");
    CHECK(!M->forward_only, "backward on a forward-only model (model_set_forward_only)");
    const Backend *be = M->be;
    const LlamaConfig *c = &M->cfg;
    Activations *a = &M->a;
    int B = M->B, T = M->T, L = c->n_layers, BT = B * T, C = c->dim, F = c->ffn_dim;
    int V = c->vocab_size, nh = c->n_heads, nkv = c->n_kv_heads, hd = cfg_head_dim(c);
    int qd = nh * hd, kvd = nkv * hd;
    size_t e = be->act_bytes, capBT = (size_t)a->B * a->T;

    // classifier: dlogits, then into the LM head's gradient and dln (the gradient
    // entering the final norm); model_forward_grad did this already
    const ParamEntry *head = param_lm_head(&M->t);
    if (M->head_done) {
        CHECK(loss_scale == M->head_scale,
              "model_backward: loss scale %.9g, but model_forward_grad used %.9g", loss_scale,
              M->head_scale);
    } else if (M->fused_loss) {  // the backend computes the logits again, in chunks
        be->classifier_fwd(a->losses, a->dln, gview(M, head), a->lnf, pview(M, M->params, head),
                           a->targets, BT, C, V, loss_scale);
    } else {
        head_grad_unfused(M, loss_scale);
    }
    M->head_done = 0;  // the head's gradient went in once
    const ParamEntry *fn = &M->t.e[M->t.final_norm];
    be->zero(a->dres, (size_t)BT * C * e);
    be->rmsnorm_bwd(a->dres, gview(M, fn), a->dln, slab(a->x, L, capBT * C, e),
                    pview(M, M->params, fn), a->rstdf, BT, C);
    // final norm and an untied LM head are done (a tied head is the embedding: last)
    announce(M, layer_start(M, L), M->t.total);

    for (int l = L - 1; l >= 0; l--) {
#define W(kind) pview(M, M->params, param_layer(&M->t, l, kind))
#define G(kind) gview(M, param_layer(&M->t, l, kind))
        if (M->recompute) layer_forward(M, l, 1);  // this layer's activations again
        LayerActs la = layer_acts(M, l);
        void *x = la.x, *xmid = la.xmid, *ln1 = la.ln1, *ln2 = la.ln2;
        float *rstd1 = la.rstd1, *rstd2 = la.rstd2;
        void *qkv = la.qkv, *ao = la.ao, *att = la.att, *gu = la.gu, *h = la.h;
        int ld = qd + 2 * kvd;  // qkv and dqkv: q | k | v per row
        void *k = (char *)qkv + (size_t)qd * e, *v = (char *)k + (size_t)kvd * e;
        void *dk = (char *)a->dqkv + (size_t)qd * e, *dv = (char *)dk + (size_t)kvd * e;

        // MLP block: dres holds d(x_next); it flows unchanged into d(x_mid) plus the norm path
        be->matmul_bwd(a->dh, G(P_W_DOWN), a->dres, h, W(P_W_DOWN), BT, F, C, 0);
        be->swiglu_bwd(a->dgu, a->dh, gu, BT, F);
        // Wgate|Wup as one [2F, C] matrix: dln = dgu Wgu, dWgu += dgu^T ln2
        be->matmul_bwd(a->dln, G(P_W_GATE), a->dgu, ln2, W(P_W_GATE), BT, C, 2 * F, 0);
        be->rmsnorm_bwd(a->dres, G(P_FFN_NORM), a->dln, xmid, W(P_FFN_NORM), rstd2, BT, C);
        // attention block: dres now holds d(x_mid)
        be->matmul_bwd(a->dao, G(P_WO), a->dres, ao, W(P_WO), BT, qd, C, 0);
        be->attention_bwd(a->dqkv, dk, dv, a->dao, att, qkv, k, v, ld, ld, B, T, nh, nkv, hd);
        be->rope_bwd(a->dqkv, M->inv_freq, B, T, nh + nkv, hd, ld);  // dq and dk
        // Wq|Wk|Wv as one [qd+2kvd, C] matrix: dln = dqkv Wqkv, dWqkv += dqkv^T ln1
        be->matmul_bwd(a->dln, G(P_WQ), a->dqkv, ln1, W(P_WQ), BT, C, ld, 0);
        be->rmsnorm_bwd(a->dres, G(P_ATTN_NORM), a->dln, x, W(P_ATTN_NORM), rstd1, BT, C);
#undef W
#undef G
        announce(M, layer_start(M, l), layer_start(M, l + 1));
    }
    be->embedding_bwd(gview(M, &M->t.e[M->t.embed]), a->dres, a->tokens, BT, C);
    announce(M, 0, layer_start(M, 0));
}
