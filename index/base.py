"""What every index shares (``BaseIndex``: parameters, the search skeleton, save and load) and
the single-vector protocol (``Index``); multi-vector indexes build on the same base
(``index.multivector``).

Result contract (documented once, here): ``search`` returns ``(scores, labels)``, both of shape
``(m, k)``, best first. Scores are float32 and higher is better for every metric (L2 gives the
negated squared distance). Where fewer than ``k`` results exist, labels are -1 and scores -inf.
"""

from __future__ import annotations

import importlib.metadata
import platform
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np

from . import memory, storage
from . import spec as _spec
from .metric import Metric, prepare
from .validate import allowed_array, check_k, check_labels, check_vectors

FORMAT_VERSION = 1
MANIFEST = "index.json"

# A batch of validated items (vectors, or packed token sets) in the form an index family takes.
Batch = TypeVar("Batch")


def empty_result(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several ``(scores (m, k_i), labels (m, k_i))`` results per query, best
    first (e.g. one per segment of a store); -1 / -inf padding sorts last."""
    if len(parts) == 1 and parts[0][0].shape[1] == k:
        return parts[0]
    scores = np.concatenate([p[0] for p in parts], axis=1)
    labels = np.concatenate([p[1] for p in parts], axis=1)
    return best_k(scores, labels, k)


def best_k(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``(scores, labels)``, best first (stable: ties keep
    their order), padded with -inf / -1."""
    out_s, out_l = empty_result(scores.shape[0], k)
    kk = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    out_s[:, :kk] = np.take_along_axis(scores, order, 1)
    out_l[:, :kk] = np.take_along_axis(labels, order, 1)
    return out_s, out_l


def library_versions() -> dict[str, str]:
    import faiss
    import hnswlib

    # torch from its metadata: a checkpoint of an HNSW or IVF collection never imports torch.
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - torch is a dependency
        torch_version = "?"
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch_version,
        "faiss": getattr(faiss, "__version__", "?"),
        "hnswlib": getattr(hnswlib, "__version__", "0.8"),
    }


class BaseIndex(ABC, Generic[Batch]):
    """What single- and multi-vector indexes share: dim, metric and spec parameters (checked
    against the class's ``config_keys``), the spec string, ``add`` / ``remove`` / ``search``
    (label, parameter and filter checks), and ``save`` / ``load`` (one manifest format).

    Subclasses declare ``kind`` (the spec name), ``config_keys`` with their defaults (the spec's
    parameters, in canonical order) and ``search_keys`` (parameters ``search`` accepts per call;
    an instance may set its own, e.g. from an inner index). A family (``Index``,
    ``MultiVectorIndex``) says how its items are checked and prepared; a kind implements the
    ``_``-prefixed hooks at the end.
    """

    kind: ClassVar[str]
    config_keys: ClassVar[dict[str, Any]] = {}
    search_keys: tuple[str, ...] = ()
    # None: any kind; otherwise the family ``load`` accepts (see ``spec.class_of``).
    multi_vector: ClassVar[bool | None] = None
    # What one item is called in messages: "vectors" or "documents".
    item_name: ClassVar[str] = "items"
    # An allowed set at most this large, or at most this fraction of the index, is searched
    # exactly instead of through the approximate structure (which would starve on it).
    exact_filter_max: ClassVar[int] = 2048
    exact_filter_fraction: ClassVar[float] = 0.02
    # The files a kind saves -> the part of ``memory_usage`` they belong to (``index.json``:
    # "manifest"; any other: "other").
    file_parts: ClassVar[dict[str, str]] = {}
    # Saved files that ``load`` memory-maps (never parsed by a native library): a quick open
    # (``storage.verification("quick")``) checks their size, not their SHA-256.
    mapped_files: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self.metric = Metric.parse(metric)
        self.params = self._check_params(params)

    def _check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - set(self.config_keys)
        if unknown:
            known = ", ".join(self.config_keys) or "none"
            raise ValueError(f"unknown {self.kind} parameter(s) {sorted(unknown)}; known: {known}")
        out = {**self.config_keys, **params}
        for key, value in out.items():
            default = self.config_keys[key]
            if isinstance(default, str):
                if not isinstance(value, str):
                    raise ValueError(f"{self.kind} parameter {key} must be a string, got {value!r}")
                out[key] = value.strip().lower()
            elif isinstance(default, int) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                    raise ValueError(
                        f"{self.kind} parameter {key} must be a non-negative int, got {value!r}"
                    )
                out[key] = int(value)
            else:
                out[key] = type(default)(value)
        return out

    @property
    def spec(self) -> str:
        """The canonical spec string; ``from_spec(idx.spec, dim, metric)`` rebuilds the config."""
        if not self.params:
            return self.kind
        return self.kind + ":" + ",".join(f"{k}={v}" for k, v in self.params.items())

    def get_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "metric": self.metric.value, **self.params}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.spec!r}, dim={self.dim}, "
            f"metric={self.metric.value}, n={len(self)})"
        )

    # ---- the protocol ------------------------------------------------------------------------
    def add(self, items: Any, labels: Any) -> None:
        """Adds items (vectors, or token sets) under labels that are not in the index yet.

        Args:
            items: (n, dim) float array for a single-vector index; a list of (n_i, dim) arrays
                (each with at least one token) for a multi-vector one. Finite.
            labels: (n,) non-negative int64, unique and not already present.

        Raises:
            ValueError: on a wrong dimension, NaN/inf, an empty batch, or a label already present.
        """
        batch, n = self._check_batch(items, self.item_name)
        lab = check_labels(labels, n)
        present = self.contains(lab)
        if present.any():
            raise ValueError(f"label {int(lab[present][0])} is already in the index")
        self._add(self._prepare_batch(batch), lab)

    def remove(self, labels: Any) -> int:
        """Removes the given labels; absent ones are ignored. Returns how many were removed."""
        lab = np.unique(np.asarray(labels, dtype=np.int64).reshape(-1))
        lab = lab[self.contains(lab)]
        if lab.size:
            self._remove(lab)
        return int(lab.size)

    def search(
        self, queries: Any, k: int, *, allowed: Any = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k results of each query.

        Args:
            queries: (m, dim) or (dim,) float array for a single-vector index; a list of
                (m_j, dim) arrays, one token set per query, for a multi-vector one.
            k: results per query, > 0.
            allowed: optional labels that results are restricted to (exactly); a small set
                (``exact_filter_max``, ``exact_filter_fraction``) is searched exactly.
            **params: per-call search parameters (``search_keys``), e.g. ``ef`` or ``nprobe``.

        Returns:
            ``(scores (m, k) float32, labels (m, k) int64)``; see the module docstring.

        Raises:
            ValueError: bad queries, k <= 0, unknown search parameters.
        """
        batch, m = self._check_batch(queries, "queries")
        return self.search_checked(batch, m, check_k(k), allowed, params)

    def search_checked(
        self, batch: Batch, m: int, k: int, allowed: Any, params: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``search`` for ``m`` queries that passed the family's query check already (a
        collection's item store checks each query once) and a checked ``k``: prepares them for
        the metric, checks the parameter names and the filter, and searches."""
        q = self._prepare_batch(batch)
        unknown = [p for p in params if p not in self.search_keys] if params else ()
        if unknown:
            raise ValueError(
                f"unknown {self.kind} search parameter(s) {sorted(unknown)}; "
                f"known: {', '.join(self.search_keys) or 'none'}"
            )
        allow = allowed_array(allowed)
        if allow is not None:
            allow = allow[self.contains(allow)]
            if allow.size == 0:
                return empty_result(m, k)
            if allow.size <= max(self.exact_filter_max, self.exact_filter_fraction * len(self)):
                return self._search_exact(q, k, allow)
        if len(self) == 0:
            return empty_result(m, k)
        return self._search(q, k, allow, **params)

    # ---- accounting --------------------------------------------------------------------------
    def memory_usage(self, directory: str | Path | None = None) -> memory.Parts:
        """Bytes per part of the index, in RAM and on disk: ``{part: {"ram": B, "disk": B}}``.

        RAM: what the process holds for each part now (numpy arrays by their used rows; a
        memory-mapped array counts 0, being disk-backed pages; Python sets and dicts estimated
        from ``sys.getsizeof`` over a sample; see ``index.memory``). Copies a scoring kernel
        keeps on a GPU are not counted. Disk: the sizes of the files in ``directory`` (a saved
        index, e.g. a collection checkpoint's ``index.G/``), by the part each belongs to; 0 when
        no directory is given. Cheap: no file is read, no large structure walked.

        Example:
            >>> FlatIndex(dim=4).memory_usage()["vectors"]
            {'ram': 0, 'disk': 0}
        """
        where = Path(directory) if directory is not None else None
        return memory.combine(self._ram_parts(), memory.disk_parts(where, self._file_part))

    def _ram_parts(self) -> dict[str, int]:
        """RAM bytes per part (see ``memory_usage``)."""
        return {}

    def _file_part(self, name: str) -> str:
        """The part a saved file (its path relative to the index directory) belongs to."""
        return self.file_parts.get(name, "manifest" if name == MANIFEST else "other")

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Writes the index files and then ``index.json`` (SHA-256 per file) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = self._save_files(directory)
        manifest = {
            "format_version": FORMAT_VERSION,
            "type": type(self).__name__,
            "spec": self.spec,
            "config": self.get_config(),
            "count": len(self),
            "files": {name: storage.file_entry(directory / name) for name in names},
            "versions": library_versions(),
            **self._manifest_fields(directory),
        }
        storage.write_manifest(directory, MANIFEST, manifest)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Opens an index saved by ``save``; every file is verified before it is parsed.

        Called on a family (``Index``) or a kind (``HNSWIndex``), it opens only what that class
        covers; ``index.load`` opens any kind.

        Raises:
            CorruptFileError: a file is missing, truncated, corrupted or malformed (names it).
        """
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
        config = dict(config)
        try:
            klass = _spec.class_of(config.pop("kind"), cls.multi_vector)
            if not issubclass(klass, cls):
                raise ValueError(f"holds a {klass.__name__}, not a {cls.__name__}")
        except (KeyError, TypeError, ValueError) as e:
            raise storage.CorruptFileError(mpath, f"invalid index manifest: {e}") from None
        storage.verify_files(directory, manifest.get("files"), mapped=klass.mapped_files)
        try:
            idx: Self = klass(**config)
            # Only files the manifest lists (and that were just verified) may shape the load.
            idx._load_files(directory, manifest)
        except storage.CorruptFileError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise storage.CorruptFileError(mpath, f"invalid index manifest or data: {e}") from None
        if len(idx) != manifest.get("count"):
            raise storage.CorruptFileError(
                mpath,
                f"count {manifest.get('count')} but the files hold {len(idx)} {idx.item_name}",
            )
        return idx

    # ---- what a family implements ------------------------------------------------------------
    @abstractmethod
    def _check_batch(self, items: Any, name: str) -> tuple[Batch, int]:
        """Validates items or queries (naming them ``name`` in errors); returns them and their
        count."""

    @abstractmethod
    def _prepare_batch(self, batch: Batch) -> Batch:
        """Puts checked items into the form the index stores and searches (per the metric)."""

    @abstractmethod
    def _search_exact(self, q: Batch, k: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the given live labels (q already prepared)."""

    # ---- what a kind implements --------------------------------------------------------------
    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def contains(self, labels: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``labels`` are live in the index."""

    @abstractmethod
    def labels(self) -> np.ndarray:
        """All live labels (int64)."""

    @abstractmethod
    def _add(self, batch: Batch, labels: np.ndarray) -> None: ...

    @abstractmethod
    def _remove(self, labels: np.ndarray) -> None: ...

    @abstractmethod
    def _search(
        self, q: Batch, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def _save_files(self, directory: Path) -> list[str]:
        """Writes the index's files into ``directory``; returns their names."""

    @abstractmethod
    def _load_files(self, directory: Path, manifest: dict[str, Any]) -> None:
        """Loads what ``_save_files`` wrote; the files the manifest lists are already verified,
        and only they may shape the load."""

    def _manifest_fields(self, directory: Path) -> dict[str, Any]:
        """Fields beyond the common ones for ``index.json`` (called after ``_save_files``)."""
        return {}


class Index(BaseIndex[np.ndarray]):
    """A single-vector index: ``add``, ``remove``, ``search``, ``save``, ``load``.

    Items are (n, dim) float32 vectors; see ``BaseIndex`` for what a kind declares.
    """

    multi_vector = False
    item_name = "vectors"

    def reserve(self, n: int) -> None:
        """A hint that the index will hold about ``n`` items: indexes that grow by copying
        (flat rows, the hnswlib graph) allocate once. Unused room costs address space, not
        memory, until written. The default does nothing."""
        return

    def search_subset(
        self, q: np.ndarray, k: int, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the given live labels (q already prepared)."""
        from . import scoring  # torch loads on the first exact search, not with the package

        base = scoring.to_device(self.vectors(labels))
        scores, rows = scoring.topk(q, base, k, self.metric)
        return scores, np.where(rows >= 0, labels[np.maximum(rows, 0)], -1)

    # ---- the family's hooks ------------------------------------------------------------------
    def _check_batch(self, items: Any, name: str) -> tuple[np.ndarray, int]:
        x = check_vectors(items, self.dim, name)
        return x, x.shape[0]

    def _prepare_batch(self, batch: np.ndarray) -> np.ndarray:
        return prepare(batch, self.metric)

    def _search_exact(
        self, q: np.ndarray, k: int, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.search_subset(q, k, labels)

    # ---- what subclasses implement beyond BaseIndex's ----------------------------------------
    @abstractmethod
    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """Stored (prepared) vectors of live labels, for exact subset search."""
