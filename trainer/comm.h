// comm.h: the communicator the training loop uses for data parallelism.
//
// One process per rank (GPU or CPU socket), started by a launcher:
//   mpirun -np N postshare train job.yaml      (or Slurm: srun with PMI)
// Three implementations behind one struct of function pointers:
//   single: one process, every collective is a no-op (world 1);
//   mpi:    OpenMPI on host buffers, for the CPU backend (and CPU tests);
//   nccl:   NCCL on device buffers, for the CUDA backend; the NCCL unique id
//           is broadcast over MPI, and each rank uses GPU local_rank.
//
// Two kinds of buffers cross a communicator:
//   * data collectives (allreduce, reduce_scatter, all_gather, broadcast) take
//     backend memory: host memory for single/mpi, device memory for nccl;
//   * host collectives (host_*) take host memory whatever the backend: the
//     control values of the loop (loss, norm, stop flag, checkpoint path, the
//     optimizer state gathered for a checkpoint). nccl runs them over MPI.
//
// Data collectives are in place on a buffer of world * shard elements, the
// layout ZeRO-1 uses: rank r owns elements [r*shard, (r+1)*shard).
#pragma once

#include <stddef.h>

typedef enum { COMM_F32 = 0, COMM_BF16 = 1, COMM_F64 = 2, COMM_I32 = 3 } CommType;
// COMM_AVG: the sum divided by the world size (fp32/fp64/bf16 only).
typedef enum { COMM_SUM = 0, COMM_MAX = 1, COMM_MIN = 2, COMM_AVG = 3 } CommOp;

// Bytes of one element of type t.
size_t comm_type_bytes(CommType t);

typedef struct Comm Comm;
struct Comm {
    const char *name;  // "single", "mpi" or "nccl"
    int rank, world;   // this process and the number of processes
    int local_rank;    // rank among the processes on this node (picks the GPU)
    int local_world;   // processes on this node (divides the CPU cores)

    // ---- data collectives, in place, on backend memory ----
    // buf[n] = op over ranks of buf[n].
    void (*allreduce)(Comm *c, void *buf, size_t n, CommType t, CommOp op);
    // buf[world*shard]: afterwards buf[rank*shard .. +shard) holds the sum over
    // ranks of that shard; the rest of buf is unspecified.
    void (*reduce_scatter)(Comm *c, void *buf, size_t shard, CommType t);
    // buf[world*shard]: each rank's own shard buf[rank*shard ..) goes to every rank.
    void (*all_gather)(Comm *c, void *buf, size_t shard, CommType t);
    // n elements of buf from root to every rank.
    void (*broadcast)(Comm *c, void *buf, size_t n, CommType t, int root);
    // Optional (NULL where not supported): start summing buf[n] of every rank
    // into root's buf without waiting, so that the reduction overlaps the work
    // that follows (the rest of the backward); buf must stay untouched until
    // reduce_wait, which completes every reduction started. On root, buf then
    // holds the sum; elsewhere it is unspecified.
    void (*reduce_start)(Comm *c, void *buf, size_t n, CommType t, int root);
    void (*reduce_wait)(Comm *c);

    // ---- host collectives, on host memory ----
    void (*host_allreduce)(Comm *c, void *buf, size_t n, CommType t, CommOp op);
    void (*host_broadcast)(Comm *c, void *buf, size_t bytes, int root);
    // send[n] of every rank -> recv[world*n] on root (recv ignored elsewhere).
    void (*host_gather)(Comm *c, const void *send, void *recv, size_t n, CommType t, int root);
    void (*barrier)(Comm *c);

    // End every rank of the job now with this exit status (used by ps_die).
    void (*abort)(Comm *c, int status);
    // Orderly end (all ranks): waits for the others, frees the communicator.
    void (*finalize)(Comm *c);

    void *impl;  // implementation state
};

// Was this process started by an MPI launcher (mpirun, srun with PMI)?
int comm_launched(void);

// Create the communicator named by kind: "single", "mpi", "nccl" or "auto"
// (single unless started by a launcher; then mpi for the CPU backend, nccl for
// cuda, and for auto nccl when this rank has a GPU, else mpi). backend_name is
// the job's backend ("cpu", "cuda" or "auto").
// For nccl this also selects the GPU (local_rank) before the backend starts.
// Installs the die hook: ps_die on any rank prints "[rank r]" and aborts the job.
// Dies with a clear message when the kind is not built in or fails to start.
Comm *comm_init(const char *kind, const char *backend_name);

// Die with a clear message unless c can carry the buffers of the backend that
// started (name and bytes per element): nccl needs cuda, mpi needs the fp32 CPU.
void comm_check_backend(const Comm *c, const char *backend_name, size_t act_bytes);
// End the communicator (all ranks): c->finalize, after unhooking it from ps_die.
void comm_free(Comm *c);

// ---- implementations (comm.c; comm_nccl.cu when built with CUDA and NCCL) ----
Comm *comm_single(void);
// MPI is initialized by comm_init; these wrap MPI_COMM_WORLD.
Comm *comm_mpi(void);
// NCCL over the ranks of MPI_COMM_WORLD (mpi: the MPI communicator, for the
// unique id broadcast and the host collectives). Returns NULL with the reason in
// *why when this build has no NCCL.
Comm *comm_nccl(Comm *mpi, const char **why);
