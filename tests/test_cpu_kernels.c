// test_cpu_kernels.c: the CPU backend's fast kernels against its reference
// loops (cpu_kernels.h): the BLAS attention (output, log-sum-exp and every input
// gradient) on random shapes with and without GQA, T up to a few hundred, dense
// and in the model's fused q|k|v layout; SwiGLU on fused gate|up rows against
// the per-matrix formula; strided RoPE against dense; the
// chunked classifier against matmul + cross-entropy; a forward-only model
// against a training one.
#include <math.h>

#include "backend.h"
#include "common.h"
#include "cpu_kernels.h"
#include "model.h"
#include "test.h"

static Rng rng;

static float *randn(size_t n, float s) {
    float *x = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = s * rng_normal(&rng);
    return x;
}

static void test_attention(int B, int T, int nh, int nkv, int hd, float qscale) {
    const Backend *be = backend_cpu();
    size_t nq = (size_t)B * T * nh * hd, nk = (size_t)B * T * nkv * hd;
    float *q = randn(nq, qscale), *k = randn(nk, qscale), *v = randn(nk, 1.0f);
    float *dout = randn(nq, 1.0f);
    float *o = xcalloc(nq, 4), *o_ref = xcalloc(nq, 4);
    float *probs = xmalloc(cpu_attention_ref_state_bytes(B, T, nh));
    float *lse_ref = xmalloc(sizeof(float) * (size_t)B * nh * T);
    CHECK(be->attn_state_bytes(B, T, nh) == sizeof(float) * (size_t)B * nh * T,
          "the CPU attention state is lse [B,nh,T]");
    float *lse = xmalloc(be->attn_state_bytes(B, T, nh));
    be->attention_fwd(o, lse, q, k, v, nh * hd, nkv * hd, B, T, nh, nkv, hd);
    cpu_attention_ref_fwd(o_ref, probs, lse_ref, q, k, v, B, T, nh, nkv, hd);
    double eo = t_rel_err(o, o_ref, nq), el = t_rel_err(lse, lse_ref, (size_t)B * nh * T);

    float *dq = xcalloc(nq, 4), *dk = xcalloc(nk, 4), *dv = xcalloc(nk, 4);
    float *dq_r = xcalloc(nq, 4), *dk_r = xcalloc(nk, 4), *dv_r = xcalloc(nk, 4);
    // dk/dv are outputs (=): garbage in them must not leak through
    for (size_t i = 0; i < nk; i++) dk[i] = dv[i] = 1e3f;
    be->attention_bwd(dq, dk, dv, dout, lse, q, k, v, nh * hd, nkv * hd, B, T, nh, nkv, hd);
    cpu_attention_ref_bwd(dq_r, dk_r, dv_r, dout, probs, q, k, v, B, T, nh, nkv, hd);
    double eq = t_rel_err(dq, dq_r, nq), ek = t_rel_err(dk, dk_r, nk), ev = t_rel_err(dv, dv_r, nk);
    const double tol = 2e-5;
    T_CHECK(eo <= tol && el <= tol && eq <= tol && ek <= tol && ev <= tol,
            "attention B%d T%d nh%d nkv%d hd%d: out %.2e lse %.2e dq %.2e dk %.2e dv %.2e", B, T,
            nh, nkv, hd, eo, el, eq, ek, ev);
    printf(
        "attention B%d T%3d nh%d nkv%d hd%3d: rel err out %.1e lse %.1e dq %.1e dk %.1e dv "
        "%.1e\n",
        B, T, nh, nkv, hd, eo, el, eq, ek, ev);

    // The model's layout: q, k, v (and dq, dk, dv) as column blocks of one
    // [BT, qd + 2 kvd] buffer (rows ld apart) give bitwise the dense results.
    int qd = nh * hd, kvd = nkv * hd, ld = qd + 2 * kvd, BT = B * T;
    float *qkv = xmalloc(sizeof(float) * (size_t)BT * ld),
          *dqkv = xmalloc(sizeof(float) * (size_t)BT * ld);
    for (int r = 0; r < BT; r++) {
        memcpy(qkv + (size_t)r * ld, q + (size_t)r * qd, sizeof(float) * qd);
        memcpy(qkv + (size_t)r * ld + qd, k + (size_t)r * kvd, sizeof(float) * kvd);
        memcpy(qkv + (size_t)r * ld + qd + kvd, v + (size_t)r * kvd, sizeof(float) * kvd);
    }
    for (size_t i = 0; i < (size_t)BT * ld; i++) dqkv[i] = 1e3f;  // every element is written
    float *o2 = xmalloc(sizeof(float) * nq), *lse2 = xmalloc(be->attn_state_bytes(B, T, nh));
    be->attention_fwd(o2, lse2, qkv, qkv + qd, qkv + qd + kvd, ld, ld, B, T, nh, nkv, hd);
    be->attention_bwd(dqkv, dqkv + qd, dqkv + qd + kvd, dout, lse2, qkv, qkv + qd, qkv + qd + kvd,
                      ld, ld, B, T, nh, nkv, hd);
    int same =
        !memcmp(o, o2, sizeof(float) * nq) && !memcmp(lse, lse2, be->attn_state_bytes(B, T, nh));
    for (int r = 0; r < BT; r++)
        same = same && !memcmp(dqkv + (size_t)r * ld, dq + (size_t)r * qd, sizeof(float) * qd) &&
               !memcmp(dqkv + (size_t)r * ld + qd, dk + (size_t)r * kvd, sizeof(float) * kvd) &&
               !memcmp(dqkv + (size_t)r * ld + qd + kvd, dv + (size_t)r * kvd, sizeof(float) * kvd);
    T_CHECK(same, "attention B%d T%d nh%d nkv%d hd%d: the fused q|k|v layout differs from dense", B,
            T, nh, nkv, hd);
    free(qkv), free(dqkv), free(o2), free(lse2);
    float *bufs[] = {q, k, v, dout, o, o_ref, probs, lse_ref, lse, dq, dk, dv, dq_r, dk_r, dv_r};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

// SwiGLU on the fused gate|up rows [N, 2F] against the per-matrix formula on
// separate gate and up arrays (libm expf; the op uses ps_expf).
static void test_swiglu(int N, int F) {
    const Backend *be = backend_cpu();
    size_t n = (size_t)N * F;
    float *gu = randn(2 * n, 3.0f), *dout = randn(n, 1.0f);
    float *out = xmalloc(sizeof(float) * n), *dgu = xmalloc(sizeof(float) * 2 * n);
    for (size_t i = 0; i < 2 * n; i++) dgu[i] = 1e3f;  // every element is written
    be->swiglu_fwd(out, gu, N, F);
    be->swiglu_bwd(dgu, dout, gu, N, F);
    double eo = 0.0, eg = 0.0, eu = 0.0;
    for (int r = 0; r < N; r++)
        for (int c = 0; c < F; c++) {
            size_t i = (size_t)r * F + c, gi = (size_t)r * 2 * F + c;
            double g = gu[gi], u = gu[gi + F], d = dout[i], sig = 1.0 / (1.0 + exp(-g));
            double ref_o = g * sig * u, ref_dg = d * u * sig * (1.0 + g * (1.0 - sig));
            double ref_du = d * g * sig;
            eo = fmax(eo, fabs(out[i] - ref_o) / (1.0 + fabs(ref_o)));
            eg = fmax(eg, fabs(dgu[gi] - ref_dg) / (1.0 + fabs(ref_dg)));
            eu = fmax(eu, fabs(dgu[gi + F] - ref_du) / (1.0 + fabs(ref_du)));
        }
    T_CHECK(eo <= 1e-5 && eg <= 1e-5 && eu <= 1e-5,
            "swiglu N %d F %d: out %.2e dgate %.2e dup %.2e", N, F, eo, eg, eu);
    printf("swiglu N %4d F %4d: err out %.1e dgate %.1e dup %.1e\n", N, F, eo, eg, eu);
    free(gu), free(dout), free(out), free(dgu);
}

// RoPE on the first nheads heads of strided rows (the fused q|k|v rows) gives
// bitwise the dense op's values and leaves the rest of each row alone.
static void test_rope_strided(int B, int T, int nheads, int hd, int extra) {
    const Backend *be = backend_cpu();
    int ld = nheads * hd + extra, BT = B * T, dn = nheads * hd;
    LlamaConfig rc = {.dim = dn, .n_heads = nheads, .head_dim = hd, .rope_theta = 10000.0f};
    float *inv = xmalloc(sizeof(float) * (size_t)(hd / 2));
    rope_inv_freq(&rc, inv);
    float *x = randn((size_t)BT * ld, 1.0f), *x0 = xmalloc(sizeof(float) * (size_t)BT * ld);
    float *d = xmalloc(sizeof(float) * (size_t)BT * dn);
    memcpy(x0, x, sizeof(float) * (size_t)BT * ld);
    for (int r = 0; r < BT; r++) memcpy(d + (size_t)r * dn, x + (size_t)r * ld, sizeof(float) * dn);
    int ok = 1;
    for (int dir = 0; dir < 2; dir++) {
        if (dir == 0) {
            be->rope_fwd(x, inv, B, T, nheads, hd, ld);
            be->rope_fwd(d, inv, B, T, nheads, hd, dn);
        } else {
            be->rope_bwd(x, inv, B, T, nheads, hd, ld);
            be->rope_bwd(d, inv, B, T, nheads, hd, dn);
        }
        for (int r = 0; r < BT; r++)
            ok = ok && !memcmp(x + (size_t)r * ld, d + (size_t)r * dn, sizeof(float) * dn) &&
                 !memcmp(x + (size_t)r * ld + dn, x0 + (size_t)r * ld + dn, sizeof(float) * extra);
    }
    T_CHECK(ok, "rope B %d T %d heads %d hd %d ld %d: strided differs from dense", B, T, nheads, hd,
            ld);
    free(inv), free(x), free(x0), free(d);
}

// matmul_fwd with a residual (into another buffer, and in place) against the
// plain product plus an add; the output's old contents must not leak in.
static void test_matmul_res(int N, int IC, int OC) {
    const Backend *be = backend_cpu();
    size_t n = (size_t)N * OC;
    float *x = randn((size_t)N * IC, 1.0f), *W = randn((size_t)OC * IC, 0.5f);
    float *res = randn(n, 1.0f), *out = randn(n, 1e3f), *ref = xmalloc(sizeof(float) * n);
    for (int i = 0; i < N; i++)  // plain loops in double (N == 1 runs sgemv, else sgemm)
        for (int o = 0; o < OC; o++) {
            double acc = res[(size_t)i * OC + o];
            for (int k = 0; k < IC; k++)
                acc += (double)x[(size_t)i * IC + k] * W[(size_t)o * IC + k];
            ref[(size_t)i * OC + o] = (float)acc;
        }
    be->matmul_fwd(out, x, W, N, IC, OC, res);
    double e1 = t_rel_err(out, ref, n);
    be->matmul_fwd(res, x, W, N, IC, OC, res);  // in place
    double e2 = t_rel_err(res, ref, n);
    T_CHECK(e1 <= 1e-5 && e2 <= 1e-5, "matmul_fwd + res N %d IC %d OC %d: %.2e, in place %.2e", N,
            IC, OC, e1, e2);
    printf("matmul_fwd + res N %3d IC %3d OC %3d: rel err %.1e, in place %.1e\n", N, IC, OC, e1,
           e2);
    free(x), free(W), free(res), free(out), free(ref);
}

// The fused classifier against the unfused ops (matmul + cross-entropy), with
// ignored rows; V large enough for several row chunks when chunked is set.
static void test_classifier(int BT, int C, int V) {
    const Backend *be = backend_cpu();
    float *x = randn((size_t)BT * C, 1.0f), *W = randn((size_t)V * C, 0.5f);
    int *tg = xmalloc(sizeof(int) * BT);
    for (int i = 0; i < BT; i++) tg[i] = i % 7 == 3 ? -1 : (int)(rng_u64(&rng) % (uint64_t)V);
    float *loss = xmalloc(sizeof(float) * BT), *loss_r = xmalloc(sizeof(float) * BT);
    float *lg = xmalloc(sizeof(float) * (size_t)BT * V);
    be->classifier_fwd(loss, NULL, NULL, x, W, tg, BT, C, V, 0.0f);  // losses only
    be->matmul_fwd(lg, x, W, BT, C, V, NULL);
    be->crossentropy_fwd(loss_r, lg, tg, BT, V);
    float scale = 1.0f / BT;
    float *dx = randn((size_t)BT * C, 1.0f), *dx_r = xcalloc((size_t)BT * C, 4);  // dx: =
    float *dW = randn((size_t)V * C, 1.0f), *dW_r = xmalloc(sizeof(float) * (size_t)V * C);
    memcpy(dW_r, dW, sizeof(float) * (size_t)V * C);  // dW: +=
    float *loss2 = xmalloc(sizeof(float) * BT);       // training: losses and gradients in one call
    be->classifier_fwd(loss2, dx, dW, x, W, tg, BT, C, V, scale);
    be->crossentropy_bwd(lg, tg, BT, V, scale);
    be->matmul_bwd(dx_r, dW_r, lg, x, W, BT, C, V, 0);
    double el = t_rel_err(loss, loss_r, BT), ex = t_rel_err(dx, dx_r, (size_t)BT * C),
           ew = t_rel_err(dW, dW_r, (size_t)V * C);
    T_CHECK(el <= 1e-5 && ex <= 1e-5 && ew <= 1e-5,
            "classifier BT %d C %d V %d: loss %.2e dlnf %.2e dW %.2e", BT, C, V, el, ex, ew);
    T_CHECK(!memcmp(loss, loss2, sizeof(float) * BT),
            "classifier BT %d C %d V %d: the losses differ with and without gradients", BT, C, V);
    free(loss2);
    printf("classifier BT %4d C %3d V %6d: rel err loss %.1e dlnf %.1e dWhead %.1e\n", BT, C, V, el,
           ex, ew);
    float *bufs[] = {x, W, loss, loss_r, lg, dx, dx_r, dW, dW_r};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(tg);
}

// A forward-only model gives bitwise the same logits and losses as a training
// model (model_forward_logprobs: minus the per-row losses), in less memory.
static void test_forward_only(void) {
    // dim, layers, heads, kv heads (GQA), ffn, vocab, max_seq_len, theta, eps, untied
    LlamaConfig c = {.dim = 48,
                     .n_layers = 3,
                     .n_heads = 6,
                     .n_kv_heads = 2,
                     .ffn_dim = 80,
                     .vocab_size = 97,
                     .max_seq_len = 64,
                     .rope_theta = 10000.0f,
                     .norm_eps = 1e-5f};
    int B = 3, T = 40, BT = B * T, V = c.vocab_size;
    Model Mt, Mf;
    model_init(&Mt, backend_cpu(), &c);
    model_init(&Mf, backend_cpu(), &c);
    float *p = randn(Mt.t.total, 0.2f);
    model_set_params(&Mt, p);
    model_set_params(&Mf, p);
    model_set_forward_only(&Mf, 1);
    T_CHECK(Mf.grads == NULL, "forward-only frees the gradients");
    int *tok = xmalloc(sizeof(int) * BT), *tgt = xmalloc(sizeof(int) * BT);
    for (int i = 0; i < BT; i++) {
        tok[i] = (int)(rng_u64(&rng) % (uint64_t)V);
        tgt[i] = i % 5 == 0 ? -1 : (int)(rng_u64(&rng) % (uint64_t)V);
    }
    float *lt = xmalloc(sizeof(float) * (size_t)BT * V), *lf = xmalloc(sizeof(float) * BT * V);
    model_forward(&Mt, tok, NULL, B, T);
    model_get_logits(&Mt, lt);
    model_forward(&Mf, tok, NULL, B, T);
    model_get_logits(&Mf, lf);
    T_CHECK(!memcmp(lt, lf, sizeof(float) * (size_t)BT * V), "forward-only logits differ");
    float loss = model_forward(&Mt, tok, tgt, B, T);
    float *lp = xmalloc(sizeof(float) * BT);
    int n = model_forward_logprobs(&Mf, tok, tgt, B, T, lp);
    double sum = 0.0;
    for (int i = 0; i < BT; i++) sum -= lp[i];
    T_CHECK(n == Mt.n_valid && (float)(sum / n) == loss, "logprobs: %d targets, mean %.9g vs %.9g",
            n, sum / n, loss);
    // each log-probability against a log-softmax of the logits
    double worst = 0.0;
    for (int i = 0; i < BT; i++) {
        const float *l = lt + (size_t)i * V;
        double mx = l[0], s = 0.0;
        for (int j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        for (int j = 0; j < V; j++) s += exp(l[j] - mx);
        double ref = tgt[i] < 0 ? 0.0 : l[tgt[i]] - mx - log(s);
        double d = fabs(lp[i] - ref);
        worst = d > worst ? d : worst;
    }
    T_CHECK(worst <= 1e-5, "logprobs vs log-softmax of the logits: %.2e", worst);
    T_CHECK(Mf.a.dres == NULL && Mf.a.dgu == NULL, "forward-only allocated backward buffers");
    printf("forward-only: logits and losses bitwise equal, logprobs within %.1e\n", worst);
    // KV cache: positions fed in pieces (5, 1, 1, 3, ...) give the full forward's logits
    {
        int cap = 30, pieces[] = {5, 1, 1, 3, 7, 1, 12}, np = 0;
        float *lc = xmalloc(sizeof(float) * 2 * cap * V),
              *lr = xmalloc(sizeof(float) * 2 * cap * V);
        model_cache_start(&Mf, 2, cap);
        int *tk = xmalloc(sizeof(int) * 2 * 12);
        double we = 0.0;
        for (int p = 0; p < 7; p++) {
            int n = pieces[p];
            for (int b = 0; b < 2; b++) memcpy(tk + b * n, tok + b * T + np, sizeof(int) * n);
            model_forward_next(&Mf, tk, 2, n);
            model_get_logits(&Mf, lc);
            for (int b = 0; b < 2; b++) {
                int *row = tok + b * T;
                model_forward(&Mt, row, NULL, 1, np + n);
                model_get_logits(&Mt, lr);
                double e = t_rel_err(lc + (size_t)b * n * V, lr + (size_t)np * V, (size_t)n * V);
                we = e > we ? e : we;
            }
            np += n;
        }
        T_CHECK(np == cap && Mf.kv_len == cap, "cache filled");
        T_CHECK(we <= 1e-5, "KV-cache logits vs the full forward: rel err %.2e", we);
        printf("KV cache: logits of 7 pieces within %.1e of the full forward\n", we);
        model_cache_free(&Mf);
        free(lc);
        free(lr);
        free(tk);
    }
    model_set_forward_only(&Mf, 0);
    T_CHECK(Mf.grads != NULL, "leaving forward-only gives the gradients back");
    free(p);
    free(tok);
    free(tgt);
    free(lt);
    free(lf);
    free(lp);
    model_free(&Mt);
    model_free(&Mf);
}

// ps_expf (the vectorizable exp of the element-wise kernels) against libm's
// expf: relative error over the range, 0 below -87.3 and for -inf, NaN for NaN,
// finite (clamped) above 88.3; and the same values from a loop the compiler
// vectorizes (the kernels' shape) as from single calls.
static void test_expf(void) {
    enum { N = 20001 };
    static float x[N], y[N];
    double worst = 0;
    for (int i = 0; i < N; i++) x[i] = -87.0f + 175.0f * (float)i / (N - 1);
    for (int i = 0; i < N; i++) y[i] = ps_expf(x[i]);
    for (int i = 0; i < N; i++) {
        double e = fabs((double)y[i] - exp((double)x[i])) / exp((double)x[i]);
        if (e > worst) worst = e;
        T_CHECK(y[i] == ps_expf(x[i]), "ps_expf(%g): loop %g, call %g", x[i], y[i], ps_expf(x[i]));
    }
    T_CHECK(worst < 4e-7, "ps_expf relative error %.2e", worst);
    T_CHECK(ps_expf(-INFINITY) == 0.0f && ps_expf(-100.0f) == 0.0f && ps_expf(0.0f) == 1.0f,
            "ps_expf(-inf) %g, (-100) %g, (0) %g", ps_expf(-INFINITY), ps_expf(-100.0f),
            ps_expf(0.0f));
    T_CHECK(isnan(ps_expf(NAN)) && isfinite(ps_expf(100.0f)) && ps_expf(100.0f) > 1e38f,
            "ps_expf(nan) %g, (100) %g", ps_expf(NAN), ps_expf(100.0f));
    printf("ps_expf on [-87, 88]: max rel err %.1e\n", worst);
}

int main(void) {
    rng_seed(&rng, 15);
    test_expf();
    // fixed shapes: tile edges (64), one row, GQA groups of 2, 3 and 4, MQA
    test_attention(1, 1, 1, 1, 8, 1.0f);
    test_attention(2, 64, 4, 2, 16, 1.0f);
    test_attention(2, 65, 6, 3, 32, 1.0f);
    test_attention(1, 200, 9, 3, 64, 1.0f);
    test_attention(3, 130, 4, 1, 24, 2.0f);  // peaked softmax
    // random shapes
    for (int i = 0; i < 6; i++) {
        int nkv = 1 + (int)(rng_uniform(&rng) * 3), group = 1 + (int)(rng_uniform(&rng) * 3);
        int B = 1 + (int)(rng_uniform(&rng) * 3), T = 1 + (int)(rng_uniform(&rng) * 300);
        int hd = 2 * (1 + (int)(rng_uniform(&rng) * 40));
        test_attention(B, T, nkv * group, nkv, hd, 1.0f);
    }
    test_matmul_res(1, 1, 1);
    test_matmul_res(1, 300, 517);  // one row: generate's decode step (sgemv)
    test_matmul_res(70, 48, 130);
    test_swiglu(1, 1);
    test_swiglu(37, 143);
    test_swiglu(300, 352);  // several row chunks
    test_rope_strided(2, 9, 6, 16, 32);
    test_rope_strided(1, 70, 3, 8, 8);
    test_classifier(37, 48, 97);
    test_classifier(300, 64, 1000);
    test_classifier(45, 16, 300000);  // 16-row chunks: 3 of them
    test_forward_only();
    return t_summary();
}
