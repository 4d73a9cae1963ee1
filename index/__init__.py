"""vectors -> neighbours: exact (flat), HNSW (hnswlib), IVF / IVF-PQ (faiss).

Every index follows one protocol (see ``index.base``): ``add``, ``remove``, ``search`` returning
``(scores (m, k), labels (m, k))`` with -1 / -inf padding, ``save``, ``load``.
"""

from __future__ import annotations

from pathlib import Path

from .base import Index as Index
from .flat import FlatIndex as FlatIndex
from .hnsw import HNSWIndex as HNSWIndex
from .ivf import IVFIndex as IVFIndex
from .metric import Metric as Metric
from .spec import from_spec as from_spec
from .spec import parse_spec as parse_spec
from .storage import CorruptFileError as CorruptFileError


def load(directory: str | Path) -> Index:
    """Opens any index saved with ``Index.save``; files are verified before they are parsed."""
    return Index.load(directory)


__all__ = [
    "CorruptFileError",
    "FlatIndex",
    "HNSWIndex",
    "IVFIndex",
    "Index",
    "Metric",
    "from_spec",
    "load",
    "parse_spec",
]
