// fuzz_tok.h: the body of the tokenizer-file harnesses (fuzz_tokbin.c, fuzz_spm.c):
// tok_open on the input saved as FUZZ_TOK_FILE, then encoding a fixed text (every id
// must be a valid piece) and decoding the ids back.
#pragma once
#include "fuzz_util.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    Tokenizer *t = tok_open(fuzz_file(d, n, FUZZ_TOK_FILE));
    if (!t) return 0;
    static const char text[] = "Hello, world! \xc3\xa9\xe2\x82\xac \x01\xff\n  two  spaces";
    size_t k, len;
    int *ids = tok_encode(t, text, sizeof text - 1, 1, &k);
    for (size_t i = 0; i < k; i++)
        if (ids[i] < 0 || ids[i] >= t->vocab_size) abort();
    free(tok_decode_all(t, ids, k, &len));
    for (size_t i = 0; i < k; i++) tok_decode(t, i ? ids[i - 1] : -1, ids[i], &len);
    free(ids);
    tok_free(t);
    return 0;
}
