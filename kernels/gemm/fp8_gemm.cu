#include "gemm/fp8_gemm.h"

#include "common/device.cuh"

namespace dsi::cuda {
namespace {

// One warp per (row, 128-column block).
__global__ void quantize_fp8_kernel(const float *x, int64_t rows, int64_t padded_rows, int64_t K, int64_t ldx,
                                    uint8_t *q, float *scale) {
    const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    const int64_t blocks = (K + 127) / 128;
    if (warp >= padded_rows * blocks) return;
    const int64_t r = warp / blocks, b = warp % blocks;
    if (r >= rows) {  // padding row: zero values, zero scale
        for (int64_t c = b * 128 + lane; c < K && c < b * 128 + 128; c += 32) q[r * K + c] = 0;
        if (lane == 0) scale[b * padded_rows + r] = 0.0f;
        return;
    }
    float v[4], amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int64_t c = b * 128 + lane + 32 * i;
        v[i] = c < K ? x[r * ldx + c] : 0.0f;
        amax = fmaxf(amax, fabsf(v[i]));
    }
    amax = fmaxf(warp_max(amax), 1e-4f);
    const float s = exp2f(ceilf(log2f(amax / 448.0f)));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int64_t c = b * 128 + lane + 32 * i;
        if (c < K) q[r * K + c] = float_to_fp8(v[i] / s);
    }
    if (lane == 0) scale[b * padded_rows + r] = s;
}

__global__ void widen_bf16_kernel(const __nv_bfloat16 *x, int64_t n, float *y) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __bfloat162float(x[i]);
}

}  // namespace

cudaError_t launch_quantize_fp8(const float *x, int64_t rows, int64_t padded_rows, int64_t K, int64_t ldx,
                                uint8_t *q, float *scale, cudaStream_t stream) {
    if (padded_rows < rows) return cudaErrorInvalidValue;
    const int64_t warps = padded_rows * ((K + 127) / 128);
    if (warps == 0) return cudaSuccess;
    quantize_fp8_kernel<<<ceil_div(warps * 32, 256), 256, 0, stream>>>(x, rows, padded_rows, K, ldx, q, scale);
    return cudaGetLastError();
}

Fp8Gemm::~Fp8Gemm() {
    for (auto &kv : plans_) {
        Plan &p = kv.second;
        if (p.op) cublasLtMatmulDescDestroy(p.op);
        if (p.a) cublasLtMatrixLayoutDestroy(p.a);
        if (p.b) cublasLtMatrixLayoutDestroy(p.b);
        if (p.d) cublasLtMatrixLayoutDestroy(p.d);
    }
    if (handle_) cublasLtDestroy(handle_);
}

cublasStatus_t Fp8Gemm::init(void *workspace, size_t workspace_bytes) {
    workspace_ = workspace;
    workspace_bytes_ = workspace_bytes;
    return cublasLtCreate(&handle_);
}

Fp8Gemm::Plan &Fp8Gemm::plan(int64_t out, int64_t K, int64_t tokens) {
    auto key = std::make_tuple(out, K, tokens);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    Plan &p = plans_[key];
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const cublasLtMatmulMatrixScale_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    const cublasLtMatmulMatrixScale_t b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    if (cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return p;
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode));
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode));
    // The heuristic wants the scale pointers set (NVIDIA's sample sets them first); the
    // real ones replace these placeholders at each run.
    const void *placeholder = workspace_;
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &placeholder, sizeof(placeholder));
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &placeholder, sizeof(placeholder));
    // Weights as A: column-major [K, out] = row-major [out, K]; activations as B:
    // column-major [K, tokens]; D column-major [out, tokens] = row-major [tokens, out].
    if (cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8F_E4M3, K, out, K) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8F_E4M3, K, tokens, K) != CUBLAS_STATUS_SUCCESS)
        return p;
    cublasLtMatmulPreference_t pref = nullptr;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return p;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                         sizeof(workspace_bytes_));
    for (const cudaDataType_t out_type : {CUDA_R_32F, CUDA_R_16BF}) {
        if (p.d) cublasLtMatrixLayoutDestroy(p.d);
        p.d = nullptr;
        if (cublasLtMatrixLayoutCreate(&p.d, out_type, out, tokens, out) != CUBLAS_STATUS_SUCCESS) break;
        cublasLtMatmulHeuristicResult_t result{};
        int found = 0;
        const cublasStatus_t st =
            cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
        if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
            p.algo = result.algo;
            p.ok = true;
            p.bf16_out = out_type == CUDA_R_16BF;
            break;
        }
    }
    cublasLtMatmulPreferenceDestroy(pref);
    return p;
}

cublasStatus_t Fp8Gemm::run(const uint8_t *w, const float *w_scale, int64_t out, int64_t K, const uint8_t *xq,
                            const float *x_scale, int64_t tokens, float *y, cudaStream_t stream) {
    if (!handle_) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!shape_ok(out, K) || tokens <= 0) return CUBLAS_STATUS_NOT_SUPPORTED;
    const int64_t padded = padded_tokens(tokens);
    Plan &p = plan(out, K, padded);
    if (!p.ok) return CUBLAS_STATUS_NOT_SUPPORTED;
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof(w_scale));
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof(x_scale));
    const float alpha = 1.0f, beta = 0.0f;
    // The product's rows [tokens, out] are the leading out * tokens values of D: with
    // padding (or bf16 D) compute into stream-ordered scratch, then keep that prefix.
    const bool direct = !p.bf16_out && padded == tokens;
    void *ws = nullptr, *tmp = nullptr;
    if (cudaMallocAsync(&ws, workspace_bytes_, stream) != cudaSuccess ||
        (!direct && cudaMallocAsync(&tmp, out * padded * (p.bf16_out ? sizeof(__nv_bfloat16) : sizeof(float)),
                                    stream) != cudaSuccess)) {
        cudaGetLastError();
        if (ws) cudaFreeAsync(ws, stream);
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    void *d = direct ? static_cast<void *>(y) : tmp;
    cublasStatus_t st = cublasLtMatmul(handle_, p.op, &alpha, w, p.a, xq, p.b, &beta, d, p.d, d, p.d, &p.algo, ws,
                                       workspace_bytes_, stream);
    const int64_t n = out * tokens;
    if (st == CUBLAS_STATUS_SUCCESS && !direct) {
        if (p.bf16_out)
            widen_bf16_kernel<<<ceil_div(n, 256), 256, 0, stream>>>(static_cast<const __nv_bfloat16 *>(tmp), n, y);
        else
            cudaMemcpyAsync(y, tmp, n * sizeof(float), cudaMemcpyDeviceToDevice, stream);
        if (cudaGetLastError() != cudaSuccess) st = CUBLAS_STATUS_EXECUTION_FAILED;
    }
    if (tmp) cudaFreeAsync(tmp, stream);
    cudaFreeAsync(ws, stream);
    return st;
}

}  // namespace dsi::cuda
