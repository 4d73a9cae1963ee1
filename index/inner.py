"""The single-vector index a multi-vector index keeps inside (document FDEs for ``muvera``, all
tokens for ``token_ann``): its ``inner_<key>`` parameters and its files in ``inner/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import spec, storage
from .base import MANIFEST, Index
from .metric import Metric

INNER_DIR = "inner"


def split_inner(kind: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits ``inner_<key>`` parameters off ``params``; checks them against the inner kind."""
    if kind not in spec.REGISTRY:
        raise ValueError(
            f"inner index kind must be one of {', '.join(spec.REGISTRY)}, got {kind!r}"
        )
    inner = {k[len("inner_") :]: v for k, v in params.items() if k.startswith("inner_")}
    rest = {k: v for k, v in params.items() if not k.startswith("inner_")}
    klass = spec.class_of(kind, multi_vector=False)
    unknown = set(inner) - set(klass.config_keys)
    if unknown:
        known = ", ".join(f"inner_{k}" for k in klass.config_keys) or "none"
        raise ValueError(f"unknown {kind} parameter(s) {sorted(unknown)}; known: {known}")
    return rest, inner


def new_inner(kind: str, dim: int, params: dict[str, Any]) -> Index:
    """An empty inner index (inner product) of a kind ``split_inner`` accepted."""
    inner: Index = spec.class_of(kind, multi_vector=False)(dim=dim, metric="ip", **params)
    return inner


def inner_fields(directory: Path) -> dict[str, Any]:
    """The outer manifest's record of the inner index just saved (``load_inner`` checks it)."""
    return {"inner_manifest_sha256": storage.sha256_file(directory / INNER_DIR / MANIFEST)}


def inner_ram(inner: Index) -> dict[str, int]:
    """The inner index's RAM parts, prefixed ``inner_``."""
    return {f"inner_{k}": v["ram"] for k, v in inner.memory_usage().items()}


def inner_file_part(inner: Index, name: str) -> str | None:
    """The part of a file in ``inner/`` (prefixed ``inner_``), or None for a file outside it."""
    head, _, rest = name.partition("/")
    return f"inner_{inner._file_part(rest)}" if head == INNER_DIR and rest else None


def load_inner(directory: Path, manifest: dict[str, Any], klass: type[Index]) -> Index:
    """Opens the inner single-vector index after checking its manifest against ours."""
    ipath = directory / INNER_DIR / MANIFEST
    if not ipath.is_file():
        raise storage.CorruptFileError(ipath, "inner index manifest is missing")
    if storage.sha256_file(ipath) != manifest.get("inner_manifest_sha256"):
        raise storage.CorruptFileError(ipath, "SHA-256 does not match the outer manifest")
    inner = klass.load(directory / INNER_DIR)
    if inner.metric is not Metric.IP:
        raise storage.CorruptFileError(ipath, f"inner index metric {inner.metric.value}, not ip")
    return inner
