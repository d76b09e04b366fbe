// Builds without CUDA (DSINFER_CUDA=OFF or no nvcc): the CUDA backend reports why.
#ifndef DSINFER_HAVE_CUDA
#include "backend_cuda/cuda_backend.h"

#include "common/error.h"

namespace dsi {

bool cuda_backend_available(int, std::string *why) {
    if (why) *why = "this build of dsinfer has no CUDA backend (built without nvcc or with DSINFER_CUDA=OFF)";
    return false;
}

std::unique_ptr<Backend> make_cuda_backend(int, GpuPrecision) {
    fail(DSI_ERR_UNSUPPORTED, "this build of dsinfer has no CUDA backend (built without nvcc or with DSINFER_CUDA=OFF)");
}

}  // namespace dsi
#endif
