"""The single-vector heuristic used before MUVERA (spec ``token_ann:k_tokens=10,inner=flat``):
each query token fetches its ``k_tokens`` nearest document tokens from an inner single-vector
index over all tokens, and the union of their documents is reranked exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import storage
from .inner import (
    INNER_DIR,
    inner_fields,
    inner_file_part,
    inner_ram,
    load_inner,
    new_inner,
    split_inner,
)
from .metric import Metric
from .multivector import MultiVectorIndex, TokenSets
from .ragged import ragged_arange
from .tokens import check_token_sets


def unique_rows(rows: np.ndarray) -> np.ndarray:
    """Per row, the distinct non-negative values, left-aligned and -1 padded (vectorised)."""
    if rows.shape[1] == 0:
        return rows
    s = np.sort(rows, axis=1)
    dup = np.zeros_like(s, dtype=bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    s[dup] = -1
    s = -np.sort(-s, axis=1)  # distinct values first, -1 last
    width = max(1, int((s >= 0).sum(1).max()))
    return np.ascontiguousarray(s[:, :width])


class TokenANNIndex(MultiVectorIndex):
    """The single-vector heuristic: token-level ANN, union of documents, exact rerank.

    Spec: ``token_ann:k_tokens=10,inner=flat`` plus ``inner_<key>`` parameters of the inner index
    (``inner=hnsw,inner_M=32``). ``k_tokens`` (nearest document tokens fetched per query token)
    can be overridden per call, as can the inner index's search keys (``inner_ef=256``).
    Every token gets a permanent id (its documents' ids are consecutive), kept in the inner index.
    """

    kind = "token_ann"
    file_parts: ClassVar[dict[str, str]] = {
        **MultiVectorIndex.file_parts,
        "token_ids.npy": "token_ids",
    }
    config_keys: ClassVar[dict[str, Any]] = {
        "k_tokens": 10,
        "inner": "flat",
        **MultiVectorIndex.config_keys,
    }

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        kind = str(params.get("inner", self.config_keys["inner"])).strip().lower()
        own, inner_params = split_inner(kind, params)
        super().__init__(dim, metric, **own)
        if self.params["k_tokens"] < 1:
            raise ValueError("token_ann parameter k_tokens must be >= 1, got 0")
        self._inner = new_inner(kind, self.dim, inner_params)
        self.params.update({f"inner_{k}": v for k, v in self._inner.params.items()})
        self.search_keys = ("k_tokens", *(f"inner_{k}" for k in self._inner.search_keys))
        # Token ids: the document labelled _first_lab[i] owns ids _first[i] .. + its length - 1;
        # ids only grow, so _first stays sorted (removals drop entries, adds append). A label's
        # entry is found by binary search: over _first_lab while it rises (labels given in
        # increasing order), else over its sort order (_lab_order, rebuilt when needed).
        self._first = np.empty(0, dtype=np.int64)
        self._first_lab = np.empty(0, dtype=np.int64)
        self._lab_order: np.ndarray | None = None
        self._next_id = 0

    def _ram_parts(self) -> dict[str, int]:
        """The token store's parts, token_ids (each document's first token id) and the inner
        index's parts prefixed ``inner_`` (its copy of every token)."""
        ids = self._first.nbytes + self._first_lab.nbytes
        ids += 0 if self._lab_order is None else self._lab_order.nbytes
        return {**super()._ram_parts(), "token_ids": ids, **inner_ram(self._inner)}

    def _file_part(self, name: str) -> str:
        return inner_file_part(self._inner, name) or super()._file_part(name)

    def _add_extra(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        ids = self._next_id + np.arange(tokens.shape[0], dtype=np.int64)
        self._inner.add(tokens, ids)
        first = self._next_id + offsets[:-1]
        self._first = np.concatenate([self._first, first])
        self._first_lab = np.concatenate([self._first_lab, labels])
        self._lab_order = None
        self._next_id += tokens.shape[0]

    def _first_of(self, labels: np.ndarray) -> np.ndarray:
        """The first token id of each (live) label."""
        lab = self._first_lab
        if lab.size < 2 or bool(np.all(lab[1:] > lab[:-1])):
            return self._first[np.searchsorted(lab, labels)]
        if self._lab_order is None:
            self._lab_order = np.argsort(lab, kind="stable")
        order = self._lab_order
        return self._first[order[np.searchsorted(lab[order], labels)]]

    def _token_ids(self, labels: np.ndarray) -> np.ndarray:
        rows = self._store.row_of(labels)
        return ragged_arange(self._first_of(labels), self._store.lengths(rows))

    def _remove_extra(self, labels: np.ndarray) -> None:
        self._inner.remove(self._token_ids(labels))
        keep = ~np.isin(self._first_lab, labels)
        self._first, self._first_lab = self._first[keep], self._first_lab[keep]
        self._lab_order = None

    def candidate_labels(self, queries: Any, **params: Any) -> np.ndarray:
        """The candidate documents the heuristic would rerank: (m, c) labels, -1 padded."""
        q, q_off = check_token_sets(queries, self.dim, "queries")
        return self._candidates(self._prepare(q), q_off, None, **params)

    def _candidates(
        self, q: np.ndarray, q_off: np.ndarray, allowed: np.ndarray | None, **params: Any
    ) -> np.ndarray:
        k_tokens = int(params.pop("k_tokens", self.params["k_tokens"]))
        if k_tokens < 1:
            raise ValueError(f"k_tokens must be >= 1, got {k_tokens}")
        inner_params = {key[len("inner_") :]: v for key, v in params.items()}
        token_allowed = None if allowed is None else self._token_ids(allowed)
        _, ids = self._inner.search(q, k_tokens, allowed=token_allowed, **inner_params)
        # Token id -> document label (documents own consecutive ids; _first is sorted).
        pos = np.searchsorted(self._first, np.maximum(ids, 0), side="right") - 1
        docs = np.where(ids >= 0, self._first_lab[np.maximum(pos, 0)], -1)
        # Per query: its tokens' hits, padded to the longest query.
        m = q_off.shape[0] - 1
        lens = np.diff(q_off)
        width = int(lens.max()) * k_tokens
        per = np.full((m, width), -1, dtype=np.int64)
        slot = ragged_arange(np.arange(m) * width, lens * k_tokens)
        per.reshape(-1)[slot] = docs.reshape(-1)
        return unique_rows(per)

    def _search(
        self, q: TokenSets, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        tokens, q_off = q
        cand = self._candidates(tokens, q_off, allowed, **params)
        return self.rerank(tokens, q_off, cand, k)

    def _save_extra(self, directory: Path) -> list[str]:
        # The store compacted on save; its rows are in insertion order, as is _first.
        first = self._first_of(self._store.lab)
        storage.save_npy_replace(directory / "token_ids.npy", first)
        self._inner.save(directory / INNER_DIR)
        return ["token_ids.npy"]

    def _manifest_fields(self, directory: Path) -> dict[str, Any]:
        return {**super()._manifest_fields(directory), **inner_fields(directory)}

    def _load_extra(self, directory: Path, manifest: dict[str, Any]) -> None:
        path = directory / "token_ids.npy"
        first = np.array(storage.load_npy(path, np.int64, 1))
        s = self._store
        lens = np.diff(s.offsets)
        if first.shape[0] != s.n or (first < 0).any() or (first[1:] < (first + lens)[:-1]).any():
            raise storage.CorruptFileError(
                path, f"expected {s.n} rising, non-overlapping, non-negative token id ranges"
            )
        self._inner = load_inner(directory, manifest, type(self._inner))
        ids = ragged_arange(first, lens)
        if len(self._inner) != ids.shape[0] or not self._inner.contains(ids).all():
            raise storage.CorruptFileError(path, "token ids do not match the inner index")
        self._first, self._first_lab = first, s.lab.copy()
        self._lab_order = None
        self._next_id = int((first + lens).max(initial=0))
