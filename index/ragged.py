"""Ragged arrays as flat index ranges: the packing arithmetic behind token sets
(``tokens[offsets[i]:offsets[i + 1]]``, see ``index.tokens``), and ``TokenBlocks``, token rows
read by block or gathered without one contiguous array behind them."""

from __future__ import annotations

from typing import Any

import numpy as np


def ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for each pair, without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """Offsets (n + 1,) int64 of sets with the given token counts."""
    offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class TokenBlocks:
    """Per-token rows that scoring reads by block or by gathered index without one contiguous
    array behind them (``index.scoring``'s Chamfer kernels take one in place of ``d_tokens``).

    ``shape`` is ``(T, d)``; ``block(t0, t1)`` returns rows ``t0:t1`` and ``rows(idx)`` the
    rows ``idx``, each as a numpy array or a torch tensor the kernels move to their device.
    """

    shape: tuple[int, int]

    def block(self, t0: int, t1: int) -> Any:
        raise NotImplementedError

    def rows(self, idx: np.ndarray) -> Any:
        raise NotImplementedError
