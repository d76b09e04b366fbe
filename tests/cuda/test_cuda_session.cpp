// labels: gpu
// The CUDA backend as a session uses it:
//  - device selection: a session opened on the last visible GPU (gpu_device) and driven
//    from a thread that never chose a device reproduces the golden greedy ids, its memory
//    lands on that GPU, and neither thread's current device is changed;
//  - one decode step (forward_device: every op after the batch upload, up to the logits)
//    is captured into a CUDA graph: the capture (cudaStreamCaptureModeGlobal) fails on
//    any host synchronisation inside the step, so a clean capture proves there is none;
//    the graph's nodes count the step's launches, and replaying it reproduces the
//    logits of the uncaptured step. DSI_BENCH_CKPT (scripts/make_bench_checkpoint.py:
//    1 dense + 1 MoE layer at the released dims) adds a count at the real dims.
#include "reference_check.h"

#include "model/model.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <random>
#include <thread>

namespace {

const std::string kGolden = std::string(DSI_TEST_DATA_DIR) + "/golden";

#define CUDA_OK(expr) REQUIRE_EQ(cudaSuccess, (expr))

size_t free_bytes(int device) {
    size_t free_b = 0, total_b = 0;
    CUDA_OK(cudaSetDevice(device));
    CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
    return free_b;
}

}  // namespace

TEST_CASE("a session on the last visible GPU, driven from another thread, reproduces the golden greedy ids") {
    int n = 0;
    CUDA_OK(cudaGetDeviceCount(&n));
    REQUIRE(n > 0);
    const int dev = n - 1;
    MESSAGE("[test_cuda_session] " << n << " GPU(s) visible; the session uses device " << dev);
    std::vector<size_t> free_before(static_cast<size_t>(n));
    for (int d = 0; d < n; ++d) free_before[static_cast<size_t>(d)] = free_bytes(d);
    CUDA_OK(cudaSetDevice(0));

    const refcheck::Reference ref(kGolden + "/tiny-golden.safetensors", "case0.");
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CUDA;
    p.gpu_device = dev;
    p.gpu_precision = DSI_GPU_PRECISION_F32;
    p.cache_budget = size_t(256) << 20;
    dsi_session *s = nullptr;
    REQUIRE_MESSAGE(dsi_session_open((kGolden + "/tiny-bf16").c_str(), &p, &s) == DSI_OK, dsi_last_error());
    int current = -1;
    CUDA_OK(cudaGetDevice(&current));
    CHECK_EQ(current, 0);  // the opener's device is left as it was
    const std::string name = s->model->backend->name();
    CHECK_MESSAGE(name.rfind("cuda:" + std::to_string(dev) + " ", 0) == 0, name);

    const auto ids = ref.tensor<int32_t>("input_ids");
    const auto want = ref.tensor<int32_t>("greedy_ids");
    std::vector<int32_t> got;
    int worker_device = -1;
    std::string error;
    // A thread that never called cudaSetDevice (its current device is 0).
    std::thread worker([&] {
        dsi_context_params cp = dsi_context_default_params();
        cp.n_ctx = 256;
        dsi_context *c = nullptr;
        if (dsi_context_create(s, &cp, &c) != DSI_OK) {
            error = dsi_last_error();
            return;
        }
        const int32_t V = dsi_session_n_vocab(s);
        dsi_status st = dsi_context_eval(c, ids.data(), ids.size(), DSI_EVAL_LOGITS_LAST);
        for (size_t step = 0; st == DSI_OK && step < want.size(); ++step) {
            const float *logits = dsi_context_logits(c, -1);
            const int32_t next = static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
            got.push_back(next);
            st = dsi_context_eval(c, &next, 1, DSI_EVAL_LOGITS_LAST);
        }
        if (st != DSI_OK) error = dsi_last_error();
        cudaGetDevice(&worker_device);
        dsi_context_free(c);
    });
    worker.join();
    REQUIRE_MESSAGE(error.empty(), error);
    CHECK_EQ(worker_device, 0);
    CHECK(got == want);
    const std::string verdict = got == want ? "match" : "DIFFER";
    MESSAGE("[test_cuda_session] device " << dev << ": greedy ids " << verdict << " (" << got.size()
                                          << " steps, from a second thread)");
    // The 256 MB page pool is on `dev`; another GPU gained nothing of the session's.
    const size_t dev_used = free_before[static_cast<size_t>(dev)] - std::min(free_before[static_cast<size_t>(dev)], free_bytes(dev));
    CHECK(dev_used >= (size_t(200) << 20));
    for (int d = 0; d < n; ++d) {
        if (d == dev) continue;
        const size_t used = free_before[static_cast<size_t>(d)] - std::min(free_before[static_cast<size_t>(d)], free_bytes(d));
        MESSAGE("[test_cuda_session] device " << d << " lost " << (used >> 20) << " MiB while the session ran");
        CHECK(used < (size_t(64) << 20));
    }
    CUDA_OK(cudaSetDevice(0));
    dsi_session_free(s);
}

namespace {

struct GraphCount {
    size_t kernels = 0, memcpys = 0, memsets = 0, allocs = 0, frees = 0, other = 0;
};

// Prefills n_seqs random sequences of `ctx` tokens, runs one decode step (a row per
// sequence) normally, then captures the same step and replays it.
void decode_step_graph(const std::string &dir, dsi_gpu_precision precision, int64_t n_seqs, int64_t ctx) {
    CAPTURE(dir); CAPTURE(precision); CAPTURE(n_seqs); CAPTURE(ctx);
    dsi_session_params sp = dsi_session_default_params();
    sp.backend = DSI_BACKEND_CUDA;
    sp.gpu_precision = precision;
    sp.cache_budget = size_t(64) << 20;  // the test makes its own pool below
    dsi_session *s = nullptr;
    REQUIRE_MESSAGE(dsi_session_open(dir.c_str(), &sp, &s) == DSI_OK, dsi_last_error());
    const dsi::Model &m = *s->model;
    dsi::Backend &be = *m.backend;
    const int64_t pages_per_seq = (ctx + 1 + dsi::kPageTokens - 1) / dsi::kPageTokens;
    auto pool = be.alloc_cache_pool(dsi::cache_dims(m.cfg), n_seqs * pages_per_seq);
    std::vector<int32_t> page_table(static_cast<size_t>(n_seqs * pages_per_seq));
    for (size_t i = 0; i < page_table.size(); ++i) page_table[i] = static_cast<int32_t>(i);
    std::mt19937 rng(7);
    std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(m.cfg.vocab_size - 1));

    auto batch = [&](int64_t first, int64_t count, std::vector<int32_t> &ids, std::vector<int32_t> &pos,
                     std::vector<int32_t> &seq, std::vector<int32_t> &slots) {
        for (int64_t q = 0; q < n_seqs; ++q)
            for (int64_t i = first; i < first + count; ++i) {
                ids.push_back(token(rng));
                pos.push_back(static_cast<int32_t>(i));
                seq.push_back(static_cast<int32_t>(q));
                slots.push_back(static_cast<int32_t>(page_table[q * pages_per_seq + i / dsi::kPageTokens] * dsi::kPageTokens +
                                                     i % dsi::kPageTokens));
            }
        dsi::ForwardBatch b;
        b.ids = ids.data(); b.row_pos = pos.data(); b.row_seq = seq.data(); b.slots = slots.data();
        b.rows = static_cast<int64_t>(ids.size());
        b.page_table = page_table.data(); b.n_seqs = n_seqs; b.page_table_stride = pages_per_seq;
        return b;
    };
    {
        std::vector<int32_t> ids, pos, seq, slots;
        dsi::ForwardBatch b = batch(0, ctx, ids, pos, seq, slots);
        dsi::forward(m, *pool, b);
    }
    std::vector<int32_t> ids, pos, seq, slots, logit_rows(static_cast<size_t>(n_seqs));
    dsi::ForwardBatch b = batch(ctx, 1, ids, pos, seq, slots);
    for (int64_t q = 0; q < n_seqs; ++q) logit_rows[static_cast<size_t>(q)] = static_cast<int32_t>(q);
    const int64_t V = m.cfg.vocab_size;
    std::vector<float> want(static_cast<size_t>(n_seqs * V)), got(want.size());
    b.logit_rows = logit_rows.data(); b.n_logits = n_seqs; b.logits = want.data();
    dsi::forward(m, *pool, b);  // the uncaptured step (also warms plans and tables)

    const dsi::BatchArrays arrays(be, b);
    dsi::Buffer logits = be.alloc(want.size() * sizeof(float));
    CUDA_OK(cudaStreamSynchronize(cudaStreamPerThread));
    cudaGraph_t graph = nullptr;
    CUDA_OK(cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeGlobal));
    std::string error;
    try {
        dsi::forward_device(m, *pool, b, arrays, logits.f32());
    } catch (const std::exception &e) {
        error = e.what();
    }
    const cudaError_t end = cudaStreamEndCapture(cudaStreamPerThread, &graph);
    REQUIRE_MESSAGE(error.empty(), "inside the capture: " << error);
    REQUIRE_MESSAGE(end == cudaSuccess, "capture of the decode step failed: " << cudaGetErrorString(end));

    size_t n_nodes = 0;
    CUDA_OK(cudaGraphGetNodes(graph, nullptr, &n_nodes));
    std::vector<cudaGraphNode_t> nodes(n_nodes);
    CUDA_OK(cudaGraphGetNodes(graph, nodes.data(), &n_nodes));
    GraphCount count;
    for (cudaGraphNode_t node : nodes) {
        cudaGraphNodeType type;
        CUDA_OK(cudaGraphNodeGetType(node, &type));
        switch (type) {
        case cudaGraphNodeTypeKernel: ++count.kernels; break;
        case cudaGraphNodeTypeMemcpy: ++count.memcpys; break;
        case cudaGraphNodeTypeMemset: ++count.memsets; break;
        case cudaGraphNodeTypeMemAlloc: ++count.allocs; break;
        case cudaGraphNodeTypeMemFree: ++count.frees; break;
        default: ++count.other; break;
        }
    }
    const int64_t layers = m.cfg.num_hidden_layers;
    std::printf("[test_cuda_session] decode step %s (%s, %lld layers, %lld seqs at context %lld): %zu kernels, "
                "%zu memcpy, %zu memset, %zu alloc, %zu free, %zu other nodes; %.1f launches a layer\n",
                dir.substr(dir.find_last_of('/') + 1).c_str(), precision == DSI_GPU_PRECISION_F32 ? "f32" : "fast",
                static_cast<long long>(layers), static_cast<long long>(n_seqs), static_cast<long long>(ctx),
                count.kernels, count.memcpys, count.memsets, count.allocs, count.frees, count.other,
                static_cast<double>(count.kernels + count.memcpys + count.memsets) / static_cast<double>(layers));

    cudaGraphExec_t exec = nullptr;
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_OK(cudaGraphLaunch(exec, cudaStreamPerThread));
    CUDA_OK(cudaStreamSynchronize(cudaStreamPerThread));
    be.to_host(logits.f32(), got.size() * sizeof(float), got.data());
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(got[i] - want[i])));
    // The same kernels on the same inputs: the replay equals the step up to the order
    // of floating-point atomics (none on this path today): 1e-5 at logit rms ~1.
    CHECK_MESSAGE(worst <= 1e-5, "replayed logits differ by " << worst);
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
    pool.reset();
    dsi_session_free(s);
}

}  // namespace

TEST_CASE("the default cache budget is half of the GPU memory free after the weights are loaded") {
    // dsinfer.h promises "half of the free GPU memory on CUDA" for cache_budget 0. The
    // tiny model's weights and the backend's workspaces take well under 1 GiB, so the
    // budget lies between (free now - 1 GiB) / 2 and free now / 2.
    const size_t before = free_bytes(0);
    dsi_session_params p = dsi_session_default_params();
    p.backend = DSI_BACKEND_CUDA;
    dsi_session *s = nullptr;
    REQUIRE_MESSAGE(dsi_session_open((kGolden + "/tiny-bf16").c_str(), &p, &s) == DSI_OK, dsi_last_error());
    dsi_cache_stats st{};
    REQUIRE(dsi_session_cache_stats(s, &st) == DSI_OK);
    MESSAGE("[test_cuda_session] free before open " << (before >> 20) << " MiB, default cache budget "
            << (st.budget_bytes >> 20) << " MiB");
    CHECK(st.budget_bytes <= before / 2);
    CHECK(st.budget_bytes + (size_t(512) << 20) >= before / 2);
    dsi_session_free(s);
}

TEST_CASE("one decode step is captured into a CUDA graph: no host synchronisation; launches counted") {
    for (auto precision : {DSI_GPU_PRECISION_F32, DSI_GPU_PRECISION_FAST}) {
        decode_step_graph(kGolden + "/tiny-bf16", precision, 1, 100);
        decode_step_graph(kGolden + "/tiny-fp8", precision, 16, 100);
    }
    if (const char *bench = std::getenv("DSI_BENCH_CKPT")) {
        for (auto precision : {DSI_GPU_PRECISION_F32, DSI_GPU_PRECISION_FAST}) {
            decode_step_graph(bench, precision, 1, 4096);
            decode_step_graph(bench, precision, 16, 300);
        }
    }
}
