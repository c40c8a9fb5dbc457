// safetensors.h: reader and writer for the safetensors format (HF weights).
//
// File layout:
//   [8 bytes]  N: little-endian u64, the length of the JSON header
//   [N bytes]  JSON header: {"__metadata__": {...}, "name": {"dtype": "F32",
//              "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...}
//   [rest]     the data section; each tensor's bytes are data[begin, end),
//              row-major, little-endian
//
// The reader (st_open) maps the whole file and validates every header entry
// before anything is read: a file that passes st_open can be read with
// st_read_f32 / st_read_i32 without further bounds checks. Errors come back as
// -1 with ps_err set to a message that names the file and the problem.
//
// The writer (st_write) streams the tensors to a temporary file, fsyncs it and
// renames it over the target, so a crash never leaves a half-written file under
// the final name.
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F16, ST_BF16, ST_I32, ST_I64, ST_OTHER } StDtype;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    StDtype dtype;
    char dtype_str[16];  // as written in the header, e.g. "F64"
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t begin, end;  // byte offsets in the data section
} StTensor;

typedef struct {
    char *path;
    uint8_t *data;    // data section (points into the mapping)
    size_t data_len;  // bytes in the data section
    int n;            // tensors, in header order ("__metadata__" excluded)
    StTensor *t;      // [n]
    // private
    void *map;  // the whole file, mmap'ed read-only (NULL when empty)
    size_t map_len;
} StFile;

// Open and validate a safetensors file. 0, or -1 with ps_err set.
int st_open(const char *path, StFile *f);
void st_close(StFile *f);
// The tensor with this name, or NULL.
const StTensor *st_find(const StFile *f, const char *name);
// Number of elements (product of the shape; 1 for a scalar).
size_t st_numel(const StTensor *t);
// Bytes per element of a dtype name ("F32" -> 4), or 0 when unknown.
size_t st_dtype_size(const char *dtype_str);
// Canonical header name of a dtype ("F32", "F16", "BF16", "I32", "I64").
const char *st_dtype_name(StDtype d);

// Read a tensor into out[st_numel(t)] as fp32 (F32 copied, F16/BF16 widened).
// Other dtypes: -1 with ps_err naming the tensor, the file and the dtype.
// "[a, b, c]" into buf (cap bytes); returns buf. For messages about shapes.
const char *st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);

int st_read_f32(const StFile *f, const StTensor *t, float *out);
// Read an integer tensor into out[st_numel(t)] (I32 copied, I64 range-checked).
int st_read_i32(const StFile *f, const StTensor *t, int32_t *out);

// One tensor to write. Give the data either as raw bytes already in `dtype`
// (`data`), or as fp32 (`f32`) to be converted on the fly (F32, F16 or BF16
// targets only; BF16/F16 round to nearest even). Exactly one of the two is set.
typedef struct {
    const char *name;
    StDtype dtype;  // ST_F32, ST_F16, ST_BF16, ST_I32 or ST_I64
    int ndim;       // 0..ST_MAX_DIMS
    int64_t shape[ST_MAX_DIMS];
    const void *data;  // raw bytes, st_numel * element size
    const float *f32;  // or fp32 source, converted to dtype
} StWriteTensor;

// Write tensors t[0..n) to path atomically, in the order given, with
// "__metadata__": {"format": "pt"} and the header space-padded to a multiple of
// 8 bytes. 0, or -1 with ps_err set (the target is then left untouched).
int st_write(const char *path, int n, const StWriteTensor *t);
// The size in bytes of the file st_write would write for these tensors.
size_t st_write_size(int n, const StWriteTensor *t);
