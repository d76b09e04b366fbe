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
    // Angles of every position the model accepts, shared by all contexts.
    Backend &be = *m->backend;
    std::vector<float> cos, sin;
    rope_tables(rope_frequencies(m->cfg), m->cfg.max_position_embeddings, cos, sin);
    m->rope_cos = be.alloc(cos.size() * sizeof(float));
    m->rope_sin = be.alloc(sin.size() * sizeof(float));
    be.from_host(cos.data(), cos.size() * sizeof(float), m->rope_cos.f32());
    be.from_host(sin.data(), sin.size() * sizeof(float), m->rope_sin.f32());
    m->rope = RopeTable{m->rope_cos.f32(), m->rope_sin.f32(), m->cfg.qk_rope_head_dim / 2};
    return m;
}

CacheDims cache_dims(const ModelConfig &c) {
    CacheDims d;
    d.layers = c.num_hidden_layers;
    d.kv_lora_rank = c.kv_lora_rank;
    d.rope_dim = c.qk_rope_head_dim;
    d.index_dim = c.is_sparse() ? c.index_head_dim : 0;
    return d;
}

BatchArrays::BatchArrays(Backend &be, const ForwardBatch &b) {
    const int64_t T = b.rows, pt = b.n_seqs * b.page_table_stride;
    std::vector<int32_t> host;
    host.reserve(static_cast<size_t>(4 * T + pt + b.n_logits));
    host.insert(host.end(), b.ids, b.ids + T);
    host.insert(host.end(), b.row_pos, b.row_pos + T);
    host.insert(host.end(), b.row_seq, b.row_seq + T);
    host.insert(host.end(), b.slots, b.slots + T);
    host.insert(host.end(), b.page_table, b.page_table + pt);
    host.insert(host.end(), b.logit_rows, b.logit_rows + b.n_logits);
    storage = be.alloc(host.size() * sizeof(int32_t));
    be.from_host(host.data(), host.size() * sizeof(int32_t), storage.i32());
    const int32_t *p = storage.i32();
    ids = p;
    row_pos = p + T;
    row_seq = p + 2 * T;
    slots = p + 3 * T;
    page_table = p + 4 * T;
    logit_rows = page_table + pt;
}

namespace {

// Activations of one forward call of T tokens.
struct Scratch {
    Buffer x, h, q_lat, q, kv, latent, q_latent, q_rope, attn_lat, attn, o;
    Buffer iq, ik, iw, select, select_slots;
    Buffer expert_ids, expert_weights, mlp_out, shared_out;

    // `topk`: the indexer's selections per row (selection_size()).
    Scratch(const ModelConfig &c, Backend &be, int64_t T, int64_t topk) {
        const size_t f = sizeof(float);
        const int64_t heads = c.num_attention_heads;
        x = be.alloc(T * c.hidden_size * f);
        h = be.alloc(T * c.hidden_size * f);
        q_lat = be.alloc(T * std::max<int64_t>(c.q_lora_rank, 1) * f);
        q = be.alloc(T * heads * c.qk_head_dim() * f);
        kv = be.alloc(T * (c.kv_lora_rank + c.qk_rope_head_dim) * f);
        latent = be.alloc(T * c.kv_lora_rank * f);
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
            select_slots = be.alloc(T * topk * sizeof(int32_t));
        }
        if (c.n_routed_experts > 0) {
            expert_ids = be.alloc(T * c.num_experts_per_tok * sizeof(int32_t));
            expert_weights = be.alloc(T * c.num_experts_per_tok * f);
            shared_out = be.alloc(T * c.hidden_size * f);
        }
        mlp_out = be.alloc(T * c.hidden_size * f);
    }
};

// A row at position p sees p + 1 tokens, so a larger index_topk selects them all:
// capping it at the batch's longest view keeps the selection buffers proportional to the
// context, whatever the config says (index_topk may be up to max_position_embeddings).
int64_t selection_size(const ModelConfig &c, const ForwardBatch &b) {
    int64_t longest = 1;
    for (int64_t r = 0; r < b.rows; ++r) longest = std::max<int64_t>(longest, int64_t(b.row_pos[r]) + 1);
    return std::min(c.index_topk, longest);
}

template <class T>
std::vector<T> download(Backend &be, const void *src, size_t count) {
    std::vector<T> host(count);
    be.to_host(src, count * sizeof(T), host.data());
    return host;
}

class LayerRunner {
public:
    LayerRunner(const Model &m, CachePool &pool, Scratch &s, const BatchArrays &a, const ForwardBatch &b)
        : m_(m), c_(m.cfg), be_(*m.backend), pool_(pool), s_(s), a_(a), b_(b), T_(b.rows),
          topk_(selection_size(m.cfg, b)) {
        seqs_.row_seq = a.row_seq;
        seqs_.row_pos = a.row_pos;
        seqs_.page_table = a.page_table;
        seqs_.page_table_stride = b.page_table_stride;
        seqs_.n_seqs = b.n_seqs;
    }

    void run(int64_t l) {
        const LayerWeights &w = m_.weights.layers[static_cast<size_t>(l)];
        be_.rms_norm(s_.x.f32(), w.input_norm.f32(), T_, c_.hidden_size, rms_eps(), s_.h.f32());
        attention(l, w);
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

    void attention(int64_t l, const LayerWeights &w) {
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
        be_.rope(HeadView{s_.q.f32(), T_, heads * qk, heads, qk, nope}, rope, RopeStyle::Interleaved, a_.row_pos,
                 m_.rope);

        // ---- latent KV: kv [T, kv_lora | rope] ----
        be_.linear(s_.h.f32(), T_, *w.kv_a, s_.kv.f32());
        be_.copy_rows(s_.kv.f32(), rank + rope, T_, rank, s_.latent.f32(), rank);
        be_.rms_norm(s_.latent.f32(), w.kv_a_norm.f32(), T_, rank, rms_eps(), s_.latent.f32());
        be_.rope(HeadView{s_.kv.f32(), T_, rank + rope, 1, 0, rank}, rope, RopeStyle::Interleaved, a_.row_pos,
                 m_.rope);

        // ---- DSA indexer keys, then every row's entries into its cache slot ----
        const bool sparse = w.indexer != nullptr;
        if (sparse) indexer_key(*w.indexer);
        CacheStoreParams st;
        st.mla_pages = pool_.mla[static_cast<size_t>(l)];
        st.index_pages = sparse ? pool_.index[static_cast<size_t>(l)] : nullptr;
        st.slots = a_.slots;
        st.rows = T_;
        st.latent = s_.latent.f32();
        st.latent_stride = rank;
        st.k_rope = s_.kv.f32() + rank;
        st.k_rope_stride = rank + rope;
        st.index_key = sparse ? s_.ik.f32() : nullptr;
        st.kv_lora_rank = rank;
        st.rope_dim = rope;
        st.index_dim = sparse ? c_.index_head_dim : 0;
        be_.cache_store(st);

        // ---- DSA indexer: which earlier tokens each query attends to ----
        if (sparse) indexer(l, *w.indexer);

        // ---- attention in absorbed form over the latent cache ----
        be_.mla_absorb_q(HeadView{s_.q.f32(), T_, heads * qk, heads, qk, 0}, *w.kv_b, nope, c_.v_head_dim,
                         s_.q_latent.f32());
        be_.copy_rows(s_.q.f32() + nope, qk, T_ * heads, rope, s_.q_rope.f32(), rope);
        SparseMlaParams p;
        p.q_latent = s_.q_latent.f32();
        p.q_rope = s_.q_rope.f32();
        p.mla_pages = pool_.mla[static_cast<size_t>(l)];
        p.select = sparse ? s_.select_slots.i32() : nullptr;
        p.select_stride = topk_;
        p.seqs = seqs_;
        p.tokens = T_;
        p.heads = heads;
        p.kv_lora_rank = rank;
        p.rope_dim = rope;
        p.scale = m_.mla_scale;
        p.out = s_.attn_lat.f32();
        be_.sparse_mla(p);
        be_.mla_apply_v(s_.attn_lat.f32(), T_, heads, *w.kv_b, nope, c_.v_head_dim, s_.attn.f32());
        be_.linear(s_.attn.f32(), T_, *w.o, s_.o.f32());
    }

    // One key per token shared by all heads: LayerNorm(wk(h)) with bias, eps 1e-6, rope.
    void indexer_key(const IndexerWeights &ix) {
        const int64_t id = c_.index_head_dim;
        be_.linear(s_.h.f32(), T_, *ix.wk, s_.ik.f32());
        be_.layer_norm(s_.ik.f32(), ix.k_norm_weight.f32(), ix.k_norm_bias.f32(), T_, id, 1e-6f, s_.ik.f32());
        be_.rope(HeadView{s_.ik.f32(), T_, id, 1, 0, 0}, c_.qk_rope_head_dim, RopeStyle::HalfSplit, a_.row_pos,
                 m_.rope);
    }

    void indexer(int64_t l, const IndexerWeights &ix) {
        const int64_t ih = c_.index_n_heads, id = c_.index_head_dim, rope = c_.qk_rope_head_dim;
        // q from the normalised q latent that MLA also uses: [T, ih, id], rope first.
        be_.linear(s_.q_lat.f32(), T_, *ix.wq_b, s_.iq.f32());
        be_.rope(HeadView{s_.iq.f32(), T_, ih * id, ih, id, 0}, rope, RopeStyle::HalfSplit, a_.row_pos, m_.rope);
        be_.linear(s_.h.f32(), T_, *ix.weights_proj, s_.iw.f32());  // [T, ih]

        IndexerTopkParams p;
        p.q = s_.iq.f32();
        p.weights = s_.iw.f32();
        p.weight_scale = m_.index_weight_scale;
        p.index_pages = pool_.index[static_cast<size_t>(l)];
        p.seqs = seqs_;
        p.tokens = T_;
        p.heads = ih;
        p.dim = id;
        p.topk = topk_;
        p.scale = m_.index_scale;
        p.select = s_.select.i32();
        p.select_slots = s_.select_slots.i32();
        be_.indexer_topk(p);
        if (b_.observer) {
            auto sel = download<int32_t>(be_, p.select, static_cast<size_t>(T_ * p.topk));
            std::vector<int32_t> cnt(static_cast<size_t>(T_), 0);
            for (int64_t t = 0; t < T_; ++t)
                while (cnt[t] < p.topk && sel[t * p.topk + cnt[t]] >= 0) ++cnt[t];
            b_.observer->indexer_selection(l, sel.data(), cnt.data(), T_, p.topk);
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
        if (b_.observer) {
            auto ids = download<int32_t>(be_, p.expert_ids, static_cast<size_t>(T_ * p.top_k));
            b_.observer->experts(l, ids.data(), T_, p.top_k);
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
    CachePool &pool_;
    Scratch &s_;
    const BatchArrays &a_;
    const ForwardBatch &b_;
    const int64_t T_, topk_;
    RowSequences seqs_;
};

}  // namespace

void forward_device(const Model &m, CachePool &pool, const ForwardBatch &b, const BatchArrays &a, float *logits) {
    const ModelConfig &c = m.cfg;
    Backend &be = *m.backend;
    const int64_t T = b.rows, H = c.hidden_size;
    Scratch s(c, be, T, selection_size(c, b));
    auto observe = [&](auto &&fn) {
        if (!b.observer) return;
        auto host = download<float>(be, s.x.f32(), static_cast<size_t>(T * H));
        fn(host.data());
    };

    be.embed(*m.weights.embed, a.ids, T, s.x.f32());
    observe([&](const float *x) { b.observer->embedding(x, T, H); });
    LayerRunner layers(m, pool, s, a, b);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
        if (b.should_abort && b.should_abort()) fail(DSI_ERR_CANCELLED, "evaluation aborted by the abort callback");
        layers.run(l);
        observe([&](const float *x) { b.observer->layer_output(l, x, T, H); });
    }
    be.rms_norm(s.x.f32(), m.weights.final_norm.f32(), T, H, static_cast<float>(c.rms_norm_eps), s.x.f32());
    observe([&](const float *x) { b.observer->final_norm(x, T, H); });

    if (b.n_logits == 0) return;
    Buffer rows = be.alloc(static_cast<size_t>(b.n_logits * H) * sizeof(float));
    be.gather_rows(s.x.f32(), a.logit_rows, b.n_logits, H, rows.f32());
    be.linear(rows.f32(), b.n_logits, *m.weights.lm_head, logits);
}

void forward(const Model &m, CachePool &pool, const ForwardBatch &b) {
    Backend &be = *m.backend;
    const BatchArrays a(be, b);
    const size_t logit_bytes = static_cast<size_t>(b.n_logits * m.cfg.vocab_size) * sizeof(float);
    Buffer logits = b.n_logits > 0 ? be.alloc(logit_bytes) : Buffer();
    forward_device(m, pool, b, a, logits.f32());
    if (b.n_logits > 0) be.to_host(logits.f32(), logit_bytes, b.logits);
}

}  // namespace dsi
