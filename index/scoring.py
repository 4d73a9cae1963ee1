"""Exact scoring kernels in torch: batched matmul + top-k in bounded-memory chunks.

One device is chosen once per process: CUDA (float16 storage, float32 accumulation of the top-k)
when a GPU is present, the CPU (float32) otherwise. ``VECDEX_DEVICE=cpu|cuda`` overrides.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from .metric import Metric

# Bytes one score block (query chunk x base chunk) may take; bounds the memory of every search.
DEFAULT_BLOCK_BYTES = 256 << 20
DEFAULT_QUERY_CHUNK = 4096


@functools.lru_cache(maxsize=1)
def device() -> torch.device:
    """The scoring device, chosen once: ``VECDEX_DEVICE`` if set, else CUDA when available."""
    wanted = os.environ.get("VECDEX_DEVICE", "").strip().lower()
    if wanted not in ("", "cpu", "cuda"):
        raise ValueError(f"VECDEX_DEVICE must be 'cpu' or 'cuda', got {wanted!r}")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("VECDEX_DEVICE=cuda but torch sees no CUDA device")
    if wanted == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def storage_dtype(dev: torch.device) -> torch.dtype:
    return torch.float16 if dev.type == "cuda" else torch.float32


def to_device(x: np.ndarray, dev: torch.device | None = None) -> torch.Tensor:
    """Moves float32 vectors to the scoring device (zero-copy on the CPU)."""
    dev = dev or device()
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if dev.type == "cpu":
        return t
    return t.to(dev, dtype=storage_dtype(dev), non_blocking=True)


def _scores(q: torch.Tensor, b: torch.Tensor, metric: Metric, b_sq: torch.Tensor | None):
    s = q @ b.T
    if s.dtype != torch.float32:
        s = s.float()
    if metric is Metric.L2:
        # -(|q|^2 - 2 q.b + |b|^2), kept in float32.
        q32 = q.float()
        s = 2.0 * s - (q32 * q32).sum(1, keepdim=True)
        s = s - b_sq[None, :]  # type: ignore[index]
    return s


def topk(
    queries: np.ndarray,
    base: torch.Tensor,
    k: int,
    metric: Metric,
    *,
    base_sq_norms: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    base_chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``queries`` against the rows of ``base``.

    Args:
        queries: (m, d) float32, already prepared for ``metric`` (normalised for cosine).
        base: (n, d) tensor on the scoring device.
        k: neighbours per query.
        metric: how to score; L2 needs ``base_sq_norms`` (n,) float32 on the device.
        valid: optional (n,) bool tensor; rows where it is False are never returned.
        block_bytes: memory bound for one score block.
        query_chunk: most queries scored at once.
        base_chunk: rows scored at once (derived from ``block_bytes`` when None).

    Returns:
        ``(scores (m, k) float32, rows (m, k) int64)``, best first; rows is -1 and the score
        -inf where fewer than k valid rows exist.
    """
    m = queries.shape[0]
    n = base.shape[0]
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    out_i = np.full((m, k), -1, dtype=np.int64)
    if n == 0 or m == 0:
        return out_s, out_i
    if metric is Metric.L2 and base_sq_norms is None:
        base_sq_norms = (base.float() ** 2).sum(1)
    qc = max(1, min(query_chunk, m))
    bc = base_chunk or max(k, block_bytes // (4 * qc))
    bc = max(1, min(bc, n))
    dev = base.device
    kk = min(k, n)
    for q0 in range(0, m, qc):
        q = to_device(queries[q0 : q0 + qc], dev)
        best_s: torch.Tensor | None = None
        best_i: torch.Tensor | None = None
        for b0 in range(0, n, bc):
            b1 = min(n, b0 + bc)
            sq = base_sq_norms[b0:b1] if base_sq_norms is not None else None
            s = _scores(q, base[b0:b1], metric, sq)
            if valid is not None:
                s.masked_fill_(~valid[b0:b1][None, :], float("-inf"))
            cs, ci = torch.topk(s, min(kk, b1 - b0), dim=1)
            ci += b0
            if best_s is None:
                best_s, best_i = cs, ci
            else:
                cat_s = torch.cat([best_s, cs], 1)
                cat_i = torch.cat([best_i, ci], 1)  # type: ignore[list-item]
                best_s, pos = torch.topk(cat_s, min(kk, cat_s.shape[1]), dim=1)
                best_i = torch.gather(cat_i, 1, pos)
        assert best_s is not None and best_i is not None
        rows = best_i.cpu().numpy()
        sc = best_s.cpu().numpy()
        w = rows.shape[1]
        rows = np.where(np.isfinite(sc), rows, -1)
        out_s[q0 : q0 + qc, :w] = np.where(rows >= 0, sc, -np.inf)
        out_i[q0 : q0 + qc, :w] = rows
    return out_s, out_i
