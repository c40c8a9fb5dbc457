// align.c: function-preserving unit transforms, the circuit similarity and the
// alignment of a plan's targets to their sources (see align.h).
#include "align.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "calib.h"
#include "common.h"

// ---------------------------------------------------------------------------
// small dense helpers (fp64, row-major)

// Inverse of A [n, n] by Gauss-Jordan with partial pivoting into out; 0, or -1
// when A is singular.
static int mat_inverse(const double *A, int n, double *out) {
    double *a = xmalloc(sizeof(double) * (size_t)n * n);
    memcpy(a, A, sizeof(double) * (size_t)n * n);
    for (int i = 0; i < n * n; i++) out[i] = i / n == i % n;
    int rc = 0;
    for (int c = 0; c < n && !rc; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(a[r * n + c]) > fabs(a[p * n + c])) p = r;
        if (!(fabs(a[p * n + c]) > 1e-300)) {
            rc = -1;
            break;
        }
        for (int k = 0; k < n; k++) {
            double t = a[c * n + k];
            a[c * n + k] = a[p * n + k], a[p * n + k] = t;
            t = out[c * n + k];
            out[c * n + k] = out[p * n + k], out[p * n + k] = t;
        }
        double d = a[c * n + c];
        for (int k = 0; k < n; k++) a[c * n + k] /= d, out[c * n + k] /= d;
        for (int r = 0; r < n; r++) {
            if (r == c) continue;
            double f = a[r * n + c];
            if (f == 0) continue;
            for (int k = 0; k < n; k++)
                a[r * n + k] -= f * a[c * n + k], out[r * n + k] -= f * out[c * n + k];
        }
    }
    free(a);
    return rc;
}

// The orthogonal polar factor of B [n, n] (the orthogonal Q maximizing <Q, B>)
// by Newton's iteration X <- (X + X^-T) / 2; identity when B is singular.
static void polar_factor(const double *B, int n, double *Q) {
    size_t nn = (size_t)n * n;
    double *X = xmalloc(sizeof(double) * nn), *Y = xmalloc(sizeof(double) * nn);
    double nrm = 0;
    for (size_t i = 0; i < nn; i++) nrm += B[i] * B[i];
    nrm = sqrt(nrm);
    int ok = nrm > 0;
    for (size_t i = 0; i < nn; i++) X[i] = ok ? B[i] / nrm : 0;
    for (int it = 0; ok && it < 100; it++) {
        if (mat_inverse(X, n, Y) != 0) {
            ok = 0;
            break;
        }
        double diff = 0;
        for (int r = 0; r < n; r++)
            for (int c = 0; c < n; c++) {
                double v = 0.5 * (X[r * n + c] + Y[c * n + r]);
                diff += (v - X[r * n + c]) * (v - X[r * n + c]);
                Q[r * n + c] = v;
            }
        memcpy(X, Q, sizeof(double) * nn);
        if (diff < 1e-28 * n) break;
    }
    if (!ok)
        for (size_t i = 0; i < nn; i++) Q[i] = i / (size_t)n == i % (size_t)n;
    else
        memcpy(Q, X, sizeof(double) * nn);
    free(X);
    free(Y);
}

// Next permutation of p[n] in lexicographic order; 0 after the last.
static int next_perm(int *p, int n) {
    int i = n - 2;
    while (i >= 0 && p[i] >= p[i + 1]) i--;
    if (i < 0) return 0;
    int j = n - 1;
    while (p[j] <= p[i]) j--;
    int t = p[i];
    p[i] = p[j], p[j] = t;
    for (int a = i + 1, b = n - 1; a < b; a++, b--) t = p[a], p[a] = p[b], p[b] = t;
    return 1;
}

// The pairing perm[G] (target head perm[g] goes with source head g) that
// maximizes sum_g S[perm[g] * G + g]: every permutation when G <= 5, else
// greedy. Returns the maximum.
static double best_pairing(const double *S, int G, int *perm) {
    int p[64];
    for (int g = 0; g < G; g++) p[g] = perm[g] = g;
    double best = -INFINITY;
    if (G <= 5) {
        do {
            double s = 0;
            for (int g = 0; g < G; g++) s += S[p[g] * G + g];
            if (s > best) best = s, memcpy(perm, p, sizeof(int) * (size_t)G);
        } while (next_perm(p, G));
        return best;
    }
    char used[64] = {0};
    best = 0;
    for (int g = 0; g < G; g++) {
        int b = -1;
        for (int h = 0; h < G; h++)
            if (!used[h] && (b < 0 || S[h * G + g] > S[b * G + g])) b = h;
        used[b] = 1, perm[g] = b, best += S[b * G + g];
    }
    return best;
}

// ---------------------------------------------------------------------------
// transforms

static float *wrow(HostWeights *w, int layer, ParamKind k, size_t row) {
    return w->params + param_layer(&w->t, layer, k)->offset + row * (size_t)w->t.cfg.dim;
}

void align_apply(HostWeights *w, int layer, int unit, const UnitTransform *x) {
    const LlamaConfig *c = &w->t.cfg;
    int C = c->dim, hd = cfg_head_dim(c), G = c->n_heads / c->n_kv_heads, qd = c->n_heads * hd;
    CHECK(G <= 64, "more than 64 query heads per KV group");
    float *wo = w->params + param_layer(&w->t, layer, P_WO)->offset;
    size_t q0 = (size_t)unit * G * hd, o0 = q0;
    if (x->perm) {
        float *tmp = xmalloc(sizeof(float) * (size_t)G * hd * C);
        memcpy(tmp, wrow(w, layer, P_WQ, q0), sizeof(float) * (size_t)G * hd * C);
        for (int g = 0; g < G; g++)
            memcpy(wrow(w, layer, P_WQ, q0 + (size_t)g * hd), tmp + (size_t)x->perm[g] * hd * C,
                   sizeof(float) * (size_t)hd * C);
        float *row = xmalloc(sizeof(float) * (size_t)G * hd);
        for (int r = 0; r < C; r++) {
            float *o = wo + (size_t)r * qd + o0;
            memcpy(row, o, sizeof(float) * (size_t)G * hd);
            for (int g = 0; g < G; g++)
                memcpy(o + (size_t)g * hd, row + (size_t)x->perm[g] * hd,
                       sizeof(float) * (size_t)hd);
        }
        free(row);
        free(tmp);
    }
    if (x->theta) {
        int h2 = hd / 2;
        for (int f = 0; f < h2; f++) {
            double cs = cos(x->theta[f]), sn = sin(x->theta[f]);
            for (int g = 0; g <= G; g++) {  // G query heads, then the K head
                float *a = g < G ? wrow(w, layer, P_WQ, q0 + (size_t)g * hd + f)
                                 : wrow(w, layer, P_WK, (size_t)unit * hd + f);
                float *b = a + (size_t)h2 * C;
                for (int i = 0; i < C; i++) {
                    double u = a[i], v = b[i];
                    a[i] = (float)(cs * u - sn * v);
                    b[i] = (float)(sn * u + cs * v);
                }
            }
        }
    }
    if (x->M) {
        CHECK(x->Minv, "a value map needs its inverse");
        float *v = wrow(w, layer, P_WV, (size_t)unit * hd);
        double *nv = xcalloc((size_t)hd * C, sizeof(double));
        for (int r = 0; r < hd; r++)
            for (int k = 0; k < hd; k++) {
                double m = x->M[r * hd + k];
                for (int i = 0; i < C; i++) nv[(size_t)r * C + i] += m * v[(size_t)k * C + i];
            }
        for (size_t i = 0; i < (size_t)hd * C; i++) v[i] = (float)nv[i];
        free(nv);
        double *o = xmalloc(sizeof(double) * (size_t)hd);
        for (int r = 0; r < C; r++)
            for (int g = 0; g < G; g++) {
                float *oc = wo + (size_t)r * qd + o0 + (size_t)g * hd;
                for (int j = 0; j < hd; j++) {
                    double s = 0;
                    for (int k = 0; k < hd; k++) s += oc[k] * x->Minv[k * hd + j];
                    o[j] = s;
                }
                for (int j = 0; j < hd; j++) oc[j] = (float)o[j];
            }
        free(o);
    }
}

// ---------------------------------------------------------------------------
// circuit similarity

// Rows of plane f of every head of a [heads*hd, C] tensor gathered as
// [heads*2, C]: head h's rows f and f + hd/2 become rows 2h and 2h + 1.
static void gather_planes(const float *w, int heads, int hd, int C, float *out) {
    int h2 = hd / 2;
    for (int f = 0; f < h2; f++)
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < 2; j++)
                memcpy(out + (((size_t)f * heads + h) * 2 + j) * C,
                       w + ((size_t)h * hd + f + (size_t)j * h2) * C, sizeof(float) * (size_t)C);
}

// z = (P00 + P11) + i (P01 - P10) of the 2 x 2 block at (2a, 2b) of a Gram
// matrix with leading dimension ld.
static void zof(const float *P, int ld, int a, int b, double *re, double *im) {
    const float *p = P + (size_t)2 * a * ld + 2 * b;
    *re = (double)p[0] + p[ld + 1];
    *im = (double)p[1] - p[ld];
}

void align_match_circuit(const LlamaConfig *cfg, const ShareLayerView *views, ShareSim *out) {
    int L = cfg->n_layers, U = cfg->n_kv_heads, N = L * U, nh = cfg->n_heads, G = nh / U;
    int C = cfg->dim, hd = cfg_head_dim(cfg), h2 = hd / 2, qd = nh * hd, kvd = U * hd;
    CHECK(G <= 64, "more than 64 query heads per KV group");
    share_views_need_all(views, L, "match 'circuit'");
    share_sim_alloc(cfg, out);
    // plane-gathered Wq and Wk of every layer
    float *qp = xmalloc(sizeof(float) * (size_t)L * qd * C),
          *kp = xmalloc(sizeof(float) * (size_t)L * kvd * C);
    for (int l = 0; l < L; l++) {
        gather_planes(views[l].wq, nh, hd, C, qp + (size_t)l * qd * C);
        gather_planes(views[l].wk, U, hd, C, kp + (size_t)l * kvd * C);
    }
    // Norms: |QK circuit|^2 of unit i = sum_g sum_f |Q_gf|^2 |K_f|^2; |OV|^2 = sum_g <Wo_g^T Wo_g,
    // V V^T>.
    double *nqk = xcalloc((size_t)N, sizeof(double)), *nov = xcalloc((size_t)N, sizeof(double));
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < N; i++) {
        int l = i / U, u = i % U;
        const float *Q = qp + (size_t)l * qd * C, *K = kp + (size_t)l * kvd * C;
        for (int f = 0; f < h2; f++) {
            const float *kr = K + ((size_t)f * U + u) * 2 * C;
            double kk = cblas_dsdot(2 * C, kr, 1, kr, 1);
            for (int g = 0; g < G; g++) {
                const float *qr = Q + ((size_t)f * nh + u * G + g) * 2 * C;
                nqk[i] += kk * cblas_dsdot(2 * C, qr, 1, qr, 1);
            }
        }
        float *wg = xmalloc(sizeof(float) * (size_t)hd * hd),
              *vv = xmalloc(sizeof(float) * (size_t)hd * hd);
        const float *V = views[l].wv + (size_t)u * hd * C;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hd, hd, C, 1.0f, V, C, V, C, 0.0f, vv,
                    hd);
        for (int g = 0; g < G; g++) {
            const float *o = views[l].wo + (size_t)(u * G + g) * hd;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hd, hd, C, 1.0f, o, qd, o, qd,
                        0.0f, wg, hd);
            for (int k = 0; k < hd * hd; k++) nov[i] += (double)wg[k] * vv[k];
        }
        free(wg);
        free(vv);
    }

    int npairs = L * (L - 1) / 2;
#pragma omp parallel
    {
        float *A = xmalloc(sizeof(float) * (size_t)4 * nh * nh);  // one plane's Q Gram
        float *B = xmalloc(sizeof(float) * (size_t)4 * U * U);    // one plane's K Gram
        double *zq = xmalloc(sizeof(double) * 2 * (size_t)h2 * nh * nh);
        double *zk = xmalloc(sizeof(double) * 2 * (size_t)h2 * U * U);
        float *og = xmalloc(sizeof(float) * (size_t)qd * qd),
              *vg = xmalloc(sizeof(float) * (size_t)kvd * kvd);
        double *S = xmalloc(sizeof(double) * (size_t)G * G);
        int perm[64];
#pragma omp for schedule(dynamic, 1)
        for (int k = 0; k < npairs; k++) {
            int l = 1, m = k;
            while (m >= l) m -= l, l++;  // pair k = (l, m), m < l
            const float *Ql = qp + (size_t)l * qd * C, *Qm = qp + (size_t)m * qd * C;
            const float *Kl = kp + (size_t)l * kvd * C, *Km = kp + (size_t)m * kvd * C;
            for (int f = 0; f < h2; f++) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 2 * nh, 2 * nh, C, 1.0f,
                            Ql + (size_t)f * 2 * nh * C, C, Qm + (size_t)f * 2 * nh * C, C, 0.0f, A,
                            2 * nh);
                // B = K_m K_l^T: rows of the source, columns of the target
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 2 * U, 2 * U, C, 1.0f,
                            Km + (size_t)f * 2 * U * C, C, Kl + (size_t)f * 2 * U * C, C, 0.0f, B,
                            2 * U);
                for (int a = 0; a < nh; a++)
                    for (int b = 0; b < nh; b++) {
                        double *z = zq + 2 * (((size_t)f * nh + a) * nh + b);
                        zof(A, 2 * nh, a, b, &z[0], &z[1]);
                    }
                for (int a = 0; a < U; a++)
                    for (int b = 0; b < U; b++) {
                        double *z = zk + 2 * (((size_t)f * U + a) * U + b);
                        zof(B, 2 * U, a, b, &z[0], &z[1]);  // a: source unit, b: target unit
                    }
            }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, qd, qd, C, 1.0f, views[l].wo, qd,
                        views[m].wo, qd, 0.0f, og, qd);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kvd, kvd, C, 1.0f, views[l].wv, C,
                        views[m].wv, C, 0.0f, vg, kvd);
            for (int ut = 0; ut < U; ut++)
                for (int us = 0; us < U; us++) {
                    int t = l * U + ut, s = m * U + us;
                    double dq = sqrt(nqk[t] * nqk[s]), dov = sqrt(nov[t] * nov[s]);
                    for (int gt = 0; gt < G; gt++)
                        for (int gs = 0; gs < G; gs++) {
                            int ht = ut * G + gt, hs = us * G + gs;
                            double qk = 0, ov = 0;
                            for (int f = 0; f < h2; f++) {
                                const double *a = zq + 2 * (((size_t)f * nh + ht) * nh + hs);
                                const double *b = zk + 2 * (((size_t)f * U + us) * U + ut);
                                qk += a[0] * b[0] - a[1] * b[1];
                            }
                            // <Wo_t^T Wo_s, V_t V_s^T>
                            for (int i = 0; i < hd; i++)
                                for (int j = 0; j < hd; j++)
                                    ov += (double)og[(size_t)(ht * hd + i) * qd + hs * hd + j] *
                                          vg[(size_t)(ut * hd + i) * kvd + us * hd + j];
                            S[gt * G + gs] = (dq > 0 ? qk / dq : 0) + (dov > 0 ? ov / dov : 0);
                        }
                    double v = 0.5 * best_pairing(S, G, perm);
                    out->sim[(size_t)t * N + s] = (float)(v > 1 ? 1 : v < -1 ? -1 : v);
                }
        }
        free(A);
        free(B);
        free(zq);
        free(zk);
        free(og);
        free(vg);
        free(S);
    }
    free(qp);
    free(kp);
    free(nqk);
    free(nov);
    share_sim_best(out);
}

// ---------------------------------------------------------------------------
// alignment

double align_pair_distance(const HostWeights *w, int tl, int tu, int sl, int su) {
    const LlamaConfig *c = &w->t.cfg;
    int C = c->dim, hd = cfg_head_dim(c), G = c->n_heads / c->n_kv_heads, qd = c->n_heads * hd;
    double d = 0, n = 0;
    const ParamKind rk[3] = {P_WQ, P_WK, P_WV};
    for (int k = 0; k < 3; k++) {
        size_t r = (size_t)(k == 0 ? G : 1) * hd * C;
        const float *a = w->params + param_layer(&w->t, tl, rk[k])->offset + (size_t)tu * r;
        const float *b = w->params + param_layer(&w->t, sl, rk[k])->offset + (size_t)su * r;
        for (size_t i = 0; i < r; i++)
            d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), n += (double)b[i] * b[i];
    }
    const float *a = w->params + param_layer(&w->t, tl, P_WO)->offset + (size_t)tu * G * hd;
    const float *b = w->params + param_layer(&w->t, sl, P_WO)->offset + (size_t)su * G * hd;
    for (int r = 0; r < C; r++)
        for (int j = 0; j < G * hd; j++) {
            double x = a[(size_t)r * qd + j], y = b[(size_t)r * qd + j];
            d += (x - y) * (x - y), n += y * y;
        }
    return n > 0 ? sqrt(d / n) : 0;
}

// The value-map problem of one pair: J(M) = |M V_t - V_s|^2 + sum_g |O_tg M^-1 - O_sg|^2
// (V a unit's [hd, C] Wv rows, O_g its query head g's [C, hd] Wo columns), from the
// hd x hd blocks P = V_t V_t^T, Q = V_s V_t^T, R = sum_g O_tg^T O_tg, S = sum_g O_tg^T O_sg:
//   J(M) = <M P, M> - 2 <M, Q> + <N, R N> - 2 <N, S> + c,   N = M^-1.
typedef struct {
    int n;
    const double *P, *Q, *R, *S;
    double c;
} VoProblem;

// C = op(A) op(B) for n x n row-major A, B.
static void mm(const double *A, int ta, const double *B, int tb, int n, double *C) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, n, n,
                n, 1.0, A, n, B, n, 0.0, C, n);
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// J(M); grad (if not NULL) = dJ/dM = 2 (M P - Q) - N^T 2 (R N - S) N^T. INFINITY when M is
// singular. t1, t2, N: n x n scratch.
static double vo_cost(const VoProblem *p, const double *M, double *grad, double *N, double *t1,
                      double *t2) {
    int n = p->n;
    size_t nn = (size_t)n * n;
    if (mat_inverse(M, n, N) != 0) return INFINITY;
    mm(M, 0, p->P, 0, n, t1);  // M P
    mm(p->R, 0, N, 0, n, t2);  // R N
    double J = dot(t1, M, nn) - 2 * dot(M, p->Q, nn) + dot(N, t2, nn) - 2 * dot(N, p->S, nn) + p->c;
    if (grad) {
        for (size_t i = 0; i < nn; i++) t2[i] = 2 * (t2[i] - p->S[i]);
        mm(N, 1, t2, 0, n, grad);  // N^T (2 (R N - S))
        mm(grad, 0, N, 1, n, t2);  // ... N^T
        for (size_t i = 0; i < nn; i++) grad[i] = 2 * (t1[i] - p->Q[i]) - t2[i];
    }
    return J;
}

// The least-squares value map: the invertible M of least J(M). Starts from the best of
// three closed forms (M0, an orthogonal guess; the V-only solution Q P^-1; the inverse
// of the Wo-only solution R^-1 S), then gradient descent with backtracking (J never
// increases). Writes M and returns J(M).
static double vo_solve(const VoProblem *p, const double *M0, double *M) {
    int n = p->n;
    size_t nn = (size_t)n * n, sz = sizeof(double) * nn;
    double *cand = xmalloc(sz), *g = xmalloc(sz), *N = xmalloc(sz), *t1 = xmalloc(sz),
           *t2 = xmalloc(sz), *X = xmalloc(sz);
    memcpy(M, M0, sz);
    double J = vo_cost(p, M, NULL, N, t1, t2);
    for (int k = 0; k < 2; k++) {
        // k = 0: Q P^-1 (P with a tiny ridge); k = 1: (R^-1 S)^-1.
        const double *A = k == 0 ? p->P : p->R;
        double tr = 0;
        for (int i = 0; i < n; i++) tr += A[i * n + i];
        memcpy(X, A, sz);
        for (int i = 0; i < n; i++) X[i * n + i] += 1e-12 * tr / n + 1e-300;
        if (mat_inverse(X, n, t1) != 0) continue;
        if (k == 0)
            mm(p->Q, 0, t1, 0, n, cand);
        else {
            mm(t1, 0, p->S, 0, n, t2);
            if (mat_inverse(t2, n, cand) != 0) continue;
        }
        double Jc = vo_cost(p, cand, NULL, N, t1, t2);
        if (Jc < J) J = Jc, memcpy(M, cand, sz);
    }
    double Jg = vo_cost(p, M, g, N, t1, t2), gn = sqrt(dot(g, g, nn));
    double eta = gn > 0 ? 1e-3 * sqrt(dot(M, M, nn)) / gn : 0;
    for (int it = 0; it < 2000 && gn > 0 && eta > 0; it++) {
        double Jn = INFINITY;
        int tries = 0;
        for (; tries < 60; tries++, eta *= 0.5) {
            for (size_t i = 0; i < nn; i++) cand[i] = M[i] - eta * g[i];
            Jn = vo_cost(p, cand, NULL, N, t1, t2);
            if (Jn <= Jg - 1e-4 * eta * gn * gn) break;
        }
        if (tries == 60) break;
        memcpy(M, cand, sz);
        double drop = Jg - Jn;
        Jg = vo_cost(p, M, g, N, t1, t2);
        gn = sqrt(dot(g, g, nn));
        eta *= 2;
        if (drop <= 1e-13 * (fabs(Jg) + p->c)) break;
    }
    free(cand);
    free(g);
    free(N);
    free(t1);
    free(t2);
    free(X);
    return Jg;
}

// Transform unit (tl, tu) toward (sl, su); the permutation applied goes to perm_out[G],
// the value map to M_out[hd*hd].
static void align_unit(HostWeights *w, int tl, int tu, int sl, int su, int *perm_out,
                       double *M_out) {
    const LlamaConfig *c = &w->t.cfg;
    int C = c->dim, hd = cfg_head_dim(c), h2 = hd / 2, G = c->n_heads / c->n_kv_heads;
    int qd = c->n_heads * hd;
    // z[f][gt][gs] of the query heads' plane rows, zk[f] of the K rows: P = X_t X_s^T.
    double *zq = xcalloc((size_t)2 * h2 * G * G, sizeof(double)),
           *zk = xcalloc((size_t)2 * h2, sizeof(double));
    const float *Qt = wrow(w, tl, P_WQ, (size_t)tu * G * hd),
                *Qs = wrow(w, sl, P_WQ, (size_t)su * G * hd);
    const float *Kt = wrow(w, tl, P_WK, (size_t)tu * hd), *Ks = wrow(w, sl, P_WK, (size_t)su * hd);
    for (int f = 0; f < h2; f++) {
        for (int gt = 0; gt <= G; gt++)
            for (int gs = 0; gs <= G; gs++) {
                if ((gt == G) != (gs == G)) continue;
                const float *a0 = gt < G ? Qt + ((size_t)gt * hd + f) * C : Kt + (size_t)f * C;
                const float *b0 = gs < G ? Qs + ((size_t)gs * hd + f) * C : Ks + (size_t)f * C;
                const float *a1 = a0 + (size_t)h2 * C, *b1 = b0 + (size_t)h2 * C;
                double p00 = cblas_dsdot(C, a0, 1, b0, 1), p11 = cblas_dsdot(C, a1, 1, b1, 1);
                double p01 = cblas_dsdot(C, a0, 1, b1, 1), p10 = cblas_dsdot(C, a1, 1, b0, 1);
                double *z = gt < G ? zq + 2 * (((size_t)f * G + gt) * G + gs) : zk + 2 * f;
                z[0] = p00 + p11, z[1] = p01 - p10;
            }
    }
    // The best permutation: maximize sum_f |sum_g z[f][perm g][g] + zk[f]|.
    int perm[64], p[64];
    for (int g = 0; g < G; g++) perm[g] = p[g] = g;
    double best = -1;
    long tries = 0;
    do {
        double s = 0;
        for (int f = 0; f < h2; f++) {
            double re = zk[2 * f], im = zk[2 * f + 1];
            for (int g = 0; g < G; g++) {
                const double *z = zq + 2 * (((size_t)f * G + p[g]) * G + g);
                re += z[0], im += z[1];
            }
            s += sqrt(re * re + im * im);
        }
        if (s > best) best = s, memcpy(perm, p, sizeof(int) * (size_t)G);
    } while (G <= 5 && next_perm(p, G) && ++tries < 1000);
    double *theta = xmalloc(sizeof(double) * (size_t)h2);
    for (int f = 0; f < h2; f++) {
        double re = zk[2 * f], im = zk[2 * f + 1];
        for (int g = 0; g < G; g++) {
            const double *z = zq + 2 * (((size_t)f * G + perm[g]) * G + g);
            re += z[0], im += z[1];
        }
        theta[f] = atan2(im, re);
    }
    UnitTransform x = {.perm = perm, .theta = theta};
    align_apply(w, tl, tu, &x);

    // Value map: the least-squares M of vo_solve, started from the orthogonal M0
    // maximizing <M V_t, V_s> + sum_g <Wo_tg M^T, Wo_sg> (the polar factor of
    // B = V_s V_t^T + sum_g Wo_sg^T Wo_tg).
    size_t nn = (size_t)hd * hd;
    double *B = xcalloc(nn, sizeof(double)), *M0 = xmalloc(sizeof(double) * nn);
    double *P = xcalloc(nn, sizeof(double)), *R = xcalloc(nn, sizeof(double)),
           *S = xcalloc(nn, sizeof(double)), *Mi = xmalloc(sizeof(double) * nn);
    const float *Vt = wrow(w, tl, P_WV, (size_t)tu * hd), *Vs = wrow(w, sl, P_WV, (size_t)su * hd);
    double cst = 0;
    for (int i = 0; i < hd; i++) {
        cst += cblas_dsdot(C, Vs + (size_t)i * C, 1, Vs + (size_t)i * C, 1);
        for (int j = 0; j < hd; j++) {
            B[i * hd + j] = cblas_dsdot(C, Vs + (size_t)i * C, 1, Vt + (size_t)j * C, 1);
            P[i * hd + j] = cblas_dsdot(C, Vt + (size_t)i * C, 1, Vt + (size_t)j * C, 1);
        }
    }
    double *Q = xmalloc(sizeof(double) * nn);
    memcpy(Q, B, sizeof(double) * nn);
    const float *Ot = w->params + param_layer(&w->t, tl, P_WO)->offset + (size_t)tu * G * hd;
    const float *Os = w->params + param_layer(&w->t, sl, P_WO)->offset + (size_t)su * G * hd;
    for (int g = 0; g < G; g++)
        for (int i = 0; i < hd; i++) {
            cst += cblas_dsdot(C, Os + g * hd + i, qd, Os + g * hd + i, qd);
            for (int j = 0; j < hd; j++) {
                double sij = cblas_dsdot(C, Ot + g * hd + i, qd, Os + g * hd + j, qd);
                B[j * hd + i] += sij;
                S[i * hd + j] += sij;
                R[i * hd + j] += cblas_dsdot(C, Ot + g * hd + i, qd, Ot + g * hd + j, qd);
            }
        }
    polar_factor(B, hd, M0);
    VoProblem vp = {hd, P, Q, R, S, cst};
    vo_solve(&vp, M0, M_out);
    CHECK(mat_inverse(M_out, hd, Mi) == 0, "align: singular value map");
    UnitTransform y = {.M = M_out, .Minv = Mi};
    align_apply(w, tl, tu, &y);
    memcpy(perm_out, perm, sizeof(int) * (size_t)G);
    free(B);
    free(M0);
    free(P);
    free(Q);
    free(R);
    free(S);
    free(Mi);
    free(theta);
    free(zq);
    free(zk);
}

// H <- T H T^T for a unit's output Gram [W, W] (W = G*hd), T = blockdiag(M) Perm: the
// output of aligned query head g is M times the old output of head perm[g].
static void transform_gram(double *H, int G, int hd, const int *perm, const double *M) {
    int W = G * hd;
    double *X = xmalloc(sizeof(double) * (size_t)W * W),
           *Y = xmalloc(sizeof(double) * (size_t)W * W);
    for (int g = 0; g < G; g++)  // permute rows and columns
        for (int h = 0; h < G; h++)
            for (int i = 0; i < hd; i++)
                memcpy(X + ((size_t)g * hd + i) * W + (size_t)h * hd,
                       H + ((size_t)perm[g] * hd + i) * W + (size_t)perm[h] * hd,
                       sizeof(double) * (size_t)hd);
    for (int r = 0; r < W; r++)  // Y = X blockdiag(M)^T
        for (int h = 0; h < G; h++)
            for (int j = 0; j < hd; j++) {
                double t = 0;
                for (int k = 0; k < hd; k++) t += X[(size_t)r * W + h * hd + k] * M[j * hd + k];
                Y[(size_t)r * W + h * hd + j] = t;
            }
    for (int g = 0; g < G; g++)  // H = blockdiag(M) Y
        for (int i = 0; i < hd; i++)
            for (int c = 0; c < W; c++) {
                double t = 0;
                for (int k = 0; k < hd; k++) t += M[i * hd + k] * Y[((size_t)g * hd + k) * W + c];
                H[((size_t)g * hd + i) * W + c] = t;
            }
    free(X);
    free(Y);
}

void align_plan(HostWeights *w, const SharePlan *plan, CalibGrams *g, double *before,
                double *after) {
    CHECK(!w->t.shared, "alignment needs a full model");
    const LlamaConfig *c = &w->t.cfg;
    int hd = cfg_head_dim(c), U = c->n_kv_heads, G = c->n_heads / U;
    CHECK(!g || (g->L == c->n_layers && g->U == U && g->W == G * hd),
          "calibration Grams of another model shape");
    double b = 0, a = 0, *M = xmalloc(sizeof(double) * (size_t)hd * hd);
    int perm[64];
    for (int k = 0; k < plan->n; k++) {
        const ShareEntry *e = &plan->e[k];
        b += align_pair_distance(w, e->layer, e->unit, e->src_layer, e->src_unit);
        align_unit(w, e->layer, e->unit, e->src_layer, e->src_unit, perm, M);
        if (g)
            transform_gram(g->gout + ((size_t)e->layer * U + e->unit) * G * hd * G * hd, G, hd,
                           perm, M);
        a += align_pair_distance(w, e->layer, e->unit, e->src_layer, e->src_unit);
    }
    free(M);
    if (before) *before = plan->n ? b / plan->n : 0;
    if (after) *after = plan->n ? a / plan->n : 0;
}
