"""Label -> row bookkeeping shared by the indexes that keep their own rows."""

from __future__ import annotations

import mmap
import os
import weakref
from collections.abc import Iterator

import numpy as np

from . import memory, storage

# Rows copied at once when a store writes itself out (bounded memory for mapped stores).
SAVE_CHUNK_BYTES = 64 << 20
# At most this many rows of a mapped base are read with pread (see ``RowStore.take``); more go
# through the map, whose pages are dropped from the resident set afterwards.
PREAD_MAX_ROWS = 4096


class RowStore:
    """float32 rows with labels, tombstones for removals, compaction when sparse.

    The rows live in two segments: a *base* (rows ``[0, nb)``), which after ``save`` or ``load``
    of a memory-mapped array is a read-only map of a ``.npy`` file, served through the page cache;
    and a *tail* in RAM (rows ``[nb, n)``) for rows appended since. So a store that was saved or
    loaded holds in RAM only what was written after, plus 9 bytes per row of labels and
    tombstones. Removed base rows stay tombstoned until the next ``save`` rewrites the file;
    compaction only ever moves tail rows, never pulling the mapped base into RAM.

    Labels usually arrive in increasing order (a collection numbers its items 0, 1, 2, ...):
    then a label's row is found by binary search over ``lab``, with no per-row Python objects.
    The first label out of order switches the store to a label -> row dict.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.base = np.empty((0, dim), dtype=np.float32)  # rows [0, nb); may be a memory map
        self._file: tuple[int, int] | None = None  # (fd, data offset) of a mapped base's file
        self.tail = np.empty((0, dim), dtype=np.float32)  # rows [nb, n) in RAM, with capacity
        self.nb = 0
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

    def take(self, rows: np.ndarray) -> np.ndarray:
        """A float32 copy of the given rows (from either segment), in that order.

        A few rows of a mapped base (a rescore's candidates) are read from the file with
        ``pread`` rather than through the map: a page fault on a map maps the neighbouring
        cached pages too (the kernel's fault-around), so scattered reads through it would make
        most of a large file resident in the process after a few thousand queries."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        in_base = rows < self.nb
        if in_base.all():
            self._take_base(rows, out)
        else:
            part = np.empty((int(in_base.sum()), self.dim), dtype=np.float32)
            self._take_base(rows[in_base], part)
            out[in_base] = part
            out[~in_base] = self.tail[rows[~in_base] - self.nb]
        return out

    def _take_base(self, rows: np.ndarray, out: np.ndarray) -> None:
        if rows.size == 0:
            return
        if self._file is None:
            out[:] = self.base[rows]
            return
        if rows.size > PREAD_MAX_ROWS:  # many rows: through the map, then let its pages go
            out[:] = self.base[rows]
            memory.drop_pages(self.base)
            return
        fd, offset = self._file
        row_bytes = 4 * self.dim
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        buf = np.empty_like(out)
        # Runs of consecutive rows: one read each.
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        for a, b in zip(np.r_[0, breaks].tolist(), np.r_[breaks, rows.size].tolist(), strict=True):
            view = buf[a:b].data.cast("B")
            got = os.preadv(fd, [view], offset + int(sorted_rows[a]) * row_bytes)
            if got != view.nbytes:
                raise storage.CorruptFileError(
                    getattr(self.base, "filename", None) or "vectors",
                    f"short read ({got} of {view.nbytes} bytes)",
                )
        out[order] = buf

    def get(self, labels: np.ndarray) -> np.ndarray:
        """A float32 copy of the rows of live labels (KeyError names an absent one)."""
        return self.take(self.row_of(labels))

    def segments(self) -> list[tuple[int, np.ndarray]]:
        """``(first row, rows)`` of each non-empty segment: the base, then the tail (views,
        dead rows included: check ``alive``)."""
        out = [(0, self.base[: self.nb])] if self.nb else []
        if self.n > self.nb:
            out.append((self.nb, self.tail[: self.n - self.nb]))
        return out

    def mapped(self) -> bool:
        """Whether the base segment is a memory map of a file."""
        return self.nb > 0 and memory.is_mapped(self.base)

    def ram_bytes(self) -> tuple[int, int]:
        """RAM of ``(the used rows, their labels and tombstones)``: a mapped base counts 0 (see
        ``index.memory``)."""
        book = self.n * (self.lab.itemsize + self.alive.itemsize)
        if self.rows is not None:
            book += memory.int_container_ram(self.rows)
        rows = memory.array_ram(self.base, self.nb) + memory.array_ram(self.tail, self.n - self.nb)
        return rows, book

    def has_dead(self) -> bool:
        return self.live_count < self.n

    def reserve(self, rows: int) -> None:
        """Makes room for ``rows`` rows in all, so appends up to that size copy nothing."""
        if rows > self.lab.shape[0]:
            # np.empty: capacity not yet written takes no memory (pages are touched on write).
            for name in ("lab", "alive"):
                old = getattr(self, name)
                new = np.empty(rows, dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        cap = rows - self.nb
        if cap > self.tail.shape[0]:
            used = self.n - self.nb
            new = np.empty((cap, self.dim), dtype=np.float32)
            new[:used] = self.tail[:used]
            self.tail = new

    def append(self, x: np.ndarray, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        need = self.n + x.shape[0]
        if need > min(self.lab.shape[0], self.nb + self.tail.shape[0]):
            self.reserve(max(need, self.n + (self.n - self.nb) + 1024))
        if self.rows is None and labels.size:
            after = self.n == 0 or labels[0] > self.lab[self.n - 1]
            if not (after and bool(np.all(labels[1:] > labels[:-1]))):
                self.rows = self._row_dict()
        self.tail[self.n - self.nb : need - self.nb] = x
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
        tail_dead = (self.n - self.nb) - int(self.alive[self.nb : self.n].sum())
        if tail_dead > 1024 and tail_dead > (self.n - self.nb) // 4:
            self.compact()

    def compact(self) -> None:
        """Drops dead tail rows (and, when there is no mapped base, dead base rows: an
        in-RAM store keeps everything in one segment)."""
        if self.nb and not self.mapped():
            self._merge_base_into_tail()
        keep = self.alive[self.nb : self.n]
        kept = int(keep.sum())
        tail = np.ascontiguousarray(self.tail[: self.n - self.nb][keep])
        lab = np.concatenate([self.lab[: self.nb], self.lab[self.nb : self.n][keep]])
        alive = np.concatenate([self.alive[: self.nb], np.ones(kept, dtype=bool)])
        self.tail, self.lab, self.alive = tail, lab, alive
        self.n = self.nb + kept
        self._reindex()

    def _merge_base_into_tail(self) -> None:
        """An in-RAM base becomes part of the tail (one segment again)."""
        used = self.n - self.nb
        self.tail = np.concatenate([self.base[: self.nb], self.tail[:used]])
        self.base = np.empty((0, self.dim), dtype=np.float32)
        self.nb = 0

    def _reindex(self) -> None:
        lab = self.lab[: self.n]
        live = lab[self.alive[: self.n]]
        increasing = bool(np.all(lab[1:] > lab[:-1]))
        self.rows = None if increasing else self._row_dict()
        self.live_count = int(live.size)
        self.version += 1

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors, labels)`` of live rows in row order, as one array (a copy where the
        rows span segments or some are dead; meant for small stores, see ``save``)."""
        if self.nb == 0 and not self.has_dead():
            return self.tail[: self.n], self.lab[: self.n]
        keep = self.alive[: self.n]
        parts = [rows[keep[start : start + len(rows)]] for start, rows in self.segments()]
        x = np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)
        return x, self.lab[: self.n][keep].copy()

    def _live_chunks(self) -> Iterator[np.ndarray]:
        """The live rows in row order, in chunks of at most ``SAVE_CHUNK_BYTES``."""
        step = max(1, SAVE_CHUNK_BYTES // max(1, 4 * self.dim))
        for start, rows in self.segments():
            for a in range(0, len(rows), step):
                keep = self.alive[start + a : start + min(len(rows), a + step)]
                chunk = rows[a : a + step]
                yield chunk if keep.all() else chunk[keep]
                # A mapped chunk, once written, leaves the resident set (the page cache keeps
                # it): rewriting a large base does not pull the whole file into the process.
                memory.drop_pages(chunk)

    def write(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Writes the live rows to ``path`` (``.npy``, through a temp name, fsynced) in chunks,
        changing nothing in the store (readers may go on). Returns their labels in row order."""
        labels = self.live_labels().copy()
        storage.replace_npy_chunks(path, (labels.size, self.dim), np.float32, self._live_chunks())
        return labels

    def remap(self, path: str | os.PathLike[str], labels: np.ndarray) -> None:
        """Serves the rows from ``path``, which ``write`` just wrote with these ``labels``
        (nothing may have changed since), as a read-only memory map: RAM then holds only rows
        appended later."""
        self.load(storage.load_npy(path, np.float32, 2, mmap=True), labels)

    def save(self, path: str | os.PathLike[str]) -> np.ndarray:
        """``write``, then ``remap``: the store is served from the file it wrote. Returns the
        labels in row order (the caller stores them beside)."""
        labels = self.write(path)
        self.remap(path, labels)
        return labels

    def load(self, x: np.ndarray, labels: np.ndarray) -> None:
        """Takes ``x`` (n, dim) and its labels as the whole store: a memory map stays mapped
        (the base), any other array is copied into RAM."""
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        self._file = None
        if memory.is_mapped(x):
            self._file = _open_for_reads(x)
            self.base, self.nb = x, x.shape[0]
            self.tail = np.empty((0, self.dim), dtype=np.float32)
        else:
            self.base, self.nb = np.empty((0, self.dim), dtype=np.float32), 0
            self.tail = np.array(x, dtype=np.float32, order="C")
        self.lab = labels
        self.alive = np.ones(labels.shape[0], dtype=bool)
        self.n = labels.shape[0]
        self._reindex()


class LabelSet:
    """A set of non-negative int64 labels as a bitmap by label (one byte each): a collection's
    labels are dense (0, 1, 2, ...), where a Python set would cost ~60 bytes a label. Labels far
    beyond the set's size (a standalone index given arbitrary ids) switch it to a Python set."""

    def __init__(self) -> None:
        self._bits = np.zeros(0, dtype=bool)
        self._set: set[int] | None = None
        self._count = 0

    def __len__(self) -> int:
        return self._count if self._set is None else len(self._set)

    def _dense_enough(self, top: int) -> bool:
        return top < max(1 << 20, 8 * (len(self) + 1))

    def add(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if not labels.size:
            return
        if self._set is None and not self._dense_enough(int(labels.max())):
            self._set = set(self.array().tolist())
        if self._set is not None:
            self._set.update(labels.tolist())
            return
        top = int(labels.max()) + 1
        if top > self._bits.size:
            grown = np.zeros(max(top, 2 * self._bits.size, 1024), dtype=bool)
            grown[: self._bits.size] = self._bits
            self._bits = grown
        fresh = np.unique(labels[~self._bits[labels]])
        self._bits[fresh] = True
        self._count += int(fresh.size)

    def discard(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if self._set is not None:
            self._set.difference_update(labels.tolist())
            return
        labels = labels[(labels >= 0) & (labels < self._bits.size)]
        gone = np.unique(labels[self._bits[labels]])
        self._bits[gone] = False
        self._count -= int(gone.size)

    def contains(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if self._set is not None:
            get = self._set.__contains__
            return np.fromiter(map(get, labels.tolist()), dtype=bool, count=labels.size)
        inside = (labels >= 0) & (labels < self._bits.size)
        out = np.zeros(labels.size, dtype=bool)
        out[inside] = self._bits[labels[inside]]
        return out

    def __contains__(self, label: int) -> bool:
        return bool(self.contains(np.array([label]))[0])

    def array(self) -> np.ndarray:
        """The labels, increasing (int64)."""
        if self._set is not None:
            return np.array(sorted(self._set), dtype=np.int64)
        return np.flatnonzero(self._bits).astype(np.int64)

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def ram_bytes(self) -> int:
        if self._set is not None:
            return memory.int_container_ram(self._set)
        return int(self._bits.nbytes)


def _open_for_reads(x: np.ndarray) -> tuple[int, int] | None:
    """``(fd, byte offset of row 0)`` of the file under a memory-mapped C-contiguous array, the
    fd closed when the array is collected; None where that cannot be known."""
    # Only a map made by np.load / np.memmap itself (its base is the mmap object): a view's
    # ``offset`` is its parent's.
    if not (isinstance(x, np.memmap) and isinstance(x.base, mmap.mmap) and x.filename):
        return None
    if not x.flags.c_contiguous or x.dtype != np.float32:
        return None
    try:
        fd = os.open(x.filename, os.O_RDONLY)
    except OSError:
        return None
    weakref.finalize(x, os.close, fd)
    return fd, int(x.offset)
