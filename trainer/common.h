// common.h: error handling and small helpers shared by every host module.
//
// Every call that can fail goes through CHECK (a condition) or a checked
// wrapper (xmalloc, xfopen, ...). A failure prints file:line, what failed and a
// hint, then exits non-zero. Modules that must report errors to a caller
// instead of exiting (readers of user files) use ps_err_set / the int return.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// ps_die: print "postshare: error: <msg>" with the source location and exit 1.
__attribute__((noreturn, format(printf, 3, 4))) void ps_die_at(const char *file, int line,
                                                               const char *fmt, ...);
#define ps_die(...) ps_die_at(__FILE__, __LINE__, __VA_ARGS__)

// Data-parallel jobs: a prefix for error messages ("[rank 3] "), and a hook
// that ps_die / CHECK call instead of returning to exit(1) (it aborts the job).
void ps_set_die_prefix(const char *prefix);
void ps_set_exit_hook(void (*hook)(int status));

// CHECK(cond, "hint %d", x): abort with file:line, the failed condition and a hint.
// The condition is printed as a string argument, so a '%' in it is harmless.
__attribute__((noreturn, format(printf, 4, 5))) void ps_check_failed(const char *file, int line,
                                                                     const char *cond,
                                                                     const char *fmt, ...);
#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) ps_check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__); \
    } while (0)

// Error reporting for readers of user input: ps_err_set stores a message that the
// caller can print (ps_err_msg) after a function returned non-zero.
__attribute__((format(printf, 1, 2))) int ps_err_set(const char *fmt, ...);
const char *ps_err_msg(void);

void *xmalloc_at(const char *file, int line, size_t n);
void *xcalloc_at(const char *file, int line, size_t count, size_t size);
void *xrealloc_at(const char *file, int line, void *p, size_t n);
FILE *xfopen_at(const char *file, int line, const char *path, const char *mode);
char *xstrdup_at(const char *file, int line, const char *s);
#define xmalloc(n) xmalloc_at(__FILE__, __LINE__, (n))
#define xcalloc(c, s) xcalloc_at(__FILE__, __LINE__, (c), (s))
#define xrealloc(p, n) xrealloc_at(__FILE__, __LINE__, (p), (n))
#define xfopen(p, m) xfopen_at(__FILE__, __LINE__, (p), (m))
#define xstrdup(s) xstrdup_at(__FILE__, __LINE__, (s))

// Sizes and counts read from files. Every shape, count or length that comes from
// a file (or a --set) goes through these before it sizes an allocation or an index:
// ps_mul_size / ps_add_size: *out = a * b (a + b); 0, or -1 on size_t overflow.
// ps_bound_count: 0 when lo <= v <= hi, else -1 with ps_err "FILE: KEY is V, out of
// range [lo, hi]" (file names the file, key the field; hint may be NULL).
int ps_mul_size(size_t a, size_t b, size_t *out);
int ps_add_size(size_t a, size_t b, size_t *out);
int ps_bound_count(const char *file, const char *key, int64_t v, int64_t lo, int64_t hi,
                   const char *hint);

// The first non-finite value of x[0..n), or -1 when every value is finite.
int64_t ps_first_nonfinite(const float *x, size_t n);

// UTF-8: the length (1-4) of the valid sequence that starts s[0..n), or 0 when
// it is malformed (overlong, a surrogate, > U+10FFFF, truncated; n >= 1);
// ps_utf8_valid: 1 when all of s[0..n) is valid UTF-8.
int ps_utf8_len(const unsigned char *s, size_t n);
int ps_utf8_valid(const char *s, size_t n);

// Read a whole file into memory (NUL-terminated for text use). Returns NULL and
// sets ps_err on failure; *len receives the size in bytes.
char *ps_read_file(const char *path, size_t *len);

// Streaming atomic file: ps_atomic_open creates "path.tmp.<pid>" and returns
// its FILE (NULL with ps_err set); write to it, then ps_atomic_commit flushes,
// fsyncs, renames over path and fsyncs the directory (0, or -1 with ps_err set
// and the temp file removed); ps_atomic_abort removes the temp file. A crash at
// any point leaves either the old file or the complete new one under path.
typedef struct {
    FILE *fp;
    char *tmp, *path;
} AtomicFile;
FILE *ps_atomic_open(AtomicFile *af, const char *path);
int ps_atomic_commit(AtomicFile *af);
void ps_atomic_abort(AtomicFile *af);

// Write a whole buffer to path atomically: write to "path.tmp.<pid>", fsync,
// rename over path, fsync the directory. Returns 0 or -1 with ps_err set.
int ps_write_file_atomic(const char *path, const void *data, size_t len);

// fsync the directory that holds path, so that a rename into it is durable.
// Returns 0, or -1 when the sync failed (file systems that cannot sync a
// directory count as success).
int ps_fsync_dir_of(const char *path);

// mkdir -p. Returns 0 or -1 with ps_err set.
int ps_mkdirs(const char *path);

// Remove a file or a directory tree (rm -rf; symlinks are removed, not followed).
// 0, or -1 with ps_err set. A missing path is not an error.
int ps_remove_tree(const char *path);

// Put the complete directory `fresh` (written beside `dir`, on the same file
// system) in place of `dir`: entries of the old dir that `fresh` lacks are moved
// over (files a user put there), except the weights files named by `drop`
// (suffixes, NULL-terminated; stale weights would be read instead), then dir
// becomes dir.old.<pid>, fresh becomes dir, and the old one is removed. Until
// the first rename, dir is untouched; after a crash between the two renames
// the previous version is dir.old.<pid>. 0, or -1 with ps_err set.
int ps_dir_replace(const char *fresh, const char *dir, const char *const *drop);

// Wall-clock seconds (monotonic).
double ps_now(void);
// CPU time of the process (all threads), seconds.
double ps_cpu_seconds(void);

// Join dir and name into a freshly allocated path.
char *ps_path_join(const char *dir, const char *name);
// 1 when path exists and is a directory / a regular file.
int ps_is_dir(const char *path);
int ps_is_file(const char *path);
// ps_read_file of a file of at most max bytes (what: "a tiktoken file", for the
// message); NULL with ps_err_set naming the file otherwise.
char *ps_read_file_max(const char *path, size_t max, const char *what, size_t *len);

// FNV-1a 64 over the bit patterns of n floats, one 32-bit word at a time,
// continuing from h (start with PS_FNV1A64_BASIS): a checksum of weights.
#define PS_FNV1A64_BASIS 0xcbf29ce484222325ULL
uint64_t ps_fnv1a64(uint64_t h, const float *x, size_t n);
// The same over n bytes: 32-bit words in memory order, then the last n % 4 bytes
// one at a time (stream in pieces whose sizes are multiples of 4).
uint64_t ps_fnv1a64_bytes(uint64_t h, const void *p, size_t n);

// Deterministic RNG (xorshift64*), used for init, shuffling and tests.
typedef struct {
    uint64_t state;
} Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
float rng_uniform(Rng *r);  // [0, 1)
float rng_normal(Rng *r);   // N(0, 1), Box-Muller

// bf16 / fp16 <-> fp32 conversions (round to nearest even for bf16).
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
// n little-endian bf16 / fp16 values at src (any alignment) to fp32.
void bf16_to_f32_n(float *dst, const void *src, size_t n);
void f16_to_f32_n(float *dst, const void *src, size_t n);
uint16_t f32_to_f16(float f);
