"""Index kinds and spec strings (``hnsw:M=32,ef=128``) that round-trip through ``idx.spec``.

``KINDS`` is the one registry of index kinds, single- and multi-vector (the single-vector kinds
are also the inner indexes a multi-vector index may keep). It names each class by module, and
``class_of`` imports it on lookup: the index modules read this registry (``BaseIndex.load``
opens any kind through it), so it imports none of them.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple


class Kind(NamedTuple):
    """Where an index kind's class lives (a module of this package) and its family."""

    module: str
    cls: str
    multi_vector: bool


# In the order messages list them.
KINDS: dict[str, Kind] = {
    "flat": Kind("flat", "FlatIndex", False),
    "hnsw": Kind("hnsw", "HNSWIndex", False),
    "ivf": Kind("ivf", "IVFIndex", False),
    # Compact codes searched, candidates rescored exactly (see ``index.quantized``).
    "sq8": Kind("quantized_hnsw", "SQ8Index", False),
    "binary": Kind("quantized_hnsw", "BinaryIndex", False),
    "pq": Kind("quantized_pq", "PQIndex", False),
    # Multi-vector kinds: token sets in, Chamfer similarity out (see ``index.multivector``).
    "muvera": Kind("muvera", "MuveraIndex", True),
    "chamfer": Kind("chamfer", "ChamferIndex", True),
    "token_ann": Kind("token_ann", "TokenANNIndex", True),
}
# The two families, as views of ``KINDS``.
REGISTRY: dict[str, Kind] = {name: k for name, k in KINDS.items() if not k.multi_vector}
MULTIVECTOR_REGISTRY: dict[str, Kind] = {name: k for name, k in KINDS.items() if k.multi_vector}


def class_of(kind: str, multi_vector: bool | None = None) -> type[Any]:
    """The index class of a spec kind.

    Args:
        kind: the spec name (``hnsw``).
        multi_vector: the family the kind must belong to (None: either).

    Raises:
        ValueError: an unknown kind, or one of the other family (the message says which).
    """
    entry = KINDS.get(kind)
    if multi_vector and (entry is None or not entry.multi_vector):
        raise ValueError(
            f"unknown multi-vector index kind {kind!r}; known: {', '.join(MULTIVECTOR_REGISTRY)}"
        )
    if entry is None:
        raise ValueError(f"unknown index kind {kind!r}; known: {', '.join(KINDS)}")
    if multi_vector is False and entry.multi_vector:
        raise ValueError(f"{kind!r} is a multi-vector index kind, not a single-vector one")
    klass: type[Any] = getattr(importlib.import_module(f"{__package__}.{entry.module}"), entry.cls)
    return klass


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
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; known: {', '.join(KINDS)}")
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
