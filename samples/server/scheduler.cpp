#include "scheduler.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace server {

struct Scheduler::Slot {
    dsi_context *ctx = nullptr;
    uint64_t last_used = 0;

    // The job in this slot, if any, and its progress.
    std::shared_ptr<Job> job;
    dsi_sampler *sampler = nullptr;
    dsi_detokenizer *detok = nullptr;
    size_t prefilled = 0;      // prompt tokens in the context
    int32_t next_token = -1;   // sampled, to be evaluated in the next pass
    int32_t generated = 0;
    std::vector<int32_t> reply;  // the ids generated so far: the penalties' history
    int32_t reused_before = 0;  // dsi_context_reused_tokens() before the prefill
    Usage usage;
    std::string held;  // text not yet sent: it may be the start of a stop string

    bool prefilling() const { return prefilled < job->request.prompt.size(); }
};

namespace {

std::string last_error(dsi_status status) { return std::string(dsi_status_name(status)) + ": " + dsi_last_error(); }

// How long a suffix of `text` could still grow into one of `stops`.
size_t partial_stop_length(const std::string &text, const std::vector<std::string> &stops) {
    size_t keep = 0;
    for (const std::string &s : stops) {
        for (size_t n = std::min(s.size() - 1, text.size()); n > keep; --n) {
            if (text.compare(text.size() - n, n, s, 0, n) == 0) {
                keep = n;
                break;
            }
        }
    }
    return keep;
}

// Where the earliest stop string begins in `text`, or npos.
size_t find_stop(const std::string &text, const std::vector<std::string> &stops) {
    size_t at = std::string::npos;
    for (const std::string &s : stops) at = std::min(at, text.find(s));
    return at;
}

}  // namespace

Scheduler::Scheduler(dsi_session *session, const SchedulerOptions &options, Metrics &metrics)
    : session_(session), options_(options), metrics_(metrics), n_vocab_(dsi_session_n_vocab(session)) {
    eog_.resize(static_cast<size_t>(dsi_session_eog_tokens(session, nullptr, 0)));
    dsi_session_eog_tokens(session, eog_.data(), eog_.size());
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = options_.n_ctx;
    for (int i = 0; i < options_.parallel; ++i) {
        auto slot = std::make_unique<Slot>();
        if (dsi_context_create(session, &cp, &slot->ctx) != DSI_OK) {
            const std::string message = "creating slot " + std::to_string(i) + ": " + dsi_last_error();
            for (auto &s : slots_) dsi_context_free(s->ctx);
            throw std::runtime_error(message);
        }
        slots_.push_back(std::move(slot));
    }
    thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
    for (auto &s : slots_) dsi_context_free(s->ctx);
}

bool Scheduler::submit(const std::shared_ptr<Job> &job) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_ || queue_.size() >= static_cast<size_t>(options_.max_queue)) return false;
        queue_.push_back(job);
    }
    cv_.notify_all();
    return true;
}

// The idle slot that already holds the longest prefix of the prompt; among equals the
// least recently used, so that recent conversations stay cached longest.
Scheduler::Slot *Scheduler::pick_slot(const std::vector<int32_t> &prompt) {
    Slot *best = nullptr;
    size_t best_common = 0;
    std::vector<int32_t> held;
    for (auto &s : slots_) {
        if (s->job) continue;
        held.resize(static_cast<size_t>(dsi_context_length(s->ctx)));
        dsi_context_tokens(s->ctx, held.data(), held.size());
        size_t common = 0;
        while (common < held.size() && common < prompt.size() && held[common] == prompt[common]) ++common;
        if (!best || common > best_common || (common == best_common && s->last_used < best->last_used)) {
            best = s.get();
            best_common = common;
        }
    }
    return best;
}

void Scheduler::start(Slot &slot, std::shared_ptr<Job> job) {
    const GenerationRequest &r = job->request;
    slot.job = std::move(job);
    slot.last_used = ++clock_;
    slot.generated = 0;
    slot.reply.clear();
    slot.next_token = -1;
    slot.held.clear();
    slot.usage = Usage{};
    slot.usage.prompt_tokens = static_cast<int32_t>(r.prompt.size());

    // Keep the longest prefix the context holds, but evaluate at least one prompt token
    // so that there are logits to sample from.
    std::vector<int32_t> held(static_cast<size_t>(dsi_context_length(slot.ctx)));
    dsi_context_tokens(slot.ctx, held.data(), held.size());
    size_t keep = 0;
    while (keep < held.size() && keep < r.prompt.size() && held[keep] == r.prompt[keep]) ++keep;
    keep = std::min(keep, r.prompt.size() - 1);
    const dsi_status truncated = keep == 0 ? dsi_context_clear(slot.ctx)
                                           : dsi_context_truncate(slot.ctx, static_cast<int32_t>(keep));
    if (truncated != DSI_OK) return end_with_error(slot, truncated, last_error(truncated));
    slot.prefilled = keep;
    slot.usage.cached_tokens = static_cast<int32_t>(keep);
    slot.reused_before = dsi_context_reused_tokens(slot.ctx);

    // Penalties count the request's generated tokens only (OpenAI / vLLM), not the prompt:
    // after_eval passes that history itself, whole.
    dsi_sampler_params sampling = r.sampling;
    sampling.penalty_last_n = -1;
    dsi_status st = dsi_sampler_create(&sampling, &slot.sampler);
    if (st == DSI_OK && !r.logit_bias.empty())
        st = dsi_sampler_set_logit_bias(slot.sampler, r.logit_bias.data(), r.logit_bias.size());
    if (st == DSI_OK) st = dsi_detokenizer_create(dsi_session_tokenizer(session_), 0, &slot.detok);
    if (st != DSI_OK) return end_with_error(slot, st, last_error(st));
}

void Scheduler::end(Slot &slot, Finish f, bool emit_rest) {
    if (emit_rest) {
        // No stop string can complete now: what was held back goes out.
        const char *text = nullptr;
        size_t len = 0;
        if (dsi_detokenizer_flush(slot.detok, &text, &len) == DSI_OK) slot.held.append(text, len);
        slot.job->emit(slot.held);
    }
    slot.usage.completion_tokens = slot.generated;
    metrics_.finished(f == Finish::Cancelled);
    slot.job->finish(f, slot.usage);
    slot.job.reset();
    dsi_sampler_free(slot.sampler);
    dsi_detokenizer_free(slot.detok);
    slot.sampler = nullptr;
    slot.detok = nullptr;
}

void Scheduler::end_with_error(Slot &slot, dsi_status status, const std::string &message) {
    // A full cache pool is the server being busy, not the request being wrong.
    const int http = status == DSI_ERR_NO_MEMORY ? 503 : 500;
    slot.usage.completion_tokens = slot.generated;
    metrics_.finished(false);
    slot.job->fail(http, message, slot.usage);
    slot.job.reset();
    dsi_sampler_free(slot.sampler);
    dsi_detokenizer_free(slot.detok);
    slot.sampler = nullptr;
    slot.detok = nullptr;
    // The context may hold a prompt only partly evaluated: start the next job afresh.
    dsi_context_clear(slot.ctx);
}

// After the pass that evaluated `n_evaluated` tokens of this slot: sample the next
// token once the prompt is in, stream its text, and decide whether to go on.
void Scheduler::after_eval(Slot &slot, size_t n_evaluated) {
    const GenerationRequest &r = slot.job->request;
    if (slot.prefilling()) {
        slot.prefilled += n_evaluated;
        if (slot.prefilling()) return;
        const int32_t reused = dsi_context_reused_tokens(slot.ctx) - slot.reused_before;
        slot.usage.cached_tokens += std::max(reused, 0);
        metrics_.prompt(slot.usage.prompt_tokens, slot.usage.cached_tokens);
    }

    int32_t token = -1;
    if (!r.forced_reply.empty()) {
        const size_t i = static_cast<size_t>(slot.generated);
        token = i < r.forced_reply.size() ? r.forced_reply[i] : (eog_.empty() ? -1 : eog_[0]);
    } else {
        const float *logits = dsi_context_logits(slot.ctx, -1);
        if (!logits) return end_with_error(slot, DSI_ERR_INTERNAL, std::string("dsi_context_logits: ") + dsi_last_error());
        const dsi_status st = dsi_sampler_sample_logits(slot.sampler, logits, n_vocab_, slot.reply.data(),
                                                        slot.reply.size(), &token);
        if (st != DSI_OK) return end_with_error(slot, st, last_error(st));
    }
    if (token < 0) return end(slot, Finish::Stop, true);
    if (slot.generated == 0) slot.job->first_token = Clock::now();
    slot.generated++;
    slot.reply.push_back(token);
    metrics_.generated(1);
    if (std::find(eog_.begin(), eog_.end(), token) != eog_.end()) {
        slot.generated--;  // the end-of-generation token is not part of the reply
        return end(slot, Finish::Stop, true);
    }

    const char *text = nullptr;
    size_t len = 0;
    const dsi_status st = dsi_detokenizer_push(slot.detok, token, &text, &len);
    if (st != DSI_OK) return end_with_error(slot, st, last_error(st));
    slot.held.append(text, len);
    if (!r.stop.empty()) {
        const size_t at = find_stop(slot.held, r.stop);
        if (at != std::string::npos) {
            slot.job->emit(slot.held.substr(0, at));
            return end(slot, Finish::Stop, false);
        }
    }
    const size_t keep = r.stop.empty() ? 0 : partial_stop_length(slot.held, r.stop);
    slot.job->emit(slot.held.substr(0, slot.held.size() - keep));
    slot.held.erase(0, slot.held.size() - keep);

    if (slot.generated >= r.max_tokens || dsi_context_length(slot.ctx) >= dsi_context_n_ctx(slot.ctx))
        return end(slot, Finish::Length, true);
    slot.next_token = token;
}

// One forward pass over every active slot; on failure each slot is retried alone so
// that only the job at fault ends with the error.
void Scheduler::step(std::vector<Slot *> &active) {
    std::vector<dsi_batch_item> items;
    std::vector<size_t> counts;
    int32_t delay_ms = 0;
    for (Slot *s : active) {
        delay_ms = std::max(delay_ms, s->job->request.delay_ms);
        const auto &prompt = s->job->request.prompt;
        if (s->prefilling()) {
            const size_t n = std::min(prompt.size() - s->prefilled, static_cast<size_t>(options_.prefill_chunk));
            items.push_back({s->ctx, prompt.data() + s->prefilled, n, DSI_EVAL_LOGITS_LAST});
        } else {
            items.push_back({s->ctx, &s->next_token, 1, DSI_EVAL_LOGITS_LAST});
        }
        counts.push_back(items.back().n_tokens);
    }
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    if (dsi_session_eval_batch(session_, items.data(), items.size()) == DSI_OK) {
        metrics_.batch(static_cast<int64_t>(items.size()));
        for (size_t i = 0; i < active.size(); ++i) after_eval(*active[i], counts[i]);
        return;
    }
    for (size_t i = 0; i < active.size(); ++i) {
        const dsi_status st = dsi_session_eval_batch(session_, &items[i], 1);
        if (st != DSI_OK) {
            end_with_error(*active[i], st, last_error(st));
            continue;
        }
        metrics_.batch(1);
        after_eval(*active[i], counts[i]);
    }
}

void Scheduler::run() {
    std::vector<Slot *> active;
    size_t queued = 0;
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(mu_);
            auto busy = [this] {
                return std::any_of(slots_.begin(), slots_.end(), [](const auto &s) { return s->job != nullptr; });
            };
            cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || busy(); });
            if (stopping_) {
                for (auto &job : queue_) job->finish(Finish::Cancelled, Usage{});
                queue_.clear();
                break;
            }
            while (!queue_.empty()) {
                Slot *slot = pick_slot(queue_.front()->request.prompt);
                if (!slot) break;
                std::shared_ptr<Job> job = std::move(queue_.front());
                queue_.pop_front();
                lock.unlock();
                if (job->cancelled()) {
                    metrics_.finished(true);
                    job->finish(Finish::Cancelled, Usage{});
                } else {
                    start(*slot, std::move(job));
                }
                lock.lock();
            }
            active.clear();
            for (auto &s : slots_)
                if (s->job) active.push_back(s.get());
            queued = queue_.size();
        }
        // A job whose client went away leaves before the pass; its tokens stay cached.
        for (Slot *s : active)
            if (s->job->cancelled()) end(*s, Finish::Cancelled, false);
        active.erase(std::remove_if(active.begin(), active.end(), [](Slot *s) { return !s->job; }), active.end());
        if (!active.empty()) step(active);
        const auto busy_slots = std::count_if(slots_.begin(), slots_.end(), [](const auto &s) { return s->job != nullptr; });
        metrics_.set_queue(static_cast<int64_t>(queued), static_cast<int64_t>(busy_slots));
    }
    for (auto &s : slots_)
        if (s->job) end(*s, Finish::Cancelled, false);
}

}  // namespace server
