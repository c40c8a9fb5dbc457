// fuzz_calib: a calibration file of postshare calibrate (calib_read: the header, the
// Gram sizes it implies against the file's, and the optional head-importance and
// measured-damage sections with their sources), without a model shape to match.
#include "calib.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    const char *p = fuzz_file(d, n, "calib.grams");
    CalibGrams g;
    if (calib_read(p, NULL, &g) == 0) calib_free(&g);
    return 0;
}
