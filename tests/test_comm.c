// test_comm.c: the communicators' collectives against values every rank can
// compute itself. Without a launcher it tests the single-process communicator
// (world 1); tests/test_dp_mpi.sh runs it under `mpirun -np 2` and `-np 3`
// (odd shards), and with PS_COMM_TEST_CHUNK=7 so that MPI's chunked paths
// (buffers past the int count limit) run on small buffers too.
//
// Rank r's input element i is val(r, i): integers small enough that every
// sum is exact in fp32, so results compare bitwise.
#include <math.h>
#include <string.h>

#include "comm.h"
#include "common.h"
#include "model.h"
#include "optim.h"
#include "test.h"
#include "zero.h"

static float val(int r, size_t i) {
    return (float)((int)((i * 7 + (size_t)r * 13) % 17) - 8);
}

static Comm *C;

static void test_allreduce(void) {
    size_t n = 1000;
    float *f = xmalloc(n * 4);
    double *d = xmalloc(n * 8);
    int *k = xmalloc(n * 4);
    CommOp ops[] = {COMM_SUM, COMM_MAX, COMM_MIN, COMM_AVG};
    for (int o = 0; o < 4; o++) {
        for (size_t i = 0; i < n; i++)
            f[i] = val(C->rank, i), d[i] = val(C->rank, i), k[i] = (int)val(C->rank, i);
        C->allreduce(C, f, n, COMM_F32, ops[o]);
        C->host_allreduce(C, d, n, COMM_F64, ops[o]);
        if (ops[o] != COMM_AVG) C->host_allreduce(C, k, n, COMM_I32, ops[o]);
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
            double want = ops[o] == COMM_MAX ? -1e30 : ops[o] == COMM_MIN ? 1e30 : 0.0;
            for (int r = 0; r < C->world; r++) {
                double x = val(r, i);
                if (ops[o] == COMM_MAX)
                    want = x > want ? x : want;
                else if (ops[o] == COMM_MIN)
                    want = x < want ? x : want;
                else
                    want += x;
            }
            if (ops[o] == COMM_AVG) want /= C->world;
            bad += f[i] != (float)want || d[i] != want;
            if (ops[o] != COMM_AVG) bad += k[i] != (int)want;
        }
        T_CHECK(bad == 0, "allreduce op %d: %d wrong elements", o, bad);
    }
    free(f), free(d), free(k);
}

static void test_shards(void) {
    // reduce_scatter and all_gather in place over world x shard, shard odd
    size_t shard = 37, n = shard * (size_t)C->world;
    float *b = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) b[i] = val(C->rank, i);
    C->reduce_scatter(C, b, shard, COMM_F32);
    int bad = 0;
    for (size_t i = (size_t)C->rank * shard; i < (size_t)(C->rank + 1) * shard; i++) {
        float want = 0;
        for (int r = 0; r < C->world; r++) want += val(r, i);
        bad += b[i] != want;
    }
    T_CHECK(bad == 0, "reduce_scatter: %d wrong elements in rank %d's shard", bad, C->rank);

    for (size_t i = 0; i < n; i++) b[i] = -1.0f;  // only the own shard is set
    for (size_t i = (size_t)C->rank * shard; i < (size_t)(C->rank + 1) * shard; i++)
        b[i] = val(C->rank, i);
    C->all_gather(C, b, shard, COMM_F32);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += b[i] != val((int)(i / shard), i);
    T_CHECK(bad == 0, "all_gather: %d wrong elements", bad);

    // broadcast from the last rank; host_broadcast of bytes from rank 0
    for (size_t i = 0; i < n; i++) b[i] = val(C->rank, i);
    C->broadcast(C, b, n, COMM_F32, C->world - 1);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += b[i] != val(C->world - 1, i);
    T_CHECK(bad == 0, "broadcast: %d wrong elements", bad);
    char text[100];
    snprintf(text, sizeof text, "from rank %d", C->rank);
    C->host_broadcast(C, text, sizeof text, 0);
    T_CHECK(!strcmp(text, "from rank 0"), "host_broadcast: '%s'", text);

    // host_gather of 11 floats per rank onto rank 0
    float mine[11], *all = xmalloc(sizeof(float) * 11 * (size_t)C->world);
    for (int i = 0; i < 11; i++) mine[i] = val(C->rank, (size_t)i);
    C->host_gather(C, mine, all, 11, COMM_F32, 0);
    if (C->rank == 0) {
        bad = 0;
        for (int r = 0; r < C->world; r++)
            for (int i = 0; i < 11; i++) bad += all[r * 11 + i] != val(r, (size_t)i);
        T_CHECK(bad == 0, "host_gather: %d wrong elements", bad);
    }
    free(all);
    free(b);
}

static void test_reduce_start(void) {
    if (!C->reduce_start) {
        T_CHECK(C->world == 1, "the %s communicator of %d ranks has no reduce_start", C->name,
                C->world);
        return;
    }
    // pieces of one buffer, each summed into another root, all in flight at once
    size_t n = 500;
    float *b = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) b[i] = val(C->rank, i);
    size_t cuts[] = {0, 3, 100, 101, 260, 499, 500};
    for (int p = 0; p + 1 < 7; p++)
        C->reduce_start(C, b + cuts[p], cuts[p + 1] - cuts[p], COMM_F32, p % C->world);
    C->reduce_wait(C);
    int bad = 0;
    for (int p = 0; p + 1 < 7; p++) {
        if (p % C->world != C->rank) continue;
        for (size_t i = cuts[p]; i < cuts[p + 1]; i++) {
            float want = 0;
            for (int r = 0; r < C->world; r++) want += val(r, i);
            bad += b[i] != want;
        }
    }
    T_CHECK(bad == 0, "reduce_start/wait: %d wrong elements on rank %d", bad, C->rank);
    free(b);
}

// ZeRO-1 on a real model table: shards cover the parameters once, the
// reduction sums, the norm is global, and the gathered state is whole.
static void test_zero1(void) {
    LlamaConfig cfg = {.dim = 16,
                       .n_layers = 2,
                       .n_heads = 2,
                       .n_kv_heads = 1,
                       .ffn_dim = 24,
                       .vocab_size = 37,
                       .max_seq_len = 8,
                       .rope_theta = 10000,
                       .norm_eps = 1e-5f};
    Model M;
    model_init(&M, backend_cpu(), &cfg);
    size_t n = M.t.total;
    float *w = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) w[i] = val(0, i) / 16.0f;
    model_set_params(&M, w);
    Zero1 z;
    zero1_init(&z, C, &M);
    T_CHECK(z.shard % 64 == 0 && z.shard * (size_t)C->world >= n && M.n_alloc == z.shard * C->world,
            "shard %zu x %d for %zu parameters", z.shard, C->world, n);
    int covered = (int)(z.hi - z.lo);
    C->host_allreduce(C, &covered, 1, COMM_I32, COMM_SUM);
    T_CHECK(covered == (int)n, "the ranks' shards cover %d of %zu parameters", covered, n);
    OptimConfig oc = {
        .lr = 1e-2f, .total_steps = 10, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .clip = 1.0f};
    Optim o;
    optim_init_range(&o, &M, &oc, z.lo, z.hi, w);
    // local gradients: rank r's is val(r, i) / 8; the sum's norm is known
    float *g = xcalloc(M.n_alloc, 4);
    double ss = 0;
    for (size_t i = 0; i < n; i++) {
        g[i] = val(C->rank, i) / 8.0f;
        double sum = 0;
        for (int r = 0; r < C->world; r++) sum += val(r, i) / 8.0;
        ss += sum * sum;
    }
    M.be->upload(M.grads, g, M.n_alloc * 4);
    float norm = zero1_reduce_grads(&z, &M, &o);
    T_CHECK(fabs(norm - sqrt(ss)) <= 1e-5 * sqrt(ss), "global norm %g, expected %g", norm,
            sqrt(ss));
    optim_step(&o, &M, 0, norm);
    zero1_gather_params(&z, &M);
    // every rank has the same parameters, and each moved against the summed gradient
    float *p = xmalloc(n * 4), *p0 = xmalloc(n * 4);
    model_get_params(&M, p);
    memcpy(p0, p, n * 4);
    C->broadcast(C, p0, n, COMM_F32, 0);
    int bad = 0, moved = 0;
    for (size_t i = 0; i < n; i++) {
        bad += p[i] != p0[i];
        double sum = 0;
        for (int r = 0; r < C->world; r++) sum += val(r, i);
        moved += sum == 0 ? p[i] == w[i] : (p[i] - w[i]) * sum < 0;
    }
    T_CHECK(bad == 0, "parameters differ from rank 0's in %d places after the all-gather", bad);
    T_CHECK(moved == (int)n, "%d of %zu parameters did not step against the summed gradient",
            (int)n - moved, n);
    float *mst = C->rank == 0 ? xmalloc(n * 4) : NULL, *mm = C->rank == 0 ? xmalloc(n * 4) : NULL;
    zero1_gather_state(&z, &o, mst, mm, NULL, 0);
    if (C->rank == 0) {
        int bm = 0;
        for (size_t i = 0; i < n; i++) {
            double sum = 0;
            for (int r = 0; r < C->world; r++) sum += val(r, i);
            bm += mst[i] != p[i] || (mm[i] == 0.0f) != (sum == 0);
        }
        T_CHECK(bm == 0, "gathered master/m: %d wrong elements", bm);
    }
    free(mst), free(mm), free(p), free(p0), free(g), free(w);
    optim_free(&o);
    model_free(&M);
}

int main(void) {
    C = comm_init(comm_launched() ? "mpi" : "single", "cpu");
    test_allreduce();
    test_shards();
    test_reduce_start();
    test_zero1();
    // every rank's verdict counts
    int failed = t_failed;
    C->host_allreduce(C, &failed, 1, COMM_I32, COMM_SUM);
    int status = failed ? 1 : 0;
    if (C->rank == 0) {  // the others printed their own failures on stderr
        printf("comm %s, %d rank(s): ", C->name, C->world);
        t_failed = failed;
        status = t_summary();
    }
    comm_free(C);
    return status;
}
