// test_gguf.c: the GGUF reader (trainer/gguf.c) on hand-made files: metadata
// accessors, every supported tensor type's dequantization against values
// worked out by hand from the block layouts, and damaged files (every
// truncation, huge counts and lengths, bad offsets, unknown types, duplicates),
// each refused with a message naming the file and the problem.
//
// With PS_GGUF_SEED_DIR set it also writes the valid image there (the fuzz seed,
// tests/fuzz/corpus/gguf/).
#define _XOPEN_SOURCE 700
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common.h"
#include "gguf.h"
#include "gguf_build.h"
#include "test.h"

enum { N_TENSORS = 6, N_KV = 7 };

// Offsets of a few fields in the valid image, for the damage tests.
typedef struct {
    size_t n_tensors_at, n_kv_at, first_key_len_at, arr_count_at, tinfo_at, first_off_at,
        first_type_at, first_ndim_at, q41_off_at;
} Marks;

static const char *const TOKS[] = {"<unk>", "a", "bc", "\xc4\xa0x"};

// The valid image. Tensor data (offsets are multiples of 32; the last tensor ends the file):
//   f32  [3,2] F32 1..6         f16 [4] F16 1, -2, 0.5, 0     bf16 [2] BF16 1, -3
//   q8   [32] Q8_0 d=0.5, q=j-16
//   q40  [32] Q4_0 d=2, byte j = j | (15-j)<<4
//   q41  [32] Q4_1 d=0.25 m=-1, byte j = j | (15-j)<<4
static void make_valid(GB *b, Marks *m) {
    memset(b, 0, sizeof *b);
    gb_header(b, 3, N_TENSORS, N_KV);
    m->n_tensors_at = 8;
    m->n_kv_at = 16;
    m->first_key_len_at = b->n;
    gb_kv_str(b, "general.architecture", "llama");
    gb_kv_u32(b, "llama.block_count", 7);
    gb_kv_f32(b, "llama.rope.freq_base", 500000.0f);
    gb_kv_bool(b, "tokenizer.ggml.add_bos_token", 1);
    m->arr_count_at = b->n + 8 + strlen("tokenizer.ggml.tokens") + 4 + 4;
    gb_kv_arr_str(b, "tokenizer.ggml.tokens", 4, TOKS);
    int32_t tt[4] = {2, 1, 1, -3};
    gb_kv_arr_i32(b, "tokenizer.ggml.token_type", 4, tt);
    float sc[3] = {0.5f, -1.0f, 2.0f};
    gb_kv_arr_f32(b, "tokenizer.ggml.scores", 3, sc);
    m->tinfo_at = b->n;
    uint64_t ne[2] = {3, 2};
    gb_tinfo(b, "f32", 2, ne, 0, 0);
    m->first_ndim_at = m->tinfo_at + 8 + 3;
    m->first_type_at = b->n - 12;
    m->first_off_at = b->n - 8;
    ne[0] = 4;
    gb_tinfo(b, "f16", 1, ne, 1, 32);
    ne[0] = 2;
    gb_tinfo(b, "bf16", 1, ne, 30, 64);
    ne[0] = 32;
    gb_tinfo(b, "q8", 1, ne, 8, 96);
    gb_tinfo(b, "q40", 1, ne, 2, 160);
    gb_tinfo(b, "q41", 1, ne, 3, 192);
    m->q41_off_at = b->n - 8;
    gb_pad(b, 32);
    size_t d0 = b->n;
    for (int i = 0; i < 6; i++) {
        float v = (float)(i + 1);
        gb_put(b, &v, 4);
    }
    gb_pad(b, 32);
    uint16_t h[4] = {0x3C00, 0xC000, 0x3800, 0};
    gb_put(b, h, 8);
    gb_pad(b, 32);
    uint16_t bf[2] = {0x3F80, 0xC040};
    gb_put(b, bf, 4);
    gb_pad(b, 32);
    uint16_t d = 0x3800;  // 0.5
    gb_put(b, &d, 2);
    for (int j = 0; j < 32; j++) {
        int8_t q = (int8_t)(j - 16);
        gb_put(b, &q, 1);
    }
    gb_pad(b, 32);
    d = 0x4000;  // 2
    gb_put(b, &d, 2);
    for (int j = 0; j < 16; j++) {
        uint8_t q = (uint8_t)(j | (15 - j) << 4);
        gb_put(b, &q, 1);
    }
    gb_pad(b, 32);
    uint16_t dm[2] = {0x3400, 0xBC00};  // 0.25, -1
    gb_put(b, dm, 4);
    for (int j = 0; j < 16; j++) {
        uint8_t q = (uint8_t)(j | (15 - j) << 4);
        gb_put(b, &q, 1);
    }
    CHECK(b->n - d0 == 192 + 20, "layout");
}

static void put_u64_at(GB *b, size_t at, uint64_t v) {
    memcpy(b->p + at, &v, 8);
}
static void put_u32_at(GB *b, size_t at, uint32_t v) {
    memcpy(b->p + at, &v, 4);
}

static void test_valid(void) {
    GB b;
    Marks m;
    make_valid(&b, &m);
    GgufFile g;
    T_CHECK(gguf_parse(b.p, b.n, "valid.gguf", &g) == 0, "parse: %s", ps_err_msg());
    T_CHECK(g.version == 3 && g.n_kv == N_KV && g.n_tensors == N_TENSORS && g.alignment == 32,
            "header");
    char *s = NULL;
    T_CHECK(gguf_get_str(&g, "general.architecture", &s) == 0 && strcmp(s, "llama") == 0, "str");
    free(s);
    uint32_t u = 0;
    T_CHECK(gguf_get_u32(&g, "llama.block_count", &u) == 0 && u == 7, "u32");
    float f = 0;
    T_CHECK(gguf_get_f32(&g, "llama.rope.freq_base", &f) == 0 && f == 500000.0f, "f32");
    int bo = 0;
    T_CHECK(gguf_get_bool(&g, "tokenizer.ggml.add_bos_token", &bo) == 0 && bo == 1, "bool");
    GgufStr *toks = NULL;
    uint64_t n = 0;
    T_CHECK(gguf_get_arr_str(&g, "tokenizer.ggml.tokens", &toks, &n) == 0 && n == 4, "arr str");
    for (uint64_t i = 0; i < n && i < 4; i++)
        T_CHECK(toks[i].len == strlen(TOKS[i]) && !memcmp(toks[i].p, TOKS[i], toks[i].len),
                "token %d", (int)i);
    free(toks);
    int32_t *tt = NULL;
    T_CHECK(gguf_get_arr_i32(&g, "tokenizer.ggml.token_type", &tt, &n) == 0 && n == 4 &&
                tt[0] == 2 && tt[3] == -3,
            "arr i32");
    free(tt);
    float *sc = NULL;
    T_CHECK(gguf_get_arr_f32(&g, "tokenizer.ggml.scores", &sc, &n) == 0 && n == 3 && sc[1] == -1.0f,
            "arr f32");
    free(sc);
    // wrong types and absent keys name the file and key
    EXPECT_FAIL(gguf_get_u32(&g, "general.architecture", &u), "valid.gguf",
                "'general.architecture'", "STRING");
    EXPECT_FAIL(gguf_get_str(&g, "nope", &s), "valid.gguf", "'nope' is missing");
    EXPECT_FAIL(gguf_get_arr_i32(&g, "tokenizer.ggml.tokens", &tt, &n), "array of STRING");
    EXPECT_FAIL(gguf_get_arr_str(&g, "llama.block_count", &toks, &n), "UINT32", "an array");
    T_CHECK(gguf_find(&g, "nope") == NULL && gguf_find(&g, "llama.block_count") != NULL, "find");

    // dequantization
    float out[32], want[32];
    const GgufTensor *t = gguf_tensor(&g, "f32");
    T_CHECK(t && t->ne[0] == 3 && t->ne[1] == 2 && t->nelem == 6 &&
                gguf_tensor_f32(&g, t, out) == 0 && out[0] == 1.0f && out[5] == 6.0f,
            "F32");
    t = gguf_tensor(&g, "f16");
    T_CHECK(t && gguf_tensor_f32(&g, t, out) == 0 && out[0] == 1.0f && out[1] == -2.0f &&
                out[2] == 0.5f && out[3] == 0.0f,
            "F16");
    t = gguf_tensor(&g, "bf16");
    T_CHECK(t && gguf_tensor_f32(&g, t, out) == 0 && out[0] == 1.0f && out[1] == -3.0f, "BF16");
    t = gguf_tensor(&g, "q8");
    for (int j = 0; j < 32; j++) want[j] = (float)(j - 16) * 0.5f;
    T_CHECK(t && gguf_tensor_f32(&g, t, out) == 0 && !memcmp(out, want, sizeof out), "Q8_0");
    t = gguf_tensor(&g, "q40");
    for (int j = 0; j < 16; j++) {
        want[j] = (float)(j - 8) * 2.0f;
        want[j + 16] = (float)(15 - j - 8) * 2.0f;
    }
    T_CHECK(t && gguf_tensor_f32(&g, t, out) == 0 && !memcmp(out, want, sizeof out), "Q4_0");
    t = gguf_tensor(&g, "q41");
    for (int j = 0; j < 16; j++) {
        want[j] = (float)j * 0.25f - 1.0f;
        want[j + 16] = (float)(15 - j) * 0.25f - 1.0f;
    }
    T_CHECK(t && gguf_tensor_f32(&g, t, out) == 0 && !memcmp(out, want, sizeof out), "Q4_1");
    T_CHECK(gguf_tensor(&g, "nope") == NULL, "absent tensor");
    gguf_close(&g);

    // the same through a file (mmap)
    char dir[] = "/tmp/test_gguf_XXXXXX";
    CHECK(mkdtemp(dir), "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    FILE *fp = xfopen(path, "wb");
    fwrite(b.p, 1, b.n, fp);
    fclose(fp);
    T_CHECK(gguf_open(path, &g) == 0 && g.n_tensors == N_TENSORS, "open: %s", ps_err_msg());
    gguf_close(&g);
    // truncated on disk
    CHECK(truncate(path, (off_t)b.n - 1) == 0, "truncate");
    EXPECT_FAIL(gguf_open(path, &g), path, "'q41'", "past the end");
    unlink(path);
    EXPECT_FAIL(gguf_open(path, &g), path, "cannot open");
    rmdir(dir);
    const char *seeds = getenv("PS_GGUF_SEED_DIR");
    if (seeds) {
        snprintf(path, sizeof path, "%s/valid.gguf", seeds);
        fp = xfopen(path, "wb");
        fwrite(b.p, 1, b.n, fp);
        fclose(fp);
    }
    free(b.p);
}

// Every prefix of the valid image is refused, never crashes.
static void test_truncations(void) {
    GB b;
    Marks m;
    make_valid(&b, &m);
    int refused = 0;
    for (size_t n = 0; n < b.n; n++) {
        uint8_t *copy = xmalloc(n ? n : 1);  // exact size, so ASan would see an overread
        memcpy(copy, b.p, n);
        GgufFile g;
        int rc = gguf_parse(copy, n, "cut.gguf", &g);
        if (rc == -1 && strstr(ps_err_msg(), "cut.gguf")) refused++;
        if (rc == 0) gguf_close(&g);
        free(copy);
    }
    T_CHECK(refused == (int)b.n, "%d of %zu truncations refused", refused, b.n);
    free(b.p);
}

// One damaged variant: modify the valid image, expect failure with needles.
#define DAMAGE(what, ...)                                               \
    do {                                                                \
        GB b;                                                           \
        Marks m;                                                        \
        make_valid(&b, &m);                                             \
        what;                                                           \
        GgufFile g;                                                     \
        EXPECT_FAIL(gguf_parse(b.p, b.n, "bad.gguf", &g), __VA_ARGS__); \
        free(b.p);                                                      \
    } while (0)

static void test_damage(void) {
    DAMAGE(b.p[0] = 'X', "bad.gguf", "not a GGUF file");
    DAMAGE(put_u32_at(&b, 4, 1), "bad.gguf", "version 1");
    DAMAGE(put_u32_at(&b, 4, 0x03000000), "bad.gguf", "big-endian");
    DAMAGE(put_u64_at(&b, m.n_kv_at, UINT64_MAX / 2), "bad.gguf", "keys cannot fit");
    DAMAGE(put_u64_at(&b, m.n_tensors_at, 1ull << 40), "bad.gguf", "tensors cannot fit");
    DAMAGE(put_u64_at(&b, m.first_key_len_at, 1ull << 62), "bad.gguf", "damaged file");
    DAMAGE(put_u64_at(&b, m.first_key_len_at, 3000), "bad.gguf", "truncated");
    DAMAGE(put_u64_at(&b, m.arr_count_at, 1ull << 61), "bad.gguf", "tokenizer.ggml.tokens");
    DAMAGE(put_u64_at(&b, m.first_off_at, 1ull << 40), "bad.gguf", "'f32'", "past the end");
    DAMAGE(put_u64_at(&b, m.first_off_at, UINT64_MAX - 31), "bad.gguf", "'f32'", "past the end");
    DAMAGE(put_u64_at(&b, m.first_off_at, 4), "bad.gguf", "'f32'", "alignment");
    DAMAGE(put_u64_at(&b, m.q41_off_at, 224), "bad.gguf", "'q41'", "past the end");
    DAMAGE(put_u32_at(&b, m.first_type_at, 99), "bad.gguf", "'f32'", "unknown ggml type 99");
    DAMAGE(put_u32_at(&b, m.first_type_at, 2), "bad.gguf", "'f32'", "block size 32");
    DAMAGE(put_u32_at(&b, m.first_ndim_at, 5), "bad.gguf", "'f32'", "5 dimensions");
    DAMAGE(put_u64_at(&b, m.first_ndim_at + 4, 0), "bad.gguf", "'f32'", "bad dimension");
    DAMAGE((put_u64_at(&b, m.first_ndim_at + 4, 1ull << 40),
            put_u64_at(&b, m.first_ndim_at + 12, 1ull << 40)),
           "bad.gguf", "'f32'", "bad dimension");
    DAMAGE(memcpy(b.p + m.first_key_len_at + 8, "llama.block_count\0\0\0", 20), "bad.gguf", "key",
           "NUL");
    // a key type beyond the known ones
    DAMAGE(put_u32_at(&b, m.first_key_len_at + 8 + strlen("general.architecture"), 77), "bad.gguf",
           "'general.architecture'", "unknown value type 77");
    // duplicate key and tensor: rename the second to the first
    // the third key (as long as the first) renamed to the first
    DAMAGE(memcpy(b.p + m.first_key_len_at + 45 + 33 + 8, "general.architecture", 20), "bad.gguf",
           "appears twice");
    DAMAGE(memcpy(b.p + m.tinfo_at + 8 + 3 + 4 + 16 + 4 + 8 + 8, "f32", 3), "bad.gguf",
           "'f32' appears twice");

    // alignment key: not a power of two
    {
        GB b;
        memset(&b, 0, sizeof b);
        gb_header(&b, 3, 0, 1);
        gb_kv_u32(&b, "general.alignment", 48);
        GgufFile g;
        EXPECT_FAIL(gguf_parse(b.p, b.n, "al.gguf", &g), "al.gguf", "power of two");
        free(b.p);
    }
    // an unsupported tensor type is accepted at open (the metadata stays usable) and
    // refused by name when converted
    {
        GB b;
        memset(&b, 0, sizeof b);
        gb_header(&b, 3, 1, 0);
        uint64_t ne[1] = {256};
        gb_tinfo(&b, "blk.0.attn_q.weight", 1, ne, 12, 0);  // Q4_K: 144 bytes per 256
        gb_pad(&b, 32);
        uint8_t z[144] = {0};
        gb_put(&b, z, sizeof z);
        GgufFile g;
        T_CHECK(gguf_parse(b.p, b.n, "k.gguf", &g) == 0, "Q4_K open: %s", ps_err_msg());
        float out[256];
        EXPECT_FAIL(gguf_tensor_f32(&g, &g.t[0], out), "k.gguf", "'blk.0.attn_q.weight'", "Q4_K",
                    "not supported");
        gguf_close(&g);
        free(b.p);
    }
}

int main(void) {
    test_valid();
    test_truncations();
    test_damage();
    return t_summary();
}
