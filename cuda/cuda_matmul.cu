// cuda_matmul.cu: the matmul ops through cuBLASLt: bf16 operands, fp32
// accumulation (CUBLAS_COMPUTE_32F), bf16 or fp32 output.
//
// Our matrices are row-major; cuBLAS is column-major. A row-major [R,S] buffer
// read column-major is its transpose [S,R], so every product is written for the
// transposed result (see each wrapper). A plan (descriptors + the algorithm the
// heuristic picked) is cached per shape, leading dimensions and pointer
// alignment, so that the same call always runs the same algorithm: cuBLASLt is
// then bitwise reproducible on one GPU model. Shapes the heuristic rejects
// (e.g. odd leading dimensions) fall back to cublasGemmEx with the same types.
#include <stdint.h>
#include <string.h>

#include "cuda_common.cuh"

// cuBLASLt workspace: 32 MiB, NVIDIA's recommendation for Hopper.
#define WORKSPACE_BYTES ((size_t)32 << 20)
#define PLAN_CAP 128

typedef struct {
    int ta, tb;   // cublasOperation_t of A and B
    int m, n, k;  // column-major C[m,n] = op(A)[m,k] op(B)[k,n]
    int lda, ldb, ldc;
    int c_f32;                      // output type: 1 fp32, 0 bf16
    int align_a, align_b, align_c;  // pointer alignment in bytes (power of two, <= 256)
} GemmKey;

typedef struct {
    GemmKey key;
    int fallback;  // 1: cublasGemmEx (no cuBLASLt algorithm for this key)
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} GemmPlan;

static GemmPlan g_plans[PLAN_CAP];
static int g_nplans, g_victim;
static void *g_workspace;

static int ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 2 && a % (uintptr_t)al) al >>= 1;
    return al;
}

static void plan_destroy(GemmPlan *p) {
    if (!p->fallback) {
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->la));
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lb));
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lc));
        CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->desc));
    }
    memset(p, 0, sizeof *p);
}

static void plan_create(GemmPlan *p, const GemmKey *key) {
    memset(p, 0, sizeof *p);
    p->key = *key;
    cublasOperation_t ta = (cublasOperation_t)key->ta, tb = (cublasOperation_t)key->tb;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    // Layouts describe the matrices as stored (before op()).
    int a_rows = ta == CUBLAS_OP_N ? key->m : key->k, a_cols = ta == CUBLAS_OP_N ? key->k : key->m;
    int b_rows = tb == CUBLAS_OP_N ? key->k : key->n, b_cols = tb == CUBLAS_OP_N ? key->n : key->k;
    cudaDataType_t ctype = key->c_f32 ? CUDA_R_32F : CUDA_R_16BF;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, a_rows, a_cols, key->lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, b_rows, b_cols, key->ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lc, ctype, key->m, key->n, key->ldc));

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = WORKSPACE_BYTES;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    // The heuristic otherwise assumes 256-byte aligned pointers; tensors inside
    // the flat parameter buffer can sit at any even address.
    uint32_t al[3] = {(uint32_t)key->align_a, (uint32_t)key->align_b, (uint32_t)key->align_c};
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], sizeof al[0]));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], sizeof al[1]));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], sizeof al[2]));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2], sizeof al[2]));
    cublasLtMatmulHeuristicResult_t res;
    int got = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(cuda_lt_handle(), p->desc, p->la, p->lb,
                                                       p->lc, p->lc, pref, 1, &res, &got);
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (st == CUBLAS_STATUS_SUCCESS && got > 0 && res.workspaceSize <= WORKSPACE_BYTES) {
        p->algo = res.algo;
    } else {
        // No cuBLASLt kernel for this shape/alignment: cublasGemmEx handles any.
        plan_destroy(p);
        p->key = *key;
        p->fallback = 1;
    }
}

static GemmPlan *plan_get(const GemmKey *key) {
    for (int i = 0; i < g_nplans; i++)
        if (!memcmp(&g_plans[i].key, key, sizeof *key)) return &g_plans[i];
    GemmPlan *p;
    if (g_nplans < PLAN_CAP) {
        p = &g_plans[g_nplans++];
    } else {  // full (tests with many shapes): replace the oldest entries in turn
        p = &g_plans[g_victim];
        g_victim = (g_victim + 1) % PLAN_CAP;
        plan_destroy(p);
    }
    plan_create(p, key);
    return p;
}

// Column-major C[m,n] = op(A)[m,k] op(B)[k,n] + beta C, bf16 A and B, fp32 accumulation.
static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A,
                 int lda, const void *B, int ldb, void *C, int ldc, int c_f32, float beta) {
    CHECK(m > 0 && n > 0 && k > 0, "matmul with an empty dimension (m %d, n %d, k %d)", m, n, k);
    if (!g_workspace) g_workspace = cuda_malloc_tracked(WORKSPACE_BYTES);
    GemmKey key;
    memset(&key, 0, sizeof key);  // the key is compared with memcmp
    key.ta = ta;
    key.tb = tb;
    key.m = m;
    key.n = n;
    key.k = k;
    key.lda = lda;
    key.ldb = ldb;
    key.ldc = ldc;
    key.c_f32 = c_f32;
    key.align_a = ptr_align(A);
    key.align_b = ptr_align(B);
    key.align_c = ptr_align(C);
    GemmPlan *p = plan_get(&key);
    float alpha = 1.0f;
    if (!p->fallback) {
        CUBLAS_CHECK(cublasLtMatmul(cuda_lt_handle(), p->desc, &alpha, A, p->la, B, p->lb, &beta, C,
                                    p->lc, C, p->lc, &p->algo, g_workspace, WORKSPACE_BYTES, 0));
    } else {
        CUBLAS_CHECK(cublasGemmEx(cuda_blas_handle(), ta, tb, m, n, k, &alpha, A, CUDA_R_16BF, lda,
                                  B, CUDA_R_16BF, ldb, &beta, C, c_f32 ? CUDA_R_32F : CUDA_R_16BF,
                                  ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (cuda_sync_each_launch) CUDA_CHECK(cudaDeviceSynchronize());
}

// out[N,OC] = inp[N,IC] @ W[OC,IC]^T (+ res: copied into out, then beta 1).
// Column-major: out^T[OC,N] = W[OC,IC] inp^T[IC,N]; W's buffer read column-major
// is W^T [IC,OC] (ld IC), so A = W with op T; inp's buffer is inp^T [IC,N] (ld IC).
void cuda_matmul_fwd(void *out, const void *inp, const void *W, int N, int IC, int OC,
                     const void *res) {
    if (res && res != out)
        CUDA_CHECK(cudaMemcpy(out, res, (size_t)N * OC * sizeof(bf16), cudaMemcpyDeviceToDevice));
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, W, IC, inp, IC, out, OC, 0, res ? 1.0f : 0.0f);
}

// dinp[N,IC] (= or +=) dout[N,OC] @ W[OC,IC]: column-major dinp^T[IC,N] =
// W^T[IC,OC] dout^T[OC,N], both buffers already in that form (no transposes).
// dW[OC,IC] (fp32) += dout^T @ inp: column-major dW^T[IC,OC] = inp^T[IC,N] dout[N,OC],
// where dout's buffer is dout^T [OC,N] (ld OC), so op T on it. Parameter
// gradients are fp32 (backend.h): cuBLASLt reads the fp32 C and writes the fp32 D
// (beta 1), so every accumulation into them is in fp32.
void cuda_matmul_bwd(void *dinp, void *dW, const void *dout, const void *inp, const void *W, int N,
                     int IC, int OC, int accumulate) {
    if (dinp)
        gemm(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, W, IC, dout, OC, dinp, IC, 0,
             accumulate ? 1.0f : 0.0f);
    if (dW) cuda_matmul_dw_f32((float *)dW, dout, inp, N, IC, OC, 1.0f);
}

void cuda_matmul_dw_f32(float *dW, const void *dout, const void *inp, int N, int IC, int OC,
                        float beta) {
    gemm(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, inp, IC, dout, OC, dW, IC, 1, beta);
}
