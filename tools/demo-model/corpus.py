#!/usr/bin/env python3
"""Build the demo-model training corpus from pinned Debian and npm packages.

Every input is fetched by exact name and version:
  * Debian packages with `apt-get download NAME=VERSION` (unpacked with dpkg-deb -x),
  * npm packages with `npm pack NAME@VERSION` (unpacked with tar).
Downloads and extracted trees live in tools/demo-model/work/ (gitignored).

Outputs (in tools/demo-model/work/corpus/):
  train.txt, val.txt   documents joined by "<|endoftext|>" (UTF-8)
and models/demo/corpus-manifest.json recording every source package, version, archive sha256, byte counts per
split, the file-level filters that were applied, and the sha256 of train.txt/val.txt.

Deterministic: files are visited in sorted order; the validation split is chosen by a hash of "package/path".
Usage: python3 tools/demo-model/corpus.py [--skip-download]
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
WORK = os.path.join(HERE, "work")
DL = os.path.join(WORK, "downloads")
EXTRACT = os.path.join(WORK, "extract")
OUT = os.path.join(WORK, "corpus")
MANIFEST = os.path.join(ROOT, "models", "demo", "corpus-manifest.json")

EOT = "<|endoftext|>"

# (package, version, kind, path globs inside the unpacked package, file suffixes)
DEBIAN = [
    ("libpython3.11-minimal", "3.11.2-6+deb12u9", "code", "usr/lib/python3.11", (".py",)),
    ("libpython3.11-stdlib", "3.11.2-6+deb12u9", "code", "usr/lib/python3.11", (".py",)),
    ("python3-setuptools", "66.1.1-1+deb12u2", "code", "usr/lib/python3", (".py",)),
    ("python3-docutils", "0.19+dfsg-6", "code", "usr/lib/python3", (".py",)),
    ("python3-jinja2", "3.1.2-1+deb12u3", "code", "usr/lib/python3", (".py",)),
    ("python3-requests", "2.28.1+dfsg-1", "code", "usr/lib/python3", (".py",)),
    ("python3-pygments", "2.14.0+dfsg-1", "code", "usr/lib/python3", (".py",)),
    # English prose: the reStructuredText sources of the Python documentation (tutorial, HOWTOs, library reference)
    ("python3.11-doc", "3.11.2-6+deb12u9", "prose", "usr/share/doc/python3.11/html/_sources", (".rst.txt",)),
]

JS_SUFFIXES = (".js", ".mjs", ".cjs", ".ts", ".mts", ".cts", ".tsx", ".jsx")
NPM = [
    ("typescript", "5.4.5"),
    ("@types/node", "20.11.30"),
    ("@types/vscode", "1.88.0"),
    ("lodash", "4.17.21"),
    ("rxjs", "7.8.1"),
    ("express", "4.19.2"),
    ("react", "18.3.1"),
    ("react-dom", "18.3.1"),
    ("vue", "3.4.21"),
    ("three", "0.162.0"),
    ("moment", "2.30.1"),
    ("axios", "1.6.8"),
    ("jquery", "3.7.1"),
    ("d3", "7.9.0"),
    ("chart.js", "4.4.2"),
    ("zod", "3.22.4"),
    ("webpack", "5.91.0"),
    ("eslint", "8.57.0"),
    ("commander", "12.0.0"),
    ("yargs", "17.7.2"),
    ("mocha", "10.4.0"),
    ("acorn", "8.11.3"),
    ("marked", "12.0.1"),
    ("highlight.js", "11.9.0"),
    ("redux", "5.0.1"),
    ("@nestjs/core", "10.3.7"),
    ("@nestjs/common", "10.3.7"),
    ("immer", "10.0.3"),
    ("preact", "10.20.1"),
    ("svelte", "4.2.12"),
]

# File-level filters
MAX_FILE_BYTES = 400_000  # drop bundles / generated tables bigger than this
MAX_LINE_CHARS = 1000  # drop files with a line longer than this (minified / data)
MIN_FILE_BYTES = 64
VAL_PERMILLE = 25  # 2.5% of files (by hash of their name) go to validation


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd, cwd=None):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=cwd, check=True)


def fetch_debian(pkg, ver, skip):
    os.makedirs(DL, exist_ok=True)
    found = [f for f in os.listdir(DL) if f.startswith(pkg + "_") and f.endswith(".deb")]
    want = "%s_%s_" % (pkg, ver.split(":")[-1].replace(":", "%3a"))
    found = [f for f in found if f.startswith(want)]
    if not found:
        if skip:
            raise SystemExit("missing download for %s=%s" % (pkg, ver))
        run(["apt-get", "download", "%s=%s" % (pkg, ver)], cwd=DL)
        found = [f for f in os.listdir(DL) if f.startswith(want) and f.endswith(".deb")]
    deb = os.path.join(DL, sorted(found)[0])
    dest = os.path.join(EXTRACT, "deb", pkg)
    if not os.path.isdir(dest):
        os.makedirs(dest)
        run(["dpkg-deb", "-x", deb, dest])
    return deb, dest


def fetch_npm(name, ver, skip):
    os.makedirs(DL, exist_ok=True)
    tgz_name = "%s-%s.tgz" % (name.lstrip("@").replace("/", "-"), ver)
    tgz = os.path.join(DL, tgz_name)
    if not os.path.exists(tgz):
        if skip:
            raise SystemExit("missing download for %s@%s" % (name, ver))
        run(["npm", "pack", "--silent", "%s@%s" % (name, ver)], cwd=DL)
    dest = os.path.join(EXTRACT, "npm", name.replace("/", "__"))
    if not os.path.isdir(dest):
        os.makedirs(dest)
        with tarfile.open(tgz) as t:
            members = [m for m in t.getmembers() if m.isfile() and ".." not in m.name.split("/")]
            t.extractall(dest, members=members)
    return tgz, dest


def walk(root):
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                yield p


def accept(text, name):
    if len(text.encode("utf-8")) > MAX_FILE_BYTES:
        return "too_big"
    if len(text) < MIN_FILE_BYTES:
        return "too_small"
    if ".min." in name or name.endswith(".map"):
        return "minified"
    if max((len(l) for l in text.split("\n")), default=0) > MAX_LINE_CHARS:
        return "long_line"
    return None


SKIP_DIR = re.compile(r"(^|/)(test|tests|__pycache__|idlelib/Icons|site-packages/pip/_vendor)(/|$)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-download", action="store_true")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)

    docs = []  # (split, kind, source, relpath, text)
    sources = []
    seen = set()
    rejected = {}

    def add(source_id, kind, root, rel_prefix, suffixes, sources_entry):
        n_files = n_bytes = 0
        base = os.path.join(root, rel_prefix) if rel_prefix else root
        for p in walk(base):
            rel = os.path.relpath(p, base)
            if not any(rel.endswith(s) or os.path.basename(rel) == s for s in suffixes):
                continue
            if SKIP_DIR.search(rel) or "node_modules/" in rel:
                rejected["skipped_dir"] = rejected.get("skipped_dir", 0) + 1
                continue
            with open(p, "rb") as f:
                raw = f.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                rejected["not_utf8"] = rejected.get("not_utf8", 0) + 1
                continue
            text = text.replace("\r\n", "\n").replace(EOT, "<|end of text|>").strip("\n") + "\n"
            why = accept(text, rel)
            if why:
                rejected[why] = rejected.get(why, 0) + 1
                continue
            h = hashlib.sha256(text.encode("utf-8")).digest()
            if h in seen:
                rejected["duplicate"] = rejected.get("duplicate", 0) + 1
                continue
            seen.add(h)
            key = ("%s/%s" % (source_id, rel)).encode("utf-8")
            bucket = int.from_bytes(hashlib.sha256(key).digest()[:4], "little") % 1000
            split = "val" if bucket < VAL_PERMILLE else "train"
            docs.append((split, kind, source_id, rel, text))
            n_files += 1
            n_bytes += len(text.encode("utf-8"))
        sources_entry["files"] = n_files
        sources_entry["bytes"] = n_bytes

    for pkg, ver, kind, sub, suffixes in DEBIAN:
        deb, dest = fetch_debian(pkg, ver, args.skip_download)
        entry = {"registry": "debian-bookworm", "name": pkg, "version": ver, "kind": kind,
                 "archive": os.path.basename(deb), "archive_sha256": sha256_file(deb), "subdir": sub,
                 "suffixes": list(suffixes)}
        add("debian:" + pkg, kind, dest, sub, suffixes, entry)
        sources.append(entry)

    for name, ver in NPM:
        tgz, dest = fetch_npm(name, ver, args.skip_download)
        entry = {"registry": "npm", "name": name, "version": ver, "kind": "code",
                 "archive": os.path.basename(tgz), "archive_sha256": sha256_file(tgz)}
        top = sorted(os.listdir(dest))  # "package/" for most, "node/" etc. for @types packages
        add("npm:" + name, "code", dest, top[0] if len(top) == 1 else "", JS_SUFFIXES, entry)
        sources.append(entry)

    totals = {}
    for split in ("train", "val"):
        path = os.path.join(OUT, split + ".txt")
        with open(path, "w", encoding="utf-8") as f:
            first = True
            for s, kind, src, rel, text in docs:
                if s != split:
                    continue
                if not first:
                    f.write(EOT)
                f.write(text)
                first = False
                t = totals.setdefault(split, {"files": 0, "bytes": 0, "code_bytes": 0, "prose_bytes": 0})
                t["files"] += 1
                b = len(text.encode("utf-8"))
                t["bytes"] += b
                t[kind + "_bytes"] += b
        totals[split]["sha256"] = sha256_file(path)
    all_bytes = sum(t["bytes"] for t in totals.values())
    code = sum(t["code_bytes"] for t in totals.values())
    manifest = {
        "description": "Training corpus of the Residual demo model (tools/demo-model/corpus.py)",
        "document_separator": EOT,
        "filters": {"max_file_bytes": MAX_FILE_BYTES, "max_line_chars": MAX_LINE_CHARS,
                    "min_file_bytes": MIN_FILE_BYTES, "drop": "*.min.*, *.map, node_modules/, exact duplicates",
                    "validation": "files whose sha256('source/path') mod 1000 < %d" % VAL_PERMILLE,
                    "normalisation": "CRLF->LF, strip surrounding blank lines, literal <|endoftext|> rewritten"},
        "rejected_files": rejected,
        "totals": totals,
        "total_bytes": all_bytes,
        "code_fraction": round(code / all_bytes, 4),
        "sources": sources,
    }
    os.makedirs(os.path.dirname(MANIFEST), exist_ok=True)
    with open(MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(json.dumps({"totals": totals, "code_fraction": manifest["code_fraction"], "rejected": rejected}, indent=1))


if __name__ == "__main__":
    main()
