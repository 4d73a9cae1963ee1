"""A saved token store's files, read back checked (``TokenStore.load``): ``tokens.npy``
(memory-mapped), ``offsets.npy``, ``labels.npy`` and one file per extra column (read into RAM).
Every problem is a ``CorruptFileError`` naming the file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import storage
from .validate import check_labels


def read_saved(
    directory: Path,
    names: tuple[str, str, str],
    dtype: Any,
    dim: int,
    columns: Mapping[str, tuple[str, tuple[Any, tuple[int, ...]]]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(tokens (T, dim) mapped, offsets (n + 1,), labels (n,), {column: (T, ...) array})``.

    Args:
        names: the tokens, offsets and labels file names.
        columns: per extra column, its file name and ``(dtype, shape of one token's entry)``.
    """
    tpath, opath, lpath = (directory / name for name in names)
    tokens = storage.load_npy(tpath, dtype, 2, mmap=True)
    offsets = np.array(storage.load_npy(opath, np.int64, 1))
    labels = np.array(storage.load_npy(lpath, np.int64, 1))
    if tokens.shape[1] != dim:
        raise storage.CorruptFileError(
            tpath, f"tokens have dimension {tokens.shape[1]}, manifest says {dim}"
        )
    if offsets.shape[0] != labels.shape[0] + 1:
        raise storage.CorruptFileError(
            lpath, f"{labels.shape[0]} labels, but offsets.npy has {offsets.shape[0]} entries"
        )
    if offsets[0] != 0 or offsets[-1] != tokens.shape[0] or (np.diff(offsets) <= 0).any():
        raise storage.CorruptFileError(
            opath, f"offsets must rise strictly from 0 to {tokens.shape[0]} (the token count)"
        )
    try:
        check_labels(labels, labels.shape[0])
    except (TypeError, ValueError) as e:
        raise storage.CorruptFileError(lpath, str(e)) from None
    storage.check_finite_npy(tpath, tokens)  # ordinary reads: the map stays unfaulted
    out = {}
    for col, (name, (col_dtype, shape)) in columns.items():
        path = directory / name
        arr = np.array(storage.load_npy(path, col_dtype, 1 + len(shape)))
        if arr.shape != (tokens.shape[0], *shape):
            raise storage.CorruptFileError(
                path, f"shape {arr.shape}, expected {(tokens.shape[0], *shape)} (per token)"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise storage.CorruptFileError(path, "contains NaN or inf")
        out[col] = arr
    return tokens, offsets, labels, out
