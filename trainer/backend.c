// backend.c: picks the backend (op table) a run uses by name: "cpu", "cuda" or
// "auto" (the CUDA backend when this build has it and a GPU is present), and
// loads the CUDA module (libpostshare_cuda.so) the first time CUDA is asked for.
#define _POSIX_C_SOURCE 200809L
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "common.h"

#ifdef PS_HAVE_CUDA
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#define PS_CUDA_MODULE_FILE "libpostshare_cuda.so"

// The module: $PS_CUDA_MODULE, else libpostshare_cuda.so beside the program
// (CMake builds every program and the module into one directory). A failed
// load is not remembered, so a later call may try again.
void *ps_cuda_module_sym(const char *name, const char **why) {
    static void *handle;
    static char msg[PATH_MAX + 600];
    if (!handle) {
        char path[PATH_MAX];
        const char *env = getenv("PS_CUDA_MODULE");
        if (env && env[0]) {
            snprintf(path, sizeof path, "%s", env);
        } else {
            ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
            path[n > 0 ? n : 0] = '\0';
            char *slash = strrchr(path, '/');
            size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
            if (dir + sizeof PS_CUDA_MODULE_FILE > sizeof path) dir = 0;
            memcpy(path + dir, PS_CUDA_MODULE_FILE, sizeof PS_CUDA_MODULE_FILE);
        }
        handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!handle) {
            const char *e = dlerror();
            snprintf(msg, sizeof msg,
                     "the CUDA backend module %s could not be loaded (%s); it is built beside "
                     "postshare by a CUDA build (PS_CUDA_MODULE names another path)",
                     path, e ? e : "unknown error");
            if (why) *why = msg;
            return NULL;
        }
    }
    void *sym = dlsym(handle, name);
    if (!sym) {
        snprintf(msg, sizeof msg, "the CUDA backend module has no symbol %s (a stale build?)",
                 name);
        if (why) *why = msg;
    }
    return sym;
}

const Backend *backend_cuda_probe(const char **why) {
    void *sym = ps_cuda_module_sym("ps_cuda_module_probe", why);
    if (!sym) return NULL;
    const Backend *(*probe)(const char **);
    memcpy(&probe, &sym, sizeof probe);  // POSIX: dlsym's pointer is the function's
    return probe(why);
}
#else
// Builds without nvcc have no CUDA backend.
void *ps_cuda_module_sym(const char *name, const char **why) {
    (void)name;
    if (why) *why = "this build has no CUDA backend (CMake found no nvcc when it configured it)";
    return NULL;
}

const Backend *backend_cuda_probe(const char **why) {
    return ps_cuda_module_sym("ps_cuda_module_probe", why);
}
#endif

int ps_nvidia_driver_present(void) {
    const char *paths[] = {"/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/dxg"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (access(paths[i], F_OK) == 0) return 1;
    return 0;
}

const Backend *backend_get(const char *name) {
    if (!name || !strcmp(name, "cpu")) return backend_cpu();
    if (!strcmp(name, "auto")) {
        const Backend *cuda = ps_nvidia_driver_present() ? backend_cuda_probe(NULL) : NULL;
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
