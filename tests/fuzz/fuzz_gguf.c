// fuzz_gguf.c: libFuzzer harness for the GGUF reader (trainer/gguf.c).
// Parses the input; when it parses, reads every key through the accessor that
// fits its type and converts every small tensor of a supported type.
// Built with -DPOSTSHARE_FUZZ=ON (tests/fuzz/README.md); long runs:
// scripts/fuzz_long.sh SECONDS gguf.
// Seed: tests/fuzz/corpus/gguf/valid.gguf (PS_GGUF_SEED_DIR=... build/test_gguf writes it).
#include <stdint.h>
#include <stdlib.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    GgufFile g;
    if (gguf_parse(data, size, "fuzz.gguf", &g) != 0) return 0;
    for (int64_t i = 0; i < g.n_kv; i++) {
        const GgufKV *kv = &g.kv[i];
        char *s = NULL;
        uint32_t u;
        float f;
        int b;
        GgufStr *as = NULL;
        int32_t *ai = NULL;
        float *af = NULL;
        uint64_t n;
        if (gguf_get_str(&g, kv->key, &s) == 0) free(s);
        (void)gguf_get_u32(&g, kv->key, &u);
        (void)gguf_get_f32(&g, kv->key, &f);
        (void)gguf_get_bool(&g, kv->key, &b);
        if (gguf_get_arr_str(&g, kv->key, &as, &n) == 0) {
            volatile char sink = 0;
            for (uint64_t j = 0; j < n; j++)
                if (as[j].len) sink ^= as[j].p[as[j].len - 1];
            (void)sink;
            free(as);
        }
        if (gguf_get_arr_i32(&g, kv->key, &ai, &n) == 0) free(ai);
        if (gguf_get_arr_f32(&g, kv->key, &af, &n) == 0) free(af);
    }
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const GgufTensor *t = &g.t[i];
        if (!t->data || t->nelem > (1u << 20)) continue;
        float *dst = malloc(sizeof(float) * t->nelem);
        if (dst) (void)gguf_tensor_f32(&g, t, dst);
        free(dst);
    }
    gguf_close(&g);
    return 0;
}
