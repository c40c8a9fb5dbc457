// zero.c: ZeRO-1 sharding of the optimizer over data-parallel ranks (see zero.h).
#include "zero.h"

#include <math.h>
#include <string.h>

#include "common.h"

// Shards are multiples of 64 elements so that every rank's slice of a bf16
// buffer starts 128-byte aligned, and of an fp32 one 256-byte aligned (what
// NCCL and vector loads like best).
#define SHARD_ALIGN 64

void zero1_init(Zero1 *z, Comm *c, Model *M) {
    size_t total = M->t.total, world = (size_t)c->world;
    size_t shard = (total + world - 1) / world;
    shard = (shard + SHARD_ALIGN - 1) / SHARD_ALIGN * SHARD_ALIGN;
    *z = (Zero1){.comm = c,
                 .type = M->be->act_bytes == 4 ? COMM_F32 : COMM_BF16,
                 .total = total,
                 .shard = shard};
    z->lo = (size_t)c->rank * shard;
    z->hi = z->lo + shard;
    if (z->lo > total) z->lo = total;
    if (z->hi > total) z->hi = total;
    model_pad(M, shard * world);
}

// model_backward's grad_ready hook: [lo, hi) is final; each rank's part of it
// goes to that rank. Gradients are fp32 on every backend.
static void on_grads_ready(void *ctx, size_t lo, size_t hi) {
    Zero1 *z = ctx;
    for (int r = 0; r < z->comm->world; r++) {
        size_t a = (size_t)r * z->shard, b = a + z->shard;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        if (a < b) z->comm->reduce_start(z->comm, z->grads + a, b - a, COMM_F32, r);
    }
}

void zero1_overlap_next(Zero1 *z, Model *M) {
    if (z->comm->world == 1 || !z->comm->reduce_start) return;
    z->overlap = 1;
    z->grads = M->grads;
    M->grad_ready = on_grads_ready;
    M->grad_ready_ctx = z;
}

float zero1_reduce_grads(Zero1 *z, Model *M, const Optim *o) {
    CHECK(o->lo == z->lo && o->hi == z->hi, "the optimizer must own this rank's shard");
    if (z->overlap) {
        // every element [0, total) was announced once by the backward; the
        // padding past total is 0 on every rank, so its sum needs no message
        z->comm->reduce_wait(z->comm);
        M->grad_ready = NULL;
        z->overlap = 0;
    } else {
        z->comm->reduce_scatter(z->comm, M->grads, z->shard, COMM_F32);
    }
    // The norm of the summed gradient: its shards are disjoint, so the squares add up.
    double ss = optim_range_sumsq(o, M);
    z->comm->host_allreduce(z->comm, &ss, 1, COMM_F64, COMM_SUM);
    return (float)sqrt(ss);
}

void zero1_gather_params(const Zero1 *z, Model *M) {
    z->comm->all_gather(z->comm, M->params, z->shard, z->type);
}

void zero1_gather_state(const Zero1 *z, const Optim *o, float *master, float *m, float *v,
                        int root) {
    Comm *c = z->comm;
    size_t n = z->hi - z->lo;
    // each rank's shard as shard floats (the last one zero-padded), gathered in rank order
    float *mine = xcalloc(z->shard, sizeof(float));
    float *all = c->rank == root ? xmalloc(sizeof(float) * z->shard * (size_t)c->world) : NULL;
    float *outs[3] = {master, m, v};
    for (int k = 0; k < 3; k++) {
        int want = c->rank != root || outs[k] != NULL;
        c->host_broadcast(c, &want, sizeof want, root);  // every rank takes part or none
        if (!want) continue;
        optim_get_state(o, k == 0 ? mine : NULL, k == 1 ? mine : NULL, k == 2 ? mine : NULL);
        memset(mine + n, 0, sizeof(float) * (z->shard - n));
        c->host_gather(c, mine, all, z->shard, COMM_F32, root);
        if (c->rank == root) memcpy(outs[k], all, sizeof(float) * z->total);
    }
    free(mine);
    free(all);
}
