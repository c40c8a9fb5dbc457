// test_model_hf.c: the CPU model against HF transformers' LlamaForCausalLM.
//
// tests/fixtures/<case>/ holds a small random HF model (written by
// tests/make_hf_fixtures.py) and reference.safetensors with a batch and the
// float64 reference logits, loss and every parameter gradient. The model is
// loaded through the HF importer; each tensor must satisfy
// max|ours - ref| / max|ref| <= 1e-4. The cases cover MHA/GQA, tied/untied,
// an explicit head_dim, and RoPE scaling llama3 and linear.
#include <math.h>

#include "backend.h"
#include "common.h"
#include "hf_io.h"
#include "model.h"
#include "safetensors.h"
#include "test.h"
#include "test_ref.h"

static void check_case(const char *name) {
    char dir[4096], refpath[4200];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", PS_SOURCE_DIR, name);
    snprintf(refpath, sizeof refpath, "%s/reference.safetensors", dir);
    HostWeights w;
    int rc = hf_load(dir, &w);
    T_CHECK(rc == 0, "%s: hf_load failed: %s", name, ps_err_msg());
    if (rc) return;
    StFile rf;
    CHECK(st_open(refpath, &rf) == 0, "%s", ps_err_msg());
    const StTensor *tt = st_find(&rf, "tokens");
    CHECK(tt && tt->ndim == 2, "%s: tokens [B,T] missing", refpath);
    int B = (int)tt->shape[0], T = (int)tt->shape[1], V = w.t.cfg.vocab_size;
    int *tok = xmalloc(sizeof(int) * B * T), *tgt = xmalloc(sizeof(int) * B * T);
    CHECK(st_read_i32(&rf, tt, tok) == 0, "%s", ps_err_msg());
    CHECK(st_read_i32(&rf, st_find(&rf, "targets"), tgt) == 0, "%s", ps_err_msg());

    Model M;
    model_init(&M, backend_cpu(), &w.t.cfg);
    model_set_params(&M, w.params);
    model_zero_grads(&M);
    // logits from a forward without targets (with targets the classifier is fused:
    // no logits are stored), then the loss and the backward
    float *logits = xmalloc(sizeof(float) * (size_t)B * T * V);
    model_forward(&M, tok, NULL, B, T);
    model_get_logits(&M, logits);
    float loss = model_forward(&M, tok, tgt, B, T);
    model_backward(&M, 1.0f / M.n_valid);
    float *g = xmalloc(sizeof(float) * M.t.total);
    model_get_grads(&M, g);

    float *ref_logits = t_read_ref(&rf, "logits", (size_t)B * T * V);
    float *ref_loss = t_read_ref(&rf, "loss", 1);
    double el = t_rel_err(logits, ref_logits, (size_t)B * T * V);
    double eloss = fabs(loss - ref_loss[0]) / fabs(ref_loss[0]);
    T_CHECK(el <= 1e-4, "%s: logits rel err %.3g", name, el);
    T_CHECK(eloss <= 1e-5, "%s: loss %.7f vs ref %.7f", name, loss, ref_loss[0]);
    printf("%s: loss %.7f (ref %.7f), logits rel err %.2e\n", name, loss, ref_loss[0], el);
    double worst = 0.0;
    for (int i = 0; i < M.t.n; i++) {
        const ParamEntry *e = &M.t.e[i];
        char gname[128];
        snprintf(gname, sizeof gname, "grad.%s", e->name);
        float *rg = t_read_ref(&rf, gname, e->numel);
        double eg = t_rel_err(g + e->offset, rg, e->numel);
        T_CHECK(eg <= 1e-4, "%s: %s rel err %.3g", name, gname, eg);
        if (eg > worst) worst = eg;
        free(rg);
    }
    if (!w.t.cfg.tie_embeddings)
        T_CHECK(st_find(&rf, "grad.lm_head.weight") != NULL,
                "untied reference has an lm_head grad");
    printf("%s: %d gradient tensors, worst rel err %.2e\n", name, M.t.n, worst);
    free(ref_logits);
    free(ref_loss);
    free(logits);
    free(g);
    free(tok);
    free(tgt);
    st_close(&rf);
    model_free(&M);
    host_weights_free(&w);
}

int main(void) {
    check_case("mha_untied");
    check_case("gqa_tied");
    // Llama 3.2-shaped: explicit head_dim, rope llama3, below and above
    // original_max_position_embeddings; and rope linear (transformers 4 config form)
    check_case("llama3_short");
    check_case("llama3_long");
    check_case("linear_hd");
    return t_summary();
}
