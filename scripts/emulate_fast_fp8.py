"""Emulates, in torch float64, what the CUDA backend's `fast` precision does to the golden
tiny-fp8 case0 prefill, to test whether FP8 activation quantisation explains its logits
error (docs/ACCURACY.md).

In that prefill (12 tokens) exactly one GEMM of tiny-fp8 meets the cuBLASLt FP8 shape rule
(K a multiple of 512, out a multiple of 128; kernels/gemm/fp8_gemm.h): layer 0's dense
down_proj (K 512, out 256). There `fast` rounds the activations to e4m3 with one
power-of-two scale per 1x128 block (DeepSeek's act_quant with ue8m0 scales), and cuBLASLt
may return bf16 that is widened. Everything else in case0 is float32 (the bf16 latent
cache aside; 12 tokens are fewer than top-k, so the FP8 indexer keys select nothing
different). This script runs stock transformers (DeepseekV32ForCausalLM, float64) on the
dequantised checkpoint, then again with that one GEMM's input quantised the same way
(with and without the bf16 latent cache, and with its output rounded to bf16), and prints logits max |diff| against the
reference and the expert choices that moved. With --dump DIR it also compares against the
CUDA fast run's layer-0 output and logits, which test_cuda_fast writes there
(DSI_FAST_DUMP).

    python3 scripts/emulate_fast_fp8.py [--data tests/data] [--dump DIR] [--demo]
--demo also runs the demo model with every FP8-stored GEMM's activations quantised as
DeepSeek does (a projection of what fast costs where all GEMMs take the FP8 path).
Needs torch, transformers 5.17, safetensors.
"""

import argparse
import json
import os
import re
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import DeepseekV32Config, DeepseekV32ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_common as rc  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data"))
ap.add_argument("--dump", default=None)
ap.add_argument("--case", default="case0")
ap.add_argument("--demo", action="store_true", help="also emulate every FP8 GEMM on the demo model")
args = ap.parse_args()


def load(ckpt, dtype):
    """Stock transformers on a checkpoint dir, dequantised (w = fp8 * scale per 128x128
    block), experts fused into whatever layout the installed transformers uses."""
    with open(os.path.join(ckpt, "config.json")) as f:
        d = json.load(f)
    d.pop("quantization_config", None)
    d.pop("torch_dtype", None)
    cfg = DeepseekV32Config(**d)
    cfg._attn_implementation = "eager"
    m = DeepseekV32ForCausalLM(cfg).to(dtype).eval()
    m.set_experts_implementation("eager")
    raw = {}
    with open(os.path.join(ckpt, "model.safetensors.index.json")) as f:
        for fn in sorted(set(json.load(f)["weight_map"].values())):
            raw.update(load_file(os.path.join(ckpt, fn)))
    # Dequantisation and expert fusion as the reference generators do them
    # (train_demo_model.py's functions, through reference_common.load_train_demo).
    ns = rc.load_train_demo(["dequantize_fp8", "fuse_experts"], {"torch": torch, "E": cfg.n_routed_experts})
    sd, fp8 = {}, set()
    for n, t in raw.items():
        if n.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            sd[n] = ns["dequantize_fp8"](t, raw[n + "_scale_inv"]).double()
            fp8.add(n)
            g = re.match(r"(model\.layers\.\d+\.mlp\.experts)\.\d+\.", n)
            if g:
                fp8.update({g.group(1) + ".gate_up_proj", g.group(1) + ".down_proj"})
        else:
            sd[n] = t.double()
    sd = ns["fuse_experts"](sd, m.state_dict())
    missing, unexpected = m.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k and "inv_freq" not in k]
    assert not missing and not unexpected, (missing, unexpected)
    # Names of the parameters stored as FP8 (the GEMMs DeepSeek runs in FP8).
    fp8 = {n[: -len(".weight")] if n.endswith(".weight") else n for n in fp8}
    return cfg, m, fp8


ckpt = os.path.join(args.data, "golden", "tiny-fp8")
golden = load_file(os.path.join(args.data, "golden", "tiny-golden.safetensors"))
ids = golden[args.case + ".input_ids"].long()[None]
ref_logits = golden[args.case + ".logits"].double()
cfg, m, _ = load(ckpt, torch.float64)
E = cfg.n_routed_experts


def act_quant(x):
    """e4m3 per 1x128 block along the last dim, scale amax/448 rounded up to a power of
    two (kernels/gemm/fp8_gemm.cu's quantize_fp8_kernel)."""
    shape = x.shape
    K = shape[-1]
    kb = -(-K // 128)
    xb = torch.nn.functional.pad(x.reshape(-1, K), (0, kb * 128 - K)).view(-1, kb, 128)
    amax = xb.abs().amax(-1, keepdim=True).clamp_min(1e-4)
    s = torch.exp2(torch.ceil(torch.log2(amax / 448.0)))
    q = (xb / s).float().clamp(-448, 448).to(torch.float8_e4m3fn).to(x.dtype) * s
    return q.reshape(-1, kb * 128)[:, :K].reshape(shape)


MOD = sys.modules[DeepseekV32ForCausalLM.__module__]
ROPE = getattr(MOD, "apply_rotary_pos_emb_interleave", None)


def bf16(x):
    return x.float().to(torch.bfloat16).double()


def run(quant_in=False, bf16_out=False, bf16_cache=False):
    cap = {}
    hooks = []
    down = m.model.layers[0].mlp.down_proj
    if bf16_cache:
        # fast's latent cache is bf16: the normalised kv latent and the roped k_rope that
        # every query (its own row included) reads back.
        assert ROPE is not None, "this transformers has no apply_rotary_pos_emb_interleave"
        for layer in m.model.layers:
            hooks.append(layer.self_attn.kv_a_layernorm.register_forward_hook(lambda mod, a, out: bf16(out)))

        def rope_bf16_k(q, k, *a, **kw):
            qe, ke = ROPE(q, k, *a, **kw)
            return qe, bf16(ke)

        MOD.apply_rotary_pos_emb_interleave = rope_bf16_k
    if quant_in:
        hooks.append(down.register_forward_pre_hook(lambda mod, a: (act_quant(a[0]),)))
    if bf16_out:
        hooks.append(down.register_forward_hook(lambda mod, a, out: out.float().to(torch.bfloat16).double()))
    hooks.append(m.model.layers[0].register_forward_hook(
        lambda mod, a, out: cap.__setitem__("L0", (out[0] if isinstance(out, tuple) else out)[0])))
    for li, layer in enumerate(m.model.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None and hasattr(gate, "e_score_correction_bias"):
            hooks.append(gate.register_forward_pre_hook(lambda mod, a, li=li: cap.__setitem__(("gate_in", li), a[0])))
    try:
        with torch.no_grad():
            cap["logits"] = m(input_ids=ids, use_cache=False).logits[0]
    finally:
        for h in hooks:
            h.remove()
        if ROPE is not None:
            MOD.apply_rotary_pos_emb_interleave = ROPE
    # Expert choice by DeepSeek's rule (sigmoid + bias, group-limited top-k), recomputed
    # from the router input so that it does not depend on transformers' return values.
    experts = {}
    for li, layer in enumerate(m.model.layers):
        if ("gate_in", li) not in cap:
            continue
        gate = layer.mlp.gate
        h = cap[("gate_in", li)].reshape(-1, cfg.hidden_size)
        scores = torch.sigmoid(h @ gate.weight.double().t())
        b = scores + gate.e_score_correction_bias.double()
        G = cfg.n_group
        gs = b.view(-1, G, E // G).topk(2, -1).values.sum(-1)
        keep = torch.zeros_like(gs).scatter_(1, gs.topk(cfg.topk_group, -1).indices, 1.0)
        mask = keep[:, :, None].expand(-1, G, E // G).reshape(-1, E).bool()
        experts[li] = b.masked_fill(~mask, float("-inf")).topk(cfg.num_experts_per_tok, -1).indices.sort(-1).values
    return cap, experts


base, base_e = run()
print("stock float64 vs reference: logits max|diff| %.3g" % (base["logits"] - ref_logits).abs().max().item())
for li, e in base_e.items():
    want = golden[f"{args.case}.L{li}.experts"].long()
    print("  layer %d experts equal to the reference: %d/%d" % (li, (e == want).all(-1).sum().item(), e.shape[0]))

dump = {}
if args.dump:
    for name in ("L0", "logits"):
        path = os.path.join(args.dump, f"tiny-fp8_{args.case}.{name}.f32")
        if os.path.exists(path):
            dump[name] = torch.from_numpy(np.fromfile(path, dtype=np.float32)).double()

for label, kw in (("bf16 latent cache only", dict(bf16_cache=True)),
                  ("FP8 input of layer-0 down_proj", dict(quant_in=True)),
                  ("bf16 cache + FP8 input", dict(bf16_cache=True, quant_in=True)),
                  ("bf16 cache + FP8 input + bf16 out", dict(bf16_cache=True, quant_in=True, bf16_out=True))):
    cap, ex = run(**kw)
    moved = sum((ex[li] != base_e[li]).any(-1).sum().item() for li in ex)
    total = sum(ex[li].shape[0] for li in ex)
    l0 = (cap["L0"] - base["L0"]).abs().max().item()
    rel = ((cap["L0"] - base["L0"]).norm() / base["L0"].norm()).item()
    print("emulated %-34s layer-0 out max|diff| %.4g (normalised %.3g), experts same %d/%d, logits max|diff| %.4g"
          % (label, l0, rel, total - moved, total, (cap["logits"] - ref_logits).abs().max().item()))
    if dump:
        parts = []
        if "L0" in dump:
            parts.append("layer-0 out max|diff| %.3g" % (dump["L0"].view_as(cap["L0"]) - cap["L0"]).abs().max().item())
        if "logits" in dump:
            parts.append("logits max|diff| %.3g" % (dump["logits"].view_as(cap["logits"]) - cap["logits"]).abs().max().item())
        print("    CUDA fast vs this emulation: " + ", ".join(parts))
if dump:
    if "L0" in dump:
        print("CUDA fast vs stock float64: layer-0 out max|diff| %.4g"
              % (dump["L0"].view_as(base["L0"]) - base["L0"]).abs().max().item())


# ---------------------------------------------------------------------------------------
# The demo model (--demo): what DeepSeek's full FP8 scheme would cost a trained model.
# No demo projection has the cuBLASLt FP8 shape (K a multiple of 512), so the backend's
# fast precision runs its GEMMs in float32 there; this emulates every GEMM whose weight is
# stored FP8 (kv_b aside: absorbed MLA uses it dequantised, as DeepSeek's inference does)
# with 1x128 e4m3 activations, in float32 on the GPU, on test_cuda_fast's text windows.
if args.demo:
    import torch.nn.functional as F
    from tokenizers import Tokenizer

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    root = os.path.join(args.data, "..", "..")
    demo = os.path.join(root, "models", "demo")
    dcfg, dm, fp8 = load(demo, torch.float64)
    dm = dm.float().to(dev)
    storages = {p.untyped_storage().data_ptr() for n, p in dm.named_parameters()
                if n[: -len(".weight")] in fp8 or n in fp8}
    storages -= {l.self_attn.kv_b_proj.weight.untyped_storage().data_ptr() for l in dm.model.layers}
    tok = Tokenizer.from_file(os.path.join(demo, "tokenizer.json"))
    with open(os.path.join(root, "scripts", "train_demo_model.py"), encoding="utf-8") as f:
        text_ids = tok.encode(f.read(), add_special_tokens=False).ids
    n_ctx = dcfg.max_position_embeddings
    W = min(8, len(text_ids) // n_ctx)
    x = torch.tensor(text_ids[: W * n_ctx], device=dev).view(W, n_ctx)
    linear = F.linear
    hits = set()

    def fp8_linear(inp, weight, bias=None):
        if weight.untyped_storage().data_ptr() in storages:
            hits.add(weight.untyped_storage().data_ptr())
            inp = act_quant(inp)
        return linear(inp, weight, bias)

    out = {}
    for label in ("f32", "fp8 gemms"):
        if label != "f32":
            F.linear = fp8_linear
        try:
            with torch.no_grad():
                out[label] = torch.cat([dm(input_ids=x[w: w + 1], use_cache=False).logits.float()
                                        for w in range(W)])
        finally:
            F.linear = linear
    a, b = out["f32"][:, :-1], out["fp8 gemms"][:, :-1]
    tgt = x[:, 1:]
    la = F.cross_entropy(a.reshape(-1, a.shape[-1]), tgt.reshape(-1)).item()
    lb = F.cross_entropy(b.reshape(-1, b.shape[-1]), tgt.reshape(-1)).item()
    same = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    d = (a - b).abs().amax(-1).flatten().sort().values
    print("demo text (%d x %d tokens), torch float32, %d FP8-stored GEMM weights quantised-activation (%d hit): "
          "loss f32 %.5f, every FP8 GEMM with e4m3 1x128 activations %.5f (diff %+.5f nats), next-token argmax "
          "same %.4f, per-position logits max|diff| median %.3g p99 %.3g max %.3g"
          % (W, n_ctx, len(storages), len(hits), la, lb, lb - la, same, d[len(d) // 2].item(),
             d[int(0.99 * (len(d) - 1))].item(), d[-1].item()))
