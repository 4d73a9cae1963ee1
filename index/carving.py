"""MUVERA's query-side ball carving (Dhulipala et al., NeurIPS 2024, section 3.2): clusters of a
query's tokens are summed before the exact Chamfer rerank, to cut its cost (``muvera:tau=70``)."""

from __future__ import annotations

import numpy as np

from .ragged import ragged_arange


def ball_carve(
    tokens: np.ndarray, offsets: np.ndarray, tau: float
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy ball carving of each token set (MUVERA, section 3.2), to cut rerank cost.

    The first token not yet taken becomes a centre; every untaken token whose cosine to it is
    >= ``tau`` joins its cluster; each cluster is replaced by the sum of its tokens. Vectorised
    across sets: the loop runs once per cluster rank (at most the longest set's length).

    Returns:
        ``(tokens, offsets)`` of the carved sets, clusters in order of their centres.

    Example:
        >>> t = np.array([[1, 0], [1, 0.5], [0, 1]], dtype=np.float32)
        >>> ball_carve(t, np.array([0, 3]), 0.7)[0].tolist()
        [[2.0, 0.5], [0.0, 1.0]]
    """
    m = offsets.shape[0] - 1
    lens = np.diff(offsets)
    width = int(lens.max())
    d = tokens.shape[1]
    pos = ragged_arange(np.arange(m) * width, lens)
    unit = np.zeros((m * width, d), dtype=np.float32)
    norms = np.linalg.norm(tokens, axis=1, keepdims=True)
    unit[pos] = tokens / np.where(norms > 0, norms, 1)
    unit = unit.reshape(m, width, d)
    sim = unit @ unit.transpose(0, 2, 1)  # (m, width, width)
    free = np.zeros((m, width), dtype=bool)
    free.reshape(-1)[pos] = True
    cluster = np.full((m, width), -1, dtype=np.int64)
    rows = np.arange(m)
    for rank in range(width):
        active = np.any(free, axis=1, keepdims=True)
        if not active.any():
            break
        centre = np.argmax(free, axis=1)
        members: np.ndarray = free & (sim[rows, centre] >= tau)
        members[rows, centre] = free[rows, centre]  # a centre always joins its own cluster
        members &= active
        cluster[members] = rank
        free &= ~members
    # Sum tokens per (set, cluster), in order.
    cl = cluster.reshape(-1)[pos]
    set_of = np.repeat(np.arange(m, dtype=np.int64), lens)
    key = set_of * width + cl
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    carved = np.add.reduceat(tokens[order], starts, axis=0)
    counts = np.bincount(ordered[starts] // width, minlength=m)
    new_off = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=new_off[1:])
    return np.ascontiguousarray(carved, dtype=np.float32), new_off
