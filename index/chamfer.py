"""Exhaustive exact Chamfer search (spec ``chamfer``): the multi-vector oracle, which MUVERA and
the token-ANN heuristic are measured against."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .metric import Metric
from .multivector import MultiVectorIndex, TokenSets
from .tokens import TokenBlocks

if TYPE_CHECKING:
    import torch


class ChamferIndex(MultiVectorIndex):
    """Exhaustive exact Chamfer search: the multi-vector oracle (``flat`` for token sets).

    Spec: ``chamfer`` (``chamfer:tokens=int8`` and the like score compact codes; see
    ``index.multivector``).

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

    def _ram_parts(self) -> dict[str, int]:
        """The token store's parts and cache: with ``tokens=f16``, the float32 copy of every
        token kept for scoring on the CPU (on a GPU it is device memory, not counted); compact
        codes are decoded block by block instead, with no copy kept."""
        parts = super()._ram_parts()
        cache = self._cache
        if cache is not None and cache[1].device.type == "cpu":
            parts["cache"] = cache[1].numel() * cache[1].element_size()
        return parts

    def _device_tokens(self) -> torch.Tensor | TokenBlocks:
        """All stored tokens as scoring reads them. Float16 tokens are converted once to the
        scoring device (float32 on the CPU, float16 on CUDA) and kept between searches:
        converting them on every query would cost as much as scoring. Compact codes are decoded
        per block (keeping them decoded would undo the compression)."""
        from . import scoring

        if self._codec is not None:
            return self.scoring_tokens()
        s = self._store
        if self._cache is None or self._cache[0] != s.version:
            self._cache = None  # free the old copy first
            self._cache = (s.version, scoring.to_scoring_tokens(s.blocks()))
        return self._cache[1]

    def _search(
        self, q: TokenSets, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        from . import scoring

        tokens, q_off = q
        if allowed is not None:
            return self.search_exact(tokens, q_off, k, allowed)
        s = self._store
        valid = s.alive if s.has_dead() else None
        offsets = s.offsets
        scores, rows = scoring.chamfer_topk(
            tokens, q_off, self._device_tokens(), offsets, k, valid=valid
        )
        return scores, np.where(rows >= 0, s.lab[np.maximum(rows, 0)], -1)
