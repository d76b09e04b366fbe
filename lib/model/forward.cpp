// The DeepSeek-V3.2 forward pass, written once against the Backend interface.
//
//   x = embed(ids)
//   for each layer:
//     h = RMSNorm(x)
//     MLA:      q_lat = RMSNorm(q_a(h)); q = q_b(q_lat)  -> (nope | rope) per head
//               kv = kv_a(h) -> latent = RMSNorm(kv[:kv_lora]), k_rope = kv[kv_lora:]
//               RoPE (interleaved, last rope dims) on q_rope and k_rope
//     Indexer:  qi = wq_b(q_lat), ki = LayerNorm(wk(h)), RoPE (half-split, first dims),
//               w = weights_proj(h); I[t,s] = sum_h w*ReLU(qi.ki) -> causal top-k
//     Attention (absorbed MQA over the latent cache, selected tokens only):
//               q_latent = W_UK^T q_nope; p = softmax(scale*(q_latent.latent + q_rope.k_rope))
//               o = o_proj(W_UV (p . latent))
//     x += o
//     h = RMSNorm(x); x += MoE(h) (sigmoid router, group-limited top-k, shared expert)
//                     or dense MLP(h) for the first first_k_dense_replace layers
//   logits = lm_head(RMSNorm(x))
//
// Mirrors transformers' modeling_deepseek_v32.py (DeepseekV32Attention / Indexer /
// TopkRouter); see the comments at each step.
#include "model/model.h"

#include "common/error.h"
#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dsi {

std::unique_ptr<Model> load_model(const std::string &dir, std::unique_ptr<Backend> backend,
                                  const std::function<bool(float)> &progress) {
    auto m = std::make_unique<Model>();
    m->cfg = load_config(dir);
    m->checkpoint = Checkpoint::open(dir);
    m->backend = std::move(backend);
    m->weights = load_weights(m->cfg, *m->checkpoint, *m->backend, progress);
    m->mla_scale = mla_softmax_scale(m->cfg);
    if (m->cfg.is_sparse()) {
        m->index_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(m->cfg.index_head_dim)));
        m->index_weight_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(m->cfg.index_n_heads)));
    }
    return m;
}

KvCache make_cache(const Model &m, int64_t n_ctx) {
    const ModelConfig &c = m.cfg;
    Backend &be = *m.backend;
    KvCache kv;
    kv.n_ctx = n_ctx;
    const size_t f = sizeof(float);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
        LayerCache lc;
        lc.latent = be.alloc(n_ctx * c.kv_lora_rank * f);
        lc.k_rope = be.alloc(n_ctx * c.qk_rope_head_dim * f);
        if (c.is_sparse()) lc.index_keys = be.alloc(n_ctx * c.index_head_dim * f);
        kv.layers.push_back(std::move(lc));
    }
    std::vector<float> cos, sin;
    rope_tables(rope_frequencies(c), n_ctx, cos, sin);
    kv.rope_cos = be.alloc(cos.size() * f);
    kv.rope_sin = be.alloc(sin.size() * f);
    be.from_host(cos.data(), cos.size() * f, kv.rope_cos.f32());
    be.from_host(sin.data(), sin.size() * f, kv.rope_sin.f32());
    kv.rope = RopeTable{kv.rope_cos.f32(), kv.rope_sin.f32(), c.qk_rope_head_dim / 2};
    return kv;
}

namespace {

// Activations of one forward call of T tokens.
struct Scratch {
    Buffer x, h, q_lat, q, kv, q_latent, q_rope, attn_lat, attn, o;
    Buffer iq, ik, iw, select, select_count;
    Buffer expert_ids, expert_weights, mlp_out, shared_out;

    // `topk`: the indexer's selections per query, index_topk capped at the cache length.
    Scratch(const ModelConfig &c, Backend &be, int64_t T, int64_t topk) {
        const size_t f = sizeof(float);
        const int64_t heads = c.num_attention_heads;
        x = be.alloc(T * c.hidden_size * f);
        h = be.alloc(T * c.hidden_size * f);
        q_lat = be.alloc(T * std::max<int64_t>(c.q_lora_rank, 1) * f);
        q = be.alloc(T * heads * c.qk_head_dim() * f);
        kv = be.alloc(T * (c.kv_lora_rank + c.qk_rope_head_dim) * f);
        q_latent = be.alloc(T * heads * c.kv_lora_rank * f);
        q_rope = be.alloc(T * heads * c.qk_rope_head_dim * f);
        attn_lat = be.alloc(T * heads * c.kv_lora_rank * f);
        attn = be.alloc(T * heads * c.v_head_dim * f);
        o = be.alloc(T * c.hidden_size * f);
        if (c.is_sparse()) {
            iq = be.alloc(T * c.index_n_heads * c.index_head_dim * f);
            ik = be.alloc(T * c.index_head_dim * f);
            iw = be.alloc(T * c.index_n_heads * f);
            select = be.alloc(T * topk * sizeof(int32_t));
            select_count = be.alloc(T * sizeof(int32_t));
        }
        if (c.n_routed_experts > 0) {
            expert_ids = be.alloc(T * c.num_experts_per_tok * sizeof(int32_t));
            expert_weights = be.alloc(T * c.num_experts_per_tok * f);
            shared_out = be.alloc(T * c.hidden_size * f);
        }
        mlp_out = be.alloc(T * c.hidden_size * f);
    }
};

template <class T>
std::vector<T> download(Backend &be, const void *src, size_t count) {
    std::vector<T> host(count);
    be.to_host(src, count * sizeof(T), host.data());
    return host;
}

class LayerRunner {
public:
    LayerRunner(const Model &m, KvCache &cache, Scratch &s, const ForwardRequest &r)
        : m_(m), c_(m.cfg), be_(*m.backend), cache_(cache), s_(s), r_(r), T_(r.tokens), pos_(r.first_pos),
          topk_(selection_size(m.cfg, cache)) {}

    // A query sees at most n_ctx tokens, so a larger index_topk selects them all: capping
    // it keeps the selection buffers proportional to the context, whatever the config says.
    static int64_t selection_size(const ModelConfig &c, const KvCache &cache) {
        return std::min(c.index_topk, cache.n_ctx);
    }

    void run(int64_t l) {
        const LayerWeights &w = m_.weights.layers[static_cast<size_t>(l)];
        LayerCache &lc = cache_.layers[static_cast<size_t>(l)];
        be_.rms_norm(s_.x.f32(), w.input_norm.f32(), T_, c_.hidden_size, rms_eps(), s_.h.f32());
        attention(l, w, lc);
        be_.add(s_.x.f32(), s_.o.f32(), T_ * c_.hidden_size);
        be_.rms_norm(s_.x.f32(), w.post_attention_norm.f32(), T_, c_.hidden_size, rms_eps(), s_.h.f32());
        if (w.moe)
            moe(l, *w.moe);
        else
            be_.mlp(s_.h.f32(), T_, w.dense, s_.mlp_out.f32());
        be_.add(s_.x.f32(), s_.mlp_out.f32(), T_ * c_.hidden_size);
    }

private:
    float rms_eps() const { return static_cast<float>(c_.rms_norm_eps); }

    void attention(int64_t l, const LayerWeights &w, LayerCache &lc) {
        const int64_t heads = c_.num_attention_heads, qk = c_.qk_head_dim(), nope = c_.qk_nope_head_dim;
        const int64_t rope = c_.qk_rope_head_dim, rank = c_.kv_lora_rank;

        // ---- queries: q [T, heads, nope | rope] ----
        if (w.q_a) {
            be_.linear(s_.h.f32(), T_, *w.q_a, s_.q_lat.f32());  // [T, q_lora]
            be_.rms_norm(s_.q_lat.f32(), w.q_a_norm.f32(), T_, c_.q_lora_rank, rms_eps(), s_.q_lat.f32());
            be_.linear(s_.q_lat.f32(), T_, *w.q_b, s_.q.f32());
        } else {
            be_.linear(s_.h.f32(), T_, *w.q_proj, s_.q.f32());
        }
        be_.rope(HeadView{s_.q.f32(), T_, heads * qk, heads, qk, nope}, rope, RopeStyle::Interleaved, pos_,
                 cache_.rope);

        // ---- latent KV: kv [T, kv_lora | rope] -> cache rows [pos, pos+T) ----
        be_.linear(s_.h.f32(), T_, *w.kv_a, s_.kv.f32());
        float *latent = lc.latent.f32() + pos_ * rank;
        be_.copy_rows(s_.kv.f32(), rank + rope, T_, rank, latent, rank);
        be_.rms_norm(latent, w.kv_a_norm.f32(), T_, rank, rms_eps(), latent);
        be_.rope(HeadView{s_.kv.f32(), T_, rank + rope, 1, 0, rank}, rope, RopeStyle::Interleaved, pos_,
                 cache_.rope);
        be_.copy_rows(s_.kv.f32() + rank, rank + rope, T_, rope, lc.k_rope.f32() + pos_ * rope, rope);

        // ---- DSA indexer: which earlier tokens each query attends to ----
        const bool sparse = w.indexer != nullptr;
        if (sparse) indexer(l, *w.indexer, lc);

        // ---- attention in absorbed form over the latent cache ----
        be_.mla_absorb_q(HeadView{s_.q.f32(), T_, heads * qk, heads, qk, 0}, *w.kv_b, nope, c_.v_head_dim,
                         s_.q_latent.f32());
        be_.copy_rows(s_.q.f32() + nope, qk, T_ * heads, rope, s_.q_rope.f32(), rope);
        SparseMlaParams p;
        p.q_latent = s_.q_latent.f32();
        p.q_rope = s_.q_rope.f32();
        p.latent = lc.latent.f32();
        p.k_rope = lc.k_rope.f32();
        p.select = sparse ? s_.select.i32() : nullptr;
        p.select_count = sparse ? s_.select_count.i32() : nullptr;
        p.select_stride = topk_;
        p.tokens = T_;
        p.first_pos = pos_;
        p.heads = heads;
        p.kv_lora_rank = rank;
        p.rope_dim = rope;
        p.scale = m_.mla_scale;
        p.out = s_.attn_lat.f32();
        be_.sparse_mla(p);
        be_.mla_apply_v(s_.attn_lat.f32(), T_, heads, *w.kv_b, nope, c_.v_head_dim, s_.attn.f32());
        be_.linear(s_.attn.f32(), T_, *w.o, s_.o.f32());
    }

    void indexer(int64_t l, const IndexerWeights &ix, LayerCache &lc) {
        const int64_t ih = c_.index_n_heads, id = c_.index_head_dim, rope = c_.qk_rope_head_dim;
        // q from the normalised q latent that MLA also uses: [T, ih, id], rope first.
        be_.linear(s_.q_lat.f32(), T_, *ix.wq_b, s_.iq.f32());
        be_.rope(HeadView{s_.iq.f32(), T_, ih * id, ih, id, 0}, rope, RopeStyle::HalfSplit, pos_, cache_.rope);
        // One key per token shared by all heads: LayerNorm(wk(h)) with bias, eps 1e-6.
        be_.linear(s_.h.f32(), T_, *ix.wk, s_.ik.f32());
        be_.layer_norm(s_.ik.f32(), ix.k_norm_weight.f32(), ix.k_norm_bias.f32(), T_, id, 1e-6f, s_.ik.f32());
        be_.rope(HeadView{s_.ik.f32(), T_, id, 1, 0, 0}, rope, RopeStyle::HalfSplit, pos_, cache_.rope);
        be_.copy_rows(s_.ik.f32(), id, T_, id, lc.index_keys.f32() + pos_ * id, id);
        be_.linear(s_.h.f32(), T_, *ix.weights_proj, s_.iw.f32());  // [T, ih]

        IndexerTopkParams p;
        p.q = s_.iq.f32();
        p.weights = s_.iw.f32();
        p.weight_scale = m_.index_weight_scale;
        p.keys = lc.index_keys.f32();
        p.tokens = T_;
        p.first_pos = pos_;
        p.heads = ih;
        p.dim = id;
        p.topk = topk_;
        p.scale = m_.index_scale;
        p.select = s_.select.i32();
        p.select_count = s_.select_count.i32();
        be_.indexer_topk(p);
        if (r_.observer) {
            auto sel = download<int32_t>(be_, p.select, static_cast<size_t>(T_ * p.topk));
            auto cnt = download<int32_t>(be_, p.select_count, static_cast<size_t>(T_));
            r_.observer->indexer_selection(l, sel.data(), cnt.data(), T_, p.topk);
        }
    }

    void moe(int64_t l, const MoeWeights &w) {
        MoeRouteParams p;
        p.x = s_.h.f32();
        p.gate = w.gate.get();
        p.bias = w.correction_bias.f32();
        p.tokens = T_;
        p.n_experts = c_.n_routed_experts;
        p.n_group = c_.n_group;
        p.topk_group = c_.topk_group;
        p.top_k = c_.num_experts_per_tok;
        p.norm_topk_prob = c_.norm_topk_prob;
        p.routed_scaling_factor = static_cast<float>(c_.routed_scaling_factor);
        p.expert_ids = s_.expert_ids.i32();
        p.expert_weights = s_.expert_weights.f32();
        be_.moe_route(p);
        if (r_.observer) {
            auto ids = download<int32_t>(be_, p.expert_ids, static_cast<size_t>(T_ * p.top_k));
            r_.observer->experts(l, ids.data(), T_, p.top_k);
        }
        be_.moe_experts(s_.h.f32(), T_, c_.hidden_size, p.expert_ids, p.expert_weights, p.top_k,
                        w.experts.data(), c_.n_routed_experts, s_.mlp_out.f32());
        if (c_.n_shared_experts > 0) {
            be_.mlp(s_.h.f32(), T_, w.shared, s_.shared_out.f32());
            be_.add(s_.mlp_out.f32(), s_.shared_out.f32(), T_ * c_.hidden_size);
        }
    }

    const Model &m_;
    const ModelConfig &c_;
    Backend &be_;
    KvCache &cache_;
    Scratch &s_;
    const ForwardRequest &r_;
    const int64_t T_, pos_, topk_;
};

}  // namespace

void forward(const Model &m, KvCache &cache, const ForwardRequest &r) {
    const ModelConfig &c = m.cfg;
    Backend &be = *m.backend;
    const int64_t T = r.tokens, H = c.hidden_size;
    Scratch s(c, be, T, LayerRunner::selection_size(c, cache));
    auto observe = [&](auto &&fn) {
        if (!r.observer) return;
        auto host = download<float>(be, s.x.f32(), static_cast<size_t>(T * H));
        fn(host.data());
    };

    be.embed(*m.weights.embed, r.ids, T, s.x.f32());
    observe([&](const float *x) { r.observer->embedding(x, T, H); });
    LayerRunner layers(m, cache, s, r);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
        if (r.should_abort && r.should_abort()) fail(DSI_ERR_CANCELLED, "evaluation aborted by the abort callback");
        layers.run(l);
        observe([&](const float *x) { r.observer->layer_output(l, x, T, H); });
    }
    be.rms_norm(s.x.f32(), m.weights.final_norm.f32(), T, H, static_cast<float>(c.rms_norm_eps), s.x.f32());
    observe([&](const float *x) { r.observer->final_norm(x, T, H); });

    const int64_t rows = r.all_logits ? T : 1;
    const float *last = s.x.f32() + (T - rows) * H;
    Buffer logits = be.alloc(static_cast<size_t>(rows * c.vocab_size) * sizeof(float));
    be.linear(last, rows, *m.weights.lm_head, logits.f32());
    be.to_host(logits.f32(), static_cast<size_t>(rows * c.vocab_size) * sizeof(float), r.logits);
}

}  // namespace dsi
