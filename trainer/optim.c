// optim.c: AdamW with decoupled weight decay (not on norm weights), warmup +
// cosine schedule, and global-norm clipping (see optim.h).
#include "optim.h"

#include <math.h>
#include <string.h>

#include "common.h"

void optim_init_range(Optim *o, Model *M, const OptimConfig *cfg, size_t lo, size_t hi,
                      const float *master) {
    CHECK(lo <= hi && hi <= M->t.total, "optimizer range [%zu, %zu) outside the %zu parameters", lo,
          hi, M->t.total);
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->be = M->be;
    o->lo = lo;
    o->hi = hi;
    size_t n = hi - lo;
    // state for [lo, hi) only: with ZeRO-1 each rank holds 1/world of it
    o->m = o->be->alloc(n * 4);
    o->v = o->be->alloc(n * 4);
    if (o->be->act_bytes == 4) {
        // fp32 compute: the parameters are the master weights
        o->master = (float *)M->params + lo;
        o->master_is_params = 1;
    } else {
        o->master = o->be->alloc(n * 4);
        if (master) {  // the fp32 weights themselves, not their rounding to the compute type
            o->be->upload(o->master, master + lo, n * 4);
        } else {
            float *tmp = xmalloc(n * 4);
            o->be->download_f32(tmp, (const char *)M->params + lo * o->be->act_bytes, n);
            o->be->upload(o->master, tmp, n * 4);
            free(tmp);
        }
    }
}

void optim_init(Optim *o, Model *M, const OptimConfig *cfg) {
    optim_init_range(o, M, cfg, 0, M->t.total, NULL);
}

void optim_free(Optim *o) {
    o->be->free(o->m);
    o->be->free(o->v);
    if (!o->master_is_params) o->be->free(o->master);
    if (o->lr_scale) o->be->free(o->lr_scale);
    memset(o, 0, sizeof *o);
}

void optim_set_lr_scale(Optim *o, const float *scale) {
    if (o->lr_scale) o->be->free(o->lr_scale);
    o->lr_scale = NULL;
    if (!scale) return;
    o->lr_scale = o->be->alloc((o->hi - o->lo) * 4);
    o->be->upload(o->lr_scale, scale, (o->hi - o->lo) * 4);
}

float optim_lr(const OptimConfig *c, int step) {
    if (c->warmup > 0 && step < c->warmup) return c->lr * (float)(step + 1) / (float)c->warmup;
    if (step >= c->total_steps) return c->min_lr;
    int span = c->total_steps - c->warmup;
    if (span <= 0) return c->lr;
    double progress = (double)(step - c->warmup) / span;
    double coeff = 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
    return (float)(c->min_lr + coeff * (c->lr - c->min_lr));
}

float optim_grad_norm(const Model *M) {
    return (float)sqrt(M->be->sumsq(M->grads, M->t.total));
}

double optim_range_sumsq(const Optim *o, const Model *M) {
    return M->be->sumsq(M->grads + o->lo, o->hi - o->lo);
}

float optim_step(Optim *o, Model *M, int step, float grad_norm) {
    const OptimConfig *c = &o->cfg;
    float lr = optim_lr(c, step);
    float scale = 1.0f;
    if (c->clip > 0 && grad_norm > c->clip) scale = c->clip / (grad_norm + 1e-6f);
    o->t++;
    size_t e = M->be->act_bytes;
    // One call per run of adjacent tensors with the same decay (a layer's four
    // attention matrices, its three MLP matrices, ...), not one per tensor.
    for (int i = 0, j; i < M->t.n; i = j) {
        const ParamEntry *pe = &M->t.e[i];
        size_t a = pe->offset, b = pe->offset + pe->numel;
        for (j = i + 1; j < M->t.n && M->t.e[j].decay == pe->decay && M->t.e[j].offset == b; j++)
            b += M->t.e[j].numel;
        if (a < o->lo) a = o->lo;
        if (b > o->hi) b = o->hi;
        if (a >= b) continue;
        size_t k = a - o->lo;  // index into the range's state
        o->be->adamw(o->master + k, (char *)M->params + a * e, M->grads + a, o->m + k, o->v + k,
                     b - a, lr, c->beta1, c->beta2, c->eps, pe->decay ? c->weight_decay : 0.0f,
                     scale, o->t, o->lr_scale ? o->lr_scale + k : NULL);
    }
    return lr;
}

void optim_get_state(const Optim *o, float *master, float *m, float *v) {
    size_t n = o->hi - o->lo;
    if (master) o->be->download(master, o->master, n * 4);
    if (m) o->be->download(m, o->m, n * 4);
    if (v) o->be->download(v, o->v, n * 4);
}

void optim_set_state(Optim *o, Model *M, const float *master, const float *m, const float *v,
                     int t) {
    size_t n = o->hi - o->lo;
    o->t = t;
    o->be->upload(o->master, master, n * 4);
    o->be->upload(o->m, m, n * 4);
    o->be->upload(o->v, v, n * 4);
    if (!o->master_is_params)
        M->be->upload_f32((char *)M->params + o->lo * M->be->act_bytes, master, n);
}
