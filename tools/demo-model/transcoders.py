#!/usr/bin/env python3
"""Train one TopK transcoder per layer of the exported demo model (MLP input -> MLP output); resumable.

  nice -n 19 python3 tools/demo-model/transcoders.py [--steps 300] [--k 32] [--width 2048]
  python3 tools/demo-model/transcoders.py --eval-only        # recompute metrics.json from the saved transcoders

All layers train together on the same stream of training-split activations (one model forward per step). Each
transcoder computes
    f = ReLU(TopK(x @ W_enc + b_enc)),  y_hat = f @ W_dec + b_dec
and is trained on x = the actual MLP input (ln_2 output *after* ln_2.weight/bias) with target y = the MLP output,
loss = MSE / Var(y) plus the AuxK loss (1/32, k_aux 128) that lets dead features learn the residual error; decoder rows
are kept at unit norm; features still dead at the --resample-steps are re-initialised on badly reconstructed inputs,
and during the first --revive-until of training a dead feature's encoder bias is raised each step by --revive-rate of
what it would need to enter the top-k on its best token of the batch. Training reads the model from models/demo/ (config.json + model.safetensors), so the
transcoders always match the shipped model.

Saved layout (SAELens style), models/demo/transcoders/layer_{l}/:
  sae_weights.safetensors  W_enc [D,F], b_enc [F], W_dec [F,D], b_dec [D]   (float32)
  cfg.json                 d_in, d_sae, d_out, hook_name, hook_name_out, architecture "topk", activation_fn, k, ...
The saved encoder reads `blocks.{l}.ln2.hook_normalized`, i.e. the LayerNorm output *before* ln_2's affine (as the
engine and TransformerLens expose it): the affine was folded in exactly, W_enc' = diag(ln_2.weight) W_enc and
b_enc' = b_enc + ln_2.bias @ W_enc. Metrics (FVU, L0, dead fraction, spliced loss increase) on the validation split go
to models/demo/transcoders/metrics.json.
"""
import os

# one BLAS / OpenMP thread unless asked otherwise (the machine is shared; torch threads are set by --threads)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import math
import os
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402
from train import GPT2, load_tokens, val_windows  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MODEL_DIR = os.path.join(ROOT, "models", "demo")
TC_DIR = os.path.join(MODEL_DIR, "transcoders")
CKPT = os.path.join(HERE, "work", "transcoders_ckpt.pt")
LOG = os.path.join(HERE, "work", "transcoders_log.csv")


def load_model(model_dir=MODEL_DIR):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    model = GPT2(cfg)
    w = st.load(os.path.join(model_dir, "model.safetensors"))
    with torch.no_grad():
        for name, p in model.params.items():
            p.copy_(torch.from_numpy(np.array(w[name])))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class TopKTranscoder(torch.nn.Module):
    def __init__(self, d_in, d_sae, k, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        dec = torch.randn(d_sae, d_in, generator=g)
        dec = dec / dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(dec.clone())
        self.W_enc = torch.nn.Parameter(dec.t().clone() * 0.1)
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.k = k

    def pre(self, x):
        return torch.addmm(self.b_enc, x, self.W_enc)

    def decode(self, idx, vals):
        return F.embedding_bag(idx, self.W_dec, per_sample_weights=vals, mode="sum") + self.b_dec

    def forward(self, x):
        pre = self.pre(x)
        vals, idx = pre.topk(self.k, dim=-1)
        vals = F.relu(vals)
        return self.decode(idx, vals), pre, idx, vals

    @torch.no_grad()
    def normalize_decoder(self):
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)


def capture(model, ids):
    """Run the model; return per layer (mlp_in, mlp_out) flattened to [N, D]."""
    acts = {}

    def mk(l):
        def fn(name, t, *extra):
            if name == "mlp_out":
                acts[l] = (extra[0].reshape(-1, t.shape[-1]), t.reshape(-1, t.shape[-1]))
        return fn

    with torch.no_grad():
        model(ids, hooks={l: mk(l) for l in range(model.cfg["n_layer"])})
    return acts


@torch.no_grad()
def evaluate(model, tcs, windows, bs=16):
    """Per layer: FVU, mean L0, dead fraction (never active on these tokens), CE clean and with the MLP replaced."""
    L = model.cfg["n_layer"]
    F_ = tcs[0].W_enc.shape[1]
    sse = [0.0] * L
    sst = [0.0] * L
    ysum = [None] * L
    ysq = [0.0] * L
    l0 = [0.0] * L
    fired = [torch.zeros(F_, dtype=torch.bool) for _ in range(L)]
    ntok = 0
    ce_clean = 0.0
    ce_spliced = [0.0] * L
    for i in range(0, len(windows), bs):
        w = windows[i:i + bs]
        inp, tgt = w[:, :-1], w[:, 1:].reshape(-1)
        acts = {}

        def mk(l):
            def fn(name, t, *extra):
                if name == "mlp_out":
                    acts[l] = (extra[0].reshape(-1, t.shape[-1]), t.reshape(-1, t.shape[-1]))
            return fn

        logits = model(inp, hooks={l: mk(l) for l in range(L)})
        ce_clean += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt, reduction="sum").item()
        n = tgt.numel()
        ntok += n
        for l in range(L):
            x, y = acts[l]
            y_hat, pre, idx, vals = tcs[l](x)
            sse[l] += ((y_hat - y) ** 2).sum().item()
            ysum[l] = y.sum(0) if ysum[l] is None else ysum[l] + y.sum(0)
            ysq[l] += (y ** 2).sum().item()
            l0[l] += (vals > 0).sum().item()
            fired[l][idx[vals > 0]] = True

            def splice(name, t, *extra, l=l):
                if name == "mlp_out":
                    m = extra[0]
                    return tcs[l](m.reshape(-1, m.shape[-1]))[0].view_as(t)
            lg = model(inp, hooks={l: splice})
            ce_spliced[l] += F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tgt, reduction="sum").item()
    out = []
    for l in range(L):
        var_total = ysq[l] - (ysum[l] ** 2).sum().item() / ntok
        out.append({"layer": l, "fvu": sse[l] / var_total, "mean_l0": l0[l] / ntok,
                    "dead_fraction": 1.0 - fired[l].float().mean().item(),
                    "ce_clean": ce_clean / ntok, "ce_spliced": ce_spliced[l] / ntok,
                    "ce_increase": (ce_spliced[l] - ce_clean) / ntok})
    return {"eval_tokens": ntok, "layers": out}


@torch.no_grad()
def resample(tc, opt, x, y, y_hat, dead):
    """Re-initialise dead features on badly reconstructed inputs: decoder row = that input's normalised error, encoder
    column = its centred input direction scaled like the live features' columns; their Adam state is reset."""
    d = dead.nonzero().squeeze(1)
    err = y - y_hat
    w = err.pow(2).sum(-1)
    sel = torch.multinomial(w / w.sum(), len(d), replacement=len(d) > len(w))
    mu = x.mean(0)
    xd = x[sel] - mu
    tc.W_dec[d] = err[sel] / err[sel].norm(dim=1, keepdim=True).clamp_min(1e-8)
    live_norm = tc.W_enc[:, ~dead].norm(dim=0).mean() if (~dead).any() else 1.0
    tc.W_enc[:, d] = (xd / xd.norm(dim=1, keepdim=True).clamp_min(1e-8)).t() * live_norm
    tc.b_enc[d] = -(mu @ tc.W_enc[:, d])
    for p, sl in ((tc.W_enc, (slice(None), d)), (tc.W_dec, (d,)), (tc.b_enc, (d,))):
        stt = opt.state.get(p)
        if stt:
            stt["exp_avg"][sl] = 0
            stt["exp_avg_sq"][sl] = 0
    return len(d)


def save_transcoders(model, tcs, args, metrics=None, trained_tokens=None):
    D = model.cfg["n_embd"]
    for l, tc in enumerate(tcs):
        d = os.path.join(TC_DIR, "layer_%d" % l)
        os.makedirs(d, exist_ok=True)
        g = model.params["h.%d.ln_2.weight" % l].detach()
        b = model.params["h.%d.ln_2.bias" % l].detach()
        W_enc = (g[:, None] * tc.W_enc.detach()).numpy()
        b_enc = (tc.b_enc.detach() + b @ tc.W_enc.detach()).numpy()
        st.save(os.path.join(d, "sae_weights.safetensors"), {
            "W_enc": W_enc.astype(np.float32), "b_enc": b_enc.astype(np.float32),
            "W_dec": tc.W_dec.detach().numpy().astype(np.float32), "b_dec": tc.b_dec.detach().numpy().astype(np.float32)},
            {"format": "pt"})
        cfg = {
            "architecture": "topk",
            "d_in": D,
            "d_sae": tc.W_enc.shape[1],
            "d_out": D,
            "activation_fn": "topk",
            "activation_fn_str": "topk",
            "activation_fn_kwargs": {"k": tc.k},
            "k": tc.k,
            "encoder": "f = relu(topk(x @ W_enc + b_enc, k)); output = f @ W_dec + b_dec",
            "apply_b_dec_to_input": False,
            "normalize_activations": "none",
            "dtype": "float32",
            "device": "cpu",
            "model_name": "residual-demo-gpt2",
            "model_path": "models/demo",
            "hook_name": "blocks.%d.ln2.hook_normalized" % l,
            "hook_layer": l,
            "hook_name_out": "blocks.%d.hook_mlp_out" % l,
            "hook_layer_out": l,
            "hook_head_index": None,
            "input_note": "LayerNorm-normalised residual before ln_2.weight/bias (TransformerLens ln2.hook_normalized, "
                          "as the engine exposes it); the ln_2 affine is folded into W_enc and b_enc, so this equals "
                          "the transcoder trained on the true MLP input",
            "ln_affine_folded": True,
            "transcoder": True,
            "context_size": model.cfg["n_positions"],
            "prepend_bos": False,
            "dataset_path": "models/demo/corpus-manifest.json (train split)",
            "training_tokens": trained_tokens,
        }
        if metrics:
            cfg["metrics"] = metrics["layers"][l]
        with open(os.path.join(d, "cfg.json"), "w") as f:
            json.dump(cfg, f, indent=1)
            f.write("\n")


def load_saved(model, k=None):
    """Load saved transcoders (un-folding the ln_2 affine) as TopKTranscoder modules operating on the MLP input."""
    tcs = []
    for l in range(model.cfg["n_layer"]):
        d = os.path.join(TC_DIR, "layer_%d" % l)
        with open(os.path.join(d, "cfg.json")) as f:
            cfg = json.load(f)
        w = {n: torch.from_numpy(np.array(a)) for n, a in st.load(os.path.join(d, "sae_weights.safetensors")).items()}
        tc = TopKTranscoder(cfg["d_in"], cfg["d_sae"], cfg["k"], 0)
        g = model.params["h.%d.ln_2.weight" % l].detach()
        b = model.params["h.%d.ln_2.bias" % l].detach()
        with torch.no_grad():
            W = w["W_enc"] / g[:, None]
            tc.W_enc.copy_(W)
            tc.b_enc.copy_(w["b_enc"] - b @ W)
            tc.W_dec.copy_(w["W_dec"])
            tc.b_dec.copy_(w["b_dec"])
        tcs.append(tc)
    return tcs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=650)
    ap.add_argument("--batch", type=int, default=16, help="sequences of n_positions tokens per step")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--aux-k", type=int, default=128)
    ap.add_argument("--aux-coef", type=float, default=1 / 32)
    ap.add_argument("--dead-tokens", type=int, default=40_000)
    ap.add_argument("--eval-windows", type=int, default=96)
    ap.add_argument("--revive-rate", type=float, default=0.1)
    ap.add_argument("--revive-until", type=float, default=1.0,
                    help="fraction of the steps during which dead features get their encoder bias raised")
    ap.add_argument("--resample-steps", type=int, nargs="*", default=[],
                    help="steps at which features dead for --dead-tokens are re-initialised")
    ap.add_argument("--ckpt-minutes", type=float, default=3)
    ap.add_argument("--eval-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model()
    L, D, T = model.cfg["n_layer"], model.cfg["n_embd"], model.cfg["n_positions"]
    windows = val_windows(load_tokens("val"), T, args.eval_windows)

    if args.eval_only:
        tcs = load_saved(model)
        m = evaluate(model, tcs, windows)
        with open(os.path.join(TC_DIR, "metrics.json"), "w") as f:
            json.dump(m, f, indent=1)
        print(json.dumps(m, indent=1))
        return

    train = load_tokens("train")
    tcs = [TopKTranscoder(D, args.width, args.k, seed=100 + l) for l in range(L)]
    opts = [torch.optim.Adam(tc.parameters(), lr=args.lr, betas=(0.9, 0.999)) for tc in tcs]
    state = {"step": 0, "tokens": 0, "last_fired": [np.zeros(args.width, dtype=np.int64) for _ in range(L)],
             "model_sha": os.path.getsize(os.path.join(MODEL_DIR, "model.safetensors"))}
    if os.path.exists(CKPT):
        ck = torch.load(CKPT)
        if ck["args"]["width"] == args.width and ck["args"]["k"] == args.k:
            for tc, sd in zip(tcs, ck["tcs"]):
                tc.load_state_dict(sd)
            for o, sd in zip(opts, ck["opts"]):
                o.load_state_dict(sd)
            state = ck["state"]
            print("resumed at step %d" % state["step"], flush=True)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__("flag", True))
    signal.signal(signal.SIGINT, lambda *a: stop.__setitem__("flag", True))
    logf = open(LOG, "a")
    if state["step"] == 0:
        logf.write("step,tokens,lr," + ",".join("fvu_%d,l0_%d,dead_%d" % (l, l, l) for l in range(L)) + ",s_per_step\n")
    resample_at = set(args.resample_steps)
    t_ck = time.time()
    t0 = time.time()
    acc = [[0.0, 0] for _ in range(L)]
    while state["step"] < args.steps and not stop["flag"]:
        rng = np.random.default_rng(7_000_003 * state["step"] + 5)
        starts = rng.integers(0, len(train) - T - 1, size=args.batch)
        ids = torch.from_numpy(np.stack([train[s:s + T].astype(np.int64) for s in starts]))
        acts = capture(model, ids)
        frac = state["step"] / max(1, args.steps)
        lr = args.lr * min(1.0, (state["step"] + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        N = ids.numel()
        for l in range(L):
            x, y = acts[l]
            tc, opt = tcs[l], opts[l]
            for gr in opt.param_groups:
                gr["lr"] = lr
            if state["step"] == 0:
                with torch.no_grad():
                    tc.b_dec.copy_(y.mean(0))
            y_hat, pre, idx, vals = tc(x)
            var = (y - y.mean(0)).pow(2).sum(-1).mean()
            mse = (y_hat - y).pow(2).sum(-1).mean()
            loss = mse / var
            lf = state["last_fired"][l]
            fired_now = torch.zeros(args.width, dtype=torch.bool)
            fired_now[idx[vals > 0]] = True
            lf[fired_now.numpy()] = state["tokens"] + N
            dead = torch.from_numpy(state["tokens"] + N - lf > args.dead_tokens)
            if dead.any() and args.aux_coef > 0:
                err = (y - y_hat).detach()
                kk = min(args.aux_k, int(dead.sum()))
                pd = pre.masked_fill(~dead, float("-inf"))
                av, ai = pd.topk(kk, dim=-1)
                av = F.relu(av)
                e_hat = F.embedding_bag(ai, tc.W_dec, per_sample_weights=av, mode="sum")
                aux = (e_hat - err).pow(2).sum(-1).mean() / err.pow(2).sum(-1).mean().clamp_min(1e-8)
                loss = loss + args.aux_coef * torch.nan_to_num(aux, nan=0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tc.normalize_decoder()
            if dead.any() and state["step"] < args.revive_until * args.steps:
                # raise the encoder bias of dead features by a fraction of what each would need to enter the top-k on
                # the token of this batch where it comes closest (once it fires it gets reconstruction gradients)
                with torch.no_grad():
                    pd_ = pre.detach()[:, dead]
                    best, arg = pd_.max(0)
                    kth = vals.detach()[:, -1][arg]
                    tc.b_enc[dead] += args.revive_rate * (kth - best).clamp_min(0)
            if state["step"] in resample_at and dead.any():
                n_dead = resample(tc, opt, x, y, y_hat.detach(), dead)
                lf[dead.numpy()] = state["tokens"] + N
                print("layer %d: resampled %d dead features at step %d" % (l, n_dead, state["step"]), flush=True)
            acc[l][0] += (mse / var).item()
            acc[l][1] += 1
        state["step"] += 1
        state["tokens"] += N
        if state["step"] % 10 == 0 or state["step"] == args.steps:
            dt = (time.time() - t0) / 10
            row = [state["step"], state["tokens"], "%.3g" % lr]
            for l in range(L):
                deadf = float(np.mean(state["tokens"] - state["last_fired"][l] > args.dead_tokens))
                row += ["%.4f" % (acc[l][0] / max(1, acc[l][1])), args.k, "%.4f" % deadf]
            row.append("%.2f" % dt)
            logf.write(",".join(map(str, row)) + "\n")
            logf.flush()
            print("step", " ".join(map(str, row)), flush=True)
            acc = [[0.0, 0] for _ in range(L)]
            t0 = time.time()
        if time.time() - t_ck > args.ckpt_minutes * 60:
            torch.save({"args": vars(args), "tcs": [tc.state_dict() for tc in tcs],
                        "opts": [o.state_dict() for o in opts], "state": state}, CKPT + ".tmp")
            os.replace(CKPT + ".tmp", CKPT)
            save_transcoders(model, tcs, args, trained_tokens=state["tokens"])
            t_ck = time.time()
    torch.save({"args": vars(args), "tcs": [tc.state_dict() for tc in tcs], "opts": [o.state_dict() for o in opts],
                "state": state}, CKPT + ".tmp")
    os.replace(CKPT + ".tmp", CKPT)
    for tc in tcs:
        tc.eval()
    with torch.no_grad():
        m = evaluate(model, tcs, windows)
    m["training_tokens"] = state["tokens"]
    m["steps"] = state["step"]
    m["k"] = args.k
    m["width"] = args.width
    os.makedirs(TC_DIR, exist_ok=True)
    save_transcoders(model, tcs, args, m, trained_tokens=state["tokens"])
    # check the saved (affine-folded) files reproduce the trained transcoders
    re = load_saved(model)
    x = torch.randn(64, D)
    for l in range(L):
        diff = (re[l](x)[0] - tcs[l](x)[0]).abs().max().item()
        assert diff < 1e-3, (l, diff)
    with open(os.path.join(TC_DIR, "metrics.json"), "w") as f:
        json.dump(m, f, indent=1)
    print(json.dumps(m, indent=1), flush=True)


if __name__ == "__main__":
    main()
