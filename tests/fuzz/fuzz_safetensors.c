// fuzz_safetensors: st_open (header JSON, dtypes, shapes, offsets) and reading every
// tensor of a .safetensors file.
#include "fuzz_util.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    StFile f;
    if (st_open(fuzz_file(d, n, "model.safetensors"), &f) != 0) return 0;
    for (int i = 0; i < f.n; i++) {
        size_t k = st_numel(&f.t[i]);
        if (k > (64u << 20)) abort();  // st_open must have refused more than the file holds
        float *buf = malloc((k ? k : 1) * sizeof(float));
        if (st_read_f32(&f, &f.t[i], buf) != 0) st_read_i32(&f, &f.t[i], (int32_t *)buf);
        free(buf);
    }
    st_close(&f);
    return 0;
}
