// modelsrc.c: MODEL spec -> format reader (see modelsrc.h).
#define _POSIX_C_SOURCE 200809L
#include "modelsrc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "common.h"
#include "gguf_llama.h"
#include "hf_io.h"
#include "job.h"
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

typedef enum { SRC_HF, SRC_SHARED, SRC_LLAMA2C, SRC_GGUF, SRC_CKPT } SrcKind;

static const struct {
    const char *prefix, *suffix;  // suffix NULL: only by prefix
    SrcKind kind;
    int (*load)(const char *, HostWeights *);
} FORMATS[] = {{"hf:", NULL, SRC_HF, hf_load},
               {"shared:", NULL, SRC_SHARED, hf_load_shared},
               {"llama2c:", ".bin", SRC_LLAMA2C, llama2c_load},
               {"gguf:", ".gguf", SRC_GGUF, gguf_load_llama},
               {"ckpt:", ".h5", SRC_CKPT, ckpt_load_weights}};
enum { N_FORMATS = sizeof FORMATS / sizeof FORMATS[0] };

// The format of a MODEL spec (an index of FORMATS) and the path it names; -1
// with ps_err set when there is none.
static int source_of(const char *spec, const char **path) {
    *path = spec;
    for (int i = 0; i < N_FORMATS; i++) {
        size_t n = strlen(FORMATS[i].prefix);
        if (strncmp(spec, FORMATS[i].prefix, n) == 0) {
            *path = spec + n;
            return i;
        }
    }
    struct stat st;
    if (stat(spec, &st) != 0)
        return ps_err_set(
            "%s: cannot load model: %s (give an HF folder, a llama2.c .bin file, a GGUF "
            "file, a checkpoint .h5, or hf:DIR / llama2c:FILE / gguf:FILE / ckpt:FILE)",
            spec, strerror(errno));
    if (S_ISDIR(st.st_mode)) return hf_is_shared_dir(spec) ? 1 : 0;
    for (int i = 0; S_ISREG(st.st_mode) && i < N_FORMATS; i++)
        if (FORMATS[i].suffix && ends_with(spec, FORMATS[i].suffix)) return i;
    return ps_err_set(
        "%s: cannot tell the model format: expected an HF folder, a llama2.c .bin file, a "
        ".gguf file or a checkpoint .h5; prefix hf:, llama2c:, gguf: or ckpt: to choose",
        spec);
}

static int load_any(const char *spec, HostWeights *w) {
    memset(w, 0, sizeof *w);
    const char *path;
    int f = source_of(spec, &path);
    return f < 0 ? -1 : FORMATS[f].load(path, w);
}

// model_export_info below, depth: checkpoints followed so far.
static int export_info(const char *spec, HfExport *x, int depth) {
    const char *path;
    int f = source_of(spec, &path);
    if (f < 0) return -1;
    hf_export_init(x);
    snprintf(x->from, sizeof x->from, "%s", spec);
    switch (FORMATS[f].kind) {
        case SRC_HF:
        case SRC_SHARED:
            return hf_export_info(path, x);
        case SRC_GGUF:
            if (gguf_special_ids(path, &x->bos_id, &x->eos_id[0], &x->pad_id) != 0) return -1;
            x->n_eos = x->eos_id[0] >= 0;
            snprintf(x->tokenizer, sizeof x->tokenizer, "gguf:%s", path);
            return 0;
        case SRC_LLAMA2C:  // llama2.c's fixed ids (<unk> 0, <s> 1, </s> 2); the tokenizer is
                           // separate
            x->bos_id = 1;
            x->eos_id[0] = 2;
            x->n_eos = 1;
            return 0;
        case SRC_CKPT:
            break;
    }
    // a checkpoint: its job's model.init and data.tokenizer
    CkptMeta meta;
    LlamaConfig cfg;
    if (ckpt_read_meta(path, &meta, &cfg) != 0) return -1;
    JobConfig job;
    int rc = meta.config_yaml ? job_load_string(meta.config_yaml, path, 0, NULL, &job) : -1;
    if (!meta.config_yaml) ps_err_set("%s: the checkpoint records no job config", path);
    ckpt_meta_free(&meta);
    if (rc != 0) return -1;
    if (strcmp(job.model.init, "scratch") != 0 && depth < 8 &&
        export_info(job.model.init, x, depth + 1) != 0) {
        fprintf(stderr,
                "postshare: warning: %s was trained from %s, which cannot be read now (%s): its "
                "special ids are unknown\n",
                path, job.model.init, ps_err_msg());
        hf_export_init(x);
    }
    snprintf(x->from, sizeof x->from, "%.500s (the job of %.500s)", job.model.init, path);
    snprintf(x->tokenizer, sizeof x->tokenizer, "%s", job.data.tokenizer);
    return 0;
}

int model_export_info(const char *spec, const char *tokenizer, HfExport *x) {
    if (export_info(spec, x, 0) != 0) return -1;
    if (tokenizer && *tokenizer) snprintf(x->tokenizer, sizeof x->tokenizer, "%s", tokenizer);
    return 0;
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
