#include "metrics.h"

#include <chrono>
#include <cstdio>

namespace server {
namespace {

int64_t now_second() {
    using namespace std::chrono;
    return duration_cast<seconds>(steady_clock::now().time_since_epoch()).count();
}

void add(std::string &out, const char *name, const char *type, const char *help, double value) {
    char line[256];
    std::snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, value);
    out += line;
}

}  // namespace

void Metrics::request(int http_status) {
    requests_++;
    if (http_status < 300) {
        requests_2xx_++;
    } else if (http_status < 500) {
        requests_4xx_++;
    } else {
        requests_5xx_++;
    }
}

void Metrics::prompt(int64_t tokens, int64_t cached) {
    prompt_tokens_ += tokens;
    cached_tokens_ += cached;
}

void Metrics::generated(int64_t tokens) {
    completion_tokens_ += tokens;
    const int64_t s = now_second();
    std::lock_guard<std::mutex> lock(window_mu_);
    const size_t i = static_cast<size_t>(s % static_cast<int64_t>(window_.size()));
    if (window_second_[i] != s) {
        window_second_[i] = s;
        window_[i] = 0;
    }
    window_[i] += tokens;
}

void Metrics::batch(int64_t items) {
    batches_++;
    batch_items_ += items;
}

void Metrics::finished(bool cancelled) {
    jobs_done_++;
    if (cancelled) jobs_cancelled_++;
}

double Metrics::tokens_per_second() const {
    const int64_t s = now_second();
    int64_t total = 0;
    std::lock_guard<std::mutex> lock(window_mu_);
    // The current second is still filling: count the kWindow seconds before it.
    for (size_t i = 0; i < window_.size(); ++i) {
        if (window_second_[i] < s && window_second_[i] >= s - kWindow) total += window_[i];
    }
    return static_cast<double>(total) / kWindow;
}

std::string Metrics::prometheus() const {
    std::string out;
    add(out, "dsinfer_requests_total", "counter", "HTTP requests on /v1 routes", static_cast<double>(requests_));
    add(out, "dsinfer_requests_success_total", "counter", "of those, answered 2xx", static_cast<double>(requests_2xx_));
    add(out, "dsinfer_requests_client_error_total", "counter", "of those, answered 4xx (bad input, auth, queue full)",
        static_cast<double>(requests_4xx_));
    add(out, "dsinfer_requests_server_error_total", "counter", "of those, answered 5xx",
        static_cast<double>(requests_5xx_));
    add(out, "dsinfer_prompt_tokens_total", "counter", "prompt tokens of admitted generations",
        static_cast<double>(prompt_tokens_));
    add(out, "dsinfer_cache_hit_tokens_total", "counter", "prompt tokens taken from the cache instead of computed",
        static_cast<double>(cached_tokens_));
    add(out, "dsinfer_completion_tokens_total", "counter", "generated tokens", static_cast<double>(completion_tokens_));
    add(out, "dsinfer_generations_total", "counter", "generations finished (any reason)", static_cast<double>(jobs_done_));
    add(out, "dsinfer_generations_cancelled_total", "counter", "generations stopped because the client went away",
        static_cast<double>(jobs_cancelled_));
    add(out, "dsinfer_batches_total", "counter", "batched forward passes (dsi_session_eval_batch calls)",
        static_cast<double>(batches_));
    add(out, "dsinfer_batch_items_total", "counter", "sequences advanced by those passes", static_cast<double>(batch_items_));
    add(out, "dsinfer_queue_length", "gauge", "generations waiting for a slot", static_cast<double>(queued_));
    add(out, "dsinfer_active_generations", "gauge", "generations in a slot", static_cast<double>(active_));
    add(out, "dsinfer_tokens_per_second", "gauge", "generated tokens per second over the last 10 s",
        tokens_per_second());
    return out;
}

}  // namespace server
