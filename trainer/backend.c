// backend.c: picks the backend (op table) a run uses by name: "cpu", "cuda" or
// "auto" (the CUDA backend when this build has it and a GPU is present).
#include <string.h>

#include "backend.h"
#include "common.h"

#ifndef PS_HAVE_CUDA
// Builds without nvcc have no CUDA backend (cuda/cuda_backend.cu defines this otherwise).
const Backend *backend_cuda_probe(const char **why) {
    if (why) *why = "this build has no CUDA backend (CMake found no nvcc when it configured it)";
    return NULL;
}
#endif

const Backend *backend_get(const char *name) {
    if (!name || !strcmp(name, "cpu")) return backend_cpu();
    if (!strcmp(name, "auto")) {
        const Backend *cuda = backend_cuda_probe(NULL);
        return cuda ? cuda : backend_cpu();
    }
    if (!strcmp(name, "cuda")) {
        const char *why = NULL;
        const Backend *cuda = backend_cuda_probe(&why);
        if (!cuda) ps_die("backend 'cuda' was asked for, but %s; use backend: cpu or auto", why);
        return cuda;
    }
    ps_die("unknown backend '%s' (expected cpu, cuda or auto)", name);
}
