// test_hf_io.c: safetensors reader/writer, HF directory import/export and the
// llama2.c loader: round trips (f32 exact, bf16/f16 within rounding), sharded
// checkpoints, and one test per kind of bad input, each checking that loading
// fails with a message naming the file and the problem.
#define _XOPEN_SOURCE 700
#include <cjson/cJSON.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <unistd.h>

#include "common.h"
#include "hf_io.h"
#include "modelsrc.h"
#include "llama2c.h"
#include "params.h"
#include "safetensors.h"
#include "test.h"

// ---------------------------------------------------------------------------
// helpers

static char g_tmp[4096];  // this run's scratch directory

static char *tpath(const char *rel) {
    static char buf[8][4200];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmp, rel);
    return buf[k];
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = xfopen(path, "wb");
    CHECK(fwrite(data, 1, n, f) == n, "write %s", path);
    fclose(f);
}

static void write_text(const char *path, const char *s) {
    write_bytes(path, s, strlen(s));
}

// A safetensors file from a literal header and data section.
static void write_raw_st(const char *path, const char *header, const void *data, size_t n) {
    size_t hl = strlen(header);
    uint8_t *buf = xmalloc(8 + hl + n);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (n) memcpy(buf + 8 + hl, data, n);
    write_bytes(path, buf, 8 + hl + n);
    free(buf);
}

static LlamaConfig small_cfg(int tied) {
    LlamaConfig c = {.dim = 32,
                     .n_layers = 2,
                     .n_heads = 4,
                     .n_kv_heads = 2,
                     .ffn_dim = 48,
                     .vocab_size = 40,
                     .max_seq_len = 64,
                     .rope_theta = 10000.0f,
                     .norm_eps = 1e-5f,
                     .tie_embeddings = tied};
    return c;
}

// Random model; the norms get noise too so that a swapped norm would show.
static void make_model(HostWeights *w, const LlamaConfig *c, uint64_t seed) {
    param_table_build(&w->t, c);
    w->params = xmalloc(sizeof(float) * w->t.total);
    param_init_random(&w->t, w->params, seed, 0.5f);
    Rng r;
    rng_seed(&r, seed + 1);
    for (size_t i = 0; i < w->t.total; i++) w->params[i] += 0.01f * rng_normal(&r);
}

static int cfg_equal(const LlamaConfig *a, const LlamaConfig *b) {
    return a->dim == b->dim && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads && a->ffn_dim == b->ffn_dim &&
           a->vocab_size == b->vocab_size && a->max_seq_len == b->max_seq_len &&
           a->rope_theta == b->rope_theta && a->norm_eps == b->norm_eps &&
           a->tie_embeddings == b->tie_embeddings && cfg_head_dim(a) == cfg_head_dim(b) &&
           a->rope_type == b->rope_type && a->rope_factor == b->rope_factor &&
           a->rope_low_freq_factor == b->rope_low_freq_factor &&
           a->rope_high_freq_factor == b->rope_high_freq_factor &&
           a->rope_orig_max_pos == b->rope_orig_max_pos;
}

typedef float (*RoundFn)(float);
static float round_none(float x) {
    return x;
}
static float round_bf16(float x) {
    return bf16_to_f32(f32_to_bf16(x));
}
static float round_f16(float x) {
    return f16_to_f32(f32_to_f16(x));
}

// Number of elements of b that differ from round(a).
static size_t count_diff(const HostWeights *a, const HostWeights *b, RoundFn rf) {
    if (a->t.total != b->t.total) return (size_t)-1;
    size_t bad = 0;
    for (size_t i = 0; i < a->t.total; i++)
        if (rf(a->params[i]) != b->params[i]) bad++;
    return bad;
}

// The table's tensors as write descriptors (fp32 source), for hand-made files.
// Make dir with a good config.json + model.safetensors for w.
static char *good_dir(const char *name, const HostWeights *w) {
    char *d = tpath(name);
    CHECK(hf_save(d, w, "float32") == 0, "%s", ps_err_msg());
    return d;
}

// Replace model.safetensors in dir by the given tensors.
static void rewrite_weights(const char *dir, int n, const StWriteTensor *wt) {
    char *p = ps_path_join(dir, "model.safetensors");
    CHECK(st_write(p, n, wt) == 0, "%s", ps_err_msg());
    free(p);
}

// Set (or with v == NULL delete) one key of dir/config.json.
static void edit_config(const char *dir, const char *key, cJSON *v) {
    char *p = ps_path_join(dir, "config.json");
    size_t n;
    char *txt = ps_read_file(p, &n);
    CHECK(txt, "%s", ps_err_msg());
    cJSON *root = cJSON_Parse(txt);
    CHECK(root, "parse");
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    if (v) cJSON_AddItemToObject(root, key, v);
    char *out = cJSON_Print(root);
    write_text(p, out);
    free(out);
    cJSON_Delete(root);
    free(txt);
    free(p);
}

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

// ---------------------------------------------------------------------------
// safetensors

static void test_st_roundtrip(void) {
    float a[6] = {1, -2, 3.5f, 1e-3f, -7, 0.25f};
    uint16_t b[4], h[3];
    float bsrc[4] = {1.0f, -0.5f, 3.140625f, 65280.0f}, hsrc[3] = {0.5f, -2.0f, 1024.0f};
    for (int i = 0; i < 4; i++) b[i] = f32_to_bf16(bsrc[i]);
    for (int i = 0; i < 3; i++) h[i] = f32_to_f16(hsrc[i]);
    int32_t i32[4] = {1, -2, 2147483647, 5};
    int64_t i64[3] = {7, -9, 123456789};
    float scalar = 42.0f;
    float conv[5] = {1.0f, 1.00390625f, -3.3f, 1e-8f, 70000.0f};
    StWriteTensor wt[] = {
        {.name = "a", .dtype = ST_F32, .ndim = 2, .shape = {2, 3}, .data = a},
        {.name = "b.bf16", .dtype = ST_BF16, .ndim = 1, .shape = {4}, .data = b},
        {.name = "h", .dtype = ST_F16, .ndim = 1, .shape = {3}, .data = h},
        {.name = "ints", .dtype = ST_I32, .ndim = 2, .shape = {2, 2}, .data = i32},
        {.name = "longs", .dtype = ST_I64, .ndim = 1, .shape = {3}, .data = i64},
        {.name = "scalar", .dtype = ST_F32, .ndim = 0, .data = &scalar},
        {.name = "conv_bf16", .dtype = ST_BF16, .ndim = 1, .shape = {5}, .f32 = conv},
        {.name = "conv_f16", .dtype = ST_F16, .ndim = 1, .shape = {5}, .f32 = conv},
        {.name = "empty", .dtype = ST_F32, .ndim = 2, .shape = {0, 4}},
    };
    int n = (int)(sizeof wt / sizeof wt[0]);
    const char *p = tpath("basic.safetensors");
    T_CHECK(st_write(p, n, wt) == 0, "st_write: %s", ps_err_msg());
    T_CHECK(count_tmp_files(g_tmp) == 0, "temp file left behind");

    // header: 8-byte aligned, with the metadata
    size_t len;
    char *raw = ps_read_file(p, &len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (uint8_t)raw[i];
    T_CHECK(hl % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hl);
    T_CHECK(strstr(raw + 8, "\"__metadata__\":{\"format\":\"pt\"}") != NULL, "metadata");
    free(raw);

    StFile f;
    T_CHECK(st_open(p, &f) == 0, "st_open: %s", ps_err_msg());
    T_CHECK(f.n == n, "n=%d", f.n);
    for (int i = 0; i < f.n && i < n; i++)
        T_CHECK(strcmp(f.t[i].name, wt[i].name) == 0, "order: %s", f.t[i].name);
    const StTensor *t = st_find(&f, "a");
    T_CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3,
            "a meta");
    float out[8];
    T_CHECK(t && st_read_f32(&f, t, out) == 0 && memcmp(out, a, sizeof a) == 0, "a data");
    t = st_find(&f, "b.bf16");
    T_CHECK(t && t->dtype == ST_BF16 && st_read_f32(&f, t, out) == 0, "b");
    for (int i = 0; i < 4; i++) T_CHECK(out[i] == bsrc[i], "bf16[%d]=%g", i, out[i]);
    t = st_find(&f, "h");
    T_CHECK(t && t->dtype == ST_F16 && st_read_f32(&f, t, out) == 0, "h");
    for (int i = 0; i < 3; i++) T_CHECK(out[i] == hsrc[i], "f16[%d]=%g", i, out[i]);
    int32_t io[4];
    t = st_find(&f, "ints");
    T_CHECK(t && st_read_i32(&f, t, io) == 0 && memcmp(io, i32, sizeof i32) == 0, "i32");
    t = st_find(&f, "longs");
    T_CHECK(t && st_read_i32(&f, t, io) == 0 && io[0] == 7 && io[1] == -9 && io[2] == 123456789,
            "i64");
    t = st_find(&f, "scalar");
    T_CHECK(
        t && t->ndim == 0 && st_numel(t) == 1 && st_read_f32(&f, t, out) == 0 && out[0] == 42.0f,
        "scalar");
    t = st_find(&f, "conv_bf16");
    T_CHECK(t && st_read_f32(&f, t, out) == 0, "conv_bf16");
    for (int i = 0; i < 5; i++) T_CHECK(out[i] == round_bf16(conv[i]), "conv_bf16[%d]", i);
    t = st_find(&f, "conv_f16");
    T_CHECK(t && st_read_f32(&f, t, out) == 0, "conv_f16");
    for (int i = 0; i < 5; i++) T_CHECK(out[i] == round_f16(conv[i]), "conv_f16[%d]", i);
    t = st_find(&f, "empty");
    T_CHECK(t && st_numel(t) == 0 && t->begin == t->end, "empty tensor");
    T_CHECK(st_find(&f, "nope") == NULL, "find missing");
    // wrong-kind reads
    EXPECT_FAIL(st_read_f32(&f, st_find(&f, "ints"), out), "ints", "I32", p);
    EXPECT_FAIL(st_read_i32(&f, st_find(&f, "a"), io), "'a'", "F32", p);
    st_close(&f);

    // I64 that does not fit int32
    int64_t big[1] = {(int64_t)1 << 40};
    StWriteTensor wb = {.name = "big", .dtype = ST_I64, .ndim = 1, .shape = {1}, .data = big};
    p = tpath("big.safetensors");
    T_CHECK(st_write(p, 1, &wb) == 0, "%s", ps_err_msg());
    T_CHECK(st_open(p, &f) == 0, "%s", ps_err_msg());
    EXPECT_FAIL(st_read_i32(&f, &f.t[0], io), "big", "int32");
    st_close(&f);

    // writer refuses bad requests and leaves nothing behind
    StWriteTensor dup[2] = {wt[0], wt[0]};
    EXPECT_FAIL(st_write(tpath("dup.safetensors"), 2, dup), "given twice");
    T_CHECK(access(tpath("dup.safetensors"), F_OK) != 0, "no file after refused write");
}

static void test_st_bad_headers(void) {
    StFile f;
    float d[4] = {1, 2, 3, 4};
    const char *p;

    p = tpath("tiny.safetensors");
    write_bytes(p, "abc", 3);
    EXPECT_FAIL(st_open(p, &f), p, "too small");

    p = tpath("hlen.safetensors");
    {
        uint8_t buf[16] = {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'};  // claims 1000 bytes
        write_bytes(p, buf, 10);
    }
    EXPECT_FAIL(st_open(p, &f), p, "header length 1000", "larger than the file");

    p = tpath("notjson.safetensors");
    write_raw_st(p, "{\"a\": {\"dtype\": \"F32\", ", d, 8);
    EXPECT_FAIL(st_open(p, &f), p, "not valid JSON");

    p = tpath("garbage_tail.safetensors");
    write_raw_st(p, "{} xyz", NULL, 0);
    EXPECT_FAIL(st_open(p, &f), p, "not valid JSON");

    p = tpath("array.safetensors");
    write_raw_st(p, "[1, 2]  ", NULL, 0);
    EXPECT_FAIL(st_open(p, &f), p, "not a JSON object");

    // header lies about offsets: begin > end
    p = tpath("order.safetensors");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", d, 8);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "out of order");

    // ... end beyond the data section (shape and span agree, the data is short)
    p = tpath("beyond.safetensors");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", d, 8);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "beyond the data section");

    // ... span that does not match shape x dtype
    p = tpath("span.safetensors");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", d, 16);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "needs 12 bytes", "lies about offsets");

    // ... BF16 span computed as if F32
    p = tpath("span_bf16.safetensors");
    write_raw_st(p, "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,16]}}", d, 16);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "needs 8 bytes");

    // ... two tensors sharing bytes
    p = tpath("overlap.safetensors");
    write_raw_st(p,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                 d, 16);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "'b'", "overlap");

    // ... negative and fractional offsets
    p = tpath("negative.safetensors");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", d, 8);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "non-negative");
    p = tpath("fraction.safetensors");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.5]}}", d, 16);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "non-negative");

    // ... one offset only, no dtype, shape not an array, bad shape entry
    p = tpath("oneoff.safetensors");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", d, 8);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "data_offsets");
    p = tpath("nodtype.safetensors");
    write_raw_st(p, "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", d, 8);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "dtype");
    p = tpath("shapestr.safetensors");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", d, 8);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "shape");
    p = tpath("shapeneg.safetensors");
    write_raw_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", d, 8);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "shape entry 0");

    // duplicate names
    p = tpath("dupname.safetensors");
    write_raw_st(p,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                 d, 16);
    EXPECT_FAIL(st_open(p, &f), p, "'a'", "twice");

    // unsupported dtypes open fine but refuse a float read, naming the dtype
    uint8_t dd[18] = {0};  // two F64 then two I8
    double dv[2] = {1.0, 2.0};
    memcpy(dd, dv, sizeof dv);
    p = tpath("f64.safetensors");
    write_raw_st(p,
                 "{\"__metadata__\":{\"format\":\"pt\"},"
                 "\"x\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                 "\"y\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[16,18]}}",
                 dd, 18);
    T_CHECK(st_open(p, &f) == 0, "F64 file opens: %s", ps_err_msg());
    if (f.n == 2) {
        float out[2];
        T_CHECK(f.t[0].dtype == ST_OTHER && strcmp(f.t[0].dtype_str, "F64") == 0, "F64 dtype");
        EXPECT_FAIL(st_read_f32(&f, &f.t[0], out), p, "'x'", "F64");
        EXPECT_FAIL(st_read_f32(&f, &f.t[1], out), p, "'y'", "I8");
    }
    st_close(&f);

    // an empty model (metadata only) is valid
    p = tpath("empty.safetensors");
    write_raw_st(p, "{\"__metadata__\":{\"format\":\"pt\"}}      ", NULL, 0);
    T_CHECK(st_open(p, &f) == 0 && f.n == 0, "empty: %s", ps_err_msg());
    st_close(&f);

    p = tpath("does_not_exist.safetensors");
    EXPECT_FAIL(st_open(p, &f), p, "cannot open");
}

// ---------------------------------------------------------------------------
// HF directories

// An explicit head_dim (16, not dim / n_heads = 8) with llama3 RoPE: saved, read back
// the same, and config.json says head_dim 16.
static void test_head_dim_roundtrip(void) {
    LlamaConfig c = small_cfg(0);
    c.head_dim = 16;
    c.rope_type = ROPE_LLAMA3, c.rope_factor = 8.0f, c.rope_low_freq_factor = 1.0f;
    c.rope_high_freq_factor = 4.0f, c.rope_orig_max_pos = 32;
    HostWeights w, r;
    make_model(&w, &c, 11);
    T_CHECK(param_layer(&w.t, 0, P_WQ)->shape[0] == 64 &&
                param_layer(&w.t, 0, P_WO)->shape[1] == 64 &&
                param_layer(&w.t, 0, P_WK)->shape[0] == 32,
            "head_dim 16 shapes");
    const char *d = tpath("rt_head_dim");
    T_CHECK(hf_save(d, &w, "float32") == 0 && hf_load(d, &r) == 0, "head_dim save/load: %s",
            ps_err_msg());
    T_CHECK(r.t.e && cfg_equal(&c, &r.t.cfg) && count_diff(&w, &r, round_none) == 0,
            "head_dim round trip");
    size_t len;
    char *txt = ps_read_file(tpath("rt_head_dim/config.json"), &len);
    cJSON *root = cJSON_Parse(txt);
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    T_CHECK(cJSON_IsNumber(hd) && hd->valueint == 16, "config.json head_dim");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    T_CHECK(cJSON_IsString(ty) && !strcmp(ty->valuestring, "llama3"), "config.json rope_scaling");
    cJSON_Delete(root);
    free(txt);
    host_weights_free(&r);
    host_weights_free(&w);
}

static void test_roundtrip(int tied) {
    LlamaConfig c = small_cfg(tied);
    HostWeights w, r;
    make_model(&w, &c, 7 + (uint64_t)tied);
    char name[64];

    snprintf(name, sizeof name, "rt_f32_%d/sub", tied);  // nested: hf_save creates parents
    const char *d = tpath(name);
    T_CHECK(hf_save(d, &w, "float32") == 0, "hf_save f32: %s", ps_err_msg());
    T_CHECK(count_tmp_files(d) == 0, "temp files left in %s", d);
    T_CHECK(hf_load(d, &r) == 0, "hf_load f32: %s", ps_err_msg());
    T_CHECK(cfg_equal(&c, &r.t.cfg), "config round trip (tied=%d)", tied);
    T_CHECK(count_diff(&w, &r, round_none) == 0, "f32 round trip not exact (tied=%d)", tied);
    host_weights_free(&r);

    // lm_head.weight is written only for untied models
    StFile f;
    char *stp = ps_path_join(d, "model.safetensors");
    T_CHECK(st_open(stp, &f) == 0, "%s", ps_err_msg());
    T_CHECK((st_find(&f, "lm_head.weight") != NULL) == !tied, "lm_head presence (tied=%d)", tied);
    T_CHECK(f.n == w.t.n, "tensor count %d vs %d", f.n, w.t.n);
    st_close(&f);
    free(stp);

    // saving again over an existing export works (the old config is replaced)
    snprintf(name, sizeof name, "rt_bf16_%d", tied);
    d = tpath(name);
    T_CHECK(hf_save(d, &w, "float32") == 0, "%s", ps_err_msg());
    T_CHECK(hf_save(d, &w, "bfloat16") == 0, "hf_save bf16: %s", ps_err_msg());
    T_CHECK(hf_load(d, &r) == 0, "hf_load bf16: %s", ps_err_msg());
    T_CHECK(cfg_equal(&c, &r.t.cfg), "bf16 config");
    T_CHECK(count_diff(&w, &r, round_bf16) == 0, "bf16 round trip differs from bf16 rounding");
    T_CHECK(count_diff(&w, &r, round_none) > 0, "bf16 export should round");
    host_weights_free(&r);

    // config.json has what transformers needs
    LlamaConfig rc;
    char *cp = ps_path_join(d, "config.json");
    T_CHECK(hf_read_config(cp, &rc) == 0 && cfg_equal(&rc, &c), "%s", ps_err_msg());
    size_t n;
    char *txt = ps_read_file(cp, &n);
    T_CHECK(txt && strstr(txt, "\"LlamaForCausalLM\"") && strstr(txt, "\"bfloat16\"") &&
                strstr(txt, "\"rms_norm_eps\":\t1e-05") && strstr(txt, "\"head_dim\":\t8") &&
                strstr(txt, "\"rope_theta\":\t10000.0"),
            "config.json content:\n%s", txt);
    free(txt);
    free(cp);

    EXPECT_FAIL(hf_save(tpath("bad_dtype"), &w, "int8"), "int8");
    host_weights_free(&w);
}

static void test_f16_weights(void) {
    LlamaConfig c = small_cfg(0);
    HostWeights w, r;
    make_model(&w, &c, 11);
    const char *d = good_dir("f16", &w);
    StWriteTensor *wt = xcalloc((size_t)w.t.n, sizeof *wt);
    int n = hf_tensor_list(&w, ST_F16, wt);
    rewrite_weights(d, n, wt);
    T_CHECK(hf_load(d, &r) == 0, "f16 load: %s", ps_err_msg());
    T_CHECK(count_diff(&w, &r, round_f16) == 0, "f16 weights differ from f16 rounding");
    host_weights_free(&r);
    free(wt);
    host_weights_free(&w);
}

static void test_sharded(void) {
    LlamaConfig c = small_cfg(0);
    HostWeights w, r;
    make_model(&w, &c, 21);
    const char *src = good_dir("shard_src", &w);
    const char *d = tpath("sharded");
    T_CHECK(ps_mkdirs(d) == 0, "%s", ps_err_msg());
    char *cs = ps_path_join(src, "config.json"), *cd = ps_path_join(d, "config.json");
    size_t n;
    char *txt = ps_read_file(cs, &n);
    write_text(cd, txt);
    free(txt);

    // shard 1: the first 7 tensors (bf16); shard 2: the rest (f32) plus an
    // inv_freq buffer, which is listed in the index and ignored.
    StWriteTensor *wt = xcalloc((size_t)w.t.n + 1, sizeof *wt);
    int nt = hf_tensor_list(&w, ST_F32, wt);
    for (int i = 0; i < 7; i++) wt[i].dtype = ST_BF16;
    float inv[4] = {1, 0.1f, 0.01f, 0.001f};
    wt[nt] = (StWriteTensor){.name = "model.layers.0.self_attn.rotary_emb.inv_freq",
                             .dtype = ST_F32,
                             .ndim = 1,
                             .shape = {4},
                             .data = inv};
    const char *s1 = "model-00001-of-00002.safetensors", *s2 = "model-00002-of-00002.safetensors";
    char *p1 = ps_path_join(d, s1), *p2 = ps_path_join(d, s2);
    T_CHECK(st_write(p1, 7, wt) == 0, "%s", ps_err_msg());
    T_CHECK(st_write(p2, nt + 1 - 7, wt + 7) == 0, "%s", ps_err_msg());

    cJSON *idx = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(idx, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", 1234);
    cJSON *wm = cJSON_AddObjectToObject(idx, "weight_map");
    for (int i = 0; i <= nt; i++) cJSON_AddStringToObject(wm, wt[i].name, i < 7 ? s1 : s2);
    char *ip = ps_path_join(d, "model.safetensors.index.json");
    char *itxt = cJSON_Print(idx);
    write_text(ip, itxt);
    free(itxt);

    T_CHECK(hf_load(d, &r) == 0, "sharded load: %s", ps_err_msg());
    if (r.params) {
        size_t bad = 0;
        for (int i = 0; i < w.t.n; i++) {
            const ParamEntry *e = &w.t.e[i];
            for (size_t j = 0; j < e->numel; j++) {
                float want = w.params[e->offset + j];
                if (i < 7) want = round_bf16(want);
                if (r.params[e->offset + j] != want) bad++;
            }
        }
        T_CHECK(bad == 0, "sharded values differ: %zu", bad);
    }
    host_weights_free(&r);
    T_CHECK(model_load_any(d, &r) == 0, "model_load_any sharded: %s", ps_err_msg());
    host_weights_free(&r);

    // the index puts a tensor in the wrong shard
    cJSON_ReplaceItemInObjectCaseSensitive(wm, "model.norm.weight", cJSON_CreateString(s1));
    itxt = cJSON_Print(idx);
    write_text(ip, itxt);
    free(itxt);
    EXPECT_FAIL(hf_load(d, &r), p2, "model.norm.weight", s1);

    // the index names a shard that does not exist
    cJSON_ReplaceItemInObjectCaseSensitive(wm, "model.norm.weight",
                                           cJSON_CreateString("model-00003-of-00002.safetensors"));
    itxt = cJSON_Print(idx);
    write_text(ip, itxt);
    free(itxt);
    EXPECT_FAIL(hf_load(d, &r), ip, "model-00003-of-00002.safetensors", "does not exist");

    // a shard name escaping the folder
    cJSON_ReplaceItemInObjectCaseSensitive(wm, "model.norm.weight",
                                           cJSON_CreateString("../x.safetensors"));
    itxt = cJSON_Print(idx);
    write_text(ip, itxt);
    free(itxt);
    EXPECT_FAIL(hf_load(d, &r), ip, "model.norm.weight");

    // the index lists a tensor no shard holds
    cJSON_ReplaceItemInObjectCaseSensitive(wm, "model.norm.weight", cJSON_CreateString(s2));
    cJSON_AddStringToObject(wm, "model.ghost.weight", s2);
    itxt = cJSON_Print(idx);
    write_text(ip, itxt);
    free(itxt);
    EXPECT_FAIL(hf_load(d, &r), ip, "lists");

    // malformed index
    write_text(ip, "{\"weight_map\": ");
    EXPECT_FAIL(hf_load(d, &r), ip, "not valid JSON");

    cJSON_Delete(idx);
    free(ip);
    free(p1);
    free(p2);
    free(wt);
    free(cs);
    free(cd);
    host_weights_free(&w);
}

static void test_bad_weights(void) {
    LlamaConfig c = small_cfg(0);
    HostWeights w, r;
    make_model(&w, &c, 31);
    StWriteTensor *wt = xcalloc((size_t)w.t.n + 1, sizeof *wt);
    int nt;
    const char *d;
    char stp[4096];

    // missing tensor
    d = good_dir("missing", &w);
    snprintf(stp, sizeof stp, "%s/model.safetensors", d);
    nt = hf_tensor_list(&w, ST_F32, wt);
    int up = param_table_find(&w.t, "model.layers.1.mlp.up_proj.weight");
    memmove(&wt[up], &wt[up + 1], sizeof *wt * (size_t)(nt - up - 1));
    rewrite_weights(d, nt - 1, wt);
    EXPECT_FAIL(hf_load(d, &r), stp, "missing tensor", "model.layers.1.mlp.up_proj.weight",
                "[48, 32]");
    T_CHECK(r.params == NULL && r.t.e == NULL, "failed load leaves w empty");

    // wrong shape (same element count, transposed)
    d = good_dir("shape", &w);
    snprintf(stp, sizeof stp, "%s/model.safetensors", d);
    nt = hf_tensor_list(&w, ST_F32, wt);
    int k = param_table_find(&w.t, "model.layers.0.self_attn.k_proj.weight");
    wt[k].shape[0] = 32;
    wt[k].shape[1] = 16;
    rewrite_weights(d, nt, wt);
    EXPECT_FAIL(hf_load(d, &r), stp, "model.layers.0.self_attn.k_proj.weight", "[32, 16]",
                "expected [16, 32]");

    // wrong rank for a norm
    nt = hf_tensor_list(&w, ST_F32, wt);
    wt[w.t.final_norm].ndim = 2;
    wt[w.t.final_norm].shape[0] = 1;
    wt[w.t.final_norm].shape[1] = 32;
    rewrite_weights(d, nt, wt);
    EXPECT_FAIL(hf_load(d, &r), stp, "model.norm.weight", "[1, 32]", "expected [32]");

    // an unknown extra tensor
    d = good_dir("extra", &w);
    snprintf(stp, sizeof stp, "%s/model.safetensors", d);
    nt = hf_tensor_list(&w, ST_F32, wt);
    float bias[32] = {0};
    wt[nt] = (StWriteTensor){.name = "model.layers.0.self_attn.q_proj.bias",
                             .dtype = ST_F32,
                             .ndim = 1,
                             .shape = {32},
                             .data = bias};
    rewrite_weights(d, nt + 1, wt);
    EXPECT_FAIL(hf_load(d, &r), stp, "unexpected tensor", "model.layers.0.self_attn.q_proj.bias");

    // ... while inv_freq buffers are ignored
    wt[nt].name = "model.layers.1.self_attn.rotary_emb.inv_freq";
    wt[nt].shape[0] = 4;
    rewrite_weights(d, nt + 1, wt);
    T_CHECK(hf_load(d, &r) == 0, "inv_freq should be ignored: %s", ps_err_msg());
    T_CHECK(count_diff(&w, &r, round_none) == 0, "inv_freq load values");
    host_weights_free(&r);

    // unsupported dtype: one tensor stored as F64
    d = good_dir("f64", &w);
    snprintf(stp, sizeof stp, "%s/model.safetensors", d);
    nt = hf_tensor_list(&w, ST_F32, wt);
    const ParamEntry *on = &w.t.e[w.t.final_norm];
    double *dv = xmalloc(sizeof(double) * on->numel);
    for (size_t i = 0; i < on->numel; i++) dv[i] = w.params[on->offset + i];
    rewrite_weights(d, nt, wt);
    {  // st_write has no F64; splice it in by hand: header entry + data at the end
        StFile f;
        T_CHECK(st_open(stp, &f) == 0, "%s", ps_err_msg());
        // rebuild a header with the norm as F64 placed after every other tensor
        cJSON *h = cJSON_CreateObject();
        size_t off = 0;
        uint8_t *data = xmalloc(f.data_len + 8 * on->numel);
        for (int i = 0; i < f.n; i++) {
            const StTensor *t = &f.t[i];
            cJSON *e = cJSON_AddObjectToObject(h, t->name);
            int is_norm = strcmp(t->name, "model.norm.weight") == 0;
            cJSON_AddStringToObject(e, "dtype", is_norm ? "F64" : "F32");
            cJSON *s = cJSON_AddArrayToObject(e, "shape");
            for (int j = 0; j < t->ndim; j++)
                cJSON_AddItemToArray(s, cJSON_CreateNumber((double)t->shape[j]));
            size_t bytes = is_norm ? 8 * on->numel : t->end - t->begin;
            memcpy(data + off, is_norm ? (const void *)dv : (const void *)(f.data + t->begin),
                   bytes);
            cJSON *o = cJSON_AddArrayToObject(e, "data_offsets");
            cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
            cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + bytes)));
            off += bytes;
        }
        char *hs = cJSON_PrintUnformatted(h);
        st_close(&f);
        write_raw_st(stp, hs, data, off);
        free(hs);
        free(data);
        cJSON_Delete(h);
    }
    free(dv);
    EXPECT_FAIL(hf_load(d, &r), stp, "model.norm.weight", "F64");

    // truncated weights file: cut inside the data, then inside the header
    d = good_dir("trunc", &w);
    snprintf(stp, sizeof stp, "%s/model.safetensors", d);
    size_t len;
    char *buf = ps_read_file(stp, &len);
    write_bytes(stp, buf, len - 100);
    EXPECT_FAIL(hf_load(d, &r), stp, "truncated");
    write_bytes(stp, buf, 40);
    EXPECT_FAIL(hf_load(d, &r), stp, "truncated");
    free(buf);

    // a header that lies: move one tensor's end past the data section
    d = good_dir("lies", &w);
    snprintf(stp, sizeof stp, "%s/model.safetensors", d);
    write_raw_st(stp,
                 "{\"model.embed_tokens.weight\":{\"dtype\":\"F32\",\"shape\":[40,32],"
                 "\"data_offsets\":[0,5120]}}",
                 w.params, 1024);
    EXPECT_FAIL(hf_load(d, &r), stp, "model.embed_tokens.weight", "beyond the data section");

    // no weights at all / only a pytorch .bin
    d = good_dir("noweights", &w);
    snprintf(stp, sizeof stp, "%s/model.safetensors", d);
    remove(stp);
    EXPECT_FAIL(hf_load(d, &r), d, "no model.safetensors");
    snprintf(stp, sizeof stp, "%s/pytorch_model.bin", d);
    write_text(stp, "x");
    EXPECT_FAIL(hf_load(d, &r), d, "pytorch_model.bin");

    EXPECT_FAIL(hf_load(tpath("nonexistent_dir"), &r), "nonexistent_dir", "not a directory");
    d = tpath("noconfig");
    ps_mkdirs(d);
    EXPECT_FAIL(hf_load(d, &r), "noconfig/config.json", "missing config.json");

    free(wt);
    host_weights_free(&w);
}

static void test_tied_with_lm_head(void) {
    // A tied checkpoint that still carries lm_head.weight (some exporters do):
    // ignored, the embedding is the one source.
    LlamaConfig c = small_cfg(1);
    HostWeights w, r;
    make_model(&w, &c, 41);
    const char *d = good_dir("tied_lm_head", &w);
    StWriteTensor *wt = xcalloc((size_t)w.t.n + 1, sizeof *wt);
    int nt = hf_tensor_list(&w, ST_F32, wt);
    wt[nt] = wt[w.t.embed];
    wt[nt].name = "lm_head.weight";
    rewrite_weights(d, nt + 1, wt);
    T_CHECK(hf_load(d, &r) == 0, "tied + lm_head: %s", ps_err_msg());
    T_CHECK(count_diff(&w, &r, round_none) == 0, "tied + lm_head values");
    host_weights_free(&r);

    // an untied config needs lm_head.weight
    LlamaConfig cu = small_cfg(0);
    HostWeights wu;
    make_model(&wu, &cu, 42);
    d = good_dir("untied_no_head", &wu);
    nt = hf_tensor_list(&wu, ST_F32, wt);
    rewrite_weights(d, nt - 1, wt);  // lm_head is last in the table
    EXPECT_FAIL(hf_load(d, &r), "model.safetensors", "missing tensor", "lm_head.weight");
    host_weights_free(&wu);
    free(wt);
    host_weights_free(&w);
}

static void test_bad_config(void) {
    LlamaConfig c = small_cfg(0);
    HostWeights w, r;
    make_model(&w, &c, 51);
    char cp[4096];
    const char *d;

#define FRESH(name) (d = good_dir(name, &w), snprintf(cp, sizeof cp, "%s/config.json", d))

    FRESH("cfg_gpt2");
    edit_config(d, "model_type", cJSON_CreateString("gpt2"));
    edit_config(d, "architectures",
                cJSON_CreateStringArray((const char *[]){"GPT2LMHeadModel"}, 1));
    EXPECT_FAIL(hf_load(d, &r), cp, "unsupported architecture", "gpt2", "GPT2LMHeadModel");

    FRESH("cfg_mistral_arch");
    edit_config(d, "model_type", NULL);
    edit_config(d, "architectures",
                cJSON_CreateStringArray((const char *[]){"MistralForCausalLM"}, 1));
    EXPECT_FAIL(hf_load(d, &r), cp, "MistralForCausalLM");

    FRESH("cfg_no_arch");
    edit_config(d, "model_type", NULL);
    edit_config(d, "architectures", NULL);
    EXPECT_FAIL(hf_load(d, &r), cp, "LLaMA");

    FRESH("cfg_only_model_type");  // architectures absent: model_type "llama" suffices
    edit_config(d, "architectures", NULL);
    T_CHECK(hf_load(d, &r) == 0, "model_type only: %s", ps_err_msg());
    host_weights_free(&r);

    FRESH("cfg_malformed");
    write_text(cp, "{\"hidden_size\": 32, \"num_hidden_layers\": ");
    EXPECT_FAIL(hf_load(d, &r), cp, "not valid JSON");
    write_text(cp, "[1, 2, 3]");
    EXPECT_FAIL(hf_load(d, &r), cp, "not a JSON object");

    FRESH("cfg_missing_key");
    edit_config(d, "hidden_size", NULL);
    EXPECT_FAIL(hf_load(d, &r), cp, "hidden_size", "missing");

    FRESH("cfg_bad_value");
    edit_config(d, "num_attention_heads", cJSON_CreateString("4"));
    EXPECT_FAIL(hf_load(d, &r), cp, "num_attention_heads");
    FRESH("cfg_bad_heads");
    edit_config(d, "num_attention_heads", cJSON_CreateNumber(5));
    EXPECT_FAIL(hf_load(d, &r), cp, "n_heads");

    FRESH("cfg_rope_linear");  // transformers 4 style, old "type" key
    cJSON *rs = cJSON_CreateObject();
    cJSON_AddStringToObject(rs, "type", "linear");
    cJSON_AddNumberToObject(rs, "factor", 2.0);
    edit_config(d, "rope_scaling", rs);
    T_CHECK(hf_load(d, &r) == 0 && r.t.cfg.rope_type == ROPE_LINEAR && r.t.cfg.rope_factor == 2.0f,
            "rope_scaling linear: %s", ps_err_msg());
    host_weights_free(&r);

    const char *refused[] = {"dynamic", "yarn", "longrope", "su"};
    for (int i = 0; i < 4; i++) {
        FRESH("cfg_rope_refused");
        rs = cJSON_CreateObject();
        cJSON_AddStringToObject(rs, "rope_type", refused[i]);
        cJSON_AddNumberToObject(rs, "factor", 2.0);
        edit_config(d, i % 2 ? "rope_parameters" : "rope_scaling", rs);
        EXPECT_FAIL(hf_load(d, &r), cp, i % 2 ? "rope_parameters" : "rope_scaling", refused[i],
                    "not supported");
    }

    FRESH("cfg_rope_llama3_incomplete");
    rs = cJSON_CreateObject();
    cJSON_AddStringToObject(rs, "rope_type", "llama3");
    cJSON_AddNumberToObject(rs, "factor", 8.0);
    edit_config(d, "rope_parameters", rs);
    EXPECT_FAIL(hf_load(d, &r), cp, "rope_parameters.low_freq_factor", "missing");

    FRESH("cfg_rope_llama3_extra");
    rs = cJSON_CreateObject();
    cJSON_AddStringToObject(rs, "rope_type", "linear");
    cJSON_AddNumberToObject(rs, "factor", 8.0);
    cJSON_AddNumberToObject(rs, "low_freq_factor", 1.0);
    edit_config(d, "rope_scaling", rs);
    EXPECT_FAIL(hf_load(d, &r), cp, "\"low_freq_factor\"", "not supported");

    // transformers 5 style llama3 with rope_theta inside, and the same in rope_scaling
    FRESH("cfg_rope_llama3");
    rs = cJSON_CreateObject();
    cJSON_AddStringToObject(rs, "rope_type", "llama3");
    cJSON_AddNumberToObject(rs, "rope_theta", 500000.0);
    cJSON_AddNumberToObject(rs, "factor", 32.0);
    cJSON_AddNumberToObject(rs, "low_freq_factor", 1.0);
    cJSON_AddNumberToObject(rs, "high_freq_factor", 4.0);
    cJSON_AddNumberToObject(rs, "original_max_position_embeddings", 8192);
    edit_config(d, "rope_scaling", cJSON_Duplicate(rs, 1));
    edit_config(d, "rope_parameters", rs);
    T_CHECK(hf_load(d, &r) == 0 && r.t.cfg.rope_type == ROPE_LLAMA3 &&
                r.t.cfg.rope_theta == 500000.0f && r.t.cfg.rope_factor == 32.0f &&
                r.t.cfg.rope_low_freq_factor == 1.0f && r.t.cfg.rope_high_freq_factor == 4.0f &&
                r.t.cfg.rope_orig_max_pos == 8192,
            "rope llama3: %s", ps_err_msg());
    // written back on export and read again the same
    if (r.t.e) {
        HostWeights r2;
        const char *d2 = tpath("cfg_rope_llama3_out");
        T_CHECK(hf_save(d2, &r, "float32") == 0 && hf_load(d2, &r2) == 0 &&
                    cfg_equal(&r.t.cfg, &r2.t.cfg),
                "llama3 export round trip: %s", ps_err_msg());
        host_weights_free(&r2);
    }
    host_weights_free(&r);
    FRESH("cfg_rope_conflict");
    rs = cJSON_CreateObject();
    cJSON_AddStringToObject(rs, "rope_type", "linear");
    cJSON_AddNumberToObject(rs, "factor", 2.0);
    edit_config(d, "rope_scaling", cJSON_Duplicate(rs, 1));
    cJSON_ReplaceItemInObject(rs, "factor", cJSON_CreateNumber(4.0));
    edit_config(d, "rope_parameters", rs);
    EXPECT_FAIL(hf_load(d, &r), cp, "different scalings");

    // transformers 5 style: rope_parameters {"rope_type": "default", "rope_theta": x}
    FRESH("cfg_rope_params_default");
    rs = cJSON_CreateObject();
    cJSON_AddStringToObject(rs, "rope_type", "default");
    cJSON_AddNumberToObject(rs, "rope_theta", 500000.0);
    edit_config(d, "rope_parameters", rs);
    edit_config(d, "rope_theta", NULL);
    T_CHECK(hf_load(d, &r) == 0 && r.t.cfg.rope_theta == 500000.0f, "rope_parameters: %s",
            ps_err_msg());
    host_weights_free(&r);

    FRESH("cfg_attn_bias");
    edit_config(d, "attention_bias", cJSON_CreateTrue());
    EXPECT_FAIL(hf_load(d, &r), cp, "attention_bias");
    FRESH("cfg_mlp_bias");
    edit_config(d, "mlp_bias", cJSON_CreateTrue());
    EXPECT_FAIL(hf_load(d, &r), cp, "mlp_bias");
    FRESH("cfg_act");
    edit_config(d, "hidden_act", cJSON_CreateString("gelu"));
    EXPECT_FAIL(hf_load(d, &r), cp, "hidden_act", "gelu");
    // an explicit head_dim changes the q/k/v/o shapes: these weights do not fit it
    FRESH("cfg_head_dim");
    edit_config(d, "head_dim", cJSON_CreateNumber(16));
    EXPECT_FAIL(hf_load(d, &r), "model.safetensors", "q_proj", "expected [64, 32]");
    FRESH("cfg_head_dim_odd");
    edit_config(d, "head_dim", cJSON_CreateNumber(7));
    EXPECT_FAIL(hf_load(d, &r), cp, "head dim 7", "even");
    FRESH("cfg_tie_str");
    edit_config(d, "tie_word_embeddings", cJSON_CreateString("yes"));
    EXPECT_FAIL(hf_load(d, &r), cp, "tie_word_embeddings");

    // defaults: kv heads = heads, rope_theta 10000, eps 1e-6, untied, head_dim null ok
    const char *minimal = tpath("minimal_config.json");
    write_text(minimal,
               "{\"model_type\": \"llama\", \"hidden_size\": 32, \"num_hidden_layers\": 2,"
               " \"num_attention_heads\": 4, \"intermediate_size\": 48, \"vocab_size\": 40,"
               " \"max_position_embeddings\": 64, \"head_dim\": null, \"rope_scaling\": null}");
    LlamaConfig mc;
    T_CHECK(hf_read_config(minimal, &mc) == 0, "minimal: %s", ps_err_msg());
    T_CHECK(mc.n_kv_heads == 4 && mc.rope_theta == 10000.0f && mc.norm_eps == 1e-6f &&
                mc.tie_embeddings == 0 && mc.max_seq_len == 64,
            "defaults");
#undef FRESH
    host_weights_free(&w);
}

// ---------------------------------------------------------------------------
// llama2.c

// A llama2.c file with random weights; the original (interleaved-RoPE) tensors
// are returned in *orig in file order (floats after the header).
static float *write_llama2c(const char *path, int dim, int hidden, int L, int nh, int nkv, int V,
                            int seq, int tied, size_t *nfloats) {
    int hd = dim / nh, kvd = nkv * hd;
    size_t n = (size_t)V * dim + (size_t)L * dim * 2 + (size_t)L * dim * dim * 2 +
               (size_t)L * kvd * dim * 2 + (size_t)L * hidden * dim * 3 + dim + (size_t)seq * hd +
               (tied ? 0 : (size_t)V * dim);
    float *x = xmalloc(sizeof(float) * n);
    Rng r;
    rng_seed(&r, 99);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
    int32_t h[7] = {dim, hidden, L, nh, nkv, tied ? V : -V, seq};
    FILE *f = xfopen(path, "wb");
    fwrite(h, sizeof h, 1, f);
    fwrite(x, sizeof(float), n, f);
    fclose(f);
    *nfloats = n;
    return x;
}

// Interleaved RoPE (llama2.c) on q[nheads*hd] at position pos.
static void rope_interleaved(float *q, int nheads, int hd, int pos, float theta) {
    for (int h = 0; h < nheads; h++)
        for (int j = 0; j < hd / 2; j++) {
            float f = (float)pos * powf(theta, -2.0f * (float)j / (float)hd);
            float c = cosf(f), s = sinf(f);
            float *v = q + h * hd + 2 * j;
            float a = v[0], b = v[1];
            v[0] = a * c - b * s;
            v[1] = a * s + b * c;
        }
}

// rotate_half RoPE (HF, our model) on q[nheads*hd] at position pos.
static void rope_half(float *q, int nheads, int hd, int pos, float theta) {
    int half = hd / 2;
    for (int h = 0; h < nheads; h++)
        for (int j = 0; j < half; j++) {
            float f = (float)pos * powf(theta, -2.0f * (float)j / (float)hd);
            float c = cosf(f), s = sinf(f);
            float *v = q + h * hd;
            float a = v[j], b = v[j + half];
            v[j] = a * c - b * s;
            v[j + half] = a * s + b * c;
        }
}

static void matvec(float *y, const float *W, const float *x, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        double s = 0;
        for (int j = 0; j < cols; j++) s += (double)W[(size_t)i * cols + j] * x[j];
        y[i] = (float)s;
    }
}

// Attention scores q.k per (query head, position) must be the same in the
// llama2.c layout with interleaved RoPE and in the converted layout with
// rotate_half: this is what the q/k permutation has to preserve.
static void check_rope_equivalence(const float *wq_old, const float *wk_old, const float *wq_new,
                                   const float *wk_new, int dim, int nh, int nkv) {
    int hd = dim / nh, kvd = nkv * hd;
    float *x = xmalloc(sizeof(float) * dim), *y = xmalloc(sizeof(float) * dim);
    float *qo = xmalloc(sizeof(float) * dim), *qn = xmalloc(sizeof(float) * dim);
    float *ko = xmalloc(sizeof(float) * kvd), *kn = xmalloc(sizeof(float) * kvd);
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < dim; i++) x[i] = rng_normal(&r), y[i] = rng_normal(&r);
    int pq = 7, pk = 3;
    matvec(qo, wq_old, x, dim, dim);
    matvec(qn, wq_new, x, dim, dim);
    matvec(ko, wk_old, y, kvd, dim);
    matvec(kn, wk_new, y, kvd, dim);
    rope_interleaved(qo, nh, hd, pq, 10000.0f);
    rope_half(qn, nh, hd, pq, 10000.0f);
    rope_interleaved(ko, nkv, hd, pk, 10000.0f);
    rope_half(kn, nkv, hd, pk, 10000.0f);
    double maxd = 0;
    for (int h = 0; h < nh; h++) {
        int kh = h / (nh / nkv);
        double so = 0, sn = 0;
        for (int i = 0; i < hd; i++) {
            so += (double)qo[h * hd + i] * ko[kh * hd + i];
            sn += (double)qn[h * hd + i] * kn[kh * hd + i];
        }
        maxd = fmax(maxd, fabs(so - sn) / (1 + fabs(so)));
    }
    T_CHECK(maxd < 1e-4, "RoPE scores differ after conversion: rel %g", maxd);
    free(x), free(y), free(qo), free(qn), free(ko), free(kn);
}

static void test_llama2c(int tied) {
    int dim = 32, hidden = 40, L = 2, nh = 4, nkv = 2, V = 24, seq = 16;
    int hd = dim / nh, kvd = nkv * hd;
    char name[64];
    snprintf(name, sizeof name, "model_%d.bin", tied);
    const char *p = tpath(name);
    size_t nf;
    float *x = write_llama2c(p, dim, hidden, L, nh, nkv, V, seq, tied, &nf);
    HostWeights w;
    T_CHECK(llama2c_load(p, &w) == 0, "llama2c_load: %s", ps_err_msg());
    if (!w.params) {
        free(x);
        return;
    }
    const LlamaConfig *c = &w.t.cfg;
    T_CHECK(c->dim == dim && c->ffn_dim == hidden && c->n_layers == L && c->n_heads == nh &&
                c->n_kv_heads == nkv && c->vocab_size == V && c->max_seq_len == seq &&
                c->tie_embeddings == tied && c->norm_eps == 1e-5f && c->rope_theta == 10000.0f,
            "llama2c config");
    // walk the file layout and compare every tensor
    const float *s = x;
    const float *P = w.params;
    const ParamTable *t = &w.t;
    size_t bad = 0;
    bad += memcmp(P + t->e[t->embed].offset, s, sizeof(float) * V * dim) != 0;
    s += (size_t)V * dim;
    const float *att = s;
    s += (size_t)L * dim;
    const float *wq = s;
    s += (size_t)L * dim * dim;
    const float *wk = s;
    s += (size_t)L * kvd * dim;
    const float *wv = s;
    s += (size_t)L * kvd * dim;
    const float *wo = s;
    s += (size_t)L * dim * dim;
    const float *ffn = s;
    s += (size_t)L * dim;
    const float *w1 = s;
    s += (size_t)L * hidden * dim;
    const float *w2 = s;
    s += (size_t)L * hidden * dim;
    const float *w3 = s;
    s += (size_t)L * hidden * dim;
    const float *fin = s;
    s += dim + (size_t)seq * hd;
    for (int l = 0; l < L; l++) {
#define SAME(kind, src, n)                                                      \
    bad += memcmp(P + param_layer(t, l, kind)->offset, (src) + (size_t)l * (n), \
                  sizeof(float) * (n)) != 0
        SAME(P_ATTN_NORM, att, (size_t)dim);
        SAME(P_WV, wv, (size_t)kvd * dim);
        SAME(P_WO, wo, (size_t)dim * dim);
        SAME(P_FFN_NORM, ffn, (size_t)dim);
        SAME(P_W_GATE, w1, (size_t)hidden * dim);
        SAME(P_W_DOWN, w2, (size_t)hidden * dim);
        SAME(P_W_UP, w3, (size_t)hidden * dim);
#undef SAME
        // permuted rows: new (h, t*hd/2 + j) == old (h, 2j + t)
        const float *q_new = P + param_layer(t, l, P_WQ)->offset;
        const float *q_old = wq + (size_t)l * dim * dim;
        const float *k_new = P + param_layer(t, l, P_WK)->offset;
        const float *k_old = wk + (size_t)l * kvd * dim;
        for (int h = 0; h < nh; h++)
            for (int j = 0; j < hd / 2; j++)
                for (int tt = 0; tt < 2; tt++) {
                    size_t rn = (size_t)h * hd + (size_t)tt * (hd / 2) + j;
                    size_t ro = (size_t)h * hd + 2 * j + tt;
                    bad += memcmp(q_new + rn * dim, q_old + ro * dim, sizeof(float) * dim) != 0;
                    if (h < nkv)
                        bad += memcmp(k_new + rn * dim, k_old + ro * dim, sizeof(float) * dim) != 0;
                }
        check_rope_equivalence(q_old, k_old, q_new, k_new, dim, nh, nkv);
    }
    bad += memcmp(P + t->e[t->final_norm].offset, fin, sizeof(float) * dim) != 0;
    if (!tied) bad += memcmp(P + t->e[t->lm_head].offset, s, sizeof(float) * V * dim) != 0;
    T_CHECK(bad == 0, "llama2c tensors differ in %zu blocks (tied=%d)", bad, tied);

    // dispatch by spec
    HostWeights w2h;
    T_CHECK(model_load_any(p, &w2h) == 0 && count_diff(&w, &w2h, round_none) == 0, "bare .bin: %s",
            ps_err_msg());
    host_weights_free(&w2h);
    char spec[4200];
    snprintf(spec, sizeof spec, "llama2c:%s", p);
    T_CHECK(model_load_any(spec, &w2h) == 0 && count_diff(&w, &w2h, round_none) == 0,
            "llama2c: spec: %s", ps_err_msg());
    host_weights_free(&w2h);

    // llama2c -> HF -> load again is exact
    snprintf(name, sizeof name, "l2c_hf_%d", tied);
    const char *d = tpath(name);
    T_CHECK(hf_save(d, &w, "float32") == 0, "%s", ps_err_msg());
    snprintf(spec, sizeof spec, "hf:%s", d);
    T_CHECK(model_load_any(spec, &w2h) == 0 && count_diff(&w, &w2h, round_none) == 0,
            "hf: spec: %s", ps_err_msg());
    host_weights_free(&w2h);

    // truncated and oversized files
    size_t full = 28 + 4 * nf;
    char exp[64];
    snprintf(exp, sizeof exp, "implies %zu bytes", full);
    uint8_t *buf = xmalloc(full + 4);
    FILE *f = xfopen(p, "rb");
    CHECK(fread(buf, 1, full, f) == full, "reread");
    fclose(f);
    memset(buf + full, 0, 4);
    snprintf(name, sizeof name, "trunc_%d.bin", tied);
    const char *pt = tpath(name);
    write_bytes(pt, buf, full - 4);
    EXPECT_FAIL(llama2c_load(pt, &w2h), pt, "truncated", exp);
    T_CHECK(w2h.params == NULL, "failed llama2c load leaves w empty");
    write_bytes(pt, buf, full + 4);
    EXPECT_FAIL(llama2c_load(pt, &w2h), pt, exp, "trailing");
    write_bytes(pt, buf, 10);
    EXPECT_FAIL(llama2c_load(pt, &w2h), pt, "truncated", "28-byte header");
    ((int32_t *)buf)[3] = 0;  // n_heads = 0
    write_bytes(pt, buf, full);
    EXPECT_FAIL(llama2c_load(pt, &w2h), pt, "bad header");
    free(buf);
    free(x);
    host_weights_free(&w);
}

static void test_load_any_errors(void) {
    HostWeights w;
    const char *p = tpath("notamodel.txt");
    write_text(p, "hello");
    EXPECT_FAIL(model_load_any(p, &w), p, "cannot tell");
    EXPECT_FAIL(model_load_any(tpath("nope.bin"), &w), "nope.bin");
    EXPECT_FAIL(model_load_any("llama2c:/nonexistent/x.bin", &w), "/nonexistent/x.bin",
                "cannot open");
}

static void test_stories260k(void) {
    const char *sd = t_shared_data();
    if (!sd) {
        T_SKIP("stories260K: shared data folder (../shared/data or $POSTSHARE_DATA) not found");
        return;
    }
    char p[4200];
    snprintf(p, sizeof p, "%s/models/stories260K/stories260K.bin", sd);
    if (access(p, R_OK) != 0) {
        T_SKIP("stories260K: %s not found", p);
        return;
    }
    HostWeights w;
    T_CHECK(llama2c_load(p, &w) == 0, "stories260K: %s", ps_err_msg());
    if (!w.params) return;
    const LlamaConfig *c = &w.t.cfg;
    T_CHECK(c->dim == 64 && c->ffn_dim == 172 && c->n_layers == 5 && c->n_heads == 8 &&
                c->n_kv_heads == 4 && c->vocab_size == 512 && c->max_seq_len == 512 &&
                c->tie_embeddings == 1,
            "stories260K config: dim %d ffn %d L %d nh %d nkv %d V %d seq %d tied %d", c->dim,
            c->ffn_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, c->max_seq_len,
            c->tie_embeddings);
    T_CHECK(w.t.total == 32768 + 5 * 45440 + 64, "stories260K params %zu", w.t.total);
    // spot checks against the raw file: embedding, and wq row permutation of layer 0
    size_t len;
    char *raw = ps_read_file(p, &len);
    const float *f = (const float *)(raw + 28);
    T_CHECK(memcmp(w.params + w.t.e[w.t.embed].offset, f, sizeof(float) * 512 * 64) == 0,
            "stories260K embedding");
    const float *wq_old = f + 512 * 64 + 5 * 64;
    const float *wq_new = w.params + param_layer(&w.t, 0, P_WQ)->offset;
    // head 1, pair j = 2: old rows 8+4, 8+5 -> new rows 8+2, 8+6
    T_CHECK(memcmp(wq_new + (8 + 2) * 64, wq_old + (8 + 4) * 64, 64 * 4) == 0 &&
                memcmp(wq_new + (8 + 6) * 64, wq_old + (8 + 5) * 64, 64 * 4) == 0,
            "stories260K wq permutation");
    float mx = 0;
    for (size_t i = 0; i < w.t.total; i++) mx = fmaxf(mx, fabsf(w.params[i]));
    T_CHECK(isfinite(mx) && mx > 0.01f && mx < 100.0f, "stories260K weights look sane (max %g)",
            mx);
    free(raw);

    // converts to HF and back exactly
    HostWeights r;
    const char *d = tpath("stories260K_hf");
    T_CHECK(hf_save(d, &w, "float32") == 0, "%s", ps_err_msg());
    T_CHECK(hf_load(d, &r) == 0 && count_diff(&w, &r, round_none) == 0, "stories260K HF: %s",
            ps_err_msg());
    host_weights_free(&r);
    host_weights_free(&w);
}

int main(void) {
#ifdef PS_BINARY_DIR
    const char *base = PS_BINARY_DIR;
#else
    const char *base = "/tmp";
#endif
    snprintf(g_tmp, sizeof g_tmp, "%s/test_hf_io_XXXXXX", base);
    CHECK(mkdtemp(g_tmp), "mkdtemp %s", g_tmp);

    test_st_roundtrip();
    test_st_bad_headers();
    test_roundtrip(0);
    test_roundtrip(1);
    test_head_dim_roundtrip();
    test_f16_weights();
    test_sharded();
    test_bad_weights();
    test_tied_with_lm_head();
    test_bad_config();
    test_llama2c(1);
    test_llama2c(0);
    test_load_any_errors();
    test_stories260k();

    int rc = t_summary();
    if (rc == 0)
        nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);  // keep files to debug failures
    else
        fprintf(stderr, "test files kept in %s\n", g_tmp);
    return rc;
}
