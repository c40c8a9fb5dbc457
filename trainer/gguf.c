// gguf.c: GGUF reader (see gguf.h). Every read goes through a bounds-checked
// cursor; counts are checked against the bytes left before anything is
// allocated from them.
#define _POSIX_C_SOURCE 200809L
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#define GGUF_MAX_KEY 4096   // bytes in a key
#define GGUF_MAX_NAME 4096  // bytes in a tensor name
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_ALIGN 65536  // general.alignment

// ---------------------------------------------------------------------------
// type tables

typedef struct {
    const char *name;
    uint32_t block;  // elements per block (0: size unknown to this reader)
    uint32_t bytes;  // bytes per block
} GgmlTypeInfo;

static const GgmlTypeInfo GGML_TYPES[] = {
    [0] = {"F32", 1, 4},       [1] = {"F16", 1, 2},       [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},    [6] = {"Q5_0", 32, 22},    [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},    [9] = {"Q8_1", 32, 36},    [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110}, [12] = {"Q4_K", 256, 144}, [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210}, [15] = {"Q8_K", 256, 292}, [16] = {"IQ2_XXS", 0, 0},
    [17] = {"IQ2_XS", 0, 0},   [18] = {"IQ3_XXS", 0, 0},  [19] = {"IQ1_S", 0, 0},
    [20] = {"IQ4_NL", 0, 0},   [21] = {"IQ3_S", 0, 0},    [22] = {"IQ2_S", 0, 0},
    [23] = {"IQ4_XS", 0, 0},   [24] = {"I8", 1, 1},       [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},      [27] = {"I64", 1, 8},      [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 0, 0},    [30] = {"BF16", 1, 2},     [34] = {"TQ1_0", 0, 0},
    [35] = {"TQ2_0", 0, 0},    [39] = {"MXFP4", 0, 0},
};
#define N_GGML_TYPES (sizeof GGML_TYPES / sizeof GGML_TYPES[0])

const char *gguf_ggml_type_name(uint32_t type) {
    static char buf[32];
    if (type < N_GGML_TYPES && GGML_TYPES[type].name) return GGML_TYPES[type].name;
    snprintf(buf, sizeof buf, "type %u", type);
    return buf;
}

static const char *const VALUE_TYPE_NAMES[GGUF_NTYPES] = {
    "UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",  "FLOAT32",
    "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64"};

const char *gguf_value_type_name(GgufType type) {
    return (unsigned)type < GGUF_NTYPES ? VALUE_TYPE_NAMES[type] : "?";
}

// Size of a scalar of this type; 0 for STRING and ARRAY (variable).
static uint64_t scalar_size(GgufType t) {
    static const uint8_t sz[GGUF_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return (unsigned)t < GGUF_NTYPES ? sz[t] : 0;
}

// ---------------------------------------------------------------------------
// bounded cursor

typedef struct {
    const uint8_t *p;
    uint64_t pos, size;
    const char *path;
} Cur;

static uint64_t left(const Cur *c) {
    return c->size - c->pos;
}

static int need(Cur *c, uint64_t n, const char *what) {
    if (n > left(c))
        return ps_err_set("%s: truncated GGUF file: %s needs %llu bytes at offset %llu, %llu left",
                          c->path, what, (unsigned long long)n, (unsigned long long)c->pos,
                          (unsigned long long)left(c));
    return 0;
}

static int rd_u32(Cur *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return -1;
    memcpy(v, c->p + c->pos, 4);
    c->pos += 4;
    return 0;
}

static int rd_u64(Cur *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return -1;
    memcpy(v, c->p + c->pos, 8);
    c->pos += 8;
    return 0;
}

// A string: its bytes stay in the map.
static int rd_str(Cur *c, GgufStr *s, uint64_t max, const char *what) {
    uint64_t n;
    if (rd_u64(c, &n, what)) return -1;
    if (n > max)
        return ps_err_set("%s: %s at offset %llu is %llu bytes long (limit %llu): damaged file",
                          c->path, what, (unsigned long long)(c->pos - 8), (unsigned long long)n,
                          (unsigned long long)max);
    if (need(c, n, what)) return -1;
    s->p = (const char *)c->p + c->pos;
    s->len = n;
    c->pos += n;
    return 0;
}

static char *str_dup(const GgufStr *s) {
    char *r = xmalloc(s->len + 1);
    memcpy(r, s->p, s->len);
    r[s->len] = 0;
    return r;
}

// A key or tensor name (what: "key", "tensor name"), number i, into *out
// (malloc'd, also on failure, so that gguf_close frees it); no NUL bytes inside.
static int rd_name(Cur *c, uint64_t max, const char *what, uint64_t i, char **out) {
    GgufStr s = {NULL, 0};
    if (rd_str(c, &s, max, what)) return -1;
    *out = str_dup(&s);
    if (strlen(*out) != s.len)
        return ps_err_set("%s: %s %llu holds a NUL byte: damaged file", c->path, what,
                          (unsigned long long)i);
    return 0;
}

// Skip one value of type t, validating it (strings and arrays included).
static int skip_value(Cur *c, GgufType t, const char *key, int depth) {
    if ((unsigned)t >= GGUF_NTYPES)
        return ps_err_set("%s: key '%s' has an unknown value type %u", c->path, key, (unsigned)t);
    if (t == GGUF_STRING) {
        GgufStr s;
        return rd_str(c, &s, UINT64_MAX, key);
    }
    if (t == GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (depth > 0)
            return ps_err_set(
                "%s: key '%s' is an array of arrays, which GGUF readers do not "
                "accept here",
                c->path, key);
        if (rd_u32(c, &et, key) || rd_u64(c, &n, key)) return -1;
        if (et >= GGUF_NTYPES || et == GGUF_ARRAY)
            return ps_err_set("%s: key '%s' is an array of unsupported element type %u", c->path,
                              key, et);
        uint64_t es = scalar_size((GgufType)et);
        if (es) {
            if (n > left(c) / es) return need(c, UINT64_MAX, key);
            c->pos += n * es;
            return 0;
        }
        // strings: each needs at least its 8-byte length
        if (n > left(c) / 8) return need(c, UINT64_MAX, key);
        for (uint64_t i = 0; i < n; i++)
            if (skip_value(c, (GgufType)et, key, depth + 1)) return -1;
        return 0;
    }
    uint64_t sz = scalar_size(t);
    if (need(c, sz, key)) return -1;
    c->pos += sz;
    return 0;
}

// ---------------------------------------------------------------------------
// open / parse

void gguf_close(GgufFile *g) {
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) free(g->kv[i].key);
    if (g->t)
        for (int64_t i = 0; i < g->n_tensors; i++) free(g->t[i].name);
    free(g->kv);
    free(g->t);
    if (g->mapped && g->map) munmap((void *)g->map, g->size);
    free(g->path);
    memset(g, 0, sizeof *g);
}

static int parse(GgufFile *g) {
    Cur c = {g->map, 0, g->size, g->path};
    uint32_t version;
    uint64_t n_tensors, n_kv;
    if (g->size < 4 || memcmp(g->map, "GGUF", 4) != 0)
        return ps_err_set("%s: not a GGUF file (no \"GGUF\" magic at the start)", g->path);
    c.pos = 4;
    if (rd_u32(&c, &version, "the version")) return -1;
    if (version == 1)
        return ps_err_set(
            "%s: GGUF version 1 is not supported (only 2 and 3): re-convert it "
            "with a current llama.cpp",
            g->path);
    if (version != 2 && version != 3)
        return ps_err_set("%s: unsupported GGUF version %u (only 2 and 3, little-endian%s)",
                          g->path, version,
                          (version & 0xffff) == 0 ? "; this looks like a big-endian file" : "");
    g->version = version;
    if (rd_u64(&c, &n_tensors, "the tensor count") || rd_u64(&c, &n_kv, "the key count")) return -1;
    // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor
    // info at least 8 + 4 + 8 + 4 + 8. Counts beyond what the file can hold are damage.
    if (n_kv > left(&c) / 13)
        return ps_err_set("%s: damaged GGUF header: %llu keys cannot fit in %llu bytes", g->path,
                          (unsigned long long)n_kv, (unsigned long long)g->size);
    if (n_tensors > left(&c) / 32)
        return ps_err_set("%s: damaged GGUF header: %llu tensors cannot fit in %llu bytes", g->path,
                          (unsigned long long)n_tensors, (unsigned long long)g->size);
    g->kv = xcalloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->n_kv = 0;
    g->alignment = 32;
    for (uint64_t i = 0; i < n_kv; i++) {
        uint32_t ty;
        GgufKV *kv = &g->kv[g->n_kv++];
        if (rd_name(&c, GGUF_MAX_KEY, "key", i, &kv->key)) return -1;
        for (int64_t j = 0; j + 1 < g->n_kv; j++)
            if (strcmp(g->kv[j].key, kv->key) == 0)
                return ps_err_set("%s: key '%s' appears twice", g->path, kv->key);
        if (rd_u32(&c, &ty, kv->key)) return -1;
        if (ty >= GGUF_NTYPES)
            return ps_err_set("%s: key '%s' has an unknown value type %u", g->path, kv->key, ty);
        kv->type = (GgufType)ty;
        kv->n = 1;
        if (ty == GGUF_ARRAY) {
            uint32_t et;
            uint64_t n;
            uint64_t at = c.pos;
            if (rd_u32(&c, &et, kv->key) || rd_u64(&c, &n, kv->key)) return -1;
            kv->arr_type = (GgufType)et;
            kv->n = n;
            kv->val = g->map + c.pos;
            c.pos = at;
        } else {
            kv->val = g->map + c.pos;
        }
        if (skip_value(&c, kv->type, kv->key, 0)) return -1;
    }
    const GgufKV *al = gguf_find(g, "general.alignment");
    if (al) {
        uint32_t a;
        if (gguf_get_u32(g, "general.alignment", &a)) return -1;
        if (a == 0 || (a & (a - 1)) || a > GGUF_MAX_ALIGN)
            return ps_err_set("%s: general.alignment = %u must be a power of two up to %d", g->path,
                              a, GGUF_MAX_ALIGN);
        g->alignment = a;
    }

    g->t = xcalloc(n_tensors ? n_tensors : 1, sizeof *g->t);
    g->n_tensors = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        GgufTensor *t = &g->t[g->n_tensors++];
        if (rd_name(&c, GGUF_MAX_NAME, "tensor name", i, &t->name)) return -1;
        if (rd_u32(&c, &t->n_dims, t->name)) return -1;
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
            return ps_err_set("%s: tensor '%s' has %u dimensions (1 to %d allowed)", g->path,
                              t->name, t->n_dims, GGUF_MAX_DIMS);
        t->nelem = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            if (rd_u64(&c, &t->ne[d], t->name)) return -1;
            if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX ||
                __builtin_mul_overflow(t->nelem, t->ne[d], &t->nelem) ||
                t->nelem > (uint64_t)INT64_MAX)
                return ps_err_set("%s: tensor '%s' has a bad dimension %u (%llu): damaged file",
                                  g->path, t->name, d, (unsigned long long)t->ne[d]);
        }
        if (rd_u32(&c, &t->type, t->name) || rd_u64(&c, &t->offset, t->name)) return -1;
        for (int64_t j = 0; j + 1 < g->n_tensors; j++)
            if (strcmp(g->t[j].name, t->name) == 0)
                return ps_err_set("%s: tensor '%s' appears twice", g->path, t->name);
        if (t->offset % g->alignment)
            return ps_err_set("%s: tensor '%s' has offset %llu, not a multiple of the alignment %u",
                              g->path, t->name, (unsigned long long)t->offset, g->alignment);
        if (t->type < N_GGML_TYPES && GGML_TYPES[t->type].block) {
            const GgmlTypeInfo *ti = &GGML_TYPES[t->type];
            if (t->ne[0] % ti->block)
                return ps_err_set(
                    "%s: tensor '%s' (%s) has a row of %llu elements, not a "
                    "multiple of the block size %u",
                    g->path, t->name, ti->name, (unsigned long long)t->ne[0], ti->block);
            // nelem <= 2^63 and bytes/block <= 292, so this cannot overflow after the division
            uint64_t nb = t->nelem / ti->block;
            if (__builtin_mul_overflow(nb, (uint64_t)ti->bytes, &t->nbytes))
                return ps_err_set("%s: tensor '%s' is too large", g->path, t->name);
        } else if (t->type >= N_GGML_TYPES || !GGML_TYPES[t->type].name) {
            return ps_err_set("%s: tensor '%s' has an unknown ggml type %u", g->path, t->name,
                              t->type);
        }
    }
    // The data section starts at the next multiple of the alignment.
    uint64_t a = g->alignment;
    g->data_off = (c.pos + a - 1) / a * a;
    uint64_t data_size = g->data_off <= g->size ? g->size - g->data_off : 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        GgufTensor *t = &g->t[i];
        if (!t->nbytes) continue;  // a type of unknown size: refused when read
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return ps_err_set(
                "%s: tensor '%s' (%s, %llu bytes at data offset %llu) runs past "
                "the end of the file (%llu data bytes): truncated or damaged file",
                g->path, t->name, gguf_ggml_type_name(t->type), (unsigned long long)t->nbytes,
                (unsigned long long)t->offset, (unsigned long long)data_size);
        t->data = g->map + g->data_off + t->offset;
    }
    return 0;
}

int gguf_parse(const void *buf, size_t size, const char *name, GgufFile *g) {
    memset(g, 0, sizeof *g);
    g->path = xstrdup(name);
    g->map = buf;
    g->size = size;
    if (parse(g) != 0) {
        gguf_close(g);
        return -1;
    }
    return 0;
}

int gguf_open(const char *path, GgufFile *g) {
    memset(g, 0, sizeof *g);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ps_err_set("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ps_err_set("%s: not a regular file", path);
    }
    if (st.st_size < 24) {
        close(fd);
        return ps_err_set("%s: not a GGUF file: %lld bytes, smaller than the 24-byte header", path,
                          (long long)st.st_size);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return ps_err_set("%s: mmap failed: %s", path, strerror(errno));
    g->path = xstrdup(path);
    g->map = m;
    g->size = (size_t)st.st_size;
    g->mapped = 1;
    if (parse(g) != 0) {
        gguf_close(g);
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------
// metadata

const GgufKV *gguf_find(const GgufFile *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

static const GgufKV *get(const GgufFile *g, const char *key) {
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) ps_err_set("%s: key '%s' is missing", g->path, key);
    return kv;
}

static int wrong_type(const GgufFile *g, const GgufKV *kv, const char *want) {
    if (kv->type == GGUF_ARRAY)
        return ps_err_set("%s: key '%s' is an array of %s, expected %s", g->path, kv->key,
                          gguf_value_type_name(kv->arr_type), want);
    return ps_err_set("%s: key '%s' has type %s, expected %s", g->path, kv->key,
                      gguf_value_type_name(kv->type), want);
}

// An integer element of type t at p, as a signed 128-bit-safe pair: *neg set
// for negative values, *mag the magnitude. 0, or -1 when t is not an integer.
static int int_at(GgufType t, const uint8_t *p, int *neg, uint64_t *mag) {
    int64_t s = 0;
    uint64_t u = 0;
    int is_signed = 0;
    switch (t) {
        case GGUF_UINT8:
            u = p[0];
            break;
        case GGUF_BOOL:
            u = p[0] != 0;
            break;
        case GGUF_UINT16: {
            uint16_t v;
            memcpy(&v, p, 2);
            u = v;
            break;
        }
        case GGUF_UINT32: {
            uint32_t v;
            memcpy(&v, p, 4);
            u = v;
            break;
        }
        case GGUF_UINT64:
            memcpy(&u, p, 8);
            break;
        case GGUF_INT8:
            s = (int8_t)p[0];
            is_signed = 1;
            break;
        case GGUF_INT16: {
            int16_t v;
            memcpy(&v, p, 2);
            s = v;
            is_signed = 1;
            break;
        }
        case GGUF_INT32: {
            int32_t v;
            memcpy(&v, p, 4);
            s = v;
            is_signed = 1;
            break;
        }
        case GGUF_INT64:
            memcpy(&s, p, 8);
            is_signed = 1;
            break;
        default:
            return -1;
    }
    if (is_signed) {
        *neg = s < 0;
        *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    } else {
        *neg = 0;
        *mag = u;
    }
    return 0;
}

int gguf_get_u32(const GgufFile *g, const char *key, uint32_t *out) {
    const GgufKV *kv = get(g, key);
    if (!kv) return -1;
    int neg = 0;
    uint64_t m = 0;
    if (kv->type == GGUF_ARRAY || int_at(kv->type, kv->val, &neg, &m) != 0)
        return wrong_type(g, kv, "an unsigned integer");
    if (neg || m > UINT32_MAX)
        return ps_err_set("%s: key '%s' = %s%llu is out of range (0..%u)", g->path, key,
                          neg ? "-" : "", (unsigned long long)m, UINT32_MAX);
    *out = (uint32_t)m;
    return 0;
}

static int float_at(GgufType t, const uint8_t *p, double *v) {
    if (t == GGUF_FLOAT32) {
        float f;
        memcpy(&f, p, 4);
        *v = f;
        return 0;
    }
    if (t == GGUF_FLOAT64) {
        memcpy(v, p, 8);
        return 0;
    }
    return -1;
}

int gguf_get_f32(const GgufFile *g, const char *key, float *out) {
    const GgufKV *kv = get(g, key);
    if (!kv) return -1;
    double v;
    if (kv->type == GGUF_ARRAY || float_at(kv->type, kv->val, &v) != 0)
        return wrong_type(g, kv, "a float");
    *out = (float)v;
    return 0;
}

int gguf_get_bool(const GgufFile *g, const char *key, int *out) {
    const GgufKV *kv = get(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_BOOL) return wrong_type(g, kv, "BOOL");
    *out = kv->val[0] != 0;
    return 0;
}

int gguf_get_str(const GgufFile *g, const char *key, char **out) {
    const GgufKV *kv = get(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_STRING) return wrong_type(g, kv, "STRING");
    GgufStr s;
    memcpy(&s.len, kv->val, 8);  // validated at open
    s.p = (const char *)kv->val + 8;
    if (memchr(s.p, 0, s.len))
        return ps_err_set("%s: key '%s' holds a NUL byte inside its string", g->path, key);
    *out = str_dup(&s);
    return 0;
}

static const GgufKV *get_arr(const GgufFile *g, const char *key) {
    const GgufKV *kv = get(g, key);
    if (kv && kv->type != GGUF_ARRAY) {
        wrong_type(g, kv, "an array");
        return NULL;
    }
    return kv;
}

int gguf_get_arr_str(const GgufFile *g, const char *key, GgufStr **out, uint64_t *n) {
    const GgufKV *kv = get_arr(g, key);
    if (!kv) return -1;
    if (kv->arr_type != GGUF_STRING) return wrong_type(g, kv, "an array of STRING");
    GgufStr *r = xmalloc(sizeof *r * (kv->n ? kv->n : 1));
    const uint8_t *p = kv->val;
    for (uint64_t i = 0; i < kv->n; i++) {  // lengths validated at open
        memcpy(&r[i].len, p, 8);
        r[i].p = (const char *)p + 8;
        p += 8 + r[i].len;
    }
    *out = r;
    *n = kv->n;
    return 0;
}

int gguf_get_arr_i32(const GgufFile *g, const char *key, int32_t **out, uint64_t *n) {
    const GgufKV *kv = get_arr(g, key);
    if (!kv) return -1;
    uint64_t es = scalar_size(kv->arr_type);
    int neg = 0;
    uint64_t m = 0;
    if (kv->arr_type == GGUF_FLOAT32 || kv->arr_type == GGUF_FLOAT64 ||
        kv->arr_type == GGUF_STRING || kv->arr_type == GGUF_BOOL)
        return wrong_type(g, kv, "an array of integers");
    int32_t *r = xmalloc(sizeof *r * (kv->n ? kv->n : 1));
    for (uint64_t i = 0; i < kv->n; i++) {
        int_at(kv->arr_type, kv->val + i * es, &neg, &m);
        if (m > (neg ? (uint64_t)INT32_MAX + 1 : (uint64_t)INT32_MAX)) {
            free(r);
            return ps_err_set("%s: key '%s' element %llu = %s%llu does not fit int32", g->path, key,
                              (unsigned long long)i, neg ? "-" : "", (unsigned long long)m);
        }
        r[i] = neg ? (int32_t)(-(int64_t)m) : (int32_t)m;
    }
    *out = r;
    *n = kv->n;
    return 0;
}

int gguf_get_arr_f32(const GgufFile *g, const char *key, float **out, uint64_t *n) {
    const GgufKV *kv = get_arr(g, key);
    if (!kv) return -1;
    if (kv->arr_type != GGUF_FLOAT32 && kv->arr_type != GGUF_FLOAT64)
        return wrong_type(g, kv, "an array of floats");
    uint64_t es = scalar_size(kv->arr_type);
    float *r = xmalloc(sizeof *r * (kv->n ? kv->n : 1));
    for (uint64_t i = 0; i < kv->n; i++) {
        double v = 0;
        float_at(kv->arr_type, kv->val + i * es, &v);
        r[i] = (float)v;
    }
    *out = r;
    *n = kv->n;
    return 0;
}

// ---------------------------------------------------------------------------
// tensors

const GgufTensor *gguf_tensor(const GgufFile *g, const char *name) {
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->t[i].name, name) == 0) return &g->t[i];
    return NULL;
}

static float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return f16_to_f32(h);
}

int gguf_tensor_f32(const GgufFile *g, const GgufTensor *t, float *dst) {
    const uint8_t *p = t->data;
    uint64_t n = t->nelem;
    switch (t->type) {
        case GGML_F32:
            memcpy(dst, p, n * 4);
            return 0;
        case GGML_F16:
            f16_to_f32_n(dst, p, n);
            return 0;
        case GGML_BF16:
            bf16_to_f32_n(dst, p, n);
            return 0;
        case GGML_Q8_0:  // {fp16 d; int8 q[32]}: x = q * d
            for (uint64_t b = 0; b < n / 32; b++, p += 34) {
                float d = half_at(p);
                for (int j = 0; j < 32; j++) dst[b * 32 + j] = (float)(int8_t)p[2 + j] * d;
            }
            return 0;
        case GGML_Q4_0:  // {fp16 d; uint8 q[16]}: x[j] = (lo(q[j]) - 8) d, x[j+16] = (hi(q[j]) - 8)
                         // d
            for (uint64_t b = 0; b < n / 32; b++, p += 18) {
                float d = half_at(p);
                for (int j = 0; j < 16; j++) {
                    dst[b * 32 + j] = (float)((p[2 + j] & 0x0f) - 8) * d;
                    dst[b * 32 + j + 16] = (float)((p[2 + j] >> 4) - 8) * d;
                }
            }
            return 0;
        case GGML_Q4_1:  // {fp16 d, m; uint8 q[16]}: x[j] = lo(q[j]) d + m, x[j+16] = hi(q[j]) d +
                         // m
            for (uint64_t b = 0; b < n / 32; b++, p += 20) {
                float d = half_at(p), m = half_at(p + 2);
                for (int j = 0; j < 16; j++) {
                    dst[b * 32 + j] = (float)(p[4 + j] & 0x0f) * d + m;
                    dst[b * 32 + j + 16] = (float)(p[4 + j] >> 4) * d + m;
                }
            }
            return 0;
        default:
            return gguf_check_convertible(g, t);
    }
}

int gguf_check_convertible(const GgufFile *g, const GgufTensor *t) {
    switch (t->type) {
        case GGML_F32:
        case GGML_F16:
        case GGML_BF16:
        case GGML_Q8_0:
        case GGML_Q4_0:
        case GGML_Q4_1:
            return 0;
        default:
            return ps_err_set(
                "%s: tensor '%s' has type %s, which is not supported (supported: F32, "
                "F16, BF16, Q8_0, Q4_0, Q4_1); re-quantize or convert the model with "
                "one of those",
                g->path, t->name, gguf_ggml_type_name(t->type));
    }
}
