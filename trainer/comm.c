// comm.c: the single-process and MPI communicators, the launcher detection and
// comm_init (see comm.h). The NCCL communicator is in cuda/comm_nccl.cu.
#define _POSIX_C_SOURCE 200809L
#include "comm.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"

#ifdef PS_HAVE_MPI
#include <mpi.h>
#endif

size_t comm_type_bytes(CommType t) {
    switch (t) {
        case COMM_F32:
            return 4;
        case COMM_BF16:
            return 2;
        case COMM_F64:
            return 8;
        case COMM_I32:
            return 4;
    }
    return 0;
}

int comm_launched(void) {
    // OpenMPI's mpirun, and PMI/PMIx (Slurm's srun, MPICH's hydra)
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

// ---------------------------------------------------------------------------
// single process: world 1, nothing to exchange

static void single_allreduce(Comm *c, void *buf, size_t n, CommType t, CommOp op) {
    (void)c, (void)buf, (void)n, (void)t, (void)op;
}
static void single_shard(Comm *c, void *buf, size_t shard, CommType t) {
    (void)c, (void)buf, (void)shard, (void)t;
}
static void single_broadcast(Comm *c, void *buf, size_t n, CommType t, int root) {
    (void)c, (void)buf, (void)n, (void)t, (void)root;
}
static void single_host_broadcast(Comm *c, void *buf, size_t bytes, int root) {
    (void)c, (void)buf, (void)bytes, (void)root;
}
static void single_host_gather(Comm *c, const void *send, void *recv, size_t n, CommType t,
                               int root) {
    (void)c, (void)root;
    if (recv != send) memmove(recv, send, n * comm_type_bytes(t));
}
static void single_barrier(Comm *c) {
    (void)c;
}
static void single_abort(Comm *c, int status) {
    (void)c;
    exit(status);
}
static void single_finalize(Comm *c) {
    free(c);
}

Comm *comm_single(void) {
    Comm *c = xcalloc(1, sizeof *c);
    *c = (Comm){.name = "single",
                .rank = 0,
                .world = 1,
                .local_rank = 0,
                .local_world = 1,
                .allreduce = single_allreduce,
                .reduce_scatter = single_shard,
                .all_gather = single_shard,
                .broadcast = single_broadcast,
                .host_allreduce = single_allreduce,
                .host_broadcast = single_host_broadcast,
                .host_gather = single_host_gather,
                .barrier = single_barrier,
                .abort = single_abort,
                .finalize = single_finalize};
    return c;
}

// ---------------------------------------------------------------------------
// MPI on host buffers

#ifdef PS_HAVE_MPI
// Every MPI call is checked: MPI_ERRORS_RETURN is set on the world
// communicator, so a failure comes back here with its error string.
#define MPI_CHECK(call)                                                                       \
    do {                                                                                      \
        int rc_ = (call);                                                                     \
        if (rc_ != MPI_SUCCESS) {                                                             \
            char msg_[MPI_MAX_ERROR_STRING];                                                  \
            int len_ = 0;                                                                     \
            MPI_Error_string(rc_, msg_, &len_);                                               \
            ps_check_failed(__FILE__, __LINE__, #call,                                        \
                            "MPI: %s (another rank may have failed: see its message)", msg_); \
        }                                                                                     \
    } while (0)

static MPI_Datatype mpi_type(CommType t) {
    switch (t) {
        case COMM_F32:
            return MPI_FLOAT;
        case COMM_F64:
            return MPI_DOUBLE;
        case COMM_I32:
            return MPI_INT;
        case COMM_BF16:
            break;
    }
    ps_die(
        "the MPI communicator works on fp32/fp64/int32 host buffers (the CPU backend); bf16 "
        "gradients need comm: nccl");
}

static MPI_Op mpi_op(CommOp op) {
    return op == COMM_MAX ? MPI_MAX : op == COMM_MIN ? MPI_MIN : MPI_SUM;  // AVG: sum, then scale
}

// COMM_AVG after the sum: divide by the world size.
static void mpi_average(Comm *c, void *buf, size_t n, CommType t) {
    CHECK(t == COMM_F32 || t == COMM_F64, "comm: an average needs fp32 or fp64 values");
    if (t == COMM_F32)
        for (size_t i = 0; i < n; i++) ((float *)buf)[i] /= (float)c->world;
    else
        for (size_t i = 0; i < n; i++) ((double *)buf)[i] /= (double)c->world;
}

// MPI counts are int: large buffers go in chunks of at most 2^28 elements (or
// bytes). PS_COMM_TEST_CHUNK (elements) lowers it, so that tests reach the
// chunked paths with small buffers.
static size_t g_mpi_chunk = (size_t)1 << 28;
#define MPI_CHUNK g_mpi_chunk

static void mpi_allreduce(Comm *c, void *buf, size_t n, CommType t, CommOp op) {
    size_t e = comm_type_bytes(t);
    for (size_t i = 0; i < n; i += MPI_CHUNK) {
        size_t k = n - i < MPI_CHUNK ? n - i : MPI_CHUNK;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + i * e, (int)k, mpi_type(t), mpi_op(op),
                                MPI_COMM_WORLD));
    }
    if (op == COMM_AVG) mpi_average(c, buf, n, t);
}

static void mpi_reduce_scatter(Comm *c, void *buf, size_t shard, CommType t) {
    // MPI's in-place reduce-scatter leaves the result at the start of buf; move
    // it to this rank's slot (comm.h's layout). Chunked by column blocks.
    size_t e = comm_type_bytes(t);
    MPI_Datatype dt = mpi_type(t);
    if (shard <= MPI_CHUNK) {
        MPI_CHECK(
            MPI_Reduce_scatter_block(MPI_IN_PLACE, buf, (int)shard, dt, MPI_SUM, MPI_COMM_WORLD));
        if (c->rank) memmove((char *)buf + (size_t)c->rank * shard * e, buf, shard * e);
        return;
    }
    // big shards: one reduce per rank's slot, rooted at its owner
    for (int r = 0; r < c->world; r++) {
        char *slot = (char *)buf + (size_t)r * shard * e;
        for (size_t i = 0; i < shard; i += MPI_CHUNK) {
            size_t k = shard - i < MPI_CHUNK ? shard - i : MPI_CHUNK;
            void *p = slot + i * e;
            MPI_CHECK(MPI_Reduce(c->rank == r ? MPI_IN_PLACE : p, p, (int)k, dt, MPI_SUM, r,
                                 MPI_COMM_WORLD));
        }
    }
}

static void mpi_broadcast_bytes(Comm *c, void *buf, size_t bytes, int root) {
    (void)c;
    for (size_t i = 0; i < bytes; i += MPI_CHUNK) {
        size_t k = bytes - i < MPI_CHUNK ? bytes - i : MPI_CHUNK;
        MPI_CHECK(MPI_Bcast((char *)buf + i, (int)k, MPI_BYTE, root, MPI_COMM_WORLD));
    }
}

static void mpi_all_gather(Comm *c, void *buf, size_t shard, CommType t) {
    size_t e = comm_type_bytes(t);
    if (shard * e <= MPI_CHUNK) {
        MPI_CHECK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)(shard * e), MPI_BYTE,
                                MPI_COMM_WORLD));
        return;
    }
    for (int r = 0; r < c->world; r++)
        mpi_broadcast_bytes(c, (char *)buf + (size_t)r * shard * e, shard * e, r);
}

static void mpi_broadcast(Comm *c, void *buf, size_t n, CommType t, int root) {
    mpi_broadcast_bytes(c, buf, n * comm_type_bytes(t), root);
}

static void mpi_host_gather(Comm *c, const void *send, void *recv, size_t n, CommType t, int root) {
    size_t e = comm_type_bytes(t);
    if (n * e <= MPI_CHUNK) {
        MPI_CHECK(MPI_Gather(send, (int)(n * e), MPI_BYTE, recv, (int)(n * e), MPI_BYTE, root,
                             MPI_COMM_WORLD));
        return;
    }
    // big: rank by rank, point to point
    for (int r = 0; r < c->world; r++) {
        for (size_t i = 0; i < n * e; i += MPI_CHUNK) {
            size_t k = n * e - i < MPI_CHUNK ? n * e - i : MPI_CHUNK;
            if (c->rank == root && r == root)
                memcpy((char *)recv + (size_t)r * n * e + i, (const char *)send + i, k);
            else if (c->rank == root)
                MPI_CHECK(MPI_Recv((char *)recv + (size_t)r * n * e + i, (int)k, MPI_BYTE, r, 7,
                                   MPI_COMM_WORLD, MPI_STATUS_IGNORE));
            else if (c->rank == r)
                MPI_CHECK(
                    MPI_Send((const char *)send + i, (int)k, MPI_BYTE, root, 7, MPI_COMM_WORLD));
        }
    }
}

// Non-blocking reductions in flight (reduce_start .. reduce_wait).
typedef struct {
    MPI_Request *req;
    int n, cap;
} MpiPending;

static void mpi_reduce_start(Comm *c, void *buf, size_t n, CommType t, int root) {
    MpiPending *p = c->impl;
    size_t e = comm_type_bytes(t);
    for (size_t i = 0; i < n; i += MPI_CHUNK) {
        size_t k = n - i < MPI_CHUNK ? n - i : MPI_CHUNK;
        if (p->n == p->cap) {
            p->cap = p->cap ? 2 * p->cap : 64;
            p->req = xrealloc(p->req, sizeof(MPI_Request) * (size_t)p->cap);
        }
        void *b = (char *)buf + i * e;
        MPI_CHECK(MPI_Ireduce(c->rank == root ? MPI_IN_PLACE : b, b, (int)k, mpi_type(t), MPI_SUM,
                              root, MPI_COMM_WORLD, &p->req[p->n]));
        p->n++;
    }
    // MPI moves non-blocking messages along when it is called: let it, so the
    // earlier reductions progress while the caller computes.
    int done;
    MPI_CHECK(MPI_Testall(p->n, p->req, &done, MPI_STATUSES_IGNORE));
}

static void mpi_reduce_wait(Comm *c) {
    MpiPending *p = c->impl;
    MPI_CHECK(MPI_Waitall(p->n, p->req, MPI_STATUSES_IGNORE));
    p->n = 0;
}

static void mpi_barrier(Comm *c) {
    (void)c;
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
}

static void mpi_abort(Comm *c, int status) {
    (void)c;
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, status);
    exit(status);
}

static void mpi_finalize(Comm *c) {
    MPI_Finalize();
    MpiPending *p = c->impl;
    free(p->req);
    free(p);
    free(c);
}

Comm *comm_mpi(void) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            ps_die("MPI_Init failed: start the job with mpirun (or srun with PMI)");
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    const char *chunk = getenv("PS_COMM_TEST_CHUNK");
    if (chunk && atol(chunk) > 0) g_mpi_chunk = (size_t)atol(chunk);
    Comm *c = xcalloc(1, sizeof *c);
    *c = (Comm){.name = "mpi",
                .allreduce = mpi_allreduce,
                .reduce_scatter = mpi_reduce_scatter,
                .all_gather = mpi_all_gather,
                .broadcast = mpi_broadcast,
                .reduce_start = mpi_reduce_start,
                .reduce_wait = mpi_reduce_wait,
                .host_allreduce = mpi_allreduce,
                .host_broadcast = mpi_broadcast_bytes,
                .host_gather = mpi_host_gather,
                .barrier = mpi_barrier,
                .abort = mpi_abort,
                .finalize = mpi_finalize,
                .impl = xcalloc(1, sizeof(MpiPending))};
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &c->world));
    // the ranks that share this node (and its cores and GPUs)
    MPI_Comm node;
    MPI_CHECK(
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &c->local_rank));
    MPI_CHECK(MPI_Comm_size(node, &c->local_world));
    MPI_Comm_free(&node);
    return c;
}
#else
Comm *comm_mpi(void) {
    ps_die(
        "this build has no MPI (install libopenmpi-dev and openmpi-bin, then rebuild: "
        "scripts/setup.sh does both)");
}
#endif

#ifdef PS_HAVE_NCCL
// In the CUDA module (cuda/comm_nccl.cu), loaded on first use (backend.h).
Comm *comm_nccl(Comm *host, const char **why) {
    void *sym = ps_cuda_module_sym("ps_cuda_module_comm_nccl", why);
    if (!sym) return NULL;
    Comm *(*create)(Comm *, const char **);
    memcpy(&create, &sym, sizeof create);
    return create(host, why);
}
#else
Comm *comm_nccl(Comm *host, const char **why) {
    (void)host;
    if (why)
        *why = "this build has no NCCL (it needs the CUDA backend and nccl.h/libnccl beside nvcc)";
    return NULL;
}
#endif

// ---------------------------------------------------------------------------
// choosing one

static Comm *g_comm;  // for the die hook

static void die_hook(int status) {
    if (g_comm && g_comm->world > 1) g_comm->abort(g_comm, status);
}

// Make c the communicator ps_die aborts: on a job of several ranks the failing
// rank's message carries its rank, and the whole job ends with it.
static void install(Comm *c) {
    g_comm = c;
    if (c->world > 1) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "[rank %d] ", c->rank);
        ps_set_die_prefix(prefix);
        ps_set_exit_hook(die_hook);
    }
}

Comm *comm_init(const char *kind, const char *backend_name) {
    int launched = comm_launched();
    const char *k = kind;
    if (!strcmp(kind, "auto")) {
        if (!launched) {
            k = "single";
        } else if (!strcmp(backend_name, "cpu")) {
            k = "mpi";
        } else {
            // cuda, or auto: NCCL when this rank has a GPU (it picks the GPU
            // before the backend starts); auto without one runs on the CPU over MPI
            Comm *host = comm_mpi();
            install(host);
            const char *why = NULL;
            int cuda = !strcmp(backend_name, "cuda");
            Comm *c = cuda || ps_nvidia_driver_present() ? comm_nccl(host, &why) : NULL;
            if (!c && cuda) ps_die("comm: nccl: %s", why);
            if (c) install(c);
            return c ? c : host;
        }
    }
    Comm *c;
    if (!strcmp(k, "single")) {
        const char *n = getenv("OMPI_COMM_WORLD_SIZE");
        if (n && atoi(n) > 1)
            ps_die(
                "comm: single, but this process is one of %s started by mpirun; use comm: auto "
                "or mpi",
                n);
        c = comm_single();
    } else if (!strcmp(k, "mpi")) {
        c = comm_mpi();
    } else if (!strcmp(k, "nccl")) {
        Comm *host = launched ? comm_mpi() : comm_single();
        install(host);  // a rank that cannot start NCCL ends the job with its reason
        const char *why = NULL;
        c = comm_nccl(host, &why);
        if (!c) ps_die("comm: nccl: %s", why);
    } else {
        ps_die("comm: unknown communicator '%s' (auto, single, mpi or nccl)", kind);
    }
    install(c);
    return c;
}

void comm_check_backend(const Comm *c, const char *backend_name, size_t act_bytes) {
    int device = !strcmp(backend_name, "cuda");
    if (!strcmp(c->name, "nccl") && !device)
        ps_die(
            "comm: nccl exchanges GPU buffers, but the backend is %s (the CPU); use comm: mpi "
            "(or auto)",
            backend_name);
    if (!strcmp(c->name, "mpi") && (device || act_bytes != 4))
        ps_die(
            "comm: mpi exchanges fp32 host buffers, but the backend is %s; use comm: nccl (or "
            "auto) for GPUs",
            backend_name);
}

void comm_free(Comm *c) {
    if (g_comm == c) {  // a later ps_die exits normally
        g_comm = NULL;
        ps_set_exit_hook(NULL);
    }
    c->finalize(c);
}
