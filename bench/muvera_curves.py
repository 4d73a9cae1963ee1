"""MUVERA benchmark, measurement: recall@10 against exhaustive Chamfer as a function of the
candidate count, from candidate lists (an exact rerank keeps every true top-10 document that is a
candidate), for MUVERA and for the token-level heuristic; per-query latency under a thread limit."""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .common import timed
from .muvera_data import CURVE_POINTS, TARGETS


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Limits torch, faiss (OpenMP) and BLAS to ``n`` threads for the block."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    old_t, old_f = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(old_t)
        faiss.omp_set_num_threads(old_f)


def latency(
    search: Callable[[list[np.ndarray]], Any], queries: Sequence[np.ndarray], n: int, n_threads: int
) -> dict[str, Any]:
    """Per-query latency of one query per call (after one warm-up call), under ``n_threads``."""
    n = max(1, min(n, len(queries)))
    with threads(n_threads):
        search([queries[0]])
        times = []
        for q in queries[:n]:
            _, dt = timed(lambda q=q: search([q]))
            times.append(1000.0 * dt)
    times.sort()
    return {
        "threads": n_threads,
        "queries": n,
        "median_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[min(n - 1, int(0.9 * n))], 3),
        "min_ms": round(times[0], 3),
        "load_average": round(os.getloadavg()[0], 2),
    }


# ---- recall from candidate lists -------------------------------------------------------------
def gt_positions(cand: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(m, K) rank of each exhaustive top-K label among the query's candidates (best first);
    a large value where it is not a candidate."""
    big = np.iinfo(np.int64).max
    pos = np.full(gt.shape, big, dtype=np.int64)
    for i in range(gt.shape[0]):
        row = cand[i]
        where = {int(lab): j for j, lab in enumerate(row.tolist()) if lab >= 0}
        pos[i] = [where.get(int(g), big) for g in gt[i].tolist()]
    return pos


def dense_recall(pos: np.ndarray, cmax: int) -> np.ndarray:
    """recall[c - 1] for c = 1 .. cmax candidates."""
    hits = np.bincount(pos[pos < cmax].ravel(), minlength=cmax)
    return np.cumsum(hits) / pos.size


def needed(recalls: np.ndarray, target: float) -> int | None:
    """Fewest candidates (1-based) whose recall reaches ``target``; None if never."""
    ok = np.flatnonzero(recalls >= target - 1e-12)
    return int(ok[0]) + 1 if ok.size else None


def muvera_curve(pos: np.ndarray, cmax: int) -> dict[str, Any]:
    dense = dense_recall(pos, cmax)
    return {
        "recall_at_candidates": {
            str(c): round(float(dense[c - 1]), 4) for c in CURVE_POINTS if c <= cmax
        },
        "candidates_for_recall": {str(t): needed(dense, t) for t in (0.8, *TARGETS, 0.99)},
        "dense": [round(float(v), 4) for v in dense],
    }


def heuristic_first_rank(
    token_docs: np.ndarray, q_off: np.ndarray, n_queries: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: (documents, first rank at which any query token fetched them), from the
    (query tokens, kmax) document of each token neighbour, best first."""
    out = []
    kmax = token_docs.shape[1]
    for i in range(n_queries):
        block = token_docs[q_off[i] : q_off[i + 1]]
        ranks = np.broadcast_to(np.arange(kmax), block.shape).ravel()
        docs = block.ravel()
        ok = docs >= 0
        docs, ranks = docs[ok], ranks[ok]
        order = np.lexsort((ranks, docs))
        docs, ranks = docs[order], ranks[order]
        first = np.r_[True, docs[1:] != docs[:-1]]
        out.append((docs[first], ranks[first]))
    return out


def heuristic_curve(
    first: list[tuple[np.ndarray, np.ndarray]], gt: np.ndarray, kmax: int
) -> dict[str, Any]:
    """Recall@10 and mean union size (candidates) for every k_tokens = 1 .. kmax."""
    m = len(first)
    sizes = np.zeros((m, kmax))
    hits = np.zeros((m, kmax))
    for i, (docs, ranks) in enumerate(first):
        sizes[i] = np.cumsum(np.bincount(ranks, minlength=kmax))[:kmax]
        in_gt = np.isin(docs, gt[i])
        hits[i] = np.cumsum(np.bincount(ranks[in_gt], minlength=kmax))[:kmax]
    cand = sizes.mean(0)
    rec = hits.sum(0) / gt.size
    points = {
        str(k): {"candidates": round(float(cand[k - 1]), 1), "recall": round(float(rec[k - 1]), 4)}
        for k in (1, 2, 4, 8, 16, 32, 64, 128, 256)
        if k <= kmax
    }
    need: dict[str, Any] = {}
    for t in (0.8, *TARGETS, 0.99):
        ok = np.flatnonzero(rec >= t - 1e-12)
        if not ok.size:
            need[str(t)] = None
            continue
        j = int(ok[0])
        # Candidates interpolated linearly between k_tokens = j and j + 1 (1-based).
        if j == 0:
            c = float(cand[0])
        else:
            r0, r1, c0, c1 = rec[j - 1], rec[j], cand[j - 1], cand[j]
            c = float(c0 + (c1 - c0) * (t - r0) / max(r1 - r0, 1e-12))
        need[str(t)] = {"k_tokens": j + 1, "candidates": round(float(cand[j]), 1), "interp": c}
    return {
        "by_k_tokens": points,
        "candidates_for_recall": need,
        "dense_candidates": [round(float(v), 2) for v in cand],
        "dense_recall": [round(float(v), 4) for v in rec],
    }


def ratio(heur: dict[str, Any], muv: dict[str, Any], cmax: int) -> dict[str, Any]:
    """Heuristic candidates / MUVERA candidates at equal recall; where MUVERA does not reach
    the recall within ``cmax`` candidates, an upper bound ``"<x"`` (heuristic / cmax)."""
    out: dict[str, Any] = {}
    for t in TARGETS:
        h = heur["candidates_for_recall"].get(str(t))
        m = muv["candidates_for_recall"].get(str(t))
        if h and m:
            out[str(t)] = round(h["interp"] / m, 2)
        elif h:
            out[str(t)] = f"<{h['interp'] / cmax:.2f}"
        else:
            out[str(t)] = None
    return out


def heuristic_tokens(tok: Any, q: np.ndarray, q_off: np.ndarray, n_doc_offsets: np.ndarray, kmax):
    """Exact token top-kmax through the TokenANNIndex's own inner flat index (one search for
    every k_tokens), each token neighbour mapped to its document (tokens were added in one call,
    so token ids are global token rows)."""
    _, ids = tok._inner.search(np.ascontiguousarray(q, dtype=np.float32), kmax)
    docs = np.searchsorted(n_doc_offsets, np.maximum(ids, 0), side="right") - 1
    return np.where(ids >= 0, docs, -1)
