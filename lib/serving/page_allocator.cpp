#include "serving/page_allocator.h"

#include "backend/backend.h"

#include <algorithm>

namespace dsi {

PageAllocator::PageAllocator(int64_t n_pages)
    : refs_(static_cast<size_t>(n_pages), 0), entries_(static_cast<size_t>(n_pages)) {
    free_.reserve(static_cast<size_t>(n_pages));
    // Handed out lowest id first.
    for (int64_t p = n_pages - 1; p >= 0; --p) free_.push_back(static_cast<int32_t>(p));
}

bool PageAllocator::allocate(int64_t n, std::vector<int32_t> &out) {
    std::lock_guard<std::mutex> lock(mu_);
    if (n > static_cast<int64_t>(free_.size() + lru_.size())) return false;
    for (int64_t i = 0; i < n; ++i) {
        if (free_.empty()) unpublish_locked(lru_.front());  // moves the oldest cached page to free_
        const int32_t p = free_.back();
        free_.pop_back();
        refs_[p] = 1;
        out.push_back(p);
    }
    return true;
}

void PageAllocator::retain(const std::vector<int32_t> &pages) {
    std::lock_guard<std::mutex> lock(mu_);
    for (int32_t p : pages) {
        if (refs_[p]++ == 0 && entries_[p].published) lru_.erase(entries_[p].lru);
    }
}

void PageAllocator::release_locked(int32_t p) {
    if (--refs_[p] > 0) return;
    if (entries_[p].published)
        entries_[p].lru = lru_.insert(lru_.end(), p);
    else
        free_.push_back(p);
}

void PageAllocator::release(const std::vector<int32_t> &pages) {
    std::lock_guard<std::mutex> lock(mu_);
    for (int32_t p : pages) release_locked(p);
}

void PageAllocator::release(int32_t page) {
    std::lock_guard<std::mutex> lock(mu_);
    release_locked(page);
}

uint64_t PageAllocator::chain_hash(uint64_t parent, const int32_t *tokens) {
    // FNV-1a over the parent hash and the token bytes, then a 64-bit finaliser
    // (splitmix64) so that nearby prefixes spread over the table.
    uint64_t h = 1469598103934665603ull ^ parent;
    auto mix = [&](uint64_t v) {
        for (int i = 0; i < 8; ++i) {
            h ^= (v >> (8 * i)) & 0xff;
            h *= 1099511628211ull;
        }
    };
    mix(parent);
    for (int64_t i = 0; i < kPageTokens; ++i) mix(static_cast<uint32_t>(tokens[i]));
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h == 0 ? 1 : h;  // 0 is the parent of the first page
}

int32_t PageAllocator::lookup(uint64_t hash, uint64_t parent, const int32_t *tokens) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_hash_.find(hash);
    if (it == by_hash_.end()) return -1;
    const int32_t p = it->second;
    const Entry &e = entries_[p];
    if (e.parent != parent || !std::equal(e.tokens.begin(), e.tokens.end(), tokens)) return -1;
    if (refs_[p]++ == 0) lru_.erase(e.lru);
    return p;
}

int32_t PageAllocator::lookup_partial(uint64_t parent, const int32_t *tokens, int64_t max_len, int64_t *matched) {
    std::lock_guard<std::mutex> lock(mu_);
    int32_t best = -1;
    int64_t best_len = 0;
    const auto range = by_parent_.equal_range(parent);
    for (auto it = range.first; it != range.second; ++it) {
        const Entry &e = entries_[it->second];
        int64_t k = 0;
        while (k < max_len && e.tokens[static_cast<size_t>(k)] == tokens[k]) ++k;
        if (k > best_len) best = it->second, best_len = k;
    }
    *matched = best_len;
    if (best >= 0 && refs_[best]++ == 0) lru_.erase(entries_[best].lru);
    return best;
}

void PageAllocator::publish(int32_t page, uint64_t hash, uint64_t parent, const int32_t *tokens) {
    std::lock_guard<std::mutex> lock(mu_);
    Entry &e = entries_[page];
    if (e.published || by_hash_.count(hash)) return;
    e.hash = hash;
    e.parent = parent;
    e.tokens.assign(tokens, tokens + kPageTokens);
    e.published = true;
    by_hash_[hash] = page;
    by_parent_.emplace(parent, page);
}

bool PageAllocator::claim_for_write(int32_t page) {
    std::lock_guard<std::mutex> lock(mu_);
    if (refs_[page] > 1) return false;
    unpublish_locked(page);
    return true;
}

void PageAllocator::unpublish_locked(int32_t p) {
    Entry &e = entries_[p];
    if (!e.published) return;
    by_hash_.erase(e.hash);
    const auto range = by_parent_.equal_range(e.parent);
    for (auto it = range.first; it != range.second; ++it)
        if (it->second == p) {
            by_parent_.erase(it);
            break;
        }
    e.published = false;
    e.tokens.clear();
    if (refs_[p] == 0) {
        lru_.erase(e.lru);
        free_.push_back(p);
    }
}

PageAllocatorStats PageAllocator::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    PageAllocatorStats s;
    s.n_pages = static_cast<int64_t>(refs_.size());
    s.free = static_cast<int64_t>(free_.size());
    s.cached = static_cast<int64_t>(lru_.size());
    for (int32_t r : refs_) {
        if (r > 0) ++s.in_use;
        if (r > 1) ++s.shared;
    }
    return s;
}

}  // namespace dsi
