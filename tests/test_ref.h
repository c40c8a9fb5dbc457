// test_ref.h: reading reference tensors (fixtures written by the python
// scripts in tests/) from a safetensors file, for tests that compare to them.
#pragma once
#include "common.h"
#include "safetensors.h"

// The fp32 tensor `name` of f, which must have `expect` elements (dies otherwise).
static inline float *t_read_ref(const StFile *f, const char *name, size_t expect) {
    const StTensor *t = st_find(f, name);
    if (!t) ps_die("%s: reference tensor '%s' missing", f->path, name);
    CHECK(st_numel(t) == expect, "%s: %zu elements, expected %zu", name, st_numel(t), expect);
    float *out = xmalloc(sizeof(float) * expect);
    CHECK(st_read_f32(f, t, out) == 0, "%s", ps_err_msg());
    return out;
}
