// labels: cpu
// Every op of the CPU backend (lib/backend_cpu) against a naive double-precision
// reference written straight from the math in backend.h / rope.h (never by calling
// the kernels), on random inputs drawn with a fixed seed per case: F32, BF16 and
// block-scaled FP8 weights (partial edge blocks, power-of-two scales), odd shapes,
// in-place aliasing, strided heads, causal selection edge cases, planted ties, and
// bit-identical results across thread counts. The worst error measured for each op is
// printed when the executable exits.
#include <doctest/doctest.h>

#include "backend/backend.h"
#include "checkpoint/safetensors.h"
#include "model/config.h"
#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

using dsi::Backend;
using dsi::Buffer;
using dsi::DType;
using dsi::HeadView;
using dsi::Matrix;
using dsi::MatrixSource;
using dsi::RopeStyle;
using dsi::TensorInfo;

namespace {

using Rng = std::mt19937;
constexpr double kU = 0x1p-24;  // float32 unit roundoff

// ---- measured errors, printed at exit ---------------------------------------------
struct ErrLog {
    std::map<std::string, double> worst;
    ~ErrLog() {
        std::printf("[test_cpu_ops] worst measured error per op "
                    "(max|got-ref| / max(1, max|ref|) unless noted):\n");
        for (const auto &kv : worst) std::printf("  %-52s %.3g\n", kv.first.c_str(), kv.second);
    }
};
ErrLog g_log;
void note(const std::string &op, double e) {
    double &w = g_log.worst[op];
    w = std::max(w, e);
}

// Checks max|got - ref| <= tol * max(1, max|ref|) (NaN fails) and logs the ratio.
void check_close(const std::string &op, const float *got, const std::vector<double> &ref, double tol) {
    double md = 0.0, mr = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        double d = std::fabs(static_cast<double>(got[i]) - ref[i]);
        if (std::isnan(d)) d = INFINITY;
        if (d > md) { md = d; at = i; }
        mr = std::max(mr, std::fabs(ref[i]));
    }
    const double err = md / std::max(1.0, mr);
    note(op, err);
    INFO(op << ": " << ref.size() << " values, worst at " << at << ": got " << (ref.empty() ? 0.f : got[at])
            << " ref " << (ref.empty() ? 0.0 : ref[at]) << ", max|ref| " << mr);
    CHECK(err <= tol);
}

std::vector<float> rand_vec(Rng &g, size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> U(lo, hi);
    std::vector<float> v(n);
    for (float &x : v) x = U(g);
    return v;
}

int64_t rand_int(Rng &g, int64_t lo, int64_t hi) {  // inclusive
    return std::uniform_int_distribution<int64_t>(lo, hi)(g);
}

Buffer upload(Backend &be, const std::vector<float> &v) {
    Buffer b = be.alloc(v.size() * sizeof(float));
    be.from_host(v.data(), v.size() * sizeof(float), b.f32());
    return b;
}
Buffer upload_i32(Backend &be, const std::vector<int32_t> &v) {
    Buffer b = be.alloc(v.size() * sizeof(int32_t));
    be.from_host(v.data(), v.size() * sizeof(int32_t), b.i32());
    return b;
}
std::vector<float> download(Backend &be, const float *p, size_t n) {
    std::vector<float> v(n);
    be.to_host(p, n * sizeof(float), v.data());
    return v;
}
std::vector<int32_t> download_i32(Backend &be, const int32_t *p, size_t n) {
    std::vector<int32_t> v(n);
    be.to_host(p, n * sizeof(int32_t), v.data());
    return v;
}

// One sequence's cache entries for positions [0, n_ctx), written with cache_store into
// a pool whose pages are in shuffled order with spare pages between them (the last page
// partly filled), and the page table and per-row sequence arrays that address them.
struct PagedSeq {
    std::unique_ptr<dsi::CachePool> pool;
    std::vector<int32_t> table;  // page of each 64 positions
    Buffer table_b, row_seq_b, row_pos_b;
    dsi::RowSequences seqs;

    int32_t slot(int64_t pos) const {
        return table[static_cast<size_t>(pos / dsi::kPageTokens)] * static_cast<int32_t>(dsi::kPageTokens) +
               static_cast<int32_t>(pos % dsi::kPageTokens);
    }
};

// latent/k_rope [n_ctx, rank/rope] (empty for an indexer-only pool), keys [n_ctx, index_dim]
// (empty for an MLA-only pool); rows t of the query batch sit at first_pos + t.
PagedSeq make_paged(Backend &be, Rng &g, int64_t n_ctx, int64_t rank, int64_t rope, int64_t index_dim,
                    const std::vector<float> &latent, const std::vector<float> &k_rope,
                    const std::vector<float> &keys, int64_t first_pos, int64_t T) {
    PagedSeq ps;
    const int64_t used = (n_ctx + dsi::kPageTokens - 1) / dsi::kPageTokens, n_pages = 2 * used + 1;
    dsi::CacheDims d;
    d.layers = 1;
    d.kv_lora_rank = rank;
    d.rope_dim = rope;
    d.index_dim = index_dim;
    ps.pool = be.alloc_cache_pool(d, n_pages);
    std::vector<int32_t> ids(static_cast<size_t>(n_pages));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), g);
    ps.table.assign(ids.begin(), ids.begin() + used);
    std::vector<int32_t> slots(static_cast<size_t>(n_ctx));
    for (int64_t s = 0; s < n_ctx; ++s) slots[static_cast<size_t>(s)] = ps.slot(s);
    const std::vector<float> zero_lat(static_cast<size_t>(n_ctx * rank)), zero_rope(static_cast<size_t>(n_ctx * rope));
    Buffer sb = upload_i32(be, slots);
    Buffer lb = upload(be, latent.empty() ? zero_lat : latent), rb = upload(be, k_rope.empty() ? zero_rope : k_rope);
    Buffer kb = upload(be, keys.empty() ? std::vector<float>{0.f} : keys);
    dsi::CacheStoreParams st;
    st.mla_pages = ps.pool->mla[0];
    st.index_pages = index_dim ? ps.pool->index[0] : nullptr;
    st.slots = sb.i32();
    st.rows = n_ctx;
    st.latent = lb.f32();
    st.latent_stride = rank;
    st.k_rope = rb.f32();
    st.k_rope_stride = rope;
    st.index_key = kb.f32();
    st.kv_lora_rank = rank;
    st.rope_dim = rope;
    st.index_dim = index_dim;
    be.cache_store(st);
    ps.table_b = upload_i32(be, ps.table);
    std::vector<int32_t> row_pos(static_cast<size_t>(T));
    std::iota(row_pos.begin(), row_pos.end(), static_cast<int32_t>(first_pos));
    ps.row_seq_b = upload_i32(be, std::vector<int32_t>(static_cast<size_t>(T), 0));
    ps.row_pos_b = upload_i32(be, row_pos);
    ps.seqs.row_seq = ps.row_seq_b.i32();
    ps.seqs.row_pos = ps.row_pos_b.i32();
    ps.seqs.page_table = ps.table_b.i32();
    ps.seqs.page_table_stride = used;
    return ps;
}

float bits_to_f(uint32_t b) {
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}
uint32_t f_to_bits(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
}

// OCP E4M3FN from its definition: sign | 4-bit exponent (bias 7) | 3-bit mantissa;
// exponent 0 is subnormal (m/8 * 2^-6); S.1111.111 is NaN; no infinities.
bool e4m3_is_nan(uint8_t b) { return (b & 0x7F) == 0x7F; }
double e4m3_value(uint8_t b) {
    const int e = (b >> 3) & 15, m = b & 7;
    const double mag = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
    return (b & 0x80) ? -mag : mag;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double silu(double x) { return x * sigmoid(x); }

// A weight matrix as a checkpoint would hold it (TensorInfo into host bytes), its
// dequantised double reference, and the backend's prepared Matrix.
struct HostMatrix {
    int64_t rows = 0, cols = 0;
    TensorInfo w, s;
    std::vector<uint8_t> wbytes;
    std::vector<float> scales;
    std::vector<double> ref;  // [rows, cols]
    std::unique_ptr<Matrix> m;
    double at(int64_t r, int64_t c) const { return ref[static_cast<size_t>(r * cols + c)]; }
};

// F32 / BF16: uniform in (-amp, amp) (BF16 truncated from such a float). F8_E4M3: every
// non-NaN byte uniformly (subnormals and +-448 included) times a power-of-two scale
// per (block_rows x block_cols) block, the exponent drawn around amp/256 so that
// typical magnitudes are comparable to the other dtypes.
std::unique_ptr<HostMatrix> make_matrix(Backend &be, DType dt, int64_t rows, int64_t cols, Rng &g, float amp,
                                        int64_t br = 128, int64_t bc = 128) {
    auto h = std::make_unique<HostMatrix>();
    h->rows = rows;
    h->cols = cols;
    const size_t n = static_cast<size_t>(rows * cols);
    h->ref.resize(n);
    std::uniform_real_distribution<float> U(-amp, amp);
    h->w.name = "test.weight";
    h->w.dtype = dt;
    h->w.shape = {rows, cols};
    if (dt == DType::F32) {
        h->wbytes.resize(n * 4);
        for (size_t i = 0; i < n; ++i) {
            const float v = U(g);
            std::memcpy(&h->wbytes[i * 4], &v, 4);
            h->ref[i] = v;
        }
    } else if (dt == DType::BF16) {
        h->wbytes.resize(n * 2);
        for (size_t i = 0; i < n; ++i) {
            const uint16_t b = static_cast<uint16_t>(f_to_bits(U(g)) >> 16);
            std::memcpy(&h->wbytes[i * 2], &b, 2);
            h->ref[i] = bits_to_f(static_cast<uint32_t>(b) << 16);
        }
    } else {
        REQUIRE(dt == DType::F8_E4M3);
        const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
        h->scales.resize(static_cast<size_t>(sr * sc));
        const int e0 = static_cast<int>(std::lround(std::log2(amp / 256.0)));
        std::uniform_int_distribution<int> E(e0 - 1, e0 + 1);
        for (float &s : h->scales) s = std::ldexp(1.0f, E(g));
        h->wbytes.resize(n);
        std::uniform_int_distribution<int> B(0, 255);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
                uint8_t b;
                do b = static_cast<uint8_t>(B(g)); while (e4m3_is_nan(b));
                const size_t i = static_cast<size_t>(r * cols + c);
                h->wbytes[i] = b;
                h->ref[i] = e4m3_value(b) * h->scales[static_cast<size_t>((r / br) * sc + c / bc)];
            }
        h->s.name = "test.weight_scale_inv";
        h->s.dtype = DType::F32;
        h->s.shape = {sr, sc};
        h->s.data = reinterpret_cast<const uint8_t *>(h->scales.data());
        h->s.nbytes = h->scales.size() * 4;
    }
    h->w.data = h->wbytes.data();
    h->w.nbytes = h->wbytes.size();
    MatrixSource src;
    src.weight = &h->w;
    src.scale_inv = dt == DType::F8_E4M3 ? &h->s : nullptr;
    src.block_rows = br;
    src.block_cols = bc;
    h->m = be.prepare_matrix(src);
    REQUIRE(h->m);
    CHECK(h->m->rows == rows);
    CHECK(h->m->cols == cols);
    return h;
}

const char *dt_name(DType t) {
    return t == DType::F32 ? "F32" : t == DType::BF16 ? "BF16" : t == DType::F8_E4M3 ? "F8_E4M3" : "?";
}

// Naive y = W x in double for one row of x.
std::vector<double> matvec(const HostMatrix &W, const double *x) {
    std::vector<double> y(static_cast<size_t>(W.rows), 0.0);
    for (int64_t r = 0; r < W.rows; ++r) {
        double s = 0.0;
        for (int64_t c = 0; c < W.cols; ++c) s += W.at(r, c) * x[c];
        y[static_cast<size_t>(r)] = s;
    }
    return y;
}

}  // namespace

// ====================================================================================
TEST_CASE("e4m3 decoding used by the FP8 path matches the format definition") {
    for (int b = 0; b < 256; ++b) {
        const uint8_t u = static_cast<uint8_t>(b);
        CAPTURE(b);
        if (e4m3_is_nan(u))
            CHECK(std::isnan(dsi::e4m3_to_float(u)));
        else
            CHECK(static_cast<double>(dsi::e4m3_to_float(u)) == e4m3_value(u));
    }
    CHECK(e4m3_value(0x7E) == 448.0);
    CHECK(e4m3_value(0x01) == std::ldexp(1.0, -9));
}

// ====================================================================================
TEST_CASE("linear: F32 / BF16 / FP8 block-scaled (partial blocks) vs naive dequantised matmul") {
    auto be = dsi::make_cpu_backend(2);
    struct Shape { int64_t x_rows, out, in, br, bc; };
    const Shape shapes[] = {
        {1, 200, 300, 128, 128},  // partial edge blocks in both dims (2x3 scale grid)
        {4, 200, 300, 128, 128},
        {3, 17, 33, 128, 128},    // smaller than one block
        {1, 1, 1, 128, 128},
        {7, 129, 257, 128, 128},  // one row / one column past a block edge
        {2, 256, 128, 128, 128},  // whole blocks only
        {5, 70, 90, 32, 64},      // non-default block size, partial edges
    };
    uint32_t seed = 1000;
    for (DType dt : {DType::F32, DType::BF16, DType::F8_E4M3})
        for (const Shape &sh : shapes) {
            CAPTURE(dt_name(dt));
            CAPTURE(sh.x_rows);
            CAPTURE(sh.out);
            CAPTURE(sh.in);
            Rng g(seed++);
            auto W = make_matrix(*be, dt, sh.out, sh.in, g, 1.0f, sh.br, sh.bc);
            const auto x = rand_vec(g, static_cast<size_t>(sh.x_rows * sh.in), -1.f, 1.f);
            Buffer xb = upload(*be, x);
            Buffer yb = be->alloc(static_cast<size_t>(sh.x_rows * sh.out) * 4);
            be->linear(xb.f32(), sh.x_rows, *W->m, yb.f32());
            const auto y = download(*be, yb.f32(), static_cast<size_t>(sh.x_rows * sh.out));

            std::vector<double> ref(y.size());
            double worst_vs_bound = 0.0;
            for (int64_t i = 0; i < sh.x_rows; ++i)
                for (int64_t r = 0; r < sh.out; ++r) {
                    double s = 0.0, a = 0.0;
                    for (int64_t c = 0; c < sh.in; ++c) {
                        const double p = static_cast<double>(x[static_cast<size_t>(i * sh.in + c)]) * W->at(r, c);
                        s += p;
                        a += std::fabs(p);
                    }
                    const size_t k = static_cast<size_t>(i * sh.out + r);
                    ref[k] = s;
                    // x and the dequantised W are exact float32 values (BF16 widening and
                    // e4m3 x 2^k are exact), so a float32 dot of length n in ANY summation
                    // order, with or without FMA, is within gamma_{n+1} ~ (n+2) u sum|x w|
                    // of the exact value (Higham, Accuracy and Stability, 3.1).
                    const double bound = (static_cast<double>(sh.in) + 2.0) * kU * a;
                    const double d = std::fabs(static_cast<double>(y[k]) - s);
                    worst_vs_bound = std::max(worst_vs_bound, bound > 0 ? d / bound : (d > 0 ? INFINITY : 0.0));
                }
            note(std::string("linear ") + dt_name(dt) + " (err / rigorous bound)", worst_vs_bound);
            CHECK(worst_vs_bound <= 1.0);
            // Typical float32 accumulation error is ~sqrt(n) u |terms| ~ 1e-6 relative.
            check_close(std::string("linear ") + dt_name(dt), y.data(), ref, 1e-5);
        }
}

// ====================================================================================
TEST_CASE("embed: bf16 / f32 table rows copied exactly") {
    auto be = dsi::make_cpu_backend(2);
    Rng g(2000);
    for (DType dt : {DType::BF16, DType::F32}) {
        const int64_t vocab = 50, dim = 37;
        auto T = make_matrix(*be, dt, vocab, dim, g, 3.0f);
        const std::vector<int32_t> ids = {0, 49, 3, 3, 17, 0, 48, 25, 1};
        const int64_t n = static_cast<int64_t>(ids.size());
        Buffer out = be->alloc(static_cast<size_t>(n * dim) * 4);
        Buffer idb = upload_i32(*be, ids);
        be->embed(*T->m, idb.i32(), n, out.f32());
        const auto y = download(*be, out.f32(), static_cast<size_t>(n * dim));
        int mismatches = 0;
        for (int64_t i = 0; i < n; ++i)
            for (int64_t c = 0; c < dim; ++c)
                mismatches += static_cast<double>(y[static_cast<size_t>(i * dim + c)]) != T->at(ids[i], c);
        CAPTURE(dt_name(dt));
        CHECK(mismatches == 0);  // widening bf16 -> f32 is exact
        note(std::string("embed ") + dt_name(dt) + " (mismatching values)", mismatches);
    }
}

TEST_CASE("add, copy_rows, prepare_vector: exact") {
    auto be = dsi::make_cpu_backend(2);
    Rng g(2100);
    {
        const auto y0 = rand_vec(g, 1001, -5, 5), x = rand_vec(g, 1001, -5, 5);
        Buffer yb = upload(*be, y0), xb = upload(*be, x);
        be->add(yb.f32(), xb.f32(), 1001);
        const auto y = download(*be, yb.f32(), 1001);
        int bad = 0;
        for (size_t i = 0; i < y.size(); ++i) bad += y[i] != y0[i] + x[i];  // one float32 addition
        CHECK(bad == 0);
    }
    {
        const int64_t rows = 5, cols = 7, ss = 11, ds = 9;
        const auto src = rand_vec(g, static_cast<size_t>(rows * ss), -1, 1);
        const auto dst0 = rand_vec(g, static_cast<size_t>(rows * ds), -1, 1);
        Buffer sb = upload(*be, src), db = upload(*be, dst0);
        be->copy_rows(sb.f32(), ss, rows, cols, db.f32(), ds);
        const auto d = download(*be, db.f32(), dst0.size());
        int bad = 0;
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < ds; ++c) {
                const float want = c < cols ? src[static_cast<size_t>(r * ss + c)] : dst0[static_cast<size_t>(r * ds + c)];
                bad += d[static_cast<size_t>(r * ds + c)] != want;  // rest of each dst row untouched
            }
        CHECK(bad == 0);
    }
    {
        auto V = make_matrix(*be, DType::BF16, 1, 67, g, 2.0f);
        TensorInfo t = V->w;
        t.shape = {67};
        Buffer b = be->prepare_vector(t);
        const auto v = download(*be, b.f32(), 67);
        int bad = 0;
        for (int64_t i = 0; i < 67; ++i) bad += static_cast<double>(v[static_cast<size_t>(i)]) != V->at(0, i);
        CHECK(bad == 0);
    }
}

// ====================================================================================
TEST_CASE("rms_norm / layer_norm vs double formula, out of place and in place") {
    auto be = dsi::make_cpu_backend(2);
    struct Shape { int64_t rows, dim; };
    const Shape shapes[] = {{1, 7}, {2, 1}, {4, 256}, {3, 1001}, {2, 7168}};
    uint32_t seed = 3000;
    for (const Shape &sh : shapes)
        for (float eps : {1e-6f, 1e-5f}) {
            CAPTURE(sh.rows);
            CAPTURE(sh.dim);
            CAPTURE(eps);
            Rng g(seed++);
            const size_t n = static_cast<size_t>(sh.rows * sh.dim);
            const auto x = rand_vec(g, n, 1.f, 5.f);  // mean ~3: layer_norm must subtract it
            const auto w = rand_vec(g, static_cast<size_t>(sh.dim), 0.5f, 1.5f);
            const auto b = rand_vec(g, static_cast<size_t>(sh.dim), -0.5f, 0.5f);
            std::vector<double> ref_rms(n), ref_ln(n);
            for (int64_t r = 0; r < sh.rows; ++r) {
                const float *xr = &x[static_cast<size_t>(r * sh.dim)];
                double ss = 0, mean = 0, var = 0;
                for (int64_t i = 0; i < sh.dim; ++i) ss += double(xr[i]) * xr[i], mean += xr[i];
                mean /= double(sh.dim);
                for (int64_t i = 0; i < sh.dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
                var /= double(sh.dim);  // biased, as torch.nn.LayerNorm
                const double inv_rms = 1.0 / std::sqrt(ss / double(sh.dim) + double(eps));
                const double inv_std = 1.0 / std::sqrt(var + double(eps));
                for (int64_t i = 0; i < sh.dim; ++i) {
                    ref_rms[static_cast<size_t>(r * sh.dim + i)] = xr[i] * inv_rms * w[static_cast<size_t>(i)];
                    ref_ln[static_cast<size_t>(r * sh.dim + i)] =
                        (xr[i] - mean) * inv_std * w[static_cast<size_t>(i)] + b[static_cast<size_t>(i)];
                }
            }
            Buffer xb = upload(*be, x), wb = upload(*be, w), bb = upload(*be, b);
            Buffer yb = be->alloc(n * 4), zb = upload(*be, x), lb = upload(*be, x);
            // After a double-precision reduction the kernels round at most ~3 times per
            // element (1/rms or (x-mean)/std, *w, +b): error ~3u ~ 2e-7 of the value.
            const double tol = 1e-6;
            be->rms_norm(xb.f32(), wb.f32(), sh.rows, sh.dim, eps, yb.f32());
            check_close("rms_norm", download(*be, yb.f32(), n).data(), ref_rms, tol);
            be->rms_norm(zb.f32(), wb.f32(), sh.rows, sh.dim, eps, zb.f32());  // y == x
            check_close("rms_norm in place", download(*be, zb.f32(), n).data(), ref_rms, tol);
            be->layer_norm(xb.f32(), wb.f32(), bb.f32(), sh.rows, sh.dim, eps, yb.f32());
            check_close("layer_norm", download(*be, yb.f32(), n).data(), ref_ln, tol);
            be->layer_norm(lb.f32(), wb.f32(), bb.f32(), sh.rows, sh.dim, eps, lb.f32());  // y == x
            check_close("layer_norm in place", download(*be, lb.f32(), n).data(), ref_ln, tol);
            CHECK(download(*be, xb.f32(), n) == x);  // the out-of-place source is not written
        }
}

// ====================================================================================
TEST_CASE("rope: interleaved and half-split rotation of strided heads vs complex rotation") {
    auto be = dsi::make_cpu_backend(2);
    struct Case {
        RopeStyle style;
        int64_t rows, heads, head_stride, row_stride, offset, rope_dim, first_pos;
        const char *what;
    };
    const Case cases[] = {
        {RopeStyle::Interleaved, 5, 3, 24, 3 * 24 + 5, 16, 8, 7, "MLA q: last 8 of 24 dims per head, padded rows"},
        {RopeStyle::Interleaved, 4, 1, 0, 40, 32, 8, 0, "MLA k_rope after a 32-wide latent in each row"},
        {RopeStyle::Interleaved, 3, 4, 192, 4 * 192, 128, 64, 100, "DeepSeek-V3 sizes"},
        {RopeStyle::HalfSplit, 6, 4, 20, 80, 0, 12, 0, "indexer q: first 12 of 20 dims"},
        {RopeStyle::HalfSplit, 3, 1, 0, 20, 0, 12, 33, "indexer k"},
        {RopeStyle::HalfSplit, 2, 3, 128, 3 * 128 + 1, 0, 64, 9, "indexer sizes"},
        {RopeStyle::Interleaved, 2, 2, 9, 19, 3, 2, 50, "rope_dim 2, odd offset and strides"},
        {RopeStyle::HalfSplit, 3, 2, 7, 15, 5, 2, 1, "half-split rope_dim 2"},
    };
    uint32_t seed = 4000;
    for (const Case &c : cases) {
        CAPTURE(c.what);
        Rng g(seed++);
        const int64_t half = c.rope_dim / 2, n_pos = c.first_pos + c.rows + 3;
        // Every row has its own position (a batch mixes sequences): first_pos + a permutation.
        std::vector<int32_t> positions(static_cast<size_t>(c.rows));
        std::iota(positions.begin(), positions.end(), static_cast<int32_t>(c.first_pos));
        std::shuffle(positions.begin(), positions.end(), g);
        const double theta = 10000.0;
        std::vector<double> inv(static_cast<size_t>(half));
        for (int64_t i = 0; i < half; ++i) inv[i] = std::pow(theta, -2.0 * double(i) / double(c.rope_dim));
        std::vector<float> cs(static_cast<size_t>(n_pos * half)), sn(cs.size());
        for (int64_t p = 0; p < n_pos; ++p)
            for (int64_t i = 0; i < half; ++i) {
                cs[p * half + i] = static_cast<float>(std::cos(inv[i] * double(p)));
                sn[p * half + i] = static_cast<float>(std::sin(inv[i] * double(p)));
            }
        const size_t n = static_cast<size_t>(c.rows * c.row_stride);
        const auto x = rand_vec(g, n, -2.f, 2.f);
        std::vector<double> ref(x.begin(), x.end());
        std::vector<char> touched(n, 0);
        for (int64_t r = 0; r < c.rows; ++r)
            for (int64_t h = 0; h < c.heads; ++h) {
                const int64_t base = r * c.row_stride + h * c.head_stride + c.offset;
                REQUIRE(base + c.rope_dim <= (r + 1) * c.row_stride);
                for (int64_t i = 0; i < half; ++i) {
                    const int64_t ia = base + (c.style == RopeStyle::Interleaved ? 2 * i : i);
                    const int64_t ib = base + (c.style == RopeStyle::Interleaved ? 2 * i + 1 : i + half);
                    // (a + ib) * e^{i angle}, angle = inv_freq[i] * position
                    const double angle = inv[i] * double(positions[static_cast<size_t>(r)]);
                    const double a = x[ia], b = x[ib];
                    ref[ia] = a * std::cos(angle) - b * std::sin(angle);
                    ref[ib] = b * std::cos(angle) + a * std::sin(angle);
                    REQUIRE(!touched[ia]);
                    REQUIRE(!touched[ib]);
                    touched[ia] = touched[ib] = 1;
                }
            }
        Buffer xb = upload(*be, x), cb = upload(*be, cs), sb = upload(*be, sn);
        HeadView v;
        v.x = xb.f32();
        v.rows = c.rows;
        v.row_stride = c.row_stride;
        v.heads = c.heads;
        v.head_stride = c.head_stride;
        v.offset = c.offset;
        dsi::RopeTable tab{cb.f32(), sb.f32(), half};
        Buffer pb = upload_i32(*be, positions);
        be->rope(v, c.rope_dim, c.style, pb.i32(), tab);
        const auto y = download(*be, xb.f32(), n);
        // cos/sin rounded to float32 (u) plus two products and a sum: <= ~4u |x| ~ 5e-7.
        check_close(c.style == RopeStyle::Interleaved ? "rope interleaved" : "rope half-split", y.data(), ref, 2e-6);
        int changed_outside = 0;
        for (size_t i = 0; i < n; ++i)
            if (!touched[i]) changed_outside += f_to_bits(y[i]) != f_to_bits(x[i]);
        CHECK(changed_outside == 0);
    }
}

namespace {
dsi::ModelConfig rope_config(const char *type, int64_t rope_dim, double theta) {
    dsi::ModelConfig cfg;
    cfg.architecture = "DeepseekV32ForCausalLM";
    cfg.model_type = "deepseek_v32";
    cfg.qk_rope_head_dim = rope_dim;
    cfg.qk_nope_head_dim = 2 * rope_dim;
    cfg.rope.type = type;
    cfg.rope.theta = theta;
    return cfg;
}

// YaRN with beta 32/1 and mscale = mscale_all_dim = 1, theta 10000, qk_nope = 2 * rope.
dsi::ModelConfig yarn_config(int64_t rope_dim, int64_t max_positions, double factor, int64_t original) {
    dsi::ModelConfig cfg = rope_config("yarn", rope_dim, 10000.0);
    cfg.max_position_embeddings = max_positions;
    cfg.rope.factor = factor;
    cfg.rope.original_max_position_embeddings = original;
    cfg.rope.beta_fast = 32;
    cfg.rope.beta_slow = 1;
    cfg.rope.mscale = 1.0;
    cfg.rope.mscale_all_dim = 1.0;
    return cfg;
}

// transformers' _compute_yarn_parameters, in double.
std::vector<double> yarn_inv_freq_ref(const dsi::ModelConfig &cfg, int64_t *low_out, int64_t *high_out) {
    const auto &r = cfg.rope;
    const double base = r.theta, dim = double(cfg.qk_rope_head_dim);
    const double factor = r.factor, original = double(r.original_max_position_embeddings);
    auto find_correction_dim = [&](double rot) {
        return dim * std::log(original / (rot * 2.0 * M_PI)) / (2.0 * std::log(base));
    };
    double low = std::floor(find_correction_dim(r.beta_fast));
    double high = std::ceil(find_correction_dim(r.beta_slow));
    low = std::max(low, 0.0);
    high = std::min(high, dim - 1.0);
    *low_out = static_cast<int64_t>(low);
    *high_out = static_cast<int64_t>(high);
    if (low == high) high += 0.001;
    const int64_t half = cfg.qk_rope_head_dim / 2;
    std::vector<double> inv(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
        const double pos_freq = std::pow(base, 2.0 * double(i) / dim);
        const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
        const double extra = 1.0 - ramp;
        inv[i] = 1.0 / (factor * pos_freq) * (1.0 - extra) + 1.0 / pos_freq * extra;
    }
    return inv;
}

double max_rel(const std::vector<float> &got, const std::vector<double> &ref) {
    double m = 0;
    for (size_t i = 0; i < ref.size(); ++i) m = std::max(m, std::fabs(got[i] - ref[i]) / std::fabs(ref[i]));
    return m;
}
}  // namespace

TEST_CASE("rope_frequencies: default rope, YaRN (golden and DeepSeek-V3 configs), mla_softmax_scale") {
    // The kernels evaluate theta^(2i/d) in float32 as torch does: the float32 exponent
    // is off by up to u*(2i/d), which scales the result by ~ln(theta) * u ~ 6e-7; plus a
    // few roundings. 2e-6 relative covers it.
    const double tol = 2e-6;
    SUBCASE("default") {
        for (auto [dim, theta] : {std::pair<int64_t, double>{16, 10000.0}, {64, 10000.0}, {64, 50000.0}, {2, 10000.0}}) {
            CAPTURE(dim);
            CAPTURE(theta);
            const auto cfg = rope_config("default", dim, theta);
            const auto f = dsi::rope_frequencies(cfg);
            REQUIRE(f.inv_freq.size() == size_t(dim / 2));
            std::vector<double> ref(static_cast<size_t>(dim / 2));
            for (int64_t i = 0; i < dim / 2; ++i) ref[i] = std::pow(theta, -2.0 * double(i) / double(dim));
            const double e = max_rel(f.inv_freq, ref);
            note("rope_frequencies default (relative)", e);
            CHECK(e <= tol);
            CHECK(f.attention_factor == 1.0f);
        }
    }
    SUBCASE("YaRN, golden tiny config") {
        const auto cfg = yarn_config(16, 512, 4.0, 128);
        const auto f = dsi::rope_frequencies(cfg);
        int64_t low = -1, high = -1;
        const auto ref = yarn_inv_freq_ref(cfg, &low, &high);
        // By hand: 16 ln(128/(64 pi)) / (2 ln 1e4) = -0.39 -> floor -1 -> 0;
        //          16 ln(128/(2 pi))  / (2 ln 1e4) =  2.62 -> ceil 3.
        CHECK(low == 0);
        CHECK(high == 3);
        REQUIRE(f.inv_freq.size() == 8);
        const double e = max_rel(f.inv_freq, ref);
        note("rope_frequencies YaRN (relative)", e);
        CHECK(e <= tol);
        CHECK(f.inv_freq[0] == doctest::Approx(1.0).epsilon(1e-7));  // fully extrapolated
        CHECK(double(f.inv_freq[7]) == doctest::Approx(std::pow(1e4, -14.0 / 16) / 4).epsilon(tol));  // interpolated
        CHECK(f.attention_factor == 1.0f);  // mscale == mscale_all_dim
        const double m = 0.1 * std::log(4.0) + 1.0;
        const double want_scale = 1.0 / std::sqrt(48.0) * m * m;
        note("mla_softmax_scale (relative)", std::fabs(dsi::mla_softmax_scale(cfg) - want_scale) / want_scale);
        CHECK(double(dsi::mla_softmax_scale(cfg)) == doctest::Approx(want_scale).epsilon(1e-7));

        // rope_tables: angle = float32(inv_freq * pos), cos/sin times attention_factor.
        std::vector<float> cs, sn;
        dsi::rope_tables(f, 600, cs, sn);
        REQUIRE(cs.size() == 600 * 8);
        double worst = 0;
        for (int64_t p = 0; p < 600; ++p)
            for (int64_t i = 0; i < 8; ++i) {
                const double angle = static_cast<float>(double(f.inv_freq[i]) * double(p));
                worst = std::max(worst, std::fabs(cs[p * 8 + i] - std::cos(angle) * f.attention_factor));
                worst = std::max(worst, std::fabs(sn[p * 8 + i] - std::sin(angle) * f.attention_factor));
            }
        note("rope_tables (abs)", worst);
        CHECK(worst <= 1e-6);  // one float32 rounding of a value <= 1.14, times a float factor
    }
    SUBCASE("YaRN, mscale without mscale_all_dim: attention_factor = 0.1 ln(s) + 1") {
        auto cfg = rope_config("yarn", 16, 10000.0);
        cfg.qk_nope_head_dim = 32;
        cfg.max_position_embeddings = 512;
        cfg.rope.factor = 4.0;
        cfg.rope.original_max_position_embeddings = 128;
        cfg.rope.mscale = 1.0;
        cfg.rope.mscale_all_dim = 0.0;
        const auto f = dsi::rope_frequencies(cfg);
        CHECK(double(f.attention_factor) == doctest::Approx(0.1 * std::log(4.0) + 1.0).epsilon(1e-7));
        CHECK(double(dsi::mla_softmax_scale(cfg)) == doctest::Approx(1.0 / std::sqrt(48.0)).epsilon(1e-7));
        std::vector<float> cs, sn;
        dsi::rope_tables(f, 3, cs, sn);
        CHECK(double(cs[0]) == doctest::Approx(0.1 * std::log(4.0) + 1.0).epsilon(1e-7));  // cos 0 * factor
    }
    SUBCASE("YaRN, factor other than max/original (issue 8's V3 config): the config's factor") {
        const auto cfg = yarn_config(64, 512, 2.0, 64);  // max/original would be 8
        const auto f = dsi::rope_frequencies(cfg);
        int64_t low = -1, high = -1;
        const auto ref = yarn_inv_freq_ref(cfg, &low, &high);
        CHECK(max_rel(f.inv_freq, ref) <= tol);
        // the slowest dim is fully interpolated: divided by 2, not by 8
        CHECK(double(f.inv_freq[31]) == doctest::Approx(std::pow(1e4, -62.0 / 64) / 2).epsilon(tol));
        const double m = 0.1 * std::log(2.0) + 1.0;
        CHECK(double(dsi::mla_softmax_scale(cfg)) == doctest::Approx(m * m / std::sqrt(192.0)).epsilon(1e-7));
    }
    SUBCASE("YaRN, DeepSeek-V3 config (factor 40, original 4096, rope dim 64)") {
        const auto cfg = yarn_config(64, 163840, 40.0, 4096);
        const auto f = dsi::rope_frequencies(cfg);
        int64_t low = -1, high = -1;
        const auto ref = yarn_inv_freq_ref(cfg, &low, &high);
        CHECK(low == 10);   // floor(10.47)
        CHECK(high == 23);  // ceil(22.5)
        const double e = max_rel(f.inv_freq, ref);
        note("rope_frequencies YaRN (relative)", e);
        CHECK(e <= tol);
        CHECK(f.attention_factor == 1.0f);
        const double m = 0.1 * std::log(40.0) + 1.0;
        CHECK(double(dsi::mla_softmax_scale(cfg)) == doctest::Approx(m * m / std::sqrt(192.0)).epsilon(1e-7));
    }
}

// ====================================================================================
namespace {

struct MlaCase {
    DType dt;
    int64_t heads, nope, rope, v, rank, T, first_pos;
    int64_t select_stride;  // 0 = dense causal (select NULL)
    bool shuffle;
    float scale;
    uint32_t seed;
};

struct MlaOut {
    std::vector<float> q_latent, latent_out, out;
};

// mla_absorb_q + sparse_mla + mla_apply_v vs the NON-absorbed MLA:
//   k[s,h] = (W_UK[h] latent[s] | k_rope[s]),  v[s,h] = W_UV[h] latent[s]
//   out[t,h] = sum_s softmax_s(scale q[t,h].k[s,h]) v[s,h]    over the selection.
MlaOut run_mla(Backend &be, const MlaCase &c, bool check) {
    Rng g(c.seed);
    const int64_t H = c.heads, nope = c.nope, rd = c.rope, vd = c.v, rank = c.rank, T = c.T;
    const int64_t per_head = nope + vd;
    auto kvb = make_matrix(be, c.dt, H * per_head, rank, g, 0.3f);
    const int64_t n_ctx = c.first_pos + T, qhd = nope + rd, q_stride = H * qhd + 3;
    const auto q = rand_vec(g, static_cast<size_t>(T * q_stride), -1.f, 1.f);
    const auto latent = rand_vec(g, static_cast<size_t>(n_ctx * rank), -1.f, 1.f);
    const auto k_rope = rand_vec(g, static_cast<size_t>(n_ctx * rd), -1.f, 1.f);
    std::vector<float> q_rope(static_cast<size_t>(T * H * rd));
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < rd; ++i) q_rope[(t * H + h) * rd + i] = q[t * q_stride + h * qhd + nope + i];

    // Selection: own position plus a random causal subset; counts vary per row (row 0
    // only itself, row 1 as many as fit); entries past the count are -1 (never read).
    std::vector<int32_t> sel;
    std::vector<std::vector<int64_t>> rows_sel(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
        const int64_t pos = c.first_pos + t;
        auto &rs = rows_sel[static_cast<size_t>(t)];
        if (!c.select_stride) {
            for (int64_t s = 0; s <= pos; ++s) rs.push_back(s);
            continue;
        }
        const int64_t maxc = std::min(c.select_stride, pos + 1);
        const int64_t count = t == 0 ? 1 : t == 1 ? maxc : rand_int(g, 1, maxc);
        std::vector<int64_t> others(static_cast<size_t>(pos));
        std::iota(others.begin(), others.end(), 0);
        std::shuffle(others.begin(), others.end(), g);
        rs.assign(others.begin(), others.begin() + (count - 1));
        rs.push_back(pos);
        if (c.shuffle)
            std::shuffle(rs.begin(), rs.end(), g);
        else
            std::sort(rs.begin(), rs.end());
    }
    if (c.select_stride) {
        sel.assign(static_cast<size_t>(T * c.select_stride), -1);
        for (int64_t t = 0; t < T; ++t) {
            const auto &rs = rows_sel[static_cast<size_t>(t)];
            for (size_t j = 0; j < rs.size(); ++j) sel[t * c.select_stride + j] = static_cast<int32_t>(rs[j]);
        }
    }

    // The cache in pages; selections become physical slots, -1 past each row's count.
    const PagedSeq ps = make_paged(be, g, n_ctx, rank, rd, 0, latent, k_rope, {}, c.first_pos, T);
    for (int32_t &e : sel)
        if (e >= 0) e = ps.slot(e);
    Buffer qb = upload(be, q), qrb = upload(be, q_rope);
    Buffer selb = upload_i32(be, sel.empty() ? std::vector<int32_t>{0} : sel);
    Buffer qlb = be.alloc(static_cast<size_t>(T * H * rank) * 4);
    Buffer lob = be.alloc(static_cast<size_t>(T * H * rank) * 4);
    Buffer ob = be.alloc(static_cast<size_t>(T * H * vd) * 4);

    HeadView qn;
    qn.x = qb.f32();
    qn.rows = T;
    qn.row_stride = q_stride;
    qn.heads = H;
    qn.head_stride = qhd;
    qn.offset = 0;
    be.mla_absorb_q(qn, *kvb->m, nope, vd, qlb.f32());
    dsi::SparseMlaParams p;
    p.q_latent = qlb.f32();
    p.q_rope = qrb.f32();
    p.mla_pages = ps.pool->mla[0];
    p.select = c.select_stride ? selb.i32() : nullptr;
    p.select_stride = c.select_stride;
    p.seqs = ps.seqs;
    p.tokens = T;
    p.heads = H;
    p.kv_lora_rank = rank;
    p.rope_dim = rd;
    p.scale = c.scale;
    p.out = lob.f32();
    be.sparse_mla(p);
    be.mla_apply_v(lob.f32(), T, H, *kvb->m, nope, vd, ob.f32());

    MlaOut res;
    res.q_latent = download(be, qlb.f32(), static_cast<size_t>(T * H * rank));
    res.latent_out = download(be, lob.f32(), static_cast<size_t>(T * H * rank));
    res.out = download(be, ob.f32(), static_cast<size_t>(T * H * vd));
    if (!check) return res;

    std::vector<double> ql_ref(res.q_latent.size()), lo_ref(res.latent_out.size()), out_ref(res.out.size());
    double min_pmax = 1.0, max_pmax = 0.0;
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
            const float *qh = &q[static_cast<size_t>(t * q_stride + h * qhd)];
            for (int64_t r = 0; r < rank; ++r) {
                double s = 0;
                for (int64_t j = 0; j < nope; ++j) s += double(qh[j]) * kvb->at(h * per_head + j, r);
                ql_ref[(t * H + h) * rank + r] = s;
            }
            const auto &rs = rows_sel[static_cast<size_t>(t)];
            std::vector<double> score(rs.size());
            std::vector<std::vector<double>> vals(rs.size());
            for (size_t j = 0; j < rs.size(); ++j) {
                const double *lat_d = nullptr;
                std::vector<double> lat(latent.begin() + rs[j] * rank, latent.begin() + (rs[j] + 1) * rank);
                lat_d = lat.data();
                double dotp = 0;
                for (int64_t i = 0; i < nope; ++i) {  // k_nope = W_UK[h] latent[s]
                    double k = 0;
                    for (int64_t r = 0; r < rank; ++r) k += kvb->at(h * per_head + i, r) * lat_d[r];
                    dotp += double(qh[i]) * k;
                }
                for (int64_t i = 0; i < rd; ++i) dotp += double(qh[nope + i]) * k_rope[rs[j] * rd + i];
                score[j] = double(c.scale) * dotp;
                vals[j].resize(static_cast<size_t>(vd));  // v = W_UV[h] latent[s]
                for (int64_t i = 0; i < vd; ++i) {
                    double v = 0;
                    for (int64_t r = 0; r < rank; ++r) v += kvb->at(h * per_head + nope + i, r) * lat_d[r];
                    vals[j][i] = v;
                }
            }
            const double mx = *std::max_element(score.begin(), score.end());
            double sum = 0;
            for (double &s : score) sum += (s = std::exp(s - mx));
            double pmax = 0;
            for (size_t j = 0; j < rs.size(); ++j) {
                const double pj = score[j] / sum;
                pmax = std::max(pmax, pj);
                for (int64_t i = 0; i < vd; ++i) out_ref[(t * H + h) * vd + i] += pj * vals[j][i];
                for (int64_t r = 0; r < rank; ++r) lo_ref[(t * H + h) * rank + r] += pj * latent[rs[j] * rank + r];
            }
            if (rs.size() > 2) min_pmax = std::min(min_pmax, pmax), max_pmax = std::max(max_pmax, pmax);
        }
    INFO("softmax max-probability range over rows with > 2 keys: " << min_pmax << " .. " << max_pmax);
    // A float32 reduction of length n has error ~ sqrt(n) u |terms|; the chain
    // (absorb over nope, scores over rank+rope, exp, weighted sum, apply_v over rank)
    // amplifies a score error d into a relative output error ~ d, with |score| <~ 10.
    // Measured ~1e-6; 1e-4 of max(1, max|ref|) leaves a wide margin, yet any wrong
    // index, head, stride or missing position gives errors of order 1e-2 .. 1.
    check_close("mla_absorb_q", res.q_latent.data(), ql_ref, 1e-5);
    check_close("sparse_mla (latent out)", res.latent_out.data(), lo_ref, 1e-4);
    check_close("absorbed MLA vs non-absorbed (after mla_apply_v)", res.out.data(), out_ref, 1e-4);
    return res;
}

}  // namespace

TEST_CASE("MLA: absorb_q + sparse_mla + apply_v equals non-absorbed attention") {
    auto be = dsi::make_cpu_backend(2);
    const MlaCase cases[] = {
        // dt, heads, nope, rope, v, rank, T, first_pos, stride, shuffle, scale, seed
        {DType::BF16, 3, 16, 8, 12, 72, 6, 9, 8, false, 0.8f, 5000},
        // kv_b [4*44=176, 136]: partial FP8 blocks in both dims, head rows cross a block edge
        {DType::F8_E4M3, 4, 24, 8, 20, 136, 5, 30, 12, true, 0.5f, 5001},
        {DType::F32, 2, 16, 8, 16, 64, 4, 5, 0, false, 0.8f, 5002},       // dense causal, first_pos > 0
        {DType::F8_E4M3, 4, 24, 8, 20, 136, 7, 0, 0, false, 0.5f, 5003},  // dense from position 0
        {DType::BF16, 5, 32, 16, 32, 128, 3, 40, 0, false, 0.3f, 5004},
        {DType::F32, 1, 8, 4, 6, 17, 4, 2, 3, false, 1.0f, 5005},         // 1 head, odd rank
    };
    for (const MlaCase &c : cases) {
        CAPTURE(c.seed);
        CAPTURE(dt_name(c.dt));
        run_mla(*be, c, true);
    }
}

// ====================================================================================
namespace {

struct IdxCase {
    int64_t T, first_pos, heads, dim, topk;
    uint32_t seed;
};

struct IdxOut {
    std::vector<int32_t> select, count;
};

// Keys go into a paged pool (shuffled pages); the count of a row is its entries before
// the first -1, and the physical slots written alongside must match the page table.
IdxOut run_indexer(Backend &be, const IdxCase &c, const std::vector<float> &q, const std::vector<float> &w,
                   const std::vector<float> &keys, float weight_scale, float scale) {
    Rng g(c.seed + 17);
    const PagedSeq ps = make_paged(be, g, c.first_pos + c.T, 4, 2, c.dim, {}, {}, keys, c.first_pos, c.T);
    Buffer qb = upload(be, q), wb = upload(be, w);
    Buffer sb = be.alloc(static_cast<size_t>(c.T * c.topk) * 4), slb = be.alloc(static_cast<size_t>(c.T * c.topk) * 4);
    std::vector<int32_t> fill(static_cast<size_t>(c.T * c.topk), -7);
    be.from_host(fill.data(), fill.size() * 4, sb.i32());
    dsi::IndexerTopkParams p;
    p.q = qb.f32();
    p.weights = wb.f32();
    p.weight_scale = weight_scale;
    p.index_pages = ps.pool->index[0];
    p.seqs = ps.seqs;
    p.tokens = c.T;
    p.heads = c.heads;
    p.dim = c.dim;
    p.topk = c.topk;
    p.scale = scale;
    p.select = sb.i32();
    p.select_slots = slb.i32();
    be.indexer_topk(p);
    IdxOut o{download_i32(be, sb.i32(), fill.size()), std::vector<int32_t>(static_cast<size_t>(c.T), 0)};
    const auto slots = download_i32(be, slb.i32(), fill.size());
    int bad_slots = 0, bad_padding = 0;
    for (int64_t t = 0; t < c.T; ++t) {
        const int32_t *row = &o.select[static_cast<size_t>(t * c.topk)];
        int32_t &n = o.count[static_cast<size_t>(t)];
        while (n < c.topk && row[n] >= 0) ++n;
        for (int64_t j = 0; j < c.topk; ++j) {
            const size_t at = static_cast<size_t>(t * c.topk + j);
            if (j >= n) bad_padding += row[j] != -1 || slots[at] != -1;
            else bad_slots += slots[at] != ps.slot(row[j]);
        }
    }
    CHECK(bad_slots == 0);
    CHECK(bad_padding == 0);
    return o;
}

}  // namespace

TEST_CASE("indexer_topk vs naive scores and causal top-k") {
    auto be = dsi::make_cpu_backend(2);
    const IdxCase cases[] = {
        {9, 0, 4, 24, 4, 6000},     // rows 0..3 select all, later rows top-4
        {5, 20, 4, 24, 8, 6001},
        {3, 100, 8, 32, 64, 6002},  // n up to 103 vs 64 slots
        {4, 60, 3, 17, 64, 6003},   // rows 0..3 fit (61..64 <= 64), odd dim
        {6, 30, 64, 128, 16, 6004}, // V3.2 indexer head count / dim
    };
    int near_ties = 0, rows_checked = 0, rows_with_zero_ties = 0;
    for (const IdxCase &c : cases) {
        CAPTURE(c.seed);
        Rng g(c.seed);
        const int64_t n_ctx = c.first_pos + c.T;
        const auto q = rand_vec(g, static_cast<size_t>(c.T * c.heads * c.dim), -1.f, 1.f);
        const auto w = rand_vec(g, static_cast<size_t>(c.T * c.heads), -1.f, 1.f);  // signed, as weights_proj
        const auto keys = rand_vec(g, static_cast<size_t>(n_ctx * c.dim), -1.f, 1.f);
        const float ws = static_cast<float>(1.0 / std::sqrt(double(c.heads)));
        const float scale = static_cast<float>(1.0 / std::sqrt(double(c.dim)));
        const IdxOut o = run_indexer(*be, c, q, w, keys, ws, scale);
        for (int64_t t = 0; t < c.T; ++t) {
            CAPTURE(t);
            const int64_t n = c.first_pos + t + 1;
            const int32_t *sel = &o.select[static_cast<size_t>(t * c.topk)];
            if (n <= c.topk) {
                REQUIRE(o.count[t] == n);
                bool all = true;
                for (int64_t j = 0; j < n; ++j) all &= sel[j] == j;
                CHECK(all);
                continue;
            }
            REQUIRE(o.count[t] == c.topk);
            // I[t,s] = sum_h w[t,h] ws ReLU(scale q[t,h].k[s]) in double
            std::vector<double> score(static_cast<size_t>(n), 0.0);
            double mag = 0;
            for (int64_t s = 0; s < n; ++s) {
                double a = 0;
                for (int64_t h = 0; h < c.heads; ++h) {
                    double d = 0;
                    for (int64_t i = 0; i < c.dim; ++i)
                        d += double(q[(t * c.heads + h) * c.dim + i]) * keys[s * c.dim + i];
                    d *= scale;
                    const double wh = double(w[t * c.heads + h]) * ws;
                    score[s] += wh * std::max(d, 0.0);
                    a += std::fabs(wh * d);
                }
                mag = std::max(mag, a);
            }
            std::vector<int64_t> order(static_cast<size_t>(n));
            std::iota(order.begin(), order.end(), 0);
            std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return score[a] > score[b]; });
            std::vector<int32_t> want(order.begin(), order.begin() + c.topk);
            std::sort(want.begin(), want.end());
            const std::vector<int32_t> got(sel, sel + c.topk);
            bool ascending = true;
            for (int64_t j = 0; j < c.topk; ++j) {
                ascending &= sel[j] >= 0 && sel[j] < n;
                if (j) ascending &= sel[j] > sel[j - 1];
            }
            CHECK(ascending);
            ++rows_checked;
            const double kth = score[order[c.topk - 1]], next = score[order[c.topk]];
            if (kth == next) ++rows_with_zero_ties;
            // float32 scores differ from these by ~1e-6 of the summed magnitudes; a k-th vs
            // (k+1)-th gap that small (but non-zero) may legitimately swap. Exact ties (the
            // ReLU zeros) must still go to the lower index.
            const double tol = 1e-5 * mag;
            if (kth != next && kth - next <= tol) {
                ++near_ties;
                for (int32_t s : got) CHECK(score[s] >= kth - tol);
                continue;
            }
            CHECK(got == want);
        }
    }
    INFO("near ties " << near_ties << ", exact ties at the k-th slot " << rows_with_zero_ties);
    CHECK(near_ties <= 1);
    CHECK(rows_checked >= 15);
}

TEST_CASE("indexer_topk: planted exact-zero ties go to the lower indices") {
    auto be = dsi::make_cpu_backend(2);
    // n = 20, 21 positions, 4 slots. q > 0 componentwise; keys 5 and 12 > 0 (positive
    // dots), all others < 0 (every head's dot is negative -> ReLU gives exactly 0).
    const IdxCase c{2, 19, 3, 16, 4, 6100};
    Rng g(c.seed);
    const int64_t n_ctx = c.first_pos + c.T;
    const auto q = rand_vec(g, static_cast<size_t>(c.T * c.heads * c.dim), 0.1f, 1.f);
    std::vector<float> keys(static_cast<size_t>(n_ctx * c.dim));
    for (int64_t s = 0; s < n_ctx; ++s)
        for (int64_t i = 0; i < c.dim; ++i) {
            const float m = std::uniform_real_distribution<float>(0.1f, 1.f)(g);
            keys[s * c.dim + i] = (s == 5 || s == 12) ? m : -m;
        }
    SUBCASE("positive weights: the two positive keys, then the lowest zero-score indices") {
        const auto w = rand_vec(g, static_cast<size_t>(c.T * c.heads), 0.2f, 1.f);
        const IdxOut o = run_indexer(*be, c, q, w, keys, 0.5f, 0.25f);
        for (int64_t t = 0; t < c.T; ++t) {
            CHECK(o.count[t] == 4);
            CHECK(std::vector<int32_t>(o.select.begin() + t * 4, o.select.begin() + t * 4 + 4) ==
                  std::vector<int32_t>{0, 1, 5, 12});
        }
    }
    SUBCASE("negative weights: positive-dot keys score < 0 and lose to the zeros") {
        const auto w = rand_vec(g, static_cast<size_t>(c.T * c.heads), -1.f, -0.2f);
        const IdxOut o = run_indexer(*be, c, q, w, keys, 0.5f, 0.25f);
        for (int64_t t = 0; t < c.T; ++t) {
            CHECK(o.count[t] == 4);
            CHECK(std::vector<int32_t>(o.select.begin() + t * 4, o.select.begin() + t * 4 + 4) ==
                  std::vector<int32_t>{0, 1, 2, 3});
        }
    }
}

// ====================================================================================
TEST_CASE("moe_route vs naive group-limited sigmoid routing") {
    auto be = dsi::make_cpu_backend(2);
    struct Case {
        int64_t E, G, TG, K, T, hidden;
        bool norm;
        float rsf;
        DType gate_dt;
        uint32_t seed;
    };
    const Case cases[] = {
        {16, 4, 2, 4, 40, 40, true, 2.5f, DType::F32, 7000},
        {16, 4, 2, 4, 20, 33, false, 2.5f, DType::BF16, 7001},
        {8, 1, 1, 2, 20, 33, true, 1.0f, DType::BF16, 7002},
        {256, 8, 4, 8, 6, 64, true, 2.5f, DType::F32, 7003},  // DeepSeek-V3 routing shape
    };
    for (const Case &c : cases) {
        CAPTURE(c.seed);
        Rng g(c.seed);
        auto gate = make_matrix(*be, c.gate_dt, c.E, c.hidden, g, 0.3f);
        const auto x = rand_vec(g, static_cast<size_t>(c.T * c.hidden), -1.f, 1.f);
        const auto bias = rand_vec(g, static_cast<size_t>(c.E), -0.3f, 0.3f);
        Buffer xb = upload(*be, x), bb = upload(*be, bias);
        Buffer ib = be->alloc(static_cast<size_t>(c.T * c.K) * 4), wb = be->alloc(static_cast<size_t>(c.T * c.K) * 4);
        dsi::MoeRouteParams p;
        p.x = xb.f32();
        p.gate = gate->m.get();
        p.bias = bb.f32();
        p.tokens = c.T;
        p.n_experts = c.E;
        p.n_group = c.G;
        p.topk_group = c.TG;
        p.top_k = c.K;
        p.norm_topk_prob = c.norm;
        p.routed_scaling_factor = c.rsf;
        p.expert_ids = ib.i32();
        p.expert_weights = wb.f32();
        be->moe_route(p);
        const auto ids = download_i32(*be, ib.i32(), static_cast<size_t>(c.T * c.K));
        const auto wts = download(*be, wb.f32(), static_cast<size_t>(c.T * c.K));

        int skipped = 0, bias_mattered = 0, groups_mattered = 0;
        double worst_w = 0;
        const int64_t per = c.E / c.G;
        for (int64_t t = 0; t < c.T; ++t) {
            CAPTURE(t);
            std::vector<double> score(static_cast<size_t>(c.E)), choice(score.size());
            for (int64_t e = 0; e < c.E; ++e) {
                double l = 0;
                for (int64_t i = 0; i < c.hidden; ++i) l += double(x[t * c.hidden + i]) * gate->at(e, i);
                score[e] = sigmoid(l);
                choice[e] = score[e] + bias[e];  // bias only for choosing
            }
            // group score = sum of the group's two best biased scores
            std::vector<double> gs(static_cast<size_t>(c.G));
            for (int64_t gi = 0; gi < c.G; ++gi) {
                std::vector<double> v(choice.begin() + gi * per, choice.begin() + (gi + 1) * per);
                std::sort(v.rbegin(), v.rend());
                gs[gi] = v[0] + (per > 1 ? v[1] : 0.0);
            }
            auto top = [](const std::vector<double> &val, const std::vector<int64_t> &cand, int64_t k, bool *near) {
                std::vector<int64_t> o = cand;
                std::stable_sort(o.begin(), o.end(), [&](int64_t a, int64_t b) { return val[a] > val[b]; });
                // float32 logits/sigmoids are ~1e-6 off; a gap below 1e-5 may swap.
                if (static_cast<int64_t>(o.size()) > k && val[o[k - 1]] - val[o[k]] < 1e-5) *near = true;
                o.resize(static_cast<size_t>(k));
                return o;
            };
            bool near = false;
            std::vector<int64_t> all_g(static_cast<size_t>(c.G)), cand, all_e(static_cast<size_t>(c.E));
            std::iota(all_g.begin(), all_g.end(), 0);
            std::iota(all_e.begin(), all_e.end(), 0);
            for (int64_t gi : top(gs, all_g, c.TG, &near))
                for (int64_t e = gi * per; e < (gi + 1) * per; ++e) cand.push_back(e);
            std::sort(cand.begin(), cand.end());
            const auto chosen = top(choice, cand, c.K, &near);
            bool dummy = false;
            if (std::set<int64_t>(chosen.begin(), chosen.end()) !=
                [&] { auto v = top(score, cand, c.K, &dummy); return std::set<int64_t>(v.begin(), v.end()); }())
                ++bias_mattered;
            if (std::set<int64_t>(chosen.begin(), chosen.end()) !=
                [&] { auto v = top(choice, all_e, c.K, &dummy); return std::set<int64_t>(v.begin(), v.end()); }())
                ++groups_mattered;
            if (near) {
                ++skipped;
                continue;
            }
            double sum = 0;
            for (int64_t e : chosen) sum += score[e];
            std::map<int64_t, double> want;
            for (int64_t e : chosen) want[e] = score[e] * (c.norm ? 1.0 / sum : 1.0) * c.rsf;
            std::map<int64_t, double> got;
            for (int64_t j = 0; j < c.K; ++j) got[ids[t * c.K + j]] = wts[t * c.K + j];
            REQUIRE(got.size() == want.size());  // ids unique
            bool same_ids = true;
            for (auto &kv : want) same_ids &= got.count(kv.first) == 1;
            CHECK(same_ids);
            if (!same_ids) continue;
            for (auto &kv : want) worst_w = std::max(worst_w, std::fabs(got[kv.first] - kv.second) / c.rsf);
        }
        note("moe_route weights (abs / routed_scaling_factor)", worst_w);
        // sigmoid of a float32 logit (~1e-6 abs), normalised in double, times rsf.
        CHECK(worst_w <= 1e-5);
        INFO("tokens " << c.T << ", near-tie tokens skipped " << skipped << ", bias changed the choice in "
                       << bias_mattered << ", group limit in " << groups_mattered);
        CHECK(skipped <= 1);
        CHECK(bias_mattered > 0);
        if (c.G > 1) CHECK(groups_mattered > 0);
    }
}

// ====================================================================================
namespace {
struct HostMlp {
    std::unique_ptr<HostMatrix> gate, up, down;
    dsi::MlpWeights w() const { return {gate->m.get(), up->m.get(), down->m.get()}; }
    std::vector<double> apply(const float *x) const {  // down(silu(gate x) * up x)
        std::vector<double> xd(x, x + gate->cols);
        auto gt = matvec(*gate, xd.data()), u = matvec(*up, xd.data());
        for (size_t i = 0; i < gt.size(); ++i) gt[i] = silu(gt[i]) * u[i];
        return matvec(*down, gt.data());
    }
};
HostMlp make_mlp(Backend &be, DType dt, int64_t hidden, int64_t inter, Rng &g) {
    HostMlp m;
    m.gate = make_matrix(be, dt, inter, hidden, g, 0.3f);
    m.up = make_matrix(be, dt, inter, hidden, g, 0.3f);
    m.down = make_matrix(be, dt, hidden, inter, g, 0.3f);
    return m;
}
}  // namespace

TEST_CASE("mlp and moe_experts vs naive SwiGLU") {
    auto be = dsi::make_cpu_backend(2);
    // Two chained float32 matmuls (+ silu in float32): ~sqrt(n) u relative each.
    const double tol = 1e-5;
    SUBCASE("mlp") {
        uint32_t seed = 8000;
        for (DType dt : {DType::F32, DType::BF16, DType::F8_E4M3})
            for (auto [hidden, inter, tokens] : {std::tuple<int64_t, int64_t, int64_t>{160, 136, 1}, {160, 136, 5}, {7, 3, 2}}) {
                CAPTURE(dt_name(dt));
                CAPTURE(hidden);
                CAPTURE(tokens);
                Rng g(seed++);
                const HostMlp m = make_mlp(*be, dt, hidden, inter, g);  // FP8: partial blocks both ways
                const auto x = rand_vec(g, static_cast<size_t>(tokens * hidden), -1.f, 1.f);
                std::vector<double> ref;
                for (int64_t t = 0; t < tokens; ++t) {
                    const auto r = m.apply(&x[static_cast<size_t>(t * hidden)]);
                    ref.insert(ref.end(), r.begin(), r.end());
                }
                Buffer xb = upload(*be, x), yb = be->alloc(ref.size() * 4);
                be->mlp(xb.f32(), tokens, m.w(), yb.f32());
                check_close(std::string("mlp ") + dt_name(dt), download(*be, yb.f32(), ref.size()).data(), ref, tol);
            }
    }
    SUBCASE("moe_experts") {
        Rng g(8100);
        const int64_t hidden = 40, inter = 24, n_exp = 6, T = 7, K = 3;
        std::vector<HostMlp> ex;
        std::vector<dsi::MlpWeights> ew;
        const DType dts[] = {DType::F32, DType::BF16, DType::F8_E4M3};
        for (int64_t e = 0; e < n_exp; ++e) ex.push_back(make_mlp(*be, dts[e % 3], hidden, inter, g));
        for (const auto &m : ex) ew.push_back(m.w());
        const auto x = rand_vec(g, static_cast<size_t>(T * hidden), -1.f, 1.f);
        // Distinct experts per token drawn from 0..4: expert 5 gets no token.
        std::vector<int32_t> ids;
        for (int64_t t = 0; t < T; ++t) {
            std::vector<int32_t> all = {0, 1, 2, 3, 4};
            std::shuffle(all.begin(), all.end(), g);
            ids.insert(ids.end(), all.begin(), all.begin() + K);
        }
        const auto wts = rand_vec(g, static_cast<size_t>(T * K), 0.1f, 1.f);
        std::vector<double> ref(static_cast<size_t>(T * hidden), 0.0);
        for (int64_t t = 0; t < T; ++t)
            for (int64_t j = 0; j < K; ++j) {
                const auto y = ex[static_cast<size_t>(ids[t * K + j])].apply(&x[static_cast<size_t>(t * hidden)]);
                for (int64_t i = 0; i < hidden; ++i) ref[t * hidden + i] += double(wts[t * K + j]) * y[i];
            }
        Buffer xb = upload(*be, x), ib = upload_i32(*be, ids), wb = upload(*be, wts);
        Buffer yb = upload(*be, std::vector<float>(ref.size(), 123.0f));  // must be overwritten
        be->moe_experts(xb.f32(), T, hidden, ib.i32(), wb.f32(), K, ew.data(), n_exp, yb.f32());
        check_close("moe_experts", download(*be, yb.f32(), ref.size()).data(), ref, tol);
    }
}

// ====================================================================================
TEST_CASE("threads: 1 and 3 compute threads give bit-identical results") {
    // Sizes above the backend's single-thread cut-off (2^16 multiply-adds per op) so
    // that linear, absorb, sparse_mla, apply_v and indexer_topk really run in parallel;
    // the 3-thread run is also checked against the naive reference.
    auto be = dsi::make_cpu_backend(2);
    auto run_all = [&](int threads) {
        dsi::set_thread_compute_threads(threads);
        const bool check = threads == 3;
        std::vector<std::vector<float>> outs;
        Rng g(9000);
        auto W = make_matrix(*be, DType::F8_E4M3, 200, 300, g, 1.0f);
        const auto x = rand_vec(g, 6 * 300, -1.f, 1.f);
        Buffer xb = upload(*be, x), yb = be->alloc(6 * 200 * 4);
        be->linear(xb.f32(), 6, *W->m, yb.f32());
        outs.push_back(download(*be, yb.f32(), 6 * 200));
        // kv_b [8*64=512, 200] FP8 (partial column block), 32 of 61..68 positions;
        // then dense causal from position 40.
        for (const MlaCase &c : {MlaCase{DType::F8_E4M3, 8, 32, 16, 32, 200, 8, 60, 32, true, 0.3f, 9001},
                                 MlaCase{DType::BF16, 5, 32, 16, 32, 128, 6, 40, 0, false, 0.3f, 9002}}) {
            MlaOut o = run_mla(*be, c, check);
            outs.push_back(o.q_latent);
            outs.push_back(o.latent_out);
            outs.push_back(o.out);
        }
        const IdxCase ic{8, 60, 8, 64, 16, 9003};
        Rng gi(ic.seed);
        const auto q = rand_vec(gi, static_cast<size_t>(ic.T * ic.heads * ic.dim), -1.f, 1.f);
        const auto w = rand_vec(gi, static_cast<size_t>(ic.T * ic.heads), -1.f, 1.f);
        const auto keys = rand_vec(gi, static_cast<size_t>((ic.first_pos + ic.T) * ic.dim), -1.f, 1.f);
        const IdxOut io = run_indexer(*be, ic, q, w, keys, 0.35f, 0.125f);
        outs.emplace_back(io.select.begin(), io.select.end());
        outs.emplace_back(io.count.begin(), io.count.end());
        dsi::set_thread_compute_threads(0);
        return outs;
    };
    const auto a = run_all(1), b = run_all(3);
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        CAPTURE(i);
        REQUIRE(a[i].size() == b[i].size());
        CHECK(std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) == 0);
    }
}
