"""Hybrid benchmark, quality side: BEIR data, cached embeddings, test-split quality of each model
(dense, and hybrid with every fusion at the library's default parameters) and the fusion sweep
fitted on the train split. Used by bench/hybrid.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import CACHE_ROOT, cached_array, pack  # noqa: E402
from bench.common import cached_token_sets as cache_token_sets  # noqa: E402
from engine import Engine, beir, encoding  # noqa: E402
from engine import fusion as fz  # noqa: E402
from engine.metrics import evaluate_run  # noqa: E402

CACHE = CACHE_ROOT / "hybrid"
ADD_BATCH = 4096
K_EVAL = 100  # ranking depth scored for recall@100

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]  # weighted and dbsf: the dense side's weight
RRF_KS = [1, 5, 10, 20, 40, 60, 100]
RRF_WEIGHTS = [0.3, 0.4, 0.5, 0.6, 0.7]
DEPTHS = [50, 100, 200]
SCORE_FUSIONS = ("weighted", "dbsf")  # convex combinations of normalised scores, swept on WEIGHTS


# ---- data ----------------------------------------------------------------------------------------
@dataclass
class Data:
    name: str
    path: Path
    doc_ids: list[str]
    texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, dict[str, int]]]  # split -> qrels
    qids: dict[str, list[str]]  # split -> judged query ids present in queries.jsonl

    def query_texts(self, split: str) -> list[str]:
        return [self.queries[q] for q in self.qids[split]]


def load_data(path: Path, quick: bool) -> Data:
    corpus = beir.read_jsonl(path / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in beir.read_jsonl(path / "queries.jsonl")}
    qrels, qids = {}, {}
    for split in ("train", "test"):
        p = path / "qrels" / f"{split}.tsv"
        if not p.is_file():
            raise SystemExit(f"{p} does not exist: the benchmark needs train and test qrels")
        qrels[split] = beir.read_qrels(p)
        qids[split] = [q for q in qrels[split] if q in queries]
    if quick:  # a few queries, their judged documents and the start of the corpus
        qids = {"train": qids["train"][:120], "test": qids["test"][:40]}
        qrels = {s: {q: qrels[s][q] for q in qids[s]} for s in qrels}
        judged = {d for s in qrels for rel in qrels[s].values() for d in rel}
        corpus = [d for i, d in enumerate(corpus) if i < 1000 or d["_id"] in judged]
    return Data(
        name=path.name,
        path=path,
        doc_ids=[d["_id"] for d in corpus],
        texts=[beir.document_text(d) for d in corpus],
        queries=queries,
        qrels=qrels,
        qids=qids,
    )


# ---- cached embeddings ---------------------------------------------------------------------------
def model_digest(enc: Any) -> str:
    """Model name + configuration + the sizes and mtimes of its files (a retrained model in the
    same directory gets a new key)."""
    h = hashlib.sha1(str(enc.name).encode())
    if hasattr(enc, "config"):
        conf = enc.config()
    else:
        conf = {
            "dim": enc.dim,
            "max_seq_length": getattr(getattr(enc, "model", None), "max_seq_length", None),
        }
    h.update(json.dumps(conf, sort_keys=True, default=str).encode())
    root = Path(str(enc.name))
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def cached_vectors(enc: Any, texts: list[str], side: str) -> tuple[np.ndarray, float | None]:
    """(vectors, encode seconds or None when read from bench/.cache)."""
    encode = enc.encode_documents if side == "docs" else enc.encode_queries
    return cached_array(
        CACHE / f"{side}-{model_digest(enc)}-{texts_digest(texts)}.npy",
        lambda: np.ascontiguousarray(encode(texts), dtype=np.float32),
    )


def cached_token_sets(
    enc: Any, texts: list[str], side: str
) -> tuple[list[np.ndarray], float | None]:
    """Token sets stored packed (float16 tokens + int64 offsets; never pickle)."""
    encode = enc.encode_documents if side == "docs" else enc.encode_queries
    tokens, offsets, meta = cache_token_sets(
        CACHE,
        f"{side}-tokens-{model_digest(enc)}-{texts_digest(texts)}",
        lambda: pack(encode(texts), np.float16),
    )
    tokens = tokens.astype(np.float32)
    secs = None if meta["cached"] else meta["compute_s"]
    return [tokens[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)], secs


# ---- helpers -------------------------------------------------------------------------------------
def run_of(ids: np.ndarray, qids: list[str]) -> dict[str, list[str]]:
    return {q: [d for d in row if d is not None] for q, row in zip(qids, ids, strict=True)}


def metrics(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int) -> dict[str, Any]:
    """nDCG@10, MRR@10 and recall@100 (None when the rankings are shorter than 100)."""
    m = evaluate_run(run, qrels, ndcg_at=(10,), recall_at=(100,), mrr_at=(10,))
    out = {key: round(float(v), 4) for key, v in m.items()}
    if k < 100:
        out["recall@100"] = None
    return out


def build_collection(
    eng: Engine, name: str, ids: list[str], vectors: Any, texts: list[str], index: str, dim: int
) -> Any:
    """A collection at the library's default fusion (no fusion argument)."""
    col = eng.create_collection(name, dim=dim, index=index, lexical=True, durability="none")
    for a in range(0, len(ids), ADD_BATCH):
        col.add(ids[a : a + ADD_BATCH], vectors[a : a + ADD_BATCH], texts=texts[a : a + ADD_BATCH])
    col.flush()
    return col


# ---- quality and the fusion sweep ----------------------------------------------------------------
@dataclass
class Setting:
    """One hybrid fusion setting of the sweep."""

    method: str
    weight: float
    rrf_k: float = fz.DEFAULT_RRF_K
    depth: int = fz.DEFAULT_DEPTH
    train: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        return {
            "fusion": self.method,
            "weight": self.weight,
            "rrf_k": self.rrf_k,
            "depth": self.depth,
        }

    def label(self) -> str:
        if self.method == "rrf":
            return f"rrf(k={self.rrf_k:g}, w={self.weight:g}, depth={self.depth})"
        return f"{self.method}(w={self.weight:g}, depth={self.depth})"


class Side:
    """A collection and its cached query vectors per split: searches a split's queries."""

    def __init__(self, col: Any, data: Data, qvecs: dict[str, Any]) -> None:
        self.col, self.data, self.qvecs = col, data, qvecs

    def score(self, split: str, mode: str, k: int = K_EVAL, **kw: Any) -> dict[str, Any]:
        d = self.data
        texts = d.query_texts(split)
        if mode == "dense":
            res = self.col.search_batch(self.qvecs[split], k=k)
        elif mode == "lexical":
            res = self.col.search_batch(None, k=k, mode="lexical", texts=texts)
        else:
            res = self.col.search_batch(self.qvecs[split], k=k, mode="hybrid", texts=texts, **kw)
        return metrics(run_of(res.ids, d.qids[split]), d.qrels[split], k)

    def score_setting(self, s: Setting, split: str) -> dict[str, Any]:
        # k = depth makes the library use exactly this depth (it takes max(k, depth)).
        return self.score(split, "hybrid", k=max(s.depth, 10), **s.kwargs())


def quality(side: Side, label: str) -> list[dict[str, Any]]:
    """Dense, then hybrid with each fusion at the library's default weight / rrf_k / depth, on
    test; the library's default fusion is flagged."""
    rows = [{"system": "vecdex", "model": label, "mode": "dense", **side.score("test", "dense")}]
    for method in fz.FUSIONS:
        s = Setting(method, fz.DEFAULT_WEIGHT)
        default = method == fz.DEFAULT_FUSION
        rows.append(
            {
                "system": "vecdex",
                "model": label,
                "mode": "hybrid",
                "fusion": s.label() + (" (library default)" if default else " (default params)"),
                "fusion_setting": s.kwargs(),
                "library_default": default,
                **side.score("test", "hybrid", **s.kwargs()),
            }
        )
    return rows


def sweep(side: Side, log: Callable[[str], None]) -> dict[str, Any]:
    """Every setting on train (to choose) and test (to show); the choice uses train only.

    weighted and dbsf: dense weight over WEIGHTS; rrf: rrf_k x RRF_WEIGHTS; all at the default
    depth, then the best of each method on train at the other DEPTHS."""
    settings = [Setting(m, w) for m in SCORE_FUSIONS for w in WEIGHTS]
    settings += [Setting("rrf", w, rrf_k=k) for k in RRF_KS for w in RRF_WEIGHTS]
    for s in settings:
        s.train, s.test = side.score_setting(s, "train"), side.score_setting(s, "test")
    by_depth: list[Setting] = []
    for method in fz.FUSIONS:
        best = max((s for s in settings if s.method == method), key=train_key)
        for depth in DEPTHS:
            if depth == best.depth:
                continue
            s = Setting(method, best.weight, rrf_k=best.rrf_k, depth=depth)
            s.train, s.test = side.score_setting(s, "train"), side.score_setting(s, "test")
            by_depth.append(s)
    everything = settings + by_depth
    best = max(everything, key=train_key)  # ties: the earlier in the sweep order
    best_of = {m: max((s for s in everything if s.method == m), key=train_key) for m in fz.FUSIONS}
    oracle = max(everything, key=lambda s: float(s.test["ndcg@10"]))
    fitted = {
        "chosen_on": "train nDCG@10 among all fusions (ties: earlier in the sweep order)",
        "setting": best.kwargs(),
        "label": best.label(),
        "train": best.train,
        "test": best.test,  # scored at k = depth, so the library uses exactly that depth
        "best_per_fusion": {
            m: {"setting": s.kwargs(), "label": s.label(), "train": s.train, "test": s.test}
            for m, s in best_of.items()
        },
        "test_oracle_not_an_estimate": {
            "label": oracle.label(),
            "train": oracle.train,
            "test": oracle.test,
            "note": "the best setting ON TEST: an upper bound showing what fitting on train "
            "gives up, not a figure to quote",
        },
    }
    test_ndcg = [s.test["ndcg@10"] for s in everything]
    log(
        f"  fitted on train: {best.label()}  train {best.train['ndcg@10']:.4f}  "
        f"test {fitted['test']['ndcg@10']:.4f}"
    )
    out = {
        "split_chosen_on": "train",
        "settings": [asdict(s) for s in everything],
        "fitted": fitted,
        "test_ndcg@10_range_over_settings": [min(test_ndcg), max(test_ndcg)],
    }
    for m in SCORE_FUSIONS:
        out[f"test_ndcg@10_range_{m}_0.3_0.8"] = _range(
            s.test["ndcg@10"] for s in settings if s.method == m and 0.3 <= s.weight <= 0.8
        )
    out["test_ndcg@10_range_rrf_k_10_100"] = _range(
        s.test["ndcg@10"] for s in settings if s.method == "rrf" and s.rrf_k >= 10
    )
    return out


def train_key(s: Setting) -> float:
    return float(s.train["ndcg@10"])


def _range(xs: Any) -> list[float]:
    xs = list(xs)
    return [min(xs), max(xs)]


# ---- the models ----------------------------------------------------------------------------------
def dense_side(
    eng: Engine, data: Data, spec: str, name: str, info: dict[str, Any]
) -> tuple[Side, np.ndarray]:
    """A flat (exact) collection of a single-vector model's cached document vectors, with its
    cached train and test query vectors; encoding times go into ``info``."""
    enc = encoding.resolve(spec)
    if enc.multi_vector:
        raise SystemExit(f"--dense-model {spec!r} is multi-vector: pass it as --token-model")
    docs, t_docs = cached_vectors(enc, data.texts, "docs")
    qvecs, t_q = {}, {}
    for split in ("train", "test"):
        qvecs[split], t_q[split] = cached_vectors(enc, data.query_texts(split), "queries")
    info.update(
        {
            "encoder": str(enc.name),
            "docs_s": t_docs,
            "queries_s": t_q,
            "note": "null seconds: read from bench/.cache",
        }
    )
    t0 = time.perf_counter()
    col = build_collection(eng, name, data.doc_ids, docs, data.texts, "flat", enc.dim)
    info["collection_build_s"] = round(time.perf_counter() - t0, 3)
    return Side(col, data, qvecs), docs


def token_quality(
    spec: str, eng: Engine, data: Data, log: Callable[[str], None], out: dict[str, Any]
) -> list[dict[str, Any]]:
    """A multi-vector model through an exhaustive chamfer collection: dense and every fusion at
    the library defaults on test (no sweep: exhaustive Chamfer costs ~0.5 s a query on 2 cores).
    A model that cannot be loaded is recorded in ``out['skipped']``."""
    label = f"token:{spec}"
    try:
        enc = encoding.resolve(spec)
        if not enc.multi_vector:
            raise ValueError(f"{spec!r} is not a multi-vector encoder")
        docs, t_docs = cached_token_sets(enc, data.texts, "docs")
        qsets, t_q = cached_token_sets(enc, data.query_texts("test"), "queries")
    except Exception as e:
        out["skipped"].append({"name": label, "reason": f"{type(e).__name__}: {e}"})
        log(f"  token model skipped: {e}")
        return []
    info = out["encoding"][label] = {
        "encoder": str(enc.name),
        "docs_s": t_docs,
        "queries_s": t_q,
    }
    t0 = time.perf_counter()
    col = build_collection(eng, "tok", data.doc_ids, docs, data.texts, "chamfer", enc.dim)
    info["collection_build_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    rows = quality(Side(col, data, {"test": qsets}), label)
    info["quality_s"] = round(time.perf_counter() - t0, 1)
    for r in rows:
        r["index"] = "chamfer (exhaustive exact MaxSim)"
    log(f"  {label}: done")
    eng.drop_collection("tok")
    return rows
