"""The quickstart job behind ``make demo`` / ``vecdex demo``: index a corpus, search it, reopen it.

The sample corpus (300 SciFact abstracts, 50 claims; ``engine/sample/``, a BEIR directory) goes
through ``vecdex index``'s pipeline with the default encoder (all-MiniLM-L6-v2, offline), then
text queries are searched, checked against exact search and the relevance judgements, and the
collection is reopened from disk; lexical (BM25) and hybrid searches are scored beside dense
ones. ``server/demo.py`` then serves the same collection over gRPC.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import index as ix

from . import beir
from .engine import Engine

SAMPLE = Path(__file__).parent / "sample"


def run(data: str | None = None, out: Callable[[str], None] = print) -> dict[str, float]:
    """Runs the demo; returns its measurements."""
    from . import encoding
    from .evaluate import evaluate_run
    from .ingest import ingest

    queries = beir.read_jsonl(SAMPLE / "queries.jsonl")
    qrels = beir.read_qrels(SAMPLE / "qrels.tsv")
    tmp = None
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="vecdex-demo-")
        data = tmp.name
    out(f"vecdex demo: index 300 SciFact abstracts, search {len(queries)} claims -> {data}")

    t0 = time.perf_counter()
    encoder = encoding.resolve("default")
    encoder.encode_queries(["warm-up"])
    t_load = time.perf_counter() - t0
    out(f"loaded the default encoder ({encoder}) in {t_load:.1f} s")

    eng = Engine(data)
    out(f"\n$ vecdex index {SAMPLE} --data {data} --collection sample")
    report = ingest(eng, SAMPLE, "sample", encoder="default", index="hnsw", overwrite=True)
    out(report.summary())
    col = eng.open_collection("sample")

    q = queries[0]
    t0 = time.perf_counter()
    hits = col.search(q["text"], k=3)
    t_one = time.perf_counter() - t0
    out(f'\n$ vecdex search --data {data} --collection sample "{q["text"]}" -k 3')
    for hit in hits:
        rel = "  <- relevant" if hit.id in qrels.get(q["_id"], {}) else ""
        out(f"  {hit.score:.3f}  {hit.id:>9}  {hit.payload['title'][:64]}{rel}")
    out(f"  (one query, encoded and searched: {t_one * 1e3:.1f} ms)")
    where = {"title": {"$gte": "M"}}
    out(f"same query, where={where}:")
    for hit in col.search(q["text"], k=3, where=where):
        out(f"  {hit.score:.3f}  {hit.id:>9}  {hit.payload['title'][:64]}")

    texts = [x["text"] for x in queries]
    t0 = time.perf_counter()
    q_vecs = encoder.encode_queries(texts)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = col.search_batch(q_vecs, k=10)
    t_search = time.perf_counter() - t0
    # The exact oracle over the same stored vectors.
    ids = col.ids()
    if "sample-exact" in eng.list_collections():
        eng.drop_collection("sample-exact")
    exact = eng.create_collection("sample-exact", dim=col.dim, index="flat")
    exact.add(ids, np.stack([r.vector for r in col.get(ids) if r is not None]))
    oracle = exact.search_batch(q_vecs, k=10)
    recall = ix.recall_at_k(res.ids, oracle.ids, 10)
    run_ = {x["_id"]: list(row) for x, row in zip(queries, res.ids, strict=True)}
    ndcg = evaluate_run(run_, {k: v for k, v in qrels.items() if k in run_})["ndcg@10"]
    out(
        f"\nsearch_batch of {len(queries)} claims: encode {t_enc * 1e3:.0f} ms, search "
        f"{t_search * 1e3:.1f} ms; hnsw recall@10 vs exact {recall:.3f}; nDCG@10 {ndcg:.3f}"
    )
    by_mode = {"dense": ndcg}
    for mode in ("lexical", "hybrid"):
        t0 = time.perf_counter()
        r = col.search_batch(q_vecs if mode == "hybrid" else None, k=10, mode=mode, texts=texts)
        ms = (time.perf_counter() - t0) * 1e3
        run_m = {
            x["_id"]: [d for d in row if d is not None]
            for x, row in zip(queries, r.ids, strict=True)
        }
        by_mode[mode] = evaluate_run(run_m, {k: v for k, v in qrels.items() if k in run_m})[
            "ndcg@10"
        ]
        by_mode[f"{mode}_ms"] = ms
    out(
        f"$ vecdex search ... --mode lexical | hybrid: nDCG@10 dense {ndcg:.3f}, lexical (BM25) "
        f"{by_mode['lexical']:.3f}, hybrid ({col.fusion.method}) {by_mode['hybrid']:.3f}"
    )
    eng.close()

    reopened = Engine(data).open_collection("sample")
    same = bool((reopened.search_batch(q_vecs, k=10).ids == res.ids).all())
    out(f"reopened from disk: {len(reopened)} documents, identical results: {same}")
    if tmp is not None:
        tmp.cleanup()
    return {
        "index_s": report.seconds,
        "docs_per_s": report.docs_per_s,
        "search_ms": t_search * 1e3,
        "recall_at_10": recall,
        "ndcg_at_10": ndcg,
        "lexical_ndcg_at_10": by_mode["lexical"],
        "hybrid_ndcg_at_10": by_mode["hybrid"],
        "reopen_identical": float(same),
    }
