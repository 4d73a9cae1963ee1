"""Exact search: the oracle every other index is tested against."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import storage
from .base import Index
from .labelmap import RowStore
from .metric import Metric
from .validate import check_labels

if TYPE_CHECKING:
    import torch


class FlatIndex(Index):
    """Brute-force top-k with the torch scoring kernels (CUDA float16 when present).

    Example:
        >>> idx = FlatIndex(dim=4, metric="ip")
        >>> idx.add(np.eye(4, dtype=np.float32), np.arange(4))
        >>> idx.search(np.eye(4)[:1], k=2)[1][0, 0]
        0
    """

    kind = "flat"
    file_parts = {"vectors.npy": "vectors", "labels.npy": "labels"}

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        self._store = RowStore(self.dim)
        self._cache_version = -1
        self._base: torch.Tensor | None = None
        self._sq: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self._store)

    def contains(self, labels: np.ndarray) -> np.ndarray:
        return self._store.contains(labels)

    def labels(self) -> np.ndarray:
        return self._store.live_labels()

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        return self._store.x[self._store.row_of(labels)]

    def reserve(self, n: int) -> None:
        self._store.reserve(int(n))

    def _ram_parts(self) -> dict[str, int]:
        """vectors: the index's own float32 rows; labels: their labels and tombstones (the
        scoring tensor shares the rows' memory on the CPU)."""
        vectors, labels = self._store.ram_bytes()
        return {"vectors": vectors, "labels": labels}

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        self._store.append(x, labels)

    def _remove(self, labels: np.ndarray) -> None:
        self._store.remove(labels)

    def _device_base(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        from . import scoring

        s = self._store
        if self._cache_version != s.version or self._base is None:
            self._base = scoring.to_device(s.x[: s.n])
            self._sq = (self._base.float() ** 2).sum(1) if self.metric is Metric.L2 else None
            self._cache_version = s.version
        return self._base, self._sq

    def _search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        # torch and the scoring kernels load with the first search: a process that never
        # searches a flat index (an HNSW or IVF collection, an ingest) never imports torch.
        import torch

        from . import scoring

        s = self._store
        base, sq = self._device_base()
        valid: torch.Tensor | None = None
        if allowed is not None:
            mask = np.zeros(s.n, dtype=bool)
            mask[s.row_of(allowed)] = True
            valid = torch.from_numpy(mask).to(base.device)
        elif s.has_dead():
            valid = torch.from_numpy(s.alive[: s.n].copy()).to(base.device)
        scores, rows = scoring.topk(q, base, k, self.metric, base_sq_norms=sq, valid=valid)
        return scores, np.where(rows >= 0, s.lab[np.maximum(rows, 0)], -1)

    def _save_files(self, directory: Path) -> list[str]:
        x, lab = self._store.live()
        storage.save_npy(directory / "vectors.npy", x)
        storage.save_npy(directory / "labels.npy", lab)
        return ["vectors.npy", "labels.npy"]

    def _load_files(self, directory: Path, manifest: dict[str, Any]) -> None:
        x = storage.load_npy(directory / "vectors.npy", np.float32, 2)
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
        if not np.isfinite(x).all():
            raise storage.CorruptFileError(directory / "vectors.npy", "contains NaN or inf")
        self._store.load(x, lab)
