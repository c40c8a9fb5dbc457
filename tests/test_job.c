// test_job.c: the job configuration (trainer/job.c): the shipped configs, every
// class of error message (each must name the file and the key), --set
// overrides, defaults, and the resolved-YAML round trip.
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "job.h"
#include "params.h"
#include "test.h"

static char g_dir[256];
static char g_path[512];

// Write text to a fresh file in the temp folder; returns its path.
static const char *write_cfg(const char *text) {
    static int n;
    snprintf(g_path, sizeof g_path, "%s/cfg%d.yaml", g_dir, n++);
    FILE *f = fopen(g_path, "w");
    CHECK(f, "cannot write %s", g_path);
    fputs(text, f);
    fclose(f);
    return g_path;
}

// A minimal valid job; tests append or replace lines.
#define BASE_MODEL                                                                       \
    "model:\n  dim: 32\n  n_layers: 2\n  n_heads: 4\n  ffn_dim: 64\n  vocab_size: 256\n" \
    "  max_seq_len: 64\n"
#define BASE_DATA "data:\n  train: tr_*.bin\n  val: va_*.bin\n  seq_len: 32\n  batch_size: 4\n"
#define BASE BASE_MODEL BASE_DATA "train:\n  steps: 10\n"

// Load text as a file; expect failure with every needle in the message.
static void expect_err(const char *text, int n_ov, char **ov, const char *n1, const char *n2,
                       const char *n3, int line) {
    const char *path = write_cfg(text);
    JobConfig cfg;
    int rc = job_load(path, n_ov, ov, &cfg);
    const char *msg = ps_err_msg();
    T_CHECK(rc == -1, "expected an error containing '%s'", n1);
    if (rc != -1) return;
    const char *needles[3] = {n1, n2, n3};
    for (int i = 0; i < 3; i++)
        if (needles[i]) T_CHECK(strstr(msg, needles[i]), "message '%s' lacks '%s'", msg, needles[i]);
    if (n_ov == 0) T_CHECK(strstr(msg, path) == msg, "message '%s' does not start with the file", msg);
    if (line > 0) {
        char want[600];
        snprintf(want, sizeof want, "%s:%d:", path, line);
        T_CHECK(strstr(msg, want) == msg, "message '%s' lacks '%s'", msg, want);
    }
}

static void expect_ok(const char *text, int n_ov, char **ov, JobConfig *cfg) {
    const char *path = write_cfg(text);
    int rc = job_load(path, n_ov, ov, cfg);
    T_CHECK(rc == 0, "load failed: %s", ps_err_msg());
}

// job_to_yaml then job_load_string must give back the same bytes.
static void check_round_trip(const JobConfig *cfg, const char *what) {
    char *y = job_to_yaml(cfg);
    JobConfig back;
    int rc = job_load_string(y, what, 0, NULL, &back);
    T_CHECK(rc == 0, "%s: resolved YAML does not load: %s\n%s", what, ps_err_msg(), y);
    if (rc == 0) {
        T_CHECK(memcmp(cfg, &back, sizeof back) == 0, "%s: round trip differs\n%s", what, y);
        // and the text is a fixed point
        char *y2 = job_to_yaml(&back);
        T_CHECK(strcmp(y, y2) == 0, "%s: second YAML differs", what);
        free(y2);
    }
    free(y);
}

static size_t n_params(const JobConfig *cfg) {
    LlamaConfig lc;
    if (job_llama_config(cfg, &lc)) return 0;
    ParamTable t;
    param_table_build(&t, &lc);
    size_t n = t.total;
    param_table_free(&t);
    return n;
}

static void test_shipped_configs(void) {
    char path[1024];
    JobConfig c;

    snprintf(path, sizeof path, "%s/configs/default.yaml", PS_SOURCE_DIR);
    T_CHECK(job_load(path, 0, NULL, &c) == 0, "default.yaml: %s", ps_err_msg());
    T_CHECK(c.model.dim == 128 && c.model.n_layers == 4 && c.model.n_heads == 4 &&
                c.model.n_kv_heads == 4 && c.model.ffn_dim == 352 && c.model.vocab_size == 256,
            "default.yaml model");
    T_CHECK(strcmp(c.data.train, "checkpoints/data/kjv/kjv_train_*.bin") == 0, "%s", c.data.train);
    T_CHECK(strcmp(c.data.val, "checkpoints/data/kjv/kjv_val_*.bin") == 0, "%s", c.data.val);
    T_CHECK(c.data.seq_len == 128 && c.data.batch_size == 16, "default.yaml data");
    T_CHECK(c.train.lr == 1e-3f && c.train.min_lr == 1e-4f && c.train.warmup == 30, "lr");
    T_CHECK(c.train.eval_every == 200 && c.train.log_every == 10, "eval/log");
    T_CHECK(n_params(&c) == 869504, "default.yaml params %zu (comment says 869,504)", n_params(&c));
    char *rd = job_run_dir(&c);
    T_CHECK(strcmp(rd, "checkpoints/default") == 0, "run dir %s", rd);
    free(rd);
    check_round_trip(&c, "default.yaml");

    snprintf(path, sizeof path, "%s/configs/tiny.yaml", PS_SOURCE_DIR);
    T_CHECK(job_load(path, 0, NULL, &c) == 0, "tiny.yaml: %s", ps_err_msg());
    T_CHECK(c.model.dim == 32 && c.model.n_layers == 2 && c.model.n_heads == 4 &&
                c.model.n_kv_heads == 2 && c.model.ffn_dim == 64,
            "tiny.yaml model");
    T_CHECK(c.data.seq_len == 32 && c.data.batch_size == 4 && c.train.steps == 20, "tiny.yaml");
    T_CHECK(fabsf(c.train.min_lr - 1e-4f) < 1e-9f, "tiny min_lr resolved to lr/10: %g",
            c.train.min_lr);
    T_CHECK(n_params(&c) == 34976, "tiny.yaml params %zu (comment says 34,976)", n_params(&c));
    check_round_trip(&c, "tiny.yaml");

    snprintf(path, sizeof path, "%s/configs/25m.yaml", PS_SOURCE_DIR);
    T_CHECK(job_load(path, 0, NULL, &c) == 0, "25m.yaml: %s", ps_err_msg());
    T_CHECK(c.model.dim == 512 && c.model.n_layers == 8 && c.model.ffn_dim == 1376, "25m model");
    T_CHECK(c.data.seq_len == 256 && c.data.batch_size == 8, "25m data");
    T_CHECK(n_params(&c) == 25567744, "25m.yaml params %zu (comment says 25,567,744)",
            n_params(&c));
    check_round_trip(&c, "25m.yaml");
}

static void test_defaults(void) {
    JobConfig d;
    T_CHECK(job_set_defaults(&d) == 0, "set_defaults");
    T_CHECK(strcmp(d.run.name, "default") == 0 && strcmp(d.run.out_dir, "checkpoints") == 0 &&
                d.run.seed == 1337,
            "run defaults");
    T_CHECK(strcmp(d.model.init, "scratch") == 0 && d.model.rope_theta == 10000.0f &&
                d.model.norm_eps == 1e-5f && d.model.tie_embeddings == 0 &&
                d.model.init_std == 0.02f && d.model.n_kv_heads == 0,
            "model defaults");
    T_CHECK(d.data.val_batches == 8 && d.data.shuffle == 1 && strcmp(d.data.tokenizer, "byte") == 0,
            "data defaults");
    T_CHECK(d.train.grad_accum == 1 && d.train.lr == 3e-4f && d.train.min_lr < 0 &&
                d.train.warmup == 0 && d.train.weight_decay == 0.1f && d.train.betas[0] == 0.9f &&
                d.train.betas[1] == 0.95f && d.train.eps == 1e-8f && d.train.clip == 1.0f &&
                d.train.eval_every == 0 && d.train.log_every == 10 && d.train.save_final == 1,
            "train defaults");
    T_CHECK(strcmp(d.backend, "auto") == 0 && d.threads == 0, "backend defaults");

    // defaults applied by job_load, derived ones resolved
    JobConfig c;
    expect_ok(BASE, 0, NULL, &c);
    T_CHECK(c.model.n_kv_heads == 4, "n_kv_heads defaults to n_heads: %d", c.model.n_kv_heads);
    T_CHECK(fabsf(c.train.min_lr - 3e-5f) < 1e-10f, "min_lr = lr/10: %g", c.train.min_lr);
    T_CHECK(c.data.val_batches == 8 && c.data.shuffle && c.train.save_final && c.train.clip == 1.0f,
            "defaults after load");
    check_round_trip(&c, "base");

    // resolve/validate for configs built in code
    JobConfig p;
    job_set_defaults(&p);
    T_CHECK(job_validate(&p) == -1 && strstr(ps_err_msg(), "model.dim"), "unset shape: %s",
            ps_err_msg());
    T_CHECK(job_apply_override(&p, "model.dim=32") == 0, "%s", ps_err_msg());
    T_CHECK(job_apply_override(&p, "model.n_layers=1") == 0 &&
                job_apply_override(&p, "model.n_heads=2") == 0 &&
                job_apply_override(&p, "model.ffn_dim=8") == 0 &&
                job_apply_override(&p, "model.vocab_size=16") == 0 &&
                job_apply_override(&p, "model.max_seq_len=8") == 0 &&
                job_apply_override(&p, "data.seq_len=8") == 0 &&
                job_apply_override(&p, "data.batch_size=1") == 0 &&
                job_apply_override(&p, "data.train=a") == 0 &&
                job_apply_override(&p, "data.val=b") == 0 &&
                job_apply_override(&p, "train.steps=1") == 0,
            "%s", ps_err_msg());
    job_resolve(&p);
    T_CHECK(job_validate(&p) == 0, "built config: %s", ps_err_msg());
    T_CHECK(p.model.n_kv_heads == 2 && p.train.min_lr > 0, "resolve");
    LlamaConfig lc;
    T_CHECK(job_llama_config(&p, &lc) == 0 && lc.dim == 32 && lc.n_kv_heads == 2 &&
                lc.rope_theta == 10000.0f && lc.norm_eps == 1e-5f,
            "llama config");
}

static void test_errors(void) {
    // unknown keys, with suggestions
    expect_err(BASE "  lr_max: 0.1\n", 0, NULL, "unknown key 'train.lr_max'",
               "(did you mean 'train.lr'?)", NULL, 15);
    expect_err(BASE "  stpes: 3\n", 0, NULL, "unknown key 'train.stpes'", "did you mean 'train.steps'",
               NULL, 15);
    expect_err(BASE_MODEL BASE_DATA "  steps: 3\ntrain:\n  steps: 10\n", 0, NULL,
               "unknown key 'data.steps'", "did you mean 'train.steps'", NULL, 13);
    expect_err(BASE "trian:\n  lr: 0.1\n", 0, NULL, "unknown section 'trian'",
               "did you mean 'train'", NULL, 15);
    expect_err(BASE "  zzzzzzzzzzzzzzzz: 1\n", 0, NULL, "unknown key 'train.zzzzzzzzzzzzzzzz'",
               "keys in 'train':", "grad_accum", 15);
    expect_err(BASE "  zzz: 1\n", 0, NULL, "unknown key 'train.zzz' (keys in 'train': steps,", NULL,
               NULL, 15);
    expect_err(BASE "bakend: cpu\n", 0, NULL, "unknown key 'bakend'", "did you mean 'backend'",
               NULL, 15);

    // wrong types
    expect_err(BASE_MODEL BASE_DATA "train:\n  steps: abc\n", 0, NULL,
               "train.steps: expected an integer, got 'abc'", NULL, NULL, 14);
    expect_err(BASE_MODEL BASE_DATA "train:\n  steps: 1.5\n", 0, NULL,
               "train.steps: expected an integer, got '1.5'", NULL, NULL, 14);
    expect_err(BASE "  lr: fast\n", 0, NULL, "train.lr: expected a number, got 'fast'", NULL, NULL,
               15);
    expect_err(BASE "  lr: .nan\n", 0, NULL, "train.lr: expected a number", NULL, NULL, 15);
    expect_err(BASE "  save_final: maybe\n", 0, NULL, "train.save_final: expected a boolean", NULL,
               NULL, 15);
    expect_err(BASE "  betas: 0.9\n", 0, NULL, "train.betas: expected a list of 2 numbers", NULL,
               NULL, 15);
    expect_err(BASE "  betas: [0.9]\n", 0, NULL, "train.betas: expected a list of 2 numbers",
               "got 1 element", NULL, 15);
    expect_err(BASE "  betas: [0.9, x]\n", 0, NULL, "train.betas", "got element 'x'", NULL, 15);
    expect_err(BASE "  steps2: {a: 1}\n", 0, NULL, "unknown section 'train.steps2'", NULL, NULL, 15);
    expect_err(BASE_MODEL BASE_DATA "train:\n  steps: {a: 1}\n", 0, NULL,
               "train.steps: expected an integer, got a mapping", NULL, NULL, 14);
    expect_err(BASE "run:\n  name: [a, b]\n", 0, NULL, "run.name: expected a string, got a list",
               NULL, NULL, 16);
    expect_err(BASE "run: 5\n", 0, NULL, "'run' is a section", "expected a mapping", NULL, 15);
    expect_err(BASE "threads: 99999999999\n", 0, NULL, "threads: expected an integer", NULL, NULL,
               15);

    // missing required keys
    expect_err(BASE_MODEL BASE_DATA "train:\n  lr: 0.1\n", 0, NULL,
               "missing required key 'train.steps'", "optimizer steps", NULL, 0);
    expect_err(BASE_MODEL "train:\n  steps: 3\n", 0, NULL, "missing required keys", "'data.train'",
               "'data.batch_size'", 0);
    expect_err("model:\n  dim: 32\n" BASE_DATA "train:\n  steps: 3\n", 0, NULL,
               "missing required keys", "'model.n_layers'", "'model.max_seq_len'", 0);

    // duplicates
    expect_err(BASE "  lr: 0.1\n  lr: 0.2\n", 0, NULL, "duplicate key 'train.lr'", "first on line 15",
               NULL, 16);
    expect_err(BASE "train:\n  lr: 0.1\n", 0, NULL, "duplicate key 'train'", "first on line 13",
               NULL, 15);
    expect_err(BASE "  lr: 0.1\ntrain.lr: 0.2\n", 0, NULL, "duplicate key 'train.lr'",
               "first on line 15", NULL, 16);

    // malformed YAML (libyaml's message with line and column)
    expect_err(BASE "  betas: [0.9, 0.95\n", 0, NULL, "malformed YAML", NULL, NULL, 0);
    expect_err(BASE "  lr: 0.1\n lr: 3: 4\n", 0, NULL, "malformed YAML", NULL, NULL, 0);
    expect_err("", 0, NULL, "empty config", NULL, NULL, 0);
    expect_err("- a\n- b\n", 0, NULL, "expected a mapping of sections", NULL, NULL, 1);

    // values out of range, at the line of the key
    expect_err(BASE_MODEL BASE_DATA "train:\n  steps: 0\n", 0, NULL, "train.steps must be >= 1",
               "(got 0)", NULL, 14);
    expect_err(BASE_MODEL BASE_DATA "train:\n  steps: -5\n", 0, NULL, "train.steps must be >= 1",
               NULL, NULL, 14);
    expect_err(BASE_MODEL "data:\n  train: a\n  val: b\n  seq_len: 0\n  batch_size: 4\n"
                          "train:\n  steps: 3\n",
               0, NULL, "data.seq_len must be >= 1", NULL, NULL, 11);
    expect_err(BASE "  lr: -1e-3\n", 0, NULL, "train.lr must be >= 0", NULL, NULL, 15);
    expect_err(BASE "  betas: [0.9, 1.0]\n", 0, NULL, "train.betas[1] must be in [0,1)", NULL, NULL,
               15);
    expect_err(BASE "  betas: [-0.1, 0.9]\n", 0, NULL, "train.betas[0] must be in [0,1)", NULL,
               NULL, 15);
    expect_err(BASE "  grad_accum: 0\n", 0, NULL, "train.grad_accum must be >= 1", NULL, NULL, 15);
    expect_err(BASE "  eps: 0\n", 0, NULL, "train.eps must be > 0", NULL, NULL, 15);
    expect_err(BASE "  clip: -1\n", 0, NULL, "train.clip must be >= 0", NULL, NULL, 15);
    expect_err(BASE "  log_every: 0\n", 0, NULL, "train.log_every must be >= 1", NULL, NULL, 15);
    expect_err(BASE "  lr: 1e-3\n  min_lr: 1e-2\n", 0, NULL, "train.min_lr", "must be <= train.lr",
               NULL, 16);
    expect_err(BASE "backend: gpu\n", 0, NULL, "backend must be cpu, cuda or auto", "got 'gpu'", NULL, 15);
    expect_err(BASE "threads: -1\n", 0, NULL, "threads must be >= 0", NULL, NULL, 15);
    expect_err(BASE "run:\n  name: \"\"\n", 0, NULL, "run.name must not be empty", NULL, NULL, 16);
    expect_err(BASE "data.tokenizer: bytes\n", 0, NULL, "data.tokenizer must be byte, llama2c:PATH, sp:PATH", NULL,
               NULL, 15);
    expect_err(BASE "data.tokenizer: \"llama2c:\"\n", 0, NULL, "data.tokenizer must be byte, llama2c:PATH, sp:PATH",
               NULL, NULL, 15);
    expect_err(BASE "model.n_kv_heads: 3\n", 0, NULL, "model.n_kv_heads (3) must divide", NULL,
               NULL, 15);
    expect_err(BASE "model.rope_theta: 0\n", 0, NULL, "model.rope_theta must be > 0", NULL, NULL,
               15);
    expect_err("model:\n  dim: 30\n  n_layers: 2\n  n_heads: 4\n  ffn_dim: 64\n  vocab_size: 256\n"
               "  max_seq_len: 64\n" BASE_DATA "train:\n  steps: 10\n",
               0, NULL, "model.dim (30) must be divisible", NULL, NULL, 2);
    expect_err("model:\n  dim: 32\n  n_layers: 2\n  n_heads: 4\n  ffn_dim: 64\n  vocab_size: 256\n"
               "  max_seq_len: 16\n" BASE_DATA "train:\n  steps: 10\n",
               0, NULL, "data.seq_len (32) must be <= model.max_seq_len (16)", NULL, NULL, 11);

    // model.init
    expect_err(BASE "model.init: foo\n", 0, NULL, "model.init must be scratch, hf:DIR", "got 'foo'", NULL,
               15);
    expect_err(BASE "model.init: hf:/models/x\n", 0, NULL, "model.dim is set but model.init is",
               "hf:/models/x", "remove it", 2);
    expect_err("model:\n  init: llama2c:x.bin\n  rope_theta: 500000\n" BASE_DATA
               "train:\n  steps: 10\n",
               0, NULL, "model.rope_theta is set but model.init is 'llama2c:x.bin'", NULL, NULL, 3);
}

static void test_overrides(void) {
    JobConfig c;
    char *good[] = {"train.lr=1e-2",        "train.betas=[0.8, 0.99]", "run.name=my run",
                    "data.shuffle=false",   "train.steps= 42 ",        "backend=cpu",
                    "model.tie_embeddings=yes", "data.train=/x/y/*.bin"};
    expect_ok(BASE, 8, good, &c);
    T_CHECK(c.train.lr == 1e-2f && fabsf(c.train.min_lr - 1e-3f) < 1e-9f, "lr override %g %g",
            c.train.lr, c.train.min_lr);
    T_CHECK(c.train.betas[0] == 0.8f && c.train.betas[1] == 0.99f, "betas override");
    T_CHECK(strcmp(c.run.name, "my run") == 0 && c.data.shuffle == 0 && c.train.steps == 42 &&
                strcmp(c.backend, "cpu") == 0 && c.model.tie_embeddings == 1 &&
                strcmp(c.data.train, "/x/y/*.bin") == 0,
            "overrides applied");
    check_round_trip(&c, "overridden");

    // later overrides win; required keys may come from --set alone
    char *later[] = {"train.lr=1e-2", "train.lr=2e-2"};
    expect_ok(BASE, 2, later, &c);
    T_CHECK(c.train.lr == 2e-2f, "later override wins");
    char *req[] = {"train.steps=7", "train.betas=0.5,0.6"};
    expect_ok(BASE_MODEL BASE_DATA, 2, req, &c);
    T_CHECK(c.train.steps == 7 && c.train.betas[0] == 0.5f, "required key from --set");

    // switching to a loaded model by --set (the file has no shape)
    char *hf[] = {"model.init=hf:/models/tiny"};
    expect_ok(BASE_DATA "train:\n  steps: 5\n", 1, hf, &c);
    T_CHECK(strcmp(c.model.init, "hf:/models/tiny") == 0 && c.model.dim == 0, "hf init");
    LlamaConfig lc;
    T_CHECK(job_llama_config(&c, &lc) == -1 && strstr(ps_err_msg(), "hf:/models/tiny"),
            "llama config of hf init");
    char *y = job_to_yaml(&c);
    T_CHECK(!strstr(y, "dim:") && !strstr(y, "rope_theta"), "hf YAML has no shape keys:\n%s", y);
    free(y);
    check_round_trip(&c, "hf init");

    // bad overrides name the --set option and the key
    char *b1[] = {"train.lr_max=1"};
    expect_err(BASE, 1, b1, "--set train.lr_max=1: unknown key 'train.lr_max'",
               "did you mean 'train.lr'", NULL, 0);
    char *b2[] = {"train.steps=abc"};
    expect_err(BASE, 1, b2, "--set train.steps=abc: train.steps: expected an integer, got 'abc'",
               NULL, NULL, 0);
    char *b3[] = {"train.steps"};
    expect_err(BASE, 1, b3, "--set train.steps: expected section.key=value", NULL, NULL, 0);
    char *b4[] = {"train=5"};
    expect_err(BASE, 1, b4, "--set train=5: 'train' is a section", NULL, NULL, 0);
    char *b5[] = {"train.lr=1e-3", "train.steps=0"};
    expect_err(BASE, 2, b5, "--set train.steps=0: train.steps must be >= 1", NULL, NULL, 0);
    char *b6[] = {"train.betas=[0.9]"};
    expect_err(BASE, 1, b6, "--set train.betas=[0.9]: train.betas", "got 1 element", NULL, 0);
    char *b7[] = {"model.dim=64", "model.init=hf:x"};
    expect_err(BASE, 2, b7, "--set model.dim=64: model.dim is set but model.init is 'hf:x'", NULL,
               NULL, 0);
    char *b8[] = {"model.init=hf:x"};
    expect_err(BASE, 1, b8, "model.dim is set but model.init is 'hf:x'", NULL, NULL, 2);

    // the standalone API
    JobConfig d;
    job_set_defaults(&d);
    T_CHECK(job_apply_override(&d, "train.clip=0") == 0 && d.train.clip == 0.0f, "clip=0");
    T_CHECK(job_apply_override(&d, "share.x=1") == -1 &&
                strstr(ps_err_msg(), "--set share.x=1: unknown key 'share.x'"),
            "standalone unknown: %s", ps_err_msg());
    T_CHECK(job_apply_override(&d, "data.shuffle=2") == -1 &&
                strstr(ps_err_msg(), "data.shuffle: expected a boolean"),
            "standalone bool: %s", ps_err_msg());
    char longv[2000];
    memset(longv, 'a', sizeof longv);
    memcpy(longv, "run.name=", 9);
    longv[sizeof longv - 1] = 0;
    T_CHECK(job_apply_override(&d, longv) == -1 && strstr(ps_err_msg(), "too long"), "long: %s",
            ps_err_msg());
}

static void test_round_trip_strings(void) {
    // strings that plain YAML would misread must survive job_to_yaml
    JobConfig c;
    char *ov[] = {"run.name=we\"ird\\ name: #1",  "data.train=*.bin",   "data.val=[x]",
                  "run.out_dir=/tmp/a b/ü",        "data.tokenizer=llama2c:tok.bin",
                  "train.lr=0.000123456789",      "model.norm_eps=1e-6", "train.betas=[0, 0.999]",
                  "train.weight_decay=0",          "run.seed=0",          "model.rope_theta=500000"};
    expect_ok(BASE, 11, ov, &c);
    T_CHECK(strcmp(c.run.name, "we\"ird\\ name: #1") == 0, "%s", c.run.name);
    check_round_trip(&c, "strings");

    // every float spelling reads back to the same float
    const char *vals[] = {"3e-4", "1.0e-05", "0.1", "1", "123456.7", "6.02e23", "1e-38"};
    for (int i = 0; i < 7; i++) {
        char a[64];
        snprintf(a, sizeof a, "train.weight_decay=%s", vals[i]);
        char *o[] = {a};
        expect_ok(BASE, 1, o, &c);
        check_round_trip(&c, vals[i]);
    }
}

// The share section (PostShare): list-valued targets, checks, activation.
static void test_share_section(void) {
    JobConfig c;
    expect_ok(BASE "share:\n  ratio: 0.3\n  reg:\n    type: js\n    weight: 1.5\n"
                   "    targets: [q, k, o]\n",
              0, NULL, &c);
    T_CHECK(job_share_active(&c), "ratio 0.3 activates sharing");
    T_CHECK(strcmp(c.share.reg_targets, "q,k,o") == 0, "targets list joined: '%s'",
            c.share.reg_targets);
    T_CHECK(strcmp(c.share.reg_type, "js") == 0 && c.share.reg_weight == 1.5f &&
                c.share.lm_weight == 0.5f && c.share.apply_after == 1,
            "share values and defaults");
    check_round_trip(&c, "share section");
    expect_ok(BASE, 0, NULL, &c);
    T_CHECK(!job_share_active(&c), "no share section: inactive");
    expect_err(BASE "share:\n  ratio: 0.3\n  reg:\n    targets: [q, x]\n", 0, NULL,
               "share.reg.targets", "'x'", NULL, 18);
    expect_err(BASE "share:\n  ratio: 0.3\n  reg:\n    type: l1\n", 0, NULL, "share.reg.type",
               "l1", NULL, 18);
    expect_err(BASE "share:\n  ratio: 1.5\n", 0, NULL, "share.ratio", NULL, NULL, 16);
    expect_err(BASE "share:\n  ratio: 0.3\n  lm_weight: 0\n  reg:\n    weight: 0\n", 0, NULL,
               "nothing to train", NULL, NULL, 17);
    char *ov[] = {"share.reg.targets=v,o", "share.ratio=0.1"};
    expect_ok(BASE, 2, ov, &c);
    T_CHECK(strcmp(c.share.reg_targets, "v,o") == 0 && job_share_active(&c), "share overrides");
}

int main(void) {
    test_share_section();
    snprintf(g_dir, sizeof g_dir, "/tmp/ps_test_job_XXXXXX");
    CHECK(mkdtemp(g_dir), "mkdtemp failed");
    test_shipped_configs();
    test_defaults();
    test_errors();
    test_overrides();
    test_round_trip_strings();
    // clean up the temp files
    for (int i = 0; i < 1000; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/cfg%d.yaml", g_dir, i);
        if (unlink(p) != 0) break;
    }
    rmdir(g_dir);
    return t_summary();
}
