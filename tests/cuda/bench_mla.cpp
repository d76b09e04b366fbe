// Times the sparse MLA kernels (kernels/mla) at the released dims: 128 heads, 576-dim
// records (512 latent + 64 rope), top-k 2048, random selections over each sequence's
// pages (shuffled in the pool). Decode: one row per sequence at context `ctx`; prefill:
// every position of one sequence. Median of 20 timed runs after 3 warm-ups (CUDA events).
//   bench_mla            -> a table: case, cache dtype, kernel, median ms, records/s
#include "mla/mla.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

using namespace dsi::cuda;

namespace {

#define CUDA_CHECK(expr)                                                                              \
    do {                                                                                              \
        const cudaError_t e_ = (expr);                                                                \
        if (e_ != cudaSuccess) {                                                                      \
            std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
            std::exit(1);                                                                             \
        }                                                                                             \
    } while (0)

constexpr int64_t kHeads = 128, kRank = 512, kRope = 64, kTopk = 2048;

template <class T>
T *upload(const std::vector<T> &h) {
    T *p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(h.size(), 1) * sizeof(T)));
    CUDA_CHECK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return p;
}

// The kernel under test for one batch: decode (with its split) or prefill.
void launch(MlaParams p, bool decode, int sm_count, float *partial) {
    if (decode) {
        p.splits = mla_decode_splits(p, sm_count);
        p.partial = partial;
        CUDA_CHECK(launch_mla_decode(p, nullptr));
    } else {
        CUDA_CHECK(launch_mla_prefill(p, nullptr));
    }
}

void bench(const char *label, int64_t n_seqs, int64_t ctx, int64_t rows_per_seq, bool bf16, int sm_count) {
    std::mt19937 rng(11);
    const int64_t pages_per_seq = (ctx + kPageTokens - 1) / kPageTokens, n_pages = n_seqs * pages_per_seq;
    const int64_t W = kRank + kRope, slots = n_pages * kPageTokens;
    std::vector<int32_t> page_table(static_cast<size_t>(n_pages));
    std::iota(page_table.begin(), page_table.end(), 0);
    std::shuffle(page_table.begin(), page_table.end(), rng);
    std::vector<int32_t> row_seq, row_pos;
    for (int64_t s = 0; s < n_seqs; ++s)
        for (int64_t r = ctx - rows_per_seq; r < ctx; ++r) {
            row_seq.push_back(static_cast<int32_t>(s));
            row_pos.push_back(static_cast<int32_t>(r));
        }
    const int64_t T = static_cast<int64_t>(row_pos.size());
    std::vector<int32_t> sel(static_cast<size_t>(T * kTopk), -1);
    std::vector<int32_t> positions(static_cast<size_t>(ctx));
    for (int64_t t = 0; t < T; ++t) {
        const int64_t n = row_pos[t] + 1;
        std::iota(positions.begin(), positions.begin() + n, 0);
        std::shuffle(positions.begin(), positions.begin() + n, rng);
        const int64_t k = std::min(n, kTopk);
        std::sort(positions.begin(), positions.begin() + k);
        for (int64_t j = 0; j < k; ++j) {
            const int64_t pos = positions[j];
            sel[t * kTopk + j] = static_cast<int32_t>(
                page_table[row_seq[t] * pages_per_seq + pos / kPageTokens] * kPageTokens + pos % kPageTokens);
        }
    }
    std::uniform_real_distribution<float> U(-1.0f, 1.0f);
    std::vector<float> ql(static_cast<size_t>(T * kHeads * kRank)), qr(static_cast<size_t>(T * kHeads * kRope));
    for (auto &v : ql) v = U(rng);
    for (auto &v : qr) v = U(rng);
    std::vector<float> lat(static_cast<size_t>(slots * kRank)), kr(static_cast<size_t>(slots * kRope));
    for (auto &v : lat) v = U(rng);
    for (auto &v : kr) v = U(rng);
    std::vector<int32_t> all(static_cast<size_t>(slots));
    std::iota(all.begin(), all.end(), 0);

    float *dql = upload(ql), *dqr = upload(qr), *dlat = upload(lat), *dkr = upload(kr), *out = nullptr, *partial = nullptr;
    int32_t *dsel = upload(sel), *dpt = upload(page_table), *dseq = upload(row_seq), *dpos = upload(row_pos),
            *dall = upload(all);
    void *cache = nullptr;
    CUDA_CHECK(cudaMalloc(&cache, static_cast<size_t>(slots * W) * (bf16 ? 2 : 4)));
    CUDA_CHECK(cudaMalloc(&out, static_cast<size_t>(T * kHeads * kRank) * sizeof(float)));
    MlaStoreParams st;
    st.latent = dlat; st.latent_stride = kRank; st.k_rope = dkr; st.k_rope_stride = kRope; st.slots = dall;
    st.T = slots; st.rank = kRank; st.rope_dim = kRope; st.cache = cache; st.cache_bf16 = bf16;
    CUDA_CHECK(launch_mla_store(st, nullptr));

    MlaParams p;
    p.q_latent = dql; p.q_rope = dqr; p.cache = cache; p.cache_bf16 = bf16;
    p.pages = PageTable{dpt, pages_per_seq}; p.rows = RowInfo{dseq, dpos};
    p.select = dsel; p.select_stride = kTopk;
    p.T = T; p.heads = kHeads; p.rank = kRank; p.rope_dim = kRope; p.scale = 0.0625f; p.out = out;
    const bool decode = rows_per_seq <= 2;
    MlaParams sized = p;
    sized.splits = mla_decode_splits(p, sm_count);
    CUDA_CHECK(cudaMalloc(&partial, std::max<size_t>(mla_decode_partial_floats(sized), 1) * sizeof(float)));

    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    std::vector<float> ms;
    for (int i = 0; i < 23; ++i) {
        CUDA_CHECK(cudaEventRecord(a));
        launch(p, decode, sm_count, partial);
        CUDA_CHECK(cudaEventRecord(b));
        CUDA_CHECK(cudaEventSynchronize(b));
        float t = 0;
        CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
        if (i >= 3) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2];
    int64_t records = 0;
    for (int64_t t = 0; t < T; ++t) records += std::min<int64_t>(row_pos[t] + 1, kTopk);
    std::printf("| %-28s | %-4s | %-7s | %8.3f | %6.2f | %7.1f |\n", label, bf16 ? "bf16" : "f32",
                decode ? "decode" : "prefill", med, decode ? static_cast<double>(sized.splits) : 1.0,
                static_cast<double>(records) * kHeads * (W + kRank) * 2 / (med * 1e-3) / 1e12);
    CUDA_CHECK(cudaEventDestroy(a));
    CUDA_CHECK(cudaEventDestroy(b));
    for (void *ptr : {static_cast<void *>(dql), static_cast<void *>(dqr), static_cast<void *>(dlat),
                      static_cast<void *>(dkr), static_cast<void *>(out), static_cast<void *>(partial),
                      static_cast<void *>(dsel), static_cast<void *>(dpt), static_cast<void *>(dseq),
                      static_cast<void *>(dpos), static_cast<void *>(dall), cache})
        CUDA_CHECK(cudaFree(ptr));
}

}  // namespace

int main() {
    int sm_count = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, 0));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("sparse MLA at 128 heads x 576/512, top-k 2048, on %s (%d SMs)\n", prop.name, sm_count);
    std::printf("| case | cache | kernel | median ms | splits | TFLOP/s |\n|---|---|---|---|---|---|\n");
    for (bool bf16 : {false, true}) {
        bench("decode 1 seq at 4K", 1, 4096, 1, bf16, sm_count);
        bench("decode 16 seqs at 4K", 16, 4096, 1, bf16, sm_count);
        bench("decode 16 seqs x 2 rows (MTP)", 16, 4096, 2, bf16, sm_count);
        bench("prefill 4096 rows", 1, 4096, 4096, bf16, sm_count);
    }
    return 0;
}
