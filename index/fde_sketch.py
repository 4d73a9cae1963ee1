"""The Count-Sketch final projection of an FDE (as in the MUVERA reference implementation).

Each FDE coordinate ``i`` goes to one output bucket ``h(i)`` in ``[0, d_final)`` with a sign
``s(i)`` in {-1, +1}: ``out[h(i)] += s(i) * fde[i]``. Unscaled, the inner product of two
sketches is an unbiased estimate of the inner product of the FDEs (the cross terms
``s(i) s(j) q_i d_j`` of colliding coordinates have mean zero), with variance
``(|q|^2 |d|^2 + <q, d>^2 - 2 sum_i q_i^2 d_i^2) / d_final``, the same as the dense +-1
projection scaled by ``1 / sqrt(d_final)``. What it keeps is two arrays of length d_FDE
(int32 buckets, int8 signs): 1.6 MB at the paper's d_FDE = 327,680, where the dense matrix
to 10,240 dimensions takes 3.4 GB as int8 and 13 GB as float32.
"""

from __future__ import annotations

import numpy as np

BUCKETS = "sketch_buckets"
SIGNS = "sketch_signs"
# Bound on the (docs, d_FDE) float32 gather made while sketching a block of FDEs.
_GATHER_BYTES = 32 << 20


def draw_sketch(rng: np.random.Generator, d_fde: int, d_final: int) -> dict[str, np.ndarray]:
    """The bucket (int32 in [0, d_final)) and sign (int8 +-1) of every FDE coordinate."""
    buckets = rng.integers(0, d_final, d_fde, dtype=np.int64).astype(np.int32)
    signs = (2 * rng.integers(0, 2, d_fde, dtype=np.int64) - 1).astype(np.int8)
    return {BUCKETS: buckets, SIGNS: signs}


def check_buckets(arr: np.ndarray, d_final: int) -> None:
    """Raises ValueError unless every bucket id lies in ``[0, d_final)``."""
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= d_final):
        raise ValueError(
            f"FDE matrix {BUCKETS} holds bucket ids outside [0, {d_final}): "
            f"{int(arr.min())}..{int(arr.max())}"
        )


class CountSketch:
    """Applies a Count-Sketch to row blocks: coordinates grouped by bucket once, then each
    block is gathered in that order, signed, and summed per bucket (``np.add.reduceat`` along
    the contiguous axis; float32 throughout, no (rows, d_FDE) index array)."""

    def __init__(self, buckets: np.ndarray, signs: np.ndarray, d_final: int) -> None:
        self.d_final = int(d_final)
        self.d_in = int(buckets.shape[0])
        order = np.argsort(buckets, kind="stable")
        ordered = buckets[order]
        self._order = order
        self._signs = signs[order].astype(np.float32)
        self._starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self._used = ordered[self._starts].astype(np.int64)

    def apply(self, x: np.ndarray, out: np.ndarray) -> None:
        """Writes the sketches of the rows of ``x`` (n, d_in) float32 into ``out`` (n,
        d_final), which must be zero where no coordinate lands."""
        if self.d_in == 0:
            return
        step = max(1, _GATHER_BYTES // (4 * self.d_in))
        for a in range(0, x.shape[0], step):
            g = x[a : a + step, self._order]
            g *= self._signs
            out[a : a + step, self._used] = np.add.reduceat(g, self._starts, axis=1)
