"""Input checks shared by every index; errors name the offending argument."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_vectors(x: Any, dim: int, name: str = "vectors") -> np.ndarray:
    """Returns ``x`` as a C-contiguous float32 (n, dim) array, or raises naming the problem.

    Raises:
        ValueError: on an empty batch, a wrong shape or dimension, or NaN/inf values.
        TypeError: when ``x`` is not numeric.
    """
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be numeric arrays: {e}") from None
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, {dim}), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}, expected {dim}")
    if not np.isfinite(arr).all():
        bad = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise ValueError(f"{name} row {bad} contains NaN or inf")
    return np.ascontiguousarray(arr)


def check_labels(labels: Any, n: int) -> np.ndarray:
    """Returns ``labels`` as an int64 (n,) array of unique non-negative values."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"labels must be non-negative, got {int(arr.min())}")
    if np.unique(arr).size != arr.size:
        raise ValueError("labels contain duplicates within one call")
    return arr


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return int(k)


def allowed_array(allowed: Any) -> np.ndarray | None:
    """Normalises an ``allowed`` argument (None, iterable of labels, array) to sorted int64."""
    if allowed is None:
        return None
    if isinstance(allowed, (set, frozenset)):
        allowed = list(allowed)
    try:
        arr = np.asarray(allowed)
    except (TypeError, ValueError) as e:
        raise TypeError(f"allowed must hold integer labels: {e}") from None
    # Casting straight to int64 would quietly turn [1.5] into label 1.
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"allowed must hold integer labels, got dtype {arr.dtype}")
    return np.unique(arr.astype(np.int64).reshape(-1))
