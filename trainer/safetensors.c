// safetensors.c: safetensors reader (mmap + full header validation) and atomic
// streaming writer (see safetensors.h for the format).
//
// The host is assumed little-endian (x86-64, aarch64), like the format, so F32
// and I32 data are copied byte for byte.
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE  // madvise
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "jsonio.h"

// ---------------------------------------------------------------------------
// dtypes

static const struct {
    const char *name;
    size_t size;
} k_dtypes[] = {
    {"F32", 4}, {"F16", 2},     {"BF16", 2},    {"I32", 4},     {"I64", 8}, {"F64", 8},
    {"I8", 1},  {"U8", 1},      {"BOOL", 1},    {"I16", 2},     {"U16", 2}, {"U32", 4},
    {"U64", 8}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
};

size_t st_dtype_size(const char *s) {
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (strcmp(s, k_dtypes[i].name) == 0) return k_dtypes[i].size;
    return 0;
}

static StDtype dtype_from_str(const char *s) {
    if (!strcmp(s, "F32")) return ST_F32;
    if (!strcmp(s, "F16")) return ST_F16;
    if (!strcmp(s, "BF16")) return ST_BF16;
    if (!strcmp(s, "I32")) return ST_I32;
    if (!strcmp(s, "I64")) return ST_I64;
    return ST_OTHER;
}

const char *st_dtype_name(StDtype d) {
    switch (d) {
        case ST_F32:
            return "F32";
        case ST_F16:
            return "F16";
        case ST_BF16:
            return "BF16";
        case ST_I32:
            return "I32";
        case ST_I64:
            return "I64";
        default:
            return "OTHER";
    }
}

size_t st_numel(const StTensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

const char *st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

// ---------------------------------------------------------------------------
// reader

// A JSON number that is a non-negative integer exactly representable (< 2^53).
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0) || d != floor(d) || d > 9007199254740992.0) return 0;
    *out = (uint64_t)d;
    return 1;
}

void st_close(StFile *f) {
    if (f->t) {
        for (int i = 0; i < f->n; i++) free(f->t[i].name);
        free(f->t);
    }
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int cmp_by_begin(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_by_name(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    return strcmp(x->name, y->name);
}

// Parse one header entry into t. Returns 0 or -1 with ps_err set.
static int parse_entry(const StFile *f, const cJSON *e, StTensor *t) {
    const char *path = f->path, *nm = e->string;
    char sb[256];
    if (!cJSON_IsObject(e))
        return ps_err_set("%s: header entry '%s' is not a JSON object", path, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !dt->valuestring[0] || strlen(dt->valuestring) >= 16)
        return ps_err_set("%s: tensor '%s' has no valid \"dtype\" string", path, nm);
    if (!cJSON_IsArray(sh)) return ps_err_set("%s: tensor '%s' has no \"shape\" array", path, nm);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return ps_err_set("%s: tensor '%s' has no \"data_offsets\" [begin, end] pair", path, nm);
    t->name = xstrdup(nm);
    snprintf(t->dtype_str, sizeof t->dtype_str, "%s", dt->valuestring);
    t->dtype = dtype_from_str(t->dtype_str);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS)
        return ps_err_set("%s: tensor '%s' has %d dimensions (at most %d supported)", path, nm, nd,
                          ST_MAX_DIMS);
    t->ndim = nd;
    // element count, with overflow checks (a lying shape must not wrap around)
    size_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (!json_uint(cJSON_GetArrayItem(sh, i), &d))
            return ps_err_set("%s: tensor '%s': shape entry %d is not a non-negative integer", path,
                              nm, i);
        t->shape[i] = (int64_t)d;
        if (d && numel > SIZE_MAX / d) overflow = 1;
        numel *= (size_t)d;
    }
    uint64_t b, en;
    if (!json_uint(cJSON_GetArrayItem(off, 0), &b) || !json_uint(cJSON_GetArrayItem(off, 1), &en))
        return ps_err_set("%s: tensor '%s': data_offsets must be non-negative integers", path, nm);
    t->begin = (size_t)b;
    t->end = (size_t)en;
    if (b > en)
        return ps_err_set(
            "%s: tensor '%s': data_offsets [%llu, %llu] are out of order "
            "(begin > end); the header lies about offsets",
            path, nm, (unsigned long long)b, (unsigned long long)en);
    size_t esz = st_dtype_size(t->dtype_str);
    if (esz) {  // unknown dtypes (none today) skip the size check but keep the bounds checks
        if (overflow || numel > SIZE_MAX / esz)
            return ps_err_set("%s: tensor '%s': shape %s is too large", path, nm,
                              st_shape_str(sb, sizeof sb, nd, t->shape));
        if (en - b != numel * esz)
            return ps_err_set(
                "%s: tensor '%s': data_offsets [%llu, %llu] span %llu bytes but "
                "shape %s of %s needs %zu bytes; the header lies about offsets",
                path, nm, (unsigned long long)b, (unsigned long long)en,
                (unsigned long long)(en - b), st_shape_str(sb, sizeof sb, nd, t->shape),
                t->dtype_str, numel * esz);
    }
    if (en > f->data_len)
        return ps_err_set(
            "%s: tensor '%s': data_offsets [%llu, %llu] extend beyond the data "
            "section (%zu bytes): the file is truncated or the header lies "
            "about offsets",
            path, nm, (unsigned long long)b, (unsigned long long)en, f->data_len);
    return 0;
}

int st_open(const char *path, StFile *f) {
    memset(f, 0, sizeof *f);
    f->path = xstrdup(path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        ps_err_set("%s: cannot open: %s", path, strerror(errno));
        st_close(f);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        ps_err_set("%s: not a regular file", path);
        st_close(f);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {
        close(fd);
        ps_err_set("%s: file is %zu bytes, too small for a safetensors header (truncated?)", path,
                   size);
        st_close(f);
        return -1;
    }
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        ps_err_set("%s: mmap failed: %s", path, strerror(errno));
        st_close(f);
        return -1;
    }
    f->map = m;
    f->map_len = size;
    const uint8_t *p = m;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > size - 8) {
        ps_err_set(
            "%s: header length %llu is larger than the file (%zu bytes): the file is "
            "truncated or not safetensors",
            path, (unsigned long long)hlen, size);
        st_close(f);
        return -1;
    }
    f->data = (uint8_t *)m + 8 + hlen;
    f->data_len = size - 8 - (size_t)hlen;

    // only padding may follow the JSON value
    char what[1100];
    snprintf(what, sizeof what, "%s: header (%llu bytes)", path, (unsigned long long)hlen);
    cJSON *root = ps_json_parse((const char *)p + 8, (size_t)hlen, what);
    if (!root) {
        st_close(f);
        return -1;
    }
    if (!cJSON_IsObject(root)) {
        ps_err_set("%s: header is not a JSON object", path);
        cJSON_Delete(root);
        st_close(f);
        return -1;
    }
    int cap = cJSON_GetArraySize(root);
    f->t = xcalloc((size_t)(cap > 0 ? cap : 1), sizeof(StTensor));
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e->string && strcmp(e->string, "__metadata__") == 0) continue;
        if (!e->string) continue;
        StTensor *t = &f->t[f->n++];
        if (parse_entry(f, e, t) != 0) {
            cJSON_Delete(root);
            st_close(f);
            return -1;
        }
    }
    cJSON_Delete(root);

    // Duplicate names and overlapping byte ranges (zero-size tensors own no bytes).
    if (f->n > 1) {
        const StTensor **ord = xmalloc(sizeof(*ord) * (size_t)f->n);
        for (int i = 0; i < f->n; i++) ord[i] = &f->t[i];
        qsort(ord, (size_t)f->n, sizeof *ord, cmp_by_name);
        for (int i = 1; i < f->n; i++) {
            if (strcmp(ord[i - 1]->name, ord[i]->name) == 0) {
                ps_err_set("%s: tensor '%s' appears twice in the header", path, ord[i]->name);
                free(ord);
                st_close(f);
                return -1;
            }
        }
        qsort(ord, (size_t)f->n, sizeof *ord, cmp_by_begin);
        const StTensor *last = NULL;  // the non-empty tensor reaching furthest so far
        for (int i = 0; i < f->n; i++) {
            const StTensor *t = ord[i];
            if (t->begin == t->end) continue;
            if (last && t->begin < last->end) {
                ps_err_set(
                    "%s: tensors '%s' [%zu, %zu] and '%s' [%zu, %zu] overlap: the header "
                    "lies about offsets",
                    path, last->name, last->begin, last->end, t->name, t->begin, t->end);
                free(ord);
                st_close(f);
                return -1;
            }
            if (!last || t->end > last->end) last = t;
        }
        free(ord);
    }
    return 0;
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

// A tensor's bytes have been read: let the kernel drop their pages, so that a
// model being loaded holds its converted weights and not also the file (peak
// RSS). The mapping is private and never written: touching the pages again
// reads them back from the file.
static void st_release(const StFile *f, const StTensor *t) {
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)(f->data + t->begin) & ~(pg - 1);
    uintptr_t b = ((uintptr_t)(f->data + t->end) + pg - 1) & ~(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

int st_read_f32(const StFile *f, const StTensor *t, float *out) {
    const uint8_t *src = f->data + t->begin;
    size_t n = st_numel(t);
    switch (t->dtype) {
        case ST_F32:
            memcpy(out, src, n * 4);
            st_release(f, t);
            return 0;
        case ST_BF16:
            bf16_to_f32_n(out, src, n);
            st_release(f, t);
            return 0;
        case ST_F16:
            f16_to_f32_n(out, src, n);
            st_release(f, t);
            return 0;
        default:
            return ps_err_set(
                "%s: tensor '%s' has dtype %s, which is not supported for float "
                "weights (F32, F16 and BF16 are)",
                f->path, t->name, t->dtype_str);
    }
}

int st_read_i32(const StFile *f, const StTensor *t, int32_t *out) {
    const uint8_t *src = f->data + t->begin;
    size_t n = st_numel(t);
    if (t->dtype == ST_I32) {
        memcpy(out, src, n * 4);
        return 0;
    }
    if (t->dtype == ST_I64) {
        for (size_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, src + 8 * i, 8);
            if (v < INT32_MIN || v > INT32_MAX)
                return ps_err_set("%s: tensor '%s': element %zu = %lld does not fit in int32",
                                  f->path, t->name, i, (long long)v);
            out[i] = (int32_t)v;
        }
        return 0;
    }
    return ps_err_set(
        "%s: tensor '%s' has dtype %s, which is not supported for integer data "
        "(I32 and I64 are)",
        f->path, t->name, t->dtype_str);
}

// ---------------------------------------------------------------------------
// writer

typedef struct {
    char *s;
    size_t len, cap;
} Sb;

__attribute__((format(printf, 2, 3))) static void sb_printf(Sb *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        CHECK(k >= 0, "vsnprintf failed");
        if ((size_t)k < b->cap - b->len) {
            b->len += (size_t)k;
            return;
        }
        b->cap = 2 * b->cap + (size_t)k + 64;
        b->s = xrealloc(b->s, b->cap);
    }
}

// JSON string literal (names are ASCII in practice; escape what JSON requires).
static void sb_json_str(Sb *b, const char *s) {
    sb_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            sb_printf(b, "\\u%04x", *p);
        else
            sb_printf(b, "%c", *p);
    }
    sb_printf(b, "\"");
}

static size_t dtype_size(StDtype d) {
    switch (d) {
        case ST_F32:
        case ST_I32:
            return 4;
        case ST_F16:
        case ST_BF16:
            return 2;
        case ST_I64:
            return 8;
        default:
            return 0;
    }
}

static size_t wt_numel(const StWriteTensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

// Write fp32 src[n] converted to dtype d.
static int write_converted(FILE *fp, StDtype d, const float *src, size_t n) {
    enum { CHUNK = 1 << 16 };
    if (d == ST_F32) return fwrite(src, 4, n, fp) == n ? 0 : -1;
    static uint16_t buf[CHUNK];  // not reentrant; fine, writing is single-threaded
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        for (size_t j = 0; j < k; j++)
            buf[j] = d == ST_BF16 ? f32_to_bf16(src[i + j]) : f32_to_f16(src[i + j]);
        if (fwrite(buf, 2, k, fp) != k) return -1;
    }
    return 0;
}

// The header st_write writes: metadata first, then the tensors in the order
// given, packed back to back, space-padded to a multiple of 8 bytes. *data_bytes
// (if given) receives the size of the data section.
static Sb build_header(int n, const StWriteTensor *t, size_t *data_bytes) {
    Sb h = {xmalloc(4096), 0, 4096};
    sb_printf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t bytes = wt_numel(&t[i]) * dtype_size(t[i].dtype);
        sb_printf(&h, ",");
        sb_json_str(&h, t[i].name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t[i].dtype));
        for (int k = 0; k < t[i].ndim; k++)
            sb_printf(&h, "%s%lld", k ? "," : "", (long long)t[i].shape[k]);
        sb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + bytes);
        off += bytes;
    }
    sb_printf(&h, "}");
    while (h.len % 8) sb_printf(&h, " ");  // data section starts 8-byte aligned
    if (data_bytes) *data_bytes = off;
    return h;
}

size_t st_write_size(int n, const StWriteTensor *t) {
    size_t data;
    Sb h = build_header(n, t, &data);
    free(h.s);
    return 8 + h.len + data;
}

int st_write(const char *path, int n, const StWriteTensor *t) {
    // Validate the request before touching the disk.
    for (int i = 0; i < n; i++) {
        const StWriteTensor *w = &t[i];
        if (!w->name || !w->name[0] || strcmp(w->name, "__metadata__") == 0)
            return ps_err_set("%s: tensor %d has an invalid name", path, i);
        if (dtype_size(w->dtype) == 0)
            return ps_err_set("%s: tensor '%s': cannot write dtype %d", path, w->name,
                              (int)w->dtype);
        if (w->ndim < 0 || w->ndim > ST_MAX_DIMS)
            return ps_err_set("%s: tensor '%s': bad ndim %d", path, w->name, w->ndim);
        for (int k = 0; k < w->ndim; k++)
            if (w->shape[k] < 0)
                return ps_err_set("%s: tensor '%s': negative dimension", path, w->name);
        if ((w->data == NULL) == (w->f32 == NULL) && wt_numel(w) > 0)
            return ps_err_set("%s: tensor '%s': give exactly one of data / f32", path, w->name);
        if (w->f32 && (w->dtype == ST_I32 || w->dtype == ST_I64))
            return ps_err_set("%s: tensor '%s': fp32 source needs a float dtype", path, w->name);
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].name, w->name) == 0)
                return ps_err_set("%s: tensor '%s' given twice", path, w->name);
    }

    Sb h = build_header(n, t, NULL);

    AtomicFile af;
    FILE *fp = ps_atomic_open(&af, path);
    if (!fp) {
        free(h.s);
        return -1;
    }
    setvbuf(fp, NULL, _IOFBF, 1 << 20);
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    int bad = fwrite(lenb, 1, 8, fp) != 8 || fwrite(h.s, 1, h.len, fp) != h.len;
    free(h.s);
    for (int i = 0; i < n && !bad; i++) {
        size_t ne = wt_numel(&t[i]);
        if (ne == 0) continue;
        if (t[i].f32)
            bad = write_converted(fp, t[i].dtype, t[i].f32, ne) != 0;
        else
            bad = fwrite(t[i].data, dtype_size(t[i].dtype), ne, fp) != ne;
    }
    if (bad) {
        ps_err_set("%s: write failed: %s", af.tmp, strerror(errno));
        ps_atomic_abort(&af);
        return -1;
    }
    return ps_atomic_commit(&af);
}
