"""vectors -> neighbours: exact (flat), HNSW (hnswlib), IVF / IVF-PQ (faiss), and for token sets
MUVERA (FDE search + exact Chamfer rerank) with its baselines (exhaustive Chamfer, token ANN).

Every index follows one protocol (see ``index.base``, and ``index.multivector`` for token sets):
``add``, ``remove``, ``search`` returning ``(scores (m, k), labels (m, k))`` with -1 / -inf
padding, ``save``, ``load``.
"""

from __future__ import annotations

from pathlib import Path

from . import storage
from .base import MANIFEST
from .base import Index as Index
from .fde import FDE as FDE
from .flat import FlatIndex as FlatIndex
from .hnsw import HNSWIndex as HNSWIndex
from .ivf import IVFIndex as IVFIndex
from .metric import Metric as Metric
from .multivector import ChamferIndex as ChamferIndex
from .multivector import MultiVectorIndex as MultiVectorIndex
from .multivector import TokenANNIndex as TokenANNIndex
from .muvera import MuveraIndex as MuveraIndex
from .spec import from_spec as from_spec
from .spec import is_multivector
from .spec import parse_spec as parse_spec
from .storage import CorruptFileError as CorruptFileError


def load(directory: str | Path) -> Index | MultiVectorIndex:
    """Opens any index saved with ``save`` (single- or multi-vector, by the manifest's kind);
    files are verified before they are parsed."""
    path = Path(directory) / MANIFEST
    try:
        config = storage.read_manifest(path).get("config")
    except CorruptFileError:
        config = None  # Index.load reports it
    if isinstance(config, dict) and is_multivector(str(config.get("kind"))):
        return MultiVectorIndex.load(directory)
    return Index.load(directory)


__all__ = [
    "FDE",
    "ChamferIndex",
    "CorruptFileError",
    "FlatIndex",
    "HNSWIndex",
    "IVFIndex",
    "Index",
    "Metric",
    "MultiVectorIndex",
    "MuveraIndex",
    "TokenANNIndex",
    "from_spec",
    "load",
    "parse_spec",
]
