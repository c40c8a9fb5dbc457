// llama2c.c: llama2.c .bin checkpoint loader (see llama2c.h for the format).
//
// The tensors are streamed from the file straight into the flat buffer, one
// (tensor kind, layer) block at a time, so loading needs no second copy of the
// model; only wq/wk pass through a one-layer scratch buffer for the RoPE
// permutation.
#define _POSIX_C_SOURCE 200809L
#include "llama2c.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"

// Read n floats into dst. 0 or -1 (the size was validated, so only I/O fails).
static int read_f32(FILE *fp, const char *path, float *dst, size_t n) {
    if (fread(dst, sizeof(float), n, fp) != n)
        return ps_err_set("%s: read failed: %s", path, ferror(fp) ? strerror(errno) : "EOF");
    return 0;
}

// a += b * c in uint64 with overflow detection; returns 0 on overflow.
static int acc(uint64_t *a, uint64_t b, uint64_t c) {
    uint64_t p;
    if (__builtin_mul_overflow(b, c, &p) || __builtin_add_overflow(*a, p, a)) return 0;
    return 1;
}

int llama2c_load(const char *path, HostWeights *w) {
    memset(w, 0, sizeof *w);
    FILE *fp = fopen(path, "rb");
    if (!fp) return ps_err_set("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return ps_err_set("%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)st.st_size;
    int32_t h[7];
    if (size < sizeof h || fread(h, sizeof h, 1, fp) != 1) {
        fclose(fp);
        return ps_err_set(
            "%s: truncated llama2.c file: %llu bytes, smaller than the 28-byte "
            "header",
            path, (unsigned long long)size);
    }
    int dim = h[0], hidden = h[1], L = h[2], nh = h[3], nkv = h[4], seq = h[6];
    int tied = h[5] > 0;
    int V = h[5] > 0 ? h[5] : (h[5] == INT32_MIN ? 0 : -h[5]);
    if (dim <= 0 || hidden <= 0 || L <= 0 || nh <= 0 || nkv <= 0 || V <= 0 || seq <= 0 ||
        dim % nh || nh % nkv || (dim / nh) % 2) {
        fclose(fp);
        return ps_err_set(
            "%s: not a llama2.c checkpoint: bad header (dim=%d hidden_dim=%d "
            "n_layers=%d n_heads=%d n_kv_heads=%d vocab_size=%d seq_len=%d)",
            path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
    }
    int hd = dim / nh, kvd = nkv * hd;

    // Exact size the header implies, in floats.
    uint64_t nf = 0, D = (uint64_t)dim, Lu = (uint64_t)L;
    int ok = acc(&nf, (uint64_t)V, D)                   // token_embedding
             && acc(&nf, Lu, 2 * D)                     // rms_att, rms_ffn
             && acc(&nf, Lu * D, 2 * D)                 // wq, wo
             && acc(&nf, Lu * (uint64_t)kvd, 2 * D)     // wk, wv
             && acc(&nf, Lu * (uint64_t)hidden, 3 * D)  // w1, w2, w3
             && acc(&nf, 1, D)                          // rms_final
             && acc(&nf, (uint64_t)seq, (uint64_t)hd)   // freq_cis real + imag
             && (tied || acc(&nf, (uint64_t)V, D));     // wcls
    uint64_t expect = 28;
    if (!ok || !acc(&expect, nf, 4)) {
        fclose(fp);
        return ps_err_set("%s: header sizes overflow: not a llama2.c checkpoint", path);
    }
    if (size != expect) {
        fclose(fp);
        return ps_err_set(
            "%s: file is %llu bytes but its header (dim=%d hidden_dim=%d "
            "n_layers=%d n_heads=%d n_kv_heads=%d vocab_size=%d seq_len=%d) "
            "implies %llu bytes: %s",
            path, (unsigned long long)size, h[0], h[1], h[2], h[3], h[4], h[5], h[6],
            (unsigned long long)expect,
            size < expect ? "truncated file" : "trailing data / not this format");
    }

    LlamaConfig cfg = {.dim = dim,
                       .n_layers = L,
                       .n_heads = nh,
                       .n_kv_heads = nkv,
                       .ffn_dim = hidden,
                       .vocab_size = V,
                       .max_seq_len = seq,
                       .rope_theta = 10000.0f,
                       .norm_eps = 1e-5f,
                       .tie_embeddings = tied};
    if (llama_config_validate(&cfg) != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ps_err_msg());
        fclose(fp);
        return ps_err_set("%s: unsupported config: %s", path, msg);
    }
    param_table_build(&w->t, &cfg);
    w->params = xmalloc(sizeof(float) * w->t.total);
    float *P = w->params;
    const ParamTable *t = &w->t;
    float *scratch = xmalloc(sizeof(float) * (size_t)dim * (size_t)dim);  // one layer of wq
    int rc = -1;

#define RD(kind, n)             \
    for (int l = 0; l < L; l++) \
        if (read_f32(fp, path, P + param_layer(t, l, kind)->offset, (size_t)(n))) goto done;

    if (read_f32(fp, path, P + t->e[t->embed].offset, (size_t)V * dim)) goto done;
    RD(P_ATTN_NORM, dim);
    for (int l = 0; l < L; l++) {
        if (read_f32(fp, path, scratch, (size_t)dim * dim)) goto done;
        rope_rows_to_hf(P + param_layer(t, l, P_WQ)->offset, scratch, nh, hd, dim);
    }
    for (int l = 0; l < L; l++) {
        if (read_f32(fp, path, scratch, (size_t)kvd * dim)) goto done;
        rope_rows_to_hf(P + param_layer(t, l, P_WK)->offset, scratch, nkv, hd, dim);
    }
    RD(P_WV, (size_t)kvd * dim);
    RD(P_WO, (size_t)dim * dim);
    RD(P_FFN_NORM, dim);
    RD(P_W_GATE, (size_t)hidden * dim);
    RD(P_W_DOWN, (size_t)dim * hidden);
    RD(P_W_UP, (size_t)hidden * dim);
#undef RD
    if (read_f32(fp, path, P + t->e[t->final_norm].offset, (size_t)dim)) goto done;
    // skip freq_cis_real / freq_cis_imag: RoPE is recomputed from rope_theta
    if (fseek(fp, (long)((size_t)seq * (size_t)hd * sizeof(float)), SEEK_CUR) != 0) {
        ps_err_set("%s: seek failed: %s", path, strerror(errno));
        goto done;
    }
    if (!tied && read_f32(fp, path, P + t->e[t->lm_head].offset, (size_t)V * dim)) goto done;
    rc = 0;
done:
    free(scratch);
    fclose(fp);
    if (rc != 0) host_weights_free(w);
    return rc;
}
