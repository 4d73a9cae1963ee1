"""Hybrid benchmark, peers and speed: per-query latency of vecdex's three modes interleaved with
LanceDB (embedded: exact vector scan, native full-text index, hybrid with its RRF reranker),
LanceDB's quality on the same queries, and vecdex's lexical indexing / query speed against raw
bm25s on the same texts. Used by bench/hybrid.py.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("LANCEDB_LOG", "error")  # lance's scanner warns on every hybrid query

from bench.common import dist_version, summary_ms  # noqa: E402
from bench.hybrid_quality import Data, Side, build_collection, metrics  # noqa: E402
from engine import Engine  # noqa: E402
from index.lexical import BM25Index  # noqa: E402

K_LATENCY = 10  # what a user asks for one query at a time

# Issue reference figures for LanceDB on SciFact (nDCG@10, ms per query).
LANCEDB_REFERENCE = {
    "vector": {"ndcg@10": 0.645, "ms": 11.4},
    "fts": {"ndcg@10": 0.684, "ms": 9.8},
    "hybrid": {"ndcg@10": 0.716, "ms": 17.4},
}


# ---- latency, vecdex and LanceDB interleaved -----------------------------------------------------
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
    system's first-pass top-k ids (for LanceDB's quality at k=10). vecdex hybrid runs at the
    collection's fusion: the library default (``engine.fusion.DEFAULT_*``)."""
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
        "version": dist_version("lancedb"),
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


# ---- lexical speed against raw bm25s -------------------------------------------------------------
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
