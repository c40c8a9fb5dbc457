// test_hostile.c: hostile and damaged inputs (issue 12), one section per class of
// bug found by fuzzing: each input here once crashed, hung, allocated absurdly or
// was silently accepted, and must now fail with a message naming the file and the
// problem. (tests/fuzz/ holds the fuzz harnesses and their regression corpora.)
#define _XOPEN_SOURCE 700  // mkdtemp
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include "common.h"
#include "hf_io.h"
#include "job.h"
#include "params.h"
#include "safetensors.h"
#include "share.h"
#include "test.h"
#include "tokenizer.h"

static char g_tmp[4096];

// g_tmp/rel; the last 8 results stay valid
static const char *tpath(const char *rel) {
    static char *ring[8];
    static int k;
    k = (k + 1) % 8;
    free(ring[k]);
    return ring[k] = ps_path_join(g_tmp, rel);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    CHECK(ps_write_file_atomic(path, data, n) == 0, "%s", ps_err_msg());
}

static void write_text(const char *path, const char *s) {
    write_bytes(path, s, strlen(s));
}

// A config.json with the given extra members (a JSON fragment ending in ", " or "").
static const char *CFG_HEAD =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", ";
static char *config_text(const char *dims) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s%s}", CFG_HEAD, dims);
    return buf;
}
#define SMALL_DIMS                                                                 \
    "\"hidden_size\": 8, \"intermediate_size\": 16, \"num_hidden_layers\": 2, "    \
    "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 16, " \
    "\"max_position_embeddings\": 32, \"tie_word_embeddings\": true"

// ---------------------------------------------------------------------------
// 1. integer overflow and absurd sizes in shape and count fields

static void test_shape_bounds(void) {
    LlamaConfig c;
    const char *p = tpath("big.json");
    // vocab_size 2^31-1 once asked for 412 GB before any weight was read
    write_text(p, config_text("\"hidden_size\": 8, \"intermediate_size\": 16, "
                              "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
                              "\"vocab_size\": 2147483647"));
    EXPECT_FAIL(hf_read_config(p, &c), p, "vocab_size", "maximum");
    write_text(p, config_text("\"hidden_size\": 8, \"intermediate_size\": 16, "
                              "\"num_hidden_layers\": 3000000, \"num_attention_heads\": 2, "
                              "\"vocab_size\": 16"));
    EXPECT_FAIL(hf_read_config(p, &c), p, "n_layers", "maximum");
    // each field within bounds, the product not: 1024 layers x 65536^2
    write_text(p, config_text("\"hidden_size\": 65536, \"intermediate_size\": 1048576, "
                              "\"num_hidden_layers\": 1024, \"num_attention_heads\": 1024, "
                              "\"vocab_size\": 16000000"));
    EXPECT_FAIL(hf_read_config(p, &c), p, "parameters", "maximum");

    // a plausible 7B-sized config beside a tiny model.safetensors: refused before the
    // 27 GB weights buffer is allocated, by the files' size
    const char *d = tpath("lying");
    CHECK(ps_mkdirs(d) == 0, "mkdir");
    write_text(tpath("lying/config.json"),
               config_text("\"hidden_size\": 4096, \"intermediate_size\": 11008, "
                           "\"num_hidden_layers\": 32, \"num_attention_heads\": 32, "
                           "\"vocab_size\": 32000"));
    const char hdr[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    uint8_t buf[8 + sizeof hdr - 1 + 4] = {0};
    buf[0] = sizeof hdr - 1;
    memcpy(buf + 8, hdr, sizeof hdr - 1);
    write_bytes(tpath("lying/model.safetensors"), buf, sizeof buf);
    HostWeights w;
    EXPECT_FAIL(hf_load(d, &w), "model.safetensors", "does not match");

    // a plan whose num_hidden_layers x num_key_value_heads overflowed int in share.c
    SharePlan plan;
    const char *big_plan =
        "{\"format\": \"postshare-share-plan\", \"version\": 1, \"model\": {\"hidden_size\": "
        "131072, \"num_hidden_layers\": 65536, \"num_attention_heads\": 65536, "
        "\"num_key_value_heads\": 65536, \"head_dim\": 2, \"intermediate_size\": 1, "
        "\"vocab_size\": 1, \"tie_word_embeddings\": true}}";
    EXPECT_FAIL(share_plan_parse(big_plan, "plan.json", &plan), "plan.json", "maximum");
}

// rope_theta beyond float range became inf
static void test_rope_theta(void) {
    LlamaConfig c;
    const char *p = tpath("rope.json");
    write_text(p, config_text(SMALL_DIMS ", \"rope_theta\": 1e39"));
    EXPECT_FAIL(hf_read_config(p, &c), p, "rope_theta");
    write_text(p, config_text(SMALL_DIMS
                              ", \"rope_scaling\": {\"rope_type\": \"default\", \"rope_theta\": "
                              "1e300}"));
    EXPECT_FAIL(hf_read_config(p, &c), p, "rope_theta");
    write_text(p, config_text(SMALL_DIMS ", \"rope_theta\": 500000.0"));
    T_CHECK(hf_read_config(p, &c) == 0 && c.rope_theta == 500000.0f, "%s", ps_err_msg());
}

// ---------------------------------------------------------------------------
// 6. JSON that cJSON accepts but Python would read differently (or not at all)

static void test_json_strict(void) {
    LlamaConfig c;
    const char *p = tpath("dup.json");
    // cJSON took the first hidden_size, Python and transformers take the last
    write_text(p, config_text(SMALL_DIMS ", \"hidden_size\": 16"));
    EXPECT_FAIL(hf_read_config(p, &c), p, "duplicate key", "'hidden_size'");
    write_text(p,
               "{\"model_type\": \"llama\", \"rope_scaling\": {\"type\": \"default\", "
               "\"type\": \"linear\"}, " SMALL_DIMS "}");
    EXPECT_FAIL(hf_read_config(p, &c), p, "duplicate key", "'type'", "rope_scaling");
    // a byte that is not UTF-8 inside a string
    write_text(p, config_text(SMALL_DIMS ", \"torch_dtype\": \"float\xff\""));
    EXPECT_FAIL(hf_read_config(p, &c), p, "invalid UTF-8");
    write_text(p, config_text(SMALL_DIMS ", \"\xc0\xafkey\": 1"));  // an overlong '/'
    EXPECT_FAIL(hf_read_config(p, &c), p, "invalid UTF-8");
    // junk after the object
    write_text(p, "{\"model_type\": \"llama\", " SMALL_DIMS "} {\"hidden_size\": 4}");
    EXPECT_FAIL(hf_read_config(p, &c), p, "unexpected text after");
    write_text(p, config_text(SMALL_DIMS ", \"name\": \"caf\xc3\xa9\""));  // valid UTF-8 is fine
    T_CHECK(hf_read_config(p, &c) == 0, "%s", ps_err_msg());

    // a plan: trailing junk, a duplicate entry key
    SharePlan plan;
    EXPECT_FAIL(share_plan_parse("{\"format\": \"x\"} trailing", "plan.json", &plan), "plan.json",
                "unexpected text after");
    EXPECT_FAIL(share_plan_parse("{\"format\": \"x\", \"format\": \"y\"}", "plan.json", &plan),
                "plan.json", "'format' appears twice");
}

// ---------------------------------------------------------------------------
// 2. fixed-size arrays fed by YAML lists (also the checkpoint's stored /config)

static const char *JOB =
    "model: {init: scratch, dim: 8, n_layers: 1, n_heads: 2, ffn_dim: 16, vocab_size: 16, "
    "max_seq_len: 8}\n"
    "data: {train: t.bin, val: v.bin, seq_len: 8, batch_size: 1}\n"
    "train: {steps: 1, lr: 0.001}\n";

static void test_yaml_lists(void) {
    JobConfig cfg;
    char yaml[4096];
    // 17 (and 40) items for the list key share.reg.targets read past items[16] on the stack
    for (int n = 17; n <= 40; n += 23) {
        int k = snprintf(yaml, sizeof yaml, "%sshare:\n  ratio: 0.25\n  reg:\n    targets: [", JOB);
        for (int i = 0; i < n; i++)
            k += snprintf(yaml + k, sizeof yaml - (size_t)k, "%sq", i ? "," : "");
        snprintf(yaml + k, sizeof yaml - (size_t)k, "]\n");
        EXPECT_FAIL(job_load_string(yaml, "ckpt-00000010.h5:/config", 0, NULL, &cfg),
                    "ckpt-00000010.h5:/config", "share.reg.targets", "at most 16");
    }
    snprintf(yaml, sizeof yaml, "%sshare: {ratio: 0.25, reg: {targets: [q, k]}}\n", JOB);
    T_CHECK(job_load_string(yaml, "job.yaml", 0, NULL, &cfg) == 0, "%s", ps_err_msg());
    T_CHECK(strcmp(cfg.share.reg_targets, "q,k") == 0, "%s", cfg.share.reg_targets);
    // --set with more items than any list holds
    char *set[] = {"train.betas=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]"};
    EXPECT_FAIL(job_load_string(JOB, "job.yaml", 1, set, &cfg), "train.betas", "more than 16");
}

// ---------------------------------------------------------------------------
// 3. quadratic work: deep YAML nesting: a sharded index with very many entries

static void test_yaml_depth(void) {
    // 40,000 levels took 53 s inside libyaml; now refused at level 33
    int depth = 40000;
    size_t cap = (size_t)depth * 2 + 64;
    char *y = xmalloc(cap);
    size_t n = (size_t)snprintf(y, cap, "train: ");
    for (int i = 0; i < depth; i++) y[n++] = '[';
    for (int i = 0; i < depth; i++) y[n++] = ']';
    y[n] = 0;
    JobConfig cfg;
    double t0 = ps_now();
    EXPECT_FAIL(job_load_string(y, "deep.yaml", 0, NULL, &cfg), "deep.yaml", "nested deeper");
    T_CHECK(ps_now() - t0 < 2, "took %.1f s", ps_now() - t0);
    // the sweep command reads its section with this check first
    EXPECT_FAIL(job_yaml_shape_ok(y, "sweep.yaml"), "sweep.yaml", "nested deeper");
    free(y);
}

// ... and a sharded index with very many entries
static void test_index_bound(void) {
    const char *d = tpath("sharded");
    CHECK(ps_mkdirs(d) == 0, "mkdir");
    write_text(tpath("sharded/config.json"), config_text(SMALL_DIMS));
    write_text(tpath("sharded/a.safetensors"), "");
    // 30,000 entries took 146 s of pairwise string compares; now refused by count
    size_t cap = 30000 * 40 + 64, n = 0;
    char *ix = xmalloc(cap);
    n += (size_t)snprintf(ix + n, cap - n, "{\"weight_map\": {");
    for (int i = 0; i < 30000; i++)
        n += (size_t)snprintf(ix + n, cap - n, "%s\"t%d\": \"a.safetensors\"", i ? "," : "", i);
    snprintf(ix + n, cap - n, "}}");
    write_text(tpath("sharded/model.safetensors.index.json"), ix);
    free(ix);
    HostWeights w;
    double t0 = ps_now();
    EXPECT_FAIL(hf_load(d, &w), "model.safetensors.index.json", "weight_map lists 30000");
    T_CHECK(ps_now() - t0 < 5, "took %.1f s", ps_now() - t0);
}

// ---------------------------------------------------------------------------
// 4. tokenizer files

typedef struct {
    uint8_t b[4096];
    size_t n;
} Pbw;

static void pb_varint(Pbw *w, uint64_t v) {
    do {
        w->b[w->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}

static void pb_bytes(Pbw *w, int field, const void *p, size_t n) {
    pb_varint(w, (uint64_t)field << 3 | 2);
    pb_varint(w, n);
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

// A sentencepiece BPE .model: pieces (text, score, type), unk_id given (-1: none).
static void write_spm(const char *path, int n, const char *const *text, const float *score,
                      const int *type, int unk_id) {
    Pbw m = {.n = 0};
    for (int i = 0; i < n; i++) {
        Pbw p = {.n = 0};
        pb_bytes(&p, 1, text[i], strlen(text[i]));
        pb_varint(&p, 2 << 3 | 5);
        memcpy(p.b + p.n, &score[i], 4);
        p.n += 4;
        pb_varint(&p, 3 << 3 | 0);
        pb_varint(&p, (uint64_t)type[i]);
        pb_bytes(&m, 1, p.b, p.n);
    }
    Pbw ts = {.n = 0};
    pb_varint(&ts, 3 << 3 | 0);
    pb_varint(&ts, 2);  // BPE
    pb_varint(&ts, 40 << 3 | 0);
    pb_varint(&ts, (uint64_t)(int64_t)unk_id);
    pb_bytes(&m, 2, ts.b, ts.n);
    write_bytes(path, m.b, m.n);
}

// A llama2.c tokenizer.bin.
static void write_tokbin(const char *path, int n, const char *const *text, const float *score) {
    Pbw w = {.n = 0};
    int32_t max = 16;
    memcpy(w.b, &max, 4);
    w.n = 4;
    for (int i = 0; i < n; i++) {
        int32_t l = (int32_t)strlen(text[i]);
        memcpy(w.b + w.n, &score[i], 4);
        memcpy(w.b + w.n + 4, &l, 4);
        memcpy(w.b + w.n + 8, text[i], (size_t)l);
        w.n += 8 + (size_t)l;
    }
    write_bytes(path, w.b, w.n);
}

static void test_tokenizers(void) {
    const char *p = tpath("t.model");
    const char *text[] = {"<unk>", "<s>", "</s>", "<0xZZ>", "a", "b", "ab"};
    float score[] = {0, 0, 0, 0, -1, -2, -0.5f};
    int type[] = {2, 3, 3, 6, 1, 1, 1};
    // a BYTE piece whose text is not <0xHH>: decoding it read bytes[-1]
    write_spm(p, 7, text, score, type, 0);
    T_CHECK(tok_open(p) == NULL, "BYTE piece <0xZZ> accepted");
    EXPECT_FAIL(-1, p, "piece 3", "typed BYTE", "<0xHH>");
    // no <unk> and no byte pieces: the encoder emitted id -1 for 'c'
    type[3] = 1;
    write_spm(p, 7, text, score, type, -1);
    T_CHECK(tok_open(p) == NULL, "a vocabulary without <unk> or byte pieces accepted");
    EXPECT_FAIL(-1, p, "no <unk>", "<0x00>");
    // with <unk> but only some byte pieces: text no piece covers gives <unk>, never -1
    const char *text2[] = {"<unk>", "<s>", "</s>", "<0x63>", "a", "b", "ab"};
    type[3] = 6;
    write_spm(p, 7, text2, score, type, 0);
    Tokenizer *t = tok_open(p);
    T_CHECK(t != NULL, "%s", ps_err_msg());
    if (t) {
        size_t n;
        int *ids = tok_encode(t, "abcd", 4, 0, &n);
        int ok = n > 0;
        for (size_t i = 0; i < n; i++) ok &= ids[i] >= 0 && ids[i] < t->vocab_size;
        T_CHECK(ok, "an id outside the vocabulary for 'abcd'");
        free(ids);
        tok_free(t);
    }
    // NaN scores changed the merge order silently
    score[6] = NAN;
    write_spm(p, 7, text2, score, type, 0);
    T_CHECK(tok_open(p) == NULL, "NaN score accepted");
    EXPECT_FAIL(-1, p, "piece 6", "NaN score");
    const char *b = tpath("tok.bin");
    write_tokbin(b, 7, text2, score);
    T_CHECK(tok_open(b) == NULL, "NaN score accepted in tokenizer.bin");
    EXPECT_FAIL(-1, b, "piece 6", "NaN score");
}

// ---------------------------------------------------------------------------
// 5. and 6. for checkpoints (damage, a full disk, NaN or out-of-range state) are in
// test_checkpoint.c (test_ckpt_state, test_ckpt_disk_full, test_bitflip_sweep).

// ---------------------------------------------------------------------------
// 7. a failed final save leaves the previous model/ export intact

static void test_export_swap(void) {
    const char *dir = tpath("export");
    HostWeights a;
    LlamaConfig cfg = {.dim = 8,
                       .n_layers = 2,
                       .n_heads = 2,
                       .n_kv_heads = 1,
                       .ffn_dim = 16,
                       .vocab_size = 16,
                       .max_seq_len = 8,
                       .rope_theta = 10000.0f,
                       .norm_eps = 1e-5f,
                       .tie_embeddings = 1};
    param_table_build(&a.t, &cfg);
    a.params = xmalloc(sizeof(float) * a.t.total);
    param_init_random(&a.t, a.params, 7, 0.1f);
    T_CHECK(hf_save(dir, &a, "float32") == 0, "%s", ps_err_msg());
    char notes[4300];
    snprintf(notes, sizeof notes, "%s/notes.txt", dir);
    write_text(notes, "a file the user put here");
    float first = a.params[0];
    a.params[0] = first + 1;
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {  // the disk fills during the save of the next export
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        exit(hf_save(dir, &a, "float32") == -1 ? 0 : 2);
    }
    int st;
    waitpid(pid, &st, 0);
    T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the failing save: status %d", st);
    HostWeights w;
    T_CHECK(hf_load(dir, &w) == 0 && w.params[0] == first,
            "the previous export is gone after a failed save: %s", ps_err_msg());
    if (w.params) host_weights_free(&w);
    // a save that succeeds replaces it, keeps the user's file, leaves nothing beside it
    T_CHECK(hf_save(dir, &a, "float32") == 0, "%s", ps_err_msg());
    T_CHECK(hf_load(dir, &w) == 0 && w.params[0] == first + 1, "%s", ps_err_msg());
    if (w.params) host_weights_free(&w);
    T_CHECK(access(notes, F_OK) == 0, "the user's file was dropped");
    char side[4300];
    snprintf(side, sizeof side, "%s.tmp.%d", dir, (int)pid);
    T_CHECK(access(side, F_OK) != 0, "%s left behind", side);
    snprintf(side, sizeof side, "%s.old.%d", dir, (int)getpid());
    T_CHECK(access(side, F_OK) != 0, "%s left behind", side);
    host_weights_free(&a);
}

// Every section; `test_hostile NAME` runs one (to check each against an old build).
static const struct {
    const char *name;
    void (*fn)(void);
} TESTS[] = {{"shape_bounds", test_shape_bounds}, {"rope_theta", test_rope_theta},
             {"json_strict", test_json_strict},   {"yaml_lists", test_yaml_lists},
             {"yaml_depth", test_yaml_depth},     {"index_bound", test_index_bound},
             {"tokenizers", test_tokenizers},     {"export_swap", test_export_swap}};

int main(int argc, char **argv) {
    snprintf(g_tmp, sizeof g_tmp, "%s/test_hostile_XXXXXX", PS_BINARY_DIR);
    CHECK(mkdtemp(g_tmp), "mkdtemp %s", g_tmp);
    for (size_t i = 0; i < sizeof TESTS / sizeof TESTS[0]; i++)
        if (argc < 2 || !strcmp(argv[1], TESTS[i].name)) TESTS[i].fn();
    int rc = t_summary();
    if (rc == 0)
        ps_remove_tree(g_tmp);
    else
        fprintf(stderr, "test files kept in %s\n", g_tmp);
    return rc;
}
