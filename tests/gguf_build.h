// gguf_build.h: builds small GGUF images byte by byte for tests (test_gguf.c)
// and the fuzz seeds, so that damaged variants can be made at exact offsets.
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *p;
    size_t n, cap;
} GB;

static inline void gb_put(GB *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static inline void gb_u32(GB *b, uint32_t v) {
    gb_put(b, &v, 4);
}
static inline void gb_u64(GB *b, uint64_t v) {
    gb_put(b, &v, 8);
}
static inline void gb_str(GB *b, const char *s) {
    gb_u64(b, strlen(s));
    gb_put(b, s, strlen(s));
}
static inline void gb_pad(GB *b, size_t align) {
    static const uint8_t z[64];
    while (b->n % align) gb_put(b, z, 1);
}
// key + type header; the caller appends the value
static inline void gb_key(GB *b, const char *k, uint32_t type) {
    gb_str(b, k);
    gb_u32(b, type);
}
static inline void gb_kv_u32(GB *b, const char *k, uint32_t v) {
    gb_key(b, k, 4);
    gb_u32(b, v);
}
static inline void gb_kv_f32(GB *b, const char *k, float v) {
    gb_key(b, k, 6);
    gb_put(b, &v, 4);
}
static inline void gb_kv_str(GB *b, const char *k, const char *v) {
    gb_key(b, k, 8);
    gb_str(b, v);
}
static inline void gb_kv_bool(GB *b, const char *k, int v) {
    uint8_t x = (uint8_t)(v != 0);
    gb_key(b, k, 7);
    gb_put(b, &x, 1);
}
static inline void gb_kv_arr_str(GB *b, const char *k, int n, const char *const *v) {
    gb_key(b, k, 9);
    gb_u32(b, 8);
    gb_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) gb_str(b, v[i]);
}
static inline void gb_kv_arr_i32(GB *b, const char *k, int n, const int32_t *v) {
    gb_key(b, k, 9);
    gb_u32(b, 5);
    gb_u64(b, (uint64_t)n);
    gb_put(b, v, 4 * (size_t)n);
}
static inline void gb_kv_arr_f32(GB *b, const char *k, int n, const float *v) {
    gb_key(b, k, 9);
    gb_u32(b, 6);
    gb_u64(b, (uint64_t)n);
    gb_put(b, v, 4 * (size_t)n);
}
// header start: magic, version, counts
static inline void gb_header(GB *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    gb_put(b, "GGUF", 4);
    gb_u32(b, version);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}
// one tensor info (dims innermost first)
static inline void gb_tinfo(GB *b, const char *name, int nd, const uint64_t *ne, uint32_t type,
                            uint64_t off) {
    gb_str(b, name);
    gb_u32(b, (uint32_t)nd);
    for (int i = 0; i < nd; i++) gb_u64(b, ne[i]);
    gb_u32(b, type);
    gb_u64(b, off);
}
