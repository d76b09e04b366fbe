"""Shared by the reference generators (make_reference_checkpoint.py,
make_reference_sweep.py): their random init, reuse of train_demo_model.py's exporter,
capture of what stock transformers selects, and the near-tie screening of
tests/data/golden/README.md. Needs PyTorch; no transformers import.

Selection rules recomputed here are DeepSeek's (inference/model.py): experts of groups
that were not chosen are out (-inf), never merely scored 0; exact ties are not allowed to
matter because prompts with any boundary gap below the threshold are rejected.
"""

import ast
import math
import os
import time

import torch

T_START = time.time()


def elapsed():
    return time.time() - T_START


def log(*a):
    print(f"[{elapsed():7.1f}s]", *a, flush=True)


TD_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_demo_model.py")


def load_train_demo(names, ns):
    """Executes the named top-level functions of train_demo_model.py (and its FP8_RE)
    from its syntax tree in namespace `ns` (importing it would run its training); returns
    ns. Globals those functions read (cfg, E, MOD...) are set in ns by the caller."""
    with open(TD_PATH) as f:
        src = f.read()
    tree = ast.parse(src, TD_PATH)
    nodes = [n for n in tree.body if (isinstance(n, ast.FunctionDef) and n.name in names) or (
        isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "FP8_RE" for t in n.targets))]
    found = {n.name if isinstance(n, ast.FunctionDef) else "FP8_RE" for n in nodes}
    missing = (set(names) | {"FP8_RE"}) - found
    assert not missing, "train_demo_model.py no longer defines %s" % sorted(missing)
    ns.setdefault("re", __import__("re"))
    exec(compile(ast.Module(body=nodes, type_ignores=[]), TD_PATH, "exec"), ns)
    return ns


def init_weights(m, seed, H, I_moe):
    """Random weights of a transformers DeepSeek-V3/V3.2 model (H = hidden_size, I_moe =
    moe_intermediate_size): projections with unit-gain std 1/sqrt(fan_in), q_b_proj /
    kv_b_proj / q_proj 1.5x that so that attention is peaked, router std 0.1, norm
    weights 1 + N(0, 0.1), indexer k_norm bias N(0, 0.1), embeddings N(0, 1),
    e_score_correction_bias N(0, 0.05) so that the bias changes some expert choices.
    Returns how many correction biases were set."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if n.endswith("norm.weight"):
                v = 1.0 + 0.1 * r
            elif n.endswith("k_norm.bias"):
                v = 0.1 * r
            elif n == "model.embed_tokens.weight":
                v = r
            elif n.endswith("mlp.gate.weight"):
                v = 0.1 * r
            elif n.endswith("experts.gate_up_proj"):
                v = r / math.sqrt(H)
            elif n.endswith("experts.down_proj"):
                v = r / math.sqrt(I_moe)
            elif n.endswith(("q_b_proj.weight", "kv_b_proj.weight", "q_proj.weight")):
                v = 1.5 * r / math.sqrt(p.shape[1])
            elif n.endswith(".weight") and p.dim() == 2:
                v = r / math.sqrt(p.shape[1])
            else:
                raise AssertionError("no init rule for %s %s" % (n, tuple(p.shape)))
            p.copy_(v)
        n_bias = 0
        for n, b in m.named_buffers():
            if n.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn(b.shape, generator=g))
                n_bias += 1
    return n_bias


class Spec:
    """The dims the screening needs, from a transformers config."""

    @staticmethod
    def of(cfg):
        s = Spec()
        s.L = cfg.num_hidden_layers
        s.V = cfg.vocab_size
        s.H = cfg.hidden_size
        s.topk = getattr(cfg, "index_topk", None) if hasattr(cfg, "index_n_heads") else None
        s.E = cfg.n_routed_experts
        s.n_group = cfg.n_group
        s.topk_group = cfg.topk_group
        s.k = cfg.num_experts_per_tok
        return s


def _int_tensor(out):
    items = out if isinstance(out, (tuple, list)) else (out,)
    for t in items:
        if torch.is_tensor(t) and not t.is_floating_point():
            return t
    return None


def run_captured(m, ids, spec):
    """Runs m on ids [B, T] (no cache) and returns what each layer did: indexer inputs
    and top-k, router inputs and chosen experts (as transformers chose them), layer
    outputs, logits. Should a transformers version expose no expert ids, they are
    recomputed (DeepSeek's rule) and ("experts_recomputed", l) is set."""
    cap = {}
    hooks, patched = [], []
    for li, layer in enumerate(m.model.layers):
        idx = getattr(layer.self_attn, "indexer", None)
        if idx is not None:
            def idx_pre(mod, a, kw, li=li):
                cap[("idx_in", li)] = (a, kw)

            def idx_out(mod, a, out, li=li):
                cap[("topk", li)] = _int_tensor(out)

            hooks.append(idx.register_forward_pre_hook(idx_pre, with_kwargs=True))
            hooks.append(idx.register_forward_hook(idx_out))

        def lay_out(mod, a, out, li=li):
            cap[("out", li)] = out[0] if isinstance(out, tuple) else out

        hooks.append(layer.register_forward_hook(lay_out))
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None and hasattr(gate, "e_score_correction_bias"):
            def gate_pre(mod, a, li=li):
                cap[("gate_in", li)] = a[0]

            def gate_out(mod, a, out, li=li):
                t = _int_tensor(out)
                if t is not None:
                    cap[("experts", li)] = t

            hooks.append(gate.register_forward_pre_hook(gate_pre))
            hooks.append(gate.register_forward_hook(gate_out))
            route = getattr(layer.mlp, "route_tokens_to_experts", None)
            if route is not None:
                def routed(*a, _route=route, li=li, **kw):
                    res = _route(*a, **kw)
                    t = _int_tensor(res)
                    if t is not None:
                        cap[("experts", li)] = t
                    return res

                layer.mlp.route_tokens_to_experts = routed
                patched.append(layer.mlp)
    try:
        with torch.no_grad():
            cap["logits"] = m(input_ids=ids, use_cache=False).logits
    finally:
        for h in hooks:
            h.remove()
        for mod in patched:
            del mod.route_tokens_to_experts
    for li, layer in enumerate(m.model.layers):
        if ("gate_in", li) in cap and ("experts", li) not in cap:
            cap[("experts", li)] = expert_choice(layer.mlp.gate, cap[("gate_in", li)], spec)[1]
            cap[("experts_recomputed", li)] = True
    return cap


def rel_gap(srt, k):
    """srt sorted descending on the last dim: gap between ranks k and k+1 over |top|."""
    return (srt[..., k - 1] - srt[..., k]) / srt[..., 0].abs().clamp_min(1e-30)


def expert_choice(gate, h, spec):
    """h [N, hidden] -> (relative gap at the group and expert boundaries [N], sorted
    expert sets [N, k]) in float64, DeepSeek's rule."""
    h = h.double().reshape(-1, spec.H)
    sc = torch.sigmoid(h @ gate.weight.double().t()) + gate.e_score_correction_bias.double()
    N, G, per = sc.shape[0], spec.n_group, spec.E // spec.n_group
    inf = torch.full((N,), float("inf"), dtype=torch.float64, device=sc.device)
    grp = sc.view(N, G, per).topk(2, dim=-1).values.sum(-1)
    g1 = rel_gap(grp.sort(-1, descending=True).values, spec.topk_group) if spec.topk_group < G else inf
    keep = torch.zeros_like(grp, dtype=torch.bool).scatter_(1, grp.topk(spec.topk_group, dim=-1).indices, True)
    sc2 = sc.masked_fill(~keep.repeat_interleave(per, dim=1), float("-inf"))
    g2 = rel_gap(sc2.sort(-1, descending=True).values, spec.k) if spec.k < spec.E else inf
    g2 = torch.nan_to_num(g2, nan=float("inf"))  # -inf - -inf past the chosen groups: no boundary
    return torch.minimum(g1, g2), sc2.topk(spec.k, dim=-1).indices.sort(-1).values


def indexer_sets(topk, T):
    """Indexer top-k [B, T, k] -> boolean [B, T, T] of the causal positions chosen (rows
    with at most k predecessors also list masked future positions; dropped here)."""
    B = topk.shape[0]
    sel = torch.zeros(B, T, T, dtype=torch.bool, device=topk.device)
    sel.scatter_(2, topk.long(), True)
    return sel & torch.ones(T, T, dtype=torch.bool, device=topk.device).tril()


def margins(m, cap, spec, indexer_scores):
    """After run_captured: per sequence the smallest relative gap at any indexer top-k
    boundary (rows t >= top-k) and at any routing boundary, in float64, and whether our
    recomputation chose exactly what transformers chose."""
    B, T = cap["logits"].shape[:2]
    dev = cap["logits"].device
    idx_m = torch.full((B,), float("inf"), dtype=torch.float64, device=dev)
    exp_m = idx_m.clone()
    agree = torch.ones(B, dtype=torch.bool, device=dev)
    causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    for li, layer in enumerate(m.model.layers):
        if ("idx_in", li) in cap:
            a, kw = cap[("idx_in", li)]
            names = ["hidden_states", "q_resid", "position_embeddings"]
            x, q_resid, pe = [a[i] if len(a) > i else kw[names[i]] for i in range(3)]
            with torch.no_grad():
                I = indexer_scores(layer.self_attn.indexer, x.double(), q_resid.double(), pe[0].double(),
                                   pe[1].double())
            I = I.masked_fill(~causal, float("-inf"))
            if T > spec.topk:
                srt = I[:, spec.topk:].sort(-1, descending=True)
                idx_m = torch.minimum(idx_m, rel_gap(srt.values, spec.topk).amin(-1))
                mine = torch.zeros_like(I, dtype=torch.bool).scatter_(2, I.topk(spec.topk, dim=-1).indices, True)
                theirs = indexer_sets(cap[("topk", li)], T)
                agree &= (mine[:, spec.topk:] == theirs[:, spec.topk:]).flatten(1).all(-1)
        if ("gate_in", li) in cap:
            g, sets = expert_choice(layer.mlp.gate, cap[("gate_in", li)], spec)
            exp_m = torch.minimum(exp_m, g.view(B, T).amin(-1))
            theirs = cap[("experts", li)].reshape(B * T, spec.k).sort(-1).values
            agree &= (sets == theirs).view(B, T * spec.k).all(-1)
    return idx_m, exp_m, agree


def selections(cap, spec, T):
    """After run_captured on one sequence: what transformers chose, comparable across runs."""
    out = {}
    for key, v in cap.items():
        if isinstance(key, tuple) and key[0] == "topk":
            out[key] = indexer_sets(v.reshape(1, T, -1), T)
        elif isinstance(key, tuple) and key[0] == "experts":
            out[key] = v.reshape(T, spec.k).sort(-1).values
    return out


def greedy(m, prompt, steps):
    """Greedy continuation, the whole sequence re-run at every step (what a KV-cached
    decode must reproduce): ids, logits [steps, vocab] (float64, CPU), top-2 gaps."""
    dev = next(m.parameters()).device
    ids, out, lgs, gaps = list(prompt), [], [], []
    with torch.no_grad():
        for _ in range(steps):
            lg = m(input_ids=torch.tensor([ids], device=dev), use_cache=False).logits[0, -1].double().cpu()
            top2 = lg.topk(2)
            gaps.append((top2.values[0] - top2.values[1]).item())
            nxt = int((lg == top2.values[0]).nonzero().min())
            out.append(nxt)
            lgs.append(lg)
            ids.append(nxt)
    return out, torch.stack(lgs), gaps


def check_candidate(ref64, ref32, spec, long, short, steps, indexer_scores, min_rel_gap, min_logit_gap):
    """A (long, short) prompt pair that passed the batched screening: the greedy
    continuation and the decode rows are checked too (gaps, float32 == float64). Returns
    None, or {"info": checks, "tensors": the reference}."""
    dev = next(ref64.parameters()).device
    g64, lg64, gaps64 = greedy(ref64, long, steps)
    g32, lg32, gaps32 = greedy(ref32, long, steps)
    if g64 != g32 or min(gaps64 + gaps32) < min_logit_gap:
        return None
    full = long + g64[:-1]
    Tf = len(full)
    c64 = run_captured(ref64, torch.tensor([full], device=dev), spec)
    im, em, ag = margins(ref64, c64, spec, indexer_scores)
    if not bool(ag[0]) or min(im.item(), em.item()) < min_rel_gap:
        return None
    c32 = run_captured(ref32, torch.tensor([full], device=dev), spec)
    s64, s32 = selections(c64, spec, Tf), selections(c32, spec, Tf)
    if any(not torch.equal(s64[k], s32[k]) for k in s64):
        return None
    tensors, info = {}, {}
    for tag, ids in (("long", long), ("short", short)):
        T = len(ids)
        c64 = run_captured(ref64, torch.tensor([ids], device=dev), spec)
        c32 = run_captured(ref32, torch.tensor([ids], device=dev), spec)
        s64, s32 = selections(c64, spec, T), selections(c32, spec, T)
        if any(not torch.equal(s64[k], s32[k]) for k in s64):
            return None
        im, em, ag = margins(ref64, c64, spec, indexer_scores)
        if not bool(ag[0]) or min(im.item(), em.item()) < min_rel_gap:
            return None
        lg = c64["logits"][0]
        tensors[tag + ".input_ids"] = torch.tensor(ids, dtype=torch.int32)
        tensors[tag + ".logits"] = lg.float().cpu()
        for li in range(spec.L):
            if ("topk", li) in c64:
                tensors["%s.L%d.topk" % (tag, li)] = c64[("topk", li)][0].sort(-1).values.to(torch.int32).cpu()
            if ("experts", li) in c64:
                tensors["%s.L%d.experts" % (tag, li)] = s64[("experts", li)].to(torch.int32).cpu()
            if tag == "long":
                tensors["long.L%d.out" % li] = c64[("out", li)][0].float().cpu()
        info[tag + "_len"] = T
        info["experts_recomputed"] = any(k[0] == "experts_recomputed" for k in c64 if isinstance(k, tuple))
        info[tag + "_min_indexer_rel_gap"] = im.item()
        info[tag + "_min_expert_rel_gap"] = em.item()
        info[tag + "_logits_f32_vs_f64_max_abs"] = (c32["logits"][0].double() - lg.double()).abs().max().item()
        info[tag + "_logit_rms"] = lg.double().pow(2).mean().sqrt().item()
        if tag == "long":
            assert (lg64[0] - lg[-1].double().cpu()).abs().max().item() < 1e-9
    tensors["long.greedy_ids"] = torch.tensor(g64, dtype=torch.int32)
    tensors["long.greedy_logits"] = lg64.float()
    info["min_top2_logit_gap"] = min(gaps64 + gaps32)
    info["greedy_logits_f32_vs_f64_max_abs"] = (lg32 - lg64).abs().max().item()
    return {"info": info, "tensors": {k: v.contiguous() for k, v in tensors.items()}}
