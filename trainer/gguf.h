// gguf.h: a reader for GGUF files (llama.cpp's model container, versions 2 and 3).
//
// File layout (little-endian):
//   "GGUF" magic, uint32 version, uint64 tensor_count, uint64 kv_count
//   kv_count x { string key, uint32 value_type, value }
//   tensor_count x { string name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml_type,
//                    uint64 offset (relative to the data section) }
//   padding to general.alignment (default 32), then the data section.
// A string is a uint64 length and that many bytes (no NUL). An array value is
// uint32 element type, uint64 count, then the elements. ne[0] is the innermost
// (contiguous) dimension, so a GGUF [ne0, ne1] tensor is a row-major [ne1, ne0]
// matrix: the HF shape.
//
// gguf_open maps the file and validates ALL of it before returning: every
// length and count against the bytes that remain (so nothing is allocated from
// an unchecked count), every string array element, every tensor's dims
// (overflow-safe), alignment, and offset + size against the file size for the
// tensor types whose size is known. Accessors then never read outside the map.
// Errors: -1 (or NULL) with ps_err naming the file and the problem.
//
// The metadata accessors take a key and return -1 with ps_err ("FILE: key 'K'
// is missing" / "... has type T, expected U") when it is absent or of another
// type; use gguf_find first for optional keys.
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GGUF_UINT8 = 0,
    GGUF_INT8 = 1,
    GGUF_UINT16 = 2,
    GGUF_INT16 = 3,
    GGUF_UINT32 = 4,
    GGUF_INT32 = 5,
    GGUF_FLOAT32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_UINT64 = 10,
    GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12,
    GGUF_NTYPES
} GgufType;

// ggml tensor types that gguf_tensor_f32 converts (others are refused by name).
enum {
    GGML_F32 = 0,
    GGML_F16 = 1,
    GGML_Q4_0 = 2,
    GGML_Q4_1 = 3,
    GGML_Q8_0 = 8,
    GGML_BF16 = 30,
};

// A string inside the mapped file: p[0..len), not NUL-terminated.
typedef struct {
    const char *p;
    uint64_t len;
} GgufStr;

typedef struct {
    char *key;           // NUL-terminated copy
    GgufType type;       // value type
    GgufType arr_type;   // element type when type == GGUF_ARRAY
    uint64_t n;          // array length; 1 for a scalar
    const uint8_t *val;  // the scalar, or the first array element, in the map
} GgufKV;

typedef struct {
    char *name;           // NUL-terminated copy
    uint32_t n_dims;      // 1..4
    uint64_t ne[4];       // ne[0] innermost; 1 beyond n_dims
    uint32_t type;        // ggml type
    uint64_t offset;      // from the start of the data section
    uint64_t nelem;       // product of ne
    uint64_t nbytes;      // 0 when the type's size is not known to this reader
    const uint8_t *data;  // in the map; NULL when nbytes is 0
} GgufTensor;

typedef struct {
    char *path;  // for messages
    const uint8_t *map;
    size_t size;
    int mapped;  // 1: map is ours (gguf_open), 0: the caller's buffer (gguf_parse)
    uint32_t version;
    uint32_t alignment;
    uint64_t data_off;  // start of the data section
    int64_t n_kv;
    GgufKV *kv;
    int64_t n_tensors;
    GgufTensor *t;
} GgufFile;

int gguf_open(const char *path, GgufFile *g);
// Parse a GGUF image held in memory (the caller keeps buf alive until gguf_close);
// name is used in messages.
int gguf_parse(const void *buf, size_t size, const char *name, GgufFile *g);
void gguf_close(GgufFile *g);

// The entry for key, or NULL.
const GgufKV *gguf_find(const GgufFile *g, const char *key);
// A NUL-terminated malloc'd copy of a string value (refused if it holds a NUL byte).
int gguf_get_str(const GgufFile *g, const char *key, char **out);
// Any integer type whose value fits, or a bool (0/1).
int gguf_get_u32(const GgufFile *g, const char *key, uint32_t *out);
// FLOAT32 or FLOAT64.
int gguf_get_f32(const GgufFile *g, const char *key, float *out);
int gguf_get_bool(const GgufFile *g, const char *key, int *out);
// Arrays: *out is malloc'd (free it), *n its length (may be 0, then *out may be NULL).
// Strings point into the map (valid until gguf_close).
int gguf_get_arr_str(const GgufFile *g, const char *key, GgufStr **out, uint64_t *n);
// Integer arrays of any integer type whose values fit int32.
int gguf_get_arr_i32(const GgufFile *g, const char *key, int32_t **out, uint64_t *n);
// FLOAT32 or FLOAT64 arrays.
int gguf_get_arr_f32(const GgufFile *g, const char *key, float **out, uint64_t *n);

// The tensor of this name, or NULL.
const GgufTensor *gguf_tensor(const GgufFile *g, const char *name);
// Convert a tensor's nelem values to fp32 into dst: F32, F16, BF16, Q8_0, Q4_0,
// Q4_1. Any other type: -1 with ps_err naming the tensor and the type.
int gguf_tensor_f32(const GgufFile *g, const GgufTensor *t, float *dst);
// 0 when gguf_tensor_f32 converts t's type, else -1 with that message.
int gguf_check_convertible(const GgufFile *g, const GgufTensor *t);
// "Q4_K", "F16", ...; "type N" (a static buffer) for numbers ggml does not define.
const char *gguf_ggml_type_name(uint32_t type);
const char *gguf_value_type_name(GgufType type);
