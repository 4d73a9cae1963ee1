"""Building an index from a spec string and opening a saved one, for every kind (the kinds are
``index.spec``'s registry)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from .base import BaseIndex, Index
from .metric import Metric
from .multivector import MultiVectorIndex
from .spec import class_of, parse_spec


def from_spec(spec: str, dim: int, metric: str | Metric = "cosine") -> Index | MultiVectorIndex:
    """Builds an empty index from a spec string: a single-vector ``Index``, or a
    ``MultiVectorIndex`` for the multi-vector kinds (``muvera``, ``chamfer``, ``token_ann``).

    Example:
        >>> from_spec("hnsw:M=32,ef=128", dim=64, metric="cosine").spec
        'hnsw:M=32,ef_construction=200,ef=128'
    """
    kind, params = parse_spec(spec)
    idx: Index | MultiVectorIndex = class_of(kind)(dim=dim, metric=metric, **params)
    return idx


def load(directory: str | Path) -> Index | MultiVectorIndex:
    """Opens any index saved with ``save`` (single- or multi-vector, by the manifest's kind);
    files are verified before they are parsed."""
    return cast("Index | MultiVectorIndex", BaseIndex.load(directory))
