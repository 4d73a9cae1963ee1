"""Quantized indexes: compact codes in RAM, full vectors for an exact rescore.

Three kinds share this base (``QuantizedIndex``): ``sq8`` (int8 scalar quantization on a faiss
HNSW graph), ``binary`` (1 bit per dimension on a faiss binary HNSW graph; both in
``index.quantized_hnsw``) and ``pq`` (faiss IVF-PQ, ``index.quantized_pq``). A search walks the
compact codes for ``k * oversample`` candidates, then scores those exactly from the full float32
vectors with the torch kernels (``index.scoring``) and keeps the best ``k``: with ``rescore=1``
(the default) the returned scores are exact, equal to ``flat``'s for the same labels. With
``rescore=0`` the index returns the top ``k`` of the code search with code-space scores
(approximate; ``binary`` gives minus the Hamming distance).

The full vectors live in an ``index.labelmap.RowStore`` inside the index and are saved as
``vectors.npy`` + ``labels.npy``; they are what the rescore, exact filtered search and the
rebuilds read. Until ``train_size`` vectors have arrived the quantizer cannot be trained: the
index then answers exactly from the full vectors, and the vectors it holds then train it.
``sq8`` and ``binary`` train again as they grow (each time the live vectors reach 4x those
last trained on, until that was ``MAX_TRAIN_SAMPLE``): data that arrive sorted (GloVe by word
frequency) make the first vectors a poor sample (``index.quantized_hnsw``).

Library choice (measured on seeded clustered data, 20k normalised vectors, 200 queries, 2 shared
cores, HNSW M=16, ef_construction=200, ef=64; recall@10 against exact after rescoring):

=====================  =======  ===========  ==========================  ==================
index                  build    queries/s    recall@10 os=1/2/4/8         RAM per vector
=====================  =======  ===========  ==========================  ==================
faiss HNSW-SQ8, 128-d  3.6 s    8.5k-14k     0.990 / 1.000 / 1.000 / 1.0  272 B (128 + graph)
usearch i8, 128-d      2.0 s    22k-30k      0.965 / 1.000 / 1.000 / 1.0  (arena, not comparable)
faiss binary HNSW      3.9 s    5k-16k       0.605 / 0.836 / 0.962 / 0.998  160 B (16 + graph)
usearch b1, 128-d      1.8 s    20k-33k      0.610 / 0.831 / 0.963 / 1.000
faiss IVF-PQ M=16      7.6 s    12k-27k      0.704 / 0.929 / 0.996 / 1.000  24 B (16 + id)
=====================  =======  ===========  ==========================  ==================

usearch builds about 2x faster and searches about 2x faster, but its Python API has no
filtered search (no predicate), and it persists its graph in its own binary format that it
parses itself. faiss takes an ``IDSelector`` in ``SearchParameters`` for every one of these
indexes (the binary HNSW included: verified), and its graphs, codes and quantizer parameters
read out as plain arrays (``faiss.vector_to_array``) that are saved as ``.npy`` and checked
structurally before they are copied back (``faiss.copy_array_to_vector``): faiss never parses
a file. So faiss it is. faiss HNSW cannot remove: removed vectors stay in the graph as
tombstones (they still route searches) that a selector excludes, and a save rebuilds the graph
from the live vectors when more than a quarter of it is dead.
"""

from __future__ import annotations

import contextlib
import threading
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import storage
from .base import MANIFEST, Index, empty_result
from .labelmap import RowStore
from .metric import Metric
from .validate import check_labels

VECTOR_FILES = ("vectors.npy", "labels.npy")
# Training vectors are sampled down to this many (a quantizer gains nothing from more).
MAX_TRAIN_SAMPLE = 65_536


class QuantizedIndex(Index):
    """Compact codes searched for ``k * oversample`` candidates, rescored exactly.

    A kind declares ``config_keys`` (always with ``oversample`` and ``rescore``), the files
    its codes save to (``code_files``, and their parts in ``file_parts``) and implements the
    ``_codes_*`` hooks; this base keeps the full vectors, the untrained state, the rescore, the
    exact fallback for queries the codes found too few candidates for, and the vectors' files.
    """

    # The files the codes add to ``VECTOR_FILES`` once trained (in ``_codes_save`` order).
    code_files: ClassVar[tuple[str, ...]] = ()
    # The full vectors are memory-mapped: a quick open checks their size, not their SHA-256.
    mapped_files = frozenset({"vectors.npy"})

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        p = self.params
        if p["oversample"] < 1:
            raise ValueError(
                f"{self.kind} parameter oversample must be >= 1, got {p['oversample']}"
            )
        if p["rescore"] not in (0, 1):
            raise ValueError(f"{self.kind} parameter rescore must be 0 or 1, got {p['rescore']}")
        self._store = RowStore(self.dim)
        # One lock for the codes and the vectors: faiss must not add while it searches.
        self._lock = threading.RLock()

    # ---- what a kind implements --------------------------------------------------------------
    @property
    @abstractmethod
    def trained(self) -> bool:
        """Whether the codes exist (the quantizer is trained and holds every live vector)."""

    @property
    @abstractmethod
    def train_size(self) -> int:
        """Vectors needed before the index trains itself."""

    @abstractmethod
    def _codes_train(self, x: np.ndarray, labels: np.ndarray) -> None:
        """Trains the quantizer on (a ``train_sample`` of) the live vectors ``x`` and makes the
        codes of all of them."""

    @abstractmethod
    def _codes_add(self, x: np.ndarray, labels: np.ndarray) -> None: ...

    @abstractmethod
    def _codes_remove(self, labels: np.ndarray) -> None: ...

    @abstractmethod
    def _codes_search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, params: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Code-space top-``k`` ``(scores, labels)`` (higher is better, -1 / -inf padded) among
        the live labels, restricted to ``allowed`` when given."""

    @abstractmethod
    def _codes_save(self, directory: Path) -> list[str]: ...

    @abstractmethod
    def _codes_load(self, directory: Path, manifest: dict[str, Any], labels: np.ndarray) -> None:
        """Loads the codes; ``labels`` are the live labels of ``vectors.npy`` (already checked),
        which the codes must hold exactly."""

    @abstractmethod
    def _codes_ram(self) -> dict[str, int]: ...

    def _codes_compact(self) -> None:
        """Before a save: drop what removals left behind (a kind that keeps tombstones)."""
        return

    def _codes_saved(self, directory: Path, manifest: dict[str, Any]) -> bool:
        """Whether a saved index holds codes (it was trained); raises CorruptFileError when it
        holds only some of them."""
        listed = set(manifest["files"])
        present = [name for name in self.code_files if name in listed]
        if present and len(present) != len(self.code_files):
            missing = sorted(set(self.code_files) - listed)
            raise storage.CorruptFileError(directory / MANIFEST, f"lacks {missing}")
        return bool(present)

    def _codes_unlink(self, directory: Path) -> None:
        """Removes code files an earlier save into ``directory`` left (an untrained save must
        not leave them beside its own: they would be counted on disk)."""
        for name in self.code_files:
            (directory / name).unlink(missing_ok=True)

    # ---- bookkeeping -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._store)

    def contains(self, labels: np.ndarray) -> np.ndarray:
        return self._store.contains(labels)

    def labels(self) -> np.ndarray:
        with self._lock:
            return self._store.live_labels().copy()

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """The full (prepared) float32 vectors of live labels: a copy."""
        with self._lock:
            return self._take(self._store.row_of(labels))

    def _take(self, rows: np.ndarray) -> np.ndarray:
        return self._store.take(rows)

    def reserve(self, n: int) -> None:
        with self._lock:
            self._store.reserve(int(n))

    def _ram_parts(self) -> dict[str, int]:
        """vectors: the full float32 rows held in RAM (0 for rows memory-mapped from a saved
        ``vectors.npy``); labels: their labels and tombstones, plus the codes' own label
        bookkeeping; codes, graph / lists: the kind's compact structures (``_codes_ram``)."""
        with self._lock:
            vectors, labels = self._store.ram_bytes()
            parts = {"vectors": vectors, "labels": labels}
            if self.trained:
                for name, size in self._codes_ram().items():
                    parts[name] = parts.get(name, 0) + size
            return parts

    # ---- mutation ----------------------------------------------------------------------------
    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        with self._lock:
            self._store.append(x, labels)
            if self.trained:
                self._codes_add(x, labels)
            elif len(self._store) >= self.train_size:
                self._train()

    def _train(self) -> None:
        x, lab = self._store.live()
        self._codes_train(np.ascontiguousarray(x, dtype=np.float32), lab)

    def _remove(self, labels: np.ndarray) -> None:
        with self._lock:
            self._store.remove(labels)
            if self.trained:
                self._codes_remove(labels)

    # ---- search ------------------------------------------------------------------------------
    def _search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        oversample = int_param(params, "oversample", self.params["oversample"])
        rescore = int_param(params, "rescore", self.params["rescore"])
        if oversample < 1:
            raise ValueError(f"oversample must be >= 1, got {oversample}")
        if rescore not in (0, 1):
            raise ValueError(f"rescore must be 0 or 1, got {rescore}")
        with self._lock:
            if not self.trained:
                subset = allowed if allowed is not None else self._store.live_labels().copy()
                return self.search_subset(q, k, subset)
            pool = len(self) if allowed is None else allowed.size
            want = min(k, pool)
            kc = min(k * oversample if rescore else k, pool)
            with faiss_threads_for(q.shape[0]):
                code_scores, cand = self._codes_search(q, kc, allowed, params)
            if rescore:
                scores, labels = self._rescore(q, cand, k)
            else:
                scores, labels = empty_result(q.shape[0], k)
                w = min(k, cand.shape[1])
                scores[:, :w], labels[:, :w] = code_scores[:, :w], cand[:, :w]
            # A graph walk that found fewer than ``want`` candidates (a selective filter, many
            # tombstones): those queries are answered exactly.
            short = np.flatnonzero((labels[:, :want] < 0).any(axis=1))
            if short.size:
                subset = allowed if allowed is not None else self._store.live_labels().copy()
                scores[short], labels[short] = self.search_subset(q[short], k, subset)
            return scores, labels

    def _rescore(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of each query's candidates (labels, -1 for none), best ``k`` first."""
        m, c = cand.shape
        ok = cand >= 0
        uniq, inverse = np.unique(cand[ok], return_inverse=True)
        if uniq.size == 0:  # no candidates at all: the caller answers these queries exactly
            return empty_result(m, k)
        rows = np.full((m, c), -1, dtype=np.int64)
        rows[ok] = inverse
        vecs = self._take(self._store.row_of(uniq))
        exact = pair_scores(q, vecs, rows, self.metric)
        kk = min(k, c)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :kk]
        scores, labels = empty_result(m, k)
        top = np.take_along_axis(exact, order, axis=1)
        scores[:, :kk] = top
        labels[:, :kk] = np.where(np.isfinite(top), np.take_along_axis(cand, order, axis=1), -1)
        return scores, labels

    # ---- persistence -------------------------------------------------------------------------
    def _save_files(self, directory: Path) -> list[str]:
        with self._lock:
            if self.trained:
                self._codes_compact()
            else:
                self._codes_unlink(directory)
            # The store then serves its rows from a memory map of the file it wrote.
            lab = self._store.save(directory / "vectors.npy")
            storage.save_npy(directory / "labels.npy", lab)
            names = list(VECTOR_FILES)
            if self.trained:
                names += self._codes_save(directory)
            return names

    def _load_files(self, directory: Path, manifest: dict[str, Any]) -> None:
        vpath, lpath = directory / "vectors.npy", directory / "labels.npy"
        x = storage.load_npy(vpath, np.float32, 2, mmap=True)
        lab = storage.load_npy(lpath, np.int64, 1)
        if x.shape != (lab.shape[0], self.dim):
            raise storage.CorruptFileError(
                vpath, f"shape {x.shape}, expected ({lab.shape[0]}, {self.dim})"
            )
        try:
            check_labels(lab, lab.shape[0])
        except (ValueError, TypeError) as e:
            raise storage.CorruptFileError(lpath, str(e)) from None
        storage.check_finite_npy(vpath, x)
        if self._codes_saved(directory, manifest):
            self._codes_load(directory, manifest, lab)
        elif lab.shape[0] >= self.train_size:
            raise storage.CorruptFileError(
                directory / MANIFEST,
                f"{lab.shape[0]} vectors but no codes (the index trains at {self.train_size})",
            )
        self._store.load(x, lab)


def pair_scores(q: np.ndarray, vecs: np.ndarray, rows: np.ndarray, metric: Metric) -> np.ndarray:
    """Exact scores of query ``i`` against ``vecs[rows[i, j]]`` (-inf where ``rows`` is -1),
    with the scoring kernels (``scoring.chamfer_pairs``: one token per query and per vector is a
    dot product; CUDA float16 when present, float32 on the CPU, as ``flat`` scores)."""
    from . import scoring  # torch loads with the first rescore, not with the package

    m = q.shape[0]
    q_off = np.arange(m + 1, dtype=np.int64)
    d_off = np.arange(vecs.shape[0] + 1, dtype=np.int64)
    dots = scoring.chamfer_pairs(q, q_off, vecs, d_off, rows)
    if metric is not Metric.L2:
        return dots
    # As ``flat`` scores L2: -(|q|^2 - 2 q.b + |b|^2) in float32.
    q_sq = np.einsum("ij,ij->i", q, q)
    b_sq = np.einsum("ij,ij->i", vecs, vecs)
    ok = rows >= 0
    out = 2.0 * dots - q_sq[:, None] - b_sq[np.where(ok, rows, 0)]
    return np.where(ok, out, -np.inf).astype(np.float32, copy=False)


@contextlib.contextmanager
def faiss_threads_for(m: int) -> Iterator[None]:
    """One faiss (OpenMP) thread for a single query, in this thread only (OpenMP keeps the
    setting per thread): faiss' binary HNSW starts its threads even for one query, and their
    spin after it starves the rescore's torch threads (measured on 2 cores, 20k x 128: binary
    0.7-0.8 ms a query instead of 2.7-9.9 ms; sq8 0.4 ms either way)."""
    if m != 1:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def int_param(params: dict[str, Any], key: str, default: int) -> int:
    """A per-call integer search parameter; a float that is a whole number (what JSON and
    protobuf Structs carry, e.g. from gRPC) and a bool (``rescore=False``) are taken, any other
    value is a ValueError."""
    value = params.get(key, default)
    ok = isinstance(value, (int, float, np.integer, np.floating))
    if not ok or not np.isfinite(value) or value != int(value):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return int(value)


def train_sample(x: np.ndarray) -> np.ndarray:
    """At most ``MAX_TRAIN_SAMPLE`` rows of ``x`` (a seeded sample, in row order)."""
    if x.shape[0] <= MAX_TRAIN_SAMPLE:
        return x
    return x[sample_rows(x.shape[0])]


def sample_rows(n: int) -> np.ndarray:
    """Which of ``n`` rows ``train_sample`` keeps, in increasing order (for callers that fetch
    only those rows)."""
    if n <= MAX_TRAIN_SAMPLE:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(1234)
    return np.sort(rng.choice(n, MAX_TRAIN_SAMPLE, replace=False))


def check_ids(path: Path, ids: np.ndarray) -> None:
    """CorruptFileError naming ``path`` unless ``ids`` are unique non-negative labels."""
    try:
        check_labels(ids, ids.shape[0])
    except (ValueError, TypeError) as e:
        raise storage.CorruptFileError(path, str(e)) from None
