#!/usr/bin/env python3
"""Write a 2-layer DeepSeek-V3.2 checkpoint at the released dimensions (1 dense layer +
1 MoE layer: hidden 7168, 128 heads, q_lora 1536, kv_lora 512, indexer 64 x 128 top-k
2048, 256 experts of 2048 with 8 per token, 1 shared) with random FP8 e4m3 weights and
128x128 float32 block scales, for benchmarks (docs/PERF.md). The vocabulary is cut to
4096 so that the numbers are the layers'. Not a reference: the weights mean nothing.

  python3 scripts/make_bench_checkpoint.py OUT_DIR        (needs torch + safetensors)
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
dev = "cuda" if torch.cuda.is_available() else "cpu"
g = torch.Generator(device=dev).manual_seed(1)
H, heads, qr, kvr, nope, rope, vd = 7168, 128, 1536, 512, 128, 64, 128
ih, idim, E, moe_inter, inter, vocab = 64, 128, 256, 2048, 18432, 4096
cfg = {
    "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
    "vocab_size": vocab, "hidden_size": H, "intermediate_size": inter, "moe_intermediate_size": moe_inter,
    "num_hidden_layers": 2, "first_k_dense_replace": 1, "num_attention_heads": heads, "num_key_value_heads": heads,
    "q_lora_rank": qr, "kv_lora_rank": kvr, "qk_nope_head_dim": nope, "qk_rope_head_dim": rope, "v_head_dim": vd,
    "n_routed_experts": E, "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8, "n_shared_experts": 1,
    "routed_scaling_factor": 2.5, "index_n_heads": ih, "index_head_dim": idim, "index_topk": 2048,
    "max_position_embeddings": 163840, "num_nextn_predict_layers": 0, "moe_layer_freq": 1,
    "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": True, "hidden_act": "silu",
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "rope_scaling": {"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "beta_fast": 32,
                     "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "attention_bias": False, "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128], "scale_fmt": "ue8m0"},
}
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
t = {}


def fp8(name, rows, cols):
    w = torch.randn(rows, cols, device=dev, generator=g).clamp_(-4, 4) * 64.0
    t[name] = w.to(torch.float8_e4m3fn).cpu()
    s = torch.full(((rows + 127) // 128, (cols + 127) // 128), 1.0 / (64.0 * cols ** 0.5), device=dev)
    t[name + "_scale_inv"] = s.float().cpu()


def vec(name, n, value=1.0):
    t[name] = torch.full((n,), value, dtype=torch.bfloat16)


def mlp(p, n_inter):
    fp8(p + ".gate_proj.weight", n_inter, H)
    fp8(p + ".up_proj.weight", n_inter, H)
    fp8(p + ".down_proj.weight", H, n_inter)


t["model.embed_tokens.weight"] = torch.randn(vocab, H, device=dev, generator=g).to(torch.bfloat16).cpu()
t["lm_head.weight"] = (torch.randn(vocab, H, device=dev, generator=g) / H ** 0.5).to(torch.bfloat16).cpu()
vec("model.norm.weight", H)
for l in range(2):
    p = f"model.layers.{l}."
    vec(p + "input_layernorm.weight", H)
    vec(p + "post_attention_layernorm.weight", H)
    a = p + "self_attn."
    fp8(a + "q_a_proj.weight", qr, H)
    vec(a + "q_a_layernorm.weight", qr)
    fp8(a + "q_b_proj.weight", heads * (nope + rope), qr)
    fp8(a + "kv_a_proj_with_mqa.weight", kvr + rope, H)
    vec(a + "kv_a_layernorm.weight", kvr)
    fp8(a + "kv_b_proj.weight", heads * (nope + vd), kvr)
    fp8(a + "o_proj.weight", H, heads * vd)
    fp8(a + "indexer.wq_b.weight", ih * idim, qr)
    fp8(a + "indexer.wk.weight", idim, H)
    vec(a + "indexer.k_norm.weight", idim)
    vec(a + "indexer.k_norm.bias", idim, 0.0)
    t[a + "indexer.weights_proj.weight"] = (torch.randn(ih, H, device=dev, generator=g) / H ** 0.5).to(torch.bfloat16).cpu()
    if l == 0:
        mlp(p + "mlp", inter)
    else:
        t[p + "mlp.gate.weight"] = (torch.randn(E, H, device=dev, generator=g) / H ** 0.5).to(torch.bfloat16).cpu()
        t[p + "mlp.gate.e_score_correction_bias"] = torch.zeros(E, dtype=torch.float32)
        for e in range(E):
            mlp(p + f"mlp.experts.{e}", moe_inter)
        mlp(p + "mlp.shared_experts", moe_inter)
save_file(t, os.path.join(out, "model.safetensors"))
print("wrote", out, sum(v.numel() * v.element_size() for v in t.values()) / 1e9, "GB")
