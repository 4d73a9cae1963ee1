"""The quickstart job behind ``make demo`` / ``vecdex demo``: index a corpus, search it, reopen it.

Until the encoders land, texts become vectors by feature hashing (a lexical bag of words with
TF-IDF weights): real vectors from real text, no model needed.
"""

from __future__ import annotations

import re
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import beir
from .engine import Engine

SAMPLE = Path(__file__).parent / "sample"
TOKEN = re.compile(r"[a-z0-9]+")


def hashed_tfidf(
    texts: list[str], dim: int = 1024, idf: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Feature-hashed TF-IDF vectors (n, dim), L2-normalised; returns (vectors, idf)."""
    tf = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for tok in TOKEN.findall(text.lower()):
            tf[i, zlib.crc32(tok.encode()) % dim] += 1.0
    if idf is None:
        df = (tf > 0).sum(0)
        idf = np.log((1 + len(texts)) / (1 + df)).astype(np.float32) + 1.0
    x = np.log1p(tf) * idf
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12), idf


def run(data: str | None = None, out: Callable[[str], None] = print) -> dict[str, float]:
    """Runs the demo; returns its measurements."""
    corpus = beir.read_jsonl(SAMPLE / "corpus.jsonl")
    queries = beir.read_jsonl(SAMPLE / "queries.jsonl")
    qrels = beir.read_qrels(SAMPLE / "qrels.tsv")
    tmp = None
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="vecdex-demo-")
        data = tmp.name
    out(f"vecdex demo: {len(corpus)} SciFact abstracts, {len(queries)} claims -> {data}")

    t0 = time.perf_counter()
    doc_vecs, idf = hashed_tfidf([beir.document_text(d) for d in corpus])
    q_vecs, _ = hashed_tfidf([q["text"] for q in queries], idf=idf)
    t_vec = time.perf_counter() - t0

    eng = Engine(data)
    for name in ("sample", "sample-exact"):
        if name in eng.list_collections():
            eng.drop_collection(name)
    ids = [d["_id"] for d in corpus]
    payloads = [{"title": d["title"], "words": len(d["text"].split())} for d in corpus]
    t0 = time.perf_counter()
    col = eng.create_collection("sample", dim=doc_vecs.shape[1], index="hnsw")
    col.add(ids, doc_vecs, payloads)
    t_index = time.perf_counter() - t0
    exact = eng.create_collection("sample-exact", dim=doc_vecs.shape[1], index="flat")
    exact.add(ids, doc_vecs, payloads)
    eng.close()
    out(
        f"indexed {len(col)} documents into hnsw in {t_index * 1e3:.1f} ms "
        f"(vectorised in {t_vec * 1e3:.0f} ms)"
    )

    q = queries[0]
    out(f"\nquery: {q['text']}")
    for hit in col.search(q_vecs[0], k=3):
        rel = "relevant" if hit.id in qrels.get(q["_id"], {}) else ""
        out(f"  {hit.score:.3f}  {hit.id:>9}  {hit.payload['title'][:70]}  {rel}")
    where = {"words": {"$gte": 250}}
    out(f"same query, where={where}:")
    for hit in col.search(q_vecs[0], k=3, where=where):
        out(
            f"  {hit.score:.3f}  {hit.id:>9}  words={hit.payload['words']}  "
            f"{hit.payload['title'][:55]}"
        )

    t0 = time.perf_counter()
    res = col.search_batch(q_vecs, k=10)
    t_search = time.perf_counter() - t0
    oracle = exact.search_batch(q_vecs, k=10)
    recall = float(
        np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.ids, oracle.ids, strict=True)])
    )
    found = float(
        np.mean(
            [
                any(doc in qrels.get(query["_id"], {}) for doc in row)
                for query, row in zip(queries, res.ids, strict=True)
            ]
        )
    )
    out(
        f"\nsearch_batch of {len(queries)} queries: {t_search * 1e3:.1f} ms; "
        f"hnsw recall@10 vs exact {recall:.3f}; "
        f"a relevant abstract in the top 10 for {found:.0%} of claims"
    )

    reopened = Engine(data).open_collection("sample")
    same = bool((reopened.search_batch(q_vecs, k=10).ids == res.ids).all())
    out(f"reopened from disk: {len(reopened)} documents, identical results: {same}")
    if tmp is not None:
        tmp.cleanup()
    return {
        "index_ms": t_index * 1e3,
        "search_ms": t_search * 1e3,
        "recall_at_10": recall,
        "reopen_identical": float(same),
    }
