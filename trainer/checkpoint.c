// checkpoint.c: the HDF5 checkpoint file: layout, crash-safe writer, verifying
// reader, and the run directory's list of checkpoints (see checkpoint.h and
// docs/checkpoints.md).
//
//   /                      attrs: format, format_version, program_version, created,
//                          step, tokens_seen, optim_t, lr, elapsed_s, first_val_loss
//   /config                the resolved job config (YAML text)
//   /plan                  the sharing plan (JSON text), only when there is one
//   /model                 attrs: the LlamaConfig (dim, n_layers, ...), n_params
//   /data                  attrs: the train loader position, global batch (samples per step)
//                          and data-parallel world size; /data/train_shards (text)
//   /rng                   attrs: one uint64 per named RNG state
//   /params/<HF name>/     one group per tensor in table order (attrs index, offset)
//       master, adam_m, adam_v   fp32 datasets of the tensor's HF shape
//
// Every dataset (texts included) is chunked with Fletcher32, and the file is
// written in the HDF5 1.10 format so that its metadata is checksummed too.
#define _POSIX_C_SOURCE 200809L
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

// The datasets of each tensor's group: fp32 master weights, AdamW m and v.
static const char *const TENSOR_DSETS[3] = {"master", "adam_m", "adam_v"};

// Chunks of about 256 KiB: each gets its own checksum, and they fit HDF5's
// default 1 MiB chunk cache. (Writing a 1.27 GB checkpoint on the development
// machine: 1 MiB chunks were slower and less steady, 4 MiB chunks, which
// bypass that cache, about half as fast.)
#define CHUNK_BYTES (1u << 18)

// ---------------------------------------------------------------------------
// Errors

// HDF5 keeps its own error stack. Its automatic printing is turned off, and
// h5_fail folds the innermost entry (the most specific reason) into ps_err.
// Also: no HDF5 clean-up at exit. After a write failed (a full disk), HDF5 cannot
// close the file (its last flush fails too) and its exit handler then crashed
// walking the half-closed file (HDF5 1.10); every file we open we close
// ourselves, so there is nothing left for that handler to do.
static void h5_quiet(void) {
    static int done;
    if (!done) {
        H5dont_atexit();  // only works before the library's first use: call this first
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    }
    done = 1;
}

static herr_t take_innermost(unsigned n, const H5E_error2_t *e, void *data) {
    if (n == 0 && e->desc) snprintf((char *)data, 256, "%s", e->desc);
    return 0;
}

// Every HDF5 call clears the error stack first, so a helper that closes
// handles after a failure notes the reason first; h5_fail falls back to it.
static char g_noted[256];

static void h5_note(void) {
    char raw[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_innermost, raw);
    if (raw[0]) memcpy(g_noted, raw, sizeof raw);
}

// Plain words for the reasons users meet: damage, truncation, a wrong file.
static const char *plain_reason(const char *raw) {
    if (strstr(raw, "checksum") || strstr(raw, "Fletcher32"))
        return "checksum mismatch: the file is damaged";
    if (strstr(raw, "truncated file")) return "the file is truncated";
    if (strstr(raw, "file signature not found")) return "not an HDF5 file";
    return NULL;
}

__attribute__((format(printf, 3, 4))) static int h5_fail(const char *path, int line,
                                                         const char *fmt, ...) {
    char what[512], raw[256] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_innermost, raw);
    H5Eclear2(H5E_DEFAULT);
    if (!raw[0]) memcpy(raw, g_noted, sizeof raw);
    g_noted[0] = 0;
    const char *plain = plain_reason(raw);
    if (plain)
        return ps_err_set("%s: %s: %s (HDF5: %s; checkpoint.c:%d)", path, what, plain, raw, line);
    return ps_err_set("%s: %s (HDF5: %s; checkpoint.c:%d)", path, what, raw[0] ? raw : "failed",
                      line);
}

// H5_TRY(path, call, "what", ...): an HDF5 call that must succeed (negative
// means failure). On failure ps_err reads "<path>: <what>: <reason> (HDF5:
// <its message>; checkpoint.c:LINE)" and control goes to `fail`.
#define H5_TRY(path, call, ...)                   \
    do {                                          \
        if ((call) < 0) {                         \
            h5_fail(path, __LINE__, __VA_ARGS__); \
            goto fail;                            \
        }                                         \
    } while (0)

// BAD(path, "problem", ...): a problem found by our own checks; goes to `fail`.
#define BAD(path, ...)               \
    do {                             \
        bad_file(path, __VA_ARGS__); \
        goto fail;                   \
    } while (0)

__attribute__((format(printf, 2, 3))) static void bad_file(const char *path, const char *fmt, ...) {
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    ps_err_set("%s: %s", path, what);
}

// File access for both directions. Strong close: closing the file closes every
// object still open in it, so error paths need to close only the file.
// Locking off: a checkpoint is never opened by two writers (it is written under
// a temp name), and cluster file systems often refuse flock.
static hid_t make_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    if (H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0 ||
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) < 0 ||
        H5Pset_file_locking(fapl, 0, 1) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

// Creation lists for the file (cls H5P_FILE_CREATE: the root group) and for
// groups (H5P_GROUP_CREATE). Attributes stay in the object header ("compact")
// up to 64 per object, instead of moving to dense storage after 8, which
// HDF5 1.10 cannot modify in place and which older tools read less well.
// track_order: remember the creation order of links (the table order).
static hid_t make_cpl(hid_t cls, int track_order) {
    hid_t p = H5Pcreate(cls);
    if (p < 0) return -1;
    if (H5Pset_attr_phase_change(p, 64, 48) < 0 ||
        (track_order &&
         H5Pset_link_creation_order(p, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED) < 0)) {
        H5Pclose(p);
        return -1;
    }
    return p;
}

// ---------------------------------------------------------------------------
// Attributes and texts

typedef enum { A_I32, A_I64, A_U64, A_F32, A_F64, A_STR } AttrType;

// One scalar attribute, described once for both directions.
typedef struct {
    const char *group;  // "/" or "/data", ...
    const char *name;
    AttrType type;
    size_t off;    // offsetof in the struct the table describes
    size_t size;   // A_STR: capacity of the char array
    int optional;  // added after format 1 was in use: a file without it reads as 0
} AttrSpec;

#define META(f) offsetof(CkptMeta, f), sizeof(((CkptMeta *)0)->f), 0
#define META_OPTIONAL(f) offsetof(CkptMeta, f), sizeof(((CkptMeta *)0)->f), 1
#define MCFG(f) offsetof(LlamaConfig, f), sizeof(((LlamaConfig *)0)->f), 0
#define MCFG_OPTIONAL(f) offsetof(LlamaConfig, f), sizeof(((LlamaConfig *)0)->f), 1

// clang-format off
static const AttrSpec META_ATTRS[] = {
    {"/", "format_version",   A_I32, META(format_version)},
    {"/", "program_version",  A_STR, META(program_version)},
    {"/", "created",          A_STR, META(created)},
    {"/", "step",             A_I64, META(step)},
    {"/", "tokens_seen",      A_I64, META(tokens_seen)},
    {"/", "optim_t",          A_I64, META(optim_t)},
    {"/", "lr",               A_F64, META(lr)},
    {"/", "elapsed_s",        A_F64, META(elapsed_s)},
    {"/", "first_val_loss",   A_F64, META(first_val_loss)},
    {"/data", "sample",       A_U64, META(loader.sample)},
    {"/data", "seed",         A_U64, META(loader.seed)},
    {"/data", "n_windows",    A_U64, META(loader.n_windows)},
    {"/data", "shuffle",      A_I32, META(shuffle)},
    {"/data", "epoch",        A_U64, META(epoch)},
    {"/data", "shard",        A_STR, META(shard)},
    {"/data", "shard_offset", A_I64, META(shard_offset)},
    {"/data", "global_batch", A_I64, META_OPTIONAL(global_batch)},
    {"/data", "world_size",   A_I32, META_OPTIONAL(world_size)},
};
static const AttrSpec MODEL_ATTRS[] = {
    {"/model", "dim",            A_I32, MCFG(dim)},
    {"/model", "n_layers",       A_I32, MCFG(n_layers)},
    {"/model", "n_heads",        A_I32, MCFG(n_heads)},
    {"/model", "n_kv_heads",     A_I32, MCFG(n_kv_heads)},
    {"/model", "ffn_dim",        A_I32, MCFG(ffn_dim)},
    {"/model", "vocab_size",     A_I32, MCFG(vocab_size)},
    {"/model", "max_seq_len",    A_I32, MCFG(max_seq_len)},
    {"/model", "rope_theta",     A_F32, MCFG(rope_theta)},
    {"/model", "norm_eps",       A_F32, MCFG(norm_eps)},
    {"/model", "tie_embeddings", A_I32, MCFG(tie_embeddings)},
    {"/model", "head_dim",       A_I32, MCFG_OPTIONAL(head_dim)},
    {"/model", "rope_type",      A_I32, MCFG_OPTIONAL(rope_type)},
    {"/model", "rope_factor",    A_F32, MCFG_OPTIONAL(rope_factor)},
    {"/model", "rope_low_freq_factor",  A_F32, MCFG_OPTIONAL(rope_low_freq_factor)},
    {"/model", "rope_high_freq_factor", A_F32, MCFG_OPTIONAL(rope_high_freq_factor)},
    {"/model", "rope_orig_max_pos",     A_I32, MCFG_OPTIONAL(rope_orig_max_pos)},
};
// clang-format on
#define N_META_ATTRS ((int)(sizeof META_ATTRS / sizeof META_ATTRS[0]))
#define N_MODEL_ATTRS ((int)(sizeof MODEL_ATTRS / sizeof MODEL_ATTRS[0]))

// File and memory types of a numeric attribute (file types are little-endian
// whatever the host, memory types native).
static hid_t file_type(AttrType t) {
    switch (t) {
        case A_I32:
            return H5T_STD_I32LE;
        case A_I64:
            return H5T_STD_I64LE;
        case A_U64:
            return H5T_STD_U64LE;
        case A_F32:
            return H5T_IEEE_F32LE;
        case A_F64:
            return H5T_IEEE_F64LE;
        case A_STR:
            break;
    }
    return -1;
}

static hid_t mem_type(AttrType t) {
    switch (t) {
        case A_I32:
            return H5T_NATIVE_INT32;
        case A_I64:
            return H5T_NATIVE_INT64;
        case A_U64:
            return H5T_NATIVE_UINT64;
        case A_F32:
            return H5T_NATIVE_FLOAT;
        case A_F64:
            return H5T_NATIVE_DOUBLE;
        case A_STR:
            break;
    }
    return -1;
}

// A fixed-length, NUL-terminated string type of n bytes (n >= 1).
static hid_t str_type(size_t n) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    if (H5Tset_size(t, n) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static herr_t put_attr(hid_t loc, const char *name, AttrType type, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR), ft = -1, a = -1;
    herr_t rc = -1;
    if (type == A_STR) ft = str_type(strlen(v) + 1);
    if (sp >= 0 && (type != A_STR || ft >= 0))
        a = H5Acreate2(loc, name, type == A_STR ? ft : file_type(type), sp, H5P_DEFAULT,
                       H5P_DEFAULT);
    if (a >= 0) rc = H5Awrite(a, type == A_STR ? ft : mem_type(type), v);
    if (a >= 0 && H5Aclose(a) < 0) rc = -1;
    if (rc < 0) h5_note();
    if (ft >= 0) H5Tclose(ft);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

// Read a string attribute into buf[cap] (truncated to fit, always terminated).
static herr_t get_str_attr(hid_t a, char *buf, size_t cap) {
    hid_t ft = H5Aget_type(a), mt = -1;
    herr_t rc = -1;
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING && !H5Tis_variable_str(ft)) {
        size_t n = H5Tget_size(ft);
        char *tmp = xcalloc(n + 1, 1);
        mt = str_type(n + 1);
        if (mt >= 0) rc = H5Aread(a, mt, tmp);
        if (rc < 0) h5_note();
        snprintf(buf, cap, "%s", tmp);
        free(tmp);
    }
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    return rc;
}

// Write (dir > 0) or read (dir < 0) the attributes of a table for struct base.
static int attrs_io(hid_t f, const char *path, const AttrSpec *spec, int n, void *base, int dir) {
    for (int i = 0; i < n; i++) {
        const AttrSpec *s = &spec[i];
        char *field = (char *)base + s->off;
        hid_t g = -1, a = -1;
        H5_TRY(path, g = H5Gopen2(f, s->group, H5P_DEFAULT), "opening group %s", s->group);
        if (dir > 0) {
            H5_TRY(path, put_attr(g, s->name, s->type, field), "writing attribute %s%s%s", s->group,
                   s->group[1] ? "/" : "", s->name);
        } else {
            htri_t has = H5Aexists(g, s->name);
            H5_TRY(path, has, "looking for attribute %s", s->name);
            if (!has && s->optional) {
                memset(field, 0, s->size);
                H5Gclose(g);
                continue;
            }
            if (!has)
                BAD(path, "attribute '%s' is missing from %s (not a complete PostShare checkpoint)",
                    s->name, s->group);
            H5_TRY(path, a = H5Aopen(g, s->name, H5P_DEFAULT), "opening attribute %s", s->name);
            if (s->type == A_STR)
                H5_TRY(path, get_str_attr(a, field, s->size), "reading string attribute %s%s%s",
                       s->group, s->group[1] ? "/" : "", s->name);
            else
                H5_TRY(path, H5Aread(a, mem_type(s->type), field), "reading attribute %s%s%s",
                       s->group, s->group[1] ? "/" : "", s->name);
            H5Aclose(a);
        }
        H5Gclose(g);
        continue;
    fail:
        if (a >= 0) H5Aclose(a);
        if (g >= 0) H5Gclose(g);
        return -1;
    }
    return 0;
}

// A dataset creation list: chunked as `chunk`, Fletcher32, no fill pass
// (every element is written).
static hid_t checked_dcpl(int ndim, const hsize_t *chunk) {
    hid_t p = H5Pcreate(H5P_DATASET_CREATE);
    if (p < 0) return -1;
    if (H5Pset_chunk(p, ndim, chunk) < 0 || H5Pset_fletcher32(p) < 0 ||
        H5Pset_fill_time(p, H5D_FILL_TIME_NEVER) < 0) {
        H5Pclose(p);
        return -1;
    }
    return p;
}

// A text as a one-element dataset of a fixed-length string, so that it is
// chunked and checksummed like the tensors (h5dump prints it as a string).
static herr_t put_text(hid_t loc, const char *name, const char *text) {
    if (!text) text = "";
    hsize_t one = 1;
    hid_t sp = H5Screate_simple(1, &one, NULL), t = str_type(strlen(text) + 1),
          p = checked_dcpl(1, &one), d = -1;
    herr_t rc = -1;
    if (sp >= 0 && t >= 0 && p >= 0) d = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, p, H5P_DEFAULT);
    if (d >= 0) rc = H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, text);
    if (d >= 0 && H5Dclose(d) < 0) rc = -1;
    if (rc < 0) h5_note();
    if (p >= 0) H5Pclose(p);
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

// Read a text dataset written by put_text into a fresh string (*out).
static int get_text(hid_t loc, const char *path, const char *name, char **out) {
    hid_t d = -1, ft = -1, mt = -1, sp = -1;
    char *buf = NULL;
    *out = NULL;
    H5_TRY(path, d = H5Dopen2(loc, name, H5P_DEFAULT), "opening text dataset '%s'", name);
    H5_TRY(path, ft = H5Dget_type(d), "reading the type of '%s'", name);
    H5_TRY(path, sp = H5Dget_space(d), "reading the shape of '%s'", name);
    if (H5Tget_class(ft) != H5T_STRING || H5Tis_variable_str(ft) > 0 ||
        H5Sget_simple_extent_npoints(sp) != 1)
        BAD(path, "dataset '%s' is not a text (one fixed-length string)", name);
    size_t n = H5Tget_size(ft);
    buf = xcalloc(n + 1, 1);
    H5_TRY(path, mt = str_type(n + 1), "making a string type");
    H5_TRY(path, H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), "reading text '%s'", name);
    H5Tclose(mt);
    H5Tclose(ft);
    H5Sclose(sp);
    H5Dclose(d);
    *out = buf;
    return 0;
fail:
    free(buf);
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    return -1;
}

// ---------------------------------------------------------------------------
// The whole-file checksum: a 32-byte trailer after the HDF5 data (HDF5 and h5py
// ignore bytes past the file's end of allocation):
//   "PSCKSUM1" | u64 LE covered length | u64 LE hash of those bytes | "PSCKEND!"
// The hash: each 4 MiB block through 4 interleaved FNV-1a-style lanes over 64-bit
// little-endian words (every step a bijection of the lane, so any change of one
// word changes the block's value), the blocks' values chained by FNV-1a. About
// 5x faster than byte- or word-serial FNV-1a (one multiply chain), which cost a
// second per GB on every write and every read.
// A reader checks it before libhdf5 parses anything: libhdf5 can crash on a
// damaged file (a flipped bit in a link message made H5Literate free a bad
// pointer), so a file that fails the check, or an older file without the trailer,
// is first read in a child process (read_isolated below).

#define TRAILER_LEN 32
static const char TRAILER_HEAD[8] = {'P', 'S', 'C', 'K', 'S', 'U', 'M', '1'};
static const char TRAILER_TAIL[8] = {'P', 'S', 'C', 'K', 'E', 'N', 'D', '!'};

#define FNV_PRIME 0x100000001b3ULL

static uint64_t hash_block(const unsigned char *p, size_t n) {
    uint64_t l[4] = {PS_FNV1A64_BASIS, PS_FNV1A64_BASIS + 1, PS_FNV1A64_BASIS + 2,
                     PS_FNV1A64_BASIS + 3};
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int k = 0; k < 4; k++) {
            uint64_t w;  // little-endian hosts, as everywhere in the file formats
            memcpy(&w, p + i + 8 * (size_t)k, 8);
            l[k] = (l[k] ^ w) * FNV_PRIME;
        }
    }
    for (; i < n; i++) l[0] = (l[0] ^ p[i]) * FNV_PRIME;
    uint64_t h = PS_FNV1A64_BASIS;
    for (int k = 0; k < 4; k++) h = (h ^ l[k]) * FNV_PRIME;
    return (h ^ (uint64_t)n) * FNV_PRIME;
}

// The hash of the first n bytes of fp. 0, or -1 on a read error.
static int hash_prefix(FILE *fp, uint64_t n, uint64_t *h) {
    enum { BUF = 1 << 22 };  // the block size is part of the format
    unsigned char *buf = xmalloc(BUF);
    *h = PS_FNV1A64_BASIS;
    int rc = fseek(fp, 0, SEEK_SET) == 0 ? 0 : -1;
    while (rc == 0 && n > 0) {
        size_t k = n < BUF ? (size_t)n : BUF;
        if (fread(buf, 1, k, fp) != k) rc = -1;
        *h = (*h ^ hash_block(buf, k)) * FNV_PRIME;
        n -= k;
    }
    free(buf);
    return rc;
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

// Append the trailer to a closed HDF5 file. 0, or -1 with ps_err set.
int ckpt_seal(const char *path) {
    FILE *fp = fopen(path, "r+b");
    if (!fp) return ps_err_set("%s: cannot reopen to add the checksum: %s", path, strerror(errno));
    unsigned char t[TRAILER_LEN];
    uint64_t h = 0;
    int rc = fseek(fp, 0, SEEK_END) == 0 ? 0 : -1;
    long n = rc == 0 ? ftell(fp) : -1;
    if (n < 0 || hash_prefix(fp, (uint64_t)n, &h) != 0) rc = -1;
    memcpy(t, TRAILER_HEAD, 8);
    put_u64(t + 8, (uint64_t)n);
    put_u64(t + 16, h);
    memcpy(t + 24, TRAILER_TAIL, 8);
    if (rc == 0 && (fseek(fp, 0, SEEK_END) != 0 || fwrite(t, 1, TRAILER_LEN, fp) != TRAILER_LEN))
        rc = -1;
    if (fclose(fp) != 0) rc = -1;
    if (rc) return ps_err_set("%s: writing the checksum trailer failed: %s", path, strerror(errno));
    return 0;
}

typedef enum { TRAILER_OK, TRAILER_NONE, TRAILER_BAD } TrailerState;

static TrailerState check_trailer(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return TRAILER_NONE;  // the reader reports why it cannot open it
    TrailerState s = TRAILER_NONE;
    unsigned char t[TRAILER_LEN];
    long n = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
    if (n >= TRAILER_LEN && fseek(fp, n - TRAILER_LEN, SEEK_SET) == 0 &&
        fread(t, 1, TRAILER_LEN, fp) == TRAILER_LEN && !memcmp(t, TRAILER_HEAD, 8) &&
        !memcmp(t + 24, TRAILER_TAIL, 8)) {
        uint64_t h;
        s = TRAILER_BAD;
        if (get_u64(t + 8) == (uint64_t)(n - TRAILER_LEN) &&
            hash_prefix(fp, (uint64_t)(n - TRAILER_LEN), &h) == 0 && h == get_u64(t + 16))
            s = TRAILER_OK;
    }
    fclose(fp);
    return s;
}

// ---------------------------------------------------------------------------
// Writing

// The temp file being written, for signal handlers: g_tmp_set is raised only
// once the name is complete, so a handler never sees a half-copied path.
static char g_active_tmp[4096];
static volatile sig_atomic_t g_tmp_set;
static int g_writes;  // checkpoint writes started by this process

const char *ckpt_active_tmp(void) {
    return g_tmp_set ? g_active_tmp : "";
}

// Does the test hook in environment variable env ("PHASE:N[,PHASE:N...]")
// name this point of the current write?
static int hook_hit(const char *env, const char *phase) {
    const char *s = getenv(env);
    char want[32];
    int nth, used;
    while (s && sscanf(s, "%31[^:,]:%d%n", want, &nth, &used) == 2) {
        if (nth == g_writes && strcmp(want, phase) == 0) return 1;
        s += used;
        s = *s == ',' ? s + 1 : NULL;
    }
    return 0;
}

void ckpt_test_point(const char *phase) {
    if (hook_hit("POSTSHARE_TEST_SIGNAL_AT", phase)) raise(SIGTERM);
    if (hook_hit("POSTSHARE_TEST_KILL_AT", phase)) {
        fflush(stdout);
        raise(SIGKILL);
    }
}

// Rows per chunk so that a chunk is about CHUNK_BYTES (whole rows, at least
// one). HDF5 stores the last chunk of a dataset at full size, so the rows are
// a divisor of the tensor's rows when one is near: 32000 rows of 768 go in
// chunks of 80 rows, not 85 (which would pad every tensor by up to a chunk,
// 3% of a 100M-parameter checkpoint).
static hsize_t chunk_rows(const ParamEntry *e) {
    hsize_t n = (hsize_t)e->shape[0];
    hsize_t rows = CHUNK_BYTES / ((hsize_t)e->shape[1] * 4);
    if (rows < 1) rows = 1;
    if (rows >= n) return n;
    for (hsize_t r = rows; r > rows / 2; r--)
        if (n % r == 0) return r;
    return rows;
}

static int write_tensor(hid_t params, const char *path, const ParamEntry *e, int index,
                        const float *const src[3]) {
    hsize_t dims[2] = {(hsize_t)e->shape[0], (hsize_t)e->shape[1]};
    hsize_t chunk[2] = {chunk_rows(e), dims[1]};
    hid_t g = -1, sp = -1, p = -1, d = -1;
    int32_t idx = index;
    int64_t off = (int64_t)e->offset;
    H5_TRY(path, g = H5Gcreate2(params, e->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
           "creating group params/%s", e->name);
    H5_TRY(path, put_attr(g, "index", A_I32, &idx), "writing params/%s index", e->name);
    H5_TRY(path, put_attr(g, "offset", A_I64, &off), "writing params/%s offset", e->name);
    H5_TRY(path, sp = H5Screate_simple(e->ndim, dims, NULL), "making a dataspace");
    H5_TRY(path, p = checked_dcpl(e->ndim, chunk), "making a chunked Fletcher32 layout");
    for (int k = 0; k < 3; k++) {
        H5_TRY(path,
               d = H5Dcreate2(g, TENSOR_DSETS[k], H5T_IEEE_F32LE, sp, H5P_DEFAULT, p, H5P_DEFAULT),
               "creating params/%s/%s", e->name, TENSOR_DSETS[k]);
        H5_TRY(path,
               H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, src[k] + e->offset),
               "writing params/%s/%s", e->name, TENSOR_DSETS[k]);
        H5_TRY(path, H5Dclose(d), "closing params/%s/%s", e->name, TENSOR_DSETS[k]);
        d = -1;
    }
    H5Pclose(p);
    H5Sclose(sp);
    H5Gclose(g);
    return 0;
fail:
    if (p >= 0) H5Pclose(p);
    if (sp >= 0) H5Sclose(sp);
    return -1;  // the groups and datasets close with the file
}

static int write_groups(hid_t f, const char *path, const Checkpoint *c, const CkptMeta *m) {
    hid_t g = -1, gcpl = -1;
    const char *groups[] = {"/model", "/data", "/rng"};
    H5_TRY(path, gcpl = make_cpl(H5P_GROUP_CREATE, 0), "making a group creation list");
    for (int i = 0; i < 3; i++) {
        H5_TRY(path, g = H5Gcreate2(f, groups[i], H5P_DEFAULT, gcpl, H5P_DEFAULT),
               "creating group %s", groups[i]);
        H5Gclose(g);
    }
    H5Pclose(gcpl);
    gcpl = -1;
    H5_TRY(path, put_attr(f, "format", A_STR, CKPT_FORMAT), "writing the format attribute");
    if (attrs_io(f, path, META_ATTRS, N_META_ATTRS, (void *)m, 1)) return -1;
    if (attrs_io(f, path, MODEL_ATTRS, N_MODEL_ATTRS, (void *)&c->w.t.cfg, 1)) return -1;
    int64_t np = (int64_t)c->w.t.total;
    H5_TRY(path, g = H5Gopen2(f, "/model", H5P_DEFAULT), "opening /model");
    H5_TRY(path, put_attr(g, "n_params", A_I64, &np), "writing /model/n_params");
    H5Gclose(g);
    H5_TRY(path, g = H5Gopen2(f, "/rng", H5P_DEFAULT), "opening /rng");
    for (int i = 0; i < m->n_rng; i++)
        H5_TRY(path, put_attr(g, m->rng[i].name, A_U64, &m->rng[i].state), "writing rng state %s",
               m->rng[i].name);
    H5Gclose(g);
    H5_TRY(path, put_text(f, "/config", m->config_yaml), "writing /config");
    H5_TRY(path, put_text(f, "/data/train_shards", m->train_shards), "writing /data/train_shards");
    if (m->plan_json) H5_TRY(path, put_text(f, "/plan", m->plan_json), "writing /plan");

    // Tensors: the groups remember their creation order (= the table order),
    // so tools that list by creation order show the model's layout.
    H5_TRY(path, gcpl = make_cpl(H5P_GROUP_CREATE, 1), "making a group creation list");
    H5_TRY(path, g = H5Gcreate2(f, "/params", H5P_DEFAULT, gcpl, H5P_DEFAULT),
           "creating group /params");
    H5Pclose(gcpl);
    gcpl = -1;
    const float *src[3] = {c->w.params, c->m, c->v};
    for (int i = 0; i < c->w.t.n; i++) {
        if (write_tensor(g, path, &c->w.t.e[i], i, src)) return -1;
        if (i == c->w.t.n / 2) ckpt_test_point("tensors");
    }
    H5Gclose(g);
    return 0;
fail:
    if (gcpl >= 0) H5Pclose(gcpl);
    return -1;
}

// After a failed write (a full disk): close every object still open in f, then f.
// When even that close fails to flush, the file's metadata cache still holds
// dirty entries that HDF5 would try to flush again at exit (and crash on);
// H5Fclose is retried after marking the file so that nothing is flushed.
static void close_all(hid_t f) {
    ssize_t n = H5Fget_obj_count(f, H5F_OBJ_ALL | H5F_OBJ_LOCAL);
    if (n > 0) {
        hid_t *ids = xmalloc(sizeof(hid_t) * (size_t)n);
        n = H5Fget_obj_ids(f, H5F_OBJ_ALL | H5F_OBJ_LOCAL, (size_t)n, ids);
        for (ssize_t i = 0; i < n; i++) {
            switch (H5Iget_type(ids[i])) {
                case H5I_DATASET:
                    H5Dclose(ids[i]);
                    break;
                case H5I_GROUP:
                    H5Gclose(ids[i]);
                    break;
                case H5I_DATATYPE:
                    H5Tclose(ids[i]);
                    break;
                case H5I_ATTR:
                    H5Aclose(ids[i]);
                    break;
                default:
                    break;
            }
        }
        free(ids);
    }
    H5Fclose(f);
}

// Weights and AdamW state that a checkpoint may hold: finite, and v >= 0 (it is
// a running mean of squares). Checked before every write and after every read.
static int check_state(const char *path, const Checkpoint *c, const char *verb) {
    const ParamTable *t = &c->w.t;
    const float *buf[3] = {c->w.params, c->m, c->v};
    for (int k = 0; k < 3; k++) {
        if (!buf[k]) continue;
        for (int i = 0; i < t->n; i++) {
            const ParamEntry *e = &t->e[i];
            const float *x = buf[k] + e->offset;
            int64_t j = ps_first_nonfinite(x, e->numel);
            if (j >= 0)
                return ps_err_set("%s: %s a non-finite value (%g) in tensor %s/%s at element %lld",
                                  path, verb, x[j], e->name, TENSOR_DSETS[k], (long long)j);
            if (k == 2)
                for (size_t q = 0; q < e->numel; q++)
                    if (x[q] < 0)
                        return ps_err_set(
                            "%s: %s a negative AdamW second moment (%g) in tensor %s/adam_v at "
                            "element %zu",
                            path, verb, x[q], e->name, q);
        }
    }
    return 0;
}

static double file_bytes(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (double)st.st_size : 0.0;
}

int ckpt_write(const char *path, const Checkpoint *c, CkptIoStats *st) {
    h5_quiet();
    CHECK(c->w.params && c->m && c->v, "ckpt_write needs the master weights, m and v");
    if (check_state(path, c, "would hold")) return -1;
    double t0 = ps_now();
    g_writes++;
    char tmp[sizeof g_active_tmp];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return ps_err_set("%s: path too long", path);
    CkptMeta m = c->meta;
    m.format_version = CKPT_FORMAT_VERSION;
    snprintf(m.program_version, sizeof m.program_version, "%s", PS_VERSION);
    time_t now = time(NULL);
    struct tm utc;
    strftime(m.created, sizeof m.created, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &utc));

    hid_t fapl = make_fapl(), fcpl = make_cpl(H5P_FILE_CREATE, 0), f = -1;
    if (fapl < 0 || fcpl < 0) return h5_fail(path, __LINE__, "making file property lists");
    memcpy(g_active_tmp, tmp, sizeof tmp);
    g_tmp_set = 1;
    f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
    if (f < 0) h5_fail(tmp, __LINE__, "cannot create the checkpoint file");
    H5Pclose(fapl);
    H5Pclose(fcpl);
    if (f < 0) goto fail;
    ckpt_test_point("create");
    if (write_groups(f, tmp, c, &m)) goto fail;
    herr_t rc = H5Fclose(f);
    if (rc >= 0) f = -1;
    H5_TRY(tmp, rc, "closing (flushing) the file");
    if (ckpt_seal(tmp)) goto fail;
    ckpt_test_point("close");
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        ps_err_set("%s: fsync failed: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
        goto fail;
    }
    close(fd);
    ckpt_test_point("fsync");
    if (rename(tmp, path) != 0) {
        ps_err_set("%s: rename to %s failed: %s", tmp, path, strerror(errno));
        goto fail;
    }
    g_tmp_set = 0;
    ckpt_test_point("rename");
    ps_fsync_dir_of(path);
    if (st) {
        st->seconds = ps_now() - t0;
        st->bytes = file_bytes(path);
    }
    return 0;
fail:
    if (f >= 0) close_all(f);
    H5Eclear2(H5E_DEFAULT);
    unlink(tmp);
    g_tmp_set = 0;
    return -1;
}

// ---------------------------------------------------------------------------
// Reading

static hid_t open_ro(const char *path) {
    h5_quiet();
    struct stat st;
    if (stat(path, &st) != 0) {
        ps_err_set("%s: cannot open checkpoint: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        ps_err_set("%s: not a checkpoint file (it is a directory or a device)", path);
        return -1;
    }
    hid_t fapl = make_fapl(), f = -1;
    if (fapl < 0) return h5_fail(path, __LINE__, "making a file access property list");
    f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f < 0) h5_fail(path, __LINE__, "cannot open as a checkpoint");
    H5Pclose(fapl);
    return f;
}

static herr_t collect_rng(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    CkptMeta *m = data;
    if (m->n_rng >= CKPT_MAX_RNG) return -1;
    CkptRng *r = &m->rng[m->n_rng];
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    herr_t rc = a >= 0 ? H5Aread(a, H5T_NATIVE_UINT64, &r->state) : -1;
    if (a >= 0) H5Aclose(a);
    if (rc < 0) return -1;
    snprintf(r->name, sizeof r->name, "%s", name);
    m->n_rng++;
    return 0;
}

static int read_meta(hid_t f, const char *path, CkptMeta *m, LlamaConfig *cfg) {
    memset(m, 0, sizeof *m);
    memset(cfg, 0, sizeof *cfg);
    hid_t g = -1;
    char format[64] = "";
    htri_t has = H5Aexists(f, "format");
    H5_TRY(path, has, "reading the root group");
    hid_t a = -1;
    if (has) {
        H5_TRY(path, a = H5Aopen(f, "format", H5P_DEFAULT), "opening the format attribute");
        H5_TRY(path, get_str_attr(a, format, sizeof format), "reading the format attribute");
        H5Aclose(a);
    }
    if (strcmp(format, CKPT_FORMAT) != 0)
        BAD(path, "not a PostShare checkpoint (an HDF5 file without format = \"%s\")", CKPT_FORMAT);
    int32_t version = 0;
    H5_TRY(path, a = H5Aopen(f, "format_version", H5P_DEFAULT), "opening format_version");
    H5_TRY(path, H5Aread(a, H5T_NATIVE_INT32, &version), "reading format_version");
    H5Aclose(a);
    if (version < 1 || version > CKPT_FORMAT_VERSION)
        BAD(path, "checkpoint format version %d; this postshare (%s) reads versions 1 to %d",
            (int)version, PS_VERSION, CKPT_FORMAT_VERSION);
    if (attrs_io(f, path, META_ATTRS, N_META_ATTRS, m, -1)) goto fail;
    if (ps_bound_count(path, "step", m->step, 0, INT64_MAX, NULL) ||
        ps_bound_count(path, "tokens_seen", m->tokens_seen, 0, INT64_MAX, NULL) ||
        ps_bound_count(path, "optim_t", m->optim_t, 0, INT32_MAX,
                       "AdamW's step counter is an int") ||
        ps_bound_count(path, "/data/shard_offset", m->shard_offset, 0, INT64_MAX, NULL) ||
        ps_bound_count(path, "/data/global_batch", m->global_batch, 0, INT64_MAX, NULL) ||
        ps_bound_count(path, "/data/world_size", m->world_size, 0, 1 << 24, NULL) ||
        ps_bound_count(path, "/data/shuffle", m->shuffle, 0, 1, NULL))
        goto fail;
    if (!isfinite(m->lr) || !isfinite(m->elapsed_s))
        BAD(path, "lr or elapsed_s is not a finite number");
    if (attrs_io(f, path, MODEL_ATTRS, N_MODEL_ATTRS, cfg, -1)) goto fail;
    if (llama_config_validate(cfg)) BAD(path, "invalid model config in /model: %s", ps_err_msg());
    H5_TRY(path, g = H5Gopen2(f, "/rng", H5P_DEFAULT), "opening /rng");
    hsize_t idx = 0;
    H5_TRY(path, H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_rng, m),
           "reading the RNG states in /rng (at most %d)", CKPT_MAX_RNG);
    H5Gclose(g);
    g = -1;
    if (get_text(f, path, "/config", &m->config_yaml)) goto fail;
    if (get_text(f, path, "/data/train_shards", &m->train_shards)) goto fail;
    has = H5Lexists(f, "/plan", H5P_DEFAULT);
    H5_TRY(path, has, "looking for /plan");
    if (has && get_text(f, path, "/plan", &m->plan_json)) goto fail;
    return 0;
fail:
    if (g >= 0) H5Gclose(g);
    ckpt_meta_free(m);
    return -1;
}

// Read one dataset of tensor e into dst + e->offset, checking type and shape.
static int read_dataset(hid_t g, const char *path, const ParamEntry *e, const char *name,
                        float *dst) {
    hid_t d = -1, t = -1, sp = -1;
    htri_t has = H5Lexists(g, name, H5P_DEFAULT);
    H5_TRY(path, has, "looking for params/%s/%s", e->name, name);
    if (!has) BAD(path, "tensor %s: dataset '%s' is missing", e->name, name);
    H5_TRY(path, d = H5Dopen2(g, name, H5P_DEFAULT), "opening params/%s/%s", e->name, name);
    H5_TRY(path, t = H5Dget_type(d), "reading the type of params/%s/%s", e->name, name);
    if (H5Tget_class(t) != H5T_FLOAT || H5Tget_size(t) != 4)
        BAD(path, "tensor %s/%s: expected fp32 data", e->name, name);
    H5_TRY(path, sp = H5Dget_space(d), "reading the shape of params/%s/%s", e->name, name);
    hsize_t dims[2] = {0, 1};
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd == e->ndim) H5Sget_simple_extent_dims(sp, dims, NULL);
    if (nd != e->ndim || dims[0] != (hsize_t)e->shape[0] || dims[1] != (hsize_t)e->shape[1]) {
        char got[64];
        if (nd == 1 || nd == 2)
            snprintf(got, sizeof got, nd == 1 ? "[%llu]" : "[%llu, %llu]",
                     (unsigned long long)dims[0], (unsigned long long)dims[1]);
        else
            snprintf(got, sizeof got, "%d dimensions", nd);
        if (e->ndim == 1)
            BAD(path, "tensor %s/%s has shape %s, the model needs [%lld]", e->name, name, got,
                (long long)e->shape[0]);
        BAD(path, "tensor %s/%s has shape %s, the model needs [%lld, %lld]", e->name, name, got,
            (long long)e->shape[0], (long long)e->shape[1]);
    }
    H5_TRY(path, H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst + e->offset),
           "reading tensor %s/%s", e->name, name);
    H5Sclose(sp);
    H5Tclose(t);
    H5Dclose(d);
    return 0;
fail:
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (d >= 0) H5Dclose(d);
    return -1;
}

// Link iteration changed its name and info type in HDF5 1.12.
#if H5_VERSION_GE(1, 12, 0)
typedef H5L_info2_t LinkInfo;
#define link_iterate H5Literate2
#else
typedef H5L_info_t LinkInfo;
#define link_iterate H5Literate
#endif

typedef struct {
    const ParamTable *t;
    char extra[128];
} ExtraScan;

static herr_t find_extra(hid_t g, const char *name, const LinkInfo *info, void *data) {
    (void)g, (void)info;
    ExtraScan *s = data;
    if (param_table_find(s->t, name) < 0 && !s->extra[0])
        snprintf(s->extra, sizeof s->extra, "%s", name);
    return 0;
}

// Every tensor of the table, nothing else. With o->each, a bad dataset is
// reported and the walk goes on; the return is then the number of bad ones.
static int read_tensors(hid_t f, const char *path, Checkpoint *c, const CkptReadOpts *o) {
    hid_t params = -1;
    int bad = 0;
    H5_TRY(path, params = H5Gopen2(f, "/params", H5P_DEFAULT), "opening /params");
    const ParamTable *t = &c->w.t;
    ExtraScan scan = {t, ""};
    // Extra tensors: /params holds more links than the table's names found there.
    // Only then are the links walked to name the extra one: libhdf5's link
    // iteration is where damaged and crafted files crash it (H5Literate freeing a
    // bad pointer in the dense link storage), so a file whose link count adds up
    // never goes through it.
    H5G_info_t gi;
    H5_TRY(path, H5Gget_info(params, &gi), "counting the links of /params");
    hsize_t found = 0;
    for (int i = 0; i < t->n; i++) {
        htri_t has = H5Lexists(params, t->e[i].name, H5P_DEFAULT);
        H5_TRY(path, has, "looking for params/%s", t->e[i].name);
        found += has > 0;
    }
    if (gi.nlinks > found) {
        H5_TRY(path, link_iterate(params, H5_INDEX_NAME, H5_ITER_INC, NULL, find_extra, &scan),
               "listing /params");
        if (!scan.extra[0])
            snprintf(scan.extra, sizeof scan.extra, "(one of %llu entries)",
                     (unsigned long long)gi.nlinks);
    }
    if (scan.extra[0])
        BAD(path,
            "unexpected tensor '%s' (this model has no such parameter: is the checkpoint "
            "of a different model?)",
            scan.extra);
    float *dst[3] = {c->w.params, c->m, c->v};
    for (int i = 0; i < t->n; i++) {
        const ParamEntry *e = &t->e[i];
        htri_t has = H5Lexists(params, e->name, H5P_DEFAULT);
        H5_TRY(path, has, "looking for params/%s", e->name);
        hid_t g = has ? H5Gopen2(params, e->name, H5P_DEFAULT) : -1;
        for (int k = 0; k < (o->optim ? 3 : 1); k++) {
            int rc;
            if (g >= 0)
                rc = read_dataset(g, path, e, TENSOR_DSETS[k], dst[k]);
            else if (has)
                rc = h5_fail(path, __LINE__, "opening params/%s", e->name);
            else
                rc = ps_err_set("%s: tensor %s is missing", path, e->name);
            if (rc == 0) {
                if (o->each) o->each(o->ctx, e, TENSOR_DSETS[k], NULL);
                continue;
            }
            if (!o->each) {
                if (g >= 0) H5Gclose(g);
                goto fail;
            }
            bad++;
            // the callback gets the problem without the repeated file name
            const char *msg = ps_err_msg();
            size_t pl = strlen(path);
            if (!strncmp(msg, path, pl) && !strncmp(msg + pl, ": ", 2)) msg += pl + 2;
            o->each(o->ctx, e, TENSOR_DSETS[k], msg);
        }
        if (g >= 0) H5Gclose(g);
    }
    H5Gclose(params);
    if (bad)
        return ps_err_set("%s: %d damaged or missing dataset%s", path, bad, bad > 1 ? "s" : "");
    return 0;
fail:
    if (params >= 0) H5Gclose(params);
    return -1;
}

static int read_file(const char *path, Checkpoint *c, const CkptReadOpts *o, CkptIoStats *st) {
    memset(c, 0, sizeof *c);
    double t0 = ps_now();
    hid_t f = open_ro(path);
    if (f < 0) return -1;
    LlamaConfig cfg;
    if (read_meta(f, path, &c->meta, &cfg)) goto fail;
    param_table_build(&c->w.t, &cfg);
    int64_t np = 0;
    hid_t g = -1, a = -1;
    H5_TRY(path, g = H5Gopen2(f, "/model", H5P_DEFAULT), "opening /model");
    H5_TRY(path, a = H5Aopen(g, "n_params", H5P_DEFAULT), "opening /model/n_params");
    H5_TRY(path, H5Aread(a, H5T_NATIVE_INT64, &np), "reading /model/n_params");
    H5Aclose(a);
    H5Gclose(g);
    if (np != (int64_t)c->w.t.total)
        BAD(path, "/model/n_params is %lld but its config describes %zu parameters", (long long)np,
            c->w.t.total);
    c->w.params = xmalloc(c->w.t.total * sizeof(float));
    if (o->optim) {
        c->m = xmalloc(c->w.t.total * sizeof(float));
        c->v = xmalloc(c->w.t.total * sizeof(float));
    }
    if (read_tensors(f, path, c, o)) goto fail;
    if (check_state(path, c, "holds")) goto fail;
    H5_TRY(path, H5Fclose(f), "closing");
    if (st) {
        st->seconds = ps_now() - t0;
        st->bytes = file_bytes(path);
    }
    return 0;
fail:
    H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    ckpt_free(c);
    return -1;
}

static int read_meta_file(const char *path, CkptMeta *meta, LlamaConfig *cfg) {
    hid_t f = open_ro(path);
    if (f < 0) return -1;
    int rc = read_meta(f, path, meta, cfg);
    H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    return rc;
}

// ---- reading a file that may be damaged, in a child process

// Records the child sends its parent through a pipe: a dataset checked
// (REC_DATASET: k, then the ParamEntry and the error text, if any) and the end
// (REC_END: the read's return code and ps_err).
enum { REC_DATASET = 1, REC_END = 2 };
static int g_rec_fd = -1;

static void rec_put(const void *p, size_t n) {
    const char *b = p;
    while (n > 0) {
        ssize_t w = write(g_rec_fd, b, n);
        if (w <= 0) _exit(3);
        b += w, n -= (size_t)w;
    }
}

static void rec_dataset(void *ctx, const ParamEntry *e, const char *dataset, const char *err) {
    (void)ctx;
    int32_t k = 0;
    while (k < 2 && strcmp(TENSOR_DSETS[k], dataset)) k++;
    int32_t hdr[3] = {REC_DATASET, k, err ? (int32_t)strlen(err) : -1};
    rec_put(hdr, sizeof hdr);
    rec_put(e, sizeof *e);
    if (err) rec_put(err, strlen(err));
}

// Read path (the whole checkpoint with o, or only its metadata) in a child
// process, so that a crash inside libhdf5 on a damaged file ends the child only.
// With o->each, the child's reports are replayed here. 0 when the child read the
// file without error; else -1 with ps_err set (the child's error, or that it crashed).
static int read_isolated(const char *path, const CkptReadOpts *o, int meta_only) {
    int fds[2];
    if (pipe(fds) != 0) return ps_err_set("%s: pipe: %s", path, strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return ps_err_set("%s: fork: %s", path, strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        g_rec_fd = fds[1];
        // a sanitizer report about libhdf5 in here is the crash this isolates
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 2);
        int rc;
        if (meta_only) {
            CkptMeta m;
            LlamaConfig cfg;
            rc = read_meta_file(path, &m, &cfg);
            if (rc == 0) ckpt_meta_free(&m);
        } else {
            CkptReadOpts co = {o->optim, o->each ? rec_dataset : NULL, NULL};
            Checkpoint c;
            rc = read_file(path, &c, &co, NULL);
            if (rc == 0) ckpt_free(&c);
        }
        const char *msg = rc ? ps_err_msg() : "";
        int32_t hdr[3] = {REC_END, rc, (int32_t)strlen(msg)};
        rec_put(hdr, sizeof hdr);
        rec_put(msg, strlen(msg));
        _exit(0);  // no atexit handlers: HDF5's would walk the damaged file again
    }
    close(fds[1]);
    size_t len = 0, cap = 1 << 16;
    char *buf = xmalloc(cap);
    for (;;) {
        if (len == cap) buf = xrealloc(buf, cap *= 2);
        ssize_t r = read(fds[0], buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    int rc = -2;
    for (size_t at = 0; at + 12 <= len;) {
        int32_t hdr[3];
        memcpy(hdr, buf + at, sizeof hdr);
        at += sizeof hdr;
        if (hdr[0] == REC_DATASET && at + sizeof(ParamEntry) <= len) {
            ParamEntry e;
            memcpy(&e, buf + at, sizeof e);
            at += sizeof e;
            size_t n = hdr[2] > 0 ? (size_t)hdr[2] : 0;
            if (at + n > len) break;
            char *err = hdr[2] >= 0 ? xmalloc(n + 1) : NULL;
            if (err) memcpy(err, buf + at, n), err[n] = 0;
            at += n;
            if (o && o->each)
                o->each(o->ctx, &e, TENSOR_DSETS[hdr[1] >= 0 && hdr[1] < 3 ? hdr[1] : 0], err);
            free(err);
        } else if (hdr[0] == REC_END && hdr[2] >= 0 && at + (size_t)hdr[2] <= len) {
            rc = hdr[1] ? -1 : 0;
            if (rc) ps_err_set("%.*s", (int)hdr[2], buf + at);
            break;
        } else {
            break;
        }
    }
    free(buf);
    if (rc == -2) {
        if (WIFSIGNALED(status))
            return ps_err_set(
                "%s: the file is damaged: reading it crashed the HDF5 library (signal %d); it "
                "fails the whole-file checksum or predates it",
                path, WTERMSIG(status));
        return ps_err_set(
            "%s: the file is damaged: reading it failed inside the HDF5 library (exit status "
            "%d); it fails the whole-file checksum or predates it",
            path, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    return rc;
}

int ckpt_read(const char *path, Checkpoint *c, const CkptReadOpts *o, CkptIoStats *st) {
    static const CkptReadOpts none = {0};
    if (!o) o = &none;
    memset(c, 0, sizeof *c);
    if (check_trailer(path) == TRAILER_OK) return read_file(path, c, o, st);
    double t0 = ps_now();
    if (read_isolated(path, o, 0) != 0) return -1;
    // the child read every byte the parent will: the walk is safe now
    CkptReadOpts quiet = {o->optim, NULL, NULL};
    int rc = read_file(path, c, o->each ? &quiet : o, st);
    if (rc == 0 && st) st->seconds = ps_now() - t0;
    return rc;
}

int ckpt_read_meta(const char *path, CkptMeta *meta, LlamaConfig *cfg) {
    memset(meta, 0, sizeof *meta);
    if (check_trailer(path) != TRAILER_OK && read_isolated(path, NULL, 1) != 0) return -1;
    return read_meta_file(path, meta, cfg);
}

void ckpt_meta_free(CkptMeta *m) {
    free(m->train_shards);
    free(m->config_yaml);
    free(m->plan_json);
    m->train_shards = m->config_yaml = m->plan_json = NULL;
}

void ckpt_free(Checkpoint *c) {
    ckpt_meta_free(&c->meta);
    if (c->w.t.e) host_weights_free(&c->w);
    free(c->m);
    free(c->v);
    memset(c, 0, sizeof *c);
}

int ckpt_load_weights(const char *path, HostWeights *w) {
    Checkpoint c;
    if (ckpt_read(path, &c, NULL, NULL)) return -1;
    *w = c.w;
    c.w.t.e = NULL;  // now owned by w
    c.w.params = NULL;
    ckpt_meta_free(&c.meta);
    return 0;
}

// ---------------------------------------------------------------------------
// The run directory

#define CKPT_PREFIX "ckpt-"

char *ckpt_path(const char *dir, int64_t step) {
    char name[64];
    snprintf(name, sizeof name, CKPT_PREFIX "%08lld.h5", (long long)step);
    return ps_path_join(dir, name);
}

// "ckpt-<digits>.h5" followed by `rest`: the step, or -1 when name differs.
static int64_t parse_name(const char *name, const char **rest) {
    size_t pl = strlen(CKPT_PREFIX);
    if (strncmp(name, CKPT_PREFIX, pl) != 0) return -1;
    size_t nd = strspn(name + pl, "0123456789");
    if (nd == 0 || nd > 18 || strncmp(name + pl + nd, ".h5", 3) != 0) return -1;
    *rest = name + pl + nd + 3;
    return strtoll(name + pl, NULL, 10);
}

static int cmp_newest(const void *a, const void *b) {
    int64_t x = ((const CkptEntry *)a)->step, y = ((const CkptEntry *)b)->step;
    return x < y ? 1 : x > y ? -1 : 0;
}

int ckpt_list(const char *dir, CkptEntry **out) {
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *rest;
        int64_t step = parse_name(de->d_name, &rest);
        if (step < 0 || *rest) continue;
        if (n == cap) *out = xrealloc(*out, sizeof(CkptEntry) * (size_t)(cap = cap ? 2 * cap : 8));
        (*out)[n].step = step;
        (*out)[n].path = ps_path_join(dir, de->d_name);
        n++;
    }
    closedir(d);
    if (n) qsort(*out, (size_t)n, sizeof(CkptEntry), cmp_newest);
    return n;
}

void ckpt_list_free(CkptEntry *e, int n) {
    for (int i = 0; i < n; i++) free(e[i].path);
    free(e);
}

void ckpt_remove_stale_tmp(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *rest;
        if (parse_name(de->d_name, &rest) < 0 || strncmp(rest, ".tmp.", 5) != 0) continue;
        char *end;
        long pid = strtol(rest + 5, &end, 10);
        if (*end || pid <= 0) continue;
        // a live writer's temp file is not ours to remove (our own pid cannot
        // be writing now: this runs before the first write)
        if (pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno != ESRCH)) continue;
        char *p = ps_path_join(dir, de->d_name);
        unlink(p);
        free(p);
    }
    closedir(d);
}
