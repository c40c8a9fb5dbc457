// comm_nccl.cu: the NCCL communicator (trainer/comm.h) for the CUDA backend.
//
// Each rank drives one GPU: local_rank % (visible GPUs), selected here with
// cudaSetDevice before the backend starts (backend_cuda_probe then uses the
// current device). Rank 0 makes the NCCL unique id and the host communicator
// (MPI, or the single one for a world of 1) broadcasts it; every rank then joins
// with ncclCommInitRank.
//
// Data collectives run in place on device buffers of the CUDA backend. NCCL gets
// a stream of its own, ordered against the backend's compute stream
// (cuda_stream()) by events in both directions: a collective starts after all
// work queued before it and everything queued after it waits for it, exactly as
// if it ran on the compute stream, without handing the legacy default stream to
// NCCL. reduce_start only makes NCCL wait for the compute stream, so that the
// reductions overlap the rest of the backward; reduce_wait closes the loop. Host
// collectives, the barrier and the final abort go to the host communicator.
//
// Built only with NCCL (CMake defines PS_HAVE_NCCL); otherwise trainer/comm.c
// has a comm_nccl that returns NULL with the reason.
#ifdef PS_HAVE_NCCL

#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

extern "C" {
#include "comm.h"
}

// ---------------------------------------------------------------- checking

static const char *nccl_hint(ncclResult_t r) {
    switch (r) {
        case ncclUnhandledCudaError:
            return "a CUDA call inside NCCL failed (an earlier kernel fault, or out of GPU "
                   "memory); rerun with PS_CUDA_SYNC=1 and NCCL_DEBUG=WARN";
        case ncclSystemError:
            return "a system call failed (sockets, shared memory: /dev/shm too small in a "
                   "container?); rerun with NCCL_DEBUG=INFO; on one node NCCL_SOCKET_IFNAME=lo "
                   "may help";
        case ncclInternalError:
            return "rerun with NCCL_DEBUG=INFO to see where";
        case ncclInvalidArgument:
            return "a bad buffer or count: comm: nccl needs device buffers (backend: cuda)";
        case ncclInvalidUsage:
            return "two ranks on one GPU (more ranks per node than visible GPUs?), or ranks "
                   "calling different collectives; rerun with NCCL_DEBUG=WARN";
        case ncclRemoteError:
            return "another rank failed or went away: see its message";
        default:
            return "rerun with NCCL_DEBUG=INFO";
    }
}

// NCCL's last error message (a sentence with the detail) for comm, or "".
static const char *nccl_detail(ncclComm_t comm) {
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
    const char *s = ncclGetLastError(comm);
    return s ? s : "";
#else
    (void)comm;
    return "";
#endif
}

static void nccl_check_at(ncclResult_t r, ncclComm_t comm, const char *file, int line,
                          const char *call) {
    if (r == ncclSuccess) return;
    const char *detail = nccl_detail(comm);
    ps_die_at(file, line, "NCCL call failed: %s: %s%s%s; hint: %s", call, ncclGetErrorString(r),
              detail[0] ? ": " : "", detail, nccl_hint(r));
}

// NCCL_CHECK(call, comm): die with file:line, the call, NCCL's error string, its
// last error message for comm (NULL: the thread's last), and a hint.
#define NCCL_CHECK(call, comm) nccl_check_at((call), (comm), __FILE__, __LINE__, #call)

// ---------------------------------------------------------------- state

typedef struct {
    Comm *host;                 // host collectives, barrier, abort
    ncclComm_t nccl;            // NULL once destroyed or aborted
    cudaStream_t stream;        // NCCL's stream
    cudaEvent_t before, after;  // compute -> NCCL and NCCL -> compute ordering
    int device;
} NcclState;

static NcclState *state(Comm *c) {
    return (NcclState *)c->impl;
}

static ncclDataType_t nccl_type(CommType t) {
    switch (t) {
        case COMM_F32:
            return ncclFloat32;
        case COMM_BF16:
            return ncclBfloat16;
        case COMM_F64:
            return ncclFloat64;
        case COMM_I32:
            return ncclInt32;
    }
    ps_die("comm nccl: unknown element type %d", (int)t);
}

static ncclRedOp_t nccl_op(CommOp op) {
    switch (op) {
        case COMM_SUM:
            return ncclSum;
        case COMM_MAX:
            return ncclMax;
        case COMM_MIN:
            return ncclMin;
        case COMM_AVG:
            return ncclAvg;
    }
    ps_die("comm nccl: unknown reduction %d", (int)op);
}

// NCCL's stream waits for everything queued on the compute stream so far.
static void nccl_begin(NcclState *s) {
    CUDA_CHECK(cudaEventRecord(s->before, cuda_stream()));
    CUDA_CHECK(cudaStreamWaitEvent(s->stream, s->before, 0));
}
// Everything queued on the compute stream from now on waits for the collective.
static void nccl_end(NcclState *s) {
    CUDA_CHECK(cudaEventRecord(s->after, s->stream));
    CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(), s->after, 0));
    if (cuda_sync_each_launch) CUDA_CHECK(cudaDeviceSynchronize());
}

// ---------------------------------------------------------------- data collectives

static void nc_allreduce(Comm *c, void *buf, size_t n, CommType t, CommOp op) {
    NcclState *s = state(c);
    if (n == 0) return;
    nccl_begin(s);
    NCCL_CHECK(ncclAllReduce(buf, buf, n, nccl_type(t), nccl_op(op), s->nccl, s->stream), s->nccl);
    nccl_end(s);
}

// In place (NCCL's convention): recvbuff = sendbuff + rank * recvcount.
static void nc_reduce_scatter(Comm *c, void *buf, size_t shard, CommType t) {
    NcclState *s = state(c);
    if (shard == 0) return;
    char *own = (char *)buf + (size_t)c->rank * shard * comm_type_bytes(t);
    nccl_begin(s);
    NCCL_CHECK(ncclReduceScatter(buf, own, shard, nccl_type(t), ncclSum, s->nccl, s->stream),
               s->nccl);
    nccl_end(s);
}

// In place (NCCL's convention): sendbuff = recvbuff + rank * sendcount.
static void nc_all_gather(Comm *c, void *buf, size_t shard, CommType t) {
    NcclState *s = state(c);
    if (shard == 0) return;
    const char *own = (const char *)buf + (size_t)c->rank * shard * comm_type_bytes(t);
    nccl_begin(s);
    NCCL_CHECK(ncclAllGather(own, buf, shard, nccl_type(t), s->nccl, s->stream), s->nccl);
    nccl_end(s);
}

static void nc_broadcast(Comm *c, void *buf, size_t n, CommType t, int root) {
    NcclState *s = state(c);
    if (n == 0) return;
    nccl_begin(s);
    NCCL_CHECK(ncclBroadcast(buf, buf, n, nccl_type(t), root, s->nccl, s->stream), s->nccl);
    nccl_end(s);
}

// Overlapped reductions: each starts after the work queued so far (the backward
// up to the layer whose gradients are final) and runs on NCCL's stream while the
// compute stream goes on; reduce_wait makes the compute stream wait for all of them.
static void nc_reduce_start(Comm *c, void *buf, size_t n, CommType t, int root) {
    NcclState *s = state(c);
    if (n == 0) return;
    nccl_begin(s);
    NCCL_CHECK(ncclReduce(buf, buf, n, nccl_type(t), ncclSum, root, s->nccl, s->stream), s->nccl);
}
static void nc_reduce_wait(Comm *c) {
    nccl_end(state(c));
}

// ---------------------------------------------------------------- host side: the host communicator

static void nc_host_allreduce(Comm *c, void *buf, size_t n, CommType t, CommOp op) {
    Comm *h = state(c)->host;
    h->host_allreduce(h, buf, n, t, op);
}
static void nc_host_broadcast(Comm *c, void *buf, size_t bytes, int root) {
    Comm *h = state(c)->host;
    h->host_broadcast(h, buf, bytes, root);
}
static void nc_host_gather(Comm *c, const void *send, void *recv, size_t n, CommType t, int root) {
    Comm *h = state(c)->host;
    h->host_gather(h, send, recv, n, t, root);
}
static void nc_barrier(Comm *c) {
    Comm *h = state(c)->host;
    h->barrier(h);
}

// Called from ps_die's exit hook: no checks here (a failure must not recurse).
static void nc_abort(Comm *c, int status) {
    NcclState *s = state(c);
    if (s->nccl) {
        ncclComm_t nc = s->nccl;
        s->nccl = NULL;
        ncclCommAbort(nc);
    }
    s->host->abort(s->host, status);
    exit(status);
}

static void nc_finalize(Comm *c) {
    NcclState *s = state(c);
    CUDA_CHECK(cudaDeviceSynchronize());
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
    NCCL_CHECK(ncclCommFinalize(s->nccl), s->nccl);  // flushes the outstanding operations
#endif
    ncclComm_t nc = s->nccl;
    s->nccl = NULL;  // an abort from here on leaves it alone
    NCCL_CHECK(ncclCommDestroy(nc), NULL);
    CUDA_CHECK(cudaEventDestroy(s->before));
    CUDA_CHECK(cudaEventDestroy(s->after));
    CUDA_CHECK(cudaStreamDestroy(s->stream));
    s->host->finalize(s->host);
    free(s);
    free(c);
}

// ---------------------------------------------------------------- creation

// comm_nccl (comm.c) loads the CUDA module on first use and calls this.
extern "C" Comm *ps_cuda_module_comm_nccl(Comm *host, const char **why) {
    static char msg[512];
    int ndev = 0;
    cudaError_t err = cudaGetDeviceCount(&ndev);
    if (err != cudaSuccess || ndev == 0) {
        if (err != cudaSuccess) {
            snprintf(msg, sizeof msg,
                     "no usable NVIDIA GPU (cudaGetDeviceCount: %s, %s: no NVIDIA driver or GPU "
                     "here, or a driver older than this CUDA runtime)",
                     cudaGetErrorString(err), cudaGetErrorName(err));
            cudaGetLastError();  // leave no error state behind
        } else {
            snprintf(msg, sizeof msg, "no NVIDIA GPU is visible (cudaGetDeviceCount returned 0)");
        }
        if (why) *why = msg;
        return NULL;
    }
    // One GPU per rank of this node. Under a launcher that gives each rank its own
    // CUDA_VISIBLE_DEVICES, ndev is 1 and every rank takes its device 0.
    int dev = host->local_rank % ndev;
    if (cuda_device_cc() != 0) {  // the backend already started: on which device?
        int cur = -1;
        CUDA_CHECK(cudaGetDevice(&cur));
        if (cur != dev)
            ps_die(
                "comm nccl: the CUDA backend started on GPU %d before the communicator chose "
                "GPU %d for local rank %d: create the communicator first (comm_init before "
                "backend_get)",
                cur, dev, host->local_rank);
    }
    CUDA_CHECK(cudaSetDevice(dev));

    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (host->rank == 0) NCCL_CHECK(ncclGetUniqueId(&id), NULL);
    host->host_broadcast(host, &id, sizeof id, 0);
    ncclComm_t nc = NULL;
    ncclResult_t r = ncclCommInitRank(&nc, host->world, id, host->rank);
    if (r != ncclSuccess && host->local_world > ndev && ndev > 1)
        ps_die(
            "NCCL: ncclCommInitRank failed: %s (%s); %d ranks on this node but %d GPUs are "
            "visible: run at most one rank per GPU",
            ncclGetErrorString(r), nccl_detail(nc), host->local_world, ndev);
    NCCL_CHECK(r, nc);

    NcclState *s = (NcclState *)xcalloc(1, sizeof *s);
    s->host = host;
    s->nccl = nc;
    s->device = dev;
    // Non-blocking: no implicit synchronization with the legacy default stream;
    // the events order it against the compute stream.
    CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&s->before, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&s->after, cudaEventDisableTiming));

    Comm *c = (Comm *)xcalloc(1, sizeof *c);
    c->name = "nccl";
    c->rank = host->rank;
    c->world = host->world;
    c->local_rank = host->local_rank;
    c->local_world = host->local_world;
    c->allreduce = nc_allreduce;
    c->reduce_scatter = nc_reduce_scatter;
    c->all_gather = nc_all_gather;
    c->broadcast = nc_broadcast;
    c->reduce_start = nc_reduce_start;
    c->reduce_wait = nc_reduce_wait;
    c->host_allreduce = nc_host_allreduce;
    c->host_broadcast = nc_host_broadcast;
    c->host_gather = nc_host_gather;
    c->barrier = nc_barrier;
    c->abort = nc_abort;
    c->finalize = nc_finalize;
    c->impl = s;
    return c;
}

#endif  // PS_HAVE_NCCL
