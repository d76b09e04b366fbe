#include "job.h"

namespace server {

const char *finish_reason(Finish f) {
    switch (f) {
        case Finish::Stop: return "stop";
        case Finish::Length: return "length";
        case Finish::Cancelled: return "cancelled";
        case Finish::Error: return "error";
        case Finish::None: break;
    }
    return "none";
}

Job::Update Job::take(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [this] { return done_ || !pending_.empty(); });
    Update u;
    u.text.swap(pending_);
    u.done = done_;
    if (done_) {
        u.finish = finish_;
        u.usage = usage_;
        u.error_status = error_status_;
        u.error = error_;
    }
    return u;
}

void Job::emit(const std::string &text) {
    if (text.empty()) return;
    {
        std::lock_guard<std::mutex> lock(mu_);
        pending_ += text;
    }
    cv_.notify_all();
}

void Job::finish(Finish f, const Usage &usage) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        done_ = true;
        finish_ = f;
        usage_ = usage;
    }
    cv_.notify_all();
}

void Job::fail(int http_status, const std::string &message, const Usage &usage) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        error_status_ = http_status;
        error_ = message;
    }
    finish(Finish::Error, usage);
}

}  // namespace server
