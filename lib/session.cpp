#include "session.h"

#include "common/error.h"
#include "backend_cuda/cuda_backend.h"
#include "common/file.h"
#include "common/log.h"
#include "common/params.h"
#include "text/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <thread>

dsi_session::~dsi_session() = default;

void dsi_session::logf(dsi_log_level level, const char *fmt, ...) const {
    if (log && level < log_level) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    dsi::log_message(log, log_user_data, log_level, level, buf);
}

namespace dsi {

void release_session(dsi_session *s) {
    if (s && s->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete s;
}

namespace {

std::unique_ptr<Backend> make_backend(const dsi_session_params &p, dsi_backend &chosen) {
    const int gpu_precision = enum_value(p.gpu_precision);
    if (gpu_precision != DSI_GPU_PRECISION_FAST && gpu_precision != DSI_GPU_PRECISION_F32)
        fail(DSI_ERR_INVALID_ARGUMENT, "dsi_session_params.gpu_precision is %d, not a dsi_gpu_precision value",
             gpu_precision);
    const GpuPrecision precision = gpu_precision == DSI_GPU_PRECISION_F32 ? GpuPrecision::F32 : GpuPrecision::Fast;
    const int kind = enum_value(p.backend);
    switch (kind) {
    case DSI_BACKEND_AUTO:
        if (cuda_backend_available(p.gpu_device, nullptr)) {
            chosen = DSI_BACKEND_CUDA;
            return make_cuda_backend(p.gpu_device, precision);
        }
        chosen = DSI_BACKEND_CPU;
        return make_cpu_backend(p.n_threads);
    case DSI_BACKEND_CPU:
        chosen = DSI_BACKEND_CPU;
        return make_cpu_backend(p.n_threads);
    case DSI_BACKEND_CUDA:
        chosen = DSI_BACKEND_CUDA;
        return make_cuda_backend(p.gpu_device, precision);
    }
    fail(DSI_ERR_INVALID_ARGUMENT, "dsi_session_params.backend is %d, not a dsi_backend value", kind);
}

std::string describe(const ModelConfig &c, const char *backend) {
    return strformat("%s: %lld layers (%lld dense), hidden %lld, %lld heads, q_lora %lld, kv_lora %lld, "
                     "%s, %lld experts (%lld/token, %lld shared), vocab %lld, weights %s, backend %s",
                     c.architecture.c_str(), (long long)c.num_hidden_layers, (long long)c.first_k_dense_replace,
                     (long long)c.hidden_size, (long long)c.num_attention_heads, (long long)c.q_lora_rank,
                     (long long)c.kv_lora_rank,
                     c.is_sparse() ? strformat("DSA indexer %lldx%lld top-%lld", (long long)c.index_n_heads,
                                               (long long)c.index_head_dim, (long long)c.index_topk)
                                         .c_str()
                                   : "dense MLA",
                     (long long)c.n_routed_experts, (long long)c.num_experts_per_tok, (long long)c.n_shared_experts,
                     (long long)c.vocab_size, c.fp8 ? "FP8 e4m3 block-scaled" : "bf16/f32", backend);
}

// generation_config.json's eos_token_id (one id or a list), when the file exists; ids outside
// the vocabulary are refused like config.json's.
std::vector<int64_t> generation_eos(const std::string &dir, int64_t vocab_size) {
    const std::string path = dir + "/generation_config.json";
    if (!is_regular_file(path)) return {};
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(read_text_file(path, "generation config"));
    } catch (const nlohmann::json::exception &e) {
        fail(DSI_ERR_FORMAT, "%s: %s", path.c_str(), e.what());
    }
    if (!j.is_object() || !j.contains("eos_token_id") || j["eos_token_id"].is_null()) return {};
    const nlohmann::json &v = j["eos_token_id"];
    std::vector<int64_t> ids;
    for (const nlohmann::json &id : v.is_array() ? v : nlohmann::json::array({v})) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab_size)
            fail(DSI_ERR_CONFIG, "%s: eos_token_id must be token ids below vocab_size %lld", path.c_str(),
                 (long long)vocab_size);
        ids.push_back(id.get<int64_t>());
    }
    return ids;
}

// The session's page pool: as many whole pages as the budget holds.
void create_cache_pool(dsi_session &s, size_t budget) {
    Backend &be = *s.model->backend;
    const CacheDims dims = cache_dims(s.model->cfg);
    s.cache_page_bytes = be.cache_page_bytes(dims);
    s.cache_budget = budget ? budget : be.default_cache_budget();
    const int64_t n_pages = static_cast<int64_t>(std::min<size_t>(s.cache_budget / s.cache_page_bytes, INT32_MAX / kPageTokens));
    if (n_pages < 1)
        fail(DSI_ERR_INVALID_ARGUMENT, "cache_budget %zu bytes is less than one cache page (%zu bytes: %lld tokens of %lld layers)",
             s.cache_budget, s.cache_page_bytes, (long long)kPageTokens, (long long)dims.layers);
    s.cache_pool = be.alloc_cache_pool(dims, n_pages);
    s.pages = std::make_unique<PageAllocator>(n_pages);
    s.logf(DSI_LOG_INFO, "cache pool: %lld pages of %zu bytes (%lld tokens each) in a budget of %zu bytes",
           (long long)n_pages, s.cache_page_bytes, (long long)kPageTokens, s.cache_budget);
}

}  // namespace

void check_n_threads(int32_t n_threads, const char *which) {
    if (n_threads < 0 || n_threads > kMaxThreads)
        fail(DSI_ERR_INVALID_ARGUMENT, "%s.n_threads is %d: it must be 0 (default) or 1 to %d", which, n_threads,
             kMaxThreads);
}

std::unique_ptr<dsi_session> open_session(const char *model_dir, const dsi_session_params &params) {
    check_n_threads(params.n_threads, "dsi_session_params");
    const int log_level = enum_value(params.log_level);
    if (log_level < DSI_LOG_DEBUG || log_level > DSI_LOG_NONE)
        fail(DSI_ERR_INVALID_ARGUMENT, "dsi_session_params.log_level is %d, not a dsi_log_level value (0 to 4)",
             log_level);
    auto s = std::make_unique<dsi_session>();
    s->log = params.log;
    s->log_user_data = params.log_user_data;
    s->log_level = static_cast<dsi_log_level>(log_level);
    s->n_threads = params.n_threads;

    const double start_ms = now_ms();
    auto progress = [&](float f) { return !params.progress || params.progress(f, params.progress_user_data) != 0; };
    if (!progress(0.0f)) fail(DSI_ERR_CANCELLED, "loading cancelled by the progress callback");
    std::unique_ptr<Backend> backend = make_backend(params, s->backend);
    if (enum_value(params.backend) == DSI_BACKEND_AUTO && s->backend == DSI_BACKEND_CPU)
        s->logf(DSI_LOG_WARN, "backend AUTO: no usable CUDA device, using the CPU");
    s->model = load_model(model_dir, std::move(backend), progress);
    s->description = describe(s->model->cfg, s->model->backend->name());
    s->identity = model_identity(read_text_file(std::string(model_dir) + "/config.json", "config"), *s->model->checkpoint);
    const ModelConfig &cfg = s->model->cfg;
    for (int64_t id : cfg.eos_token_ids) s->eog_tokens.push_back(static_cast<int32_t>(id));
    for (int64_t id : generation_eos(model_dir, cfg.vocab_size))
        if (std::find(s->eog_tokens.begin(), s->eog_tokens.end(), id) == s->eog_tokens.end())
            s->eog_tokens.push_back(static_cast<int32_t>(id));
    const int threads = params.n_threads > 0 ? params.n_threads : static_cast<int>(std::thread::hardware_concurrency());
    s->logf(DSI_LOG_INFO, "loaded %s: %s; %lld parameters, %.1f MiB of weights, %d threads", model_dir,
            s->description.c_str(), (long long)s->model->weights.n_params,
            static_cast<double>(s->model->weights.bytes) / (1024.0 * 1024.0), threads);
    if (s->eog_tokens.empty())
        s->logf(DSI_LOG_WARN, "%s names no eos_token_id: generation stops only at n_ctx or max tokens", model_dir);
    create_cache_pool(*s, params.cache_budget);

    const std::string dir_tokenizer = std::string(model_dir) + "/tokenizer.json";
    std::string tok_path = params.tokenizer_path ? params.tokenizer_path : "";
    if (tok_path.empty() && is_regular_file(dir_tokenizer)) tok_path = dir_tokenizer;
    if (!tok_path.empty()) {
        auto tok = std::make_unique<dsi_tokenizer>();
        tok->impl = Tokenizer::load_file(tok_path);
        if (tok->impl->n_vocab() > s->model->cfg.vocab_size)
            fail(DSI_ERR_CONFIG, "tokenizer %s has %d ids but the model's vocabulary has %lld", tok_path.c_str(),
                 tok->impl->n_vocab(), (long long)s->model->cfg.vocab_size);
        if (tok->impl->n_vocab() < s->model->cfg.vocab_size)
            s->logf(DSI_LOG_INFO, "tokenizer %s has %d ids, fewer than the model's %lld: the rest cannot be decoded",
                    tok_path.c_str(), tok->impl->n_vocab(), (long long)s->model->cfg.vocab_size);
        s->logf(DSI_LOG_DEBUG, "tokenizer %s: %d ids", tok_path.c_str(), tok->impl->n_vocab());
        s->tokenizer = std::move(tok);
    }
    if (!progress(1.0f)) fail(DSI_ERR_CANCELLED, "loading cancelled by the progress callback");
    s->load_ms = now_ms() - start_ms;
    return s;
}

}  // namespace dsi
