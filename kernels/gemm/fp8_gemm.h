// The `fast` precision's GEMM: DeepSeek's FP8 scaling on cuBLASLt.
//   activations: e4m3 with one fp32 scale per 1x128 block along K (VEC128_32F),
//                scales stored [ceil(K/128)][tokens], tokens fastest;
//   weights:     e4m3 as stored, 128x128 block scales (BLK128x128_32F), stored
//                [ceil(out/128)][roundup4(ceil(K/128))] (K-major, column stride a
//                multiple of 4, the layout measured correct on Hopper, FACTS.md);
//   output:      float32 [tokens, out]: cuBLASLt's own float32 output where it offers an
//                algorithm for it, else its bf16 output (the layout NVIDIA's sample and
//                our H100 measurement use) widened to float32 by a small kernel.
// cuBLASLt takes this only with TN layout and 16-byte aligned dims, and (measured on the
// H200) declines token counts that are not multiples of 4: activations are therefore
// quantised into padded_tokens() rows, the extra rows zero with zero scales, and only
// the real rows of the product are kept, so every token count (decode's 1 too) runs in
// FP8. We use it only where the op
// harness proved it right: K a multiple of 512 (whole 128-blocks, a scale column stride
// that needs no padding) and out a multiple of 128 (whole weight blocks). Every released
// DeepSeek-V3.2 projection but kv_a (576 outputs) qualifies; the rest, and declined
// shapes, fall back to launch_gemm.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

namespace dsi::cuda {

// Column stride of a weight's block-scale array in the cuBLASLt layout.
inline int64_t fp8_scale_stride(int64_t cols) { return ((cols + 127) / 128 + 3) / 4 * 4; }

// Quantises x [rows, K] (row stride ldx) to e4m3 per 1x128 block; each block's scale
// is amax/448 rounded up to a power of two (DeepSeek's ue8m0 scale format), so the
// dequantised value is exact in the scale. q: [padded_rows, K]; scale:
// [ceil(K/128), padded_rows]; rows [rows, padded_rows) are written as zeros, scale 0.
cudaError_t launch_quantize_fp8(const float *x, int64_t rows, int64_t padded_rows, int64_t K, int64_t ldx,
                                uint8_t *q, float *scale, cudaStream_t stream);

class Fp8Gemm {
public:
    Fp8Gemm() = default;
    Fp8Gemm(const Fp8Gemm &) = delete;
    Fp8Gemm &operator=(const Fp8Gemm &) = delete;
    ~Fp8Gemm();

    // Creates the handle; `workspace` only stands in for pointers while plans are made:
    // each run takes its own workspace of workspace_bytes from the stream-ordered pool,
    // so runs on different streams (threads) never share one.
    cublasStatus_t init(void *workspace, size_t workspace_bytes);
    static bool shape_ok(int64_t out, int64_t K) { return K > 0 && K % 512 == 0 && out > 0 && out % 128 == 0; }
    // The token count the quantised activations are padded to.
    static int64_t padded_tokens(int64_t tokens) { return (tokens + 3) / 4 * 4; }
    // y[tokens, out] = dequant(xq) . dequant(w)^T, xq and x_scale holding
    // padded_tokens(tokens) rows. CUBLAS_STATUS_NOT_SUPPORTED when no algorithm takes
    // the shape. Not thread-safe (one plan cache): callers serialise.
    cublasStatus_t run(const uint8_t *w, const float *w_scale, int64_t out, int64_t K, const uint8_t *xq,
                       const float *x_scale, int64_t tokens, float *y, cudaStream_t stream);

    // Whether cuBLASLt gives this shape float32 output (false: bf16, widened).
    bool float_output(int64_t out, int64_t K, int64_t tokens) { return !plan(out, K, padded_tokens(tokens)).bf16_out; }

private:
    struct Plan {
        cublasLtMatmulDesc_t op = nullptr;
        cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
        cublasLtMatmulAlgo_t algo{};
        bool ok = false;
        bool bf16_out = false;  // D in bf16, widened after the matmul
    };
    Plan &plan(int64_t out, int64_t K, int64_t tokens);

    cublasLtHandle_t handle_ = nullptr;
    void *workspace_ = nullptr;
    size_t workspace_bytes_ = 0;
    std::map<std::tuple<int64_t, int64_t, int64_t>, Plan> plans_;
};

}  // namespace dsi::cuda
