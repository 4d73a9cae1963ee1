"""What searches return: ``Hit`` per result, ``SearchResult`` for batches, ``Record`` for get."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Hit:
    """One search result: the document id, its score (higher is better) and its payload.

    A search hands out the stored payload and copies it on first access of ``payload``, so a
    caller that reads only ids and scores pays nothing for payloads (the copy keeps the
    collection's own dict safe from changes to the returned one).
    """

    __slots__ = ("id", "score", "_payload", "_stored")
    __match_args__ = ("id", "score", "payload")

    def __init__(
        self,
        id: str,
        score: float,
        payload: dict[str, Any] | None = None,
        *,
        _stored: dict[str, Any] | None = None,
    ) -> None:
        # One call per hit (a search makes k of them): no dict until ``payload`` is read.
        self.id = id
        self.score = score
        self._payload = payload
        self._stored = _stored  # the collection's dict, copied on first read

    @property
    def payload(self) -> dict[str, Any]:
        p = self._payload
        if p is None:
            stored = self._stored
            p = self._payload = dict(stored) if stored else {}
            self._stored = None
        return p

    @payload.setter
    def payload(self, value: dict[str, Any]) -> None:
        self._payload, self._stored = value, None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hit):
            return NotImplemented
        return (self.id, self.score, self.payload) == (other.id, other.score, other.payload)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaced

    def __repr__(self) -> str:
        return f"Hit(id={self.id!r}, score={self.score!r}, payload={self.payload!r})"


@dataclass(frozen=True, slots=True)
class Record:
    """One stored item, as ``Collection.get`` returns it."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any] = field(default_factory=dict)


class SearchResult:
    """Results of ``search_batch``: ``ids`` (m, k) object array (None where fewer than k
    results exist), ``scores`` (m, k) float32 (-inf there), ``payloads`` m lists of dicts.
    ``result[i]`` gives query i's hits as a list of ``Hit``. ``missing_shards`` (a sharded
    collection searched with ``partial=True``): the shards that did not answer; ``partial`` is
    True when there are any.

    ``payloads`` is built on first access from the stored dicts the search picked up (copies,
    like ``Hit.payload``), so a caller that reads only ids and scores pays nothing for them.
    """

    __slots__ = ("ids", "scores", "_payloads", "_stored", "missing_shards")

    def __init__(
        self,
        ids: np.ndarray,
        scores: np.ndarray,
        payloads: list[list[dict[str, Any]]] | None = None,
        missing_shards: tuple[int, ...] = (),
    ) -> None:
        self.ids = ids
        self.scores = scores
        self._payloads = payloads
        # Per query, the stored payload dict (or None) of each hit; None: no hit has one.
        self._stored: list[list[dict[str, Any] | None]] | None = None
        self.missing_shards = missing_shards

    @classmethod
    def _of(
        cls, ids: np.ndarray, scores: np.ndarray, stored: list[list[dict[str, Any] | None]] | None
    ) -> SearchResult:
        """A result whose payloads are copied from ``stored`` when first read."""
        res = cls(ids, scores)
        res._stored = stored
        return res

    @property
    def payloads(self) -> list[list[dict[str, Any]]]:
        p = self._payloads
        if p is None:
            if self._stored is None:
                found = (self.ids != None).sum(axis=1).tolist()  # noqa: E711 - elementwise
                p = [[{} for _ in range(n)] for n in found]
            else:
                p = [[dict(d or ()) for d in row] for row in self._stored]
            self._payloads, self._stored = p, None
        return p

    @property
    def partial(self) -> bool:
        return bool(self.missing_shards)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, i: int) -> list[Hit]:
        return [
            Hit(str(doc), float(s), p)
            for doc, s, p in zip(self.ids[i], self.scores[i], self.payloads[i], strict=False)
            if doc is not None
        ]

    def __repr__(self) -> str:
        return (
            f"SearchResult(ids={self.ids!r}, scores={self.scores!r}, "
            f"missing_shards={self.missing_shards!r})"
        )


class Hits(list[Hit]):
    """A sharded collection's ``search`` result: a list of ``Hit``, plus ``missing_shards``
    (the shards that did not answer a ``partial=True`` search) and ``partial``."""

    def __init__(self, hits: Any = (), *, missing_shards: tuple[int, ...] = ()) -> None:
        super().__init__(hits)
        self.missing_shards = tuple(missing_shards)

    @property
    def partial(self) -> bool:
        return bool(self.missing_shards)
