#include "mla/mla.h"

#include "common/device.cuh"

#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <algorithm>

namespace dsi::cuda {
namespace {

constexpr int kHeadsPerCta = 32, kKeys = 32, kThreads = 256, kMaxRank = 512, kMaxCluster = 8;
constexpr int kPrefetch = 5;     // tile vectors a thread holds in registers while the previous tile computes
constexpr int kMaxSplits = 64;   // decode splits per row
constexpr int kScoreStride = kKeys + 1;

template <class T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

// Launch geometry shared by host and device.
struct MlaShape {
    int cluster = 1;           // CTAs per row: ceil(heads / 32)
    int row_stride = 0;        // shared-memory floats per record row: >= rank + rope_dim rounded
                               // up to 4, and = 4 (mod 8) so the score loads hit distinct banks
    bool vec = false;          // records 16-byte aligned: 16-byte gathers (else one value a load)
    bool vec_q = false;        // query rows 16-byte aligned: 16-byte loads
    int64_t splits = 1;        // clusters per row (decode)
    int64_t keys_per_split = 0;
};

inline size_t smem_bytes(const MlaShape &k) {
    return sizeof(float) * (2 * static_cast<size_t>(kHeadsPerCta) * k.row_stride + kHeadsPerCta * kScoreStride +
                            kHeadsPerCta * kKeys + 3 * kHeadsPerCta) +
           sizeof(int) * kKeys;
}

// One row (or one split of a row's selection) for 32 heads; the cluster's CTAs share the
// gathered records. Thread roles: scores: warp = 4 heads, lane = 4 keys x a quarter of
// the 16-byte columns (reduced by shuffles); softmax: warp = 4 heads, lane = key;
// accumulation: 64 threads per 8 heads, each 2 x 4 latent columns.
template <class T, bool kSplit>
__global__ void __launch_bounds__(kThreads, 1) mla_kernel(MlaParams p, MlaShape k) {
    namespace cg = cooperative_groups;
    extern __shared__ float4 smem4[];
    cg::cluster_group cluster = cg::this_cluster();
    const int C = k.cluster, rank = static_cast<int>(cluster.block_rank());
    const int64_t rest = blockIdx.x / C, split = rest % k.splits, t = rest / k.splits;
    const int S = k.row_stride, R = static_cast<int>(p.rank), W = static_cast<int>(p.rank + p.rope_dim);
    float *Qs = reinterpret_cast<float *>(smem4);  // [32 heads][S]
    float *Ks = Qs + kHeadsPerCta * S;             // [32 keys][S]
    float *Ss = Ks + kKeys * S;                    // [32 heads][33] raw scores
    float *Ps = Ss + kHeadsPerCta * kScoreStride;  // [32 heads][32 keys] probabilities
    float *corr = Ps + kHeadsPerCta * kKeys, *lsum = corr + kHeadsPerCta, *msum = lsum + kHeadsPerCta;
    int *slots_s = reinterpret_cast<int *>(msum + kHeadsPerCta);
    const int tid = threadIdx.x;
    const int64_t h0 = static_cast<int64_t>(rank) * kHeadsPerCta;
    const int nh = static_cast<int>(p.heads - h0 < kHeadsPerCta ? p.heads - h0 : kHeadsPerCta);

    const int64_t pos = p.rows.pos ? p.rows.pos[t] : -1;
    const int32_t seq = p.rows.seq ? p.rows.seq[t] : 0;
    // At most pos + 1 valid entries, and they come first.
    const int64_t n_row = p.select ? (pos >= 0 && pos + 1 < p.select_stride ? pos + 1 : p.select_stride) : pos + 1;
    const int64_t begin = split * k.keys_per_split;
    const int64_t end = begin + k.keys_per_split < n_row ? begin + k.keys_per_split : n_row;
    const int64_t tiles = end > begin ? (end - begin + kKeys - 1) / kKeys : 0;
    const T *cache = static_cast<const T *>(p.cache);

    auto key_slot = [&](int64_t it, int j) -> int64_t {
        const int64_t g = begin + it * kKeys + j;
        if (g >= end) return -1;
        return p.select ? p.select[t * p.select_stride + g] : slot_of(p.pages, seq, g);
    };
    // The tile's 16-byte vectors (or values), this CTA's share [i0, i1).
    const int E = k.vec ? 16 / static_cast<int>(sizeof(T)) : 1;
    const int vpr = W / E, items = kKeys * vpr;
    const int i0 = rank * items / C, i1 = (rank + 1) * items / C;
    auto load_item = [&](int64_t it, int i) -> uint4 {
        uint4 raw = make_uint4(0, 0, 0, 0);
        if (i >= i1) return raw;
        const int j = i / vpr, v = i % vpr;
        const int64_t slot = key_slot(it, j);
        if (slot < 0) return raw;
        const T *rec = cache + slot * W;
        if (k.vec) return *reinterpret_cast<const uint4 *>(rec + v * E);
        raw.x = __float_as_uint(to_f32(rec[v]));
        return raw;
    };
    auto store_item = [&](int i, uint4 raw) {
        if (i >= i1) return;
        const int j = i / vpr, v = i % vpr;
        float f[8];
        int n = 1;
        if (!k.vec) {
            f[0] = __uint_as_float(raw.x);
        } else if (sizeof(T) == 4) {
            f[0] = __uint_as_float(raw.x); f[1] = __uint_as_float(raw.y);
            f[2] = __uint_as_float(raw.z); f[3] = __uint_as_float(raw.w);
            n = 4;
        } else {
            const __nv_bfloat162 *b = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float2 x = __bfloat1622float2(b[e]);
                f[2 * e] = x.x;
                f[2 * e + 1] = x.y;
            }
            n = 8;
        }
        for (int r = 0; r < C; ++r) {
            float *dst = cluster.map_shared_rank(Ks, r) + j * S + v * E;
            if (n == 1) {
                dst[0] = f[0];
            } else {
                reinterpret_cast<float4 *>(dst)[0] = make_float4(f[0], f[1], f[2], f[3]);
                if (n == 8) reinterpret_cast<float4 *>(dst)[1] = make_float4(f[4], f[5], f[6], f[7]);
            }
        }
    };

    const int warp = tid / 32, lane = tid % 32;
    const int kg = lane / 4, ds = lane % 4;      // scores: keys kg*4.., float4 columns ds, ds+4, ..
    const int hq = tid / 64, dg = tid % 64;      // accumulation: heads hq*8.., columns dg*4 and 256+dg*4
    const int nv = (W + 3) / 4;
    float m[4], l[4];
#pragma unroll
    for (int a = 0; a < 4; ++a) { m[a] = -INFINITY; l[a] = 0.0f; }
    float acc[8][8] = {};
    uint4 pre[kPrefetch];
#pragma unroll
    for (int q = 0; q < kPrefetch; ++q) pre[q] = tiles > 0 ? load_item(0, i0 + tid + q * kThreads) : make_uint4(0, 0, 0, 0);

    // The queries, while the first tile's loads are in flight: 16-byte loads where the
    // rows allow them (a float4 then never straddles latent and rope), several in flight.
    if (k.vec_q) {
        float4 *Q4w = reinterpret_cast<float4 *>(Qs);
        const float4 *ql = reinterpret_cast<const float4 *>(p.q_latent + (t * p.heads + h0) * R);
        const float4 *qr = reinterpret_cast<const float4 *>(p.q_rope + (t * p.heads + h0) * p.rope_dim);
        const int s4 = S / 4, r4 = R / 4, w4 = W / 4, rd4 = static_cast<int>(p.rope_dim / 4);
#pragma unroll 6
        for (int i = tid; i < kHeadsPerCta * s4; i += kThreads) {
            const int h = i / s4, v = i % s4;
            float4 x = make_float4(0, 0, 0, 0);
            if (h < nh && v < w4) x = v < r4 ? ql[h * r4 + v] : qr[h * rd4 + v - r4];
            Q4w[i] = x;
        }
    } else {
        for (int i = tid; i < kHeadsPerCta * S; i += kThreads) {
            const int h = i / S, d = i % S;
            float v = 0.0f;
            if (h < nh && d < W)
                v = d < R ? p.q_latent[(t * p.heads + h0 + h) * R + d]
                          : p.q_rope[(t * p.heads + h0 + h) * p.rope_dim + (d - R)];
            Qs[i] = v;
        }
    }
    // Columns past the record stay zero: the score loop runs over whole float4s.
    for (int i = tid; i < kKeys * S; i += kThreads) Ks[i] = 0.0f;

    for (int64_t it = 0; it < tiles; ++it) {
        cluster.sync();  // every CTA is done with the previous tile
#pragma unroll
        for (int q = 0; q < kPrefetch; ++q) store_item(i0 + tid + q * kThreads, pre[q]);
        for (int i = i0 + tid + kPrefetch * kThreads; i < i1; i += kThreads) store_item(i, load_item(it, i));
        if (tid < kKeys) slots_s[tid] = static_cast<int>(key_slot(it, tid) >= 0);
        cluster.sync();  // the tile is in every CTA
        if (it + 1 < tiles) {
#pragma unroll
            for (int q = 0; q < kPrefetch; ++q) pre[q] = load_item(it + 1, i0 + tid + q * kThreads);
        }
        bool any = false;
        for (int j = 0; j < kKeys; ++j) any |= slots_s[j] != 0;
        if (!any) continue;

        // Scores: 4 heads x 4 keys per thread over a quarter of the columns.
        float s[4][4] = {};
        const float4 *Q4 = reinterpret_cast<const float4 *>(Qs), *K4 = reinterpret_cast<const float4 *>(Ks);
        for (int vi = ds; vi < nv; vi += 4) {
            float4 q[4], kk[4];
#pragma unroll
            for (int a = 0; a < 4; ++a) q[a] = Q4[(warp * 4 + a) * (S / 4) + vi];
#pragma unroll
            for (int b = 0; b < 4; ++b) kk[b] = K4[(kg * 4 + b) * (S / 4) + vi];
#pragma unroll
            for (int a = 0; a < 4; ++a)
#pragma unroll
                for (int b = 0; b < 4; ++b)
                    s[a][b] = fmaf(q[a].x, kk[b].x, fmaf(q[a].y, kk[b].y, fmaf(q[a].z, kk[b].z, fmaf(q[a].w, kk[b].w, s[a][b]))));
        }
#pragma unroll
        for (int a = 0; a < 4; ++a)
#pragma unroll
            for (int b = 0; b < 4; ++b) {
                s[a][b] += __shfl_xor_sync(0xffffffffu, s[a][b], 1);
                s[a][b] += __shfl_xor_sync(0xffffffffu, s[a][b], 2);
            }
#pragma unroll
        for (int a = 0; a < 4; ++a)
            if (a == ds)
#pragma unroll
                for (int b = 0; b < 4; ++b) Ss[(warp * 4 + a) * kScoreStride + kg * 4 + b] = s[a][b];
        __syncthreads();

        // Online softmax: warp = 4 heads, lane = key.
#pragma unroll
        for (int a = 0; a < 4; ++a) {
            const int h = warp * 4 + a;
            const float sc = slots_s[lane] ? Ss[h * kScoreStride + lane] * p.scale : -INFINITY;
            const float m_new = fmaxf(m[a], warp_max(sc));
            const float pr = m_new == -INFINITY ? 0.0f : expf(sc - m_new);
            const float c = m_new == -INFINITY ? 1.0f : expf(m[a] - m_new);
            l[a] = l[a] * c + warp_sum(pr);
            m[a] = m_new;
            Ps[h * kKeys + lane] = pr;
            if (lane == 0) corr[h] = c;
        }
        __syncthreads();

        // out[h] = out[h] * corr + sum_j p[h][j] * latent[j]
#pragma unroll
        for (int a = 0; a < 8; ++a) {
            const float c = corr[hq * 8 + a];
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[a][e] *= c;
        }
        const bool lo = dg * 4 < R, hi = 256 + dg * 4 < R;
        const float4 *P4 = reinterpret_cast<const float4 *>(Ps);
        for (int j = 0; j < kKeys; j += 4) {
            float4 pp[8];
#pragma unroll
            for (int a = 0; a < 8; ++a) pp[a] = P4[((hq * 8 + a) * kKeys + j) / 4];
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) {
                const float4 *row = K4 + (j + jj) * (S / 4);
                const float4 v0 = lo ? row[dg] : make_float4(0, 0, 0, 0);
                const float4 v1 = hi ? row[64 + dg] : make_float4(0, 0, 0, 0);
#pragma unroll
                for (int a = 0; a < 8; ++a) {
                    const float pj = jj == 0 ? pp[a].x : jj == 1 ? pp[a].y : jj == 2 ? pp[a].z : pp[a].w;
                    acc[a][0] = fmaf(pj, v0.x, acc[a][0]); acc[a][1] = fmaf(pj, v0.y, acc[a][1]);
                    acc[a][2] = fmaf(pj, v0.z, acc[a][2]); acc[a][3] = fmaf(pj, v0.w, acc[a][3]);
                    acc[a][4] = fmaf(pj, v1.x, acc[a][4]); acc[a][5] = fmaf(pj, v1.y, acc[a][5]);
                    acc[a][6] = fmaf(pj, v1.z, acc[a][6]); acc[a][7] = fmaf(pj, v1.w, acc[a][7]);
                }
            }
        }
    }

    if (lane == 0)
#pragma unroll
        for (int a = 0; a < 4; ++a) { lsum[warp * 4 + a] = l[a]; msum[warp * 4 + a] = m[a]; }
    __syncthreads();
    const int64_t part_rows = p.T * k.splits * p.heads;
#pragma unroll
    for (int a = 0; a < 8; ++a) {
        const int h = hq * 8 + a;
        if (h >= nh) continue;
        float *dst;
        float mul = 1.0f;
        if constexpr (kSplit) {
            const int64_t row = (t * k.splits + split) * p.heads + h0 + h;
            dst = p.partial + row * R;
            if (dg == 0) {
                p.partial[part_rows * R + row] = msum[h];
                p.partial[part_rows * (R + 1) + row] = lsum[h];
            }
        } else {
            dst = p.out + (t * p.heads + h0 + h) * R;
            mul = lsum[h] > 0.0f ? 1.0f / lsum[h] : 0.0f;
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const int col = (e < 4 ? dg * 4 : 256 + dg * 4) + (e & 3);
            if (col < R) dst[col] = acc[a][e] * mul;
        }
    }
}

// Merges a row's split states: out = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s.
__global__ void mla_combine_kernel(MlaParams p) {
    __shared__ float wt[kMaxSplits];
    __shared__ float inv_sum;
    const int64_t t = blockIdx.x / p.heads, h = blockIdx.x % p.heads, R = p.rank;
    const int64_t rows = p.T * p.splits * p.heads;
    const float *mpart = p.partial + rows * R, *lpart = mpart + rows;
    if (threadIdx.x == 0) {
        float M = -INFINITY;
        for (int64_t s = 0; s < p.splits; ++s) M = fmaxf(M, mpart[(t * p.splits + s) * p.heads + h]);
        float L = 0.0f;
        for (int64_t s = 0; s < p.splits; ++s) {
            const int64_t row = (t * p.splits + s) * p.heads + h;
            wt[s] = M == -INFINITY ? 0.0f : expf(mpart[row] - M);
            L += wt[s] * lpart[row];
        }
        inv_sum = L > 0.0f ? 1.0f / L : 0.0f;
    }
    __syncthreads();
    for (int64_t c = threadIdx.x; c < R; c += blockDim.x) {
        float o = 0.0f;
        for (int64_t s = 0; s < p.splits; ++s) o = fmaf(wt[s], p.partial[((t * p.splits + s) * p.heads + h) * R + c], o);
        p.out[(t * p.heads + h) * R + c] = o * inv_sum;
    }
}

template <class T>
__global__ void mla_store_kernel(MlaStoreParams p) {
    const int64_t W = p.rank + p.rope_dim;
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= p.T * W) return;
    const int64_t t = i / W, d = i % W;
    const int64_t slot = p.slots[t];
    if (slot < 0) return;
    const float v = d < p.rank ? p.latent[t * p.latent_stride + d] : p.k_rope[t * p.k_rope_stride + d - p.rank];
    if constexpr (sizeof(T) == 4)
        static_cast<float *>(p.cache)[slot * W + d] = v;
    else
        static_cast<__nv_bfloat16 *>(p.cache)[slot * W + d] = __float2bfloat16(v);
}

template <class T>
__global__ void mla_gather_kernel(MlaGatherParams p) {
    const int64_t W = p.rank + p.rope_dim;
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= p.T * W) return;
    const int64_t t = i / W, d = i % W;
    const float v = to_f32(static_cast<const T *>(p.cache)[static_cast<int64_t>(p.slots[t]) * W + d]);
    if (d < p.rank) p.latent[t * p.rank + d] = v;
    else p.k_rope[t * p.rope_dim + d - p.rank] = v;
}

MlaShape shape_of(const MlaParams &p, int64_t splits) {
    MlaShape k;
    const int64_t W = p.rank + p.rope_dim;
    k.cluster = static_cast<int>((p.heads + kHeadsPerCta - 1) / kHeadsPerCta);
    k.row_stride = static_cast<int>((W + 3) / 4 * 4);
    if (k.row_stride % 8 != 4) k.row_stride += 4;
    const int64_t elems = 16 / (p.cache_bf16 ? 2 : 4);
    k.vec = W % elems == 0 && reinterpret_cast<uintptr_t>(p.cache) % 16 == 0;
    k.vec_q = p.rank % 4 == 0 && p.rope_dim % 4 == 0 && reinterpret_cast<uintptr_t>(p.q_latent) % 16 == 0 &&
              reinterpret_cast<uintptr_t>(p.q_rope) % 16 == 0;
    const int64_t n_max = p.select ? p.select_stride : p.pages.stride * kPageTokens;
    const int64_t tiles = (n_max + kKeys - 1) / kKeys;
    k.splits = splits;
    k.keys_per_split = (tiles + splits - 1) / splits * kKeys;
    return k;
}

bool supported(const MlaParams &p) {
    return p.rank <= kMaxRank && p.heads <= int64_t(kHeadsPerCta) * kMaxCluster && (p.select || p.rows.pos);
}

template <class T, bool kSplit>
cudaError_t launch_cluster(const MlaParams &p, const MlaShape &k, cudaStream_t stream) {
    const size_t smem = smem_bytes(k);
    cudaError_t e = cudaFuncSetAttribute(mla_kernel<T, kSplit>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
    if (e != cudaSuccess) return e;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(p.T * k.splits * k.cluster));
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = static_cast<unsigned>(k.cluster);
    attr.val.clusterDim.y = 1;
    attr.val.clusterDim.z = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, mla_kernel<T, kSplit>, p, k);
}

template <bool kSplit>
cudaError_t launch_any(const MlaParams &p, const MlaShape &k, cudaStream_t stream) {
    return p.cache_bf16 ? launch_cluster<__nv_bfloat16, kSplit>(p, k, stream) : launch_cluster<float, kSplit>(p, k, stream);
}

}  // namespace

int64_t mla_decode_splits(const MlaParams &p, int sm_count) {
    const int64_t clusters = p.T * ((p.heads + kHeadsPerCta - 1) / kHeadsPerCta);
    if (clusters <= 0) return 1;
    const int64_t n_max = p.select ? p.select_stride : p.pages.stride * kPageTokens;
    const int64_t tiles = std::max<int64_t>(1, (n_max + kKeys - 1) / kKeys);
    const int64_t want = std::min({std::max<int64_t>(1, sm_count / clusters), tiles, int64_t(kMaxSplits)});
    const int64_t per = (tiles + want - 1) / want;
    return (tiles + per - 1) / per;
}

size_t mla_decode_partial_floats(const MlaParams &p) {
    return static_cast<size_t>(p.T * p.splits * p.heads * (p.rank + 2));
}

cudaError_t launch_mla_prefill(const MlaParams &p, cudaStream_t stream) {
    if (p.T == 0 || p.heads == 0) return cudaSuccess;
    if (!supported(p)) return cudaErrorInvalidValue;
    return launch_any<false>(p, shape_of(p, 1), stream);
}

cudaError_t launch_mla_decode(const MlaParams &p, cudaStream_t stream) {
    if (p.T == 0 || p.heads == 0) return cudaSuccess;
    if (!supported(p) || p.splits < 1 || p.splits > kMaxSplits || (p.splits > 1 && !p.partial))
        return cudaErrorInvalidValue;
    const MlaShape k = shape_of(p, p.splits);
    if (p.splits == 1) return launch_any<false>(p, k, stream);
    cudaError_t e = launch_any<true>(p, k, stream);
    if (e != cudaSuccess) return e;
    mla_combine_kernel<<<static_cast<unsigned>(p.T * p.heads), 128, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_mla_store(const MlaStoreParams &p, cudaStream_t stream) {
    const int64_t n = p.T * (p.rank + p.rope_dim);
    if (n == 0) return cudaSuccess;
    if (p.cache_bf16)
        mla_store_kernel<__nv_bfloat16><<<ceil_div(n, 256), 256, 0, stream>>>(p);
    else
        mla_store_kernel<float><<<ceil_div(n, 256), 256, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_mla_gather(const MlaGatherParams &p, cudaStream_t stream) {
    const int64_t n = p.T * (p.rank + p.rope_dim);
    if (n == 0) return cudaSuccess;
    if (p.cache_bf16)
        mla_gather_kernel<__nv_bfloat16><<<ceil_div(n, 256), 256, 0, stream>>>(p);
    else
        mla_gather_kernel<float><<<ceil_div(n, 256), 256, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace dsi::cuda
