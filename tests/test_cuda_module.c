// test_cuda_module.c: the CUDA backend is a module loaded only when a program
// asks for CUDA (backend.h: ps_cuda_module_sym). A run on the CPU backend maps
// no CUDA library, nor does "auto" on a machine without an NVIDIA driver; a module that is not
// where it is looked for gives a reason naming the path; the first probe then loads it (a CUDA
// build: the module and cuBLAS appear in /proc/self/maps) and reports the GPU or why there is none.
// In a build without CUDA the probe says the build has none. Runs without a GPU.
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "test.h"

// Whether a mapping of this process's has `name` in its path.
static int mapped(const char *name) {
    FILE *f = xfopen("/proc/self/maps", "r");
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, name) != NULL;
    fclose(f);
    return found;
}

int main(void) {
    // work on the CPU backend: a matmul through BLAS
    const Backend *cpu = backend_get("cpu");
    float x[6] = {1, 2, 3, 4, 5, 6}, W[6] = {1, 0, 0, 0, 1, 0}, out[4];
    cpu->matmul_fwd(out, x, W, 2, 3, 2, NULL);  // out = x W^T: columns 0 and 1 of x
    T_CHECK(out[0] == 1 && out[1] == 2 && out[2] == 4 && out[3] == 5, "a CPU matmul runs");
    T_CHECK(!mapped("libcublas") && !mapped("libpostshare_cuda") && !mapped("libnccl"),
            "a CPU run mapped a CUDA library");
    // "auto" on a machine without an NVIDIA driver: the CPU, without loading the module
    if (!ps_nvidia_driver_present()) {
        T_CHECK(backend_get("auto") == backend_cpu() && !mapped("libpostshare_cuda") &&
                    !mapped("libcublas"),
                "auto without an NVIDIA driver: the CPU, no CUDA library mapped");
    } else {
        printf("this machine shows an NVIDIA driver: auto may load the module\n");
    }

    // a module that is not there: NULL and a reason naming the path
    const char *bogus = "/nonexistent-dir/libpostshare_cuda.so";
    setenv("PS_CUDA_MODULE", bogus, 1);
    const char *why = NULL;
    const Backend *g = backend_cuda_probe(&why);
#ifdef PS_HAVE_CUDA
    T_CHECK(!g && why && strstr(why, bogus) && strstr(why, "could not be loaded"),
            "missing module: %s", why ? why : "(no reason)");
#else
    T_CHECK(!g && why && strstr(why, "no CUDA backend"), "no CUDA build: %s",
            why ? why : "(no reason)");
#endif
    printf("without the module: %s\n", why);
    unsetenv("PS_CUDA_MODULE");

#ifdef PS_HAVE_CUDA
    // the module beside the program: loaded now, with its libraries
    why = NULL;
    g = backend_cuda_probe(&why);
    T_CHECK(mapped("libpostshare_cuda.so") && mapped("libcublasLt"),
            "the probe loads the module and cuBLASLt");
    T_CHECK(g || (why && strstr(why, "GPU")), "probe: a backend or a reason about the GPU: %s",
            why ? why : "(none)");
    printf("probe: %s\n", g ? "a GPU" : why);
#else
    T_SKIP("the module load itself needs a CUDA build");
#endif
    return t_summary();
}
