// Host bookkeeping of a session's cache pool (backend.h: "Paged caches"): which pages
// are free, who holds each page (a reference count), and the prefix cache of full pages
// addressed by their content. Thread-safe: every member locks the allocator's mutex.
//
// Prefix cache: a full page is published under the hash of every token from position 0
// to its end (a chain: hash(parent page's hash, this page's 64 tokens), as vLLM does),
// so a hit means the whole prefix matches. Lookups also compare the page's own tokens
// and its parent's hash. A published page whose last holder lets go is kept in an LRU
// and only reused for new data when no free page is left. A prefix that ends inside a
// page can still take the positions it shares with a published page (lookup_partial):
// the caller copies that page and overwrites the rest.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace dsi {

struct PageAllocatorStats {
    int64_t n_pages = 0, free = 0, cached = 0, in_use = 0, shared = 0;
};

class PageAllocator {
public:
    explicit PageAllocator(int64_t n_pages);

    // n pages with reference count 1, appended to `out`; false (nothing taken) when the
    // pool cannot supply n even after evicting every cached page.
    bool allocate(int64_t n, std::vector<int32_t> &out);
    void retain(const std::vector<int32_t> &pages);
    void release(const std::vector<int32_t> &pages);
    void release(int32_t page);

    // The hash of a full page given its parent's hash (0 for the first page).
    static uint64_t chain_hash(uint64_t parent, const int32_t *tokens);
    // The page published under `hash` with these tokens and parent, retained; or -1.
    int32_t lookup(uint64_t hash, uint64_t parent, const int32_t *tokens);
    // The published page under `parent` whose first tokens match the most of
    // tokens[0, max_len) (at least one), retained, with that count in *matched; or -1.
    // Entries depend only on earlier tokens, so those positions of a copy are exact.
    int32_t lookup_partial(uint64_t parent, const int32_t *tokens, int64_t max_len, int64_t *matched);
    // Publishes a full page the caller holds (no-op if the hash is already published).
    void publish(int32_t page, uint64_t hash, uint64_t parent, const int32_t *tokens);
    // Whether the caller, holding `page`, may write into it in place: true when it is the
    // only holder, and then the page is withdrawn from the prefix cache in the same step
    // (so no lookup can share it meanwhile); false when it must copy the page first.
    bool claim_for_write(int32_t page);

    PageAllocatorStats stats() const;

private:
    struct Entry {
        uint64_t hash = 0, parent = 0;
        std::vector<int32_t> tokens;  // the page's own tokens
        bool published = false;
        std::list<int32_t>::iterator lru;  // valid while refcount 0 and published
    };
    void unpublish_locked(int32_t page);
    void release_locked(int32_t page);

    mutable std::mutex mu_;
    std::vector<int32_t> refs_;
    std::vector<Entry> entries_;
    std::vector<int32_t> free_;                   // never-published free pages
    std::list<int32_t> lru_;                      // published, unreferenced: oldest first
    std::unordered_map<uint64_t, int32_t> by_hash_;
    std::unordered_multimap<uint64_t, int32_t> by_parent_;
};

}  // namespace dsi
