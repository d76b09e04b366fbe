#!/usr/bin/env python3
"""Make tests/data/refdims: a random-weight DeepSeek-V3.2 checkpoint with the released
model's per-head dims, and the reference outputs of Hugging Face transformers for it.

Not part of the library or of CI. Needs PyTorch, Hugging Face `transformers` (with
DeepseekV32ForCausalLM; written against 5.17) and `safetensors`; a CUDA GPU if there is
one (float64 on the GPU), else the CPU. One command makes everything in a minute or two:

  python3 scripts/make_reference_checkpoint.py --out DIR

What it does:
  config     config.json in the newer `rope_parameters` form (rope_theta inside it, no
             rope_scaling): the released V3.2 YaRN RoPE (factor 40, original 4096,
             mscale = mscale_all_dim = 1), qk_nope/qk_rope/v head dims 128/64/128,
             kv_lora_rank 512, q_lora_rank 384 (not a multiple of 128: partial FP8 blocks),
             indexer 8 heads x 128 dims with top-k 64, 16 routed experts in 8 groups
             (top-4 groups, 6 experts per token), 2 shared experts, one dense layer.
  weights    random (reference_common.init_weights): projections with unit-gain std
             1/sqrt(fan_in), q_b_proj/kv_b_proj 1.5x that so that attention is peaked
             (score std ~3.5), router std 0.1 (logit std ~1.6), e_score_correction_bias
             N(0, 0.05) so that the bias changes some expert choices, norm weights
             1 + N(0, 0.1), indexer k_norm bias N(0, 0.1), embeddings N(0, 1).
  export     the released HF layout by the very code of scripts/train_demo_model.py (its
             FP8 quantiser, expert unfusing and shard writer are taken from that file's
             syntax tree and executed here, so there is one exporter): FP8 e4m3 projection
             weights with float32 128x128 power-of-two block scales, bf16 elsewhere,
             float32 e_score_correction_bias, per-expert tensors, index + 2 shards.
  reference  the exported files are loaded back and dequantised (train_demo_model.py's
             loader again) and run by stock transformers DeepseekV32ForCausalLM in float64
             (eager attention, eager experts, no cache). The prompt is 300 random ids
             (> index_topk, so DSA is sparse). A prompt qualifies when (a) every indexer
             top-k boundary (all layers, every row t >= top-k of prompt + continuation)
             and every expert-routing boundary (group stage and expert stage) has a
             relative gap >= 2e-5, recomputed in float64, (b) float32 and float64 runs
             choose the same top-k sets, experts and greedy ids, (c) every greedy step
             has a top-2 logit gap >= 1e-3. Seeds are tried counting up from
             --prompt-seed; of the first --candidates that qualify, the one whose
             smallest margin over its threshold ((a) or (c)) is largest is kept.

Files written to --out: config.json (what transformers' save_pretrained writes for this
config, plus the FP8 quantization_config), model.safetensors.index.json, two shards and
reference.safetensors (input_ids, logits, greedy_ids, greedy_logits, L{l}.topk,
L{l}.experts, L{l}.out; metadata: seeds, margins, versions).
"""

import argparse
import ast
import json
import math
import os
import shutil
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_common as rc  # noqa: E402
from reference_common import log  # noqa: E402


ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--weight-seed", type=int, default=20251)
ap.add_argument("--prompt-seed", type=int, default=1, help="first prompt seed tried")
ap.add_argument("--prompt-len", type=int, default=300)
ap.add_argument("--steps", type=int, default=16)
ap.add_argument("--batch", type=int, default=32, help="prompts screened per forward")
ap.add_argument("--min-rel-gap", type=float, default=2e-5)
ap.add_argument("--min-logit-gap", type=float, default=1e-3)
ap.add_argument("--candidates", type=int, default=8,
                help="prompts that pass every check to collect; the one with the widest margin is kept")
ap.add_argument("--search-sec", type=float, default=240)
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
args = ap.parse_args()
os.makedirs(args.out, exist_ok=True)

import transformers  # noqa: E402
import safetensors  # noqa: E402
from safetensors.torch import save_file, load_file  # noqa: E402
from transformers import DeepseekV32Config, DeepseekV32ForCausalLM  # noqa: E402
import transformers.models.deepseek_v32.modeling_deepseek_v32 as MOD  # noqa: E402

dev = torch.device(args.device)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(os.cpu_count() or 8)
VERSIONS = {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "safetensors": safetensors.__version__,
            "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"}
log("versions", VERSIONS)

# ----------------------------------------------------------------------------------
# Config: the newer rope_parameters form, key names as DeepseekV32Config spells them
# ----------------------------------------------------------------------------------

CONFIG_JSON = {
    "architectures": ["DeepseekV32ForCausalLM"],
    "model_type": "deepseek_v32",
    "vocab_size": 1024,
    "hidden_size": 256,
    "intermediate_size": 512,
    "moe_intermediate_size": 128,
    "num_hidden_layers": 3,
    "first_k_dense_replace": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "q_lora_rank": 384,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "n_routed_experts": 16,
    "n_group": 8,
    "topk_group": 4,
    "num_experts_per_tok": 6,
    "n_shared_experts": 2,
    "routed_scaling_factor": 2.5,
    "index_n_heads": 8,
    "index_head_dim": 128,
    "index_topk": 64,
    "max_position_embeddings": 163840,
    "num_nextn_predict_layers": 0,
    "moe_layer_freq": 1,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "norm_topk_prob": True,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-06,
    "rope_parameters": {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 40.0,
        "original_max_position_embeddings": 4096,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    },
    "attention_bias": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "quantization_config": {
        "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
        "weight_block_size": [128, 128], "scale_fmt": "ue8m0"},
}
assert "rope_scaling" not in CONFIG_JSON and "rope_theta" not in CONFIG_JSON

# ----------------------------------------------------------------------------------
# Reuse scripts/train_demo_model.py: its model factory, FP8 quantiser, expert layout
# conversion, index scorer, export block and loader, executed from its syntax tree
# (importing it would run its training).
# ----------------------------------------------------------------------------------

TD_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_demo_model.py")
with open(TD_PATH) as f:
    TD_SRC = f.read()
TD_TREE = ast.parse(TD_SRC, TD_PATH)
REUSED_FUNCS = ["make_config", "make_model", "quantize_fp8", "dequantize_fp8", "unfuse_experts",
                "fuse_experts", "indexer_scores", "load_dequantised"]
NS = {"torch": torch, "F": F, "math": math, "json": json, "os": os, "re": __import__("re"), "time": time,
      "log": log, "save_file": save_file, "load_file": load_file, "MOD": MOD,
      "DeepseekV32Config": DeepseekV32Config, "DeepseekV32ForCausalLM": DeepseekV32ForCausalLM,
      "CONFIG_JSON": CONFIG_JSON, "METRICS": {}, "args": argparse.Namespace(out=args.out)}


def td_exec(nodes):
    exec(compile(ast.Module(body=list(nodes), type_ignores=[]), TD_PATH, "exec"), NS)


found = {}
for node in TD_TREE.body:
    if isinstance(node, ast.FunctionDef) and node.name in REUSED_FUNCS:
        found[node.name] = node
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "FP8_RE" for t in node.targets):
        found["FP8_RE"] = node
missing = [n for n in REUSED_FUNCS + ["FP8_RE"] if n not in found]
assert not missing, "train_demo_model.py no longer defines %s" % missing
td_exec(found.values())
# The export block: from `sd = {...state_dict()...}` to `log("exported", ...)`.
i0 = next(i for i, n in enumerate(TD_TREE.body)
          if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "sd" for t in n.targets)
          and "state_dict()" in ast.get_source_segment(TD_SRC, n))
i1 = next(i for i, n in enumerate(TD_TREE.body) if i > i0 and isinstance(n, ast.Expr)
          and 'log("exported"' in ast.get_source_segment(TD_SRC, n))
EXPORT_BLOCK = TD_TREE.body[i0:i1 + 1]
_blk = "\n".join(ast.get_source_segment(TD_SRC, n) for n in EXPORT_BLOCK)
assert "save_file" in _blk and "json.dump(CONFIG_JSON" in _blk and "quantize_fp8" in _blk
log("reused from train_demo_model.py: %s + export block (lines %d-%d)" % (
    ", ".join(REUSED_FUNCS + ["FP8_RE"]), EXPORT_BLOCK[0].lineno, EXPORT_BLOCK[-1].end_lineno))

# ----------------------------------------------------------------------------------
# Model and random init
# ----------------------------------------------------------------------------------

model = NS["make_model"](torch.float32)
cfg = model.config
E = cfg.n_routed_experts
NS.update(model=model, cfg=cfg, E=E, t0=time.time())
log("rope_parameters", cfg.rope_parameters)
rp = cfg.rope_parameters
for k_, v_ in CONFIG_JSON["rope_parameters"].items():
    assert rp.get(k_) == v_, (k_, rp.get(k_), v_)
attn0 = model.model.layers[0].self_attn
mscale = 0.1 * 1.0 * math.log(40.0) + 1.0
want_scaling = (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** -0.5 * mscale * mscale
log("attention scaling %.8f (expected %.8f), rotary attention_scaling %s, mlp_layer_types %s" % (
    attn0.scaling, want_scaling, model.model.rotary_emb.attention_scaling, cfg.mlp_layer_types))
assert abs(attn0.scaling - want_scaling) < 1e-12
assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()

H, I_MOE = cfg.hidden_size, cfg.moe_intermediate_size


n_bias = rc.init_weights(model, args.weight_seed, H, I_MOE)
assert n_bias == cfg.num_hidden_layers - cfg.first_k_dense_replace
log("params", sum(p.numel() for p in model.parameters()))

# ----------------------------------------------------------------------------------
# Export (train_demo_model.py's block) and the config that transformers itself writes
# ----------------------------------------------------------------------------------

td_exec(EXPORT_BLOCK)
weight_map = NS["weight_map"]
with open(os.path.join(args.out, "config.json")) as f:
    assert json.load(f) == CONFIG_JSON
tmpd = tempfile.mkdtemp()
d = json.loads(json.dumps(CONFIG_JSON))
d.pop("quantization_config")
d.pop("torch_dtype")
DeepseekV32Config(**d).save_pretrained(tmpd)
with open(os.path.join(tmpd, "config.json")) as f:
    hf_saved = json.load(f)
shutil.rmtree(tmpd)
ours_only = sorted(set(CONFIG_JSON) - set(hf_saved))
hf_only = sorted(set(hf_saved) - set(CONFIG_JSON))
differ = sorted(k_ for k_ in set(CONFIG_JSON) & set(hf_saved) if CONFIG_JSON[k_] != hf_saved[k_])
log("save_pretrained config vs ours: keys only in ours %s; only in transformers' %s; values differ %s" % (
    ours_only, hf_only, {k_: (CONFIG_JSON[k_], hf_saved[k_]) for k_ in differ}))
assert not differ and set(ours_only) <= {"torch_dtype", "quantization_config"}, (ours_only, differ)
# The checkpoint's config.json is what transformers itself writes (newer rope_parameters
# form, its key names, its extra keys such as mlp_layer_types / layer_types / qk_head_dim /
# head_dim) plus the released FP8 quantization_config.
hf_saved["quantization_config"] = CONFIG_JSON["quantization_config"]
assert "rope_scaling" not in hf_saved and "rope_theta" not in hf_saved, hf_saved
assert hf_saved["rope_parameters"] == CONFIG_JSON["rope_parameters"], hf_saved["rope_parameters"]
with open(os.path.join(args.out, "config.json"), "w") as f:
    json.dump(hf_saved, f, indent=2)
    f.write("\n")
# transformers reading our config.json back gives the same model config
rc = DeepseekV32Config.from_pretrained(args.out)
for k_ in ["rope_parameters", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
           "n_group", "topk_group", "num_experts_per_tok", "n_shared_experts", "index_topk", "mlp_layer_types",
           "num_key_value_heads", "max_position_embeddings"]:
    assert getattr(rc, k_) == getattr(cfg, k_), (k_, getattr(rc, k_), getattr(cfg, k_))
log("transformers reads config.json back with the same rope_parameters and dims")

# ----------------------------------------------------------------------------------
# The reference models: the export loaded back and dequantised
# ----------------------------------------------------------------------------------

ref64 = NS["load_dequantised"](torch.float64).to(dev).eval()
ref32 = NS["load_dequantised"](torch.float32).to(dev).eval()
with torch.no_grad():
    # FP8 error of the export, tensor by tensor in the file's (per-expert) layout: the
    # dequantised file against the initialised weights passed through the same unfusing.
    orig = NS["unfuse_experts"]({n: t.detach().float().cpu() for n, t in model.state_dict().items()
                                 if "rotary_emb" not in n and not n.endswith("inv_freq")})
    raw = {}
    for fn in sorted(set(weight_map.values())):
        raw.update(load_file(os.path.join(args.out, fn)))
    qerr = {}
    for n, t in raw.items():
        if n.endswith("_scale_inv"):
            continue
        w = NS["dequantize_fp8"](t, raw[n + "_scale_inv"]) if t.dtype == torch.float8_e4m3fn else t.float()
        kind = "fp8" if t.dtype == torch.float8_e4m3fn else str(t.dtype).replace("torch.", "")
        e = ((w - orig[n]).abs().max() / orig[n].abs().max().clamp_min(1e-30)).item()
        qerr[kind] = max(qerr.get(kind, 0.0), e)
    assert set(orig) == set(n for n in raw if not n.endswith("_scale_inv"))
    log("largest export rounding error relative to the tensor's max |w|, by stored dtype: %s" % qerr)
    assert qerr["fp8"] < 0.07 and qerr["float32"] == 0.0, qerr
    # 2 * moe_intermediate_size == hidden_size here, so gate_up_proj is square and its
    # layout cannot be read off its shape (tests/data/refdims was exported by a version of
    # unfuse_experts that transposed it; the reference is computed from the exported file,
    # so it is valid either way). Measured, not assumed:
    gu0 = model.model.layers[1].mlp.experts.gate_up_proj.detach().double()
    gu1 = ref32.model.layers[1].mlp.experts.gate_up_proj.detach().double().cpu()
    log("layer-1 gate_up_proj, loaded export vs init: max|diff| as is %.3g, transposed %.3g (max|w| %.3g)" % (
        (gu1 - gu0).abs().max().item(), (gu1 - gu0.transpose(1, 2)).abs().max().item(), gu0.abs().max().item()))
TOPK = cfg.index_topk
KK = cfg.num_experts_per_tok
TG = cfg.topk_group
NG = cfg.n_group
L = cfg.num_hidden_layers

# ----------------------------------------------------------------------------------
# Hooks: what the stock modules output (indexer top-k, router experts, layer outputs) and
# the indexer / router inputs for the float64 margin recomputation
# ----------------------------------------------------------------------------------

CAP = {}


def add_hooks(m):
    hs = []
    for li, layer in enumerate(m.model.layers):
        def idx_pre(mod, a, kw, li=li):
            CAP[("idx_in", li)] = (a, kw)

        def idx_out(mod, a, out, li=li):
            CAP[("topk", li)] = out

        hs.append(layer.self_attn.indexer.register_forward_pre_hook(idx_pre, with_kwargs=True))
        hs.append(layer.self_attn.indexer.register_forward_hook(idx_out))

        def lay_out(mod, a, out, li=li):
            CAP[("out", li)] = out[0] if isinstance(out, tuple) else out

        hs.append(layer.register_forward_hook(lay_out))
        if hasattr(layer.mlp, "gate"):
            def gate_pre(mod, a, li=li):
                CAP[("gate_in", li)] = a[0]

            def gate_out(mod, a, out, li=li):
                CAP[("experts", li)] = out[2]

            hs.append(layer.mlp.gate.register_forward_pre_hook(gate_pre))
            hs.append(layer.mlp.gate.register_forward_hook(gate_out))
    return hs


def run(m, ids):
    """ids [B, T] -> logits; CAP holds the captures."""
    CAP.clear()
    hs = add_hooks(m)
    try:
        with torch.no_grad():
            return m(input_ids=ids.to(dev), use_cache=False).logits
    finally:
        for h in hs:
            h.remove()


def rel_gap(srt, k):
    """srt sorted descending on the last dim: gap between ranks k and k+1 over |top|."""
    return (srt[..., k - 1] - srt[..., k]) / srt[..., 0].abs().clamp_min(1e-30)


def expert_margins(gate, h, bias=True):
    """h [N, hidden] -> (relative gap at the group and expert boundaries [N], sorted sets [N, k])."""
    h = h.double()
    sc = torch.sigmoid(h @ gate.weight.double().t())
    if bias:
        sc = sc + gate.e_score_correction_bias.double()
    grp = sc.view(-1, NG, E // NG).topk(2, dim=-1).values.sum(-1)
    g1 = rel_gap(grp.sort(-1, descending=True).values, TG)
    gm = torch.zeros_like(grp, dtype=torch.bool).scatter_(1, grp.topk(TG, dim=-1).indices, True)
    sc2 = sc.masked_fill(~gm.repeat_interleave(E // NG, dim=1), float("-inf"))
    g2 = rel_gap(sc2.sort(-1, descending=True).values, KK)
    return torch.minimum(g1, g2), sc2.topk(KK, dim=-1).indices.sort(-1).values


def margins(m, B, T):
    """After run(m, ids): per sequence, the smallest relative gap at any indexer top-k
    boundary (rows t >= top-k) and at any routing boundary, in float64."""
    idx_m = torch.full((B,), float("inf"), dtype=torch.float64, device=dev)
    exp_m = idx_m.clone()
    causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    for li, layer in enumerate(m.model.layers):
        a, kw = CAP[("idx_in", li)]
        names = ["hidden_states", "q_resid", "position_embeddings"]
        x, q_resid, pe = [a[i] if len(a) > i else kw[names[i]] for i in range(3)]
        with torch.no_grad():
            I = NS["indexer_scores"](layer.self_attn.indexer, x.double(), q_resid.double(),
                                     pe[0].double(), pe[1].double())
        I = I.masked_fill(~causal, float("-inf"))
        if T > TOPK:
            g = rel_gap(I[:, TOPK:].sort(-1, descending=True).values, TOPK)  # [B, T - TOPK]
            idx_m = torch.minimum(idx_m, g.amin(-1))
        if ("gate_in", li) in CAP:
            gm, _ = expert_margins(layer.mlp.gate, CAP[("gate_in", li)].reshape(B * T, -1))
            exp_m = torch.minimum(exp_m, gm.view(B, T).amin(-1))
    return idx_m, exp_m


def selections(T):
    """After run(m, ids) with B = 1: the stock modules' indexer sets (rows t >= top-k,
    sorted) and expert sets (sorted) per layer."""
    out = {}
    for li in range(L):
        tk = CAP[("topk", li)][0].long().sort(-1).values.cpu()
        out[("topk", li)] = tk[TOPK:] if T > TOPK else tk
        if ("experts", li) in CAP:
            out[("experts", li)] = CAP[("experts", li)].view(T, KK).sort(-1).values.cpu()
    return out


def greedy(m, prompt, steps):
    ids = list(prompt)
    out, lgs, gaps = [], [], []
    with torch.no_grad():
        for _ in range(steps):
            lg = m(input_ids=torch.tensor([ids], device=dev), use_cache=False).logits[0, -1].double().cpu()
            top2 = lg.topk(2)
            gaps.append((top2.values[0] - top2.values[1]).item())
            nxt = int((lg == top2.values[0]).nonzero().min())  # lowest id on exact ties
            out.append(nxt)
            lgs.append(lg)
            ids.append(nxt)
    return out, torch.stack(lgs), gaps


def draw_prompt(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, cfg.vocab_size, (args.prompt_len,), generator=g)


# ----------------------------------------------------------------------------------
# Sanity: logit scale, attention peakedness, indexer vs a sliding window, bias effect
# ----------------------------------------------------------------------------------

p0 = draw_prompt(10**6)
lg = run(ref64, p0[None])
stats = {"logit_rms": lg.pow(2).mean().sqrt().item(),
         "layer_out_rms": [CAP[("out", li)].pow(2).mean().sqrt().item() for li in range(L)]}
T0 = args.prompt_len
win = []
for li in range(L):
    tk = CAP[("topk", li)][0].long().cpu()
    ov = [len(set(tk[t].tolist()) & set(range(t - TOPK + 1, t + 1))) / TOPK for t in range(TOPK, T0)]
    win.append(sum(ov) / len(ov))
stats["indexer_overlap_with_last_topk_window"] = win
changed = []
for li in range(L):
    if ("gate_in", li) in CAP:
        gate = ref64.model.layers[li].mlp.gate
        h = CAP[("gate_in", li)].reshape(T0, -1)
        _, with_b = expert_margins(gate, h, True)
        _, without = expert_margins(gate, h, False)
        changed.append((with_b != without).any(-1).double().mean().item())
stats["fraction_tokens_whose_experts_change_without_bias"] = changed
try:
    with torch.no_grad():
        att = ref64(input_ids=p0[None].to(dev), use_cache=False, output_attentions=True).attentions
    stats["attention_mean_max_prob_rows_ge_topk"] = [a[0, :, TOPK:].amax(-1).mean().item() for a in att]
except Exception as e:  # informational only
    stats["attention_mean_max_prob_rows_ge_topk"] = "n/a (%s)" % type(e).__name__
log("model statistics", stats)

# ----------------------------------------------------------------------------------
# Prompt search
# ----------------------------------------------------------------------------------

t_search = time.time()
seed = args.prompt_seed
tried, screened = [], 0
passing = []
while len(passing) < args.candidates and time.time() - t_search < args.search_sec:
    seeds = list(range(seed, seed + args.batch))
    seed += args.batch
    ids = torch.stack([draw_prompt(s) for s in seeds])
    run(ref64, ids)
    im, em = margins(ref64, len(seeds), args.prompt_len)
    screened += len(seeds)
    ok = [(s, a_.item(), b_.item()) for s, a_, b_ in zip(seeds, im, em)
          if min(a_.item(), b_.item()) >= args.min_rel_gap]
    log("screened seeds %d-%d: %d without near-ties on the prompt (smallest indexer gaps %s)" % (
        seeds[0], seeds[-1], len(ok), ["%.1e" % v for v in im.sort().values[:4].tolist()]))
    for s, a_, b_ in ok:
        if len(passing) >= args.candidates:
            break
        prompt = draw_prompt(s).tolist()
        g64, lg64, gaps64 = greedy(ref64, prompt, args.steps)
        g32, lg32, gaps32 = greedy(ref32, prompt, args.steps)
        full = torch.tensor([prompt + g64[:-1]])
        Tf = full.shape[1]
        run(ref64, full)
        fim, fem = margins(ref64, 1, Tf)
        s64 = selections(Tf)
        run(ref32, full)
        s32 = selections(Tf)
        same = all(torch.equal(s64[k_], s32[k_]) for k_ in s64)
        info = {"seed": s, "min_indexer_rel_gap": fim.item(), "min_expert_rel_gap": fem.item(),
                "min_top2_logit_gap_f64": min(gaps64), "min_top2_logit_gap_f32": min(gaps32),
                "greedy_f32_eq_f64": g32 == g64, "selections_f32_eq_f64": same,
                "greedy_logits_f32_vs_f64_max_abs": (lg32 - lg64).abs().max().item()}
        tried.append(info)
        log("candidate", info)
        if (same and g32 == g64 and min(gaps64 + gaps32) >= args.min_logit_gap
                and min(fim.item(), fem.item()) >= args.min_rel_gap):
            passing.append((s, prompt, g64, lg64, info))
assert passing, "no prompt without near-ties in %d seeds" % screened


def headroom(c):
    """The smallest of the margins, each over its threshold."""
    i = c[4]
    return min(i["min_indexer_rel_gap"] / args.min_rel_gap, i["min_expert_rel_gap"] / args.min_rel_gap,
               min(i["min_top2_logit_gap_f64"], i["min_top2_logit_gap_f32"]) / args.min_logit_gap)


s, prompt, g64, lg64, info = max(passing, key=headroom)
info["headroom_over_thresholds"] = headroom((s, prompt, g64, lg64, info))
info["candidates_passing"] = [c[0] for c in passing]
info["seeds_screened"] = screened
log("chosen prompt seed %d (most headroom of %d passing candidates) after screening %d seeds in %.1fs" % (
    s, len(passing), screened, time.time() - t_search))

# ----------------------------------------------------------------------------------
# The reference
# ----------------------------------------------------------------------------------

P = torch.tensor([prompt])
logits = run(ref64, P)[0]
ref = {"input_ids": P[0].to(torch.int32),
       "logits": logits.float().cpu(),
       "greedy_ids": torch.tensor(g64, dtype=torch.int32),
       "greedy_logits": lg64.float()}
for li in range(L):
    ref["L%d.topk" % li] = CAP[("topk", li)][0].sort(-1).values.to(torch.int32).cpu()
    ref["L%d.out" % li] = CAP[("out", li)][0].float().cpu()
    if ("experts", li) in CAP:
        ref["L%d.experts" % li] = CAP[("experts", li)].view(args.prompt_len, KK).sort(-1).values.to(torch.int32).cpu()
assert (lg64[0] - logits[-1].double().cpu()).abs().max().item() < 1e-9
lg32p = run(ref32, P)[0]
info["prefill_logits_f32_vs_f64_max_abs"] = (lg32p.double() - logits.double()).abs().max().item()
info["logit_rms"] = logits.double().pow(2).mean().sqrt().item()
for k_, v_ in ref.items():
    ref[k_] = v_.contiguous()
meta = {"note": "transformers %s DeepseekV32ForCausalLM, float64, eager attention, eager experts, no cache, "
                "from the exported FP8 checkpoint dequantised; greedy by re-running the whole sequence" %
                transformers.__version__,
        "weight_seed": str(args.weight_seed), "prompt_seed": str(s),
        "prompt": "torch.randint(2, vocab, (%d,), generator=torch.Generator().manual_seed(prompt_seed))" %
                  args.prompt_len,
        "checks": json.dumps(info), "model_statistics": json.dumps(stats), "versions": json.dumps(VERSIONS)}
save_file(ref, os.path.join(args.out, "reference.safetensors"), metadata=meta)
log("reference", {k_: (tuple(v_.shape), str(v_.dtype)) for k_, v_ in ref.items()})
log("checks", info)
total = sum(os.path.getsize(os.path.join(args.out, f_)) for f_ in os.listdir(args.out))
log("files", {f_: os.path.getsize(os.path.join(args.out, f_)) for f_ in sorted(os.listdir(args.out))},
    "total %.2f MB" % (total / 1e6))
log("all done")
