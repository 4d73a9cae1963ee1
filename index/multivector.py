"""The multi-vector (late-interaction) family: ``MultiVectorIndex``, the base of ``muvera``,
``chamfer`` and ``token_ann`` (one file each).

Protocol (the single-vector one, with token sets in place of vectors):
``add(list of (n_i, d) arrays, labels)``, ``remove(labels)``,
``search(list of (m_j, d) arrays, k, *, allowed=None, **params) -> (scores (m, k), labels (m, k))``
with -1 / -inf padding and scores = Chamfer similarity (sum over query tokens of the max dot
product over the document's tokens; higher is better), ``save(dir)``, ``load(dir)``. ``metric``
is ``cosine`` (tokens are L2-normalised on the way in) or ``ip`` (tokens are taken as they are).
Parameters, filtering, save and load are ``BaseIndex``'s (``index.base``), as for single vectors.

Every kind takes ``tokens=f16|int8|res4|res2``: what the rerank scores. ``f16`` (the default,
left out of the spec) scores the stored float16 tokens; the others keep compact codes in RAM
beside them (``index.token_codes``) and score those, the full tokens staying on disk
(memory-mapped once saved, read by nothing but the next save).

Every kind also takes ``prune=R`` (0 <= R < 1, default 0, left out of the spec): a collection
with this index removes a fraction R of each document's tokens at write time, keeping
``max(1, ceil((1 - R) n))`` k-means centroids per document (``index.tokenprune``), before the
write is logged and stored. The index records the ratio and offers ``prune``; its own ``add``
stores what it is given (call ``idx.prune`` first when using an index on its own). Queries are
never pruned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .base import BaseIndex, empty_result
from .metric import Metric, normalize_rows
from .ragged import ragged_arange
from .token_codes import make_codec
from .tokenprune import check_ratio, prune_token_sets
from .tokens import TokenBlocks, TokenStore, check_token_sets

# A packed batch of token sets: ``(tokens (T, d), offsets (n + 1,))`` (see ``index.tokens``).
TokenSets = tuple[np.ndarray, np.ndarray]


def top_k(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of each row of (m, c) scores; -1 / -inf padded (``labels`` -1 = no candidate)."""
    m, c = scores.shape
    out_s, out_l = empty_result(m, k)
    if c == 0:
        return out_s, out_l
    kk = min(k, c)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < c else np.arange(c)[None, :]
    part = np.broadcast_to(part, (m, kk))
    s = np.take_along_axis(scores, part, 1)
    order = np.argsort(-s, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, 1)
    s = np.take_along_axis(scores, idx, 1)
    lab = np.take_along_axis(labels, idx, 1)
    ok = np.isfinite(s) & (lab >= 0)
    out_s[:, :kk] = np.where(ok, s, -np.inf)
    out_l[:, :kk] = np.where(ok, lab, -1)
    return out_s, out_l


class _Subset(TokenBlocks):
    """Rows ``idx`` of a ``TokenBlocks``, renumbered from 0 (exact search over some labels)."""

    def __init__(self, inner: TokenBlocks, idx: np.ndarray) -> None:
        self._inner, self._idx = inner, idx
        self.shape = (idx.shape[0], inner.shape[1])

    def block(self, t0: int, t1: int) -> Any:
        return self._inner.rows(self._idx[t0:t1])

    def rows(self, idx: np.ndarray) -> Any:
        return self._inner.rows(self._idx[idx])


class MultiVectorIndex(BaseIndex[TokenSets]):
    """Base of every multi-vector index: token storage (float16, memory-mapped once saved or
    loaded, with compact codes in RAM when ``tokens`` asks), exact Chamfer scoring and rerank,
    on top of ``BaseIndex``.

    Subclasses declare ``kind``, ``config_keys`` (defaults, canonical order; ``tokens`` last)
    and ``search_keys``, and implement ``_search`` (and ``_add_extra`` / ``_remove_extra`` /
    ``_save_extra`` / ``_load_extra`` when they keep more than the tokens).
    """

    multi_vector = True
    item_name = "documents"
    config_keys: ClassVar[dict[str, Any]] = {"prune": 0.0, "tokens": "f16"}
    file_parts: ClassVar[dict[str, str]] = {
        "tokens.npy": "tokens",
        "offsets.npy": "tokens",
        "labels.npy": "labels",
        # Compact codes (``index.token_codes``): per-token columns and the codebook.
        **{n: "codes" for n in ("codes.npy", "scales.npy", "centroid_ids.npy")},
        **{n: "codes" for n in ("centroids.npy", "cutoffs.npy", "buckets.npy")},
    }
    # The full tokens are memory-mapped (only numpy reads them): a quick open checks their size.
    mapped_files: ClassVar[frozenset[str]] = frozenset({"tokens.npy"})
    # An allowed set at most this large is scored exactly (Chamfer over the subset).
    exact_filter_max: ClassVar[int] = 1024
    exact_filter_fraction: ClassVar[float] = 0.0

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        if self.metric is Metric.L2:
            raise ValueError(f"{self.kind} scores by inner product: metric must be cosine or ip")
        self._codec = make_codec(self.params["tokens"], self.dim, self.metric is Metric.COSINE)
        self._store = TokenStore(self.dim, columns=self._codec.columns() if self._codec else None)

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        if "prune" in params:
            name = f"{self.kind} parameter prune"
            params = {**params, "prune": check_ratio(params["prune"], name)}
        return super()._check_params(params)

    @property
    def spec(self) -> str:
        """The canonical spec string; ``tokens=f16`` and ``prune=0.0`` (the defaults) are left
        out, so specs from before the options read the same."""
        defaults = {"tokens": "f16", "prune": 0.0}
        params = {k: v for k, v in self.params.items() if k not in defaults or defaults[k] != v}
        return self.kind + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")

    def __len__(self) -> int:
        return len(self._store)

    @property
    def prune_ratio(self) -> float:
        """The fraction of each document's tokens a collection removes at write time (0: none)."""
        return float(self.params["prune"])

    def prune(self, tokens: np.ndarray, offsets: np.ndarray) -> TokenSets:
        """A packed batch of token sets pruned by ``prune_ratio`` (``index.tokenprune``); with
        ratio 0, the same arrays. Clusters normalised tokens when the metric is cosine."""
        return prune_token_sets(
            tokens, offsets, self.prune_ratio, cosine=self.metric is Metric.COSINE
        )

    def contains(self, labels: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``labels`` are live in the index."""
        return self._store.contains(np.asarray(labels, dtype=np.int64).reshape(-1))

    def labels(self) -> np.ndarray:
        """All live labels (int64)."""
        return self._store.live_labels()

    @property
    def num_tokens(self) -> int:
        """Tokens stored for live documents."""
        return self._store.n_tokens - self._store.dead_tokens

    def _ram_parts(self) -> dict[str, int]:
        """tokens: the float16 token store with its offsets (0 for tokens memory-mapped from
        the saved file: only sets added since are in RAM); labels: labels and tombstones;
        codes: the compact codes scoring reads, with their codebook (``tokens`` other than
        f16). Kinds add theirs."""
        tokens, labels = self._store.ram_bytes()
        parts = {"tokens": tokens, "labels": labels}
        if self._codec is not None:
            codes = sum(self._store.column_ram(c) for c in self._codec.columns())
            parts["codes"] = codes + self._codec.codebook_ram()
        return parts

    def scoring_tokens(self) -> TokenBlocks:
        """Every stored token (global positions, dead sets included) as scoring reads it: the
        float16 tokens, or the compact codes decoded block by block."""
        if self._codec is not None:
            return self._codec.blocks(self._store)
        return self._store.blocks()

    def _prepare(self, tokens: np.ndarray) -> np.ndarray:
        return normalize_rows(tokens) if self.metric is Metric.COSINE else tokens

    # ---- exact scoring -----------------------------------------------------------------------
    def search_exact(
        self, q: np.ndarray, q_off: np.ndarray, k: int, labels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exhaustive Chamfer over the given live labels (all when None); q already prepared."""
        from . import scoring  # torch loads with the first scoring, not with the package

        s = self._store
        if labels is None:
            valid = s.alive if s.has_dead() else None
            scores, rows = scoring.chamfer_topk(
                q, q_off, self.scoring_tokens(), s.offsets, k, valid=valid
            )
            return scores, np.where(rows >= 0, s.lab[np.maximum(rows, 0)], -1)
        rows = s.row_of(labels)
        lens = s.lengths(rows)
        idx = ragged_arange(s.offsets[rows], lens)
        offsets = np.zeros(lens.shape[0] + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        tokens = _Subset(self.scoring_tokens(), idx)
        scores, rows = scoring.chamfer_topk(q, q_off, tokens, offsets, k)
        return scores, np.where(rows >= 0, labels[np.maximum(rows, 0)], -1)

    def rerank(
        self, q: np.ndarray, q_off: np.ndarray, candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact Chamfer of each query against its (m, c) candidate labels (-1 = none); top k."""
        from . import scoring

        rows = self._store.row_of(candidates)
        tokens, offsets = self.scoring_tokens(), self._store.offsets
        scores = scoring.chamfer_pairs(q, q_off, tokens, offsets, rows)
        return top_k(scores, np.where(rows >= 0, candidates, -1), k)

    # ---- BaseIndex's hooks -------------------------------------------------------------------
    def _check_batch(self, items: Any, name: str) -> tuple[TokenSets, int]:
        tokens, offsets = check_token_sets(items, self.dim, name)
        return (tokens, offsets), offsets.shape[0] - 1

    def _prepare_batch(self, batch: TokenSets) -> TokenSets:
        return self._prepare(batch[0]), batch[1]

    def _search_exact(
        self, q: TokenSets, k: int, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.search_exact(q[0], q[1], k, labels)

    def _add(self, batch: TokenSets, labels: np.ndarray) -> None:
        tokens, offsets = batch
        self._add_extra(tokens, offsets, labels)
        codes = self._codec.encode(tokens) if self._codec is not None else None
        self._store.append(tokens, offsets, labels, codes)
        if self._codec is not None:
            self._codec.after_append(self._store)

    def _remove(self, labels: np.ndarray) -> None:
        self._remove_extra(labels)
        self._store.remove(labels)

    def _save_files(self, directory: Path) -> list[str]:
        names = self._store.save(directory)
        if self._codec is not None:
            names += self._codec.save(directory)
        return names + self._save_extra(directory)

    def _load_files(self, directory: Path, manifest: dict[str, Any]) -> None:
        self._store.load(directory)
        if self._codec is not None:
            state = manifest.get("token_codes")
            if not isinstance(state, dict) or state.get("name") != self._codec.name:
                raise ValueError(f"token_codes {state!r} do not fit tokens={self._codec.name}")
            self._codec.load(directory, self._store, state)
        self._load_extra(directory, manifest)

    def _manifest_fields(self, directory: Path) -> dict[str, Any]:
        fields: dict[str, Any] = {"tokens": self._store.n_tokens}
        if self._codec is not None:
            fields["token_codes"] = self._codec.state()
        return fields

    # ---- what subclasses implement -----------------------------------------------------------
    def _add_extra(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        """Called before the tokens are stored (they are already validated and prepared)."""
        return None

    def _remove_extra(self, labels: np.ndarray) -> None:
        """Called before the labels leave the token store."""
        return None

    def _save_extra(self, directory: Path) -> list[str]:
        """Writes files beyond the tokens; returns their names (``_manifest_fields`` adds
        fields to the manifest)."""
        return []

    def _load_extra(self, directory: Path, manifest: dict[str, Any]) -> None:
        """Loads what ``_save_extra`` wrote (files already verified against the manifest)."""
        return None
