"""What searches return: ``Hit`` per result, ``SearchResult`` for batches, ``Record`` for get."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Hit:
    """One search result: the document id, its score (higher is better) and its payload."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Record:
    """One stored item, as ``Collection.get`` returns it."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchResult:
    """Results of ``search_batch``: ``ids`` (m, k) object array (None where fewer than k
    results exist), ``scores`` (m, k) float32 (-inf there), ``payloads`` m lists of dicts.
    ``result[i]`` gives query i's hits as a list of ``Hit``. ``missing_shards`` (a sharded
    collection searched with ``partial=True``): the shards that did not answer; ``partial`` is
    True when there are any."""

    ids: np.ndarray
    scores: np.ndarray
    payloads: list[list[dict[str, Any]]]
    missing_shards: tuple[int, ...] = ()

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


class Hits(list[Hit]):
    """A sharded collection's ``search`` result: a list of ``Hit``, plus ``missing_shards``
    (the shards that did not answer a ``partial=True`` search) and ``partial``."""

    def __init__(self, hits: Any = (), *, missing_shards: tuple[int, ...] = ()) -> None:
        super().__init__(hits)
        self.missing_shards = tuple(missing_shards)

    @property
    def partial(self) -> bool:
        return bool(self.missing_shards)
