// fuzz_util.h: helpers for the libFuzzer harnesses in tests/fuzz (README.md there).
#pragma once
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

// A per-process scratch directory, made on first use, removed at exit.
static char fuzz_scratch[64];
static inline void fuzz_cleanup(void) {
    ps_remove_tree(fuzz_scratch);
}
static inline const char *fuzz_dir(void) {
    if (!fuzz_scratch[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_scratch, sizeof fuzz_scratch, "%.40s/psfuzz.%d", t && *t ? t : "/tmp",
                 (int)getpid());
        if (ps_mkdirs(fuzz_scratch) != 0) abort();
        atexit(fuzz_cleanup);
    }
    return fuzz_scratch;
}

// Write the input to <scratch>/<name> and return its path (valid until the next call
// with the same name).
static inline const char *fuzz_file(const uint8_t *d, size_t n, const char *name) {
    static char path[4][256];
    static int next;
    char *p = path[next++ & 3];
    snprintf(p, 256, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(p, "wb");
    if (!f || (n && fwrite(d, 1, n, f) != n) || fclose(f) != 0) abort();
    return p;
}

// The input as a NUL-terminated string (caller frees).
static inline char *fuzz_str(const uint8_t *d, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    memcpy(s, d, n);
    s[n] = 0;
    return s;
}

// FUZZ_CALL(expr): run expr; when the code under test calls ps_die / CHECK (which
// would exit), come back here instead (the readers should return errors, but a
// clean "error: ..." exit is not a crash).
static jmp_buf fuzz_jmp;
static int fuzz_jmp_set;
static inline void fuzz_exit_hook(int status) {
    (void)status;
    if (fuzz_jmp_set) longjmp(fuzz_jmp, 1);
}
#define FUZZ_CALL(expr)                   \
    do {                                  \
        ps_set_exit_hook(fuzz_exit_hook); \
        if (setjmp(fuzz_jmp) == 0) {      \
            fuzz_jmp_set = 1;             \
            expr;                         \
        }                                 \
        fuzz_jmp_set = 0;                 \
    } while (0)
