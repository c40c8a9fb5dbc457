// zero.h: ZeRO-1 data parallelism over a communicator (comm.h).
//
// Every rank holds the whole model (parameters replicated) and computes the
// gradient of its own micro-batches into the whole flat gradient buffer. The
// flat buffers are padded to world * shard elements, and rank r owns the
// contiguous shard [r*shard, (r+1)*shard) (the last one ends at the real
// parameter count):
//
//   backward (local grads) -> reduce-scatter: shard r holds the sum over ranks
//     (or, overlapped, one reduction per finished layer into its owners)
//   -> global norm: each rank's sum of squares over its shard, all-reduced
//   -> AdamW on the shard (fp32 master, m, v of the shard only: optim_init_range)
//   -> all-gather: every rank gets every updated shard of the parameters.
//
// So the optimizer state per rank is 1/world of the whole (the ZeRO-1 saving),
// and the update equals one process's update of the summed gradient. With the
// single communicator (world 1) the same calls run and move nothing.
#pragma once

#include "comm.h"
#include "model.h"
#include "optim.h"

typedef struct {
    Comm *comm;
    CommType type;  // of the params: the backend's compute type (the grads are fp32)
    size_t total;   // real parameters
    size_t shard;   // elements per rank: a multiple of 64 (aligned), world*shard >= total
    size_t lo, hi;  // this rank's parameters [lo, hi)
    int overlap;    // reductions started during the backward (zero1_overlap_next)
    float *grads;   // the buffer they reduce
} Zero1;

// Split M's parameters over c's ranks and pad M's buffers (model_pad) to world*shard.
void zero1_init(Zero1 *z, Comm *c, Model *M);
// Overlap the reduction with the next model_backward (call it before the last
// micro-batch's backward): as the backward finishes each layer's gradients,
// their pieces start to be summed into the ranks that own them. A no-op when
// the communicator cannot (no reduce_start) or on one rank; zero1_reduce_grads
// then reduces everything at once.
void zero1_overlap_next(Zero1 *z, Model *M);
// Reduce-scatter the local gradients (sum over ranks into this rank's shard) and
// return the global L2 norm of the summed gradient (the same on every rank).
float zero1_reduce_grads(Zero1 *z, Model *M, const Optim *o);
// All-gather the updated shards of the parameters into every rank's model.
void zero1_gather_params(const Zero1 *z, Model *M);
// The whole optimizer state on rank `root`, for a checkpoint: master, m and v
// (host, t.total floats each; any may be NULL to skip; ignored on other ranks).
// Collective: every rank calls it.
void zero1_gather_state(const Zero1 *z, const Optim *o, float *master, float *m, float *v,
                        int root);
