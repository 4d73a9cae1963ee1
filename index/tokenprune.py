"""Token pruning at indexing time: fewer tokens per multi-vector document, by clustering.

Method (after CRISP: Veneroso et al., 2025, "CRISP: Clustering Multi-Vector Representations for
Denoising and Pruning", which clusters a document's token embeddings and keeps the cluster
centroids in place of the tokens; CRISP also trains the encoder with the clustering in the loop,
which this module does not: it is the post-hoc variant, applied to any token encoder's output):

- a document of ``n`` tokens keeps ``m = max(1, ceil((1 - ratio) * n))`` vectors; ``ratio`` is
  the fraction of tokens removed (``prune=0.4`` keeps 60%). A document with ``n <= m`` is kept
  as it is (bit for bit), and ``ratio = 0`` returns the input arrays themselves.
- the ``m`` vectors are the centroids of a k-means with ``k = m`` over the document's tokens:
  initialised by farthest-point traversal (the first centre is the token nearest the document's
  mean, each next one the token farthest from the centres so far: a 2-approximation of the
  k-centre problem, so that no token starts far from a centre), then ``iters`` Lloyd iterations
  (stopping early once the assignment is stable; a cluster left empty keeps its centre).
- ``cosine`` (the collection's metric is cosine: MaxSim over L2-normalised tokens): spherical
  k-means over the normalised tokens, centroids re-normalised; ``ip``: Euclidean k-means over
  the tokens as given, centroids as means.

Deterministic: no random numbers, float64 arithmetic per document in a fixed order, so the same
token sets give bit-identical output on the same machine. A collection prunes before it writes
its log (``engine.writing``), so the log holds what is stored and replay never prunes again.

Example:
    >>> x = np.eye(4, dtype=np.float32)
    >>> t, o = prune_token_sets(x, np.array([0, 4]), 0.5)
    >>> t.shape, o.tolist()
    ((2, 4), [0, 2])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["check_ratio", "cluster_tokens", "kept_counts", "prune_token_sets"]

ITERS = 10  # Lloyd iterations (most documents settle in fewer)


def check_ratio(value: Any, name: str = "prune") -> float:
    """A pruning ratio: the fraction of tokens removed, in [0, 1).

    Raises:
        ValueError: not a number, or outside [0, 1) (the message names ``name``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be a fraction of tokens to remove in [0, 1), got {value!r}"
            ) from None
    r = float(value)
    if not (0.0 <= r < 1.0):
        raise ValueError(f"{name} must be a fraction of tokens to remove in [0, 1), got {value!r}")
    return r


def kept_counts(lengths: np.ndarray, ratio: float) -> np.ndarray:
    """Tokens kept per document: ``max(1, ceil((1 - ratio) * n))``, never more than ``n``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if ratio == 0.0:
        return lengths.copy()
    keep = np.array([math.ceil((1.0 - ratio) * int(n)) for n in lengths], dtype=np.int64)
    return np.minimum(np.maximum(keep, 1), lengths)


def cluster_tokens(x: np.ndarray, k: int, cosine: bool = True, iters: int = ITERS) -> np.ndarray:
    """``k`` centroids of one document's (n, d) tokens (``k < n``), as (k, d) float32.

    Args:
        x: the tokens.
        k: how many centroids, 1 <= k < n.
        cosine: spherical k-means over normalised tokens, normalised centroids; else Euclidean.
        iters: at most this many Lloyd iterations.
    """
    a = np.asarray(x, dtype=np.float64)
    if cosine:
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    n = a.shape[0]
    sq = np.einsum("ij,ij->i", a, a)
    # Farthest-point initialisation from the token nearest the mean.
    mean = a.mean(axis=0)
    first = int(np.argmin(sq - 2.0 * (a @ mean)))
    chosen = [first]
    dist = np.maximum(sq - 2.0 * (a @ a[first]) + sq[first], 0.0)
    for _ in range(1, k):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.maximum(sq - 2.0 * (a @ a[nxt]) + sq[nxt], 0.0))
    centres = a[np.asarray(chosen)].copy()
    assign = np.full(n, -1, dtype=np.int64)
    for _ in range(iters):
        if cosine:
            new = np.argmax(a @ centres.T, axis=1)
        else:
            csq = np.einsum("ij,ij->i", centres, centres)
            new = np.argmin(csq[None, :] - 2.0 * (a @ centres.T), axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        # Per-cluster sums in token order (a stable sort, then one reduceat): exact and fast.
        order = np.argsort(assign, kind="stable")
        counts = np.bincount(assign, minlength=k)
        full = np.flatnonzero(counts)
        starts = np.concatenate(([0], np.cumsum(counts[full])[:-1]))
        centres[full] = np.add.reduceat(a[order], starts, axis=0) / counts[full, None]
        if cosine:
            centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    return centres.astype(np.float32)


def prune_token_sets(
    tokens: np.ndarray, offsets: np.ndarray, ratio: float, *, cosine: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Prunes a packed batch of token sets (``index.tokens``: tokens (T, d), offsets (n + 1,)).

    Args:
        tokens: every set's tokens concatenated, float32.
        offsets: set i is ``tokens[offsets[i]:offsets[i + 1]]``.
        ratio: the fraction of tokens to remove, in [0, 1); 0 returns the inputs themselves.
        cosine: whether the collection scores normalised tokens (see the module docstring).

    Returns:
        ``(tokens (T', d) float32, offsets (n + 1,) int64)``: each set's centroids, or the set
        itself where it keeps every token.

    Raises:
        ValueError: ``ratio`` outside [0, 1).
    """
    ratio = check_ratio(ratio)
    if ratio == 0.0:
        return tokens, offsets
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    keep = kept_counts(lengths, ratio)
    out_off = np.zeros_like(offsets)
    np.cumsum(keep, out=out_off[1:])
    out = np.empty((int(out_off[-1]), tokens.shape[1]), dtype=np.float32)
    for i in range(lengths.shape[0]):
        a, b = int(offsets[i]), int(offsets[i + 1])
        m = int(keep[i])
        if m >= b - a:
            out[out_off[i] : out_off[i + 1]] = tokens[a:b]
        else:
            out[out_off[i] : out_off[i + 1]] = cluster_tokens(tokens[a:b], m, cosine)
    return out, out_off
