"""Exact scoring kernels in torch: batched matmul + top-k in bounded-memory chunks.

One device is chosen once per process: CUDA (float16 storage, float32 accumulation of the top-k)
when a GPU is present, the CPU (float32) otherwise. ``VECDEX_DEVICE=cpu|cuda`` overrides.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import numpy as np
import torch

from .metric import Metric
from .ragged import ragged_arange
from .tokens import TokenBlocks

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


# ---- multi-vector (Chamfer / MaxSim) ------------------------------------------------------------
# Documents and queries are ragged token sets: ``tokens (T, d)`` with ``offsets (n + 1,)`` int64,
# set i being ``tokens[offsets[i]:offsets[i + 1]]``. Chamfer(q, D) = sum over query tokens of the
# max dot product over the document's tokens. Every document must hold at least one token.
# Document tokens may be a numpy array (float16, possibly memory-mapped), a tensor, or a
# ``TokenBlocks`` (``index.tokens``: a store's segments, or compact codes dequantized per block).
DocTokens = np.ndarray | torch.Tensor | TokenBlocks


def _tokens_on_device(x: np.ndarray | torch.Tensor, dev: torch.device) -> torch.Tensor:
    """Token rows (any float dtype, numpy or torch) as a scoring-device tensor."""
    want = storage_dtype(dev)
    if isinstance(x, torch.Tensor):
        return x.to(dev, dtype=want, non_blocking=True)
    arr = np.ascontiguousarray(x)
    if dev.type == "cpu":
        if arr.dtype != np.float32 or not arr.flags.writeable:
            arr = arr.astype(np.float32)  # a copy (a memory map is read-only)
        return torch.from_numpy(arr)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr).to(dev, dtype=want, non_blocking=True)


def to_scoring_tokens(x: np.ndarray | TokenBlocks) -> torch.Tensor:
    """Token rows (e.g. float16, memory-mapped, or a store's segments) as one scoring-device
    tensor, converted in bounded slices."""
    dev = device()
    out = torch.empty((x.shape[0], x.shape[1]), dtype=storage_dtype(dev), device=dev)
    step = max(1, (64 << 20) // max(1, 4 * x.shape[1]))
    for a in range(0, x.shape[0], step):
        b = min(x.shape[0], a + step)
        out[a:b] = _tokens_on_device(_block_rows(x, a, b), dev)
    return out


def _block_rows(x: DocTokens, t0: int, t1: int) -> np.ndarray | torch.Tensor:
    return x.block(t0, t1) if isinstance(x, TokenBlocks) else x[t0:t1]


def _take_rows(x: DocTokens, idx: np.ndarray) -> np.ndarray | torch.Tensor:
    if isinstance(x, TokenBlocks):
        return x.rows(idx)
    if isinstance(x, torch.Tensor):
        return x.index_select(0, torch.from_numpy(idx).to(x.device))
    return x[idx]


def _segment_max(s: torch.Tensor, lengths: np.ndarray) -> torch.Tensor:
    """Max over consecutive row segments: (rows, cols) -> (segments, cols); -inf if empty."""
    lens = torch.from_numpy(np.ascontiguousarray(lengths, dtype=np.int64)).to(s.device)
    return torch.segment_reduce(s, "max", lengths=lens, axis=0, unsafe=True)


def _query_sums(maxes: torch.Tensor, q_lens: np.ndarray) -> torch.Tensor:
    """(docs, query tokens) maxima -> (queries, docs) Chamfer sums, in float32."""
    lens = torch.from_numpy(np.ascontiguousarray(q_lens, dtype=np.int64)).to(maxes.device)
    return torch.segment_reduce(maxes.float().T.contiguous(), "sum", lengths=lens, axis=0)


def _doc_chunks(d_offsets: np.ndarray, max_tokens: int, max_docs: int | None) -> list[int]:
    """Document boundaries so that each chunk holds at most ``max_tokens`` tokens (at least one
    document) and at most ``max_docs`` documents."""
    n = d_offsets.shape[0] - 1
    bounds = [0]
    while bounds[-1] < n:
        a = bounds[-1]
        b = int(np.searchsorted(d_offsets, d_offsets[a] + max_tokens, side="right")) - 1
        b = max(a + 1, min(b, n))
        if max_docs is not None:
            b = min(b, a + max_docs)
        bounds.append(b)
    return bounds


def chamfer_matrix(
    q_tokens: np.ndarray,
    q_offsets: np.ndarray,
    d_tokens: DocTokens,
    d_offsets: np.ndarray,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    query_chunk: int | None = None,
    doc_chunk: int | None = None,
) -> np.ndarray:
    """Chamfer similarity of every query against every document.

    Args:
        q_tokens: (M, d) query tokens; q_offsets: (m + 1,) int64 boundaries.
        d_tokens: (T, d) document tokens (numpy, possibly memory-mapped float16, a tensor, or
            a ``TokenBlocks``);
            d_offsets: (n + 1,) int64 boundaries. Every document holds at least one token.
        block_bytes: memory bound for one score block.
        query_chunk: most queries scored at once; doc_chunk: most documents scored at once
            (both derived from ``block_bytes`` when None).

    Returns:
        (m, n) float32 scores.

    Example:
        >>> q = np.eye(2, dtype=np.float32)
        >>> chamfer_matrix(q, np.array([0, 2]), q, np.array([0, 1, 2]))
        array([[1., 1.]], dtype=float32)
    """
    m = q_offsets.shape[0] - 1
    n = d_offsets.shape[0] - 1
    out = np.empty((m, n), dtype=np.float32)
    for q0, q1, d0, d1, s in _chamfer_blocks(
        q_tokens, q_offsets, d_tokens, d_offsets, block_bytes, query_chunk, doc_chunk
    ):
        out[q0:q1, d0:d1] = s.cpu().numpy()
    return out


def _chamfer_blocks(
    q_tokens: np.ndarray,
    q_offsets: np.ndarray,
    d_tokens: DocTokens,
    d_offsets: np.ndarray,
    block_bytes: int,
    query_chunk: int | None,
    doc_chunk: int | None,
) -> Iterator[tuple[int, int, int, int, torch.Tensor]]:
    """Yields ``(q0, q1, d0, d1, scores (q1 - q0, d1 - d0) float32 tensor)`` blocks, documents
    in the outer loop so that each document chunk moves to the device once."""
    dev = device()
    m = q_offsets.shape[0] - 1
    n = d_offsets.shape[0] - 1
    if m == 0 or n == 0:
        return
    q_lens = np.diff(q_offsets)
    # Query chunks hold at most ~1024 tokens; a document chunk then fits the block budget.
    qc = query_chunk or max(1, 1024 // max(1, int(q_lens.max())))
    q_bounds = list(range(0, m, qc)) + [m]
    q_dev = [
        _tokens_on_device(q_tokens[q_offsets[a] : q_offsets[b]], dev)
        for a, b in zip(q_bounds[:-1], q_bounds[1:], strict=True)
    ]
    widest = int(np.diff(q_offsets[q_bounds]).max())
    max_tokens = max(1, block_bytes // (4 * max(1, widest)))
    d_bounds = _doc_chunks(d_offsets, max_tokens, doc_chunk)
    for d0, d1 in zip(d_bounds[:-1], d_bounds[1:], strict=True):
        t0, t1 = int(d_offsets[d0]), int(d_offsets[d1])
        docs = _tokens_on_device(_block_rows(d_tokens, t0, t1), dev)
        d_lens = np.diff(d_offsets[d0 : d1 + 1])
        for (a, b), q in zip(zip(q_bounds[:-1], q_bounds[1:], strict=True), q_dev, strict=True):
            maxes = _segment_max(docs @ q.T, d_lens)  # (docs, query tokens)
            yield a, b, d0, d1, _query_sums(maxes, q_lens[a:b])


def chamfer_topk(
    q_tokens: np.ndarray,
    q_offsets: np.ndarray,
    d_tokens: DocTokens,
    d_offsets: np.ndarray,
    k: int,
    *,
    valid: np.ndarray | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    query_chunk: int | None = None,
    doc_chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive Chamfer top-k of each query over all documents, in bounded memory.

    Args: as for ``chamfer_matrix``, plus ``k`` and ``valid`` ((n,) bool: documents where it is
        False are never returned).

    Returns:
        ``(scores (m, k) float32, rows (m, k) int64)``, best first; -inf / -1 padded.
    """
    m = q_offsets.shape[0] - 1
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    out_i = np.full((m, k), -1, dtype=np.int64)
    best: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    valid_t = torch.from_numpy(np.asarray(valid, dtype=bool)) if valid is not None else None
    for q0, _q1, d0, d1, s in _chamfer_blocks(
        q_tokens, q_offsets, d_tokens, d_offsets, block_bytes, query_chunk, doc_chunk
    ):
        if valid_t is not None:
            s.masked_fill_(~valid_t[d0:d1].to(s.device)[None, :], float("-inf"))
        cs, ci = torch.topk(s, min(k, d1 - d0), dim=1)
        ci += d0
        if q0 in best:
            ps, pi = best[q0]
            cs, ci = torch.cat([ps, cs], 1), torch.cat([pi, ci], 1)
            cs, pos = torch.topk(cs, min(k, cs.shape[1]), dim=1)
            ci = torch.gather(ci, 1, pos)
        best[q0] = (cs, ci)
    for q0, (cs, ci) in best.items():
        sc, rows = cs.cpu().numpy(), ci.cpu().numpy()
        ok = np.isfinite(sc)
        out_s[q0 : q0 + sc.shape[0], : sc.shape[1]] = np.where(ok, sc, -np.inf)
        out_i[q0 : q0 + sc.shape[0], : sc.shape[1]] = np.where(ok, rows, -1)
    return out_s, out_i


def chamfer_pairs(
    q_tokens: np.ndarray,
    q_offsets: np.ndarray,
    d_tokens: DocTokens,
    d_offsets: np.ndarray,
    rows: np.ndarray,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    query_chunk: int | None = None,
) -> np.ndarray:
    """Chamfer similarity of each query against its own candidate documents (the rerank).

    Each query chunk is one batched matmul: query j's candidates' tokens are gathered into one
    block (padded to the longest block of the chunk), ``bmm`` with the zero-padded query tokens
    (a zero query token adds max_p <0, p> = 0), then a segment max per candidate and a sum.

    Args:
        q_tokens, q_offsets: the queries (see ``chamfer_matrix``).
        d_tokens, d_offsets: all documents (numpy, possibly memory-mapped float16, a tensor,
            or a ``TokenBlocks``).
        rows: (m, c) int64 document rows per query; -1 marks no candidate.
        block_bytes: memory bound for one chunk's gathered tokens and score block.
        query_chunk: most queries per chunk (derived from ``block_bytes`` when None).

    Returns:
        (m, c) float32 scores; -inf where ``rows`` is -1.
    """
    dev = device()
    m, c = rows.shape
    out = np.full((m, c), -np.inf, dtype=np.float32)
    if m == 0 or c == 0:
        return out
    d = q_tokens.shape[1]
    q_lens = np.diff(q_offsets)
    ok = rows >= 0
    safe = np.where(ok, rows, 0)
    pair_lens = np.where(ok, d_offsets[safe + 1] - d_offsets[safe], 0)  # (m, c)
    per_query = pair_lens.sum(1)
    # Bytes per query in a chunk: gathered tokens (float32) plus the score block.
    widest_q = int(q_lens.max())
    cost = (4 * d + 4 * widest_q) * max(1, int(per_query.max()))
    qc = query_chunk or max(1, block_bytes // cost)
    for a in range(0, m, qc):
        b = min(m, a + qc)
        width = max(1, int(per_query[a:b].max()))
        mq = int(q_lens[a:b].max())
        # Gather: query j's block holds its candidates' tokens, then padding (token 0).
        lens = pair_lens[a:b]
        tok_idx = ragged_arange(d_offsets[safe[a:b]].ravel(), lens.ravel())
        pad = width - per_query[a:b]
        slot = ragged_arange(np.arange(b - a) * width, per_query[a:b])
        flat = np.zeros((b - a) * width, dtype=np.int64)
        flat[slot] = tok_idx
        docs = _tokens_on_device(_take_rows(d_tokens, flat), dev).view(b - a, width, d)
        qpad = np.zeros((b - a, mq, d), dtype=np.float32)
        qi = ragged_arange(q_offsets[a:b], q_lens[a:b])
        qpad.reshape(-1, d)[ragged_arange(np.arange(b - a) * mq, q_lens[a:b])] = q_tokens[qi]
        q = _tokens_on_device(qpad, dev)
        s = torch.bmm(docs, q.transpose(1, 2)).reshape((b - a) * width, mq)
        # Segments: each query's c candidates (empty where -1), then its padding segment.
        seg = np.concatenate([lens, pad[:, None]], axis=1).ravel()
        maxes = _segment_max(s, seg).view(b - a, c + 1, mq)[:, :c].float()
        scores = maxes.sum(2)
        out[a:b] = np.where(ok[a:b], scores.cpu().numpy(), -np.inf)
    return out
