"""Label -> row bookkeeping shared by the indexes that keep their own rows."""

from __future__ import annotations

import numpy as np


class RowStore:
    """Growable float32 rows with labels, tombstones for removals, compaction when sparse."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.x = np.empty((0, dim), dtype=np.float32)
        self.lab = np.empty(0, dtype=np.int64)
        self.alive = np.empty(0, dtype=bool)
        self.n = 0  # rows used (alive or dead)
        self.rows: dict[int, int] = {}
        self.version = 0  # bumped on every change; lets callers cache derived state

    def __len__(self) -> int:
        return len(self.rows)

    def contains(self, labels: np.ndarray) -> np.ndarray:
        get = self.rows.__contains__
        return np.fromiter(map(get, labels.tolist()), dtype=bool, count=len(labels))

    def row_of(self, labels: np.ndarray) -> np.ndarray:
        get = self.rows.__getitem__
        return np.fromiter(map(get, labels.tolist()), dtype=np.int64, count=len(labels))

    def live_labels(self) -> np.ndarray:
        return self.lab[: self.n][self.alive[: self.n]]

    def has_dead(self) -> bool:
        return len(self.rows) < self.n

    def reserve(self, rows: int) -> None:
        """Makes room for ``rows`` rows in all, so appends up to that size copy nothing."""
        if rows <= self.x.shape[0]:
            return
        # np.empty: capacity not yet written takes no memory (pages are touched on write).
        for name in ("x", "lab", "alive"):
            old = getattr(self, name)
            new = np.empty((rows, *old.shape[1:]), dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def append(self, x: np.ndarray, labels: np.ndarray) -> None:
        need = self.n + x.shape[0]
        if need > self.x.shape[0]:
            self.reserve(max(need, 2 * self.x.shape[0], 1024))
        self.x[self.n : need] = x
        self.lab[self.n : need] = labels
        self.alive[self.n : need] = True
        self.rows.update(zip(labels.tolist(), range(self.n, need), strict=True))
        self.n = need
        self.version += 1

    def remove(self, labels: np.ndarray) -> None:
        rows = self.row_of(labels)
        self.alive[rows] = False
        for lab in labels.tolist():
            del self.rows[lab]
        self.version += 1
        dead = self.n - len(self.rows)
        if dead > 1024 and dead > self.n // 4:
            self.compact()

    def compact(self) -> None:
        keep = self.alive[: self.n]
        self.x = np.ascontiguousarray(self.x[: self.n][keep])
        self.lab = self.lab[: self.n][keep].copy()
        self.n = self.lab.shape[0]
        self.alive = np.ones(self.n, dtype=bool)
        self.rows = dict(zip(self.lab.tolist(), range(self.n), strict=True))
        self.version += 1

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, labels) of live rows, compacted."""
        if self.has_dead():
            self.compact()
        return self.x[: self.n], self.lab[: self.n]

    def load(self, x: np.ndarray, labels: np.ndarray) -> None:
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.lab = np.ascontiguousarray(labels, dtype=np.int64)
        self.n = self.lab.shape[0]
        self.alive = np.ones(self.n, dtype=bool)
        self.rows = dict(zip(self.lab.tolist(), range(self.n), strict=True))
        self.version += 1
