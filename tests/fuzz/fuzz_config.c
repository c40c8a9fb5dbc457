// fuzz_config: an HF config.json (hf_read_config).
#include "fuzz_util.h"
#include "hf_io.h"
#include "params.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    LlamaConfig c;
    if (hf_read_config(fuzz_file(d, n, "config.json"), &c) != 0) return 0;
    // an accepted config must give a table that can be laid out
    ParamTable t;
    FUZZ_CALL(param_table_build(&t, &c); param_table_free(&t));
    return 0;
}
