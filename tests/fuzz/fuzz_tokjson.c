// fuzz_tokjson.c: libFuzzer harness for the byte-level BPE tokenizer.json
// reader (data/tokjson.c) and encoder (data/bpe.c). The input is a
// tokenizer.json, a NUL byte, then a text: the JSON is parsed; when it gives a
// tokenizer, the text is encoded (ids must be in the vocabulary) and decoded.
// Built with -DPOSTSHARE_FUZZ=ON (README.md); seeds in corpus/tokjson, plus excerpts
// of the real tokenizers from make_tokjson_seeds.py for long runs.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t jl = nul ? (size_t)(nul - data) : size;
    cJSON *j = cJSON_ParseWithLength((const char *)data, jl);
    if (!j) return 0;
    Tokenizer *t = tok_hf_json_parse("fuzz.json", j, NULL);  // takes j
    if (!t) return 0;
    const char *text = nul ? (const char *)nul + 1 : "";
    size_t tl = nul ? size - jl - 1 : 0, n;
    int *ids = tok_encode(t, text, tl, 1, &n);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->vocab_size) abort();
    size_t dl;
    free(tok_decode_all(t, ids, n, &dl));
    free(ids);
    tok_free(t);
    return 0;
}
