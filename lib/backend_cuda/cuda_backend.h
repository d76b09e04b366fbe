// The CUDA backend (Hopper): weights uploaded once in their stored dtype, caches in the
// session's page pool on the GPU, every op a kernel of kernels/ or a cuBLASLt call.
// Plain C++: included by the session whether or not CUDA was built in.
#pragma once

#include "backend/backend.h"

#include <memory>
#include <string>

namespace dsi {

// The two precisions of one code path (dsi_session_params.gpu_precision).
enum class GpuPrecision {
    F32,   // float32 activations, weights dequantised to float32 in the GEMM, float32
           // caches: proves the GPU path against the CPU engine.
    Fast,  // FP8 e4m3 GEMMs on cuBLASLt with DeepSeek's 1x128 x 128x128 block scaling
           // where the shape allows, bf16 latent cache, FP8 indexer keys (one fp32 scale
           // per token, Hadamard-rotated as in DeepSeek's reference when the index dim is a
           // power of two); activations between ops stay float32 (the Backend
           // interface's buffers).
};

// True when this build has the CUDA backend and `device` is a usable GPU; otherwise
// false with the reason in *why.
bool cuda_backend_available(int device, std::string *why);

// Throws DSI_ERR_UNSUPPORTED when not available (reason included).
std::unique_ptr<Backend> make_cuda_backend(int device, GpuPrecision precision);

}  // namespace dsi
