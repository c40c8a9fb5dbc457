// shard.h: token shards in llm.c's binary format (write, open + validate, read).
//
// A shard is a header of 256 little-endian int32 followed by the tokens:
//   header[0] magic, header[1] version, header[2] number of tokens
//   magic 20240520, version 1: tokens are uint16 (vocabularies up to 65536)
//   magic 20240801, version 7: tokens are uint32 (larger vocabularies)
// The writer picks uint16 whenever vocab_size <= 65536. Readers validate the
// magic, version, exact file size and that every token is < vocab_size, so a
// corrupt or mismatched shard fails at open with a message naming the file,
// instead of feeding garbage ids to the embedding lookup later.
// The format is little-endian; so is every host we target (x86-64, aarch64).
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SHARD_HEADER_INTS 256
#define SHARD_MAGIC_U16 20240520
#define SHARD_VERSION_U16 1
#define SHARD_MAGIC_U32 20240801
#define SHARD_VERSION_U32 7

// An open, validated shard. The file is memory-mapped read-only, so a large
// corpus costs page cache rather than heap, and open shards are cheap.
typedef struct {
    char *path;
    size_t n_tokens;
    int width;           // bytes per token: 2 (uint16) or 4 (uint32)
    const void *tokens;  // n_tokens tokens of `width` bytes, inside the mapping
    void *map;           // the whole file mapping (NULL for an empty mapping)
    size_t map_len;
} Shard;

// Write tokens[0..n) to path atomically (temp file + fsync + rename).
// Every token must lie in [0, vocab_size). Returns 0, or -1 with ps_err set.
int shard_write(const char *path, const int *tokens, size_t n, int vocab_size);

// Open and validate a shard. vocab_size > 0 enables the token range check
// (token >= vocab_size is an error naming file, token, position and vocab);
// vocab_size <= 0 skips it. Returns 0, or -1 with ps_err set (*s untouched).
int shard_open(Shard *s, const char *path, int vocab_size);
void shard_close(Shard *s);

// Token i of an open shard (no bounds check: i < s->n_tokens).
static inline int shard_token(const Shard *s, size_t i) {
    return s->width == 2 ? (int)((const uint16_t *)s->tokens)[i]
                         : (int)((const uint32_t *)s->tokens)[i];
}

// Convenience: open, copy all tokens into a fresh int array, close.
// Returns the array (free() it) and *n, or NULL with ps_err set.
int *shard_read(const char *path, int vocab_size, size_t *n);
