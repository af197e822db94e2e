#!/usr/bin/env python3
"""Byte-level BPE tokenizer for the demo model, written as a Hugging Face tokenizer.json.

GPT-2 conventions: text is split on the special token <|endoftext|>, each piece is pre-tokenized with the GPT-2
regex, the UTF-8 bytes of each pre-token are mapped to printable characters with the GPT-2 byte<->unicode table, and
BPE merges are applied in rank order. Ids 0..255 are the 256 single bytes (id = byte value), then one id per merge in
the order learned, and <|endoftext|> is the last id.

  python3 bpe.py train   [--vocab 4096] [--sample-mb 24]   -> models/demo/tokenizer.json
  python3 bpe.py encode                                    -> work/tokens/{train,val}.bin (uint16) + meta json
  python3 bpe.py samples                                   -> work/tokens/samples.json (texts + ids, for verify_tokenizer.mjs)
"""
import argparse
import heapq
import json
import os
import sys
import time

import numpy as np
import regex

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
WORK = os.path.join(HERE, "work")
CORPUS = os.path.join(WORK, "corpus")
TOKENS = os.path.join(WORK, "tokens")
TOKENIZER_JSON = os.path.join(ROOT, "models", "demo", "tokenizer.json")
EOT = "<|endoftext|>"
PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    out = {}
    extra = 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


BYTE2CHAR = bytes_to_unicode()


def pretokens(text):
    """Yield pre-tokens (str) of a text that contains no special tokens."""
    return PAT.findall(text)


def train(texts, vocab_size):
    """Learn vocab_size - 257 merges. Returns list of merges as (left_id, right_id) and the token byte strings."""
    t0 = time.time()
    counts = {}
    for text in texts:
        for piece in text.split(EOT):
            for w in pretokens(piece):
                counts[w] = counts.get(w, 0) + 1
    print("pre-tokens: %d unique, %d total (%.1fs)" % (len(counts), sum(counts.values()), time.time() - t0),
          file=sys.stderr)
    words = [list(w.encode("utf-8")) for w in counts]
    freqs = list(counts.values())
    del counts
    token_bytes = [bytes([b]) for b in range(256)]
    pair_count = {}
    pair_where = {}
    for i, w in enumerate(words):
        f = freqs[i]
        for a, b in zip(w, w[1:]):
            p = (a, b)
            pair_count[p] = pair_count.get(p, 0) + f
            pair_where.setdefault(p, set()).add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges = []
    n_merges = vocab_size - 256 - 1
    while len(merges) < n_merges and heap:
        negc, p = heapq.heappop(heap)
        c = best_count = pair_count.get(p, 0)
        if c <= 0:
            continue
        if -negc != c:  # stale entry
            heapq.heappush(heap, (-c, p))
            continue
        new_id = 256 + len(merges)
        merges.append(p)
        token_bytes.append(token_bytes[p[0]] + token_bytes[p[1]])
        a, b = p
        changed = set()
        for i in pair_where.pop(p, ()):
            w = words[i]
            f = freqs[i]
            # remove this word's old pairs
            for x, y in zip(w, w[1:]):
                q = (x, y)
                pair_count[q] -= f
                s = pair_where.get(q)
                if s is not None:
                    s.discard(i)
            nw = []
            j = 0
            n = len(w)
            while j < n:
                if j + 1 < n and w[j] == a and w[j + 1] == b:
                    nw.append(new_id)
                    j += 2
                else:
                    nw.append(w[j])
                    j += 1
            words[i] = nw
            for x, y in zip(nw, nw[1:]):
                q = (x, y)
                pair_count[q] = pair_count.get(q, 0) + f
                pair_where.setdefault(q, set()).add(i)
                changed.add(q)
        pair_count.pop(p, None)
        for q in changed:
            c = pair_count.get(q, 0)
            if c > 0:
                heapq.heappush(heap, (-c, q))
        if len(merges) % 500 == 0:
            print("merge %d: %r (%d) %.1fs" % (len(merges), token_bytes[-1], best_count, time.time() - t0), file=sys.stderr)
    return merges, token_bytes


def to_unicode(bs):
    return "".join(BYTE2CHAR[b] for b in bs)


def write_tokenizer_json(path, merges, token_bytes):
    vocab = {to_unicode(tb): i for i, tb in enumerate(token_bytes)}
    assert len(vocab) == len(token_bytes), "duplicate token strings"
    eot_id = len(token_bytes)
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": eot_id, "content": EOT, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": True, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": ["%s %s" % (to_unicode(token_bytes[a]), to_unicode(token_bytes[b])) for a, b in merges]},
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


class Encoder:
    """Encoder for a tokenizer.json written by this script (byte-level BPE, rank-ordered merges)."""

    def __init__(self, path=TOKENIZER_JSON):
        with open(path, encoding="utf-8") as f:
            tok = json.load(f)
        char2byte = {c: b for b, c in BYTE2CHAR.items()}
        self.vocab = tok["model"]["vocab"]
        self.id2bytes = {i: bytes(char2byte[c] for c in s) for s, i in self.vocab.items()}
        self.ranks = {}
        for r, m in enumerate(tok["model"]["merges"]):
            a, b = m.split(" ") if isinstance(m, str) else m
            self.ranks[(self.vocab[a], self.vocab[b])] = (r, self.vocab[a + b])
        self.eot = tok["added_tokens"][0]["id"]
        for t in tok["added_tokens"]:
            self.id2bytes[t["id"]] = t["content"].encode("utf-8")
        self.vocab_size = max(self.id2bytes) + 1
        self.cache = {}

    def bpe(self, word):
        ids = self.cache.get(word)
        if ids is not None:
            return ids
        ids = list(word.encode("utf-8"))
        ranks = self.ranks
        while len(ids) > 1:
            best = None
            for j in range(len(ids) - 1):
                r = ranks.get((ids[j], ids[j + 1]))
                if r is not None and (best is None or r[0] < best[0]):
                    best = (r[0], r[1], j)
            if best is None:
                break
            _, new, _ = best
            a, b = ids[best[2]], ids[best[2] + 1]
            out = []
            j = 0
            while j < len(ids):
                if j + 1 < len(ids) and ids[j] == a and ids[j + 1] == b:
                    out.append(new)
                    j += 2
                else:
                    out.append(ids[j])
                    j += 1
            ids = out
        if len(self.cache) < 2_000_000:
            self.cache[word] = ids
        return ids

    def encode(self, text):
        out = []
        pieces = text.split(EOT)
        for k, piece in enumerate(pieces):
            if k:
                out.append(self.eot)
            for w in pretokens(piece):
                out.extend(self.bpe(w))
        return out

    def decode(self, ids):
        return b"".join(self.id2bytes[i] for i in ids).decode("utf-8", errors="replace")


def read(split):
    with open(os.path.join(CORPUS, split + ".txt"), encoding="utf-8") as f:
        return f.read()


def cmd_train(args):
    docs = read("train").split(EOT)
    total = sum(len(d) for d in docs)
    stride = max(1, int(round(total / (args.sample_mb * 1e6))))
    sample = docs[::stride]
    print("training BPE on %d of %d documents (%.1f MB)" % (len(sample), len(docs), sum(map(len, sample)) / 1e6),
          file=sys.stderr)
    merges, token_bytes = train(sample, args.vocab)
    write_tokenizer_json(TOKENIZER_JSON, merges, token_bytes)
    print("wrote %s (vocab %d)" % (TOKENIZER_JSON, len(token_bytes) + 1), file=sys.stderr)


def cmd_encode(args):
    enc = Encoder()
    assert enc.vocab_size <= 65536
    os.makedirs(TOKENS, exist_ok=True)
    meta = {"vocab_size": enc.vocab_size, "eot_id": enc.eot}
    for split in ("val", "train"):
        text = read(split)
        t0 = time.time()
        ids = np.array(enc.encode(text), dtype=np.uint16)
        ids.tofile(os.path.join(TOKENS, split + ".bin"))
        nbytes = len(text.encode("utf-8"))
        meta[split] = {"tokens": int(ids.size), "bytes": nbytes, "bytes_per_token": round(nbytes / ids.size, 4)}
        print("%s: %d tokens, %.3f bytes/token, %.0fs" % (split, ids.size, nbytes / ids.size, time.time() - t0),
              file=sys.stderr)
    with open(os.path.join(TOKENS, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def cmd_samples(args):
    enc = Encoder()
    docs = read("val").split(EOT)
    texts = [d[:3000] for d in docs[:: max(1, len(docs) // 60)]]
    texts += ['print("hello"', 'def main():\n    return 0\n', "The quick brown fox jumps over the lazy dog.",
              "const x = await fetch(url);\n", "héllo wörld — ünïcode ✓ 日本語 🙂", "a<|endoftext|>b", "  \t\n\n  x",
              "it's we'll THEY'RE 12345 3.14159"]
    out = [{"text": t, "ids": enc.encode(t)} for t in texts]
    for o in out:
        assert enc.decode(o["ids"]) == o["text"], o["text"][:80]
    os.makedirs(TOKENS, exist_ok=True)
    with open(os.path.join(TOKENS, "samples.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    print("wrote %d samples (python decode(encode(x)) == x for all)" % len(out), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["train", "encode", "samples"])
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--sample-mb", type=float, default=24)
    args = ap.parse_args()
    {"train": cmd_train, "encode": cmd_encode, "samples": cmd_samples}[args.cmd](args)


if __name__ == "__main__":
    main()
