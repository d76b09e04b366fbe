// Greedy choice over a logits row, shared by tests that compare runs by their argmax.
#pragma once

#include <cmath>
#include <cstdint>

namespace greedy {

// The first maximum (the lowest id on ties, like std::max_element).
inline int32_t argmax(const float *l, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; ++i)
        if (l[i] > l[best]) best = i;
    return static_cast<int32_t>(best);
}

// Largest logit minus the second largest: how far the argmax is from a tie.
inline float top2_gap(const float *l, int64_t n) {
    float a = l[0], b = -INFINITY;
    for (int64_t i = 1; i < n; ++i) {
        if (l[i] > a) b = a, a = l[i];
        else if (l[i] > b) b = l[i];
    }
    return a - b;
}

}  // namespace greedy
