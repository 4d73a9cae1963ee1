"""Reading a vector column: one row's vector, or a chunk's vectors checked and stacked.

List and fixed-size-list columns of numbers are read in one vectorised pass; anything else (JSON or
space-separated strings from CSV, token sets of a multi-vector collection) row by row.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from ..sources import Chunk


def pylist(values: pa.Array | list[Any]) -> list[Any]:
    """A chunk's column (an Arrow array or a list already) as a Python list."""
    return values if isinstance(values, list) else values.to_pylist()


def parse_vector(v: Any) -> np.ndarray | None:
    """A row's vector as float32 (1-D, or 2-D for a token set); None when absent."""
    if v is None:
        return None
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        if s.startswith("["):
            try:
                v = json.loads(s)
            except ValueError:
                raise ValueError("vector is not a JSON list of numbers") from None
        else:
            v = s.replace(",", " ").split()
    try:
        return np.asarray(v, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError("vector holds something other than numbers") from None


def arrow_vectors(arr: pa.Array, dim: int) -> tuple[np.ndarray, dict[int, str]] | None:
    """(n, dim) float32 and per-row problems, vectorised, for list / fixed-size-list columns of
    numbers; None for other types (checked row by row instead)."""
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return None
    if not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        return None
    n = len(arr)
    x = np.zeros((n, dim), dtype=np.float32)
    problems: dict[int, str] = {}
    null = arr.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(t):
        lengths = np.full(n, t.list_size, dtype=np.int64)
    else:
        lengths = np.asarray(
            pa.compute.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
        )
    ok = ~null & (lengths == dim)
    for r in np.flatnonzero(~ok).tolist():
        problems[r] = "missing vector" if null[r] else f"vector has {lengths[r]} values, not {dim}"
    if ok.any():
        good = arr.filter(pa.array(ok))
        values = good.flatten() if not pa.types.is_fixed_size_list(t) else good.values
        if pa.types.is_fixed_size_list(t) and good.offset:
            values = values.slice(good.offset * dim, len(good) * dim)
        flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        x[ok] = flat.reshape(-1, dim)
    return x, problems


def chunk_vectors(
    chunk: Chunk, column: str, dim: int, multi: bool, problems: dict[int, str]
) -> np.ndarray | list[Any]:
    """The chunk's vectors, (n, dim) float32 or (``multi``) a list of token sets; each row's
    problem goes into ``problems`` (absolute row -> reason), first one kept."""
    values = chunk.columns[column]
    if not multi and isinstance(values, pa.Array):
        fast = arrow_vectors(values, dim)
        if fast is not None:
            stacked, found = fast
            for r, why in found.items():
                problems.setdefault(chunk.start + r, why)
            finite = np.isfinite(stacked).all(axis=1)
            for r in np.flatnonzero(~finite).tolist():
                problems.setdefault(chunk.start + r, "vector contains NaN or inf")
            return stacked
    rows = pylist(values)
    out: list[Any] = []
    for r, v in enumerate(rows):
        row = chunk.start + r
        x: np.ndarray | None
        try:
            x = parse_vector(v)
        except ValueError as e:
            problems.setdefault(row, str(e))
            x = None
        if x is None:
            problems.setdefault(row, "missing vector")
        elif multi and (x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != dim):
            problems.setdefault(row, f"token set of shape {x.shape}, expected (n >= 1, {dim})")
            x = None
        elif not multi and (x.ndim != 1 or x.shape[0] != dim):
            what = f"{x.shape[0]} values" if x.ndim == 1 else f"shape {x.shape}"
            problems.setdefault(row, f"vector has {what}, not {dim}")
            x = None
        elif not np.isfinite(x).all():
            problems.setdefault(row, "vector contains NaN or inf")
        out.append(x)
    if multi:
        return out
    stacked = np.zeros((len(rows), dim), dtype=np.float32)
    for r, x in enumerate(out):
        if x is not None and x.shape == (dim,):
            stacked[r] = x
    return stacked
