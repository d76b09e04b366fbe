// One generation request as the scheduler runs it, and the channel its output travels
// back on to the HTTP thread that waits for it.
#pragma once

#include "dsinfer.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace server {

using Clock = std::chrono::steady_clock;

// What the scheduler needs to generate: token ids in, raw text out.
struct GenerationRequest {
    std::vector<int32_t> prompt;
    int32_t max_tokens = 16;              // >= 1; the context's end also stops generation
    std::vector<std::string> stop;        // generation ends before the first of these
    dsi_sampler_params sampling = dsi_sampler_default_params();
    std::vector<dsi_logit_bias> logit_bias;
    // Test hooks (--enable-test-hooks): these ids replace the sampled ones, then EOS;
    // each pass that advances this job sleeps this long (a slow stream to hang up on).
    std::vector<int32_t> forced_reply;
    int32_t delay_ms = 0;
};

enum class Finish { None, Stop, Length, Cancelled, Error };

const char *finish_reason(Finish f);  // "stop", "length", ...

struct Usage {
    int32_t prompt_tokens = 0;
    int32_t cached_tokens = 0;  // prompt tokens not computed: held by the slot or a cached page
    int32_t completion_tokens = 0;
};

// Shared by the HTTP thread (consumer) and the scheduler thread (producer).
class Job {
public:
    explicit Job(GenerationRequest r) : request(std::move(r)), created(Clock::now()) {}

    const GenerationRequest request;
    const Clock::time_point created;

    // ---- consumer side ----
    struct Update {
        std::string text;  // raw model text since the last take()
        bool done = false;
        Finish finish = Finish::None;
        Usage usage;
        int error_status = 0;  // HTTP status of an error (Finish::Error)
        std::string error;
    };
    // Waits up to `timeout` for news; returns what came (possibly nothing).
    Update take(std::chrono::milliseconds timeout);
    // Asks the scheduler to stop this job at its next step (client went away).
    void cancel() { cancelled_.store(true); }
    bool cancelled() const { return cancelled_.load(); }

    // ---- producer side (scheduler thread) ----
    void emit(const std::string &text);
    void finish(Finish f, const Usage &usage);
    void fail(int http_status, const std::string &message, const Usage &usage);

    // Timings for metrics (scheduler thread only).
    Clock::time_point first_token{};

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::string pending_;
    bool done_ = false;
    Finish finish_ = Finish::None;
    Usage usage_;
    int error_status_ = 0;
    std::string error_;
    std::atomic<bool> cancelled_{false};
};

}  // namespace server
