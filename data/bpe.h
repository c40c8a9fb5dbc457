// bpe.h: the byte-level BPE engine behind TOK_BPE tokenizers (GPT-2, Llama 3,
// SmolLM2), shared by the tokenizer.json, tiktoken and GGUF readers.
//
// Encoding (what HF `tokenizers` does for a BPE model with a ByteLevel
// pre-tokenizer and no normalizer):
//   1. invalid UTF-8 becomes U+FFFD, one per maximal invalid subpart (what
//      Python's bytes.decode('utf-8', 'replace') gives);
//   2. added tokens are cut out of the text first, leftmost-longest (tokens
//      marked normalized=false first, then normalized=true ones in the gaps);
//      lstrip/rstrip let a match absorb the whitespace on its left/right;
//   3. each remaining segment goes through the pre-tokenizer steps in order:
//      every step splits every current piece with its PCRE2 regex (UTF + UCP,
//      JIT when available), matches and the gaps between them both becoming
//      pieces ("Isolated"); a step may first prepend a space to its piece
//      (ByteLevel add_prefix_space);
//   4. each piece (bytes) is one BPE word: with ignore_merges a word that is a
//      vocabulary token is that token; otherwise its bytes become their
//      single-byte tokens and adjacent pairs merge, lowest merge rank first,
//      leftmost on ties (a heap; the pair table is a hash on the two ids).
// Token strings are stored as raw bytes (the GPT-2 byte-to-unicode mapping is
// undone on reading), so decoding a token is its bytes.
#pragma once

#include <stddef.h>

#include "tokenizer.h"

typedef struct BpeModel BpeModel;

// A TOK_BPE tokenizer for ids [0, vocab_size) with an empty model: set the
// tokens, merges, pre-tokenizer and added tokens, then call bpe_finish.
Tokenizer *bpe_alloc(int vocab_size);

// Token id = the n raw bytes s; type TOK_PIECE_NORMAL (model vocabulary),
// TOK_PIECE_CONTROL (special added token) or TOK_PIECE_USER (other added
// token). Returns -1 with ps_err_set (naming `where`) when id is out of range
// or already set to other bytes.
int bpe_set_token(Tokenizer *t, int id, const char *s, size_t n, int type, const char *where);

// Merge (a, b) -> new_id with priority rank (lower first). A later merge of the
// same pair replaces an earlier one (as in tokenizers).
void bpe_add_merge(Tokenizer *t, int a, int b, int rank, int new_id);

// Merge of two token strings in the byte-level alphabet (tokenizer.json and
// GGUF "a b" merges): looks up a, b and a+b among the vocabulary tokens (the
// piece index must be built) and adds it with this rank. Returns 0, or 1/2/3
// when the left part / the right part / the merged token is not a token.
int bpe_add_merge_strings(Tokenizer *t, const char *a, size_t an, const char *b, size_t bn,
                          int rank);

// A pre-tokenizer step: split each piece by the regex (literal: a plain
// string), after prepending a space when prefix_space (and the piece does not
// start with one). pattern NULL: only the prefix space. Returns -1 with the
// PCRE2 error (naming `where`) on a bad pattern.
int bpe_add_split(Tokenizer *t, const char *pattern, int literal, int prefix_space,
                  const char *where);

// Mark an already set token as matched in the text (see above).
int bpe_add_special(Tokenizer *t, int id, int lstrip, int rstrip, int normalized,
                    const char *where);

// ignore_merges: whole-word vocabulary hits skip the merges (Llama 3, tiktoken).
// adds_bos: tok_encode(add_bos=1) prepends bos_id.
void bpe_set_flags(Tokenizer *t, int ignore_merges, int adds_bos);

// Index everything; -1 with ps_err_set (naming file) when the tokenizer is unusable.
int bpe_finish(Tokenizer *t, const char *file);

int *bpe_encode(const Tokenizer *t, const char *text, size_t len, int add_bos, size_t *n);
void bpe_free(BpeModel *m);

// GPT-2's byte <-> unicode mapping of token strings: the byte a code point
// stands for, or -1 when it stands for none.
int bpe_unicode_byte(unsigned cp);

// Convert a token string in the byte-level alphabet (UTF-8, s[0..n)) to raw
// bytes in out (capacity n); code points outside the alphabet keep their
// UTF-8 bytes (what the ByteLevel decoder does). Returns the byte count.
size_t bpe_unmap_bytes(const char *s, size_t n, char *out);

// The split regexes of GPT-2 (ByteLevel use_regex) and of Llama 3 (tiktoken).
extern const char *const BPE_GPT2_REGEX;
extern const char *const BPE_LLAMA3_REGEX;
