// fuzz_shard: an llm.c token shard (shard_open / shard_read).
#include "fuzz_util.h"
#include "shard.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    size_t k;
    int *t = shard_read(fuzz_file(d, n, "data_000.bin"), 50304, &k);
    free(t);
    return 0;
}
