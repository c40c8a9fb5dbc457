// prepare.c: `postshare prepare`: tokenize text files into train/val token shards (see prepare.h).
#define _POSIX_C_SOURCE 200809L
#include "prepare.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "shard.h"
#include "tokenizer.h"

static const char *k_usage =
    "usage: postshare prepare --tokenizer SPEC --out DIR [options] FILE...\n"
    "\n"
    "Tokenize text files (one document each; '-' = stdin) into llm.c token shards:\n"
    "DIR/NAME_train_000000.bin, ... and DIR/NAME_val_000000.bin, ...\n"
    "\n"
    "  --tokenizer SPEC     byte | llama2c:PATH | sp:PATH | PATH.bin | PATH.model\n"
    "  --out DIR            output folder (created if missing)\n"
    "  --val-fraction F     last fraction of the tokens for validation, cut at the next\n"
    "                       line or document start (default 0.05; 0 = no val split)\n"
    "  --shard-tokens N     max tokens per shard; K/M/G suffixes (default 10M)\n"
    "  --prefix NAME        shard file name prefix (default data)\n"
    "  --help               this text\n"
    "\n"
    "spm tokenizers start each document with BOS; the byte tokenizer has none.\n";

typedef struct {
    int *v;
    size_t n, cap;
} Toks;

static void toks_append(Toks *t, const int *x, size_t n) {
    if (t->n + n > t->cap) {
        while (t->n + n > t->cap) t->cap = t->cap ? 2 * t->cap : 1 << 16;
        t->v = xrealloc(t->v, t->cap * sizeof(int));
    }
    memcpy(t->v + t->n, x, n * sizeof(int));
    t->n += n;
}

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (cap - n < 4096) buf = xrealloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, stdin);
        n += got;
        if (got == 0) break;
    }
    if (ferror(stdin)) {
        free(buf);
        ps_err_set("<stdin>: read error");
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

// "10M" -> 10000000 (K/M/G are powers of 1000); -1 on junk
static long long parse_count(const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno) return -1;
    if (*end == 'k' || *end == 'K') v *= 1e3, end++;
    else if (*end == 'm' || *end == 'M') v *= 1e6, end++;
    else if (*end == 'g' || *end == 'G') v *= 1e9, end++;
    if (*end || v < 1 || v > 2e9 || v != floor(v)) return -1;
    return (long long)v;
}

// Write tok[0..n) as NAME_split_%06d.bin shards of at most per tokens; then
// delete higher-numbered leftovers. Returns the shard count, or -1.
static int write_split(const char *dir, const char *prefix, const char *split, const int *tok, size_t n,
                       size_t per, int vocab) {
    char name[600];
    int count = 0;
    for (size_t a = 0; a < n; a += per, count++) {
        size_t m = n - a < per ? n - a : per;
        snprintf(name, sizeof name, "%s_%s_%06d.bin", prefix, split, count);
        char *path = ps_path_join(dir, name);
        int rc = shard_write(path, tok + a, m, vocab);
        if (rc == 0) printf("prepare: wrote %s (%zu tokens)\n", path, m);
        free(path);
        if (rc != 0) return -1;
    }
    for (int i = count;; i++) {
        snprintf(name, sizeof name, "%s_%s_%06d.bin", prefix, split, i);
        char *path = ps_path_join(dir, name);
        int gone = access(path, F_OK) != 0;
        if (!gone) {
            if (unlink(path) == 0) printf("prepare: removed stale %s from an earlier run\n", path);
            else fprintf(stderr, "prepare: warning: cannot remove stale %s: %s\n", path, strerror(errno));
        }
        free(path);
        if (gone) break;
    }
    return count;
}

// A line or document starts at token i (i > 0): token i-1 is a lone '\n'
// (newline_id), or document start offsets (sorted) contain i.
static int is_boundary(const Toks *t, size_t i, int newline_id, const size_t *doc_start, int ndocs) {
    if (i == 0) return 0;
    if (newline_id >= 0 && t->v[i - 1] == newline_id) return 1;
    int lo = 0, hi = ndocs;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (doc_start[mid] < i) lo = mid + 1;
        else hi = mid;
    }
    return lo < ndocs && doc_start[lo] == i;
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "postshare prepare: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see postshare prepare --help)\n");
    return 2;
}

int prepare_main(int argc, char **argv) {
    const char *spec = NULL, *out = NULL, *prefix = "data";
    double val_fraction = 0.05;
    long long shard_tokens = 10000000;
    const char **files = xcalloc((size_t)argc + 1, sizeof(char *));
    int nfiles = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(k_usage, stdout);
            free(files);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0 || strcmp(a, "-") == 0) {
            files[nfiles++] = a;
            continue;
        }
        // --opt VALUE or --opt=VALUE
        const char *eq = strchr(a, '=');
        size_t klen = eq ? (size_t)(eq - a) : strlen(a);
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
        if (!val) {
            free(files);
            return usage_error("option %s needs a value", a);
        }
        if (!eq) i++;
#define IS(name) (klen == strlen(name) && strncmp(a, name, klen) == 0)
        if (IS("--tokenizer")) spec = val;
        else if (IS("--out")) out = val;
        else if (IS("--prefix")) prefix = val;
        else if (IS("--val-fraction")) {
            char *end;
            val_fraction = strtod(val, &end);
            if (*end || end == val || !(val_fraction >= 0 && val_fraction < 1)) {
                free(files);
                return usage_error("--val-fraction must be a number in [0, 1), got '%s'", val);
            }
        } else if (IS("--shard-tokens")) {
            shard_tokens = parse_count(val);
            if (shard_tokens < 1) {
                free(files);
                return usage_error("--shard-tokens must be a positive integer (K/M/G allowed), got '%s'", val);
            }
        } else {
            free(files);
            return usage_error("unknown option '%s'", a);
        }
#undef IS
    }
    if (!spec || !out || nfiles == 0) {
        free(files);
        return usage_error("%s", !spec ? "--tokenizer is required"
                                       : !out ? "--out is required" : "no input FILE given");
    }
    if (!*prefix || strchr(prefix, '/')) {
        free(files);
        return usage_error("--prefix must be a plain file name prefix, got '%s'", prefix);
    }

    double t0 = ps_now();
    Tokenizer *tok = tok_open(spec);
    if (!tok) {
        fprintf(stderr, "postshare prepare: error: %s\n", ps_err_msg());
        free(files);
        return 1;
    }
    printf("prepare: tokenizer: %s\n", tok->desc);
    Toks all = {0};
    size_t *doc_start = xmalloc((size_t)nfiles * sizeof(size_t));
    size_t bytes = 0;
    int status = 0;
    for (int f = 0; f < nfiles; f++) {
        size_t len;
        char *text = strcmp(files[f], "-") == 0 ? read_stdin(&len) : ps_read_file(files[f], &len);
        if (!text) {
            fprintf(stderr, "postshare prepare: error: %s\n", ps_err_msg());
            status = 1;
            goto done;
        }
        size_t n;
        int *ids = tok_encode(tok, text, len, 1, &n);
        doc_start[f] = all.n;
        toks_append(&all, ids, n);
        bytes += len;
        free(ids);
        free(text);
    }
    size_t T = all.n;
    if (T == 0) {
        fprintf(stderr, "postshare prepare: error: the input has no tokens (empty files?)\n");
        status = 1;
        goto done;
    }

    // train/val cut (see prepare.h)
    size_t split = T;
    const char *how = "";
    if (val_fraction > 0) {
        size_t n_val = (size_t)llround(val_fraction * (double)T);
        if (n_val < 1) n_val = 1;
        size_t target = n_val >= T ? 0 : T - n_val;
        for (size_t i = target; i < T && split == T; i++)
            if (is_boundary(&all, i, tok->newline_id, doc_start, nfiles)) split = i;
        if (split < T) {
            how = "a line or document start";
        } else {
            for (size_t i = target; i-- > 1 && split == T;)
                if (is_boundary(&all, i, tok->newline_id, doc_start, nfiles)) split = i;
            if (split < T) how = "a line or document start (the last one before the target)";
        }
        if (split == T) {
            split = target;
            how = "the exact token (no line or document boundary found)";
        }
        if (split == 0) {
            fprintf(stderr,
                    "postshare prepare: error: %zu tokens are too few to split off a %.3g validation "
                    "fraction and keep a train split\n",
                    T, val_fraction);
            status = 1;
            goto done;
        }
    }

    if (ps_mkdirs(out) != 0) {
        fprintf(stderr, "postshare prepare: error: %s\n", ps_err_msg());
        status = 1;
        goto done;
    }
    int ntrain = write_split(out, prefix, "train", all.v, split, (size_t)shard_tokens, tok->vocab_size);
    int nval = ntrain < 0 ? -1 : write_split(out, prefix, "val", all.v + split, T - split, (size_t)shard_tokens,
                                             tok->vocab_size);
    if (ntrain < 0 || nval < 0) {
        fprintf(stderr, "postshare prepare: error: %s\n", ps_err_msg());
        status = 1;
        goto done;
    }
    double dt = ps_now() - t0;
    printf("prepare: %d file(s), %zu bytes -> %zu tokens, vocab %d (%s shards)\n", nfiles, bytes, T,
           tok->vocab_size, tok->vocab_size <= 65536 ? "uint16" : "uint32");
    if (val_fraction > 0)
        printf("prepare: train %zu tokens in %d shard(s); val %zu tokens in %d shard(s) (%.2f%%, cut at %s)\n",
               split, ntrain, T - split, nval, 100.0 * (double)(T - split) / (double)T, how);
    else
        printf("prepare: train %zu tokens in %d shard(s); no val split (--val-fraction 0)\n", split, ntrain);
    printf("prepare: done in %.2f s (%.1f MB/s)\n", dt, (double)bytes / 1e6 / (dt > 0 ? dt : 1e-9));

done:
    free(all.v);
    free(doc_start);
    free(files);
    tok_free(tok);
    return status;
}
