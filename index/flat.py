"""Exact search: the oracle every other index is tested against."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import storage
from .base import Index, empty_result, merge_topk
from .labelmap import RowStore
from .metric import Metric
from .validate import check_labels

if TYPE_CHECKING:
    import torch


class FlatIndex(Index):
    """Brute-force top-k with the torch scoring kernels (CUDA float16 when present).

    After ``save`` or ``load`` the rows are a read-only memory map of ``vectors.npy`` (searches
    read them through the page cache); rows added since live in RAM until the next save.

    Example:
        >>> idx = FlatIndex(dim=4, metric="ip")
        >>> idx.add(np.eye(4, dtype=np.float32), np.arange(4))
        >>> idx.search(np.eye(4)[:1], k=2)[1][0, 0]
        0
    """

    kind = "flat"
    file_parts = {"vectors.npy": "vectors", "labels.npy": "labels"}
    mapped_files = frozenset({"vectors.npy"})

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        self._store = RowStore(self.dim)
        # Scoring tensors of the store's segments (zero-copy on the CPU), with their first rows.
        self._cache_version = -1
        self._segments: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []

    def __len__(self) -> int:
        return len(self._store)

    def contains(self, labels: np.ndarray) -> np.ndarray:
        return self._store.contains(labels)

    def labels(self) -> np.ndarray:
        return self._store.live_labels()

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        return self._store.get(labels)

    def reserve(self, n: int) -> None:
        self._store.reserve(int(n))

    def _ram_parts(self) -> dict[str, int]:
        """vectors: the index's own float32 rows held in RAM (rows memory-mapped since the last
        save or load count 0); labels: their labels and tombstones (the scoring tensors share
        the rows' memory on the CPU)."""
        vectors, labels = self._store.ram_bytes()
        return {"vectors": vectors, "labels": labels}

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        self._store.append(x, labels)

    def _remove(self, labels: np.ndarray) -> None:
        self._store.remove(labels)

    def _device_segments(self) -> list[tuple[int, torch.Tensor, torch.Tensor | None]]:
        """``(first row, rows on the scoring device, their squared norms for L2)`` per segment
        of the store (the memory-mapped base and the tail in RAM)."""
        import warnings

        from . import scoring

        s = self._store
        if self._cache_version != s.version:
            segments = []
            for start, rows in s.segments():
                with warnings.catch_warnings():
                    # A read-only map: torch warns that it cannot write through it (it never does).
                    warnings.filterwarnings("ignore", "The given NumPy array is not writable")
                    base = scoring.to_device(rows)
                sq = (base.float() ** 2).sum(1) if self.metric is Metric.L2 else None
                segments.append((start, base, sq))
            self._segments, self._cache_version = segments, s.version
        return self._segments

    def _search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        # torch and the scoring kernels load with the first search: a process that never
        # searches a flat index (an HNSW or IVF collection, an ingest) never imports torch.
        import torch

        from . import scoring

        s = self._store
        mask: np.ndarray | None = None
        if allowed is not None:
            mask = np.zeros(s.n, dtype=bool)
            mask[s.row_of(allowed)] = True
        elif s.has_dead():
            mask = s.alive[: s.n]
        found: list[tuple[np.ndarray, np.ndarray]] = []
        for start, base, sq in self._device_segments():
            valid = None
            if mask is not None:
                part = mask[start : start + base.shape[0]]
                if not part.any():
                    continue
                valid = torch.from_numpy(part.copy()).to(base.device)
            scores, rows = scoring.topk(q, base, k, self.metric, base_sq_norms=sq, valid=valid)
            found.append((scores, np.where(rows >= 0, rows + start, -1)))
        if not found:
            return empty_result(q.shape[0], k)
        scores, rows = merge_topk(found, k)
        return scores, np.where(rows >= 0, s.lab[np.maximum(rows, 0)], -1)

    def _save_files(self, directory: Path) -> list[str]:
        lab = self._store.save(directory / "vectors.npy")
        storage.save_npy(directory / "labels.npy", lab)
        return ["vectors.npy", "labels.npy"]

    def _load_files(self, directory: Path, manifest: dict[str, Any]) -> None:
        x = storage.load_npy(directory / "vectors.npy", np.float32, 2, mmap=True)
        lab = storage.load_npy(directory / "labels.npy", np.int64, 1)
        if x.shape[1] != self.dim:
            raise storage.CorruptFileError(
                directory / "vectors.npy",
                f"vectors have dimension {x.shape[1]}, manifest says {self.dim}",
            )
        if x.shape[0] != lab.shape[0]:
            raise storage.CorruptFileError(
                directory / "labels.npy", f"{lab.shape[0]} labels for {x.shape[0]} vectors"
            )
        try:
            check_labels(lab, lab.shape[0])
        except (ValueError, TypeError) as e:
            raise storage.CorruptFileError(directory / "labels.npy", str(e)) from None
        storage.check_finite_npy(directory / "vectors.npy", x)
        self._store.load(x, lab)
