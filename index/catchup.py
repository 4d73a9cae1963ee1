"""Catching up: an index that answers exactly while rows wait to enter its graph.

Replaying a full write-ahead log into an HNSW graph runs at insertion speed (a minute or more for
a 64 MiB log). ``CatchUpIndex`` wraps the checkpointed index instead: rows added to it wait in a
flat store of prepared vectors, searched exactly and merged with the inner index's results,
while ``move`` inserts them into the inner index in moderate batches (all cores; the inner
index's lock is released between batches, so a search waits at most one batch), as Qdrant
serves an unindexed segment beside indexed ones. Once nothing waits, the owner puts the inner
index back in its place (``engine.catchup``).

Consistency without a lock on the search path: rows only move forward, and ``_moved`` (rows
``[0, _moved)`` are in the inner index) advances after their insertion. A search reads
``_moved`` first, then searches the inner index, then the rows from that snapshot on exactly: a
row is found by one of the two at least, and one found by both is reported once.

Threads: ``add`` and ``remove`` (writers, which hold searches off) and ``move`` (the catch-up
thread, or a checkpoint finishing the work) serialise on ``_move_lock``; searches take neither.
Only writers grow the inner graph (``HNSWIndex.make_room``): a resize moves the graph's memory,
which must not happen under a running search, while ``move`` adds with searches running.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from . import memory
from .base import Index, best_k
from .hnsw import HNSWIndex
from .metric import Metric
from .validate import allowed_array, check_k

_MIN_ROWS = 1024
# Bytes one block of scores may take in ``exact_topk`` (bounds the memory of a search).
BLOCK_BYTES = 64 << 20


def merge_unique(
    parts: list[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several ``(scores, labels)`` results per query (``index.base.merge_topk``)
    where a label may appear in several parts: each label is kept once, at its best score."""
    scores = np.concatenate([p[0] for p in parts], axis=1)
    labels = np.concatenate([p[1] for p in parts], axis=1)
    # Per row, by label and then best score first: a repeat of the label before it is dropped.
    order = np.lexsort((-scores, labels))
    lab = np.take_along_axis(labels, order, 1)
    dup = np.zeros(lab.shape, dtype=bool)
    dup[:, 1:] = (lab[:, 1:] == lab[:, :-1]) & (lab[:, 1:] >= 0)
    if dup.any():
        rows, cols = np.nonzero(dup)
        pos = order[rows, cols]
        scores = scores.copy()
        labels = labels.copy()
        scores[rows, pos] = -np.inf
        labels[rows, pos] = -1
    return best_k(scores, labels, k)


def exact_topk(
    q: np.ndarray,
    x: np.ndarray,
    k: int,
    metric: Metric,
    valid: np.ndarray,
    sq: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of prepared queries against the rows of ``x`` where ``valid``: ``(scores,
    rows)`` (m, k), -inf / -1 padded. numpy BLAS, not the torch kernels of ``index.scoring``:
    a process serving an HNSW collection never imports torch otherwise, and its import (seconds)
    would delay the first answer after a crash."""
    m, n = q.shape[0], x.shape[0]
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    out_r = np.full((m, k), -1, dtype=np.int64)
    kk = min(k, n)
    step = max(1, BLOCK_BYTES // max(1, 4 * n))
    dead = ~valid
    for a in range(0, m, step):
        qa = q[a : a + step]
        s = qa @ x.T
        if metric is Metric.L2:
            assert sq is not None
            s = 2.0 * s - np.einsum("ij,ij->i", qa, qa)[:, None] - sq[None, :]
        s[:, dead] = -np.inf
        if kk < n:
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(n), s.shape)
        ps = np.take_along_axis(s, part, 1)
        order = np.argsort(-ps, axis=1, kind="stable")
        ps = np.take_along_axis(ps, order, 1)
        pr = np.take_along_axis(part, order, 1)
        ok = np.isfinite(ps)
        out_s[a : a + step, :kk] = np.where(ok, ps, -np.inf)
        out_r[a : a + step, :kk] = np.where(ok, pr, -1)
    return out_s, out_r


class CatchUpIndex(Index):
    """``inner`` plus rows not in it yet, searched exactly (see the module docstring).

    Labels must arrive in increasing order (a collection numbers its items so).

    Args:
        inner: the index the rows go into (an ``HNSWIndex``).
    """

    kind = "catchup"

    def __init__(self, inner: HNSWIndex) -> None:
        super().__init__(inner.dim, inner.metric)
        self.inner = inner
        self.search_keys = inner.search_keys
        self._move_lock = threading.Lock()
        self._x = np.empty((0, inner.dim), dtype=np.float32)  # prepared rows, with capacity
        self._lab = np.empty(0, dtype=np.int64)
        self._alive = np.empty(0, dtype=bool)  # live in the collection, moved or not
        self._n = 0
        self._moved = 0  # rows [0, _moved) are in ``inner``
        self._waiting = 0  # live rows in [_moved, _n)
        self._version = 0  # bumped when rows are appended (the scoring-tensor cache's key)
        self._norms: tuple[int, np.ndarray] | None = None  # L2: rows' squared norms

    # ---- what the wrapper is -----------------------------------------------------------------
    @property
    def spec(self) -> str:
        return self.inner.spec

    def get_config(self) -> dict[str, Any]:
        return self.inner.get_config()

    @property
    def waiting(self) -> int:
        """Live rows not in the inner index yet."""
        return self._waiting

    def __len__(self) -> int:
        return len(self.inner) + self._waiting

    def _rows(self, labels: np.ndarray) -> np.ndarray:
        """The row of each label among the waiting store's live rows, -1 where absent."""
        n = self._n
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if n == 0:
            return np.full(labels.size, -1, dtype=np.int64)
        lab = self._lab[:n]
        idx = np.minimum(np.searchsorted(lab, labels), n - 1)
        return np.where((lab[idx] == labels) & self._alive[idx], idx, -1)

    def contains(self, labels: np.ndarray) -> np.ndarray:
        return (self._rows(labels) >= 0) | self.inner.contains(labels)

    def labels(self) -> np.ndarray:
        n = self._n
        return np.union1d(self.inner.labels(), self._lab[:n][self._alive[:n]])

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        rows = self._rows(labels)
        out = np.empty((labels.size, self.dim), dtype=np.float32)
        here = rows >= 0
        out[here] = self._x[rows[here]]
        if not here.all():
            out[~here] = self.inner.vectors(labels[~here])
        return out

    def reserve(self, n: int) -> None:
        self.inner.reserve(n)

    # ---- writes (callers hold searches off) --------------------------------------------------
    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        with self._move_lock:
            n, m = self._n, labels.shape[0]
            if m and not (
                (n == 0 or labels[0] > self._lab[n - 1]) and bool(np.all(labels[1:] > labels[:-1]))
            ):
                raise ValueError("a catching-up index takes labels in increasing order")
            if n + m > self._lab.shape[0]:
                cap = max(n + m, 2 * self._lab.shape[0], _MIN_ROWS)
                grown = np.empty((cap, self.dim), dtype=np.float32)
                grown[:n] = self._x[:n]
                lab = np.empty(cap, dtype=np.int64)
                lab[:n] = self._lab[:n]
                alive = np.zeros(cap, dtype=bool)
                alive[:n] = self._alive[:n]
                self._x, self._lab, self._alive = grown, lab, alive
            self._x[n : n + m] = x
            self._lab[n : n + m] = labels
            self._alive[n : n + m] = True
            self._n = n + m
            self._waiting += m
            self._version += 1
            # Room in the graph for every waiting row now, while no search runs.
            self.inner.make_room(self._waiting)

    def _remove(self, labels: np.ndarray) -> None:
        with self._move_lock:
            rows = self._rows(labels)
            rows = rows[rows >= 0]
            self._alive[rows] = False
            self._waiting -= int((rows >= self._moved).sum())
            self.inner.remove(labels)  # those it holds (moved here, or checkpointed)

    # ---- catching up (no search is held off) -------------------------------------------------
    def move(self, rows: int) -> int:
        """Inserts up to ``rows`` waiting rows into the inner index; returns how many rows
        were passed (0: none waits)."""
        with self._move_lock:
            a = self._moved
            b = min(self._n, a + max(1, int(rows)))
            if a == b:
                return 0
            keep = self._alive[a:b]
            if keep.any():
                # No resize here (``make_room`` made it): searches run meanwhile.
                self.inner._add(self._x[a:b][keep], self._lab[a:b][keep])
            self._moved = b
            self._waiting -= int(keep.sum())
            return b - a

    def finish(self, rows: int = 4096) -> None:
        """Moves every waiting row into the inner index (searches go on between batches)."""
        while self.move(rows):
            pass

    # ---- search ------------------------------------------------------------------------------
    def search(
        self, queries: Any, k: int, *, allowed: Any = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """The inner index's results merged with exact search over the waiting rows (see
        ``Index.search``)."""
        start = self._moved  # first: a row moved after this is searched exactly too
        found = self.inner.search(queries, k, allowed=allowed, **params)
        if self._waiting == 0 and start == self._moved:
            return found
        batch, _ = self._check_batch(queries, "queries")
        q = self._prepare_batch(batch)
        waiting = self._search_waiting(q, check_k(k), allowed_array(allowed), start)
        if waiting is None:
            return found
        return merge_unique([found, waiting], k)

    def search_checked(
        self, batch: Any, m: int, k: int, allowed: Any, params: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The lean path's entry (``Index.search_checked``): the same merge as ``search`` (the
        query is checked again, only while catching up)."""
        return self.search(batch, k, allowed=allowed, **params)

    def _search_waiting(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, start: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        n = self._n
        valid = self._alive[start:n]
        if allowed is not None:
            rows = self._rows(allowed)
            rows = rows[rows >= start] - start
            valid = np.zeros(n - start, dtype=bool)
            valid[rows] = self._alive[start:n][rows]
        if not valid.any():
            return None
        sq = self._sq_norms(n)
        scores, rows = exact_topk(
            q, self._x[start:n], k, self.metric, valid, sq[start:n] if sq is not None else None
        )
        lab = self._lab[start:n]
        return scores, np.where(rows >= 0, lab[np.maximum(rows, 0)], -1)

    def _sq_norms(self, n: int) -> np.ndarray | None:
        """Squared norms of the rows [0, n) for L2, cached by version."""
        if self.metric is not Metric.L2:
            return None
        cached = self._norms
        if cached is not None and cached[0] == self._version and cached[1].shape[0] >= n:
            return cached[1]
        x = self._x[:n]
        sq = np.einsum("ij,ij->i", x, x)
        self._norms = (self._version, sq)
        return sq

    # ---- accounting and persistence ----------------------------------------------------------
    def _ram_parts(self) -> dict[str, int]:
        """The inner index's parts, and ``unindexed``: the rows waiting (vectors and labels)."""
        n = self._n
        waiting = self._x[:n].nbytes + self._lab[:n].nbytes + self._alive[:n].nbytes
        return {**self.inner._ram_parts(), "unindexed": waiting}

    def memory_usage(self, directory: str | Path | None = None) -> memory.Parts:
        where = Path(directory) if directory is not None else None
        return memory.combine(self._ram_parts(), memory.disk_parts(where, self.inner._file_part))

    def save(self, directory: str | Path) -> None:
        """Finishes catching up, then saves the inner index (which is what loads back)."""
        self.finish()
        self.inner.save(directory)

    def _search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError("CatchUpIndex.search merges the inner index's results")

    def _save_files(self, directory: Path) -> list[str]:
        raise NotImplementedError("CatchUpIndex.save saves the inner index")

    def _load_files(self, directory: Path, manifest: dict[str, Any]) -> None:
        raise NotImplementedError("a CatchUpIndex is never saved: its inner index is")
