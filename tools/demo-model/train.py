#!/usr/bin/env python3
"""Train the demo GPT-2 model on the tokenized corpus; resumable; exports Hugging Face layout to models/demo/.

  nice -n 19 python3 tools/demo-model/train.py [--max-tokens N] [--threads 1]

Re-running the same command resumes from tools/demo-model/work/ckpt.pt. Raising --max-tokens on a finished (or
running) run starts a new cosine cycle from the current step (a warm restart, with a short warmup), so training can be
extended at any time. SIGTERM / SIGINT save a checkpoint and export before exiting.

Outputs:
  work/ckpt.pt               model + optimizer + schedule state (every --ckpt-minutes)
  work/train_log.csv         step, tokens, lr, train loss, val loss, tokens/s
  models/demo/config.json, model.safetensors (+ tokenizer.json from bpe.py), training.json (every --export-minutes)
The export is checked against an independent numpy forward pass (npforward.py) of the written files.
"""
import os

# one BLAS / OpenMP thread unless asked otherwise (the machine is shared; torch threads are set by --threads)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import csv
import json
import math
import os
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402
import npforward  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
WORK = os.path.join(HERE, "work")
TOKENS = os.path.join(WORK, "tokens")
CKPT = os.path.join(WORK, "ckpt.pt")
LOG = os.path.join(WORK, "train_log.csv")
OUT = os.path.join(ROOT, "models", "demo")


class GPT2(torch.nn.Module):
    """GPT-2 with parameters stored exactly as in Hugging Face's GPT2Model (Conv1D weights are [in, out])."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        V, D, L, P = cfg["vocab_size"], cfg["n_embd"], cfg["n_layer"], cfg["n_positions"]
        g = torch.Generator().manual_seed(cfg.get("seed", 0))

        def normal(*shape, std=0.02):
            return torch.nn.Parameter(torch.randn(*shape, generator=g) * std)

        def zeros(*shape):
            return torch.nn.Parameter(torch.zeros(*shape))

        def ones(*shape):
            return torch.nn.Parameter(torch.ones(*shape))

        p = {}
        p["wte.weight"] = normal(V, D)
        p["wpe.weight"] = normal(P, D, std=0.01)
        proj_std = 0.02 / math.sqrt(2 * L)
        for l in range(L):
            h = "h.%d." % l
            p[h + "ln_1.weight"], p[h + "ln_1.bias"] = ones(D), zeros(D)
            p[h + "attn.c_attn.weight"], p[h + "attn.c_attn.bias"] = normal(D, 3 * D), zeros(3 * D)
            p[h + "attn.c_proj.weight"], p[h + "attn.c_proj.bias"] = normal(D, D, std=proj_std), zeros(D)
            p[h + "ln_2.weight"], p[h + "ln_2.bias"] = ones(D), zeros(D)
            p[h + "mlp.c_fc.weight"], p[h + "mlp.c_fc.bias"] = normal(D, 4 * D), zeros(4 * D)
            p[h + "mlp.c_proj.weight"], p[h + "mlp.c_proj.bias"] = normal(4 * D, D, std=proj_std), zeros(D)
        p["ln_f.weight"], p["ln_f.bias"] = ones(D), zeros(D)
        # ParameterDict keys may not contain "."; store "h__0__ln_1__weight", expose HF names through .params
        self._p = torch.nn.ParameterDict({k.replace(".", "__"): v for k, v in p.items()})
        self.register_buffer("mask", torch.full((P, P), float("-inf")).triu(1), persistent=False)

    @property
    def params(self):
        """Hugging Face GPT-2 parameter name -> Parameter (insertion order)."""
        return {k.replace("__", "."): v for k, v in self._p.items()}

    def forward(self, ids, hooks=None):
        """ids [B, T] -> logits [B, T, V]. hooks: optional dict layer -> fn(name, tensor) -> tensor-or-None, called
        with name 'mlp_in' (ln_2 output, the MLP input) and 'mlp_out' (MLP output); a returned tensor replaces it."""
        cfg, p = self.cfg, self.params
        B, T = ids.shape
        D, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
        dh = D // H
        x = F.embedding(ids, p["wte.weight"]) + p["wpe.weight"][:T]
        mask = self.mask[:T, :T]
        for l in range(cfg["n_layer"]):
            h = "h.%d." % l
            a = F.layer_norm(x, (D,), p[h + "ln_1.weight"], p[h + "ln_1.bias"], eps)
            qkv = torch.addmm(p[h + "attn.c_attn.bias"], a.reshape(B * T, D), p[h + "attn.c_attn.weight"])
            q, k, v = qkv.view(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)
            s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(dh)) + mask
            o = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(B * T, D)
            x = x + torch.addmm(p[h + "attn.c_proj.bias"], o, p[h + "attn.c_proj.weight"]).view(B, T, D)
            m = F.layer_norm(x, (D,), p[h + "ln_2.weight"], p[h + "ln_2.bias"], eps)
            if hooks and l in hooks:
                m = _hook(hooks[l], "mlp_in", m)
            u = F.gelu(torch.addmm(p[h + "mlp.c_fc.bias"], m.reshape(B * T, D), p[h + "mlp.c_fc.weight"]),
                       approximate="tanh")
            y = torch.addmm(p[h + "mlp.c_proj.bias"], u, p[h + "mlp.c_proj.weight"]).view(B, T, D)
            if hooks and l in hooks:
                y = _hook(hooks[l], "mlp_out", y, m)
            x = x + y
        x = F.layer_norm(x, (D,), p["ln_f.weight"], p["ln_f.bias"], eps)
        return torch.matmul(x, p["wte.weight"].t())


def _hook(fn, name, t, *extra):
    r = fn(name, t, *extra)
    return t if r is None else r


def default_config(args):
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": args.vocab_size,
        "n_layer": args.n_layer,
        "n_embd": args.n_embd,
        "n_head": args.n_head,
        "n_positions": args.n_positions,
        "n_ctx": args.n_positions,
        "n_inner": None,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "initializer_range": 0.02,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": args.eot_id,
        "eos_token_id": args.eot_id,
        "seed": 0,
    }


def load_tokens(split):
    return np.memmap(os.path.join(TOKENS, split + ".bin"), dtype=np.uint16, mode="r")


def val_windows(val, T, n):
    """n fixed windows of T+1 tokens evenly spread over the validation split."""
    starts = np.linspace(0, len(val) - T - 2, n).astype(np.int64)
    return torch.from_numpy(np.stack([val[s:s + T + 1].astype(np.int64) for s in starts]))


@torch.no_grad()
def evaluate(model, windows, bs=16):
    model.eval()
    tot = 0.0
    n = 0
    for i in range(0, len(windows), bs):
        w = windows[i:i + bs]
        logits = model(w[:, :-1])
        tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum").item()
        n += w[:, 1:].numel()
    model.train()
    return tot / n


def lr_at(state, args):
    """Cosine schedule over the current cycle [cycle_start, max_tokens] with linear warmup."""
    t = state["tokens"] - state["cycle_start"]
    span = max(1, state["cycle_end"] - state["cycle_start"])
    warm = state["cycle_warmup"]
    if t < warm:
        return args.lr * (t + 1) / warm
    frac = min(1.0, (t - warm) / max(1, span - warm))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * frac))


def export(model, state, args, check=True):
    OUT = args.export_dir
    cfg = {k: v for k, v in model.cfg.items() if k != "seed"}
    os.makedirs(OUT, exist_ok=True)
    tensors = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.params.items()}
    st.save(os.path.join(OUT, "model.safetensors"), tensors, {"format": "pt"})
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")
    info = {"step": state["step"], "tokens_seen": state["tokens"], "val_loss": state.get("last_val"),
            "batch_tokens": args.batch * args.n_positions, "lr_max": args.lr, "lr_min": args.min_lr,
            "cycles": state["cycles"], "torch": torch.__version__}
    if check:
        # independent numpy forward of the written files vs the torch model
        ncfg, w = npforward.load(OUT)
        val = load_tokens("val")
        ids = np.array(val[1000:1000 + 64], dtype=np.int64)
        ref = npforward.forward(ncfg, w, ids)
        with torch.no_grad():
            got = model(torch.from_numpy(ids)[None])[0].double().numpy()
        info["export_check"] = {"tokens": 64, "max_abs_logit_diff_numpy_vs_torch": float(np.abs(ref - got).max())}
        assert info["export_check"]["max_abs_logit_diff_numpy_vs_torch"] < 1e-3, info
    tok = os.path.join(ROOT, "models", "demo", "tokenizer.json")
    if os.path.abspath(OUT) != os.path.dirname(tok) and os.path.exists(tok):
        shutil.copyfile(tok, os.path.join(OUT, "tokenizer.json"))
    with open(os.path.join(OUT, "training.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    return info


def save_ckpt(model, opt, state):
    tmp = CKPT + ".tmp"
    torch.save({"model": model.state_dict(), "cfg": model.cfg, "opt": opt.state_dict(), "state": state}, tmp)
    os.replace(tmp, CKPT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--n-positions", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16, help="sequences per step")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--warmup-tokens", type=int, default=200_000)
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="end of the cosine cycle (default: keep the checkpoint's; 3.5M for a new run)")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-windows", type=int, default=48)
    ap.add_argument("--ckpt-minutes", type=float, default=3)
    ap.add_argument("--export-minutes", type=float, default=10)
    ap.add_argument("--export-dir", default=OUT,
                    help="where config.json/model.safetensors go (default models/demo; use another folder for a "
                         "long background run so models/demo keeps matching its transcoders)")
    ap.add_argument("--bench", type=int, default=0, help="time N steps and exit (no checkpoint)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(TOKENS, "meta.json")) as f:
        meta = json.load(f)
    args.vocab_size, args.eot_id = meta["vocab_size"], meta["eot_id"]
    train = load_tokens("train")
    val = load_tokens("val")
    T = args.n_positions

    if os.path.exists(CKPT) and not args.bench:
        ck = torch.load(CKPT)
        model = GPT2(ck["cfg"])
        model.load_state_dict(ck["model"])
        state = ck["state"]
    else:
        if args.max_tokens is None:
            args.max_tokens = 3_500_000
        model = GPT2(default_config(args))
        state = {"step": 0, "tokens": 0, "cycle_start": 0, "cycle_end": args.max_tokens,
                 "cycle_warmup": args.warmup_tokens, "cycles": [[0, args.max_tokens]], "last_val": None}
        ck = None
    decay = [p for n, p in model.params.items() if n.endswith(".weight") and "ln" not in n]
    no_decay = [p for n, p in model.params.items() if not (n.endswith(".weight") and "ln" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    if ck is not None:
        opt.load_state_dict(ck["opt"])
    if args.max_tokens is not None and args.max_tokens > state["cycle_end"]:
        # extend training: a new cosine cycle from here (warm restart)
        state["cycle_start"], state["cycle_end"] = state["tokens"], args.max_tokens
        state["cycle_warmup"] = min(args.warmup_tokens, (args.max_tokens - state["tokens"]) // 10)
        state["cycles"].append([state["tokens"], args.max_tokens])
    nparams = sum(p.numel() for p in model.parameters())
    print("params %d (%.2fM), resume at step %d / %d tokens, cycle %s" % (
        nparams, nparams / 1e6, state["step"], state["tokens"], state["cycles"][-1]), flush=True)

    windows = val_windows(val, T, args.eval_windows)
    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    new_log = not os.path.exists(LOG)
    logf = open(LOG, "a", newline="")
    log = csv.writer(logf)
    if new_log and not args.bench:
        log.writerow(["step", "tokens", "lr", "train_loss", "val_loss", "tokens_per_s", "wall_s"])
    t_ck = t_ex = time.time()
    t_int = time.time()
    tok_int = 0
    loss_acc = []
    model.train()
    while state["tokens"] < state["cycle_end"] and not stop["flag"]:
        rng = np.random.default_rng(1_000_003 * state["step"] + 17)
        starts = rng.integers(0, len(train) - T - 1, size=args.batch)
        b = torch.from_numpy(np.stack([train[s:s + T + 1].astype(np.int64) for s in starts]))
        lr = lr_at(state, args)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model(b[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        state["tokens"] += args.batch * T
        tok_int += args.batch * T
        loss_acc.append(loss.item())
        if args.bench and state["step"] >= args.bench:
            dt = time.time() - t_int
            print("bench: %d steps, %.0f tokens/s, loss %.3f" % (state["step"], tok_int / dt, loss.item()))
            return
        done = state["tokens"] >= state["cycle_end"] or stop["flag"]
        if state["step"] % args.eval_every == 0 or done:
            vl = evaluate(model, windows)
            state["last_val"] = vl
            dt = time.time() - t_int
            row = [state["step"], state["tokens"], "%.3g" % lr, "%.4f" % float(np.mean(loss_acc)), "%.4f" % vl,
                   "%.0f" % (tok_int / dt), int(time.time())]
            log.writerow(row)
            logf.flush()
            print("step %d tokens %d lr %.2e train %.4f val %.4f %.0f tok/s" % (
                state["step"], state["tokens"], lr, np.mean(loss_acc), vl, tok_int / dt), flush=True)
            loss_acc = []
            t_int = time.time()
            tok_int = 0
        if time.time() - t_ck > args.ckpt_minutes * 60 or done:
            save_ckpt(model, opt, state)
            t_ck = time.time()
        if time.time() - t_ex > args.export_minutes * 60 or done:
            info = export(model, state, args)
            print("exported", json.dumps(info), flush=True)
            t_ex = time.time()
    save_ckpt(model, opt, state)
    try:
        with open(os.path.join(args.export_dir, "training.json")) as f:
            stale = json.load(f).get("tokens_seen") != state["tokens"]
    except (OSError, ValueError):
        stale = True
    if stale:  # e.g. nothing left to train, but the export folder holds another checkpoint
        print("exported", json.dumps(export(model, state, args)), flush=True)
    print("stopped at step %d, %d tokens" % (state["step"], state["tokens"]), flush=True)


if __name__ == "__main__":
    main()
