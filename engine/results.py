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
    ``result[i]`` gives query i's hits as a list of ``Hit``."""

    ids: np.ndarray
    scores: np.ndarray
    payloads: list[list[dict[str, Any]]]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, i: int) -> list[Hit]:
        return [
            Hit(str(doc), float(s), p)
            for doc, s, p in zip(self.ids[i], self.scores[i], self.payloads[i], strict=False)
            if doc is not None
        ]
