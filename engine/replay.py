"""Replay: applies the log records found at open to a collection, in large batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from index import storage

from . import wal

if TYPE_CHECKING:
    from .collection import Collection


class Replayer:
    """Applies replayed log records, merging runs of upserts into one call (the last write of
    an id wins) so that the index inserts in large batches; order is kept around deletes."""

    batch = 65536  # vectors

    def __init__(self, col: Collection) -> None:
        self.col = col
        self.pending: list[wal.Entry] = []
        self.n = 0

    def add(self, entry: wal.Entry) -> None:
        if entry.kind == wal.DELETE:
            self.flush()
            self.col._apply_delete(entry.ids)
            return
        self.pending.append(entry)
        self.n += len(entry.ids)
        if self.n >= self.batch:
            self.flush()

    def flush(self) -> None:
        entries, self.pending, self.n = self.pending, [], 0
        if len(entries) > 1 and self._apply_merged(entries):
            return
        for e in entries:
            try:
                self._apply(e.ids, e.vectors, self._rows(e))
            except (ValueError, TypeError) as err:
                raise storage.CorruptFileError(
                    e.path, f"offset {e.offset}: record {e.seq} does not apply: {err}"
                ) from None

    @staticmethod
    def _rows(e: wal.Entry) -> list[dict[str, Any]]:
        return e.payloads if e.payloads is not None else [{} for _ in e.ids]

    def _apply(self, ids: list[str], x: np.ndarray | None, rows: list[dict[str, Any]]) -> None:
        if x is None:
            raise ValueError("an upsert record without vectors")
        self.col._apply_upsert(ids, x, rows, self.col._payloads.check_types(rows))

    def _apply_merged(self, entries: list[wal.Entry]) -> bool:
        last: dict[str, tuple[int, int]] = {}
        for i, e in enumerate(entries):
            for r, k in enumerate(e.ids):
                last.pop(k, None)  # re-insert: the id takes its latest position
                last[k] = (i, r)
        if len(last) == sum(len(e.ids) for e in entries):
            keys = [k for e in entries for k in e.ids]
            x = np.concatenate([e.vectors for e in entries if e.vectors is not None])
            rows = [p for e in entries for p in self._rows(e)]
        else:
            keys = list(last)
            x = np.empty((len(keys), self.col.dim), dtype=np.float32)
            rows = []
            for j, (i, r) in enumerate(last.values()):
                vectors = entries[i].vectors
                if vectors is None:
                    return False
                x[j] = vectors[r]
                rows.append(self._rows(entries[i])[r])
        if x.shape[0] != len(keys):
            return False
        try:
            schema = self.col._payloads.check_types(rows)
        except ValueError:
            return False  # apply record by record, so that an error names its record
        self.col._apply_upsert(keys, x, rows, schema)
        return True
