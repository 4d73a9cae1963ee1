"""Label -> row bookkeeping shared by the indexes that keep their own rows."""

from __future__ import annotations

import numpy as np

from . import memory


class RowStore:
    """Growable float32 rows with labels, tombstones for removals, compaction when sparse.

    Labels usually arrive in increasing order (a collection numbers its items 0, 1, 2, ...):
    then a label's row is found by binary search over ``lab``, with no per-row Python objects.
    The first label out of order switches the store to a label -> row dict.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.x = np.empty((0, dim), dtype=np.float32)
        self.lab = np.empty(0, dtype=np.int64)
        self.alive = np.empty(0, dtype=bool)
        self.n = 0  # rows used (alive or dead)
        self.live_count = 0
        self.rows: dict[int, int] | None = None  # label -> row, once labels came out of order
        self.version = 0  # bumped on every change; lets callers cache derived state

    def __len__(self) -> int:
        return self.live_count

    def _find(self, labels: np.ndarray) -> np.ndarray:
        """The row of each label, -1 where it is absent (or dead)."""
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if self.rows is not None:
            get = self.rows.get
            return np.fromiter(
                (get(x, -1) for x in labels.tolist()), dtype=np.int64, count=labels.size
            )
        if self.n == 0:
            return np.full(labels.size, -1, dtype=np.int64)
        lab = self.lab[: self.n]
        idx = np.minimum(np.searchsorted(lab, labels), self.n - 1)
        ok = (lab[idx] == labels) & self.alive[idx]
        return np.where(ok, idx, -1)

    def contains(self, labels: np.ndarray) -> np.ndarray:
        return self._find(labels) >= 0

    def row_of(self, labels: np.ndarray) -> np.ndarray:
        """Rows of live labels; KeyError names the first one that is not stored."""
        rows = self._find(labels)
        if rows.size and rows.min() < 0:
            raise KeyError(int(np.asarray(labels).reshape(-1)[np.argmin(rows)]))
        return rows

    def live_labels(self) -> np.ndarray:
        return self.lab[: self.n][self.alive[: self.n]]

    def ram_bytes(self) -> tuple[int, int]:
        """RAM of ``(the used rows, their labels and tombstones)`` (see ``index.memory``)."""
        book = self.n * (self.lab.itemsize + self.alive.itemsize)
        if self.rows is not None:
            book += memory.int_container_ram(self.rows)
        return memory.array_ram(self.x, self.n), book

    def has_dead(self) -> bool:
        return self.live_count < self.n

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
        labels = np.asarray(labels, dtype=np.int64)
        need = self.n + x.shape[0]
        if need > self.x.shape[0]:
            self.reserve(max(need, 2 * self.x.shape[0], 1024))
        if self.rows is None and labels.size:
            after = self.n == 0 or labels[0] > self.lab[self.n - 1]
            if not (after and bool(np.all(labels[1:] > labels[:-1]))):
                self.rows = self._row_dict()
        self.x[self.n : need] = x
        self.lab[self.n : need] = labels
        self.alive[self.n : need] = True
        if self.rows is not None:
            self.rows.update(zip(labels.tolist(), range(self.n, need), strict=True))
        self.n = need
        self.live_count += labels.size
        self.version += 1

    def _row_dict(self) -> dict[int, int]:
        rows = np.flatnonzero(self.alive[: self.n])
        return dict(zip(self.lab[rows].tolist(), rows.tolist(), strict=True))

    def remove(self, labels: np.ndarray) -> None:
        labels = np.unique(np.asarray(labels, dtype=np.int64))
        rows = self.row_of(labels)
        self.alive[rows] = False
        if self.rows is not None:
            for lab in labels.tolist():
                del self.rows[lab]
        self.live_count -= labels.size
        self.version += 1
        dead = self.n - self.live_count
        if dead > 1024 and dead > self.n // 4:
            self.compact()

    def compact(self) -> None:
        keep = self.alive[: self.n]
        self._install(np.ascontiguousarray(self.x[: self.n][keep]), self.lab[: self.n][keep].copy())

    def _install(self, x: np.ndarray, labels: np.ndarray) -> None:
        self.x, self.lab = x, labels
        self.n = self.live_count = labels.shape[0]
        self.alive = np.ones(self.n, dtype=bool)
        increasing = bool(np.all(labels[1:] > labels[:-1]))
        self.rows = None if increasing else dict(zip(labels.tolist(), range(self.n), strict=True))
        self.version += 1

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, labels) of live rows, compacted."""
        if self.has_dead():
            self.compact()
        return self.x[: self.n], self.lab[: self.n]

    def load(self, x: np.ndarray, labels: np.ndarray) -> None:
        self._install(
            np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(labels, dtype=np.int64)
        )
