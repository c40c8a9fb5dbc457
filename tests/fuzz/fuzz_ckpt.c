// fuzz_ckpt: an HDF5 training checkpoint (ckpt_read with the optimizer state, and
// ckpt_read_meta). Most mutations are bit flips and truncations of real checkpoints.
#include "checkpoint.h"
#include "fuzz_util.h"

// PS_FUZZ_WRITE_SEED=PATH: write a small valid checkpoint to PATH and exit
// (tests/fuzz/make_seeds.sh makes the seed corpus this way).
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *out = getenv("PS_FUZZ_WRITE_SEED");
    if (!out) return 0;
    LlamaConfig cfg = {.dim = 4,
                       .n_layers = 1,
                       .n_heads = 2,
                       .n_kv_heads = 1,
                       .ffn_dim = 4,
                       .vocab_size = 4,
                       .max_seq_len = 8,
                       .rope_theta = 10000.0f,
                       .norm_eps = 1e-5f,
                       .tie_embeddings = 1};
    Checkpoint c;
    memset(&c, 0, sizeof c);
    param_table_build(&c.w.t, &cfg);
    c.w.params = calloc(c.w.t.total, 4);
    c.m = calloc(c.w.t.total, 4);
    c.v = calloc(c.w.t.total, 4);
    for (size_t i = 0; i < c.w.t.total; i++) c.w.params[i] = 0.125f * (float)(i % 9);
    c.meta.step = 3;
    c.meta.optim_t = 3;
    c.meta.n_rng = 1;
    snprintf(c.meta.rng[0].name, sizeof c.meta.rng[0].name, "run.seed");
    c.meta.config_yaml = "run: {name: seed}\n";
    c.meta.plan_json = getenv("PS_FUZZ_SEED_PLAN");
    if (ckpt_write(out, &c, NULL) != 0) {
        fprintf(stderr, "%s\n", ps_err_msg());
        exit(1);
    }
    exit(0);
}

// PS_FUZZ_CKPT_SEAL=1: seal each input with a valid whole-file checksum first, so
// the reader walks it in this process (about 100x more inputs per second than the
// isolated path, which forks a reader for a file that fails the checksum). What it
// finds there is either ours or libhdf5 failing on a crafted file that carries a
// valid checksum (a hostile file, not a damaged one: see docs/checkpoints.md).
static int g_seal = -1;

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    if (g_seal < 0) g_seal = getenv("PS_FUZZ_CKPT_SEAL") && atoi(getenv("PS_FUZZ_CKPT_SEAL"));
    const char *path = fuzz_file(d, n, "ckpt-00000001.h5");
    if (g_seal && ckpt_seal(path) != 0) abort();
    CkptReadOpts o = {.optim = 1};
    Checkpoint c;
    if (ckpt_read(path, &c, &o, NULL) == 0) ckpt_free(&c);
    CkptMeta m;
    LlamaConfig cfg;
    if (ckpt_read_meta(path, &m, &cfg) == 0) ckpt_meta_free(&m);
    return 0;
}
