#include "state/state.h"

#include "checkpoint/safetensors.h"
#include "common/error.h"
#include "sampler.h"
#include "session.h"
#include "state_generated.h"

#include <cmath>
#include <cstring>

namespace dsi {

namespace {

constexpr uint32_t kSchemaVersion = 1;

// Flatbuffers addresses with 32-bit offsets: a buffer stays below 2 GiB.
constexpr uint64_t kMaxStateBytes = (uint64_t(1) << 31) - (uint64_t(1) << 20);

struct Hash64 {
    uint64_t h;
    uint64_t prime;
    void bytes(const void *p, size_t n) {
        const auto *b = static_cast<const uint8_t *>(p);
        for (size_t i = 0; i < n; ++i) {
            h ^= b[i];
            h *= prime;
        }
    }
    void text(const std::string &s) {
        const uint64_t n = s.size();
        bytes(&n, sizeof n);
        bytes(s.data(), s.size());
    }
};

// The same layout as the backend's per-layer pages, in float32 on the host.
struct HostCache {
    std::vector<float> latent, k_rope, index_key;
};

std::vector<int32_t> slots_of(const std::vector<int32_t> &pages, int64_t n) {
    std::vector<int32_t> slots(static_cast<size_t>(n));
    for (int64_t s = 0; s < n; ++s)
        slots[static_cast<size_t>(s)] =
            pages[static_cast<size_t>(s / kPageTokens)] * static_cast<int32_t>(kPageTokens) + static_cast<int32_t>(s % kPageTokens);
    return slots;
}

}  // namespace

ModelIdentity model_identity(const std::string &config_json, const Checkpoint &checkpoint) {
    // FNV-1a with two offset bases and primes: 128 bits together.
    Hash64 a{1469598103934665603ull, 1099511628211ull}, b{0x6c62272e07bb0142ull, 0x100000001b3ull ^ 0x5bd1e995ull};
    for (Hash64 *h : {&a, &b}) {
        h->text(config_json);
        for (const std::string &name : checkpoint.names()) {
            const TensorInfo &t = checkpoint.get(name);
            h->text(name);
            h->text(dtype_name(t.dtype));
            const uint64_t rank = t.shape.size();
            h->bytes(&rank, sizeof rank);
            for (int64_t d : t.shape) h->bytes(&d, sizeof d);
        }
    }
    ModelIdentity id;
    std::memcpy(id.data(), &a.h, 8);
    std::memcpy(id.data() + 8, &b.h, 8);
    return id;
}

std::vector<uint8_t> save_state(dsi_context *ctx, const dsi_sampler *sampler) {
    const dsi_session &s = *ctx->session;
    const Model &m = *s.model;
    Backend &be = *m.backend;
    const CacheDims d = cache_dims(m.cfg);
    const int64_t n = static_cast<int64_t>(ctx->tokens.size());
    const uint64_t per_token = static_cast<uint64_t>(d.layers * (d.kv_lora_rank + d.rope_dim + d.index_dim)) * 4 + 4;
    const uint64_t bytes = per_token * static_cast<uint64_t>(n) + ctx->logits.size() * 4 + 4096;
    if (bytes > kMaxStateBytes)
        fail(DSI_ERR_UNSUPPORTED,
             "the state of %lld tokens needs about %llu bytes; a saved state is limited to %llu bytes (Flatbuffers' "
             "32-bit offsets), i.e. %llu tokens of this model",
             (long long)n, (unsigned long long)bytes, (unsigned long long)kMaxStateBytes,
             (unsigned long long)(kMaxStateBytes / per_token));

    flatbuffers::FlatBufferBuilder fb(static_cast<size_t>(bytes));
    std::vector<flatbuffers::Offset<state::LayerCache>> layers;
    if (n > 0) {
        const std::vector<int32_t> slots = slots_of(ctx->pages, n);
        Buffer slot_b = be.alloc(slots.size() * sizeof(int32_t));
        be.from_host(slots.data(), slots.size() * sizeof(int32_t), slot_b.i32());
        Buffer lat = be.alloc(static_cast<size_t>(n * d.kv_lora_rank) * 4), rope = be.alloc(static_cast<size_t>(n * d.rope_dim) * 4);
        Buffer ik = be.alloc(static_cast<size_t>(n * std::max<int64_t>(d.index_dim, 1)) * 4);
        HostCache host;
        for (int64_t l = 0; l < d.layers; ++l) {
            CacheGatherParams g;
            g.mla_pages = s.cache_pool->mla[static_cast<size_t>(l)];
            g.index_pages = d.index_dim ? s.cache_pool->index[static_cast<size_t>(l)] : nullptr;
            g.slots = slot_b.i32();
            g.rows = n;
            g.latent = lat.f32();
            g.k_rope = rope.f32();
            g.index_key = ik.f32();
            g.kv_lora_rank = d.kv_lora_rank;
            g.rope_dim = d.rope_dim;
            g.index_dim = d.index_dim;
            be.cache_gather(g);
            host.latent.resize(static_cast<size_t>(n * d.kv_lora_rank));
            host.k_rope.resize(static_cast<size_t>(n * d.rope_dim));
            host.index_key.resize(static_cast<size_t>(n * d.index_dim));
            be.to_host(lat.f32(), host.latent.size() * 4, host.latent.data());
            be.to_host(rope.f32(), host.k_rope.size() * 4, host.k_rope.data());
            be.to_host(ik.f32(), host.index_key.size() * 4, host.index_key.data());
            layers.push_back(state::CreateLayerCache(fb, fb.CreateVector(host.latent), fb.CreateVector(host.k_rope),
                                                     fb.CreateVector(host.index_key)));
        }
    } else {
        for (int64_t l = 0; l < d.layers; ++l) layers.push_back(state::CreateLayerCache(fb));
    }
    flatbuffers::Offset<state::Sampler> smp;
    if (sampler) {
        uint64_t rng[4];
        sampler->rng.get_state(rng);
        const dsi_sampler_params &p = sampler->params;
        smp = state::CreateSampler(fb, p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty,
                                   p.frequency_penalty, p.presence_penalty, p.penalty_last_n, p.seed,
                                   fb.CreateVector(rng, 4));
    }
    const auto root = state::CreateState(
        fb, kSchemaVersion, fb.CreateVector(s.identity.data(), s.identity.size()), fb.CreateString(s.description),
        d.layers, d.kv_lora_rank, d.rope_dim, d.index_dim, fb.CreateVector(ctx->tokens), fb.CreateVector(layers),
        fb.CreateVector(ctx->logits), ctx->logits_rows, smp);
    state::FinishStateBuffer(fb, root);
    return std::vector<uint8_t>(fb.GetBufferPointer(), fb.GetBufferPointer() + fb.GetSize());
}

void load_state(dsi_context *ctx, const uint8_t *data, size_t size, dsi_sampler *sampler) {
    // The verifier checks alignment relative to the buffer's start; reads assume the
    // start itself is 8-byte aligned, so a caller's unaligned buffer is copied first.
    std::vector<uint64_t> aligned;
    if (reinterpret_cast<uintptr_t>(data) % 8 != 0 && size <= kMaxStateBytes) {
        aligned.resize((size + 7) / 8);
        std::memcpy(aligned.data(), data, size);
        data = reinterpret_cast<const uint8_t *>(aligned.data());
    }
    dsi_session &s = *ctx->session;
    const Model &m = *s.model;
    Backend &be = *m.backend;
    const CacheDims d = cache_dims(m.cfg);
    const int64_t vocab = m.cfg.vocab_size;

    // ---- the buffer: identifier, verifier, version ----
    if (size < 8 || size > kMaxStateBytes)
        fail(DSI_ERR_FORMAT, "a saved state of %zu bytes: too %s to be one", size, size < 8 ? "short" : "long");
    if (!state::StateBufferHasIdentifier(data))
        fail(DSI_ERR_FORMAT, "not a dsinfer saved state (file identifier is not \"%s\")", state::StateIdentifier());
    flatbuffers::Verifier verifier(data, size, /*max_depth=*/16, /*max_tables=*/1 << 20);
    if (!state::VerifyStateBuffer(verifier))
        fail(DSI_ERR_FORMAT, "the saved state (%zu bytes) is truncated or corrupted: the Flatbuffers verifier rejects it", size);
    const state::State *st = state::GetState(data);
    if (st->schema_version() == 0 || st->schema_version() > kSchemaVersion)
        fail(DSI_ERR_FORMAT, "the saved state has schema version %u; this dsinfer reads versions 1 to %u%s",
             st->schema_version(), kSchemaVersion, st->schema_version() > kSchemaVersion ? " (saved by a newer dsinfer)" : "");

    // ---- the model ----
    const auto *id = st->model_identity();
    if (!id || id->size() != s.identity.size() || std::memcmp(id->data(), s.identity.data(), s.identity.size()) != 0)
        fail(DSI_ERR_CONFIG, "the saved state is of another model (%s); this session runs %s",
             st->model_description() ? st->model_description()->c_str() : "unnamed", s.description.c_str());
    if (st->layers() != d.layers || st->kv_lora_rank() != d.kv_lora_rank || st->rope_dim() != d.rope_dim ||
        st->index_dim() != d.index_dim)
        fail(DSI_ERR_FORMAT, "the saved state's cache dimensions (%lld layers, %lld, %lld, %lld) are not the model's",
             (long long)st->layers(), (long long)st->kv_lora_rank(), (long long)st->rope_dim(), (long long)st->index_dim());

    // ---- sizes and values ----
    const int64_t n = st->tokens() ? static_cast<int64_t>(st->tokens()->size()) : 0;
    if (n > ctx->n_ctx)
        fail(DSI_ERR_CONTEXT_FULL, "the saved state holds %lld tokens; the context's n_ctx is %lld", (long long)n,
             (long long)ctx->n_ctx);
    for (int64_t i = 0; i < n; ++i) {
        const int32_t t = st->tokens()->Get(static_cast<flatbuffers::uoffset_t>(i));
        if (t < 0 || t >= vocab)
            fail(DSI_ERR_FORMAT, "the saved state's token %lld is id %d, outside the vocabulary [0, %lld)", (long long)i, t,
                 (long long)vocab);
    }
    const auto *cache = st->cache();
    if (!cache || static_cast<int64_t>(cache->size()) != d.layers)
        fail(DSI_ERR_FORMAT, "the saved state has %u cache layers; the model has %lld", cache ? cache->size() : 0u,
             (long long)d.layers);
    auto check_len = [&](const flatbuffers::Vector<float> *v, int64_t want, const char *what, int64_t l) {
        const int64_t got = v ? static_cast<int64_t>(v->size()) : 0;
        if (got != want)
            fail(DSI_ERR_FORMAT, "the saved state's layer %lld %s has %lld values; %lld tokens need %lld", (long long)l, what,
                 (long long)got, (long long)n, (long long)want);
        for (int64_t i = 0; i < want; ++i)
            if (!std::isfinite(v->Get(static_cast<flatbuffers::uoffset_t>(i))))
                fail(DSI_ERR_FORMAT, "the saved state's layer %lld %s has a non-finite value at %lld", (long long)l, what,
                     (long long)i);
    };
    for (int64_t l = 0; l < d.layers; ++l) {
        const state::LayerCache *lc = cache->Get(static_cast<flatbuffers::uoffset_t>(l));
        check_len(lc->latent(), n * d.kv_lora_rank, "latent", l);
        check_len(lc->k_rope(), n * d.rope_dim, "k_rope", l);
        check_len(lc->index_key(), n * d.index_dim, "index_key", l);
    }
    const int64_t rows = st->logits_rows();
    const int64_t n_logits = st->logits() ? static_cast<int64_t>(st->logits()->size()) : 0;
    if (rows < 0 || rows > n || n_logits != rows * vocab)
        fail(DSI_ERR_FORMAT, "the saved state's logits (%lld values, %lld rows) do not fit %lld tokens of a %lld-id vocabulary",
             (long long)n_logits, (long long)rows, (long long)n, (long long)vocab);
    uint64_t rng[4] = {0, 0, 0, 0};
    dsi_sampler_params sp{};
    if (sampler) {
        const state::Sampler *ss = st->sampler();
        if (!ss) fail(DSI_ERR_INVALID_ARGUMENT, "a sampler was given but the saved state holds none");
        if (!ss->rng() || ss->rng()->size() != 4)
            fail(DSI_ERR_FORMAT, "the saved sampler's random state has %u words, not 4", ss->rng() ? ss->rng()->size() : 0u);
        for (int i = 0; i < 4; ++i) rng[i] = ss->rng()->Get(static_cast<flatbuffers::uoffset_t>(i));
        if ((rng[0] | rng[1] | rng[2] | rng[3]) == 0) fail(DSI_ERR_FORMAT, "the saved sampler's random state is all zero");
        sp = dsi_sampler_default_params();
        sp.temperature = ss->temperature();
        sp.top_k = ss->top_k();
        sp.top_p = ss->top_p();
        sp.min_p = ss->min_p();
        sp.repeat_penalty = ss->repeat_penalty();
        sp.frequency_penalty = ss->frequency_penalty();
        sp.presence_penalty = ss->presence_penalty();
        sp.penalty_last_n = ss->penalty_last_n();
        sp.seed = ss->seed();
        try {
            sp = checked_sampler_params(&sp);
        } catch (const Error &e) {
            fail(DSI_ERR_FORMAT, "the saved sampler's parameters are invalid: %s", e.what());
        }
    }

    // ---- pages, then the swap ----
    std::vector<int32_t> pages;
    const int64_t need = (n + kPageTokens - 1) / kPageTokens;
    if (!s.pages->allocate(need, pages)) {
        const PageAllocatorStats ps = s.pages->stats();
        fail(DSI_ERR_NO_MEMORY,
             "the cache pool is full: the saved state needs %lld pages of %zu bytes; the session's cache_budget of %zu "
             "bytes holds %lld pages: %lld in use by %lld context(s), %lld cached prefix pages, %lld free",
             (long long)need, s.cache_page_bytes, s.cache_budget, (long long)ps.n_pages, (long long)ps.in_use,
             (long long)s.n_contexts.load(), (long long)ps.cached, (long long)ps.free);
    }
    try {
        if (n > 0) {
            const std::vector<int32_t> slots = slots_of(pages, n);
            Buffer slot_b = be.alloc(slots.size() * sizeof(int32_t));
            be.from_host(slots.data(), slots.size() * sizeof(int32_t), slot_b.i32());
            Buffer lat = be.alloc(static_cast<size_t>(n * d.kv_lora_rank) * 4), rope = be.alloc(static_cast<size_t>(n * d.rope_dim) * 4);
            Buffer ik = be.alloc(static_cast<size_t>(n * std::max<int64_t>(d.index_dim, 1)) * 4);
            for (int64_t l = 0; l < d.layers; ++l) {
                const state::LayerCache *lc = cache->Get(static_cast<flatbuffers::uoffset_t>(l));
                // Flatbuffers vectors are little-endian float32, 4-byte aligned: upload as is.
                be.from_host(lc->latent()->data(), static_cast<size_t>(n * d.kv_lora_rank) * 4, lat.f32());
                be.from_host(lc->k_rope()->data(), static_cast<size_t>(n * d.rope_dim) * 4, rope.f32());
                if (d.index_dim) be.from_host(lc->index_key()->data(), static_cast<size_t>(n * d.index_dim) * 4, ik.f32());
                CacheStoreParams p;
                p.mla_pages = s.cache_pool->mla[static_cast<size_t>(l)];
                p.index_pages = d.index_dim ? s.cache_pool->index[static_cast<size_t>(l)] : nullptr;
                p.slots = slot_b.i32();
                p.rows = n;
                p.latent = lat.f32();
                p.latent_stride = d.kv_lora_rank;
                p.k_rope = rope.f32();
                p.k_rope_stride = d.rope_dim;
                p.index_key = ik.f32();
                p.kv_lora_rank = d.kv_lora_rank;
                p.rope_dim = d.rope_dim;
                p.index_dim = d.index_dim;
                be.cache_store(p);
            }
        }
    } catch (...) {
        s.pages->release(pages);
        throw;
    }
    s.pages->release(ctx->pages);
    ctx->pages = std::move(pages);
    ctx->tokens.clear();
    if (st->tokens()) ctx->tokens.assign(st->tokens()->begin(), st->tokens()->end());
    ctx->page_hashes.clear();
    ctx->reused_tokens = 0;
    ctx->logits.clear();
    if (st->logits()) ctx->logits.assign(st->logits()->begin(), st->logits()->end());
    ctx->logits_rows = rows;
    publish_full_pages(ctx);
    if (sampler) {
        sampler->params = sp;
        sampler->rng.set_state(rng);
    }
}

}  // namespace dsi
