// cpu_kernels.h: internals of the CPU backend shared by its source files and
// the tests: the vectorized exp, the function-multiversioning macro, and the
// reference attention loops that the BLAS attention is checked against.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

// Hot loops are compiled twice, for x86-64-v3 (AVX2 + FMA) and for the build's
// baseline (-march=x86-64-v2); the loader picks one at start-up from the CPU
// (GCC function multiversioning through an ifunc). Elsewhere: one version.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(PS_NO_CLONES)
#define PS_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PS_CLONES
#endif

// c ? a : b through bit masks. Written as a ternary on floats, GCC 12 turns the
// clamps below into branches (it threads the jumps and then will not execute a
// multiply that "could trap" unconditionally), and the loops around them stay
// scalar: every caller compiled to vmovss/vdivss before this was used.
static inline float ps_select(int c, float a, float b) {
    int32_t m = -(int32_t)(c != 0), ab, bb;
    memcpy(&ab, &a, 4);
    memcpy(&bb, &b, 4);
    int32_t r = (ab & m) | (bb & ~m);
    float f;
    memcpy(&f, &r, 4);
    return f;
}

// exp(x) for x <= 88.3 in float, branch-free so that loops over it vectorize
// (libm's expf does not without -ffast-math). Range reduction x = n ln2 + r,
// |r| <= ln2/2, degree-6 polynomial: relative error below 2e-7 (about 2 ulp);
// underflows to 0 below -87.3 (where expf returns denormals); NaN gives NaN.
static inline float ps_expf(float x) {
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    float xc = ps_select(x < -87.3f, -87.3f, x);
    xc = ps_select(xc > 88.3f, 88.3f, xc);
    // round to nearest
    float n = (float)(int32_t)(xc * log2e + ps_select(xc >= 0.0f, 0.5f, -0.5f));
    float r = xc - n * ln2_hi - n * ln2_lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, 4);
    return ps_select(x < -87.3f, 0.0f, p * s);
}

// The reference attention: the scalar loops the backend ran before its BLAS
// version, kept for the tests. State: the softmax probabilities [B,nh,T,T];
// lse[B,nh,T] (the log-sum-exp of each row's scaled scores) when not NULL.
size_t cpu_attention_ref_state_bytes(int B, int T, int nh);
void cpu_attention_ref_fwd(float *out, float *probs, float *lse, const float *q, const float *k,
                           const float *v, int B, int T, int nh, int nkv, int hd);
void cpu_attention_ref_bwd(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                           const float *q, const float *k, const float *v, int B, int T, int nh,
                           int nkv, int hd);

// The backend's attention (cpu_attention.c): BLAS over query tiles, state lse[B,nh,T].
size_t cpu_attn_state_bytes(int B, int T, int nh);
// Strides as the op table's (backend.h): q/dq rows ldq apart, k/v/dk/dv rows ldkv apart.
void cpu_attention_fwd(void *out, void *state, const void *q, const void *k, const void *v, int ldq,
                       int ldkv, int B, int T, int nh, int nkv, int hd);
void cpu_attention_bwd(void *dq, void *dk, void *dv, const void *dout, const void *state,
                       const void *q, const void *k, const void *v, int ldq, int ldkv, int B, int T,
                       int nh, int nkv, int hd);
void cpu_attention_cached(void *out, const void *q, int ldq, const void *kc, const void *vc, int B,
                          int Tq, int pos0, int cap, int nh, int nkv, int hd);
