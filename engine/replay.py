"""Replay: applies the log records found at open to a collection, in large batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from index import storage
from index.tokens import offsets_of

from . import wal


class Target(Protocol):
    """What replay writes to: ``Collection.replay`` (the replayer's entry point)."""

    dim: int
    multi_vector: bool

    def replay(
        self,
        kind: int,
        ids: Sequence[str] = (),
        vectors: np.ndarray | None = None,
        payloads: list[dict[str, Any]] | None = None,
        *,
        lengths: np.ndarray | None = None,
        texts: Sequence[str | None] | None = None,
        marker: dict[str, Any] | None = None,
    ) -> None: ...


class Replayer:
    """Applies replayed log records, merging runs of upserts into one call (the last write of
    an id wins) so that the index inserts in large batches; order is kept around deletes.

    Multi-vector upserts (token sets: ``Entry.lengths`` set) merge the same way; a run is cut
    after ``batch`` vectors (tokens for token sets)."""

    batch = 65536  # vectors (or tokens)

    def __init__(self, col: Target) -> None:
        self.col = col
        self.pending: list[wal.Entry] = []
        self.n = 0

    def add(self, entry: wal.Entry) -> None:
        if entry.marker is not None:
            # Replay stops before a record that does not apply.
            self.col.replay(wal.MARK, marker=entry.marker)
        if entry.kind == wal.MARK:
            return
        if entry.kind == wal.DELETE:
            self.flush()
            self.col.replay(wal.DELETE, entry.ids)
            return
        self.pending.append(entry)
        self.n += entry.vectors.shape[0] if entry.vectors is not None else len(entry.ids)
        if self.n >= self.batch:
            self.flush()

    def flush(self) -> None:
        entries, self.pending, self.n = self.pending, [], 0
        if len(entries) > 1 and self._apply_merged(entries):
            return
        for e in entries:
            try:
                self.col.replay(
                    wal.UPSERT, e.ids, e.vectors, e.payloads, lengths=e.lengths, texts=e.texts
                )
            except (ValueError, TypeError) as err:
                raise storage.CorruptFileError(
                    e.path, f"offset {e.offset}: record {e.seq} does not apply: {err}"
                ) from None

    @staticmethod
    def _rows(e: wal.Entry) -> list[dict[str, Any]]:
        return e.payloads if e.payloads is not None else [{} for _ in e.ids]

    def _apply_merged(self, entries: list[wal.Entry]) -> bool:
        multi = self.col.multi_vector
        if any(e.vectors is None or (e.lengths is not None) != multi for e in entries):
            return False  # apply record by record, so that the error names its record
        last: dict[str, tuple[int, int]] = {}
        for i, e in enumerate(entries):
            for r, k in enumerate(e.ids):
                last.pop(k, None)  # re-insert: the id takes its latest position
                last[k] = (i, r)
        lengths: np.ndarray | None = None
        texts: list[str | None] | None = None
        if len(last) == sum(len(e.ids) for e in entries):
            keys = [k for e in entries for k in e.ids]
            x = np.concatenate([e.vectors for e in entries if e.vectors is not None])
            rows = [p for e in entries for p in self._rows(e)]
            texts = [t for e in entries for t in self._texts(e)]
            if multi:
                lengths = np.concatenate([e.lengths for e in entries if e.lengths is not None])
        elif multi:
            keys, x, lengths, rows = self._last_token_sets(entries, last)
            texts = [self._texts(entries[i])[r] for i, r in last.values()]
        else:
            keys = list(last)
            x = np.empty((len(keys), self.col.dim), dtype=np.float32)
            rows, texts = [], []
            for j, (i, r) in enumerate(last.values()):
                vectors = entries[i].vectors
                assert vectors is not None
                x[j] = vectors[r]
                rows.append(self._rows(entries[i])[r])
                texts.append(self._texts(entries[i])[r])
        n_rows = len(keys) if lengths is None else int(lengths.sum())
        if x.shape[0] != n_rows or (lengths is not None and lengths.shape[0] != len(keys)):
            return False
        try:
            self.col.replay(wal.UPSERT, keys, x, rows, lengths=lengths, texts=texts)
        except ValueError:
            return False  # apply record by record, so that an error names its record
        return True

    @staticmethod
    def _texts(e: wal.Entry) -> list[str | None]:
        return list(e.texts) if e.texts is not None else [None] * len(e.ids)

    def _last_token_sets(
        self, entries: list[wal.Entry], last: dict[str, tuple[int, int]]
    ) -> tuple[list[str], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """The latest token set of each id in a run (ids in their latest positions)."""
        starts = [offsets_of(e.lengths) for e in entries if e.lengths is not None]
        parts, lengths, rows = [], [], []
        for i, r in last.values():
            vectors = entries[i].vectors
            assert vectors is not None
            a, b = int(starts[i][r]), int(starts[i][r + 1])
            parts.append(vectors[a:b])
            lengths.append(b - a)
            rows.append(self._rows(entries[i])[r])
        return list(last), np.concatenate(parts), np.asarray(lengths, dtype=np.int64), rows
