"""Ragged token sets (multi-vector documents and queries): validation and packing; the token
store that multi-vector indexes and collections keep is ``index.tokenstore``'s, re-exported here.

A batch of token sets is packed as ``tokens (T, d)`` plus ``offsets (n + 1,)`` int64; set i is
``tokens[offsets[i]:offsets[i + 1]]`` and holds at least one token.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .carving import ball_carve as ball_carve  # re-exported: MUVERA's, formerly defined here
from .ragged import TokenBlocks as TokenBlocks
from .ragged import offsets_of as offsets_of
from .ragged import ragged_arange as ragged_arange
from .tokenstore import TokenStore as TokenStore


def check_token_sets(x: Any, dim: int, name: str = "documents") -> tuple[np.ndarray, np.ndarray]:
    """Validates a batch of token sets and packs it.

    Args:
        x: a list (or tuple) of (n_i, dim) float arrays, one per set, or an (n, L, dim) array.
        dim: the token dimension.
        name: what to call ``x`` in error messages.

    Returns:
        ``(tokens (T, dim) float32, offsets (n + 1,) int64)``.

    Raises:
        ValueError: an empty batch, a set without tokens, a wrong shape or dimension, NaN/inf.
        TypeError: ``x`` is not a sequence of numeric arrays.

    Example:
        >>> t, o = check_token_sets([np.ones((2, 3)), np.ones((1, 3))], 3)
        >>> t.shape, o.tolist()
        ((3, 3), [0, 2, 3])
    """
    if isinstance(x, np.ndarray):
        if x.ndim != 3:
            raise ValueError(
                f"{name} must be a list of (n_i, {dim}) arrays or an (n, L, {dim}) array, got an "
                f"array of shape {x.shape}; wrap a single token set in a list"
            )
        sets: list[Any] = list(x)
    elif isinstance(x, (list, tuple)):
        sets = list(x)
    else:
        raise TypeError(f"{name} must be a list of (n_i, {dim}) arrays, got {type(x).__name__}")
    if not sets:
        raise ValueError(f"{name} is an empty batch")
    arrays = []
    for i, item in enumerate(sets):
        try:
            a = np.asarray(item, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}[{i}] must be a numeric array: {e}") from None
        if a.ndim != 2:
            raise ValueError(f"{name}[{i}] must be 2-D (n_tokens, {dim}), got shape {a.shape}")
        if a.shape[0] == 0:
            raise ValueError(f"{name}[{i}] has no tokens")
        if a.shape[1] != dim:
            raise ValueError(f"{name}[{i}] has dimension {a.shape[1]}, expected {dim}")
        arrays.append(a)
    lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.ascontiguousarray(np.concatenate(arrays, axis=0))
    bad = ~np.isfinite(tokens).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        i = int(np.searchsorted(offsets, row, side="right")) - 1
        raise ValueError(f"{name}[{i}] token {row - int(offsets[i])} contains NaN or inf")
    return tokens, offsets
