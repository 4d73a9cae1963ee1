"""One quantizer for several indexes: the shards of a collection train their coarse quantizer
(and PQ codebooks) once, on a sample, and each adopts the same arrays, instead of each training
its own on the first vectors it happens to receive.

The arrays are plain float32 numpy arrays (``{"centroids": ..., "pq_centroids": ...}``); see
``IVFIndex.train_quantizer`` and ``IVFIndex.adopt_quantizer`` (``PQIndex`` delegates to its inner
IVF-PQ index).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .factory import from_spec
from .ivf import IVFIndex
from .metric import Metric
from .quantized_pq import PQIndex
from .spec import parse_spec

# The kinds whose indexes can share one trained quantizer.
SHARED_QUANTIZER_KINDS = ("ivf", "pq")


def shares_quantizer(spec: str) -> bool:
    """Whether indexes of ``spec`` train a quantizer that several of them can share (``ivf``
    and ``pq``).

    Raises:
        ValueError: a malformed spec or an unknown kind.

    Example:
        >>> shares_quantizer("ivf:nlist=64"), shares_quantizer("hnsw")
        (True, False)
    """
    kind, _ = parse_spec(spec)
    return kind in SHARED_QUANTIZER_KINDS


def train_quantizer(
    spec: str, dim: int, metric: str | Metric, sample: Any
) -> dict[str, np.ndarray]:
    """Trains the quantizer of an index built from ``spec`` on ``sample`` (as such an index
    trains itself: the same seeded sample cap and faiss training), for indexes of that spec,
    dim and metric to adopt (``adopt_quantizer``).

    Args:
        spec: an ``ivf`` or ``pq`` spec string.
        dim: the vectors' dimension.
        metric: the indexes' metric.
        sample: (n, dim) finite float vectors, at least ``nlist`` (and ``2**nbits`` for PQ).

    Returns:
        ``{"centroids": (nlist, dim)}``, plus ``"pq_centroids"`` for PQ codes; float32.

    Raises:
        ValueError: a spec of another kind, bad vectors, or too few of them.

    Example:
        >>> q = train_quantizer("ivf:nlist=4", 8, "l2", np.random.rand(200, 8))
        >>> sorted(q)
        ['centroids']
    """
    idx = from_spec(spec, dim, metric)
    if not isinstance(idx, (IVFIndex, PQIndex)):
        raise ValueError(
            f"index {idx.spec!r} has no quantizer to share; "
            f"only {', '.join(SHARED_QUANTIZER_KINDS)} indexes do"
        )
    return idx.train_quantizer(sample)
