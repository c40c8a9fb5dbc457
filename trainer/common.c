// common.c: error reporting, checked allocation, files, time, RNG and
// floating-point format conversions (see common.h).
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char g_die_prefix[64];
static void (*g_exit_hook)(int status);

void ps_set_die_prefix(const char *prefix) {
    snprintf(g_die_prefix, sizeof g_die_prefix, "%s", prefix);
}

void ps_set_exit_hook(void (*hook)(int status)) {
    g_exit_hook = hook;
}

__attribute__((noreturn)) static void vdie(const char *file, int line, const char *cond,
                                           const char *fmt, va_list ap) {
    fflush(stdout);
    // one write of the whole line, so that a launcher merging the output of
    // several ranks cannot split it
    char msg[4096];
    size_t n = (size_t)snprintf(msg, sizeof msg, "%spostshare: error: ", g_die_prefix);
    if (cond && n < sizeof msg)
        n += (size_t)snprintf(msg + n, sizeof msg - n, "check failed: %s: ", cond);
    if (n < sizeof msg) n += (size_t)vsnprintf(msg + n, sizeof msg - n, fmt, ap);
    const char *base = strrchr(file, '/');  // CMake passes absolute paths: keep the name
    if (n < sizeof msg) snprintf(msg + n, sizeof msg - n, " [%s:%d]", base ? base + 1 : file, line);
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
    if (g_exit_hook) g_exit_hook(1);  // e.g. end every rank of a data-parallel job
    exit(1);
}

void ps_die_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vdie(file, line, NULL, fmt, ap);
}

void ps_check_failed(const char *file, int line, const char *cond, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vdie(file, line, cond, fmt, ap);
}

static char g_err[2048];

int ps_err_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return -1;
}

const char *ps_err_msg(void) {
    return g_err;
}

void *xmalloc_at(const char *file, int line, size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) ps_die_at(file, line, "out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc_at(const char *file, int line, size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) ps_die_at(file, line, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *xrealloc_at(const char *file, int line, void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) ps_die_at(file, line, "out of memory reallocating %zu bytes", n);
    return q;
}

FILE *xfopen_at(const char *file, int line, const char *path, const char *mode) {
    FILE *f = fopen(path, mode);
    if (!f) ps_die_at(file, line, "cannot open '%s' (mode %s): %s", path, mode, strerror(errno));
    return f;
}

char *xstrdup_at(const char *file, int line, const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc_at(file, line, n);
    memcpy(p, s, n);
    return p;
}

int ps_mul_size(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}

int ps_add_size(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

int ps_bound_count(const char *file, const char *key, int64_t v, int64_t lo, int64_t hi,
                   const char *hint) {
    if (v >= lo && v <= hi) return 0;
    return ps_err_set("%s: %s is %lld, out of range [%lld, %lld]%s%s", file, key, (long long)v,
                      (long long)lo, (long long)hi, hint ? ": " : "", hint ? hint : "");
}

int64_t ps_first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (int64_t)i;
    return -1;
}

int ps_utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

int ps_utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int l = ps_utf8_len((const unsigned char *)s + i, n - i);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

char *ps_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ps_err_set("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        ps_err_set("%s: cannot seek", path);
        return NULL;
    }
    long n = ftell(f);
    if (n < 0) {
        fclose(f);
        ps_err_set("%s: cannot tell size (is it a directory?)", path);
        return NULL;
    }
    rewind(f);
    char *buf = xmalloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(buf);
        ps_err_set("%s: short read (%zu of %ld bytes)", path, got, n);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = (size_t)n;
    return buf;
}

int ps_fsync_dir_of(const char *path) {
    char *tmp = xstrdup(path);
    char *dir = dirname(tmp);
    int fd = open(dir, O_RDONLY);
    int rc = 0;
    if (fd >= 0) {
        if (fsync(fd) != 0 && errno != EINVAL) rc = -1;
        close(fd);
    }
    free(tmp);
    return rc;
}

FILE *ps_atomic_open(AtomicFile *af, const char *path) {
    size_t n = strlen(path) + 32;
    af->path = xstrdup(path);
    af->tmp = xmalloc(n);
    snprintf(af->tmp, n, "%s.tmp.%d", path, (int)getpid());
    af->fp = fopen(af->tmp, "wb");
    if (!af->fp) {
        ps_err_set("%s: cannot create: %s", af->tmp, strerror(errno));
        free(af->tmp);
        free(af->path);
        af->tmp = af->path = NULL;
    }
    return af->fp;
}

void ps_atomic_abort(AtomicFile *af) {
    if (af->fp) fclose(af->fp);
    if (af->tmp) unlink(af->tmp);
    free(af->tmp);
    free(af->path);
    memset(af, 0, sizeof *af);
}

int ps_atomic_commit(AtomicFile *af) {
    int bad = ferror(af->fp) || fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0;
    int err = errno;
    if (fclose(af->fp) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    af->fp = NULL;
    if (bad) {
        ps_err_set("%s: write failed: %s", af->tmp, strerror(err));
        ps_atomic_abort(af);
        return -1;
    }
    if (rename(af->tmp, af->path) != 0) {
        ps_err_set("%s: rename to %s failed: %s", af->tmp, af->path, strerror(errno));
        ps_atomic_abort(af);
        return -1;
    }
    ps_fsync_dir_of(af->path);
    free(af->tmp);
    free(af->path);
    memset(af, 0, sizeof *af);
    return 0;
}

int ps_write_file_atomic(const char *path, const void *data, size_t len) {
    AtomicFile af;
    if (!ps_atomic_open(&af, path)) return -1;
    if (len && fwrite(data, 1, len, af.fp) != len) {
        ps_err_set("%s: write failed: %s", af.tmp, strerror(errno));
        ps_atomic_abort(&af);
        return -1;
    }
    return ps_atomic_commit(&af);
}

int ps_mkdirs(const char *path) {
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                ps_err_set("%s: cannot create directory: %s", p, strerror(errno));
                free(p);
                return -1;
            }
            *s = '/';
        }
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        ps_err_set("%s: cannot create directory: %s", p, strerror(errno));
        free(p);
        return -1;
    }
    free(p);
    return 0;
}

double ps_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double ps_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

char *ps_path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    if (dir[0] && dir[strlen(dir) - 1] == '/')
        snprintf(p, n, "%s%s", dir, name);
    else
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int ps_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int ps_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *ps_read_file_max(const char *path, size_t max, const char *what, size_t *len) {
    struct stat st;
    if (stat(path, &st) == 0 && (uint64_t)st.st_size > (uint64_t)max) {
        ps_err_set("%s: %lld bytes is too large for %s (limit %zu)", path, (long long)st.st_size,
                   what, max);
        return NULL;
    }
    return ps_read_file(path, len);
}

void rng_seed(Rng *r, uint64_t seed) {
    // splitmix64 scramble so that nearby seeds give unrelated streams
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    r->state = z ? z : 0x2545F4914F6CDD1Dull;
}

uint64_t rng_u64(Rng *r) {
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return r->state * 0x2545F4914F6CDD1Dull;
}

float rng_uniform(Rng *r) {
    return (float)(rng_u64(r) >> 40) / 16777216.0f;
}

float rng_normal(Rng *r) {
    float u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-7f) u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
    uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)((u + rounding) >> 16);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else {  // subnormal: normalize
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t mant = u & 0x7fffffu;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)h;
}

uint64_t ps_fnv1a64_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t w;
        memcpy(&w, b + i, 4);
        h = (h ^ w) * 0x100000001b3ULL;  // FNV prime
    }
    for (; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static void half_n(float *dst, const void *src, size_t n, float (*conv)(uint16_t)) {
    const uint8_t *p = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = conv(h);
    }
}

void bf16_to_f32_n(float *dst, const void *src, size_t n) {
    half_n(dst, src, n, bf16_to_f32);
}

void f16_to_f32_n(float *dst, const void *src, size_t n) {
    half_n(dst, src, n, f16_to_f32);
}

uint64_t ps_fnv1a64(uint64_t h, const float *x, size_t n) {
    return ps_fnv1a64_bytes(h, x, n * sizeof(float));
}

int ps_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : ps_err_set("%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return ps_err_set("%s: cannot list: %s", path, strerror(errno));
        struct dirent *e;
        int rc = 0;
        while (rc == 0 && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = ps_path_join(path, e->d_name);
            rc = ps_remove_tree(p);
            free(p);
        }
        closedir(d);
        if (rc) return -1;
        if (rmdir(path) != 0) return ps_err_set("%s: cannot remove: %s", path, strerror(errno));
        return 0;
    }
    if (unlink(path) != 0) return ps_err_set("%s: cannot remove: %s", path, strerror(errno));
    return 0;
}

static int has_suffix(const char *s, const char *const *suf) {
    size_t n = strlen(s);
    for (int i = 0; suf && suf[i]; i++) {
        size_t m = strlen(suf[i]);
        if (n >= m && !strcmp(s + n - m, suf[i])) return 1;
    }
    return 0;
}

int ps_dir_replace(const char *fresh, const char *dir, const char *const *drop) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (rename(fresh, dir) != 0)
            return ps_err_set("%s: cannot rename %s to it: %s", dir, fresh, strerror(errno));
        ps_fsync_dir_of(dir);
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) return ps_err_set("%s: exists and is not a directory", dir);
    DIR *d = opendir(dir);
    if (!d) return ps_err_set("%s: cannot list: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || has_suffix(e->d_name, drop))
            continue;
        char *from = ps_path_join(dir, e->d_name), *to = ps_path_join(fresh, e->d_name);
        if (lstat(to, &st) != 0 && rename(from, to) != 0)
            rc = ps_err_set("%s: cannot move it into the new %s: %s", from, fresh, strerror(errno));
        free(from);
        free(to);
    }
    closedir(d);
    if (rc) return -1;
    size_t n = strlen(dir) + 32;
    char *old = xmalloc(n);
    snprintf(old, n, "%s.old.%d", dir, (int)getpid());
    if (rename(dir, old) != 0) {
        rc = ps_err_set("%s: cannot move it aside to %s: %s", dir, old, strerror(errno));
    } else if (rename(fresh, dir) != 0) {
        rc = ps_err_set("%s: cannot rename %s to it: %s (the previous version is %s)", dir, fresh,
                        strerror(errno), old);
    } else {
        ps_fsync_dir_of(dir);
        rc = ps_remove_tree(old);
    }
    free(old);
    return rc;
}
