"""What a collection holds in memory, kept consistent: ids and their labels, the items, payloads,
the vector index and the optional BM25 index.

Every id has one label (a new label per version of an item, never reused); each part keys its
data by label. Not thread-safe: the collection's lock guards it (writers hold it exclusively).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

import index as ix
from index.lexical import BM25Index

from .idmap import IdMap
from .itemstore import ItemStore, store_for
from .payloads import PayloadStore
from .results import Hit, Record, SearchResult


class Contents:
    """Ids, items, payloads and indexes of a collection, in memory.

    Args:
        index: the (empty) vector index; its family picks the item store.
        lexical: the (empty) BM25 index, or None.
        text_field: the payload field the lexical index takes, or None (``add(texts=...)``).
    """

    def __init__(
        self,
        index: ix.Index | ix.MultiVectorIndex,
        lexical: BM25Index | None = None,
        text_field: str | None = None,
    ) -> None:
        self.index = index
        self.items: ItemStore = store_for(index)
        self.lexical = lexical
        self.text_field = text_field
        self.payloads = PayloadStore()
        self.ids = IdMap()
        self.next_label = 0

    def __len__(self) -> int:
        return len(self.ids)

    def reserve(self, n: int) -> None:
        """Room for ``n`` items in the store and (a single-vector one) the index."""
        if isinstance(self.index, ix.Index):
            self.items.reserve(n)
            self.index.reserve(n)

    # ---- changes -----------------------------------------------------------------------------
    def lexical_texts(
        self, rows: list[dict[str, Any]], texts: Sequence[str | None] | None
    ) -> list[str | None] | None:
        """What the lexical index takes for each item: its text, or None (not indexed)."""
        if self.lexical is None:
            return None
        if self.text_field is None:
            return None if texts is None else list(texts)
        out: list[str | None] = []
        for i, row in enumerate(rows):
            value = row.get(self.text_field)
            if value is not None and not isinstance(value, str):
                raise ValueError(
                    f"payload {i}: field {self.text_field!r} is the collection's text field and "
                    f"must be a string, got {type(value).__name__}"
                )
            out.append(value if value is not None and value.strip() else None)
        return out

    def upsert(
        self,
        keys: list[str],
        x: np.ndarray,
        rows: list[dict[str, Any]],
        schema: pa.Schema,
        offsets: np.ndarray | None = None,
        texts: list[str | None] | None = None,
    ) -> None:
        """Applies a validated upsert. ``x`` is (n, dim) vectors, or token sets' tokens with
        their ``offsets``; ``texts`` what the lexical index takes (``lexical_texts``)."""
        if self.items.multi_vector != (offsets is not None):
            raise ValueError(
                "token sets for a single-vector collection"
                if offsets is not None
                else "single vectors (no token counts) for a multi-vector collection"
            )
        old = self.ids.labels(keys)
        if old:
            self.drop(np.asarray(old, dtype=np.int64))
        labels = np.arange(self.next_label, self.next_label + len(keys), dtype=np.int64)
        self.index.add(self.items.for_index(x, offsets), labels)
        self.items.append(x, offsets, labels)
        self.next_label += len(keys)
        if self.lexical is not None and texts is not None:
            has = [i for i, t in enumerate(texts) if t is not None]
            if has:
                self.lexical.add([texts[i] for i in has], labels[has])  # type: ignore[misc]
        self.payloads.put(labels, rows, schema)
        self.ids.assign(keys, labels)

    def delete(self, keys: list[str]) -> bool:
        """Deletes the ids present; returns whether there were any."""
        labels = self.ids.labels(keys)
        if labels:
            self.drop(np.unique(np.asarray(labels, dtype=np.int64)))
        return bool(labels)

    def drop(self, labels: np.ndarray) -> None:
        self.ids.remove(labels)
        self.index.remove(labels)
        self.items.remove(labels)
        self.payloads.remove(labels)
        if self.lexical is not None:
            self.lexical.remove(labels)

    def install(self, ids: pa.Array, labels: np.ndarray, table: pa.Table, next_label: int) -> None:
        """Takes a checkpoint's ids, labels and payloads (the items are installed apart)."""
        self.payloads.load(labels, table)
        self.ids.install(ids, labels, next_label)
        self.next_label = next_label

    # ---- reads -------------------------------------------------------------------------------
    def get(self, keys: list[str]) -> list[Record | None]:
        out: list[Record | None] = []
        for k in keys:
            lab = self.ids.label(k)
            if lab is None:
                out.append(None)
                continue
            out.append(Record(k, self.items.get(lab), dict(self.payloads.get(lab))))
        return out

    def allowed(self, where: dict[str, Any] | None) -> np.ndarray | None:
        """The labels a ``where`` filter lets through, or None for no filter."""
        if where is None:
            return None
        if not isinstance(where, dict):
            raise TypeError(f"where must be a dict, got {type(where).__name__}")
        if not where:
            return None
        return self.payloads.matching(where, self.items.live_labels)

    def search(
        self, q: Any, k: int, where: dict[str, Any] | None, params: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The index's (scores, labels) for queries from ``items.query`` / ``items.queries``
        and a checked k; single vectors were checked by the store, so the index skips that."""
        allowed = self.allowed(where)
        if self.items.checks_queries:
            if q.ndim == 1:  # one query (``items.query``)
                q = q.reshape(1, -1)
            return self.index.search_checked(q, q.shape[0], k, allowed, params)
        return self.index.search(q, k, allowed=allowed, **params)

    def hits(self, scores: np.ndarray, labels: np.ndarray) -> list[Hit]:
        """One query's (scores, labels) row -> hits (payloads copied when read: ``Hit``)."""
        labs = labels.tolist()
        if labs and labs[-1] < 0:  # padding (-1) comes last
            labs = [lab for lab in labs if lab >= 0]
        ids = self.ids.ids(labs)
        stored = self.payloads.by_label
        if not stored:  # no item has a payload: nothing to look up
            return [Hit(i, s) for i, s in zip(ids, scores.tolist(), strict=False)]
        get = stored.get
        return [
            Hit(i, s, _stored=get(lab))
            for i, s, lab in zip(ids, scores.tolist(), labs, strict=False)
        ]

    def result(self, scores: np.ndarray, labels: np.ndarray) -> SearchResult:
        """(scores, labels) (m, k) -> ids, and the payloads copied when read (``SearchResult``)."""
        found = labels >= 0
        if found.all():
            ids = self.ids.id_array(labels)
        else:
            ids = np.full(labels.shape, None, dtype=object)
            ids[found] = self.ids.id_array(labels[found])
        by_label = self.payloads.by_label
        if not by_label:
            return SearchResult._of(ids, scores, None)
        get = by_label.get
        stored = [[get(lab) for lab in row if lab >= 0] for row in labels.tolist()]
        return SearchResult._of(ids, scores, stored)
