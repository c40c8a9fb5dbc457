// fuzz_llama2c: a llama2.c model .bin (llama2c_load).
#include "fuzz_util.h"
#include "llama2c.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    HostWeights w;
    if (llama2c_load(fuzz_file(d, n, "model.bin"), &w) == 0) host_weights_free(&w);
    return 0;
}
