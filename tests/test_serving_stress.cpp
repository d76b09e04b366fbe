// labels: serving
// Many threads serving many contexts on ONE session at once: 8 threads x 50 contexts of
// random lengths, most sharing one of a few prompt prefixes, some advanced together by
// dsi_session_eval_batch, some forked, some saved and restored, in a cache pool small
// enough that cached prefix pages are evicted while others are being reused. Every
// context's generated ids and final logits must equal those of the same job run
// sequentially. Built and run under ThreadSanitizer and AddressSanitizer by
// scripts/ci-serving.sh (sessions use one compute thread: libgomp is not instrumented).
// DSI_STRESS_THREADS / DSI_STRESS_JOBS override the size (default 8 x 50).
#include <doctest/doctest.h>

#include "dsinfer.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

const std::string kDemo = std::string(DSI_SOURCE_DIR) + "/models/demo";

int env_int(const char *name, int def) {
    const char *v = std::getenv(name);
    return v ? std::atoi(v) : def;
}

enum class Kind { Plain, Batched, Fork, SaveRestore };

// One unit of work: a prompt (shared prefix + own tail), evaluated in up to two
// chunks, then `decode` greedy steps.
struct Job {
    Kind kind;
    std::vector<int32_t> prompt;
    size_t first_chunk;
    int decode;
};

// What a job produced: per context (a fork yields two), its ids and final logits.
struct Result {
    std::vector<std::vector<int32_t>> ids;
    std::vector<std::vector<float>> logits;
    std::string error;
};

struct Session {
    dsi_session *s = nullptr;
    explicit Session(size_t budget) {
        dsi_session_params p = dsi_session_default_params();
        p.backend = DSI_BACKEND_CPU;
        p.n_threads = 1;
        p.cache_budget = budget;
        REQUIRE_MESSAGE(dsi_session_open(kDemo.c_str(), &p, &s) == DSI_OK, dsi_last_error());
    }
    ~Session() { dsi_session_free(s); }
};

int32_t argmax(const float *l, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; ++i)
        if (l[i] > l[best]) best = i;
    return best;
}

#define TRY(call)                                                     \
    do {                                                              \
        if ((call) != DSI_OK) {                                       \
            r.error = std::string(#call) + ": " + dsi_last_error();  \
            return;                                                   \
        }                                                             \
    } while (0)

// Runs jobs[begin, end) on `s`; batched jobs that are adjacent are advanced together.
void run_jobs(dsi_session *s, const std::vector<Job> &jobs, size_t begin, size_t end, std::vector<Result> &out) {
    const int32_t V = dsi_session_n_vocab(s);
    size_t i = begin;
    while (i < end) {
        if (jobs[i].kind == Kind::Batched) {
            size_t j = i;
            while (j < end && j - i < 4 && jobs[j].kind == Kind::Batched) ++j;
            Result &r = out[i];
            std::vector<dsi_context *> ctx(j - i, nullptr);
            auto cleanup = [&] {
                for (dsi_context *c : ctx) dsi_context_free(c);
            };
            [&] {
                for (auto &c : ctx) TRY(dsi_context_create(s, nullptr, &c));
                // Round 0: first chunks; round 1: the rest; then decode steps together.
                std::vector<dsi_batch_item> items;
                for (size_t k = i; k < j; ++k)
                    items.push_back({ctx[k - i], jobs[k].prompt.data(), jobs[k].first_chunk, 0});
                TRY(dsi_session_eval_batch(s, items.data(), items.size()));
                items.clear();
                for (size_t k = i; k < j; ++k)
                    if (jobs[k].first_chunk < jobs[k].prompt.size())
                        items.push_back({ctx[k - i], jobs[k].prompt.data() + jobs[k].first_chunk,
                                         jobs[k].prompt.size() - jobs[k].first_chunk, 0});
                if (!items.empty()) TRY(dsi_session_eval_batch(s, items.data(), items.size()));
                std::vector<std::vector<int32_t>> ids(j - i);
                for (int step = 0;; ++step) {
                    items.clear();
                    for (size_t k = i; k < j; ++k) {
                        if (step >= jobs[k].decode) continue;
                        ids[k - i].push_back(argmax(dsi_context_logits(ctx[k - i], -1), V));
                        items.push_back({ctx[k - i], &ids[k - i].back(), 1, 0});
                    }
                    if (items.empty()) break;
                    TRY(dsi_session_eval_batch(s, items.data(), items.size()));
                }
                for (size_t k = i; k < j; ++k) {
                    out[k].ids = {ids[k - i]};
                    const float *l = dsi_context_logits(ctx[k - i], -1);
                    out[k].logits = {std::vector<float>(l, l + V)};
                }
            }();
            if (!r.error.empty())
                for (size_t k = i + 1; k < j; ++k) out[k].error = r.error;
            cleanup();
            i = j;
            continue;
        }
        const Job &job = jobs[i];
        Result &r = out[i];
        dsi_context *c = nullptr, *f = nullptr;
        auto decode = [&](dsi_context *ctx, int n, int32_t salt) {
            std::vector<int32_t> ids;
            for (int k = 0; k < n; ++k) {
                // The fork's branch takes a different first token, so the two diverge.
                int32_t t = argmax(dsi_context_logits(ctx, -1), V);
                if (k == 0 && salt) t = (t + salt) % V;
                ids.push_back(t);
                if (dsi_context_eval(ctx, &t, 1, 0) != DSI_OK) {
                    r.error = std::string("decode: ") + dsi_last_error();
                    break;
                }
            }
            r.ids.push_back(ids);
            const float *l = dsi_context_logits(ctx, -1);
            r.logits.emplace_back(l, l + V);
        };
        [&] {
            TRY(dsi_context_create(s, nullptr, &c));
            TRY(dsi_context_eval(c, job.prompt.data(), job.first_chunk, 0));
            if (job.first_chunk < job.prompt.size())
                TRY(dsi_context_eval(c, job.prompt.data() + job.first_chunk, job.prompt.size() - job.first_chunk, 0));
            if (job.kind == Kind::SaveRestore) {
                void *data = nullptr;
                size_t size = 0;
                TRY(dsi_context_save_state(c, nullptr, &data, &size));
                dsi_context_free(c);
                c = nullptr;
                const dsi_status st = dsi_context_create(s, nullptr, &c) == DSI_OK ? dsi_context_load_state(c, data, size, nullptr)
                                                                                    : DSI_ERR_INTERNAL;
                dsi_free(data);
                TRY(st);
            }
            if (job.kind == Kind::Fork) {
                TRY(dsi_context_fork(c, &f));
                decode(f, job.decode, 7);
            }
            decode(c, job.decode, 0);
        }();
        dsi_context_free(f);
        dsi_context_free(c);
        ++i;
    }
}

}  // namespace

TEST_CASE("stress: threads x contexts on one session equal a sequential run") {
    const int n_threads = env_int("DSI_STRESS_THREADS", 8), per_thread = env_int("DSI_STRESS_JOBS", 50);
    std::mt19937 g(2026);
    Session probe(0);
    const int32_t V = dsi_session_n_vocab(probe.s);
    dsi_cache_stats st;
    REQUIRE(dsi_session_cache_stats(probe.s, &st) == DSI_OK);
    std::uniform_int_distribution<int32_t> tok(2, V - 1);
    std::vector<std::vector<int32_t>> prefixes;
    for (int len : {70, 130, 200, 64})
        prefixes.emplace_back(len), std::generate(prefixes.back().begin(), prefixes.back().end(), [&] { return tok(g); });

    std::vector<Job> jobs;
    for (int i = 0; i < n_threads * per_thread; ++i) {
        Job j;
        const int kind = static_cast<int>(g() % 10);
        j.kind = kind < 4 ? Kind::Plain : kind < 7 ? Kind::Batched : kind < 9 ? Kind::Fork : Kind::SaveRestore;
        if (g() % 5 != 0) j.prompt = prefixes[g() % prefixes.size()];  // most share a prefix
        const int tail = 1 + static_cast<int>(g() % 40);
        for (int k = 0; k < tail; ++k) j.prompt.push_back(tok(g));
        j.first_chunk = 1 + g() % j.prompt.size();
        j.decode = 1 + static_cast<int>(g() % 4);
        jobs.push_back(std::move(j));
    }
    // Room for every thread's live contexts (up to 4 batched + a fork, 5 pages each)
    // but far less than all jobs' pages: cached prefixes are evicted as others reuse them.
    const size_t budget = static_cast<size_t>(n_threads * 5 * 6 + 40) * st.page_bytes;

    std::vector<Result> sequential(jobs.size()), parallel(jobs.size());
    {
        Session s(budget);
        run_jobs(s.s, jobs, 0, jobs.size(), sequential);
    }
    {
        Session s(budget);
        std::vector<std::thread> pool;
        for (int t = 0; t < n_threads; ++t)
            pool.emplace_back([&, t] {
                run_jobs(s.s, jobs, static_cast<size_t>(t * per_thread), static_cast<size_t>((t + 1) * per_thread), parallel);
            });
        for (auto &th : pool) th.join();
        dsi_cache_stats end;
        REQUIRE(dsi_session_cache_stats(s.s, &end) == DSI_OK);
        CHECK(end.n_contexts == 0);
        CHECK(end.pages_in_use == 0);
        CHECK(end.pages_free + end.pages_cached == end.n_pages);
    }
    int mismatched = 0, failed = 0, contexts = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
        if (!sequential[i].error.empty() || !parallel[i].error.empty()) {
            ++failed;
            MESSAGE("job " << i << ": " << sequential[i].error << " | " << parallel[i].error);
            continue;
        }
        contexts += static_cast<int>(parallel[i].ids.size());
        bool same = sequential[i].ids == parallel[i].ids && sequential[i].logits.size() == parallel[i].logits.size();
        for (size_t k = 0; same && k < parallel[i].logits.size(); ++k)
            same = std::memcmp(sequential[i].logits[k].data(), parallel[i].logits[k].data(), V * sizeof(float)) == 0;
        mismatched += !same;
    }
    MESSAGE(jobs.size() << " jobs, " << contexts << " contexts compared");
    CHECK(failed == 0);
    CHECK(mismatched == 0);
}
