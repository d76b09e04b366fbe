#!/usr/bin/env python3
"""Make tests/data/sweep: seeded random *valid* DeepSeek-V3 / V3.2 configurations in the
released Hugging Face layout, and what stock transformers computes for each in float64.

Not part of the library or of CI. Needs PyTorch, Hugging Face `transformers` (written
against 5.17: DeepseekV3ForCausalLM and DeepseekV32ForCausalLM) and `safetensors`; a CUDA
GPU if there is one, else the CPU (slower). One command makes everything:

  python3 scripts/make_reference_sweep.py --out DIR [--source-dump FILE]

Each case draws every axis the config allows (see draw_config): V3 or V3.2; 1..8 heads;
every rank and head dim below 128, at 128 or above it (partial FP8 blocks in both
directions); q_lora_rank null (q_proj, V3 only: the V3.2 indexer reads the q latent);
n_group / topk_group from 1 to n_group, 2..8 experts per group, num_experts_per_tok up
to topk_group * experts per group; 0..2 shared experts; first_k_dense_replace 0..L;
norm_topk_prob; rope_theta; plain RoPE or YaRN with `factor` equal to or different from
max_position_embeddings / original_max_position_embeddings, mscale / mscale_all_dim
equal, different or absent, written in the legacy `rope_scaling` form or the newer
`rope_parameters` form (the latter as save_pretrained writes it); index_topk below and
above the prompt lengths; FP8 (128x128 block scales) or bf16.

Weights are random (reference_common.init_weights, as for tests/data/refdims), exported by the
FP8 quantiser and expert unfusing of scripts/train_demo_model.py (loaded from its syntax
tree by scripts/reference_common.py), loaded back dequantised and run by stock
transformers (config read back with from_pretrained from the written config.json; eager
attention, eager experts, no cache) in float64.

Per case, two prompts: `short` (5..12 tokens) and `long` (longer than
original_max_position_embeddings and, for most V3.2 cases, than index_topk). Prompts are
accepted only when (golden README rule) every indexer top-k boundary and every expert
boundary (group stage and expert stage) has a relative gap >= 2e-5 recomputed in float64,
float32 and float64 choose the same sets and greedy ids, and every greedy step has a
top-2 logit gap >= 1e-3; otherwise the next prompt seed is tried, then a new weight seed.

Written to --out: caseNN/ (config.json, model.safetensors.index.json, shards,
reference.safetensors) and cases.json (what each case covers). reference.safetensors
holds for P in short, long: P.input_ids, P.logits [T, vocab], P.L{l}.topk (V3.2),
P.L{l}.experts (MoE layers); long.L{l}.out [T, hidden]; long.greedy_ids and
long.greedy_logits (greedy continuation recomputed from scratch at every step).
"""

import argparse
import inspect
import json
import math
import os
import random
import re
import shutil
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_common as rc  # noqa: E402
from reference_common import log  # noqa: E402


ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--cases", type=int, default=26)
ap.add_argument("--budget-sec", type=float, default=400, help="stop drawing configs after this")
ap.add_argument("--seed", type=int, default=8, help="seeds every config draw")
ap.add_argument("--steps", type=int, default=5, help="greedy steps after the long prompt")
ap.add_argument("--batch", type=int, default=16, help="prompt seeds screened per forward")
ap.add_argument("--prompt-tries", type=int, default=64, help="prompt seeds per weight seed")
ap.add_argument("--weight-tries", type=int, default=3, help="weight seeds per config")
ap.add_argument("--min-rel-gap", type=float, default=2e-5)
ap.add_argument("--min-logit-gap", type=float, default=1e-3)
ap.add_argument("--max-bytes", type=int, default=200_000, help="stored weight bytes per case at most")
ap.add_argument("--source-dump", default=None, help="write the transformers source this relies on here")
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
args = ap.parse_args()
os.makedirs(args.out, exist_ok=True)

import transformers  # noqa: E402
import safetensors  # noqa: E402
from safetensors.torch import save_file, load_file  # noqa: E402
from transformers import (DeepseekV3Config, DeepseekV3ForCausalLM,  # noqa: E402
                          DeepseekV32Config, DeepseekV32ForCausalLM)
import transformers.models.deepseek_v32.modeling_deepseek_v32 as MOD32  # noqa: E402
import transformers.models.deepseek_v3.modeling_deepseek_v3 as MOD3  # noqa: E402

dev = torch.device(args.device)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
VERSIONS = {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "safetensors": safetensors.__version__,
            "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"}
log("versions", VERSIONS)

TD = rc.load_train_demo(["quantize_fp8", "dequantize_fp8", "unfuse_experts", "fuse_experts", "indexer_scores"],
                        {"torch": torch, "F": torch.nn.functional, "math": math, "re": re, "MOD": MOD32})
# The released FP8 checkpoints quantise every projection (DeepSeek's Linear); train_demo's
# pattern has no q_proj (V3.2 always has q_lora), so add it.
FP8_RE = re.compile(TD["FP8_RE"].pattern + r"|self_attn\.q_proj\.weight$")

# ----------------------------------------------------------------------------------
# The transformers source these references depend on, for the record
# ----------------------------------------------------------------------------------

if args.source_dump:
    import transformers.modeling_rope_utils as RU
    parts = []

    def dump(obj, name):
        try:
            parts.append("#### %s\n%s" % (name, inspect.getsource(obj)))
        except (TypeError, OSError) as e:
            parts.append("#### %s: no source (%s)" % (name, e))

    dump(RU._compute_yarn_parameters, "modeling_rope_utils._compute_yarn_parameters")
    for n in dir(RU):
        if "standardize" in n.lower() or n == "RotaryEmbeddingConfigMixin":
            dump(getattr(RU, n), "modeling_rope_utils." + n)
    for mod, tag in ((MOD3, "v3"), (MOD32, "v32")):
        for n in sorted(dir(mod)):
            if re.search(r"(Attention|TopkRouter|MoE|RotaryEmbedding|Indexer)$", n) or n in ("yarn_get_mscale",):
                dump(getattr(mod, n), "%s.%s" % (tag, n))
    for n in dir(transformers.PretrainedConfig):
        if "rope" in n.lower() and callable(getattr(transformers.PretrainedConfig, n)):
            dump(getattr(transformers.PretrainedConfig, n), "PretrainedConfig." + n)
    dump(DeepseekV3Config.__init__, "DeepseekV3Config.__init__")
    dump(DeepseekV32Config.__init__, "DeepseekV32Config.__init__")
    with open(args.source_dump, "w") as f:
        f.write("\n\n".join(parts))
    log("wrote %s (%d bytes)" % (args.source_dump, sum(len(p) for p in parts)))

# ----------------------------------------------------------------------------------
# Config draw
# ----------------------------------------------------------------------------------


def dim_of(r, cls, lo=8, even=False, hi=120):
    """cls 0: below 128 (lo..hi), 1: exactly 128, 2: above 128 and not a multiple of it."""
    if cls == 0:
        v = r.randint(lo, max(lo, hi))
    elif cls == 1:
        v = 128
    else:
        v = r.randint(130, 200)
    if even and v % 2:
        v += 1
    return v


def draw_config(i, r):
    """Config i of the sweep. Axes cycle with i (so that every value is covered) and the
    rest is random; draws whose weights exceed --max-bytes are redrawn."""
    v32 = i % 3 != 2
    fp8 = i % 5 != 4
    heads = 1 + i % 8
    legacy = i % 2 == 0
    factor_is_ratio = (i // 2) % 2 == 0
    for attempt in range(500):
        hi = int(120 * 0.99 ** attempt)  # redraws shrink the dims that are not above 128
        big = r.sample(["q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                        "index_head_dim", "hidden_size", "intermediate_size", "moe_intermediate_size"], 2)
        if i % 5 == 2:  # a wide hidden_size costs every matrix: forced now and then
            big[0] = "hidden_size"

        def cls(name):
            return 2 if name in big else (1 if r.random() < 0.1 else 0)

        def dim(name, lo=8, even=False):
            return dim_of(r, cls(name), lo, even, hi)

        d = {"architectures": ["DeepseekV32ForCausalLM" if v32 else "DeepseekV3ForCausalLM"],
             "model_type": "deepseek_v32" if v32 else "deepseek_v3"}
        d["vocab_size"] = r.randint(96, 160)
        d["hidden_size"] = dim("hidden_size", lo=32)
        d["intermediate_size"] = dim("intermediate_size", lo=16)
        d["moe_intermediate_size"] = dim("moe_intermediate_size") if "moe_intermediate_size" in big \
            else r.randint(4, 24)
        L = 1 + (i // 4 + i) % 3
        d["num_hidden_layers"] = L
        d["first_k_dense_replace"] = [0, L, r.randint(0, L)][(i // 2) % 3]
        d["num_attention_heads"] = heads
        d["num_key_value_heads"] = heads
        no_q_lora = not v32 and r.random() < 0.6
        d["q_lora_rank"] = None if no_q_lora else dim("q_lora_rank")
        d["kv_lora_rank"] = dim("kv_lora_rank")
        d["qk_nope_head_dim"] = dim("qk_nope_head_dim", lo=4)
        d["qk_rope_head_dim"] = dim("qk_rope_head_dim", even=True) if "qk_rope_head_dim" in big \
            else 2 * r.randint(1, max(1, hi // 4))
        d["v_head_dim"] = dim("v_head_dim", lo=4)
        n_group = r.randint(1, 4)
        per_group = r.randint(2, 8)
        d["n_routed_experts"] = n_group * per_group
        d["n_group"] = n_group
        d["topk_group"] = r.randint(1, n_group)
        most = d["topk_group"] * per_group
        d["num_experts_per_tok"] = most if r.random() < 0.25 else r.randint(1, most)
        d["n_shared_experts"] = r.randint(0, 2)
        d["routed_scaling_factor"] = round(r.uniform(1.0, 2.5), 2)
        d["norm_topk_prob"] = r.random() < 0.6
        d["topk_method"] = "noaux_tc"
        d["scoring_func"] = "sigmoid"
        d["moe_layer_freq"] = 1
        d["hidden_act"] = "silu"
        d["rms_norm_eps"] = 1e-6
        d["attention_bias"] = False
        d["bos_token_id"] = 0
        d["eos_token_id"] = 1
        d["tie_word_embeddings"] = False
        d["num_nextn_predict_layers"] = 0
        theta = r.choice([10000.0, 10000.0, 50000.0, 2500.0, float(r.randint(500, 100000))])
        # RoPE: plain, or YaRN with the factor equal to / different from max/original
        # and mscale / mscale_all_dim equal, different or absent.
        if i % 11 == 10:
            rope = {"rope_type": "default"}
            original = r.randint(16, 40)
            d["max_position_embeddings"] = r.choice([4 * original, 4096])
        else:
            factor = r.choice([1.5, 2.0, 4.0, 8.0, 40.0])
            # room for the long prompt and its continuation below max_position_embeddings
            original = r.randint(24 if factor_is_ratio and factor < 2 else 16, 48)
            ratio = factor if factor_is_ratio else r.choice([f for f in (2.0, 4.0, 8.0, 16.0) if f != factor])
            d["max_position_embeddings"] = int(original * ratio)
            rope = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original,
                    "beta_fast": r.choice([32, 32, 16]), "beta_slow": r.choice([1, 1, 2])}
            ms = [(1.0, 1.0), (0.707, 0.707), (1.0, 0.5), (0.8, 1.0), (None, None), (1.0, None), (None, 1.0)][i % 7]
            if ms[0] is not None:
                rope["mscale"] = ms[0]
            if ms[1] is not None:
                rope["mscale_all_dim"] = ms[1]
        if legacy:
            d["rope_theta"] = theta
            if rope["rope_type"] == "default":
                d["rope_scaling"] = None
            else:
                d["rope_scaling"] = {("type" if k == "rope_type" else k): v for k, v in rope.items()}
        else:
            d["rope_parameters"] = dict(rope, rope_theta=theta)
        if v32:
            d["index_n_heads"] = r.randint(1, 8)
            d["index_head_dim"] = max(dim("index_head_dim"), d["qk_rope_head_dim"])
            # below the short prompt, between the prompts, or above both (the long prompt
            # is at most original + 20 tokens); never above max_position_embeddings
            above = min(r.randint(original + 21, 120), d["max_position_embeddings"])
            mode = (i // 3) % 3 if above > original + 20 else 1
            d["index_topk"] = [r.randint(3, 5), r.randint(8, original), above][mode]
        if fp8:
            d["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                        "weight_block_size": [128, 128], "scale_fmt": "ue8m0"}
        if stored_bytes(d) <= args.max_bytes:
            return d
    raise AssertionError("no config of case %d fits in %d bytes" % (i, args.max_bytes))


def stored_bytes(d):
    H, heads = d["hidden_size"], d["num_attention_heads"]
    qk = d["qk_nope_head_dim"] + d["qk_rope_head_dim"]
    q = d["q_lora_rank"]
    proj = (H * q + q * heads * qk) if q else H * heads * qk
    proj += H * (d["kv_lora_rank"] + d["qk_rope_head_dim"]) + d["kv_lora_rank"] * heads * (
        d["qk_nope_head_dim"] + d["v_head_dim"]) + heads * d["v_head_dim"] * H
    other = 0
    if "index_topk" in d:
        proj += (q or 0) * d["index_n_heads"] * d["index_head_dim"] + H * d["index_head_dim"]
        other += H * d["index_n_heads"]
    L, k = d["num_hidden_layers"], d["first_k_dense_replace"]
    mlp = k * 3 * H * d["intermediate_size"] + (L - k) * 3 * H * d["moe_intermediate_size"] * (
        d["n_routed_experts"] + d["n_shared_experts"])
    proj = proj * L + mlp
    other = other * L + (L - k) * H * d["n_routed_experts"] + 2 * d["vocab_size"] * H
    return proj * (1 if "quantization_config" in d else 2) + 2 * other


# ----------------------------------------------------------------------------------
# Model, init, export
# ----------------------------------------------------------------------------------


def hf_classes(d):
    if d["architectures"][0] == "DeepseekV32ForCausalLM":
        return DeepseekV32Config, DeepseekV32ForCausalLM
    return DeepseekV3Config, DeepseekV3ForCausalLM


def make_model(cfg, cls):
    cfg._attn_implementation = "eager"
    m = cls(cfg)
    try:
        m.set_attn_implementation("eager")
    except Exception:
        m.config._attn_implementation = "eager"
    if hasattr(m, "set_experts_implementation"):
        m.set_experts_implementation("eager")  # grouped_mm has no float64
    return m.float()


def export(m, cfg, d, out):
    """Released layout: per-expert tensors, FP8 projections with block scales (or bf16),
    float32 e_score_correction_bias, index + 2 shards, config.json."""
    TD["cfg"], TD["E"] = cfg, cfg.n_routed_experts
    sd = {n: t.detach().float().cpu() for n, t in m.state_dict().items()
          if "rotary_emb" not in n and not n.endswith("inv_freq")}
    # transformers builds a zero-width shared expert for n_shared_experts 0; the released
    # layout has none
    sd = {n: t for n, t in TD["unfuse_experts"](sd).items() if t.numel() > 0}
    fp8 = "quantization_config" in d
    ex = {}
    for n, t in sd.items():
        if fp8 and FP8_RE.search(n):
            ex[n], ex[n + "_scale_inv"] = TD["quantize_fp8"](t)
        elif n.endswith("e_score_correction_bias"):
            ex[n] = t.float().contiguous()
        else:
            ex[n] = t.to(torch.bfloat16).contiguous()
    names = sorted(ex)
    half = len(names) // 2
    weight_map = {}
    for s, part in enumerate((names[:half], names[half:])):
        fn = "model-%05d-of-00002.safetensors" % (s + 1)
        save_file({n: ex[n] for n in part}, os.path.join(out, fn), metadata={"format": "pt"})
        weight_map.update({n: fn for n in part})
    total = sum(t.numel() * t.element_size() for t in ex.values())
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    return weight_map


def write_config(d, out):
    """Legacy-form cases: the dict as drawn (like the released V3 config.json). Newer form:
    what transformers' save_pretrained writes, plus quantization_config."""
    cls, _ = hf_classes(d)
    body = {k: v for k, v in d.items() if k != "quantization_config"}
    if "rope_parameters" in d:
        tmp = os.path.join(out, "_hf")
        cls(**{k: v for k, v in body.items() if k not in ("architectures",)}).save_pretrained(tmp)
        with open(os.path.join(tmp, "config.json")) as f:
            body = json.load(f)
        shutil.rmtree(tmp)
        body["architectures"] = d["architectures"]
    if "quantization_config" in d:
        body["quantization_config"] = d["quantization_config"]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(body, f, indent=2)
        f.write("\n")
    return body


def read_config(out, d):
    """config.json as transformers reads it (the weights are dequantised here, so the
    quantization_config is dropped)."""
    cfg = hf_classes(d)[0].from_pretrained(out)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    return cfg


def load_reference(out, weight_map, d, dtype):
    """The written files as transformers reads them, weights dequantised."""
    cfg = read_config(out, d)
    m = make_model(cfg, hf_classes(d)[1])
    raw = {}
    for fn in sorted(set(weight_map.values())):
        raw.update(load_file(os.path.join(out, fn)))
    deq = {n: (TD["dequantize_fp8"](t, raw[n + "_scale_inv"]) if t.dtype == torch.float8_e4m3fn else t.float())
           for n, t in raw.items() if not n.endswith("_scale_inv")}
    TD["cfg"], TD["E"] = cfg, cfg.n_routed_experts
    deq = TD["fuse_experts"](deq, m.state_dict())
    missing, unexpected = m.load_state_dict(deq, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k and "inv_freq" not in k and m.state_dict()[k].numel() > 0]
    assert not missing and not unexpected, (missing, unexpected)
    return m.to(dtype).to(dev).eval()


# ----------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------


def screen(m, spec, ids):
    """ids [B, T]: per sequence the smallest relative gap at any selection boundary, and
    whether our float64 recomputation picks what transformers picked."""
    cap = rc.run_captured(m, ids.to(dev), spec)
    idx_m, exp_m, agree = rc.margins(m, cap, spec, TD["indexer_scores"])
    return torch.minimum(idx_m, exp_m), agree


def make_case(i, d, out):
    cls, mcls = hf_classes(d)
    os.makedirs(out, exist_ok=True)
    body = write_config(d, out)
    hf_cfg = read_config(out, d)
    spec = rc.Spec.of(hf_cfg)
    original = (hf_cfg.rope_parameters or {}).get("original_max_position_embeddings") or 16
    r = random.Random(1000 + i)
    short_len = r.randint(5, 12)
    # index_topk is either below original or above this; dsinfer's context, like the
    # model, ends at max_position_embeddings
    long_len = original + r.randint(6, min(20, hf_cfg.max_position_embeddings - original - args.steps))
    for wtry in range(args.weight_tries):
        wseed = 100 * i + wtry
        m = make_model(read_config(out, d), mcls)
        rc.init_weights(m, wseed, hf_cfg.hidden_size, hf_cfg.moe_intermediate_size)
        weight_map = export(m, m.config, d, out)
        ref64 = load_reference(out, weight_map, d, torch.float64)
        ref32 = load_reference(out, weight_map, d, torch.float32)
        moe_layers = [li for li, layer in enumerate(ref64.model.layers) if hasattr(layer.mlp, "gate")]
        assert moe_layers == [li for li in range(spec.L) if li >= hf_cfg.first_k_dense_replace], moe_layers
        for p0 in range(0, args.prompt_tries, args.batch):
            seeds = list(range(p0, p0 + args.batch))
            gs = [torch.Generator().manual_seed(10**6 * i + 1000 * wtry + s) for s in seeds]
            longs = torch.stack([torch.randint(2, spec.V, (long_len,), generator=g) for g in gs])
            shorts = torch.stack([torch.randint(2, spec.V, (short_len,), generator=g) for g in gs])
            ml, al = screen(ref64, spec, longs)
            ms, as_ = screen(ref64, spec, shorts)
            for b in range(len(seeds)):
                if not (al[b] and as_[b] and min(ml[b], ms[b]) >= args.min_rel_gap):
                    continue
                res = rc.check_candidate(ref64, ref32, spec, longs[b].tolist(), shorts[b].tolist(), args.steps,
                                         TD["indexer_scores"], args.min_rel_gap, args.min_logit_gap)
                if res is None:
                    continue
                info = res["info"]
                info.update(weight_seed=wseed, prompt_seed=seeds[b], stored_weight_bytes=stored_bytes(d),
                            hf_attention_scaling=ref64.model.layers[0].self_attn.scaling,
                            hf_rotary_attention_scaling=float(ref64.model.rotary_emb.attention_scaling),
                            hf_rope_parameters=hf_cfg.rope_parameters,
                            hf_inv_freq=[float(x) for x in ref64.model.rotary_emb.inv_freq.tolist()])
                meta = {"note": "transformers %s %s, float64, eager attention and experts, no cache, from the "
                                "exported checkpoint dequantised; greedy by re-running the whole sequence"
                                % (transformers.__version__, mcls.__name__),
                        "checks": json.dumps(info), "versions": json.dumps(VERSIONS)}
                save_file(res["tensors"], os.path.join(out, "reference.safetensors"), metadata=meta)
                return info
            log("case %d weight seed %d: prompt seeds %d-%d rejected (smallest gaps long %s short %s, agree %s/%s)"
                % (i, wseed, seeds[0], seeds[-1], "%.1e" % ml.max().item(), "%.1e" % ms.max().item(),
                   int(al.sum()), int(as_.sum())))
    return None


def summary(d):
    rp = d.get("rope_parameters") or d.get("rope_scaling") or {"rope_type": "default"}
    kind = rp.get("rope_type", rp.get("type"))
    s = {"arch": "v3.2" if "index_topk" in d else "v3", "weights": "fp8" if "quantization_config" in d else "bf16",
         "rope_form": "rope_parameters" if "rope_parameters" in d else "rope_scaling", "rope": kind,
         "heads": d["num_attention_heads"], "q_lora_rank": d["q_lora_rank"], "kv_lora_rank": d["kv_lora_rank"],
         "qk_nope_head_dim": d["qk_nope_head_dim"], "qk_rope_head_dim": d["qk_rope_head_dim"],
         "v_head_dim": d["v_head_dim"], "hidden_size": d["hidden_size"], "layers": d["num_hidden_layers"],
         "first_k_dense_replace": d["first_k_dense_replace"], "experts": d["n_routed_experts"],
         "n_group": d["n_group"], "topk_group": d["topk_group"], "experts_per_tok": d["num_experts_per_tok"],
         "n_shared_experts": d["n_shared_experts"], "norm_topk_prob": d["norm_topk_prob"]}
    if kind == "yarn":
        s.update(factor=rp["factor"], factor_is_max_over_original=rp["factor"] == d["max_position_embeddings"] /
                 rp["original_max_position_embeddings"], mscale=rp.get("mscale"), mscale_all_dim=rp.get("mscale_all_dim"))
    if "index_topk" in d:
        s.update(index_topk=d["index_topk"], index_n_heads=d["index_n_heads"], index_head_dim=d["index_head_dim"])
    return s


manifest = []
rng = random.Random(args.seed)
attempt = 0
i = 0
while len(manifest) < args.cases and attempt < 3 * args.cases and rc.elapsed() < args.budget_sec:
    d = draw_config(i, rng)
    name = "case%02d" % len(manifest)
    out = os.path.join(args.out, name)
    t0 = time.time()
    info = make_case(i, d, out)
    attempt += 1
    i += 1
    if info is None:
        log("config %d: no qualifying prompt, drawn again: %s" % (i - 1, json.dumps(summary(d))))
        shutil.rmtree(out)
        continue
    # no gap (no boundary of that kind) is written as null: JSON has no Infinity
    entry = {"name": name, "covers": summary(d),
             "checks": {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in info.items()
                        if not k.startswith("hf_")}}
    manifest.append(entry)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    log("%s (%.1fs, %d bytes): %s" % (name, time.time() - t0, size, json.dumps(entry)))
    log("%s transformers: scaling %.10g rotary attention_scaling %.10g rope_parameters %s" % (
        name, info["hf_attention_scaling"], info["hf_rotary_attention_scaling"], info["hf_rope_parameters"]))

with open(os.path.join(args.out, "cases.json"), "w") as f:
    json.dump({"generator": "scripts/make_reference_sweep.py --seed %d --cases %d" % (args.seed, args.cases),
               "versions": VERSIONS, "cases": manifest}, f, indent=1)
    f.write("\n")
total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(args.out) for f in fs)
log("%d cases, %.2f MB in all" % (len(manifest), total / 1e6))
assert len(manifest) >= 24, "only %d cases qualified" % len(manifest)
log("all done")
