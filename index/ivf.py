"""Inverted-file search through faiss: IVF-Flat and IVF-PQ.

Until enough vectors exist to train the coarse quantizer (and the product quantizer), the index
keeps its vectors in a buffer and answers exactly; the vectors it holds then train it and move in.
Files are plain ``.npy`` arrays (centroids, codebooks, inverted lists), rebuilt into faiss
structures on load, so faiss never parses a file from disk.

Several indexes can share one quantizer instead (the shards of one collection):
``train_quantizer`` trains it on a sample and returns its arrays, and ``adopt_quantizer`` makes
an empty index trained with them, so that every vector added later goes straight into the
lists of the shared centroids.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

from . import storage
from .base import Index
from .labelmap import RowStore
from .metric import Metric
from .validate import check_labels

# faiss' bundled SWIG stubs disagree with its runtime API (SearchParametersIVF, DirectMap).
faiss: Any = _faiss

_BUFFER_FILES = ("buffer.npy", "labels.npy")
_TRAINED_FILES = ("centroids.npy", "list_sizes.npy", "ids.npy", "codes.npy", "pq_centroids.npy")

TRAIN_POINTS_PER_CENTROID = 39  # faiss' own floor for k-means
MAX_TRAIN_POINTS_PER_CENTROID = 256
# faiss' id -> list entry map (DirectMap.Hashtable: a std::unordered_map node and bucket per id).
_DIRECT_MAP_BYTES = 40


def _gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


class IVFIndex(Index):
    """IVF-Flat (``pq=0``) or IVF-PQ (``pq`` sub-quantizers of ``nbits`` bits) on faiss.

    Spec: ``ivf:nlist=256,nprobe=16,pq=0,nbits=8``. ``nprobe`` can be overridden per call. A
    filtered search widens ``nprobe`` in proportion to how selective the filter is, so that the
    probed lists still hold enough allowed vectors. faiss GPU indexes serve unfiltered searches
    when the installed faiss sees a GPU.
    """

    kind = "ivf"
    file_parts = {
        "buffer.npy": "buffer",
        "labels.npy": "labels",
        "centroids.npy": "centroids",
        "list_sizes.npy": "lists",
        "ids.npy": "lists",
        "codes.npy": "codes",
        "pq_centroids.npy": "codebooks",
    }
    config_keys = {"nlist": 256, "nprobe": 16, "pq": 0, "nbits": 8}
    search_keys = ("nprobe",)

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        p = self.params
        if p["nlist"] < 1 or p["nprobe"] < 1:
            raise ValueError(
                f"ivf parameters nlist and nprobe must be >= 1, got {p['nlist']}, {p['nprobe']}"
            )
        if p["pq"] and self.dim % p["pq"]:
            raise ValueError(f"ivf parameter pq={p['pq']} must divide dim={self.dim}")
        if not 1 <= p["nbits"] <= 16:
            raise ValueError(f"ivf parameter nbits must be in 1..16, got {p['nbits']}")
        self._buffer = RowStore(self.dim)  # exact storage until trained
        self._faiss: Any = None
        # Labels in faiss (rows of width 0: label bookkeeping without per-label objects).
        self._live = RowStore(0)
        self._lock = threading.Lock()
        self._gpu: Any = None
        self._gpu_stale = True

    @property
    def trained(self) -> bool:
        return self._faiss is not None

    @property
    def train_size(self) -> int:
        """Vectors needed before the index trains itself."""
        need = TRAIN_POINTS_PER_CENTROID * self.params["nlist"]
        if self.params["pq"]:
            need = max(need, TRAIN_POINTS_PER_CENTROID * (1 << self.params["nbits"]))
        return need

    def _faiss_metric(self) -> int:
        return faiss.METRIC_L2 if self.metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT

    def _empty_faiss(self) -> Any:
        p = self.params
        quantizer = (faiss.IndexFlatL2 if self.metric is Metric.L2 else faiss.IndexFlatIP)(self.dim)
        if p["pq"]:
            ix = faiss.IndexIVFPQ(
                quantizer, self.dim, p["nlist"], p["pq"], p["nbits"], self._faiss_metric()
            )
        else:
            ix = faiss.IndexIVFFlat(quantizer, self.dim, p["nlist"], self._faiss_metric())
        ix.own_fields = True
        quantizer.this.disown()
        return ix

    # ---- bookkeeping -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._live) if self.trained else len(self._buffer)

    def contains(self, labels: np.ndarray) -> np.ndarray:
        if not self.trained:
            return self._buffer.contains(labels)
        return self._live.contains(labels)

    def labels(self) -> np.ndarray:
        if not self.trained:
            return self._buffer.live_labels()
        return self._live.live_labels()

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """Exact vectors before training; faiss' reconstructions (exact for IVF-Flat) after."""
        if not self.trained:
            return self._buffer.get(labels)
        return self._faiss.reconstruct_batch(np.ascontiguousarray(labels, dtype=np.int64))

    def _ram_parts(self) -> dict[str, int]:
        """Untrained: buffer (the exact float32 rows) and labels. Trained, from faiss' arrays:
        centroids (the coarse quantizer), codes (the inverted lists' codes: raw vectors for
        IVF-Flat, ``pq`` bytes a vector for IVF-PQ), lists (their ids and faiss' id map),
        codebooks (PQ centroids and the precomputed distance table), labels. List capacity
        beyond the entries is not counted."""
        with self._lock:
            if not self.trained:
                buffer, labels = self._buffer.ram_bytes()
                return {"buffer": buffer, "labels": labels}
            ix = self._faiss
            n = int(ix.ntotal)
            parts = {
                "centroids": self.params["nlist"] * self.dim * 4,
                "codes": n * int(ix.code_size),
                "lists": n * (8 + _DIRECT_MAP_BYTES),
                "labels": self._live.ram_bytes()[1],
            }
            if self.params["pq"]:
                pq = ix.pq
                parts["codebooks"] = int(pq.M * pq.ksub * pq.dsub * 4) + int(
                    ix.precomputed_table.size() * 4
                )
            return parts

    # ---- mutation ----------------------------------------------------------------------------
    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        with self._lock:
            self._gpu_stale = True
            if self.trained:
                self._faiss.add_with_ids(x, labels)
                self._live.append(_no_columns(len(labels)), labels)
                return
            self._buffer.append(x, labels)
            if len(self._buffer) >= self.train_size:
                self._train_from_buffer()

    def _train_from_buffer(self) -> None:
        x, lab = self._buffer.live()
        ix = self._train_faiss(x)
        ix.set_direct_map_type(faiss.DirectMap.Hashtable)
        ix.add_with_ids(x, lab)
        self._faiss = ix
        self._live = RowStore(0)
        self._live.load(_no_columns(len(lab)), np.sort(lab))
        self._buffer = RowStore(self.dim)

    def _train_faiss(self, x: np.ndarray) -> Any:
        """An empty faiss index trained on (a seeded sample of at most
        ``MAX_TRAIN_POINTS_PER_CENTROID * max(nlist, 2**nbits)`` rows of) prepared vectors."""
        cap = MAX_TRAIN_POINTS_PER_CENTROID * max(self.params["nlist"], 1 << self.params["nbits"])
        sample = x
        if x.shape[0] > cap:
            rng = np.random.default_rng(1234)
            sample = x[np.sort(rng.choice(x.shape[0], cap, replace=False))]
        ix = self._empty_faiss()
        ix.train(np.ascontiguousarray(sample, dtype=np.float32))
        return ix

    def _faiss_from(self, centroids: np.ndarray, pq_centroids: np.ndarray | None) -> Any:
        """An empty, trained faiss index with these (checked) centroids and PQ codebooks; the
        caller sets the direct map once its lists are filled (setting it rebuilds it)."""
        ix = self._empty_faiss()
        ix.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        if self.params["pq"]:
            assert pq_centroids is not None
            pqc = np.ascontiguousarray(pq_centroids, dtype=np.float32).ravel()
            faiss.copy_array_to_vector(pqc, ix.pq.centroids)
            ix.is_trained = True
            ix.precompute_table()
        ix.is_trained = True
        return ix

    def _quantizer_arrays(self, ix: Any) -> dict[str, np.ndarray]:
        out = {"centroids": ix.quantizer.reconstruct_n(0, self.params["nlist"])}
        if self.params["pq"]:
            pq = ix.pq
            out["pq_centroids"] = faiss.vector_to_array(pq.centroids).reshape(
                pq.M, pq.ksub, pq.dsub
            )
        return out

    # ---- a shared quantizer ------------------------------------------------------------------
    def train_quantizer(self, sample: Any) -> dict[str, np.ndarray]:
        """Trains a coarse quantizer (and, for ``pq > 0``, the PQ codebooks) on ``sample``, as
        the index trains itself (the same seeded sample cap and faiss training), without adding
        anything to this index or changing it.

        Args:
            sample: (n, dim) finite float vectors, at least ``nlist`` of them (and ``2**nbits``
                for ``pq > 0``); ``train_size`` or more is what faiss' k-means wants.

        Returns:
            ``{"centroids": (nlist, dim) float32}``, plus ``"pq_centroids": (pq, 2**nbits,
            dim // pq) float32`` for ``pq > 0``: what ``adopt_quantizer`` takes.

        Raises:
            ValueError: bad vectors, or fewer than the training needs.

        Example:
            >>> q = IVFIndex(8, nlist=4).train_quantizer(np.random.rand(200, 8))
            >>> q["centroids"].shape
            (4, 8)
        """
        x = self._prepare_batch(self._check_batch(sample, "sample")[0])
        p = self.params
        need = max(p["nlist"], (1 << p["nbits"]) if p["pq"] else 1)
        if x.shape[0] < need:
            raise ValueError(
                f"a quantizer for {self.spec} trains on at least {need} vectors "
                f"(nlist{' and 2**nbits' if p['pq'] else ''}), got a sample of {x.shape[0]}"
            )
        return self._quantizer_arrays(self._train_faiss(x))

    def quantizer(self) -> dict[str, np.ndarray] | None:
        """The trained quantizer's arrays (as ``train_quantizer`` returns them; copies), or None
        while the index is untrained."""
        with self._lock:
            return self._quantizer_arrays(self._faiss) if self.trained else None

    def adopt_quantizer(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Makes this empty index trained with a quantizer trained elsewhere (``train_quantizer``
        of an index with the same spec, dim and metric): vectors added later go straight into
        its inverted lists. An empty index that was trained already takes the new one.

        Args:
            arrays: ``{"centroids": (nlist, dim) float32}``, plus ``"pq_centroids"`` (pq,
                2**nbits, dim // pq) float32 for ``pq > 0``; finite. Copied.

        Raises:
            ValueError: the index holds vectors, or an array is missing, extra, of the wrong
                shape or dtype, or not finite (the message names it).
        """
        centroids, pq_centroids = self._check_quantizer(arrays)
        with self._lock:
            if len(self):
                raise ValueError(
                    f"adopt_quantizer needs an empty index; this {self.kind} index holds "
                    f"{len(self)} vectors"
                )
            ix = self._faiss_from(centroids, pq_centroids)
            ix.set_direct_map_type(faiss.DirectMap.Hashtable)
            self._faiss = ix
            self._live = RowStore(0)
            self._buffer = RowStore(self.dim)
            self._gpu_stale = True

    def _check_quantizer(self, arrays: Any) -> tuple[np.ndarray, np.ndarray | None]:
        if not isinstance(arrays, Mapping):
            raise ValueError(f"a quantizer is a dict of arrays, got {type(arrays).__name__}")
        p = self.params
        want: dict[str, tuple[int, ...]] = {"centroids": (p["nlist"], self.dim)}
        if p["pq"]:
            want["pq_centroids"] = (p["pq"], 1 << p["nbits"], self.dim // p["pq"])
        extra = sorted(set(map(str, arrays)) - set(want))
        missing = sorted(set(want) - set(map(str, arrays)))
        if extra or missing:
            raise ValueError(
                f"a quantizer for {self.spec} holds {sorted(want)}; "
                f"got {sorted(map(str, arrays))} (missing {missing}, unexpected {extra})"
            )
        for name, shape in want.items():
            a = arrays[name]
            if not isinstance(a, np.ndarray) or a.dtype != np.float32:
                kind = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
                raise ValueError(f"quantizer array {name!r} must be a float32 array, got {kind}")
            if a.shape != shape:
                raise ValueError(
                    f"quantizer array {name!r} has shape {a.shape}, expected {shape} "
                    f"for {self.spec} at dim={self.dim}"
                )
            if not np.isfinite(a).all():
                raise ValueError(f"quantizer array {name!r} contains NaN or inf")
        return arrays["centroids"], arrays.get("pq_centroids")

    def _remove(self, labels: np.ndarray) -> None:
        with self._lock:
            self._gpu_stale = True
            if not self.trained:
                self._buffer.remove(labels)
                return
            self._faiss.remove_ids(np.ascontiguousarray(labels, dtype=np.int64))
            self._live.remove(labels)

    # ---- search ------------------------------------------------------------------------------
    def _search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.trained:
            return self._search_buffer(q, k, allowed)
        nlist = self.params["nlist"]
        nprobe = int(params.get("nprobe", self.params["nprobe"]))
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        sel = None
        if allowed is not None:
            nprobe = math.ceil(nprobe * len(self) / allowed.size)
            sel = faiss.IDSelectorBatch(allowed)
        nprobe = min(nprobe, nlist)
        with self._lock:
            ix = self._faiss
            if sel is None and _gpu_count() > 0:
                ix = self._gpu_index()
            sp = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel) if sel is not None else None
            if sp is None:
                ix.nprobe = nprobe
                dist, lab = ix.search(q, k)
            else:
                dist, lab = ix.search(q, k, params=sp)
        scores = -dist if self.metric is Metric.L2 else dist
        scores = np.where(lab >= 0, scores, -np.inf).astype(np.float32, copy=False)
        return scores, lab.astype(np.int64, copy=False)

    def _search_buffer(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        from . import scoring  # torch: only once an exact search needs it

        subset = allowed if allowed is not None else self._buffer.live_labels()
        base = scoring.to_device(self.vectors(subset))
        scores, rows = scoring.topk(q, base, k, self.metric)
        return scores, np.where(rows >= 0, subset[np.maximum(rows, 0)], -1)

    def _gpu_index(self) -> Any:
        if self._gpu is None or self._gpu_stale:
            res = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(res, 0, self._faiss)
            self._gpu_res = res
            self._gpu_stale = False
        return self._gpu

    # ---- persistence -------------------------------------------------------------------------
    def _save_files(self, directory: Path) -> list[str]:
        # ``_load_files`` tells the two states apart by ``buffer.npy``: files of the other state,
        # left by an earlier save into the same directory, must not outlive this one.
        stale = _TRAINED_FILES if not self.trained else _BUFFER_FILES
        for name in stale:
            (directory / name).unlink(missing_ok=True)
        if not self.trained:
            x, lab = self._buffer.live()
            storage.save_npy(directory / "buffer.npy", x)
            storage.save_npy(directory / "labels.npy", lab)
            return list(_BUFFER_FILES)
        ix = self._faiss
        nlist = self.params["nlist"]
        sizes = np.array([ix.invlists.list_size(i) for i in range(nlist)], dtype=np.int64)
        ids = np.empty(int(sizes.sum()), dtype=np.int64)
        codes = np.empty((ids.size, ix.code_size), dtype=np.uint8)
        pos = 0
        for i in range(nlist):
            n = int(sizes[i])
            if n:
                ids[pos : pos + n] = faiss.rev_swig_ptr(ix.invlists.get_ids(i), n)
                codes[pos : pos + n] = faiss.rev_swig_ptr(
                    ix.invlists.get_codes(i), n * ix.code_size
                ).reshape(n, ix.code_size)
                pos += n
        # A trained index may hold no vectors (one that adopted a quantizer): empty lists.
        files = {f"{name}.npy": arr for name, arr in self._quantizer_arrays(ix).items()}
        files.update({"list_sizes.npy": sizes, "ids.npy": ids, "codes.npy": codes})
        for name, arr in files.items():
            storage.save_npy(directory / name, arr)
        return list(files)

    def _load_files(self, directory: Path, manifest: dict[str, Any]) -> None:
        if "buffer.npy" in manifest["files"]:
            x = storage.load_npy(directory / "buffer.npy", np.float32, 2)
            lab = storage.load_npy(directory / "labels.npy", np.int64, 1)
            if x.shape != (lab.shape[0], self.dim):
                raise storage.CorruptFileError(
                    directory / "buffer.npy",
                    f"shape {x.shape}, expected ({lab.shape[0]}, {self.dim})",
                )
            _check_ids(directory / "labels.npy", lab)
            self._buffer.load(x, lab)
            return
        p = self.params
        code_size = self._empty_faiss().code_size
        cpath = directory / "centroids.npy"
        centroids = storage.load_npy(cpath, np.float32, 2)
        if centroids.shape != (p["nlist"], self.dim) or not np.isfinite(centroids).all():
            raise storage.CorruptFileError(
                cpath, f"shape {centroids.shape}, expected ({p['nlist']}, {self.dim}) finite"
            )
        sizes = storage.load_npy(directory / "list_sizes.npy", np.int64, 1)
        ids = storage.load_npy(directory / "ids.npy", np.int64, 1)
        codes = storage.load_npy(directory / "codes.npy", np.uint8, 2)
        if sizes.shape != (p["nlist"],) or (sizes < 0).any() or int(sizes.sum()) != ids.shape[0]:
            raise storage.CorruptFileError(
                directory / "list_sizes.npy", "list sizes do not match ids.npy"
            )
        if codes.shape != (ids.shape[0], code_size):
            raise storage.CorruptFileError(
                directory / "codes.npy",
                f"shape {codes.shape}, expected ({ids.shape[0]}, {code_size})",
            )
        _check_ids(directory / "ids.npy", ids)
        pqc = None
        if p["pq"]:
            ppath = directory / "pq_centroids.npy"
            pqc = storage.load_npy(ppath, np.float32, 3)
            want = (p["pq"], 1 << p["nbits"], self.dim // p["pq"])
            if pqc.shape != want or not np.isfinite(pqc).all():
                raise storage.CorruptFileError(ppath, f"shape {pqc.shape}, expected {want} finite")
        ix = self._faiss_from(centroids, pqc)
        ids = np.ascontiguousarray(ids)
        codes = np.ascontiguousarray(codes)
        pos = 0
        for i, n in enumerate(sizes.tolist()):
            if n:
                ix.invlists.add_entries(
                    i, n, faiss.swig_ptr(ids[pos : pos + n]), faiss.swig_ptr(codes[pos : pos + n])
                )
                pos += n
        ix.ntotal = ids.shape[0]
        ix.set_direct_map_type(faiss.DirectMap.Hashtable)
        self._faiss = ix
        self._live = RowStore(0)
        self._live.load(_no_columns(ids.shape[0]), np.sort(ids))


def _no_columns(n: int) -> np.ndarray:
    return np.empty((n, 0), dtype=np.float32)


def _check_ids(path: Path, ids: np.ndarray) -> None:
    try:
        check_labels(ids, ids.shape[0])
    except (ValueError, TypeError) as e:
        raise storage.CorruptFileError(path, str(e)) from None
