// shard.c: llm.c token shard writer and validating reader (see shard.h).
#define _POSIX_C_SOURCE 200809L
#include "shard.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

int shard_write(const char *path, const int *tokens, size_t n, int vocab_size) {
    if (vocab_size <= 0) return ps_err_set("%s: cannot write shard: vocab size %d", path, vocab_size);
    if (n > (size_t)INT32_MAX)
        return ps_err_set("%s: cannot write shard: %zu tokens exceed the int32 header field", path, n);
    int width = vocab_size <= 65536 ? 2 : 4;
    size_t header_bytes = SHARD_HEADER_INTS * sizeof(int32_t);
    size_t total = header_bytes + n * (size_t)width;
    char *buf = xcalloc(1, total);
    int32_t *h = (int32_t *)buf;
    h[0] = width == 2 ? SHARD_MAGIC_U16 : SHARD_MAGIC_U32;
    h[1] = width == 2 ? SHARD_VERSION_U16 : SHARD_VERSION_U32;
    h[2] = (int32_t)n;
    for (size_t i = 0; i < n; i++) {
        int t = tokens[i];
        if (t < 0 || t >= vocab_size) {
            free(buf);
            return ps_err_set("%s: cannot write shard: token %d at position %zu is outside [0, %d)", path,
                              t, i, vocab_size);
        }
        if (width == 2) {
            uint16_t v = (uint16_t)t;
            memcpy(buf + header_bytes + 2 * i, &v, 2);
        } else {
            uint32_t v = (uint32_t)t;
            memcpy(buf + header_bytes + 4 * i, &v, 4);
        }
    }
    int rc = ps_write_file_atomic(path, buf, total);
    free(buf);
    return rc;
}

int shard_open(Shard *s, const char *path, int vocab_size) {
    const size_t header_bytes = SHARD_HEADER_INTS * sizeof(int32_t);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ps_err_set("%s: cannot open shard: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ps_err_set("%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < header_bytes) {
        close(fd);
        return ps_err_set("%s: truncated shard: file is %zu bytes, shorter than the %zu-byte header", path,
                          size, header_bytes);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);  // the mapping keeps the file alive
    if (map == MAP_FAILED) return ps_err_set("%s: cannot mmap shard: %s", path, strerror(errno));

    int32_t h[3];
    memcpy(h, map, sizeof h);
    int width;
    if (h[0] == SHARD_MAGIC_U16) {
        width = 2;
        if (h[1] != SHARD_VERSION_U16) {
            munmap(map, size);
            return ps_err_set("%s: unknown shard version %d for magic %d (expected %d)", path, h[1], h[0],
                              SHARD_VERSION_U16);
        }
    } else if (h[0] == SHARD_MAGIC_U32) {
        width = 4;
        if (h[1] != SHARD_VERSION_U32) {
            munmap(map, size);
            return ps_err_set("%s: unknown shard version %d for magic %d (expected %d)", path, h[1], h[0],
                              SHARD_VERSION_U32);
        }
    } else {
        munmap(map, size);
        return ps_err_set("%s: bad shard magic %d (expected %d or %d): not an llm.c token shard", path, h[0],
                          SHARD_MAGIC_U16, SHARD_MAGIC_U32);
    }
    if (h[2] < 0) {
        munmap(map, size);
        return ps_err_set("%s: corrupt shard header: negative token count %d", path, h[2]);
    }
    size_t n = (size_t)h[2];
    size_t want = header_bytes + n * (size_t)width;
    if (size < want) {
        munmap(map, size);
        return ps_err_set("%s: truncated shard: header says %zu tokens (%zu bytes) but the file has %zu bytes",
                          path, n, want, size);
    }
    if (size > want) {
        munmap(map, size);
        return ps_err_set("%s: shard longer than its header says: %zu tokens need %zu bytes but the file has "
                          "%zu bytes (truncated header count or trailing garbage)",
                          path, n, want, size);
    }
    const char *tok = (const char *)map + header_bytes;
    for (size_t i = 0; i < n; i++) {
        uint32_t t;
        if (width == 2) {
            uint16_t v;
            memcpy(&v, tok + 2 * i, 2);
            t = v;
        } else {
            memcpy(&t, tok + 4 * i, 4);
        }
        if ((vocab_size > 0 && t >= (uint32_t)vocab_size) || t > (uint32_t)INT_MAX) {
            munmap(map, size);
            return ps_err_set("%s: token %u at position %zu is out of range for vocab size %d", path, t, i,
                              vocab_size);
        }
    }
    s->path = xstrdup(path);
    s->n_tokens = n;
    s->width = width;
    s->map = map;
    s->map_len = size;
    s->tokens = tok;
    return 0;
}

void shard_close(Shard *s) {
    if (!s) return;
    if (s->map) munmap(s->map, s->map_len);
    free(s->path);
    memset(s, 0, sizeof *s);
}

int *shard_read(const char *path, int vocab_size, size_t *n) {
    Shard s;
    if (shard_open(&s, path, vocab_size) != 0) return NULL;
    int *out = xmalloc(s.n_tokens * sizeof(int));
    for (size_t i = 0; i < s.n_tokens; i++) out[i] = shard_token(&s, i);
    *n = s.n_tokens;
    shard_close(&s);
    return out;
}
