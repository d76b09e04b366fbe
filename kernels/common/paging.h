// Paged caches: a session's pool of fixed pages of 64 tokens; each sequence has a page
// table [max_pages] of pool page indices. Token `pos` of sequence `seq` lives in slot
// page_table[seq][pos / 64] * 64 + pos % 64 (FlashMLA's index = page * 64 + offset).
#pragma once

#include <cstdint>

namespace dsi::cuda {

constexpr int64_t kPageTokens = 64;

struct PageTable {
    const int32_t *pages = nullptr;  // [n_seqs, stride]
    int64_t stride = 0;
};

// Per query row: its sequence (index into the page table) and position.
struct RowInfo {
    const int32_t *seq = nullptr;  // [rows]
    const int32_t *pos = nullptr;  // [rows]
};

#ifdef __CUDACC__
__device__ __forceinline__ int64_t slot_of(const PageTable &pt, int32_t seq, int64_t pos) {
    return static_cast<int64_t>(pt.pages[seq * pt.stride + pos / kPageTokens]) * kPageTokens + pos % kPageTokens;
}
#endif

}  // namespace dsi::cuda
