// Server counters, exported in the Prometheus text format at GET /metrics.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

namespace server {

class Metrics {
public:
    // HTTP side.
    void request(int http_status);  // one finished HTTP request on a /v1 route

    // Scheduler side.
    void prompt(int64_t tokens, int64_t cached);
    void generated(int64_t tokens);  // also feeds the tokens/s window
    void batch(int64_t items);
    void finished(bool cancelled);
    void set_queue(int64_t queued, int64_t active) {
        queued_.store(queued);
        active_.store(active);
    }

    std::string prometheus() const;

private:
    // Output tokens per second over the last kWindow whole seconds.
    static constexpr int kWindow = 10;
    double tokens_per_second() const;

    std::atomic<int64_t> requests_{0}, requests_2xx_{0}, requests_4xx_{0}, requests_5xx_{0};
    std::atomic<int64_t> prompt_tokens_{0}, cached_tokens_{0}, completion_tokens_{0};
    std::atomic<int64_t> batches_{0}, batch_items_{0}, jobs_done_{0}, jobs_cancelled_{0};
    std::atomic<int64_t> queued_{0}, active_{0};
    mutable std::mutex window_mu_;
    std::array<int64_t, kWindow + 1> window_{};  // tokens per second, indexed by second % size
    std::array<int64_t, kWindow + 1> window_second_{};
};

}  // namespace server
