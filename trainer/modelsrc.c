// modelsrc.c: MODEL spec -> format reader (see modelsrc.h).
#define _POSIX_C_SOURCE 200809L
#include "modelsrc.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "common.h"
#include "gguf_llama.h"
#include "hf_io.h"
#include "llama2c.h"
#include "share.h"

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

int model_load_any(const char *spec, HostWeights *w) {
    if (model_load_any_shared(spec, w) != 0) return -1;
    if (w->t.shared) {  // a compact shared model: callers of this function want a full one
        HostWeights full;
        share_materialize(w, &full);
        host_weights_free(w);
        *w = full;
    }
    return 0;
}

static int load_any(const char *spec, HostWeights *w) {
    static const struct {
        const char *prefix;
        int (*load)(const char *, HostWeights *);
    } prefixed[] = {{"hf:", hf_load},
                    {"shared:", hf_load_shared},
                    {"llama2c:", llama2c_load},
                    {"gguf:", gguf_load_llama},
                    {"ckpt:", ckpt_load_weights}};
    static const struct {
        const char *suffix;
        int (*load)(const char *, HostWeights *);
    } by_name[] = {{".bin", llama2c_load}, {".gguf", gguf_load_llama}, {".h5", ckpt_load_weights}};
    memset(w, 0, sizeof *w);
    for (size_t i = 0; i < sizeof prefixed / sizeof prefixed[0]; i++) {
        size_t n = strlen(prefixed[i].prefix);
        if (strncmp(spec, prefixed[i].prefix, n) == 0) return prefixed[i].load(spec + n, w);
    }
    struct stat st;
    if (stat(spec, &st) != 0)
        return ps_err_set(
            "%s: cannot load model: %s (give an HF folder, a llama2.c .bin file, a GGUF "
            "file, a checkpoint .h5, or hf:DIR / llama2c:FILE / gguf:FILE / ckpt:FILE)",
            spec, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return hf_is_shared_dir(spec) ? hf_load_shared(spec, w) : hf_load(spec, w);
    for (size_t i = 0; S_ISREG(st.st_mode) && i < sizeof by_name / sizeof by_name[0]; i++)
        if (ends_with(spec, by_name[i].suffix)) return by_name[i].load(spec, w);
    return ps_err_set(
        "%s: cannot tell the model format: expected an HF folder, a llama2.c .bin file, a "
        ".gguf file or a checkpoint .h5; prefix hf:, llama2c:, gguf: or ckpt: to choose",
        spec);
}

// Every format goes through here: weights that are NaN or Inf are refused where
// they enter (eval printed "val loss nan", match picked the NaN head, share
// dropped it without a word).
int model_load_any_shared(const char *spec, HostWeights *w) {
    if (load_any(spec, w) != 0) return -1;
    for (int i = 0; i < w->t.n; i++) {
        const ParamEntry *e = &w->t.e[i];
        int64_t j = ps_first_nonfinite(w->params + e->offset, e->numel);
        if (j >= 0) {
            ps_err_set("%s: tensor %s holds a non-finite value (%g) at element %lld", spec, e->name,
                       w->params[e->offset + (size_t)j], (long long)j);
            host_weights_free(w);
            return -1;
        }
    }
    return 0;
}
