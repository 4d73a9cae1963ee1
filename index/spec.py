"""Index spec strings (``hnsw:M=32,ef=128``) that round-trip through ``Index.spec``."""

from __future__ import annotations

from typing import Any

from .base import Index
from .flat import FlatIndex
from .hnsw import HNSWIndex
from .ivf import IVFIndex
from .metric import Metric
from .multivector import ChamferIndex, MultiVectorIndex, TokenANNIndex
from .muvera import MuveraIndex

REGISTRY: dict[str, type[Index]] = {
    FlatIndex.kind: FlatIndex,
    HNSWIndex.kind: HNSWIndex,
    IVFIndex.kind: IVFIndex,
}
# Multi-vector kinds: token sets in, Chamfer similarity out (see ``index.multivector``).
MULTIVECTOR_REGISTRY: dict[str, type[MultiVectorIndex]] = {
    MuveraIndex.kind: MuveraIndex,
    ChamferIndex.kind: ChamferIndex,
    TokenANNIndex.kind: TokenANNIndex,
}


def _known() -> str:
    return ", ".join([*REGISTRY, *MULTIVECTOR_REGISTRY])


def index_class(kind: str) -> type[Index]:
    """The single-vector index class of a spec kind."""
    try:
        return REGISTRY[kind]
    except KeyError:
        if kind in MULTIVECTOR_REGISTRY:
            raise ValueError(
                f"{kind!r} is a multi-vector index kind, not a single-vector one"
            ) from None
        raise ValueError(f"unknown index kind {kind!r}; known: {_known()}") from None


def multivector_class(kind: str) -> type[MultiVectorIndex]:
    """The multi-vector index class of a spec kind."""
    try:
        return MULTIVECTOR_REGISTRY[kind]
    except KeyError:
        raise ValueError(
            f"unknown multi-vector index kind {kind!r}; known: {', '.join(MULTIVECTOR_REGISTRY)}"
        ) from None


def is_multivector(kind: str) -> bool:
    return kind in MULTIVECTOR_REGISTRY


def _value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Splits ``"kind:key=value,..."`` into the kind and its parameters.

    Raises:
        ValueError: on an unknown kind or a malformed ``key=value`` pair.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"index spec must be a non-empty string, got {spec!r}")
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in REGISTRY and kind not in MULTIVECTOR_REGISTRY:
        raise ValueError(f"unknown index kind {kind!r}; known: {_known()}")
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = part.partition("=")
        if not eq or not key.strip() or not val.strip():
            raise ValueError(
                f"malformed index spec parameter {part!r} in {spec!r}; expected key=value"
            )
        if key.strip() in params:
            raise ValueError(f"index spec parameter {key.strip()!r} given twice in {spec!r}")
        params[key.strip()] = _value(val.strip())
    return kind, params


def from_spec(spec: str, dim: int, metric: str | Metric = "cosine") -> Index | MultiVectorIndex:
    """Builds an empty index from a spec string: a single-vector ``Index``, or a
    ``MultiVectorIndex`` for the multi-vector kinds (``muvera``, ``chamfer``, ``token_ann``).

    Example:
        >>> from_spec("hnsw:M=32,ef=128", dim=64, metric="cosine").spec
        'hnsw:M=32,ef_construction=200,ef=128'
    """
    kind, params = parse_spec(spec)
    if kind in MULTIVECTOR_REGISTRY:
        return MULTIVECTOR_REGISTRY[kind](dim=dim, metric=metric, **params)
    return index_class(kind)(dim=dim, metric=metric, **params)
