// test_gpu.h: helpers shared by the GPU tests (tests/test_gpu_*.c): finding
// the CUDA backend or skipping cleanly, the random seed, bf16 rounding, and the
// relative L2 error ||out - ref|| / ||ref|| that every comparison uses.
//
// Without a GPU (or in a build without CUDA) gpu_or_skip() prints a SKIP line
// and the test exits 0; ctest runs these tests under the label gpu.
// Environment: PS_TEST_SEED=N fixes the seed (default: drawn from the clock and
// printed, so every run checks fresh inputs); PS_GPU_TEST_QUICK=1 keeps only
// small shapes (for compute-sanitizer runs).
#pragma once

#include <math.h>
#include <stdint.h>
#include <time.h>

#include "backend.h"
#include "common.h"
#include "test.h"
#ifdef PS_HAVE_CUDA
#include "cuda_backend.h"
#endif

// The CUDA backend, or NULL after a SKIP line saying why.
static inline const Backend *gpu_or_skip(void) {
    const char *why = NULL;
    const Backend *g = backend_cuda_probe(&why);
    if (!g) {
        T_SKIP("no GPU test can run: %s", why);
        return NULL;
    }
#ifdef PS_HAVE_CUDA
    printf("GPU: %s (compute capability %d.%d)\n", cuda_device_name(), cuda_device_cc() / 10,
           cuda_device_cc() % 10);
#endif
    return g;
}

static inline uint64_t gpu_test_seed(void) {
    const char *s = getenv("PS_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
    printf("seed %llu (rerun with PS_TEST_SEED=%llu)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    return seed;
}

static inline int gpu_test_quick(void) {
    const char *s = getenv("PS_GPU_TEST_QUICK");
    return s && s[0] == '1';
}

// x rounded to the nearest bf16 (inputs are made bf16-exact, so that the CPU
// reference and the GPU see identical values).
static inline float t_bf16(float x) {
    return bf16_to_f32(f32_to_bf16(x));
}

// ||out - ref||_2 / ||ref||_2 in fp64 (||out - ref|| when ref is 0). Any
// non-finite value in out gives NaN, which fails every `err <= tol` check.
static inline double t_rel_l2(const float *out, const float *ref, size_t n) {
    double d2 = 0.0, r2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) return NAN;
        double d = (double)out[i] - ref[i];
        d2 += d * d;
        r2 += (double)ref[i] * ref[i];
    }
    return r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
}

// The same for fp64 values.
static inline double t_rel_l2_d(const double *out, const double *ref, size_t n) {
    double d2 = 0.0, r2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) return NAN;
        d2 += (out[i] - ref[i]) * (out[i] - ref[i]);
        r2 += ref[i] * ref[i];
    }
    return r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
}
