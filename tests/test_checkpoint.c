// test_checkpoint.c: HDF5 checkpoints (checkpoint.h, resume.h):
//   - write/read round trips, bitwise, of every tensor and every metadata field
//     (tied and untied models, with and without a sharing plan), and loading a
//     checkpoint as a model (ckpt:PATH, *.h5);
//   - the layout: a group per tensor under its HF name in table order, every
//     dataset chunked with Fletcher32, scalars as attributes;
//   - the optimizer state with its step counter: split training equals straight
//     training bitwise (and would not without the counter);
//   - one case per kind of damage (truncated, a flipped byte inside a tensor, a
//     missing dataset or tensor, a wrong shape, a different model, not HDF5,
//     not a checkpoint, a newer format), each failing with a message that names
//     the file and the problem and leaving the file as it was;
//   - single-bit flips swept over a whole file: a read either fails or returns
//     exactly the original content, never silently different numbers;
//   - the run directory: listing, stale temp files, metrics on resume;
//   - resume checks: which config changes stop a resume, and the sharing plan.
#define _DEFAULT_SOURCE
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "hf_io.h"
#include "modelsrc.h"
#include "job.h"
#include "loader.h"
#include "model.h"
#include "optim.h"
#include "resume.h"
#include "shard.h"
#include "test.h"

// ---------------------------------------------------------------------------
// helpers

static char g_dir[256];  // this run's scratch directory

static const char *tp(const char *name) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static LlamaConfig small_cfg(int tied) {
    LlamaConfig c = {.dim = 16,
                     .n_layers = 2,
                     .n_heads = 4,
                     .n_kv_heads = 2,
                     .ffn_dim = 24,
                     .vocab_size = 64,
                     .max_seq_len = 32,
                     .rope_theta = 10000.0f,
                     .norm_eps = 1e-5f,
                     .tie_embeddings = tied};
    return c;
}

static void fill_random(float *x, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
}

// A checkpoint with distinct values in every field.
static void make_ckpt(Checkpoint *c, const LlamaConfig *cfg, uint64_t seed, const char *plan) {
    memset(c, 0, sizeof *c);
    param_table_build(&c->w.t, cfg);
    size_t n = c->w.t.total;
    c->w.params = xmalloc(n * 4);
    c->m = xmalloc(n * 4);
    c->v = xmalloc(n * 4);
    fill_random(c->w.params, n, seed);
    fill_random(c->m, n, seed + 1);
    fill_random(c->v, n, seed + 2);
    for (size_t i = 0; i < n; i++) c->v[i] = fabsf(c->v[i]);  // a mean of squares
    CkptMeta *m = &c->meta;
    m->step = 1234 + (int64_t)seed;
    m->tokens_seen = 5000000000LL + (int64_t)seed;
    m->optim_t = 1233;
    m->lr = 3.0e-4 / 7;
    m->elapsed_s = 98.765;
    m->first_val_loss = 5.4321;
    m->loader = (LoaderState){.seed = 77, .sample = 123456789012ULL, .n_windows = 999};
    m->shuffle = 1;
    m->epoch = 3;
    snprintf(m->shard, sizeof m->shard, "kjv_train_000001.bin");
    m->shard_offset = 4096;
    m->train_shards = xstrdup("kjv_train_000000.bin\t100\nkjv_train_000001.bin\t200\n");
    m->n_rng = 2;
    snprintf(m->rng[0].name, sizeof m->rng[0].name, "run.seed");
    m->rng[0].state = 1337;
    snprintf(m->rng[1].name, sizeof m->rng[1].name, "loader.shuffle_seed");
    m->rng[1].state = 0xFEDCBA9876543210ULL;
    m->config_yaml = xstrdup("run:\n  name: \"x\"  # a comment with \"quotes\" and a tab\t.\n");
    m->plan_json = plan ? xstrdup(plan) : NULL;
}

static int same_floats(const float *a, const float *b, size_t n) {
    return (a == NULL) == (b == NULL) && (!a || memcmp(a, b, n * 4) == 0);
}

static int same_str(const char *a, const char *b) {
    return (a == NULL) == (b == NULL) && (!a || strcmp(a, b) == 0);
}

// Everything a writer stores, compared bitwise (optim: m and v too).
static int same_ckpt(const Checkpoint *a, const Checkpoint *b, int optim) {
    const CkptMeta *x = &a->meta, *y = &b->meta;
    const LlamaConfig *p = &a->w.t.cfg, *q = &b->w.t.cfg;
    int ok = p->dim == q->dim && p->n_layers == q->n_layers && p->n_heads == q->n_heads &&
             p->n_kv_heads == q->n_kv_heads && p->ffn_dim == q->ffn_dim &&
             p->vocab_size == q->vocab_size && p->max_seq_len == q->max_seq_len &&
             p->rope_theta == q->rope_theta && p->norm_eps == q->norm_eps &&
             p->tie_embeddings == q->tie_embeddings && a->w.t.total == b->w.t.total;
    if (!ok) return 0;
    size_t n = a->w.t.total;
    ok = same_floats(a->w.params, b->w.params, n);
    if (optim) ok = ok && same_floats(a->m, b->m, n) && same_floats(a->v, b->v, n);
    ok = ok && x->step == y->step && x->tokens_seen == y->tokens_seen && x->optim_t == y->optim_t &&
         x->lr == y->lr && x->elapsed_s == y->elapsed_s && x->first_val_loss == y->first_val_loss &&
         x->loader.seed == y->loader.seed && x->loader.sample == y->loader.sample &&
         x->loader.n_windows == y->loader.n_windows && x->shuffle == y->shuffle &&
         x->epoch == y->epoch && !strcmp(x->shard, y->shard) &&
         x->shard_offset == y->shard_offset && same_str(x->train_shards, y->train_shards) &&
         same_str(x->config_yaml, y->config_yaml) && same_str(x->plan_json, y->plan_json) &&
         x->n_rng == y->n_rng;
    for (int i = 0; ok && i < x->n_rng; i++) {
        // the reader lists RNG states by name
        int found = 0;
        for (int j = 0; j < y->n_rng; j++)
            found |= !strcmp(x->rng[i].name, y->rng[j].name) && x->rng[i].state == y->rng[j].state;
        ok = found;
    }
    return ok;
}

static char *slurp(const char *path, size_t *n) {
    char *s = ps_read_file(path, n);
    CHECK(s, "%s", ps_err_msg());
    return s;
}

static void spit(const char *path, const char *data, size_t n) {
    FILE *f = xfopen(path, "wb");
    CHECK(fwrite(data, 1, n, f) == n, "short write to %s", path);
    fclose(f);
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    char *d = slurp(from, &n);
    spit(to, d, n);
    free(d);
}

static int file_is(const char *path, const char *data, size_t n) {
    size_t m;
    char *d = ps_read_file(path, &m);
    int same = d && m == n && memcmp(d, data, n) == 0;
    free(d);
    return same;
}

// File offset of the first chunk of a dataset (to damage its bytes).
static haddr_t chunk_addr(const char *path, const char *dset) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT), sp = H5Dget_space(d);
    hsize_t off[2];
    unsigned mask;
    haddr_t addr = HADDR_UNDEF;
    hsize_t size;
    CHECK(H5Dget_chunk_info(d, sp, 0, off, &mask, &addr, &size) >= 0, "chunk info of %s", dset);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    return addr;
}

static void xor_byte(const char *path, size_t off, unsigned char x) {
    size_t n;
    char *d = slurp(path, &n);
    CHECK(off < n, "offset %zu past the end of %s", off, path);
    d[off] ^= (char)x;
    spit(path, d, n);
    free(d);
}

static void h5_unlink(const char *path, const char *obj) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(H5Ldelete(f, obj, H5P_DEFAULT) >= 0, "deleting %s", obj);
    H5Fclose(f);
}

// Replace dataset dset by one of shape [rows, cols] (zeros).
static void h5_reshape(const char *path, const char *dset, hsize_t rows, hsize_t cols) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(H5Ldelete(f, dset, H5P_DEFAULT) >= 0, "deleting %s", dset);
    hsize_t dims[2] = {rows, cols};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, dset, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    float *z = xcalloc(rows * cols, 4);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, z);
    free(z);
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
}

// Replace an attribute by a 64-bit integer one (HDF5 1.10 cannot rewrite an
// attribute of a file in the 1.10 format in place, so delete and create).
static void h5_set_int_attr(const char *path, const char *obj, const char *name, int64_t v) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(H5Adelete_by_name(f, obj, name, H5P_DEFAULT) >= 0, "deleting %s %s", obj, name);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a =
        H5Acreate_by_name(f, obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0, "writing %s %s", obj, name);
    H5Aclose(a);
    H5Sclose(sp);
    H5Fclose(f);
}

// ---------------------------------------------------------------------------
// round trips and layout

static void test_roundtrip(void) {
    const char *plans[2] = {NULL, "{\"pairs\": [[1, 0, 0, 0]], \"ratio\": 0.25}"};
    for (int tied = 0; tied < 2; tied++) {
        for (int p = 0; p < 2; p++) {
            LlamaConfig cfg = small_cfg(tied);
            Checkpoint a, b;
            make_ckpt(&a, &cfg, 10 + (uint64_t)(2 * tied + p), plans[p]);
            const char *path = tp("rt.h5");
            CkptIoStats st = {0};
            T_CHECK(ckpt_write(path, &a, &st) == 0, "write: %s", ps_err_msg());
            T_CHECK(st.bytes > (double)a.w.t.total * 12 && st.seconds >= 0, "stats %g bytes",
                    st.bytes);
            CkptReadOpts all = {.optim = 1};
            T_CHECK(ckpt_read(path, &b, &all, NULL) == 0, "read: %s", ps_err_msg());
            T_CHECK(same_ckpt(&a, &b, 1), "tied %d plan %d: read back differs", tied, p);
            T_CHECK(b.meta.format_version == CKPT_FORMAT_VERSION &&
                        !strcmp(b.meta.program_version, PS_VERSION) && b.meta.created[0],
                    "versions: %d %s", b.meta.format_version, b.meta.program_version);
            ckpt_free(&b);
            // weights only
            T_CHECK(ckpt_read(path, &b, NULL, NULL) == 0 && !b.m && !b.v && same_ckpt(&a, &b, 0),
                    "weights-only read: %s", ps_err_msg());
            ckpt_free(&b);
            // as a model
            HostWeights w;
            T_CHECK(model_load_any(path, &w) == 0 && w.t.total == a.w.t.total &&
                        same_floats(w.params, a.w.params, w.t.total),
                    "model_load_any(%s): %s", path, ps_err_msg());
            host_weights_free(&w);
            char spec[600];
            snprintf(spec, sizeof spec, "ckpt:%s", path);
            T_CHECK(model_load_any(spec, &w) == 0 && same_floats(w.params, a.w.params, w.t.total),
                    "model_load_any(%s): %s", spec, ps_err_msg());
            host_weights_free(&w);
            CkptMeta m;
            LlamaConfig c2;
            T_CHECK(ckpt_read_meta(path, &m, &c2) == 0 && m.step == a.meta.step &&
                        c2.n_layers == cfg.n_layers && same_str(m.plan_json, plans[p]),
                    "read_meta: %s", ps_err_msg());
            ckpt_meta_free(&m);
            ckpt_free(&a);
        }
    }
    T_CHECK(access(tp("rt.h5.tmp.1"), F_OK) != 0, "temp file left");
}

static void test_layout(void) {
    LlamaConfig cfg = small_cfg(0);
    Checkpoint a;
    make_ckpt(&a, &cfg, 3, NULL);
    const char *path = tp("layout.h5");
    T_CHECK(ckpt_write(path, &a, NULL) == 0, "write: %s", ps_err_msg());
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t g = H5Gopen2(f, "/params", H5P_DEFAULT);
    H5G_info_t gi;
    H5Gget_info(g, &gi);
    T_CHECK((int)gi.nlinks == a.w.t.n, "/params has %llu groups, the table %d tensors",
            (unsigned long long)gi.nlinks, a.w.t.n);
    int in_order = 1, filtered = 1;
    for (int i = 0; i < a.w.t.n; i++) {
        char name[128];
        H5Lget_name_by_idx(g, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, (hsize_t)i, name, sizeof name,
                           H5P_DEFAULT);
        in_order &= !strcmp(name, a.w.t.e[i].name);
        const char *ds[3] = {"master", "adam_m", "adam_v"};
        for (int k = 0; k < 3; k++) {
            char p[256];
            snprintf(p, sizeof p, "%s/%s", a.w.t.e[i].name, ds[k]);
            hid_t d = H5Dopen2(g, p, H5P_DEFAULT), pl = H5Dget_create_plist(d);
            unsigned flags;
            size_t nv = 0;
            char fname[64];
            int has_f32 = 0;
            for (int j = 0; j < H5Pget_nfilters(pl); j++)
                has_f32 |= H5Pget_filter2(pl, (unsigned)j, &flags, &nv, NULL, sizeof fname, fname,
                                          NULL) == H5Z_FILTER_FLETCHER32;
            filtered &= H5Pget_layout(pl) == H5D_CHUNKED && has_f32;
            H5Pclose(pl);
            H5Dclose(d);
        }
    }
    T_CHECK(in_order, "tensor groups are not in table order (creation order)");
    T_CHECK(filtered, "a tensor dataset is not chunked with Fletcher32");
    H5Gclose(g);
    int64_t step = 0;
    hid_t at = H5Aopen(f, "step", H5P_DEFAULT);
    H5Aread(at, H5T_NATIVE_INT64, &step);
    H5Aclose(at);
    T_CHECK(step == a.meta.step, "root attribute step = %lld", (long long)step);
    T_CHECK(H5Lexists(f, "/config", H5P_DEFAULT) > 0 && H5Lexists(f, "/plan", H5P_DEFAULT) == 0 &&
                H5Aexists_by_name(f, "/model", "n_layers", H5P_DEFAULT) > 0 &&
                H5Aexists_by_name(f, "/data", "sample", H5P_DEFAULT) > 0 &&
                H5Aexists_by_name(f, "/rng", "run.seed", H5P_DEFAULT) > 0,
            "layout: /config, no /plan, /model, /data, /rng attributes");
    H5Fclose(f);
    ckpt_free(&a);
}

// ---------------------------------------------------------------------------
// the optimizer state and its step counter

static void train_steps(Model *M, Optim *o, int from, int to, const int *tok, const int *tgt) {
    for (int s = from; s < to; s++) {
        model_zero_grads(M);
        model_forward(M, tok + s * 16, tgt + s * 16, 2, 8);
        model_backward(M, 1.0f / (float)M->n_valid);
        optim_step(o, M, s, optim_grad_norm(M));
    }
}

// A model with these weights and a fresh optimizer, on the CPU.
static void start(Model *M, Optim *o, const LlamaConfig *cfg, const float *params,
                  const OptimConfig *oc) {
    model_init(M, backend_cpu(), cfg);
    model_set_params(M, params);
    optim_init(o, M, oc);
}

static void test_optim_resume(void) {
    LlamaConfig cfg = small_cfg(0);
    ParamTable t;
    param_table_build(&t, &cfg);
    size_t n = t.total;
    float *init = xmalloc(n * 4);
    param_init_random(&t, init, 5, 0.02f);
    int tok[6 * 16], tgt[6 * 16];
    Rng r;
    rng_seed(&r, 9);
    for (int i = 0; i < 6 * 16; i++)
        tok[i] = (int)(rng_u64(&r) % 64), tgt[i] = (int)(rng_u64(&r) % 64);
    OptimConfig oc = {.lr = 1e-2f,
                      .min_lr = 1e-3f,
                      .warmup = 2,
                      .total_steps = 6,
                      .beta1 = 0.9f,
                      .beta2 = 0.95f,
                      .eps = 1e-8f,
                      .weight_decay = 0.1f,
                      .clip = 1.0f};
    // straight: 6 steps
    Model A;
    Optim oa;
    start(&A, &oa, &cfg, init, &oc);
    train_steps(&A, &oa, 0, 6, tok, tgt);
    float *pa = xmalloc(n * 4), *ma = xmalloc(n * 4), *va = xmalloc(n * 4);
    optim_get_state(&oa, pa, ma, va);
    // split: 3 steps, through a checkpoint file, into a fresh model and optimizer, 3 more
    for (int restore_t = 1; restore_t >= 0; restore_t--) {
        Model B;
        Optim ob;
        start(&B, &ob, &cfg, init, &oc);
        train_steps(&B, &ob, 0, 3, tok, tgt);
        Checkpoint c, d;
        memset(&c, 0, sizeof c);
        c.w.t = B.t;
        c.w.params = xmalloc(n * 4);
        c.m = xmalloc(n * 4);
        c.v = xmalloc(n * 4);
        optim_get_state(&ob, c.w.params, c.m, c.v);
        c.meta.optim_t = ob.t;
        c.meta.step = 3;
        T_CHECK(ckpt_write(tp("optim.h5"), &c, NULL) == 0, "write: %s", ps_err_msg());
        free(c.w.params), free(c.m), free(c.v);
        optim_free(&ob);
        model_free(&B);
        CkptReadOpts all = {.optim = 1};
        T_CHECK(ckpt_read(tp("optim.h5"), &d, &all, NULL) == 0, "read: %s", ps_err_msg());
        Model C;
        Optim oc2;
        start(&C, &oc2, &cfg, d.w.params, &oc);
        optim_set_state(&oc2, &C, d.w.params, d.m, d.v, restore_t ? (int)d.meta.optim_t : 0);
        train_steps(&C, &oc2, 3, 6, tok, tgt);
        float *pc = xmalloc(n * 4), *mc = xmalloc(n * 4), *vc = xmalloc(n * 4);
        optim_get_state(&oc2, pc, mc, vc);
        int same = !memcmp(pa, pc, n * 4) && !memcmp(ma, mc, n * 4) && !memcmp(va, vc, n * 4);
        if (restore_t)
            T_CHECK(same && oc2.t == 6, "3 + 3 steps through a checkpoint differ from 6 straight");
        else  // the step counter matters: without it the bias correction restarts
            T_CHECK(!same, "restarting AdamW's step counter made no difference");
        free(pc), free(mc), free(vc);
        optim_free(&oc2);
        model_free(&C);
        ckpt_free(&d);
    }
    free(pa), free(ma), free(va), free(init);
    optim_free(&oa);
    model_free(&A);
    param_table_free(&t);
}

// ---------------------------------------------------------------------------
// damaged files

// Each case damages a copy of a good checkpoint; reading it must fail with a
// message naming the file and the needles, and must not change the file.
static void expect_damaged(const char *path, const char *what, const char *n1, const char *n2) {
    size_t len;
    char *before = slurp(path, &len);
    Checkpoint c;
    CkptReadOpts all = {.optim = 1};
    int rc = ckpt_read(path, &c, &all, NULL);
    T_CHECK(rc == -1, "%s: read succeeded", what);
    const char *msg = ps_err_msg();
    T_CHECK(strstr(msg, path) && (!n1 || strstr(msg, n1)) && (!n2 || strstr(msg, n2)),
            "%s: message lacks the file, '%s' or '%s': %s", what, n1 ? n1 : "", n2 ? n2 : "", msg);
    T_CHECK(file_is(path, before, len), "%s: reading changed the file", what);
    free(before);
    if (rc == 0) ckpt_free(&c);
}

static void test_damaged(void) {
    LlamaConfig cfg = small_cfg(0);
    Checkpoint a;
    make_ckpt(&a, &cfg, 21, "{\"pairs\": []}");
    const char *good = tp("good.h5");
    T_CHECK(ckpt_write(good, &a, NULL) == 0, "write: %s", ps_err_msg());
    size_t glen;
    char *gbytes = slurp(good, &glen);
    const char *p = tp("bad.h5");
    const char *q = "model.layers.1.self_attn.q_proj.weight";

    spit(p, gbytes, glen / 2);
    expect_damaged(p, "truncated", "truncated", NULL);

    copy_file(good, p);
    xor_byte(p, (size_t)chunk_addr(p, "/params/model.layers.1.self_attn.q_proj.weight/master") + 37,
             0x10);
    expect_damaged(p, "flipped byte in a tensor", q, "checksum");
    // ... and the same byte flipped in m: the weights-only read (eval) is fine, the full one not
    copy_file(good, p);
    xor_byte(p, (size_t)chunk_addr(p, "/params/model.layers.1.self_attn.q_proj.weight/adam_m") + 5,
             0x01);
    Checkpoint c;
    T_CHECK(ckpt_read(p, &c, NULL, NULL) == 0, "weights-only read of a damaged m: %s",
            ps_err_msg());
    ckpt_free(&c);
    expect_damaged(p, "flipped byte in adam_m", "adam_m", "checksum");

    copy_file(good, p);
    h5_unlink(p, "/params/model.layers.0.mlp.up_proj.weight/adam_v");
    expect_damaged(p, "missing dataset", "model.layers.0.mlp.up_proj.weight", "adam_v");

    copy_file(good, p);
    h5_unlink(p, "/params/model.norm.weight");
    expect_damaged(p, "missing tensor", "model.norm.weight", "missing");

    copy_file(good, p);
    h5_reshape(p, "/params/model.layers.0.self_attn.k_proj.weight/master", 9, 16);
    expect_damaged(p, "wrong shape", "[9, 16]", "[8, 16]");

    copy_file(good, p);
    h5_set_int_attr(p, "/model", "ffn_dim", 32);  // another model's config, these tensors
    expect_damaged(p, "different model", "parameters", NULL);

    copy_file(good, p);
    h5_set_int_attr(p, "/model", "n_layers", 1);  // one layer fewer: tensors left over
    {
        // n_params must agree too for this case, so it reaches the tensor check
        LlamaConfig one = cfg;
        one.n_layers = 1;
        ParamTable t1;
        param_table_build(&t1, &one);
        h5_set_int_attr(p, "/model", "n_params", (int64_t)t1.total);
        param_table_free(&t1);
    }
    expect_damaged(p, "tensors of a different model", "unexpected tensor", "model.layers.1");

    spit(p, "not a checkpoint\n", 17);
    expect_damaged(p, "not HDF5", "not an HDF5 file", NULL);

    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    expect_damaged(p, "HDF5 but not a checkpoint", "not a PostShare checkpoint", NULL);

    copy_file(good, p);
    h5_set_int_attr(p, "/", "format_version", 99);
    expect_damaged(p, "newer format", "format version 99", NULL);

    T_CHECK(file_is(good, gbytes, glen), "the good checkpoint changed");
    free(gbytes);
    ckpt_free(&a);
}

// Flip one bit at many places over a whole file: every read must fail or give
// back exactly the original checkpoint.
// With seal, each flipped copy gets a valid whole-file checksum (ckpt_seal after the
// flip), as a crafted file would: the reader then walks it in this process, not in
// the isolating child, so libhdf5 must not crash here either. (It did: H5Literate
// over /params' dense link storage freed a bad pointer; found by fuzz_ckpt with
// PS_FUZZ_CKPT_SEAL=1. The reader now counts the links and walks them only when
// there are extra ones.)
static void flip_sweep(int seal) {
    LlamaConfig cfg = small_cfg(1);
    Checkpoint a;
    make_ckpt(&a, &cfg, 31, "{\"pairs\": [[1, 2, 0, 1]]}");
    const char *good = tp("sweep.h5"), *p = tp("flip.h5");
    T_CHECK(ckpt_write(good, &a, NULL) == 0, "write: %s", ps_err_msg());
    size_t len;
    char *bytes = slurp(good, &len);
    if (seal) len -= 32;  // without its trailer: each flipped copy gets a new one
    int detected = 0, harmless = 0, silent = 0, tries = 0;
    size_t stride = len / 600 + 1;
    for (size_t off = 0; off < len; off += stride, tries++) {
        bytes[off] ^= (char)(1u << (off % 8));
        spit(p, bytes, len);
        bytes[off] ^= (char)(1u << (off % 8));
        if (seal) T_CHECK(ckpt_seal(p) == 0, "seal: %s", ps_err_msg());
        Checkpoint b;
        CkptReadOpts all = {.optim = 1};
        if (ckpt_read(p, &b, &all, NULL) != 0) {
            detected++;
            continue;
        }
        if (same_ckpt(&a, &b, 1)) {
            harmless++;  // unused bytes (padding, free space)
        } else {
            silent++;
            fprintf(stderr, "silent corruption: a flip at byte %zu of %zu read back wrong\n", off,
                    len);
        }
        ckpt_free(&b);
    }
    printf("%sbit flips: %d tried, %d detected, %d in unused bytes, %d silent\n",
           seal ? "sealed " : "", tries, detected, harmless, silent);
    T_CHECK(silent == 0, "%d flips read back as different content without an error", silent);
    T_CHECK(detected > tries / 2, "only %d of %d flips were detected", detected, tries);
    free(bytes);
    ckpt_free(&a);
}

static void test_bitflip_sweep(void) {
    flip_sweep(0);
}

static void test_sealed_flip_sweep(void) {
    flip_sweep(1);
    const char *p = tp("sealflip.h5");
    // The inputs fuzz_ckpt found (tests/fixtures/ckpt_crafted: damaged link storage in
    // /params), sealed: a clear error, not a crash inside libhdf5.
    for (int k = 1; k <= 2; k++) {
        char src[600];
        snprintf(src, sizeof src, "%s/tests/fixtures/ckpt_crafted/link_storage_%d.h5",
                 PS_SOURCE_DIR, k);
        size_t n;
        char *raw = slurp(src, &n);
        spit(p, raw, n);
        free(raw);
        T_CHECK(ckpt_seal(p) == 0, "seal: %s", ps_err_msg());
        Checkpoint b;
        CkptReadOpts all = {.optim = 1};
        T_CHECK(ckpt_read(p, &b, &all, NULL) != 0 && strstr(ps_err_msg(), "sealflip.h5"),
                "crafted %s: read without error (%s)", src, ps_err_msg());
    }
}

// ---------------------------------------------------------------------------
// the run directory

static void touch(const char *name) {
    spit(tp(name), "x", 1);
}

static void test_run_dir(void) {
    char d[512];  // tp() reuses its buffers: keep a copy
    snprintf(d, sizeof d, "%s", tp("run"));
    T_CHECK(ps_mkdirs(d) == 0, "mkdir");
    const char *names[] = {"ckpt-00000005.h5",
                           "ckpt-00000100.h5",
                           "ckpt-00000020.h5",
                           "ckpt-1234567890.h5",
                           "ckpt-00000030.h5.tmp.123",
                           "ckpt-00000040.h5.damaged",
                           "ckpt-.h5",
                           "ckpt-12a.h5",
                           "notes.txt"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "run/%s", names[i]);
        touch(rel);
    }
    CkptEntry *e;
    int n = ckpt_list(d, &e);
    T_CHECK(
        n == 4 && e[0].step == 1234567890 && e[1].step == 100 && e[2].step == 20 && e[3].step == 5,
        "list: %d entries", n);
    T_CHECK(n > 0 && !strcmp(e[1].path, tp("run/ckpt-00000100.h5")), "path %s", n ? e[1].path : "");
    ckpt_list_free(e, n);
    char *p = ckpt_path(d, 42);
    T_CHECK(!strcmp(p, tp("run/ckpt-00000042.h5")), "ckpt_path: %s", p);
    free(p);
    T_CHECK(ckpt_list(tp("nope"), &e) == 0, "a missing directory lists nothing");

    // temp files: a dead writer's and our own go, a live one's stays
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    char dead[64], live[64], own[64];
    snprintf(dead, sizeof dead, "run/ckpt-00000007.h5.tmp.%d", (int)child);
    snprintf(live, sizeof live, "run/ckpt-00000008.h5.tmp.%d", (int)getppid());
    snprintf(own, sizeof own, "run/ckpt-00000009.h5.tmp.%d", (int)getpid());
    touch(dead), touch(live), touch(own);
    ckpt_remove_stale_tmp(d);
    T_CHECK(access(tp(dead), F_OK) != 0 && access(tp(own), F_OK) != 0, "stale temp files stay");
    T_CHECK(access(tp(live), F_OK) == 0 && access(tp("run/ckpt-00000005.h5"), F_OK) == 0 &&
                access(tp("run/notes.txt"), F_OK) == 0,
            "removed a live writer's temp file or a non-temp file");
}

static void test_metrics_resume(void) {
    const char *m = tp("metrics.jsonl");
    const char *lines =
        "{\"step\":0,\"val_loss\":5.5}\n{\"step\":1,\"loss\":5.4}\n{\"step\":2,\"loss\":5.3}\n"
        "{\"step\":2,\"val_loss\":5.2}\n{\"step\":3,\"loss\":5.1}\n{\"step\":4,\"loss\":5.0}\n"
        "{\"step\":5,\"lo";
    spit(m, lines, strlen(lines));
    FILE *f = resume_open_metrics(m, 1, 2);
    fprintf(f, "{\"step\":3,\"loss\":9.9}\n");
    fclose(f);
    const char *want =
        "{\"step\":0,\"val_loss\":5.5}\n{\"step\":1,\"loss\":5.4}\n{\"step\":2,\"loss\":5.3}\n"
        "{\"step\":2,\"val_loss\":5.2}\n{\"step\":3,\"loss\":9.9}\n";
    T_CHECK(file_is(m, want, strlen(want)), "metrics after resume at step 2 are wrong");
    f = resume_open_metrics(m, 0, 0);
    fclose(f);
    T_CHECK(file_is(m, "", 0), "a fresh run does not truncate metrics");
}

// ---------------------------------------------------------------------------
// resume checks

static void test_resume_diff(void) {
    JobConfig a, b;
    char path[512];
    snprintf(path, sizeof path, "%s/configs/tiny.yaml", PS_SOURCE_DIR);
    T_CHECK(job_load(path, 0, NULL, &a) == 0, "%s", ps_err_msg());
    char *fixed, *notes;
    b = a;
    T_CHECK(job_resume_diff(&a, &b, &fixed, &notes) == 0 && !fixed[0] && !notes[0],
            "same job: '%s' '%s'", fixed, notes);
    free(fixed), free(notes);
    b.train.log_every = 3, b.train.eval_every = 7, b.checkpoint.every = 5;
    snprintf(b.run.name, sizeof b.run.name, "other");
    T_CHECK(job_resume_diff(&a, &b, &fixed, &notes) == 0 && !fixed[0] && !notes[0],
            "logging, evaluation, checkpoint policy and name are free: '%s' '%s'", fixed, notes);
    free(fixed), free(notes);
    b.train.steps = 50, b.train.lr = 5e-4f;
    T_CHECK(job_resume_diff(&a, &b, &fixed, &notes) == 0 && strstr(notes, "train.steps 20 -> 50") &&
                strstr(notes, "train.lr"),
            "steps and lr are notes: '%s'", notes);
    free(fixed), free(notes);
    b.model.dim = 64, b.data.seq_len = 16, b.train.grad_accum = 2, b.run.seed = 1;
    T_CHECK(job_resume_diff(&a, &b, &fixed, &notes) == 3 && strstr(fixed, "model.dim 32 -> 64") &&
                strstr(fixed, "data.seq_len") && strstr(fixed, "run.seed") &&
                strstr(notes, "train.grad_accum"),
            "model, sequence length and seed are fixed, grad_accum a note (resume_check "
            "keeps the global batch): '%s' '%s'",
            fixed, notes);
    free(fixed), free(notes);
}

// Run resume_check in a child (it exits on a mismatch); returns its exit status
// and leaves its stderr in tp("check.err").
static int check_in_child_world(const JobConfig *job, ResumePoint *rp, const HostWeights *w,
                                const char *plan, const Loader *L, int world) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *e = freopen(tp("check.err"), "w", stderr);
        (void)e;
        FILE *o = freopen("/dev/null", "w", stdout);
        (void)o;
        resume_check(job, rp, w, plan, L, world);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int check_in_child(const JobConfig *job, ResumePoint *rp, const HostWeights *w,
                          const char *plan, const Loader *L) {
    return check_in_child_world(job, rp, w, plan, L, 1);
}

static int err_has(const char *needle) {
    char *s = ps_read_file(tp("check.err"), NULL);
    int yes = s && strstr(s, needle);
    free(s);
    return yes;
}

static void test_resume_check(void) {
    JobConfig job;
    char path[512];
    snprintf(path, sizeof path, "%s/configs/tiny.yaml", PS_SOURCE_DIR);
    T_CHECK(job_load(path, 0, NULL, &job) == 0, "%s", ps_err_msg());
    int tokens[4000];
    for (int i = 0; i < 4000; i++) tokens[i] = i % 251;
    T_CHECK(shard_write(tp("s_train_000000.bin"), tokens, 4000, 256) == 0, "%s", ps_err_msg());
    T_CHECK(shard_write(tp("s_train_000001.bin"), tokens, 3000, 256) == 0, "%s", ps_err_msg());
    char glob1[600], glob0[600];
    snprintf(glob1, sizeof glob1, "%s/s_train_*.bin", g_dir);
    snprintf(glob0, sizeof glob0, "%s/s_train_000000.bin", g_dir);
    Loader *L = loader_open(glob1, job.data.seq_len, 256, 1, 1);
    Loader *L0 = loader_open(glob0, job.data.seq_len, 256, 1, 1);
    T_CHECK(L && L0, "%s", ps_err_msg());
    if (!L || !L0) return;
    const char *plan = "{\"pairs\": [[1, 0, 0, 0]]}";
    ResumePoint rp;
    memset(&rp, 0, sizeof rp);
    rp.resumed = 1;
    rp.path = xstrdup("run/ckpt-00000010.h5");
    rp.ck.meta.step = 10;
    rp.ck.meta.config_yaml = job_to_yaml(&job);
    rp.ck.meta.plan_json = xstrdup(plan);
    rp.ck.meta.train_shards = xstrdup("s_train_000000.bin\t4000\ns_train_000001.bin\t3000\n");
    HostWeights w;
    LlamaConfig mc;
    job_llama_config(&job, &mc);
    param_table_build(&w.t, &mc);
    w.params = NULL;

    T_CHECK(check_in_child(&job, &rp, &w, plan, L) == 0, "the same job, plan and data must pass");
    T_CHECK(check_in_child(&job, &rp, &w, NULL, L) == 1 && err_has("sharing plan"),
            "a run without the checkpoint's plan must stop");
    T_CHECK(check_in_child(&job, &rp, &w, "{\"pairs\": []}", L) == 1 && err_has("sharing plan"),
            "a different plan must stop");
    T_CHECK(check_in_child(&job, &rp, &w, plan, L0) == 1 && err_has("training data differs") &&
                err_has("s_train_000001.bin"),
            "other train shards must stop");
    JobConfig other = job;
    other.model.ffn_dim = 128;
    T_CHECK(check_in_child(&other, &rp, &w, plan, L) == 1 && err_has("model.ffn_dim 64 -> 128"),
            "a different model must stop");
    other = job;
    other.train.steps = 5;
    T_CHECK(check_in_child(&other, &rp, &w, plan, L) == 1 && err_has("below the step"),
            "train.steps below the checkpoint's step must stop");
    other = job;
    other.train.steps = 500;
    other.train.log_every = 1;
    T_CHECK(check_in_child(&other, &rp, &w, plan, L) == 0, "more steps and other logging pass");

    // the global batch: ranks x batch_size x grad_accum (tiny.yaml: B 4, accum 1)
    other = job;
    other.data.batch_size = 8;
    T_CHECK(check_in_child(&other, &rp, &w, plan, L) == 1 && err_has("global batch would change") &&
                err_has("from 4 samples per step"),
            "a larger global batch must stop");
    T_CHECK(check_in_child_world(&job, &rp, &w, plan, L, 2) == 1 &&
                err_has("2 rank(s) x data.batch_size 4"),
            "the same config on 2 ranks doubles the global batch: must stop");
    other = job;
    other.data.batch_size = 2;
    other.train.grad_accum = 2;
    T_CHECK(check_in_child(&other, &rp, &w, plan, L) == 0, "B 2 x accum 2 continues B 4");
    other.train.grad_accum = 1;
    T_CHECK(check_in_child_world(&other, &rp, &w, plan, L, 2) == 0, "2 ranks x B 2 continues B 4");
    rp.ck.meta.global_batch = 8, rp.ck.meta.world_size = 2;
    T_CHECK(check_in_child_world(&job, &rp, &w, plan, L, 2) == 0 &&
                check_in_child_world(&other, &rp, &w, plan, L, 4) == 0,
            "a checkpoint of 2 ranks x B 4 continues on 2 x 4 and on 4 x 2");
    T_CHECK(check_in_child(&job, &rp, &w, plan, L) == 1 && err_has("from 8 samples per step"),
            "and not on 1 rank x B 4");
    param_table_free(&w.t);
    resume_point_free(&rp);
    loader_close(L);
    loader_close(L0);
}

// ---------------------------------------------------------------------------
// Hostile state (issue 12): NaN/Inf or a negative v never written or read;
// out-of-range counters refused; a write on a full disk fails cleanly.

// Overwrite one float of a dataset (in place, through HDF5).
static void h5_poke(const char *path, const char *dset, float x) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT), sp = H5Dget_space(d);
    hsize_t dims[2], start[2] = {0, 0}, one[2] = {1, 1};
    int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, one, NULL);
    hid_t ms = H5Screate_simple(nd, one, NULL);
    CHECK(H5Dwrite(d, H5T_NATIVE_FLOAT, ms, sp, H5P_DEFAULT, &x) >= 0, "poke %s", dset);
    H5Sclose(ms);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
}

static void test_ckpt_state(void) {
    Checkpoint a, b;
    LlamaConfig cfg = small_cfg(1);
    make_ckpt(&a, &cfg, 5, NULL);
    const char *good = tp("state_good.h5"), *p = tp("state_bad.h5");
    CkptReadOpts all = {.optim = 1};
    // never written: non-finite weights or moments, negative v
    const char *name = a.w.t.e[3].name;
    size_t at = a.w.t.e[3].offset + 5;
    float keep = a.w.params[at];
    a.w.params[at] = NAN;
    EXPECT_FAIL(ckpt_write(p, &a, NULL), p, name, "master", "non-finite");
    a.w.params[at] = keep;
    a.m[at] = INFINITY;
    EXPECT_FAIL(ckpt_write(p, &a, NULL), p, name, "adam_m", "non-finite");
    a.m[at] = 0;
    a.v[at] = -1e-3f;
    EXPECT_FAIL(ckpt_write(p, &a, NULL), p, name, "adam_v", "negative");
    a.v[at] = 0;
    T_CHECK(access(p, F_OK) != 0, "a refused checkpoint was written");
    T_CHECK(ckpt_write(good, &a, NULL) == 0, "%s", ps_err_msg());
    // ... nor read (inspect said "every checksum ok"; resume wrote NaN checkpoints)
    char ds[256];
    snprintf(ds, sizeof ds, "/params/%s/master", name);
    copy_file(good, p);
    h5_poke(p, ds, NAN);
    EXPECT_FAIL(ckpt_read(p, &b, &all, NULL), p, name, "non-finite");
    snprintf(ds, sizeof ds, "/params/%s/adam_v", name);
    copy_file(good, p);
    h5_poke(p, ds, -2.0f);
    EXPECT_FAIL(ckpt_read(p, &b, &all, NULL), p, name, "negative AdamW second moment");
    const struct {
        const char *obj, *attr;
        int64_t v;
    } bad[] = {{"/", "step", -5},
               {"/", "tokens_seen", -1},
               {"/", "optim_t", 1LL << 40},
               {"/", "optim_t", -1},
               {"/data", "world_size", -2}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        copy_file(good, p);
        h5_set_int_attr(p, bad[i].obj, bad[i].attr, bad[i].v);
        EXPECT_FAIL(ckpt_read(p, &b, &all, NULL), p, bad[i].attr, "out of range");
        CkptMeta m;
        LlamaConfig c2;
        EXPECT_FAIL(ckpt_read_meta(p, &m, &c2), p, bad[i].attr, "out of range");
    }
    // the good one reads back, and carries the whole-file checksum trailer
    T_CHECK(ckpt_read(good, &b, &all, NULL) == 0, "%s", ps_err_msg());
    ckpt_free(&b);
    size_t n;
    char *bytes = slurp(good, &n);
    T_CHECK(
        n > 32 && !memcmp(bytes + n - 32, "PSCKSUM1", 8) && !memcmp(bytes + n - 8, "PSCKEND!", 8),
        "no checksum trailer");
    free(bytes);
    ckpt_free(&a);
}

// A write that fails half way (the disk full: here RLIMIT_FSIZE) must report the
// error and leave no temp file, and the process must then exit cleanly (HDF5's
// exit handler crashed on the file it could not close).
static void test_ckpt_disk_full(void) {
    const char *p = tp("disk_full.h5");
    for (rlim_t lim = 4096; lim <= 16384; lim *= 4) {
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = {lim, lim};
            setrlimit(RLIMIT_FSIZE, &rl);
            Checkpoint a;
            LlamaConfig cfg = small_cfg(1);
            make_ckpt(&a, &cfg, 6, NULL);
            int rc = ckpt_write(p, &a, NULL);
            int ok = rc == -1 && strstr(ps_err_msg(), "File too large") != NULL;
            if (!ok) fprintf(stderr, "child: rc %d: %s\n", rc, ps_err_msg());
            ckpt_free(&a);
            exit(ok ? 0 : 2);
        }
        int st;
        waitpid(pid, &st, 0);
        T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "limit %lu: the writer %s %d",
                (unsigned long)lim, WIFSIGNALED(st) ? "died of signal" : "exited with",
                WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        char tmp[4300];
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", p, (int)pid);
        T_CHECK(access(tmp, F_OK) != 0 && access(p, F_OK) != 0, "a file was left behind");
    }
}

int main(void) {
    const char *tmpdir = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/ps_test_checkpoint_XXXXXX",
             tmpdir && *tmpdir ? tmpdir : "/tmp");
    CHECK(mkdtemp(g_dir), "mkdtemp");
    test_roundtrip();
    test_layout();
    test_optim_resume();
    test_damaged();
    test_bitflip_sweep();
    test_sealed_flip_sweep();
    test_run_dir();
    test_metrics_resume();
    test_resume_diff();
    test_resume_check();
    test_ckpt_state();
    test_ckpt_disk_full();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (!t_failed && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return t_summary();
}
