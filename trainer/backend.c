// backend.c: picks the backend (op table) a run uses by name.
#include <string.h>

#include "backend.h"
#include "common.h"

const Backend *backend_get(const char *name) {
    if (!name || !strcmp(name, "cpu") || !strcmp(name, "auto")) return backend_cpu();
    if (!strcmp(name, "cuda"))
        ps_die(
            "backend 'cuda' was asked for, but this build has no CUDA backend yet; "
            "use backend: cpu or auto");
    ps_die("unknown backend '%s' (expected cpu, cuda or auto)", name);
}
