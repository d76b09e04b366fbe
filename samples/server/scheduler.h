// Continuous batching on one session: a fixed set of slots (one dsi_context each), a
// bounded queue of jobs waiting for a slot, and one thread that advances every active
// slot together through dsi_session_eval_batch(): prefill chunks and decode tokens in the
// same pass. A finished slot keeps its tokens, so that the next job sharing a prefix
// (a system prompt, the earlier turns of a chat) evaluates only what is new; beyond that
// the session's page cache shares whole 64-token pages between slots.
#pragma once

#include "job.h"
#include "metrics.h"

#include "dsinfer.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace server {

struct SchedulerOptions {
    int parallel = 4;          // slots: generations advanced together
    int max_queue = 64;        // jobs waiting beyond those; more is refused (HTTP 429)
    int32_t n_ctx = 0;         // tokens per slot (prompt + reply)
    int32_t prefill_chunk = 256;  // prompt tokens per slot per pass, so that decoding
                                  // slots are not held up by a long prompt
};

class Scheduler {
public:
    Scheduler(dsi_session *session, const SchedulerOptions &options, Metrics &metrics);
    ~Scheduler();  // cancels what is left and joins the thread
    Scheduler(const Scheduler &) = delete;
    Scheduler &operator=(const Scheduler &) = delete;

    // Queues a job; false when the queue is full. The job's prompt must be non-empty
    // and shorter than n_ctx() (the HTTP layer checks).
    bool submit(const std::shared_ptr<Job> &job);

    int32_t n_ctx() const { return options_.n_ctx; }

private:
    struct Slot;

    void run();
    void start(Slot &slot, std::shared_ptr<Job> job);
    void step(std::vector<Slot *> &active);
    void after_eval(Slot &slot, size_t n_evaluated);
    // emit_rest: send the text held back for stop strings (not after a stop string).
    void end(Slot &slot, Finish f, bool emit_rest);
    void end_with_error(Slot &slot, dsi_status status, const std::string &message);
    Slot *pick_slot(const std::vector<int32_t> &prompt);

    dsi_session *session_;
    SchedulerOptions options_;
    Metrics &metrics_;
    const int32_t n_vocab_;  // length of a logits row
    std::vector<int32_t> eog_;
    std::vector<std::unique_ptr<Slot>> slots_;
    uint64_t clock_ = 0;  // for least-recently-used slot choice

    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::shared_ptr<Job>> queue_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace server
