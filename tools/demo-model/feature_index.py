#!/usr/bin/env python3
"""Feature index for each demo transcoder, for feature cards shown offline by the extension.

  nice -n 19 python3 tools/demo-model/feature_index.py [--windows 400] [--contexts 10]

Runs the exported model and its transcoders over windows spread evenly over the validation split and writes
models/demo/transcoders/layer_{l}/feature_index.json:

{
  "format": "residual-feature-index/1", "layer": l, "hook_name": ..., "hook_name_out": ..., "d_sae": F,
  "n_tokens": N,                       # validation tokens scanned
  "context_format": ["before", "peak token", "after", "activation"],
  "dead": [ids never active on these tokens],
  "features": [ {"id": i, "freq": fraction of tokens where active, "mean": mean activation when active,
                 "max": max activation,
                 "ctx": [[before, peak, after, act], ...]   # up to --contexts, strongest first, distinct windows
                 "top": [[token, logit], ...], "bottom": [[token, logit], ...]  # W_dec[i] @ W_U (W_U = wte^T)
               }, ... ]                 # live features only, by id
}
Token strings are decoded UTF-8 text (a token that splits a character shows U+FFFD).
"""
import os

# one BLAS / OpenMP thread unless asked otherwise (the machine is shared; torch threads are set by --threads)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bpe import Encoder  # noqa: E402
from train import load_tokens  # noqa: E402
from transcoders import TC_DIR, capture, load_model, load_saved  # noqa: E402


def r(x, n=3):
    return float(round(float(x), n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--windows", type=int, default=400)
    ap.add_argument("--contexts", type=int, default=10)
    ap.add_argument("--before", type=int, default=12)
    ap.add_argument("--after", type=int, default=4)
    ap.add_argument("--out-tokens", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    enc = Encoder()
    model = load_model()
    tcs = load_saved(model)
    L, T = model.cfg["n_layer"], model.cfg["n_positions"]
    val = load_tokens("val")
    nwin = min(args.windows, len(val) // T)
    # windows spread evenly over the whole validation split (it is ordered by source package)
    starts = np.linspace(0, len(val) - T, nwin).astype(np.int64)
    ids = torch.from_numpy(np.stack([np.array(val[s:s + T], dtype=np.int64) for s in starts]))
    idx_all = [[] for _ in range(L)]
    val_all = [[] for _ in range(L)]
    with torch.no_grad():
        for i in range(0, nwin, 16):
            acts = capture(model, ids[i:i + 16])
            for l in range(L):
                _, _, idx, vals = tcs[l](acts[l][0])
                idx_all[l].append(idx.numpy().astype(np.int32))
                val_all[l].append(vals.numpy().astype(np.float32))
    flat = ids.reshape(-1).numpy()
    N = flat.size
    W_U = model.params["wte.weight"].detach().numpy().T  # [D, V]
    tok_str = [enc.decode([t]) for t in range(enc.vocab_size)]

    def snippet(p):
        w0 = (p // T) * T
        a = max(w0, p - args.before)
        pre = list(flat[a:p])
        if enc.eot in pre:  # do not cross a document boundary
            pre = pre[len(pre) - pre[::-1].index(enc.eot):]
        post = []
        for t in flat[p + 1:min(w0 + T, p + 1 + args.after)]:
            if t == enc.eot:
                break
            post.append(t)
        return enc.decode(pre), enc.decode([flat[p]]), enc.decode(post)

    for l in range(L):
        idx = np.concatenate(idx_all[l])  # [N, k]
        vals = np.concatenate(val_all[l])
        F_ = tcs[l].W_enc.shape[1]
        pos = np.repeat(np.arange(N), idx.shape[1])
        fi = idx.reshape(-1)
        fv = vals.reshape(-1)
        keep = fv > 0
        pos, fi, fv = pos[keep], fi[keep], fv[keep]
        count = np.bincount(fi, minlength=F_)
        vsum = np.bincount(fi, weights=fv, minlength=F_)
        order = np.lexsort((-fv, fi))  # by feature, strongest first
        starts = np.searchsorted(fi[order], np.arange(F_ + 1))
        logit_dirs = tcs[l].W_dec.detach().numpy() @ W_U  # [F, V]
        feats = []
        for f in range(F_):
            if count[f] == 0:
                continue
            sel = order[starts[f]:starts[f + 1]]
            ctx = []
            seen_win = set()
            for j in sel:
                win = pos[j] // T
                if win in seen_win:
                    continue
                seen_win.add(win)
                b, t, a = snippet(pos[j])
                ctx.append([b, t, a, r(fv[j], 2)])
                if len(ctx) >= args.contexts:
                    break
            ld = logit_dirs[f]
            top = np.argsort(-ld)[: args.out_tokens]
            bot = np.argsort(ld)[: args.out_tokens]
            feats.append({"id": f, "freq": r(count[f] / N, 5), "mean": r(vsum[f] / count[f], 3),
                          "max": r(fv[sel[0]], 3), "ctx": ctx,
                          "top": [[tok_str[t], r(ld[t], 2)] for t in top],
                          "bottom": [[tok_str[t], r(ld[t], 2)] for t in bot]})
        with open(os.path.join(TC_DIR, "layer_%d" % l, "cfg.json")) as fcfg:
            cfg = json.load(fcfg)
        out = {"format": "residual-feature-index/1", "model_name": cfg["model_name"], "layer": l,
               "hook_name": cfg["hook_name"], "hook_name_out": cfg["hook_name_out"], "d_sae": F_, "n_tokens": int(N),
               "source": "validation split, %d windows of %d tokens spread evenly over it" % (nwin, T),
               "context_format": ["before", "peak token", "after", "activation"],
               "dead": [int(f) for f in range(F_) if count[f] == 0], "features": feats}
        path = os.path.join(TC_DIR, "layer_%d" % l, "feature_index.json")
        with open(path, "w", encoding="utf-8") as fo:
            json.dump(out, fo, ensure_ascii=False, separators=(",", ":"))
        print("layer %d: %d live features, %d dead, %.1f MB" % (l, len(feats), F_ - len(feats),
                                                                 os.path.getsize(path) / 1e6), flush=True)


if __name__ == "__main__":
    main()
