#!/usr/bin/env python3
"""Train the tiny DeepSeek-V3.2 demo model shipped in models/demo/.

Not part of the library or of CI. Needs one CUDA GPU, PyTorch, Hugging Face
`transformers` (with DeepseekV32ForCausalLM; written against 5.17), `tokenizers`
and `safetensors`. The whole pipeline runs in one process, in well under 15
minutes on one H100:

  corpus     the standard library `.py` sources of the interpreter running this
             script, split into train/validation by a hash of each file's
             relative path (sha256 % 20 == 0 -> validation, about 5 %)
  tokenizer  byte-level BPE trained with `tokenizers` (ByteLevel pre-tokenizer and
             decoder, vocab 4096, two special tokens), saved as tokenizer.json
  stage 0    dense pre-training: the main model attends to every causal token
  stage 1    indexer warm-up: main model frozen, dense attention, the lightning
             indexer is trained with KL(p || softmax(I)) where p is the main
             attention summed over heads and L1-normalised (per query, per layer)
  stage 2    sparse training: every query attends only to the indexer's top-k
             tokens; language-model loss for the main model, KL on the selected set
             for the indexer, whose inputs are detached from the main graph
             (DeepSeek-V3.2 paper, section 2.1)
  eval       validation loss at 512-token contexts: dense, DSA (trained indexer),
             DSA (indexer at random init), sliding window of k tokens
  export     the released Hugging Face layout: config.json in the legacy
             `rope_scaling` form, model.safetensors.index.json, 2 shards; FP8 e4m3
             projection weights with float32 128x128 power-of-two block scales
             (`weight_scale_inv`), bf16 norms / embeddings / lm_head / router /
             indexer.weights_proj, float32 e_score_correction_bias; experts one
             tensor per expert as in the released checkpoint
  reference  the exported files are loaded back, dequantised to float32 and run by
             transformers' own DeepseekV32ForCausalLM (eager attention, stock
             code, no cache, CPU) to give reference.json: the greedy continuation
             of a validation snippet longer than top-k, checked for near-ties.

Training uses our own attention forward (patched onto the HF attention class) so
that the attention probabilities and the indexer scores are available with
gradients; before export it is checked against the stock HF forward.

Usage: python3 scripts/train_demo_model.py --out DIR [--steps0 N ...]
"""

import argparse
import hashlib
import json
import math
import os
import re
import struct
import sys
import sysconfig
import time

import torch
import torch.nn.functional as F

T_START = time.time()


def log(*a):
    print(f"[{time.time() - T_START:7.1f}s]", *a, flush=True)


# ----------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--seed", type=int, default=1234)
ap.add_argument("--vocab", type=int, default=4096)
ap.add_argument("--ctx", type=int, default=512)
ap.add_argument("--topk", type=int, default=64)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--steps0", type=int, default=2000)
ap.add_argument("--steps1", type=int, default=300)
ap.add_argument("--steps2", type=int, default=500)
ap.add_argument("--lr0", type=float, default=3e-3)
ap.add_argument("--lr1", type=float, default=1e-3)
ap.add_argument("--lr2", type=float, default=3e-4)
ap.add_argument("--lr2_indexer", type=float, default=3e-4)
ap.add_argument("--max_sec0", type=float, default=1e9, help="safety cut for stage 0")
ap.add_argument("--max_sec1", type=float, default=1e9)
ap.add_argument("--max_sec2", type=float, default=1e9)
ap.add_argument("--eval_windows", type=int, default=384)
ap.add_argument("--log_every", type=int, default=50)
ap.add_argument("--val_every", type=int, default=100)
ap.add_argument("--control", type=int, default=1, help="also run the dense-continuation control")
ap.add_argument("--ref_candidates", type=int, default=48)
ap.add_argument("--ref_search_sec", type=float, default=60)
ap.add_argument("--prompt_tokens", type=int, default=160)
ap.add_argument("--greedy_steps", type=int, default=32)
args = ap.parse_args()
os.makedirs(args.out, exist_ok=True)

import transformers  # noqa: E402
import tokenizers  # noqa: E402
import safetensors  # noqa: E402
from safetensors.torch import save_file, load_file  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers  # noqa: E402
from transformers import DeepseekV32Config, DeepseekV32ForCausalLM  # noqa: E402
import transformers.models.deepseek_v32.modeling_deepseek_v32 as MOD  # noqa: E402

METRICS = {"versions": {
    "python": sys.version.split()[0], "torch": torch.__version__,
    "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
    "safetensors": safetensors.__version__,
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    "args": vars(args)}
log("versions", METRICS["versions"])
dev = torch.device("cuda")
torch.manual_seed(args.seed)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"

# ----------------------------------------------------------------------------------
# Corpus: this interpreter's standard library
# ----------------------------------------------------------------------------------

t0 = time.time()
stdlib = sysconfig.get_paths()["stdlib"]
files = []
for root, dirs, names in os.walk(stdlib):
    dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__"))
    for n in sorted(names):
        if n.endswith(".py"):
            files.append(os.path.join(root, n))
files.sort()
train_docs, val_docs, skipped = [], [], 0
for p in files:
    rel = os.path.relpath(p, stdlib).replace(os.sep, "/")
    try:
        with open(p, "rb") as f:
            text = f.read().decode("utf-8")
    except (UnicodeDecodeError, OSError):
        skipped += 1
        continue
    if not text.strip():
        skipped += 1
        continue
    is_val = int(hashlib.sha256(rel.encode()).hexdigest(), 16) % 20 == 0
    (val_docs if is_val else train_docs).append((rel, text))
corpus = {
    "python_version": sys.version, "stdlib": stdlib,
    "split_rule": "validation iff int(sha256(relative_path).hexdigest(), 16) % 20 == 0",
    "files_train": len(train_docs), "files_val": len(val_docs), "files_skipped_not_utf8_or_empty": skipped,
    "bytes_train": sum(len(t.encode()) for _, t in train_docs),
    "bytes_val": sum(len(t.encode()) for _, t in val_docs)}
log("corpus", corpus)

# ----------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------

tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=args.vocab, min_frequency=2, show_progress=False,
                              special_tokens=[BOS, EOS],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train_from_iterator((t for _, t in train_docs), trainer=trainer)
tok.save(os.path.join(args.out, "tokenizer.json"))
V = tok.get_vocab_size()
BOS_ID, EOS_ID = tok.token_to_id(BOS), tok.token_to_id(EOS)
assert (BOS_ID, EOS_ID) == (0, 1), (BOS_ID, EOS_ID)
log("tokenizer vocab", V, "trained in %.1fs" % (time.time() - t0))


def encode_docs(docs):
    encs = tok.encode_batch([t for _, t in docs], add_special_tokens=False)
    out = []
    for e in encs:
        out.append(BOS_ID)
        out.extend(e.ids)
        out.append(EOS_ID)
    return torch.tensor(out, dtype=torch.int64), encs


train_ids, _ = encode_docs(train_docs)
val_ids, val_encs = encode_docs(val_docs)
corpus["tokens_train"] = int(train_ids.numel())
corpus["tokens_val"] = int(val_ids.numel())
corpus["bytes_per_token_train"] = corpus["bytes_train"] / corpus["tokens_train"]
corpus["seconds_tokenizer_and_encode"] = time.time() - t0
METRICS["corpus"] = corpus
log("tokens train %d val %d (%.2f bytes/token)" % (train_ids.numel(), val_ids.numel(),
                                                  corpus["bytes_per_token_train"]))
train_gpu = train_ids.to(dev)
S = args.ctx
nwin = min(args.eval_windows, (val_ids.numel() - 1) // (S + 1))
val_windows = val_ids[: nwin * (S + 1)].view(nwin, S + 1).to(dev)
METRICS["eval"] = {"windows": nwin, "tokens": nwin * S}
log("validation windows", nwin)
gen = torch.Generator(device=dev)
gen.manual_seed(args.seed)


def get_batch(B):
    starts = torch.randint(0, train_gpu.numel() - S - 1, (B,), device=dev, generator=gen)
    idx = starts[:, None] + torch.arange(S + 1, device=dev)[None]
    w = train_gpu[idx]
    return w[:, :-1], w[:, 1:]


# ----------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------

CONFIG_JSON = {
    "architectures": ["DeepseekV32ForCausalLM"],
    "model_type": "deepseek_v32",
    "vocab_size": V,
    "hidden_size": 256,
    "intermediate_size": 768,
    "moe_intermediate_size": 64,
    "num_hidden_layers": 4,
    "first_k_dense_replace": 1,
    "num_attention_heads": 4,
    "q_lora_rank": 128,
    "kv_lora_rank": 128,
    "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 32,
    "v_head_dim": 64,
    "n_routed_experts": 16,
    "n_group": 4,
    "topk_group": 2,
    "num_experts_per_tok": 4,
    "n_shared_experts": 1,
    "routed_scaling_factor": 2.5,
    "index_n_heads": 8,
    "index_head_dim": 64,
    "index_topk": args.topk,
    "max_position_embeddings": 512,
    "num_key_value_heads": 4,
    "num_nextn_predict_layers": 0,
    "moe_layer_freq": 1,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "norm_topk_prob": True,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000.0,
    "rope_scaling": {
        "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128,
        "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "attention_bias": False,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "quantization_config": {
        "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
        "weight_block_size": [128, 128], "scale_fmt": "ue8m0"},
}


def make_config():
    d = json.loads(json.dumps(CONFIG_JSON))
    d.pop("quantization_config")
    d.pop("torch_dtype")
    cfg = DeepseekV32Config(**d)
    cfg._attn_implementation = "eager"
    return cfg


def make_model(dtype=torch.float32, eager_experts=False):
    cfg = make_config()
    m = DeepseekV32ForCausalLM(cfg).to(dtype)
    try:
        m.set_attn_implementation("eager")
    except Exception:
        m.config._attn_implementation = "eager"
    if eager_experts:  # the plain per-expert loop (grouped_mm has no float64)
        m.set_experts_implementation("eager")
    return m


model = make_model().to(dev)
cfg = model.config
log("rope_parameters", getattr(cfg, "rope_parameters", None))
assert cfg.rope_parameters["rope_type"] == "yarn", cfg.rope_parameters
L = cfg.num_hidden_layers
ATTN_CLS = type(model.model.layers[0].self_attn)
log("attention scaling %.6f (qk_head_dim^-0.5 = %.6f)" % (model.model.layers[0].self_attn.scaling,
                                                         (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** -0.5))
assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
experts0 = model.model.layers[1].mlp.experts
log("experts params", {n: tuple(p.shape) for n, p in experts0.named_parameters()})
n_params = sum(p.numel() for p in model.parameters())
n_emb = model.lm_head.weight.numel() + model.model.embed_tokens.weight.numel()
METRICS["params"] = {"total": n_params, "embedding_and_lm_head": n_emb}
log("params total %d (non-embedding %d)" % (n_params, n_params - n_emb))


def is_indexer(name):
    return ".indexer." in name


random_indexer = {n: p.detach().clone() for n, p in model.named_parameters() if is_indexer(n)}

# ----------------------------------------------------------------------------------
# Attention forward used for training / evaluation (stock HF forward for 'stock')
# ----------------------------------------------------------------------------------

STATE = {"mode": "stock", "kl": False, "kl_list": [], "count_loads": False}
ORIG_FWD = ATTN_CLS.forward
CAUSAL = torch.ones(S, S, dtype=torch.bool, device=dev).tril()
POS = torch.arange(S, device=dev)
WINDOW = (POS[:, None] - POS[None, :]) < args.topk


def indexer_scores(idx, x, q_resid, cos, sin):
    """I[b,s,t] = sum_h w[b,s,h] * relu(q[b,s,h] . k[b,t]) * scale, as HF/DeepSeek."""
    B, T, _ = x.shape
    nh, D, rope = idx.n_heads, idx.head_dim, idx.qk_rope_head_dim
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    q = idx.wq_b(q_resid).view(B, T, nh, D)
    q_rot, q_pass = torch.split(q, [rope, D - rope], dim=-1)
    k = idx.k_norm(idx.wk(x)).unsqueeze(2)
    k_rot, k_pass = torch.split(k, [rope, D - rope], dim=-1)
    q_rot, k_rot = MOD.apply_rotary_pos_emb(q_rot, k_rot, cos, sin, unsqueeze_dim=2)
    q = torch.cat([q_rot, q_pass], dim=-1)
    k = torch.cat([k_rot, k_pass], dim=-1).squeeze(2)
    w = idx.weights_proj(x.to(idx.weights_proj.weight.dtype))
    with torch.autocast("cuda", enabled=False):
        s = torch.matmul(q.to(dt).transpose(1, 2), k.to(dt).transpose(-1, -2).unsqueeze(1)) * idx.softmax_scale
        s = F.relu(s)  # [B, nh, T, T]
        w = w.to(dt) * (nh ** -0.5)
        return torch.einsum("bsh,bhst->bst", w, s)


def patched_forward(self, *a, **kw):
    if STATE["mode"] == "stock":
        return ORIG_FWD(self, *a, **kw)
    x = kw["hidden_states"] if "hidden_states" in kw else a[0]
    pe = kw["position_embeddings"] if "position_embeddings" in kw else a[1]
    c = self.config
    B, T, _ = x.shape
    H = c.num_attention_heads
    nope, rope, vd, r = c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank
    q_resid = self.q_a_layernorm(self.q_a_proj(x))
    q = self.q_b_proj(q_resid).view(B, T, H, nope + rope).transpose(1, 2)
    q_pass, q_rot = torch.split(q, [nope, rope], dim=-1)
    ckv = self.kv_a_proj_with_mqa(x)
    kv_pass, k_rot = torch.split(ckv, [r, rope], dim=-1)
    k_pass = self.kv_a_layernorm(kv_pass)
    k_rot = k_rot.reshape(B, 1, T, rope)
    cos, sin = pe
    q_rot, k_rot = MOD.apply_rotary_pos_emb_interleave(q_rot, k_rot, cos, sin)
    query = torch.cat([q_pass, q_rot], dim=-1)
    kv = self.kv_b_proj(k_pass).view(B, T, H, nope + vd).transpose(1, 2)
    k_nope, v = torch.split(kv, [nope, vd], dim=-1)
    key = torch.cat([k_nope, k_rot.expand(B, H, T, rope)], dim=-1)
    scores = torch.matmul(query, key.transpose(-1, -2)) * self.scaling
    causal = CAUSAL[:T, :T]
    mode = STATE["mode"]
    I = None
    if mode == "sparse" or STATE["kl"]:
        I = indexer_scores(self.indexer, x.detach(), q_resid.detach(), cos, sin)
    if mode == "dense":
        allowed = causal.expand(B, T, T)
    elif mode == "sparse":
        kk = min(args.topk, T)
        sel = I.detach().masked_fill(~causal, float("-inf")).topk(kk, dim=-1).indices
        allowed = torch.zeros(B, T, T, dtype=torch.bool, device=x.device).scatter_(-1, sel, True) & causal
    elif mode == "window":
        allowed = (causal & WINDOW[:T, :T]).expand(B, T, T)
    else:
        raise ValueError(mode)
    scores = scores.float().masked_fill(~allowed[:, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs.to(v.dtype), v).transpose(1, 2).reshape(B, T, H * vd)
    out = self.o_proj(out)
    if STATE["kl"]:
        p = probs.detach().sum(1)
        p = p / p.sum(-1, keepdim=True)
        logq = torch.log_softmax(I.float().masked_fill(~allowed, float("-inf")), dim=-1)
        kl = (torch.xlogy(p, p) - p * torch.where(allowed, logq, torch.zeros_like(logq))).sum(-1).mean()
        STATE["kl_list"].append(kl)
    return out, None


ATTN_CLS.forward = patched_forward

# MoE load counting for the auxiliary-loss-free bias update (DeepSeek-V3)
GATES = [l.mlp.gate for l in model.model.layers if hasattr(l.mlp, "gate")]
E = cfg.n_routed_experts


def gate_hook(mod, inp, out):
    if STATE["count_loads"]:
        idx = [o for o in (out if isinstance(out, tuple) else (out,))
               if torch.is_tensor(o) and not o.is_floating_point()][0]
        mod._loads = torch.bincount(idx.flatten(), minlength=E).float()


for g in GATES:
    g.register_forward_hook(gate_hook)


@torch.no_grad()
def update_bias(gamma=1e-3):
    for g in GATES:
        ld = g._loads
        g.e_score_correction_bias += gamma * torch.sign(ld.mean() - ld)


def lr_at(step, total, peak, warmup, final_frac=0.1):
    if step < warmup:
        return peak * (step + 1) / warmup
    pr = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * pr)))


def make_opt(params, lr):
    decay = [p for p in params if p.dim() >= 2]
    nodecay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                              {"params": nodecay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


def set_lr(opt, lr):
    for g in opt.param_groups:
        g["lr"] = lr


AUTOCAST = dict(device_type="cuda", dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(mode, windows=None, fp32=False):
    windows = val_windows if windows is None else windows
    was = model.training
    model.eval()
    STATE["mode"], STATE["kl"] = mode, False
    tot, tot_late, n, n_late = 0.0, 0.0, 0, 0
    for i in range(0, windows.shape[0], 32):
        w = windows[i:i + 32]
        with torch.autocast(**AUTOCAST, enabled=not fp32):
            logits = model(input_ids=w[:, :-1], use_cache=False).logits
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                             reduction="none").view(w.shape[0], -1)
        tot += ce.sum().item()
        n += ce.numel()
        tot_late += ce[:, S // 2:].sum().item()
        n_late += ce[:, S // 2:].numel()
    model.train(was)
    return {"loss": tot / n, "ppl": math.exp(tot / n), "loss_pos_256_511": tot_late / n_late,
            "ppl_pos_256_511": math.exp(tot_late / n_late)}


def quick_val(mode):
    return evaluate(mode)["loss"]


def swap_indexer(state):
    saved = {}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            saved[n] = params[n].detach().clone()
            params[n].copy_(t)
    return saved


def eval_table(tag):
    res = {"dense": evaluate("dense"), "dsa_trained_indexer": evaluate("sparse")}
    saved = swap_indexer(random_indexer)
    res["dsa_random_init_indexer"] = evaluate("sparse")
    swap_indexer(saved)
    res["sliding_window"] = evaluate("window")
    for k, v in res.items():
        log("eval[%s] %-24s loss %.4f ppl %.3f | positions 256-511: loss %.4f" % (
            tag, k, v["loss"], v["ppl"], v["loss_pos_256_511"]))
    return res


# ----------------------------------------------------------------------------------
# Training stages
# ----------------------------------------------------------------------------------

curves = {"stage0": [], "stage1": [], "stage2": []}
stage_time = {}
B = args.batch
main_params = [p for n, p in model.named_parameters() if not is_indexer(n)]
idx_params = [p for n, p in model.named_parameters() if is_indexer(n)]

# ---- stage 0: dense pre-training
log("stage 0: dense pre-training, %d steps x %d x %d tokens" % (args.steps0, B, S))
for p in idx_params:
    p.requires_grad_(False)
opt = make_opt(main_params, args.lr0)
model.train()
STATE.update(mode="dense", kl=False, count_loads=True)
torch.cuda.synchronize()
t0 = time.time()
acc, accn, done0 = 0.0, 0, 0
for step in range(args.steps0):
    set_lr(opt, lr_at(step, args.steps0, args.lr0, warmup=min(200, args.steps0 // 10 + 1)))
    x, y = get_batch(B)
    with torch.autocast(**AUTOCAST):
        logits = model(input_ids=x, use_cache=False).logits
    loss = F.cross_entropy(logits.float().view(-1, V), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(main_params, 1.0)
    opt.step()
    update_bias()
    acc += loss.item() if (step + 1) % 10 == 0 or step < 3 else 0.0
    accn += 1 if (step + 1) % 10 == 0 or step < 3 else 0
    done0 = step + 1
    if step == 19:
        torch.cuda.synchronize()
        rate = 20 * B * S / (time.time() - t0)
        log("stage 0 throughput (first 20 steps, incl. warm-up) %.0f tokens/s" % rate)
    if done0 % args.log_every == 0 or done0 == args.steps0:
        curves["stage0"].append({"step": done0, "train_loss": acc / max(1, accn),
                                 "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t0})
        if done0 % args.val_every == 0 or done0 == args.steps0:
            curves["stage0"][-1]["val_loss"] = quick_val("dense")
            STATE.update(mode="dense", kl=False, count_loads=True)
        log("stage0 step %d" % done0, curves["stage0"][-1])
        acc, accn = 0.0, 0
    if time.time() - t0 > args.max_sec0:
        log("stage 0 cut by --max_sec0 at step", done0)
        break
torch.cuda.synchronize()
stage_time["stage0"] = time.time() - t0
METRICS["stage0"] = {"steps": done0, "tokens": done0 * B * S, "seconds": stage_time["stage0"],
                     "tokens_per_s": done0 * B * S / stage_time["stage0"]}
log("stage 0 done", METRICS["stage0"])
del opt
val_after_stage0 = evaluate("dense")
log("val after stage 0 (dense):", val_after_stage0)

# ---- stage 1: indexer warm-up
log("stage 1: indexer warm-up, %d steps" % args.steps1)
for p in main_params:
    p.requires_grad_(False)
for p in idx_params:
    p.requires_grad_(True)
opt_i = make_opt(idx_params, args.lr1)
STATE.update(mode="dense", kl=True, count_loads=False)
t0 = time.time()
acc, accn, done1 = 0.0, 0, 0
for step in range(args.steps1):
    set_lr(opt_i, lr_at(step, args.steps1, args.lr1, warmup=min(50, args.steps1 // 10 + 1)))
    x, _ = get_batch(B)
    STATE["kl_list"] = []
    with torch.autocast(**AUTOCAST):
        model(input_ids=x, use_cache=False, logits_to_keep=1)
    kl = torch.stack(STATE["kl_list"]).mean()
    opt_i.zero_grad(set_to_none=True)
    kl.backward()
    torch.nn.utils.clip_grad_norm_(idx_params, 1.0)
    opt_i.step()
    acc += kl.item()
    accn += 1
    done1 = step + 1
    if step == 0:
        curves["stage1"].append({"step": 0, "kl": kl.item(), "seconds": time.time() - t0})
        log("stage1 initial KL %.4f" % kl.item())
    if done1 % max(1, args.log_every // 2) == 0 or done1 == args.steps1:
        curves["stage1"].append({"step": done1, "kl": acc / accn, "seconds": time.time() - t0})
        log("stage1 step %d KL %.4f" % (done1, acc / accn))
        acc, accn = 0.0, 0
    if time.time() - t0 > args.max_sec1:
        log("stage 1 cut at", done1)
        break
torch.cuda.synchronize()
stage_time["stage1"] = time.time() - t0
METRICS["stage1"] = {"steps": done1, "tokens": done1 * B * S, "seconds": stage_time["stage1"]}
log("stage 1 done", METRICS["stage1"])
del opt_i
STATE["kl"] = False
eval_after_warmup = eval_table("after warm-up")

# ---- stage 2: sparse training (and, as a control, the same steps with dense attention)


def run_stage2(sparse, key):
    """Continue from the warm-up state. sparse=True is the paper's stage 2; sparse=False
    is a control: identical steps, LR and batches, dense attention, indexer untouched."""
    log("%s: %s training, %d steps" % (key, "sparse" if sparse else "dense (control)", args.steps2))
    gen.manual_seed(args.seed + 2)  # the same batches for both runs
    for p in main_params:
        p.requires_grad_(True)
    for p in idx_params:
        p.requires_grad_(sparse)
    opt_m = make_opt(main_params, args.lr2)
    opt_i = make_opt(idx_params, args.lr2_indexer) if sparse else None
    mode = "sparse" if sparse else "dense"
    STATE.update(mode=mode, kl=sparse, count_loads=True)
    t0 = time.time()
    acc, acck, accn, done = 0.0, 0.0, 0, 0
    for step in range(args.steps2):
        warm = min(100, args.steps2 // 10 + 1)
        set_lr(opt_m, lr_at(step, args.steps2, args.lr2, warmup=warm))
        x, y = get_batch(B)
        STATE["kl_list"] = []
        with torch.autocast(**AUTOCAST):
            logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().view(-1, V), y.reshape(-1))
        opt_m.zero_grad(set_to_none=True)
        if sparse:
            set_lr(opt_i, lr_at(step, args.steps2, args.lr2_indexer, warmup=warm))
            kl = torch.stack(STATE["kl_list"]).mean()
            opt_i.zero_grad(set_to_none=True)
            (loss + kl).backward()  # disjoint graphs: indexer inputs and KL targets are detached
            torch.nn.utils.clip_grad_norm_(idx_params, 1.0)
        else:
            kl = torch.zeros(())
            loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt_m.step()
        if sparse:
            opt_i.step()
        update_bias()
        if (step + 1) % 10 == 0:
            acc += loss.item()
            acck += kl.item()
            accn += 1
        done = step + 1
        if step == 19:
            torch.cuda.synchronize()
            log("%s throughput (first 20 steps) %.0f tokens/s" % (key, 20 * B * S / (time.time() - t0)))
        if done % args.log_every == 0 or done == args.steps2:
            curves[key].append({"step": done, "train_loss": acc / max(1, accn), "seconds": time.time() - t0})
            if sparse:
                curves[key][-1]["kl"] = acck / max(1, accn)
            if done % args.val_every == 0 or done == args.steps2:
                curves[key][-1]["val_loss"] = quick_val(mode)
                STATE.update(mode=mode, kl=sparse, count_loads=True)
            log("%s step %d" % (key, done), curves[key][-1])
            acc, acck, accn = 0.0, 0.0, 0
        if time.time() - t0 > args.max_sec2:
            log("%s cut at" % key, done)
            break
    torch.cuda.synchronize()
    stage_time[key] = time.time() - t0
    METRICS[key] = {"steps": done, "tokens": done * B * S, "seconds": stage_time[key]}
    log("%s done" % key, METRICS[key])
    STATE.update(kl=False, count_loads=False)


curves["stage2_dense_control"] = []
snapshot = {n: t.detach().clone() for n, t in model.state_dict().items()}
if args.control:
    run_stage2(False, "stage2_dense_control")
    ctl = {"dense": evaluate("dense"), "dsa_warmup_indexer": evaluate("sparse")}
    for k_, v_ in ctl.items():
        log("eval[control] %-24s loss %.4f ppl %.3f" % (k_, v_["loss"], v_["ppl"]))
    METRICS["eval_dense_control"] = ctl
    model.load_state_dict(snapshot)
del snapshot
run_stage2(True, "stage2")
eval_final = eval_table("final")
METRICS["curves"] = curves
METRICS["val_after_stage0_dense"] = val_after_stage0
METRICS["eval_after_warmup"] = eval_after_warmup
METRICS["eval_final"] = eval_final


def dump_metrics():
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(METRICS, f, indent=1)


dump_metrics()

# ----------------------------------------------------------------------------------
# Export: FP8 e4m3 with 128x128 power-of-two block scales, released HF layout
# ----------------------------------------------------------------------------------

t0 = time.time()
FP8_RE = re.compile(r"(self_attn\.(q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)"
                    r"|self_attn\.indexer\.(wq_b|wk)"
                    r"|mlp\.(gate_proj|up_proj|down_proj)"
                    r"|mlp\.shared_experts\.(gate_proj|up_proj|down_proj)"
                    r"|mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj))\.weight$")


def quantize_fp8(w):
    w = w.float().cpu()
    O, I_ = w.shape
    bo, bi = -(-O // 128), -(-I_ // 128)
    pad = torch.zeros(bo * 128, bi * 128)
    pad[:O, :I_] = w
    amax = pad.view(bo, 128, bi, 128).abs().amax(dim=(1, 3))
    scale = torch.where(amax > 0, torch.exp2(torch.ceil(torch.log2(amax / 448.0))), torch.ones_like(amax))
    full = scale.repeat_interleave(128, 0).repeat_interleave(128, 1)[:O, :I_]
    q = (w / full).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return q, scale.float().contiguous()


def dequantize_fp8(q, scale):
    O, I_ = q.shape
    full = scale.repeat_interleave(128, 0).repeat_interleave(128, 1)[:O, :I_]
    return q.float() * full


def unfuse_experts(sd):
    """HF 5.x fused expert params -> one tensor per expert (released layout).

    transformers 5.17 stores gate_up_proj as [E, 2I, H] and down_proj as [E, H, I]; a
    transposed layout is recognised only where the shape tells them apart (a square
    matrix, e.g. 2I == H, is taken as the documented layout)."""
    out = {}
    I_, Hd = cfg.moe_intermediate_size, cfg.hidden_size
    for n, t in sd.items():
        m = re.match(r"(model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)$", n)
        if not m:
            out[n] = t
            continue
        pre, kind = m.groups()
        for e in range(t.shape[0]):
            te = t[e]
            if kind == "gate_up_proj":
                if te.shape == (Hd, 2 * I_) and Hd != 2 * I_:
                    te = te.t()
                assert te.shape == (2 * I_, Hd), te.shape
                out[f"{pre}.{e}.gate_proj.weight"] = te[:I_].contiguous()
                out[f"{pre}.{e}.up_proj.weight"] = te[I_:].contiguous()
            else:
                if te.shape == (I_, Hd) and I_ != Hd:
                    te = te.t()
                assert te.shape == (Hd, I_), te.shape
                out[f"{pre}.{e}.down_proj.weight"] = te.contiguous()
    return out


def fuse_experts(sd, target_sd):
    """Per-expert tensors -> whatever layout the installed transformers uses."""
    out = {}
    groups = {}
    for n, t in sd.items():
        m = re.match(r"(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$", n)
        if m:
            groups.setdefault(m.group(1), {})[(int(m.group(2)), m.group(3))] = t
        else:
            out[n] = t
    for pre, g in groups.items():
        if pre + ".gate_up_proj" in target_sd:
            gu = torch.stack([torch.cat([g[(e, "gate_proj")], g[(e, "up_proj")]], 0) for e in range(E)])
            dn = torch.stack([g[(e, "down_proj")] for e in range(E)])
            if target_sd[pre + ".gate_up_proj"].shape != gu.shape:
                gu = gu.transpose(1, 2)
            if target_sd[pre + ".down_proj"].shape != dn.shape:
                dn = dn.transpose(1, 2)
            out[pre + ".gate_up_proj"] = gu.contiguous()
            out[pre + ".down_proj"] = dn.contiguous()
        else:
            for (e, k), t in g.items():
                out[f"{pre}.{e}.{k}.weight"] = t
    return out


# semantic check of the expert layout: HF's experts module vs the per-expert formula
with torch.no_grad():
    ex = model.model.layers[1].mlp.experts
    per = unfuse_experts({"model.layers.1.mlp.experts." + n: p.detach().float()
                          for n, p in ex.named_parameters()})
    hx = torch.randn(3, cfg.hidden_size, device=dev)
    e = 5
    got = ex.float()(hx, torch.full((3, 1), e, device=dev, dtype=torch.long), torch.ones(3, 1, device=dev))
    g_ = per[f"model.layers.1.mlp.experts.{e}.gate_proj.weight"]
    u_ = per[f"model.layers.1.mlp.experts.{e}.up_proj.weight"]
    d_ = per[f"model.layers.1.mlp.experts.{e}.down_proj.weight"]
    want = (F.silu(hx @ g_.t()) * (hx @ u_.t())) @ d_.t()
    err = (got - want).abs().max().item()
    log("expert layout check: max |diff| %.3g" % err)
    assert err < 1e-3 * max(1.0, want.abs().max().item()), err

sd = {n: t.detach().float().cpu() for n, t in model.state_dict().items()
      if "rotary_emb" not in n and not n.endswith("inv_freq")}
sd = unfuse_experts(sd)
export = {}
n_fp8 = 0
for n, t in sd.items():
    if FP8_RE.search(n):
        q, s = quantize_fp8(t)
        export[n] = q
        export[n + "_scale_inv"] = s
        n_fp8 += 1
    elif n.endswith("e_score_correction_bias"):
        export[n] = t.float().contiguous()
    else:
        export[n] = t.to(torch.bfloat16).contiguous()


def layer_key(n):
    if n == "lm_head.weight":
        return (0, 0, n)
    if n == "model.embed_tokens.weight":
        return (1, 0, n)
    m = re.match(r"model\.layers\.(\d+)\.", n)
    if m:
        return (2, int(m.group(1)), n)
    return (3, 0, n)


names = sorted(export, key=layer_key)
nbytes = {n: export[n].numel() * export[n].element_size() for n in names}
total = sum(nbytes.values())
shards = [{}, {}]
accb = 0
for n in names:
    shards[0 if accb < total / 2 else 1][n] = export[n]
    accb += nbytes[n]
weight_map = {}
for i, sh in enumerate(shards):
    fn = "model-%05d-of-00002.safetensors" % (i + 1)
    save_file(sh, os.path.join(args.out, fn), metadata={"format": "pt"})
    for n in sh:
        weight_map[n] = fn
with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
with open(os.path.join(args.out, "config.json"), "w") as f:
    json.dump(CONFIG_JSON, f, indent=2)
METRICS["export"] = {"tensors": len(export), "fp8_tensors": n_fp8, "total_tensor_bytes": total,
                     "seconds": time.time() - t0}
log("exported", METRICS["export"])

# ----------------------------------------------------------------------------------
# Load the export back, dequantise, and run stock transformers
# ----------------------------------------------------------------------------------


def load_dequantised(dtype):
    raw = {}
    for fn in sorted(set(weight_map.values())):
        raw.update(load_file(os.path.join(args.out, fn)))
    deq = {}
    for n, t in raw.items():
        if n.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            deq[n] = dequantize_fp8(t, raw[n + "_scale_inv"])
        else:
            deq[n] = t.float()
    m = make_model(torch.float32, eager_experts=True)
    tsd = m.state_dict()
    deq = fuse_experts(deq, tsd)
    missing, unexpected = m.load_state_dict(deq, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k and "inv_freq" not in k]
    assert not missing and not unexpected, (missing, unexpected)
    return m.to(dtype).eval()


ref_gpu = load_dequantised(torch.float32).to(dev)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
# our training forward vs the stock HF forward, fp32, on the dequantised export
with torch.no_grad():
    w = val_windows[:8, :-1]
    STATE["mode"] = "stock"
    stock = ref_gpu(input_ids=w, use_cache=False).logits
    STATE["mode"] = "sparse"
    ours = ref_gpu(input_ids=w, use_cache=False).logits
    STATE["mode"] = "stock"
    d = (stock - ours).abs()
    METRICS["check_patched_vs_stock"] = {"max_abs": d.max().item(), "mean_abs": d.mean().item(),
                                         "logit_rms": stock.pow(2).mean().sqrt().item()}
    log("patched sparse forward vs stock HF forward (fp32):", METRICS["check_patched_vs_stock"])
# validation loss of the exported (FP8-dequantised) model, stock HF, fp32
with torch.no_grad():
    STATE["mode"] = "stock"
    tot, n = 0.0, 0
    for i in range(0, val_windows.shape[0], 16):
        w = val_windows[i:i + 16]
        lg = ref_gpu(input_ids=w[:, :-1], use_cache=False).logits
        tot += F.cross_entropy(lg.reshape(-1, V), w[:, 1:].reshape(-1), reduction="sum").item()
        n += w[:, 1:].numel()
    METRICS["eval_export_fp8_stock_hf_fp32"] = {"loss": tot / n, "ppl": math.exp(tot / n)}
    log("exported FP8 model, stock HF DSA fp32: loss %.4f ppl %.3f" % (tot / n, math.exp(tot / n)))
del ref_gpu
torch.cuda.empty_cache()
dump_metrics()

# ---- reference continuation on the CPU, float32 (and float64 as a cross-check)
t0 = time.time()
STATE["mode"] = "stock"
torch.set_num_threads(os.cpu_count() or 8)
ref32 = load_dequantised(torch.float32)
ref64 = load_dequantised(torch.float64)
CAP = {}


def capture_hooks(m):
    hs = []
    for li, layer in enumerate(m.model.layers):
        def idx_pre(mod, a, kw, li=li):
            CAP[("idx", li)] = (a, kw)
        hs.append(layer.self_attn.indexer.register_forward_pre_hook(idx_pre, with_kwargs=True))
        if hasattr(layer.mlp, "gate"):
            def gate_pre(mod, a, li=li):
                CAP[("gate", li)] = a[0]
            hs.append(layer.mlp.gate.register_forward_pre_hook(gate_pre))
    return hs


def selection_margins(m, ids):
    """Indexer top-k sets and expert sets for the full sequence, with their margins."""
    CAP.clear()
    hs = capture_hooks(m)
    with torch.no_grad():
        m(input_ids=torch.tensor([ids]), use_cache=False)
        sets, idx_gap, exp_gap = [], float("inf"), float("inf")
        for li, layer in enumerate(m.model.layers):
            a, kw = CAP[("idx", li)]
            names = ["hidden_states", "q_resid", "position_embeddings"]
            x, q_resid, pe = [a[i] if len(a) > i else kw[names[i]] for i in range(3)]
            I = indexer_scores(layer.self_attn.indexer, x, q_resid, pe[0], pe[1])[0]
            T = I.shape[0]
            I = I.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
            k = args.topk
            if T > k:
                srt = I[k:].sort(dim=-1, descending=True).values
                gap = (srt[:, k - 1] - srt[:, k]) / srt[:, 0].abs().clamp_min(1e-30)
                idx_gap = min(idx_gap, gap.min().item())
                sets.append(I[k:].topk(k, dim=-1).indices.sort(-1).values)
            if ("gate", li) in CAP:
                g = layer.mlp.gate
                h = CAP[("gate", li)].reshape(-1, cfg.hidden_size)
                sc = torch.sigmoid(h @ g.weight.t()) + g.e_score_correction_bias.to(h.dtype)
                grp = sc.view(-1, cfg.n_group, E // cfg.n_group).topk(2, dim=-1).values.sum(-1)
                gs = grp.sort(-1, descending=True).values
                exp_gap = min(exp_gap, (gs[:, cfg.topk_group - 1] - gs[:, cfg.topk_group]).min().item())
                gsel = grp.topk(cfg.topk_group, dim=-1).indices
                gm = torch.zeros_like(grp, dtype=torch.bool).scatter_(1, gsel, True)
                sm = gm.repeat_interleave(E // cfg.n_group, dim=1)
                sc2 = sc.masked_fill(~sm, float("-inf")).sort(-1, descending=True).values
                kk = cfg.num_experts_per_tok
                exp_gap = min(exp_gap, (sc2[:, kk - 1] - sc2[:, kk]).min().item())
                sets.append(sc.masked_fill(~sm, float("-inf")).topk(kk, dim=-1).indices.sort(-1).values)
    for h in hs:
        h.remove()
    return sets, idx_gap, exp_gap


def greedy(m, prompt, steps, stop_eos=False):
    ids = list(prompt)
    out, gaps = [], []
    with torch.no_grad():
        for _ in range(steps):
            lg = m(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].double()
            top2 = lg.topk(2)
            gaps.append((top2.values[0] - top2.values[1]).item())
            nxt = int(top2.indices[0])
            if (lg == lg[nxt]).nonzero().min().item() != nxt:  # lowest id on exact ties
                nxt = int((lg == lg[nxt]).nonzero().min())
            out.append(nxt)
            ids.append(nxt)
            if stop_eos and nxt == EOS_ID:
                break
    return out, gaps


cands = []
for (rel, text), enc in zip(val_docs, val_encs):
    if len(enc.ids) < args.prompt_tokens + 200:
        continue
    # snippets start at a line that begins a definition, past the file's first tenth
    starts = [mm.start() for mm in re.finditer(r"^(    )?(def|class) ", text, flags=re.M)]
    starts = [s_ for s_ in starts if len(text) // 10 < s_ < len(text) - 4 * args.prompt_tokens]
    for s_ in starts[:: max(1, len(starts) // 4)][:4]:
        cands.append((rel, text, s_))
# deterministic, spread-out order
cands.sort(key=lambda c: hashlib.sha256(("%s:%d" % (c[0], c[2])).encode()).hexdigest())
log("reference: %d candidate snippets" % len(cands))
chosen, tried = None, []


def margin(info):
    return min(info["min_indexer_rel_gap_f64"], info["min_expert_gap_f64"])


for rel, text, off in cands[: args.ref_candidates]:
    if time.time() - t0 > args.ref_search_sec and chosen is not None:
        break
    pids = tok.encode(text[off: off + 8 * args.prompt_tokens], add_special_tokens=False).ids[: args.prompt_tokens]
    g32, gaps32 = greedy(ref32, pids, args.greedy_steps)
    if min(gaps32) <= 1e-3:
        tried.append({"file": rel, "char_offset": off, "min_top2_gap_f32": min(gaps32)})
        log("reference candidate rejected (logit near-tie)", tried[-1])
        continue
    g64, gaps64 = greedy(ref64, pids, args.greedy_steps)
    full = pids + g32
    s32, ig32, eg32 = selection_margins(ref32, full)
    s64, ig64, eg64 = selection_margins(ref64, full)
    same_sets = all(torch.equal(a_, b_) for a_, b_ in zip(s32, s64))
    info = {"file": rel, "char_offset": off, "min_top2_gap_f32": min(gaps32), "greedy_f32_eq_f64": g32 == g64,
            "selections_f32_eq_f64": same_sets, "min_indexer_rel_gap_f64": ig64, "min_expert_gap_f64": eg64}
    tried.append(info)
    log("reference candidate", info)
    ok = min(gaps64) > 1e-3 and g32 == g64 and same_sets
    if ok and (chosen is None or margin(info) > margin(chosen[4])):
        chosen = (rel, pids, g32, gaps32, info)
    if chosen is not None and margin(chosen[4]) >= 5e-5:
        break
assert chosen is not None, "no candidate snippet without near-ties"
rel, pids, g32, gaps32, info = chosen
fib_prompt = "def fibonacci(n):"
fib_ids = tok.encode(fib_prompt, add_special_tokens=False).ids
fib_out, fib_gaps = greedy(ref32, fib_ids, 64, stop_eos=True)
fib_out_bos, _ = greedy(ref32, [BOS_ID] + fib_ids, 64, stop_eos=True)


def dec(ids):
    return tok.decode([i for i in ids if i not in (BOS_ID, EOS_ID)], skip_special_tokens=False)


reference = {
    "prompt_ids": pids,
    "greedy_ids": g32,
    "prompt_text": tok.decode(pids, skip_special_tokens=False),
    "greedy_text": tok.decode(g32, skip_special_tokens=False),
    "note": ("Greedy continuation computed by Hugging Face transformers %s DeepseekV32ForCausalLM (stock code, "
             "eager attention, float32, CPU, use_cache=False: the whole sequence is re-run at every step) from the "
             "exported FP8 weights dequantised to float32 (w = fp8 * weight_scale_inv per 128x128 block; bf16 "
             "tensors widened to float32). The prompt is %d tokens of the validation file %s (Python %s stdlib), "
             "longer than index_topk=%d, so DSA selection is exercised. Checks: top-2 logit gap >= %.4g at every "
             "step; float64 gives the same ids and the same indexer/expert selections; smallest relative indexer "
             "top-k margin %.3g, smallest expert-routing margin %.3g. Argmax ties (none here) break to the lowest "
             "id." % (transformers.__version__, len(pids), rel, sys.version.split()[0], args.topk, min(gaps32),
                      info["min_indexer_rel_gap_f64"], info["min_expert_gap_f64"])),
    "source_file": rel,
    "min_top2_logit_gap": min(gaps32),
    "fibonacci": {
        "prompt_text": fib_prompt,
        "prompt_ids": fib_ids,
        "greedy_ids": fib_out,
        "text": dec(fib_out),
        "greedy_ids_with_bos": fib_out_bos,
        "text_with_bos": dec(fib_out_bos),
        "note": "greedy, up to 64 tokens, stops at the end-of-sentence token; float32 transformers on the "
                "dequantised export; 'with_bos' prepends <｜begin▁of▁sentence｜> (id 0) to the prompt."},
}
with open(os.path.join(args.out, "reference.json"), "w") as f:
    json.dump(reference, f, indent=1, ensure_ascii=False)
METRICS["reference"] = {"candidates": tried, "chosen": info, "seconds": time.time() - t0}
METRICS["total_seconds"] = time.time() - T_START
dump_metrics()
log("fibonacci:", repr(fib_prompt + dec(fib_out)))
log("reference chosen", info)
log("all done in %.1fs" % (time.time() - T_START))
