"""vectors -> neighbours: exact (flat), HNSW (hnswlib), IVF / IVF-PQ (faiss), quantized codes
with exact rescoring (sq8, binary, pq: faiss), and for token sets
MUVERA (FDE search + exact Chamfer rerank) with its baselines (exhaustive Chamfer, token ANN).

Every index follows one protocol (see ``index.base``, and ``index.multivector`` for token sets):
``add``, ``remove``, ``search`` returning ``(scores (m, k), labels (m, k))`` with -1 / -inf
padding, ``save``, ``load``. IVF and PQ indexes can share one quantizer trained on a sample
(``train_quantizer``, ``shares_quantizer``; see ``index.shared_quantizer``).
"""

from __future__ import annotations

from .base import Index as Index
from .chamfer import ChamferIndex as ChamferIndex
from .factory import from_spec as from_spec
from .factory import load as load
from .fde import FDE as FDE
from .flat import FlatIndex as FlatIndex
from .hnsw import HNSWIndex as HNSWIndex
from .ivf import IVFIndex as IVFIndex
from .metric import Metric as Metric
from .multivector import MultiVectorIndex as MultiVectorIndex
from .muvera import MuveraIndex as MuveraIndex
from .quantized import QuantizedIndex as QuantizedIndex
from .quantized_hnsw import BinaryIndex as BinaryIndex
from .quantized_hnsw import SQ8Index as SQ8Index
from .quantized_pq import PQIndex as PQIndex
from .recall import recall_at_k as recall_at_k
from .shared_quantizer import shares_quantizer as shares_quantizer
from .shared_quantizer import train_quantizer as train_quantizer
from .spec import parse_spec as parse_spec
from .storage import CorruptFileError as CorruptFileError
from .token_ann import TokenANNIndex as TokenANNIndex

__all__ = [
    "FDE",
    "BinaryIndex",
    "ChamferIndex",
    "CorruptFileError",
    "FlatIndex",
    "HNSWIndex",
    "IVFIndex",
    "Index",
    "Metric",
    "MultiVectorIndex",
    "MuveraIndex",
    "PQIndex",
    "QuantizedIndex",
    "SQ8Index",
    "TokenANNIndex",
    "from_spec",
    "load",
    "parse_spec",
    "recall_at_k",
    "shares_quantizer",
    "train_quantizer",
]
