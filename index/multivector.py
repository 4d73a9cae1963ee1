"""Multi-vector (late-interaction) indexes: the shared protocol, and the two baselines MUVERA is
measured against.

Protocol (the single-vector one, with token sets in place of vectors):
``add(list of (n_i, d) arrays, labels)``, ``remove(labels)``,
``search(list of (m_j, d) arrays, k, *, allowed=None, **params) -> (scores (m, k), labels (m, k))``
with -1 / -inf padding and scores = Chamfer similarity (sum over query tokens of the max dot
product over the document's tokens; higher is better), ``save(dir)``, ``load(dir)``. ``metric``
is ``cosine`` (tokens are L2-normalised on the way in) or ``ip`` (tokens are taken as they are).

- ``ChamferIndex`` (spec ``chamfer``): exhaustive exact Chamfer over every document; the oracle.
- ``TokenANNIndex`` (spec ``token_ann:k_tokens=10,inner=flat``): the single-vector heuristic used
  before MUVERA: each query token fetches its ``k_tokens`` nearest document tokens from an inner
  single-vector index over all tokens, the union of their documents is reranked exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from . import storage
from .base import FORMAT_VERSION, MANIFEST, Configured, Index, empty_result, library_versions
from .flat import FlatIndex
from .hnsw import HNSWIndex
from .ivf import IVFIndex
from .metric import Metric, normalize_rows
from .tokens import TokenStore, check_token_sets, ragged_arange, save_npy_replace
from .validate import allowed_array, check_k, check_labels

if TYPE_CHECKING:
    import torch

# Single-vector indexes a multi-vector index may keep inside (FDEs for MUVERA, tokens here).
INNER_KINDS: dict[str, type[Index]] = {
    FlatIndex.kind: FlatIndex,
    HNSWIndex.kind: HNSWIndex,
    IVFIndex.kind: IVFIndex,
}
INNER_DIR = "inner"


def split_inner(kind: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits ``inner_<key>`` parameters off ``params``; checks them against the inner kind."""
    if kind not in INNER_KINDS:
        raise ValueError(f"inner index kind must be one of {', '.join(INNER_KINDS)}, got {kind!r}")
    inner = {k[len("inner_") :]: v for k, v in params.items() if k.startswith("inner_")}
    rest = {k: v for k, v in params.items() if not k.startswith("inner_")}
    klass = INNER_KINDS[kind]
    unknown = set(inner) - set(klass.config_keys)
    if unknown:
        known = ", ".join(f"inner_{k}" for k in klass.config_keys) or "none"
        raise ValueError(f"unknown {kind} parameter(s) {sorted(unknown)}; known: {known}")
    return rest, inner


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


class MultiVectorIndex(Configured, ABC):
    """Base of every multi-vector index: config, validation, token storage, rerank, save/load.

    Subclasses declare ``kind``, ``config_keys`` (defaults, canonical order) and
    ``search_keys``, and implement ``_search`` (and ``_add`` / ``_remove`` / ``_save_extra`` /
    ``_load_extra`` when they keep more than the tokens).
    """

    # An allowed set at most this large is scored exactly (Chamfer over the subset).
    exact_filter_max: ClassVar[int] = 1024

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        self._configure(dim, metric, params)
        if self.metric is Metric.L2:
            raise ValueError(f"{self.kind} scores by inner product: metric must be cosine or ip")
        self._store = TokenStore(self.dim)

    def __len__(self) -> int:
        return len(self._store)

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

    def allowed_search_keys(self) -> tuple[str, ...]:
        """Parameters ``search`` accepts per call."""
        return self.search_keys

    # ---- the protocol ------------------------------------------------------------------------
    def _prepare(self, tokens: np.ndarray) -> np.ndarray:
        return normalize_rows(tokens) if self.metric is Metric.COSINE else tokens

    def add(self, documents: Any, labels: Any) -> None:
        """Adds token sets under labels that are not in the index yet.

        Args:
            documents: list of (n_i, dim) float arrays (each with at least one token), finite.
            labels: (n,) non-negative int64, unique and not already present.

        Raises:
            ValueError: a wrong dimension, NaN/inf, an empty batch or set, a label present.
        """
        tokens, offsets = check_token_sets(documents, self.dim, "documents")
        lab = check_labels(labels, offsets.shape[0] - 1)
        present = self.contains(lab)
        if present.any():
            raise ValueError(f"label {int(lab[present][0])} is already in the index")
        tokens = self._prepare(tokens)
        self._add(tokens, offsets, lab)
        self._store.append(tokens, offsets, lab)

    def remove(self, labels: Any) -> int:
        """Removes the given labels; absent ones are ignored. Returns how many were removed."""
        lab = np.unique(np.asarray(labels, dtype=np.int64).reshape(-1))
        lab = lab[self.contains(lab)]
        if lab.size:
            self._remove(lab)
            self._store.remove(lab)
        return int(lab.size)

    def search(
        self, queries: Any, k: int, *, allowed: Any = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k documents of each query by Chamfer similarity.

        Args:
            queries: list of (m_j, dim) float arrays, one token set per query.
            k: results per query, > 0.
            allowed: optional labels that results are restricted to (exactly); a set of at most
                ``exact_filter_max`` live labels is scored exhaustively.
            **params: per-call search parameters (``search_keys``).

        Returns:
            ``(scores (m, k) float32, labels (m, k) int64)``, best first, -inf / -1 padded.

        Raises:
            ValueError: bad queries (see ``check_token_sets``), k <= 0, unknown parameters.
        """
        q, q_off = check_token_sets(queries, self.dim, "queries")
        q = self._prepare(q)
        k = check_k(k)
        known = self.allowed_search_keys()
        unknown = set(params) - set(known)
        if unknown:
            raise ValueError(
                f"unknown {self.kind} search parameter(s) {sorted(unknown)}; "
                f"known: {', '.join(known) or 'none'}"
            )
        m = q_off.shape[0] - 1
        allow = allowed_array(allowed)
        if allow is not None:
            allow = allow[self.contains(allow)]
            if allow.size == 0:
                return empty_result(m, k)
            if allow.size <= self.exact_filter_max:
                return self.search_exact(q, q_off, k, allow)
        if len(self) == 0:
            return empty_result(m, k)
        return self._search(q, q_off, k, allow, **params)

    def search_exact(
        self, q: np.ndarray, q_off: np.ndarray, k: int, labels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exhaustive Chamfer over the given live labels (all when None); q already prepared."""
        from . import scoring  # torch loads with the first scoring, not with the package

        s = self._store
        if labels is None:
            tokens, offsets = s.view()
            valid = s.alive[: s.n] if s.has_dead() else None
            scores, rows = scoring.chamfer_topk(q, q_off, tokens, offsets, k, valid=valid)
            return scores, np.where(rows >= 0, s.lab[np.maximum(rows, 0)], -1)
        tokens, offsets = s.subset(s.row_of(labels))
        scores, rows = scoring.chamfer_topk(q, q_off, tokens, offsets, k)
        return scores, np.where(rows >= 0, labels[np.maximum(rows, 0)], -1)

    def rerank(
        self, q: np.ndarray, q_off: np.ndarray, candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact Chamfer of each query against its (m, c) candidate labels (-1 = none); top k."""
        from . import scoring

        rows = self._store.row_of(candidates)
        tokens, offsets = self._store.view()
        scores = scoring.chamfer_pairs(q, q_off, tokens, offsets, rows)
        return top_k(scores, np.where(rows >= 0, candidates, -1), k)

    def save(self, directory: str | Path) -> None:
        """Writes the index files, then ``index.json`` (SHA-256 per file) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = self._store.save(directory)
        extra, manifest_extra = self._save_extra(directory)
        manifest = {
            "format_version": FORMAT_VERSION,
            "type": type(self).__name__,
            "spec": self.spec,
            "config": self.get_config(),
            "count": len(self),
            "tokens": self._store.n_tokens,
            "files": {name: storage.file_entry(directory / name) for name in names + extra},
            "versions": library_versions(),
            **manifest_extra,
        }
        storage.write_manifest(directory, MANIFEST, manifest)

    @classmethod
    def load(cls, directory: str | Path) -> MultiVectorIndex:
        """Opens an index saved by ``save``; every file is verified before it is parsed.

        Raises:
            CorruptFileError: a file is missing, truncated, corrupted or malformed (names it).
        """
        from .spec import multivector_class

        directory = Path(directory)
        mpath = directory / MANIFEST
        manifest = storage.read_manifest(mpath)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise storage.CorruptFileError(
                mpath, f"unsupported format_version {manifest.get('format_version')!r}"
            )
        config = manifest.get("config")
        if not isinstance(config, dict):
            raise storage.CorruptFileError(mpath, "manifest lacks a config object")
        storage.verify_files(directory, manifest.get("files"))
        config = dict(config)
        try:
            klass = multivector_class(config.pop("kind"))
            if not issubclass(klass, cls):
                raise ValueError(f"holds a {klass.__name__}, not a {cls.__name__}")
            idx = klass(**config)
            idx._store.load(directory)
            idx._load_extra(directory, manifest)
        except storage.CorruptFileError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise storage.CorruptFileError(mpath, f"invalid index manifest or data: {e}") from None
        if len(idx) != manifest.get("count"):
            raise storage.CorruptFileError(
                mpath, f"count {manifest.get('count')} but the files hold {len(idx)} documents"
            )
        return idx

    # ---- what subclasses implement -----------------------------------------------------------
    def _add(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        """Called before the tokens are stored (they are already validated and prepared)."""
        return None

    def _remove(self, labels: np.ndarray) -> None:
        """Called before the labels leave the token store."""
        return None

    def _save_extra(self, directory: Path) -> tuple[list[str], dict[str, Any]]:
        """Writes files beyond the tokens; returns their names and extra manifest fields."""
        return [], {}

    def _load_extra(self, directory: Path, manifest: dict[str, Any]) -> None:
        """Loads what ``_save_extra`` wrote (files already verified against the manifest)."""
        return None

    @abstractmethod
    def _search(
        self, q: np.ndarray, q_off: np.ndarray, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]: ...


class ChamferIndex(MultiVectorIndex):
    """Exhaustive exact Chamfer search: the multi-vector oracle (``flat`` for token sets).

    Example:
        >>> idx = ChamferIndex(dim=2, metric="ip")
        >>> idx.add([np.eye(2, dtype=np.float32), np.ones((1, 2), np.float32)], [7, 8])
        >>> idx.search([np.eye(2)], k=1)[1].tolist()
        [[7]]
    """

    kind = "chamfer"

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        self._cache: tuple[int, torch.Tensor] | None = None

    def _device_tokens(self) -> torch.Tensor:
        """All stored tokens on the scoring device (float32 on the CPU, float16 on CUDA), kept
        between searches: converting float16 on every query would cost as much as scoring."""
        from . import scoring

        s = self._store
        if self._cache is None or self._cache[0] != s.version:
            self._cache = None  # free the old copy first
            self._cache = (s.version, scoring.to_scoring_tokens(s.view()[0]))
        return self._cache[1]

    def _search(
        self, q: np.ndarray, q_off: np.ndarray, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        from . import scoring

        if allowed is not None:
            return self.search_exact(q, q_off, k, allowed)
        s = self._store
        valid = s.alive[: s.n] if s.has_dead() else None
        offsets = s.offsets[: s.n + 1]
        scores, rows = scoring.chamfer_topk(
            q, q_off, self._device_tokens(), offsets, k, valid=valid
        )
        return scores, np.where(rows >= 0, s.lab[np.maximum(rows, 0)], -1)


class TokenANNIndex(MultiVectorIndex):
    """The single-vector heuristic: token-level ANN, union of documents, exact rerank.

    Spec: ``token_ann:k_tokens=10,inner=flat`` plus ``inner_<key>`` parameters of the inner index
    (``inner=hnsw,inner_M=32``). ``k_tokens`` (nearest document tokens fetched per query token)
    can be overridden per call, as can the inner index's search keys (``inner_ef=256``).
    Every token gets a permanent id (its documents' ids are consecutive), kept in the inner index.
    """

    kind = "token_ann"
    config_keys: ClassVar[dict[str, Any]] = {"k_tokens": 10, "inner": "flat"}

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        kind = str(params.get("inner", self.config_keys["inner"])).strip().lower()
        own, inner_params = split_inner(kind, params)
        super().__init__(dim, metric, **own)
        if self.params["k_tokens"] < 1:
            raise ValueError("token_ann parameter k_tokens must be >= 1, got 0")
        self._inner = INNER_KINDS[kind](dim=self.dim, metric="ip", **inner_params)
        self.params.update({f"inner_{k}": v for k, v in self._inner.params.items()})
        # Token ids: the document labelled _first_lab[i] owns ids _first[i] .. + its length - 1;
        # ids only grow, so _first stays sorted (removals drop entries, adds append).
        self._first = np.empty(0, dtype=np.int64)
        self._first_lab = np.empty(0, dtype=np.int64)
        self._first_of: dict[int, int] = {}
        self._next_id = 0

    def allowed_search_keys(self) -> tuple[str, ...]:
        return ("k_tokens", *(f"inner_{k}" for k in self._inner.search_keys))

    def _add(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        ids = self._next_id + np.arange(tokens.shape[0], dtype=np.int64)
        self._inner.add(tokens, ids)
        first = self._next_id + offsets[:-1]
        self._first = np.concatenate([self._first, first])
        self._first_lab = np.concatenate([self._first_lab, labels])
        self._first_of.update(zip(labels.tolist(), first.tolist(), strict=True))
        self._next_id += tokens.shape[0]

    def _token_ids(self, labels: np.ndarray) -> np.ndarray:
        s = self._store
        rows = s.row_of(labels)
        first = np.fromiter(map(self._first_of.__getitem__, labels.tolist()), np.int64, labels.size)
        return ragged_arange(first, s.offsets[rows + 1] - s.offsets[rows])

    def _remove(self, labels: np.ndarray) -> None:
        self._inner.remove(self._token_ids(labels))
        keep = ~np.isin(self._first_lab, labels)
        self._first, self._first_lab = self._first[keep], self._first_lab[keep]
        for lab in labels.tolist():
            del self._first_of[lab]

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
        self, q: np.ndarray, q_off: np.ndarray, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        cand = self._candidates(q, q_off, allowed, **params)
        return self.rerank(q, q_off, cand, k)

    def _save_extra(self, directory: Path) -> tuple[list[str], dict[str, Any]]:
        # The store compacted on save; its rows are in insertion order, as is _first.
        live = self._store.lab[: self._store.n]
        first = np.fromiter(map(self._first_of.__getitem__, live.tolist()), np.int64, live.size)
        save_npy_replace(directory / "token_ids.npy", first)
        self._inner.save(directory / INNER_DIR)
        return ["token_ids.npy"], {"inner_manifest_sha256": inner_sha(directory)}

    def _load_extra(self, directory: Path, manifest: dict[str, Any]) -> None:
        path = directory / "token_ids.npy"
        first = np.array(storage.load_npy(path, np.int64, 1))
        s = self._store
        lens = np.diff(s.offsets[: s.n + 1])
        if first.shape[0] != s.n or (first < 0).any() or (first[1:] < (first + lens)[:-1]).any():
            raise storage.CorruptFileError(
                path, f"expected {s.n} rising, non-overlapping, non-negative token id ranges"
            )
        self._inner = load_inner(directory, manifest, type(self._inner))
        ids = ragged_arange(first, lens)
        if len(self._inner) != ids.shape[0] or not self._inner.contains(ids).all():
            raise storage.CorruptFileError(path, "token ids do not match the inner index")
        self._first, self._first_lab = first, s.lab[: s.n].copy()
        self._first_of = dict(zip(self._first_lab.tolist(), first.tolist(), strict=True))
        self._next_id = int((first + lens).max(initial=0))


def inner_sha(directory: Path) -> str:
    return storage.sha256_file(directory / INNER_DIR / MANIFEST)


def load_inner(directory: Path, manifest: dict[str, Any], klass: type[Index]) -> Index:
    """Opens the inner single-vector index after checking its manifest against ours."""
    ipath = directory / INNER_DIR / MANIFEST
    if not ipath.is_file():
        raise storage.CorruptFileError(ipath, "inner index manifest is missing")
    if storage.sha256_file(ipath) != manifest.get("inner_manifest_sha256"):
        raise storage.CorruptFileError(ipath, "SHA-256 does not match the outer manifest")
    inner = klass.load(directory / INNER_DIR)
    if inner.metric is not Metric.IP:
        raise storage.CorruptFileError(ipath, f"inner index metric {inner.metric.value}, not ip")
    return inner
