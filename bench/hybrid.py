"""Hybrid search on BEIR data: quality of dense / lexical / fused rankings, the fusion fitted on
the train split, per-query latency, lexical speed against raw bm25s, and LanceDB side by side.

    python -m bench.hybrid                                  # SciFact, everything (~15 min, 2 cores)
    python -m bench.hybrid --quick                          # a subset, for development (~1 min)
    python -m bench.hybrid DIR --dense-model M --token-model token

Everything is measured in one process run on the same data:

1. quality on the test split (pytrec_eval through ``engine.metrics``): exact dense search (the
   default MiniLM and any ``--dense-model``; ``--token-model`` through an exhaustive ``chamfer``
   collection), lexical (BM25), hybrid with each fusion at the library defaults;
2. a fusion sweep on the TRAIN split (weighted: dense weight 0..1; RRF: rrf_k x weight; depth
   50 / 100 / 200 for the best of each); the setting best on train is the "fitted fusion" and is
   then scored on test. Test figures for every setting are reported only to show how flat the
   curve is: nothing is chosen on them;
3. latency, one query at a time with cached query vectors (encoding excluded), median and p95;
4. lexical indexing docs/s and queries/s against raw bm25s on the same texts;
5. LanceDB (embedded, no ANN index: exact vector search; its native full-text index; hybrid with
   its default RRF reranker), quality and latency interleaved with vecdex's.

Embeddings are cached under bench/.cache/hybrid (keyed by model and texts). Results go to
bench/results/hybrid.json and hybrid.png (``--quick``: bench/.cache/hybrid/hybrid-quick.*).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANCEDB_LOG", "error")  # lance's scanner warns on every hybrid query

from engine import Engine, beir, encoding  # noqa: E402
from engine import fusion as fz  # noqa: E402
from engine.metrics import evaluate_run  # noqa: E402
from index.lexical import BM25Index  # noqa: E402

HERE = Path(__file__).parent
CACHE = HERE / ".cache" / "hybrid"
RESULTS = HERE / "results"
DEFAULT_DATA = Path("/work/shared/data/scifact")
ADD_BATCH = 4096
K_EVAL = 100  # ranking depth scored for recall@100
K_LATENCY = 10  # what a user asks for one query at a time

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]
RRF_KS = [1, 5, 10, 20, 40, 60, 100]
RRF_WEIGHTS = [0.3, 0.4, 0.5, 0.6, 0.7]
DEPTHS = [50, 100, 200]

# Issue reference figures for LanceDB on SciFact (nDCG@10, ms per query).
LANCEDB_REFERENCE = {
    "vector": {"ndcg@10": 0.645, "ms": 11.4},
    "fts": {"ndcg@10": 0.684, "ms": 9.8},
    "hybrid": {"ndcg@10": 0.716, "ms": 17.4},
}
TARGETS = {
    "hybrid_latency": "median hybrid <= median dense + median lexical + 1 ms",
    "lexical_indexing": "vecdex BM25Index add + rebuild >= 0.9x raw bm25s docs/s",
    "lexical_qps": "vecdex col.search(mode='lexical') >= 0.8x raw bm25s queries/s, one at a time",
    "lexical_qps_batched": "vecdex search_batch(mode='lexical') >= 0.8x raw bm25s batched",
    "vs_lancedb": "vecdex hybrid >= 5x faster than LanceDB hybrid (median ms per query)",
}


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
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{side}-{model_digest(enc)}-{texts_digest(texts)}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False), None
    t0 = time.perf_counter()
    x = enc.encode_documents(texts) if side == "docs" else enc.encode_queries(texts)
    secs = time.perf_counter() - t0
    x = np.ascontiguousarray(x, dtype=np.float32)
    np.save(path, x, allow_pickle=False)
    return x, secs


def cached_token_sets(
    enc: Any, texts: list[str], side: str
) -> tuple[list[np.ndarray], float | None]:
    """Token sets stored packed (float16 tokens + int64 offsets; never pickle)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / f"{side}-tokens-{model_digest(enc)}-{texts_digest(texts)}"
    tpath, opath = Path(f"{stem}.tokens.npy"), Path(f"{stem}.offsets.npy")
    secs = None
    if tpath.exists() and opath.exists():
        tokens, offsets = np.load(tpath, allow_pickle=False), np.load(opath, allow_pickle=False)
    else:
        t0 = time.perf_counter()
        sets = enc.encode_documents(texts) if side == "docs" else enc.encode_queries(texts)
        secs = time.perf_counter() - t0
        offsets = np.zeros(len(sets) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in sets], out=offsets[1:])
        tokens = np.concatenate(sets).astype(np.float16)
        np.save(tpath, tokens, allow_pickle=False)
        np.save(opath, offsets, allow_pickle=False)
    tokens = tokens.astype(np.float32)
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
):
    col = eng.create_collection(name, dim=dim, index=index, lexical=True, durability="none")
    for a in range(0, len(ids), ADD_BATCH):
        col.add(ids[a : a + ADD_BATCH], vectors[a : a + ADD_BATCH], texts=texts[a : a + ADD_BATCH])
    col.flush()
    return col


def pct(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


def summary_ms(ns: Sequence[int]) -> dict[str, float]:
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    return {
        "median_ms": round(float(np.median(ms)), 4),
        "p95_ms": round(pct(ms, 95), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "n": int(ms.size),
    }


# ---- 1 + 2: quality and the fusion sweep ---------------------------------------------------------
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
        return f"weighted(w={self.weight:g}, depth={self.depth})"


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
    rows = [{"system": "vecdex", "model": label, "mode": "dense", **side.score("test", "dense")}]
    for method in ("weighted", "rrf"):
        s = Setting(method, fz.DEFAULT_WEIGHT)
        rows.append(
            {
                "system": "vecdex",
                "model": label,
                "mode": "hybrid",
                "fusion": s.label() + " (library default)",
                **side.score("test", "hybrid", **s.kwargs()),
            }
        )
    return rows


def sweep(side: Side, log: Callable[[str], None]) -> dict[str, Any]:
    """Every setting on train (to choose) and test (to show); the choice uses train only."""
    settings = [Setting("weighted", w) for w in WEIGHTS]
    settings += [Setting("rrf", w, rrf_k=k) for k in RRF_KS for w in RRF_WEIGHTS]
    for s in settings:
        s.train, s.test = side.score_setting(s, "train"), side.score_setting(s, "test")
    by_depth: list[Setting] = []
    for method in ("weighted", "rrf"):
        best = max((s for s in settings if s.method == method), key=train_key)
        for depth in DEPTHS:
            if depth == best.depth:
                continue
            s = Setting(method, best.weight, rrf_k=best.rrf_k, depth=depth)
            s.train, s.test = side.score_setting(s, "train"), side.score_setting(s, "test")
            by_depth.append(s)
    everything = settings + by_depth
    best = max(everything, key=train_key)
    best_of = {m: max((s for s in everything if s.method == m), key=train_key) for m in fz.FUSIONS}
    fitted = {
        "chosen_on": "train nDCG@10 (ties: earlier in the sweep order)",
        "setting": best.kwargs(),
        "label": best.label(),
        "train": best.train,
        "test": best.test,  # scored at k = depth, so the library uses exactly that depth
        "best_per_fusion": {
            m: {"setting": s.kwargs(), "label": s.label(), "train": s.train, "test": s.test}
            for m, s in best_of.items()
        },
    }
    test_ndcg = [s.test["ndcg@10"] for s in everything]
    log(
        f"  fitted on train: {best.label()}  train {best.train['ndcg@10']:.4f}  "
        f"test {fitted['test']['ndcg@10']:.4f}"
    )
    return {
        "split_chosen_on": "train",
        "settings": [asdict(s) for s in everything],
        "fitted": fitted,
        "test_ndcg@10_range_over_settings": [min(test_ndcg), max(test_ndcg)],
        "test_ndcg@10_range_weighted_0.3_0.8": _range(
            s.test["ndcg@10"] for s in settings if s.method == "weighted" and 0.3 <= s.weight <= 0.8
        ),
        "test_ndcg@10_range_rrf_k_10_100": _range(
            s.test["ndcg@10"] for s in settings if s.method == "rrf" and s.rrf_k >= 10
        ),
    }


def train_key(s: Setting) -> float:
    return float(s.train["ndcg@10"])


def _range(xs: Any) -> list[float]:
    xs = list(xs)
    return [min(xs), max(xs)]


# ---- 3 + 5: latency, vecdex and LanceDB interleaved ----------------------------------------------
class LanceSide:
    """An embedded LanceDB table: vectors (no ANN index: exact), native full-text index."""

    def __init__(self, directory: Path, data: Data, vectors: np.ndarray) -> None:
        import lancedb
        import pyarrow as pa
        from lancedb.index import FTS

        n, dim = vectors.shape
        table = pa.table(
            {
                "id": data.doc_ids,
                "text": data.texts,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
            }
        )
        t0 = time.perf_counter()
        self.db = lancedb.connect(str(directory))
        self.table = self.db.create_table("docs", data=table)
        self.load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.table.create_index("text", config=FTS())  # English stemmer + stopwords (defaults)
        self.fts_index_s = time.perf_counter() - t0
        self.errors: dict[str, int] = {"vector": 0, "fts": 0, "hybrid": 0}

    def info(self) -> dict[str, Any]:
        idx = [i for i in self.table.list_indices()]
        return {
            "load_s": round(self.load_s, 3),
            "fts_index_s": round(self.fts_index_s, 3),
            "indices": [
                {"name": i.name, "type": str(i.index_type), "columns": list(i.columns)} for i in idx
            ],
            "vector_search": "no ANN index: exhaustive (exact) scan, distance l2 (default; same "
            "order as cosine for these normalised vectors)",
            "fts": "native FTS (tantivy was removed from lancedb): simple tokenizer, English "
            "stemmer, stop words, lower case, ascii folding (create_index defaults)",
            "hybrid": "table.search(query_type='hybrid').vector(v).text(t): default reranker "
            "RRFReranker (K=60), each side fetched at the same limit",
        }

    def query(self, mode: str, vec: np.ndarray, text: str, k: int) -> list[str]:
        t = self.table
        try:
            if mode == "vector":
                q = t.search(vec, query_type="vector").select(["id", "_distance"])
            elif mode == "fts":
                q = t.search(text, query_type="fts").select(["id", "_score"])
            else:
                q = t.search(query_type="hybrid").vector(vec).text(text).select(["id"])
            return q.limit(k).to_arrow()["id"].to_pylist()  # type: ignore[no-any-return]
        except Exception:  # a query the parser rejects counts as an empty result
            self.errors[mode] += 1
            return []


def latency(
    side: Side,
    lance: LanceSide | None,
    repeats: int,
    warmup: int,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, list[list[str]]]]:
    """One query at a time, every system on the same query back to back in a rotating order (so
    load on the shared machine hits all alike); timings of all passes pooled. Returns also each
    system's first-pass top-k ids (for LanceDB's quality at k=10)."""
    d, col = side.data, side.col
    vecs, texts = side.qvecs["test"], d.query_texts("test")
    calls: dict[str, Callable[[int], list[str]]] = {
        "vecdex dense": lambda i: [h.id for h in col.search(vecs[i], k=K_LATENCY)],
        "vecdex lexical": lambda i: [
            h.id for h in col.search(texts[i], k=K_LATENCY, mode="lexical")
        ],
        "vecdex hybrid": lambda i: [
            h.id for h in col.search(vecs[i], k=K_LATENCY, mode="hybrid", text=texts[i])
        ],
    }
    if lance is not None:
        for mode in ("vector", "fts", "hybrid"):
            calls[f"lancedb {mode}"] = lambda i, m=mode: lance.query(
                m, vecs[i], texts[i], K_LATENCY
            )
    n = len(texts)
    for i in range(min(warmup, n)):
        for f in calls.values():
            f(i)
    times: dict[str, list[int]] = {name: [] for name in calls}
    first: dict[str, list[list[str]]] = {name: [] for name in calls}
    names = list(calls)
    for rep in range(repeats):
        for i in range(n):
            r = (i + rep) % len(names)  # rotate who goes first (caches, frequency)
            for name in names[r:] + names[:r]:
                t0 = time.perf_counter_ns()
                ids = calls[name](i)
                times[name].append(time.perf_counter_ns() - t0)
                if rep == 0:
                    first[name].append(ids)
        log(f"  latency pass {rep + 1}/{repeats} done")
    out = {name: summary_ms(ns) for name, ns in times.items()}
    return out, first


# ---- 4: lexical speed against raw bm25s ----------------------------------------------------------
def lexical_speed(data: Data, vectors: np.ndarray, repeats: int) -> dict[str, Any]:
    import bm25s
    import Stemmer

    texts = data.texts
    queries = [data.queries[q] for q in dict.fromkeys(data.qids["test"] + data.qids["train"])]
    n = len(texts)
    labels = np.arange(n, dtype=np.int64)
    idx_raw, idx_ours, idx_col = [], [], []
    retriever: Any = None
    ours: BM25Index | None = None
    with tempfile.TemporaryDirectory(prefix="vecdex-bench-hybrid-") as tmp:
        for rep in range(repeats):
            t0 = time.perf_counter()
            stemmer = Stemmer.Stemmer("english")
            tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
            retriever = bm25s.BM25()
            retriever.index(tokens, show_progress=False)
            idx_raw.append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            ours = BM25Index()
            ours.add(texts, labels)
            ours.rebuild()
            idx_ours.append(n / (time.perf_counter() - t0))
            eng = Engine(Path(tmp) / f"e{rep}", checkpoint_bytes=1 << 62)
            t0 = time.perf_counter()
            col = build_collection(
                eng, "lex", data.doc_ids, vectors, texts, "flat", vectors.shape[1]
            )
            idx_col.append(n / (time.perf_counter() - t0))
            if rep < repeats - 1:
                eng.drop_collection("lex")
        assert retriever is not None and ours is not None

        def raw_one() -> list[list[int]]:
            out = []
            for q in queries:
                qt = bm25s.tokenize([q], stopwords="en", stemmer=stemmer, show_progress=False)
                docs, scores = retriever.retrieve(qt, k=10, show_progress=False)
                out.append([int(d) for d, s in zip(docs[0], scores[0], strict=True) if s > 0])
            return out

        def raw_batch() -> None:
            qt = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False)
            retriever.retrieve(qt, k=10, show_progress=False)

        def col_one() -> list[list[str]]:
            return [[h.id for h in col.search(q, k=10, mode="lexical")] for q in queries]

        def col_batch() -> None:
            col.search_batch(None, k=10, mode="lexical", texts=queries)

        def index_one() -> None:
            for q in queries:
                ours.search([q], 10)

        qps: dict[str, list[float]] = {
            k: [] for k in ("raw_one", "raw_batch", "col_one", "col_batch", "index_one")
        }
        fns = {
            "raw_one": raw_one,
            "raw_batch": raw_batch,
            "col_one": col_one,
            "col_batch": col_batch,
            "index_one": index_one,
        }
        raw_one(), col_one()  # warm-up
        raw_ids = col_ids = None
        for _ in range(repeats):
            for name, f in fns.items():
                t0 = time.perf_counter()
                r = f()
                qps[name].append(len(queries) / (time.perf_counter() - t0))
                if name == "raw_one":
                    raw_ids = r
                elif name == "col_one":
                    col_ids = r
        # Same tokenizer and scores: the top-10 sets agree (up to ties at the cut).
        pos = {d: i for i, d in enumerate(data.doc_ids)}
        same = [
            set(a) == {pos[x] for x in b} for a, b in zip(raw_ids or [], col_ids or [], strict=True)
        ]
        eng.close()
    med = {k: statistics.median(v) for k, v in qps.items()}
    out: dict[str, Any] = {
        "docs": n,
        "queries": len(queries),
        "repeats": repeats,
        "raw": "bm25s.tokenize(stopwords='en', stemmer=Stemmer('english')) + BM25().index; "
        "queries: retrieve(bm25s.tokenize(...), k=10)",
        "indexing_docs_per_s": {
            "raw_bm25s": round(statistics.median(idx_raw), 1),
            "vecdex_BM25Index_add_rebuild": round(statistics.median(idx_ours), 1),
            "vecdex_collection_add_flush": round(statistics.median(idx_col), 1),
            "all_raw": [round(x, 1) for x in idx_raw],
            "all_vecdex_index": [round(x, 1) for x in idx_ours],
            "all_vecdex_collection": [round(x, 1) for x in idx_col],
        },
        "qps": {
            "raw_bm25s_one_at_a_time": round(med["raw_one"], 1),
            "raw_bm25s_batched": round(med["raw_batch"], 1),
            "vecdex_col_search_one_at_a_time": round(med["col_one"], 1),
            "vecdex_col_search_batch": round(med["col_batch"], 1),
            "vecdex_BM25Index_search_one_at_a_time": round(med["index_one"], 1),
            "all": {k: [round(x, 1) for x in v] for k, v in qps.items()},
        },
        "top10_same_set_as_raw": round(float(np.mean(same)), 4) if same else None,
    }
    i = out["indexing_docs_per_s"]
    out["ratios"] = {
        "indexing_index": round(i["vecdex_BM25Index_add_rebuild"] / i["raw_bm25s"], 3),
        "indexing_collection": round(i["vecdex_collection_add_flush"] / i["raw_bm25s"], 3),
        "qps_one_at_a_time": round(med["col_one"] / med["raw_one"], 3),
        "qps_batched": round(med["col_batch"] / med["raw_batch"], 3),
        "qps_index_one_at_a_time": round(med["index_one"] / med["raw_one"], 3),
    }
    return out


# ---- the run -------------------------------------------------------------------------------------
def bench_dataset(
    args: argparse.Namespace, path: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    t_start = time.perf_counter()
    data = load_data(path, args.quick)
    log(
        f"{data.name}: {len(data.doc_ids)} docs, {len(data.qids['train'])} train / "
        f"{len(data.qids['test'])} test queries"
    )
    out: dict[str, Any] = {
        "data": {
            "path": str(path),
            "docs": len(data.doc_ids),
            "train_queries": len(data.qids["train"]),
            "test_queries": len(data.qids["test"]),
            "subset": "quick" if args.quick else "full",
        },
        "encoding": {},
        "quality_test": [],
        "sweeps": {},
        "skipped": [],
    }
    dense_specs = [("MiniLM (default)", "default")] + [(f"dense:{m}", m) for m in args.dense_model]
    with tempfile.TemporaryDirectory(prefix="vecdex-bench-hybrid-") as tmp:
        eng = Engine(Path(tmp) / "engine", checkpoint_bytes=1 << 62)
        main_side: Side | None = None
        main_vectors: np.ndarray | None = None
        for n_model, (label, spec) in enumerate(dense_specs):
            enc = encoding.resolve(spec)
            if enc.multi_vector:
                raise SystemExit(
                    f"--dense-model {spec!r} is multi-vector: pass it as --token-model"
                )
            docs, t_docs = cached_vectors(enc, data.texts, "docs")
            qvecs, t_q = {}, {}
            for split in ("train", "test"):
                qvecs[split], t_q[split] = cached_vectors(enc, data.query_texts(split), "queries")
            out["encoding"][label] = {
                "encoder": str(enc.name),
                "docs_s": t_docs,
                "queries_s": t_q,
                "note": "null seconds: read from bench/.cache",
            }
            t0 = time.perf_counter()
            col = build_collection(
                eng, f"d{n_model}", data.doc_ids, docs, data.texts, "flat", enc.dim
            )
            out["encoding"][label]["collection_build_s"] = round(time.perf_counter() - t0, 3)
            side = Side(col, data, qvecs)
            if main_side is None:
                main_side, main_vectors = side, docs
                out["quality_test"].append(
                    {
                        "system": "vecdex",
                        "model": "BM25 (bm25s)",
                        "mode": "lexical",
                        **side.score("test", "lexical"),
                    }
                )
            out["quality_test"] += quality(side, label)
            log(f"  {label}: quality on test done; sweeping fusions on train")
            out["sweeps"][label] = sweep(side, log)
        assert main_side is not None and main_vectors is not None
        if args.token_model:
            out["quality_test"] += token_quality(args, eng, data, log, out)
        log("  latency (one query at a time)")
        lance: LanceSide | None = None
        if not args.skip_lancedb:
            try:
                lance = LanceSide(Path(tmp) / "lancedb", data, main_vectors)
            except Exception as e:  # recorded, and the rest goes on
                out["skipped"].append({"name": "lancedb", "reason": f"{type(e).__name__}: {e}"})
                log(f"  LanceDB failed: {e}")
        lat, first = latency(main_side, lance, args.repeats, args.warmup, log)
        out["latency"] = {
            "k": K_LATENCY,
            "queries": len(data.qids["test"]),
            "repeats": args.repeats,
            "warmup_queries": args.warmup,
            "method": "one query at a time, cached query vectors (encoding excluded), systems "
            "interleaved per query (order rotated), all passes pooled",
            "fusion": fz.Fusion().to_dict(),
            "systems": lat,
        }
        if lance is not None:
            out["lancedb"] = lancedb_quality(lance, main_side, data, first, lat)
        eng.close()
    log("  lexical speed against raw bm25s")
    if not args.skip_speed:
        out["lexical_speed"] = lexical_speed(data, main_vectors, args.repeats)
    out["targets"] = targets(out)
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    return out


def token_quality(
    args: argparse.Namespace, eng: Engine, data: Data, log: Callable[[str], None], out: dict
) -> list[dict[str, Any]]:
    """A multi-vector model through an exhaustive chamfer collection: dense and both default
    fusions on test (no sweep: exhaustive Chamfer costs ~0.5 s a query on 2 cores)."""
    label = f"token:{args.token_model}"
    try:
        enc = encoding.resolve(args.token_model)
        if not enc.multi_vector:
            raise ValueError(f"{args.token_model!r} is not a multi-vector encoder")
        docs, t_docs = cached_token_sets(enc, data.texts, "docs")
        qsets, t_q = cached_token_sets(enc, data.query_texts("test"), "queries")
    except Exception as e:
        out["skipped"].append({"name": label, "reason": f"{type(e).__name__}: {e}"})
        log(f"  token model skipped: {e}")
        return []
    out["encoding"][label] = {"encoder": str(enc.name), "docs_s": t_docs, "queries_s": t_q}
    t0 = time.perf_counter()
    col = build_collection(eng, "tok", data.doc_ids, docs, data.texts, "chamfer", enc.dim)
    out["encoding"][label]["collection_build_s"] = round(time.perf_counter() - t0, 3)
    side = Side(col, data, {"test": qsets})
    t0 = time.perf_counter()
    rows = quality(side, label)
    out["encoding"][label]["quality_s"] = round(time.perf_counter() - t0, 1)
    for r in rows:
        r["index"] = "chamfer (exhaustive exact MaxSim)"
    log(f"  {label}: done")
    eng.drop_collection("tok")
    return rows


def lancedb_quality(
    lance: LanceSide, side: Side, data: Data, first: dict[str, list[list[str]]], lat: dict
) -> dict[str, Any]:
    qids, qrels = data.qids["test"], data.qrels["test"]
    vecs, texts = side.qvecs["test"], data.query_texts("test")
    rows = {}
    for mode in ("vector", "fts", "hybrid"):
        at10 = metrics(dict(zip(qids, first[f"lancedb {mode}"], strict=True)), qrels, 10)
        run100 = {q: lance.query(mode, vecs[i], texts[i], 100) for i, q in enumerate(qids)}
        rows[mode] = {
            "limit_10": at10,
            "limit_100": metrics(run100, qrels, 100),
            **lat[f"lancedb {mode}"],
            "reference": LANCEDB_REFERENCE[mode],
        }
    vec_hybrid = lat["vecdex hybrid"]["median_ms"]
    return {
        "version": _version("lancedb"),
        **lance.info(),
        "modes": rows,
        "query_errors": lance.errors,
        "speedup_vecdex_hybrid_vs_lancedb_hybrid": round(
            lat["lancedb hybrid"]["median_ms"] / vec_hybrid, 2
        ),
        "vecdex_at_k10": {
            name: metrics(dict(zip(qids, first[name], strict=True)), qrels, 10)
            for name in ("vecdex dense", "vecdex lexical", "vecdex hybrid")
        },
    }


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    lat = out["latency"]["systems"]
    d, lx, h = (lat[f"vecdex {m}"]["median_ms"] for m in ("dense", "lexical", "hybrid"))
    rows.append(
        {
            "target": TARGETS["hybrid_latency"],
            "value": f"{h:.3f} <= {d + lx + 1:.3f} ms",
            "pass": h <= d + lx + 1.0,
        }
    )
    if "lexical_speed" in out:
        r = out["lexical_speed"]["ratios"]
        for key, name, floor in (
            ("lexical_indexing", "indexing_index", 0.9),
            ("lexical_qps", "qps_one_at_a_time", 0.8),
            ("lexical_qps_batched", "qps_batched", 0.8),
        ):
            rows.append({"target": TARGETS[key], "value": r[name], "pass": r[name] >= floor})
    if "lancedb" in out:
        s = out["lancedb"]["speedup_vecdex_hybrid_vs_lancedb_hybrid"]
        rows.append({"target": TARGETS["vs_lancedb"], "value": s, "pass": s >= 5.0})
    else:
        rows.append({"target": TARGETS["vs_lancedb"], "value": None, "pass": None})
    return rows


# ---- machine, report, plot -----------------------------------------------------------------------
def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    root = HERE.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        head = ""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores_logical": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "torch_threads": torch.get_num_threads(),
        "vecdex_git_head": head,
        "versions": {
            dist: _version(dist)
            for dist in (
                "vecdex",
                "bm25s",
                "PyStemmer",
                "lancedb",
                "pylance",
                "numpy",
                "torch",
                "pyarrow",
                "sentence-transformers",
                "pytrec-eval-terrier",
            )
        },
    }


def table(report: dict[str, Any]) -> str:
    lines = []
    for name, ds in report["datasets"].items():
        lines.append(
            f"\n## {name} ({ds['data']['docs']} docs, {ds['data']['test_queries']} test "
            f"queries, {ds['data']['subset']})\n"
        )
        lines.append(f"{'system / mode':<66} {'nDCG@10':>8} {'R@100':>7}")
        lines.append("-" * 83)
        for r in ds["quality_test"]:
            what = f"{r['system']} {r['mode']} {r['model']}"
            if "fusion" in r:
                what += f" {r['fusion']}"
            lines.append(f"{what[:66]:<66} {r['ndcg@10']:>8.4f} {_f(r['recall@100']):>7}")
        for label, sw in ds["sweeps"].items():
            f = sw["fitted"]
            what = f"vecdex hybrid {label} fitted on train: {f['label']}"
            lines.append(
                f"{what[:66]:<66} {f['test']['ndcg@10']:>8.4f} {_f(f['test']['recall@100']):>7}"
            )
        if "lancedb" in ds:
            for mode, r in ds["lancedb"]["modes"].items():
                lines.append(
                    f"{'lancedb ' + mode + ' (limit 10)':<66} "
                    f"{r['limit_10']['ndcg@10']:>8.4f} {'-':>7}"
                )
                lines.append(
                    f"{'lancedb ' + mode + ' (limit 100)':<66} "
                    f"{r['limit_100']['ndcg@10']:>8.4f} "
                    f"{_f(r['limit_100']['recall@100']):>7}"
                )
        for label, sw in ds["sweeps"].items():
            lines.append(f"\nFusion sweep ({label}), nDCG@10 train / test:")
            for s in sw["settings"]:
                st = Setting(s["method"], s["weight"], s["rrf_k"], s["depth"])
                lines.append(
                    f"  {st.label():<40} {s['train']['ndcg@10']:.4f} / {s['test']['ndcg@10']:.4f}"
                )
            f = sw["fitted"]
            lines.append(
                f"  best on train: {f['label']}: train {f['train']['ndcg@10']:.4f}, "
                f"test {f['test']['ndcg@10']:.4f}"
            )
        lat = ds["latency"]["systems"]
        lines.append(
            f"\nLatency, k={ds['latency']['k']}, one query at a time "
            f"({ds['latency']['repeats']} passes x {ds['latency']['queries']} queries):"
        )
        lines.append(f"  {'system':<20} {'median ms':>10} {'p95 ms':>10}")
        for name, r in lat.items():
            lines.append(f"  {name:<20} {r['median_ms']:>10.3f} {r['p95_ms']:>10.3f}")
        if "lancedb" in ds:
            lines.append(
                f"  vecdex hybrid is {ds['lancedb']['speedup_vecdex_hybrid_vs_lancedb_hybrid']}x "
                "faster than LanceDB hybrid (medians)"
            )
        if "lexical_speed" in ds:
            ls = ds["lexical_speed"]
            i, q, r = ls["indexing_docs_per_s"], ls["qps"], ls["ratios"]
            lines.append(
                f"\nLexical speed (median of {ls['repeats']}): docs/s raw bm25s "
                f"{i['raw_bm25s']:.0f}, vecdex BM25Index {i['vecdex_BM25Index_add_rebuild']:.0f} "
                f"({r['indexing_index']}x), collection add+flush "
                f"{i['vecdex_collection_add_flush']:.0f} ({r['indexing_collection']}x)"
            )
            lines.append(
                f"  queries/s one at a time: raw {q['raw_bm25s_one_at_a_time']:.0f}, "
                f"vecdex col.search {q['vecdex_col_search_one_at_a_time']:.0f} "
                f"({r['qps_one_at_a_time']}x), BM25Index.search "
                f"{q['vecdex_BM25Index_search_one_at_a_time']:.0f} "
                f"({r['qps_index_one_at_a_time']}x)"
            )
            lines.append(
                f"  queries/s batched: raw {q['raw_bm25s_batched']:.0f}, vecdex "
                f"{q['vecdex_col_search_batch']:.0f} ({r['qps_batched']}x); top-10 "
                f"sets equal to raw bm25s for {ls['top10_same_set_as_raw']:.1%} of queries"
            )
        lines.append("\nTargets:")
        for t in ds["targets"]:
            verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
            lines.append(f"  [{verdict}] {t['target']}: {t['value']}")
        for s in ds["skipped"]:
            lines.append(f"  skipped {s['name']}: {s['reason']}")
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (ds_name, label, sw)
        for ds_name, ds in report["datasets"].items()
        for label, sw in ds["sweeps"].items()
    ]
    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 4.5 * len(panels)), squeeze=False)
    for row, (ds_name, label, sw) in enumerate(panels):
        settings = [s for s in sw["settings"] if s["depth"] == fz.DEFAULT_DEPTH]
        ax = axes[row][0]
        w = [s for s in settings if s["method"] == "weighted"]
        for split, style in (("train", "-o"), ("test", "--s")):
            ax.plot([s["weight"] for s in w], [s[split]["ndcg@10"] for s in w], style, label=split)
        ax.set_xlabel("dense weight (weighted fusion, min-max normalised)")
        ax.set_ylabel("nDCG@10")
        ax.set_title(f"{ds_name} / {label}: weighted fusion")
        ax.grid(alpha=0.3)
        ax.legend()
        ax = axes[row][1]
        r = [s for s in settings if s["method"] == "rrf"]
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(RRF_WEIGHTS)))
        for c, wt in zip(colors, RRF_WEIGHTS, strict=True):
            pts = sorted((s for s in r if s["weight"] == wt), key=lambda s: s["rrf_k"])
            ks = [s["rrf_k"] for s in pts]
            ax.plot(ks, [s["train"]["ndcg@10"] for s in pts], "-o", color=c, label=f"w={wt} train")
            ax.plot(
                ks,
                [s["test"]["ndcg@10"] for s in pts],
                "--",
                color=c,
                alpha=0.6,
                label=f"w={wt} test",
            )
        ax.set_xscale("log")
        ax.set_xlabel("rrf_k (log)")
        ax.set_ylabel("nDCG@10")
        ax.set_title(f"{ds_name} / {label}: RRF (solid train, dashed test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Fusion sweep, depth 100: chosen on train; test shown for flatness only")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.hybrid",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "data",
        nargs="*",
        type=Path,
        default=[DEFAULT_DATA],
        metavar="BEIR_DIR",
        help=f"BEIR directories with qrels/train.tsv and test.tsv (default {DEFAULT_DATA})",
    )
    m = p.add_argument_group("models")
    m.add_argument(
        "--dense-model",
        action="append",
        default=[],
        metavar="DIR",
        help="a trained single-vector model directory, beside the default MiniLM (repeatable)",
    )
    m.add_argument(
        "--token-model",
        metavar="DIR",
        help="a multi-vector (token) model directory or spec ('token'), searched "
        "through an exhaustive chamfer collection (slow: ~0.5 s a query on 2 cores)",
    )
    r = p.add_argument_group("run")
    r.add_argument(
        "--quick",
        action="store_true",
        help="40 test / 120 train queries over ~1,000 documents, for development",
    )
    r.add_argument("--repeats", type=int, default=3, help="passes for timings (median)")
    r.add_argument("--warmup", type=int, default=20, help="warm-up queries before timing")
    r.add_argument("--skip-lancedb", action="store_true")
    r.add_argument("--skip-speed", action="store_true", help="skip lexical speed vs raw bm25s")
    o = p.add_argument_group("output")
    o.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default bench/results; --quick: bench/.cache/hybrid)",
    )
    o.add_argument("--name", default=None, help="file stem (default hybrid / hybrid-quick)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    args.out = args.out or (CACHE if args.quick else RESULTS)
    args.name = args.name or ("hybrid-quick" if args.quick else "hybrid")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    datasets = {}
    for path in args.data:
        datasets[path.name] = bench_dataset(args, path, log)
    report = {
        "benchmark": "hybrid",
        "command": "python -m bench.hybrid " + " ".join(sys.argv[1:] if argv is None else argv),
        "parameters": {
            "k_eval": K_EVAL,
            "k_latency": K_LATENCY,
            "dense_index": "flat (exact), cosine",
            "lexical": BM25Index.config_keys,
            "library_fusion_defaults": fz.Fusion().to_dict(),
            "sweep": {
                "weights": WEIGHTS,
                "rrf_ks": RRF_KS,
                "rrf_weights": RRF_WEIGHTS,
                "depths": DEPTHS,
                "chosen_on": "train",
            },
            "repeats": args.repeats,
            "warmup": args.warmup,
            "quick": args.quick,
            "dense_models": ["default", *args.dense_model],
            "token_model": args.token_model,
        },
        "machine": machine_info(),
        "datasets": datasets,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / f"{args.name}.json", args.out / f"{args.name}.png"
    json_path.write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    plot(report, png_path)
    print(table(report))
    print(f"\nwrote {json_path} and {png_path} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
