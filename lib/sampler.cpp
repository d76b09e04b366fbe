#include "sampler.h"

#include "common/error.h"
#include "common/params.h"
#include "common/portable_math.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

namespace dsi {

static uint64_t splitmix64(uint64_t &x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// splitmix64 is the seeding its authors recommend: it never yields the all-zero state
// from which xoshiro cannot leave.
void Rng::reseed(uint64_t seed) {
    for (uint64_t &s : s_) s = splitmix64(seed);
}

uint64_t Rng::next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

double Rng::next_double() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

// The v1 struct ends with `seed`; a caller built against v1 passes at least this much.
static constexpr size_t kParamsV1Size = offsetof(dsi_sampler_params, seed) + sizeof(uint64_t);

static void require(bool ok, const char *field, const char *rule, double value) {
    if (!ok) fail(DSI_ERR_INVALID_ARGUMENT, "dsi_sampler_params.%s must be %s, got %g", field, rule, value);
}

// Every condition is written so that NaN fails it.
static void validate(const dsi_sampler_params &p) {
    require(std::isfinite(p.temperature), "temperature", "finite (<= 0 for greedy)", p.temperature);
    require(p.top_k >= 0, "top_k", ">= 0 (0 = off)", p.top_k);
    require(p.top_p >= 0.0f && p.top_p <= 1.0f, "top_p", "in [0, 1] (1 = off)", p.top_p);
    require(p.min_p >= 0.0f && p.min_p <= 1.0f, "min_p", "in [0, 1] (0 = off)", p.min_p);
    require(p.repeat_penalty > 0.0f && std::isfinite(p.repeat_penalty), "repeat_penalty",
            "finite and > 0 (1 = off)", p.repeat_penalty);
    require(std::isfinite(p.frequency_penalty), "frequency_penalty", "finite", p.frequency_penalty);
    require(std::isfinite(p.presence_penalty), "presence_penalty", "finite", p.presence_penalty);
    require(p.penalty_last_n >= -1, "penalty_last_n", ">= -1 (-1 = all)", p.penalty_last_n);
}

dsi_sampler_params checked_sampler_params(const dsi_sampler_params *in) {
    const dsi_sampler_params p = read_params(in, dsi_sampler_default_params(), kParamsV1Size, "dsi_sampler");
    validate(p);
    return p;
}

// Repeat first, then frequency and presence, as the header lists them.
static void penalise(const dsi_sampler_params &p, float *logits, int32_t id, size_t count) {
    float l = logits[id];
    if (l == -INFINITY) return;  // a masked token stays masked (-inf - -inf would be NaN)
    l = l > 0.0f ? l / p.repeat_penalty : l * p.repeat_penalty;
    l -= static_cast<float>(count) * p.frequency_penalty;
    l -= p.presence_penalty;
    if (l == INFINITY || std::isnan(l))
        fail(DSI_ERR_INVALID_ARGUMENT, "penalties turn the logit of token %d (%g) into %g", id,
             static_cast<double>(logits[id]), static_cast<double>(l));
    logits[id] = l;
}

void apply_penalties(const dsi_sampler_params &p, float *logits, const int32_t *history,
                     size_t n_history, std::vector<int32_t> &scratch) {
    const bool off = p.repeat_penalty == 1.0f && p.frequency_penalty == 0.0f && p.presence_penalty == 0.0f;
    if (off || p.penalty_last_n == 0 || n_history == 0) return;
    const size_t n = p.penalty_last_n < 0 ? n_history
                                          : std::min(n_history, static_cast<size_t>(p.penalty_last_n));
    // Sorting the window groups equal ids, giving each one's count without a map.
    scratch.assign(history + (n_history - n), history + n_history);
    std::sort(scratch.begin(), scratch.end());
    for (size_t i = 0; i < scratch.size();) {
        size_t j = i;
        while (j < scratch.size() && scratch[j] == scratch[i]) ++j;
        penalise(p, logits, scratch[i], j - i);
        i = j;
    }
}

// NaN and +inf have no place in a softmax; -inf is the usual way to mask a token out.
static void check_logits(const float *logits, int32_t n_vocab) {
    bool any_finite = false;
    for (int32_t i = 0; i < n_vocab; ++i) {
        if (std::isnan(logits[i]) || logits[i] == INFINITY)
            fail(DSI_ERR_INVALID_ARGUMENT, "logit %d of %d is %g", i, n_vocab,
                 static_cast<double>(logits[i]));
        any_finite = any_finite || logits[i] != -INFINITY;
    }
    if (!any_finite) fail(DSI_ERR_INVALID_ARGUMENT, "all %d logits are -inf: no token can be chosen", n_vocab);
}

static void check_history(const int32_t *history, size_t n_history, int32_t n_vocab) {
    for (size_t i = 0; i < n_history; ++i)
        if (history[i] < 0 || history[i] >= n_vocab)
            fail(DSI_ERR_INVALID_TOKEN, "history token %zu is %d, outside [0, %d)", i, history[i], n_vocab);
}

static int32_t argmax(const std::vector<float> &logits) {
    int32_t best = 0;  // a strict > keeps the lowest id among equal maxima
    for (int32_t i = 1; i < static_cast<int32_t>(logits.size()); ++i)
        if (logits[i] > logits[best]) best = i;
    return best;
}

}  // namespace dsi

using dsi::Candidate;

int32_t dsi_sampler::sample(const float *in, int32_t n_vocab, const int32_t *hist, size_t n_hist) {
    dsi::check_logits(in, n_vocab);
    dsi::check_history(hist, n_hist, n_vocab);
    logits.assign(in, in + n_vocab);
    apply_logit_bias(n_vocab);
    dsi::apply_penalties(params, logits.data(), hist, n_hist, window);
    if (params.temperature <= 0.0f) {
        const int32_t best = dsi::argmax(logits);
        if (logits[best] == -INFINITY)
            dsi::fail(DSI_ERR_INVALID_ARGUMENT, "every logit is -inf after the penalties: no token can be chosen");
        return best;
    }

    candidates.clear();
    for (int32_t i = 0; i < n_vocab; ++i)
        if (logits[i] != -INFINITY) candidates.push_back({i, logits[i], 0.0});
    if (candidates.empty())
        dsi::fail(DSI_ERR_INVALID_ARGUMENT, "every logit is -inf after the penalties: no token can be drawn");
    keep_top(params.top_k > 0 ? static_cast<size_t>(params.top_k) : candidates.size());
    softmax(params.temperature);
    if (params.top_p < 1.0f) keep_nucleus(params.top_p);
    if (params.min_p > 0.0f) keep_min_p(params.min_p);
    return draw();
}

// Biases were checked when set (no NaN, no +inf); only the id's upper bound waits for
// n_vocab. A ban of every token leaves nothing to choose.
void dsi_sampler::apply_logit_bias(int32_t n_vocab) {
    if (logit_bias.empty()) return;
    for (const dsi_logit_bias &b : logit_bias) {
        if (b.token >= n_vocab)
            dsi::fail(DSI_ERR_INVALID_TOKEN, "logit bias token %d is outside the vocabulary [0, %d)", b.token, n_vocab);
        logits[b.token] += b.bias;
        if (logits[b.token] == INFINITY)
            dsi::fail(DSI_ERR_INVALID_ARGUMENT, "logit bias %g turns the logit of token %d into +inf",
                      static_cast<double>(b.bias), b.token);
    }
    if (std::all_of(logits.begin(), logits.end(), [](float l) { return l == -INFINITY; }))
        dsi::fail(DSI_ERR_INVALID_ARGUMENT, "the logit bias leaves every token at -inf: no token can be chosen");
}

// Sorts the k best first. Ids break ties, so the order is a strict total order and the
// result does not depend on the standard library's sorting algorithm.
void dsi_sampler::keep_top(size_t k) {
    const auto better = [](const Candidate &a, const Candidate &b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    };
    if (k < candidates.size()) {
        std::partial_sort(candidates.begin(), candidates.begin() + static_cast<ptrdiff_t>(k),
                          candidates.end(), better);
        candidates.resize(k);
    } else {
        std::sort(candidates.begin(), candidates.end(), better);
    }
}

// In double, relative to the best logit (candidates are sorted). Tokens whose
// probability underflows to 0 can never be drawn, so they are dropped here; that keeps
// the last candidate drawable when rounding lets the draw reach the total mass.
void dsi_sampler::softmax(float temperature) {
    const double max = candidates.front().logit;
    double sum = 0.0;
    for (Candidate &c : candidates) {
        c.p = dsi::portable_exp((static_cast<double>(c.logit) - max) / temperature);
        sum += c.p;
    }
    for (Candidate &c : candidates) c.p /= sum;
    while (candidates.back().p == 0.0) candidates.pop_back();
}

// The smallest prefix whose mass reaches top_p (at least one token).
void dsi_sampler::keep_nucleus(float top_p) {
    double cum = 0.0;
    for (size_t i = 0; i < candidates.size(); ++i) {
        cum += candidates[i].p;
        if (cum >= top_p) {
            candidates.resize(i + 1);
            return;
        }
    }
}

// Tokens at least min_p times as likely as the best; the best always qualifies.
void dsi_sampler::keep_min_p(float min_p) {
    const double threshold = static_cast<double>(min_p) * candidates.front().p;
    size_t n = 1;
    while (n < candidates.size() && candidates[n].p >= threshold) ++n;
    candidates.resize(n);
}

// Inverse-CDF draw over the (unnormalised) mass that survived top-p and min-p.
int32_t dsi_sampler::draw() {
    double total = 0.0;
    for (const Candidate &c : candidates) total += c.p;
    const double u = rng.next_double() * total;
    double acc = 0.0;
    for (const Candidate &c : candidates) {
        acc += c.p;
        if (u < acc) return c.id;
    }
    return candidates.back().id;
}
