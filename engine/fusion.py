"""Query modes and the fusion of a dense and a lexical ranking into one (hybrid search).

Both rankings are ``(scores (m, n), labels (m, n))`` in the index result contract (best first,
-1 / -inf padding). Two fusions:

- ``rrf``: reciprocal rank fusion (Cormack et al., 2009): a document's score is
  ``2 * (w / (rrf_k + rank_dense) + (1 - w) / (rrf_k + rank_lexical))`` with 1-based ranks and
  no term for a list that lacks it; at the default ``w = 0.5`` this is the classic
  ``sum 1 / (rrf_k + rank)``. Uses ranks only, so it needs no score calibration.
- ``weighted``: a convex combination of min-max normalised scores (Bruch et al., 2023, "An
  analysis of fusion functions for hybrid retrieval"): each list's scores are mapped to [0, 1]
  over the list itself (all equal: 1), and a document's score is
  ``w * dense + (1 - w) * lexical`` with 0 for a list that lacks it.

- ``dbsf``: distribution-based score fusion (as Qdrant calls it): the same convex combination,
  but each list's scores are normalised by its own distribution, ``(s - (mu - 3 sd)) / (6 sd)``
  with the mean and standard deviation over the list (all equal: 1). A side whose best scores
  stand out from the rest of its list keeps a wide spread; a side whose scores are flat (a weak,
  undecided ranking for this query) is compressed, so it moves the fused ranking less. Min-max
  stretches every list to [0, 1] whatever its shape.

``w`` (``weight``) is the dense side's weight. Ties are broken by the smaller label (the earlier
insertion), so fused rankings are deterministic. Each side contributes its top ``depth``
documents (at least k); documents outside both lists cannot be returned.

The defaults were chosen from measurements (bench/hybrid.py; README "Hybrid search").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MODES = ("dense", "lexical", "hybrid")
FUSIONS = ("rrf", "weighted", "dbsf")

DEFAULT_FUSION = "dbsf"
DEFAULT_WEIGHT = 0.5
DEFAULT_RRF_K = 60.0
DEFAULT_DEPTH = 100
MAX_DEPTH = 10_000


def check_mode(mode: Any) -> str:
    if not isinstance(mode, str) or mode.strip().lower() not in MODES:
        raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    return mode.strip().lower()


@dataclass(frozen=True)
class Fusion:
    """How a hybrid search fuses its two rankings (see the module docstring)."""

    method: str = DEFAULT_FUSION
    weight: float = DEFAULT_WEIGHT
    rrf_k: float = DEFAULT_RRF_K
    depth: int = DEFAULT_DEPTH

    @classmethod
    def make(
        cls,
        method: Any = None,
        weight: Any = None,
        rrf_k: Any = None,
        depth: Any = None,
        *,
        base: Fusion | None = None,
    ) -> Fusion:
        """A checked Fusion: the given values over ``base``'s (the collection's defaults).

        Raises:
            ValueError: an unknown method, a weight outside [0, 1], rrf_k <= 0 or not finite,
                depth outside 1..10000.
        """
        base = base or cls()
        if method is None:
            method = base.method
        if not isinstance(method, str) or method.strip().lower() not in FUSIONS:
            raise ValueError(f"unknown fusion {method!r}; use one of {', '.join(FUSIONS)}")
        weight = base.weight if weight is None else weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating)):
            raise ValueError(f"fusion weight must be a number in [0, 1], got {weight!r}")
        if not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"fusion weight must be in [0, 1], got {weight!r}")
        rrf_k = base.rrf_k if rrf_k is None else rrf_k
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float, np.floating)):
            raise ValueError(f"rrf_k must be a positive number, got {rrf_k!r}")
        if not (float(rrf_k) > 0 and math.isfinite(float(rrf_k))):
            raise ValueError(f"rrf_k must be a positive number, got {rrf_k!r}")
        depth = base.depth if depth is None else depth
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)):
            raise ValueError(f"fusion depth must be an int in 1..{MAX_DEPTH}, got {depth!r}")
        if not 1 <= int(depth) <= MAX_DEPTH:
            raise ValueError(f"fusion depth must be in 1..{MAX_DEPTH}, got {depth}")
        return cls(method.strip().lower(), float(weight), float(rrf_k), int(depth))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "weight": self.weight,
            "rrf_k": self.rrf_k,
            "depth": self.depth,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Fusion:
        if not isinstance(d, dict) or set(d) - {"method", "weight", "rrf_k", "depth"}:
            raise ValueError(f"invalid fusion settings {d!r}")
        return cls.make(d.get("method"), d.get("weight"), d.get("rrf_k"), d.get("depth"))

    def fuse(
        self, dense: tuple[np.ndarray, np.ndarray], lexical: tuple[np.ndarray, np.ndarray], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fuses two batches of rankings (m queries each) into ``(scores (m, k), labels)``."""
        (ds, dl), (ls, ll) = dense, lexical
        m = dl.shape[0]
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        labels = np.full((m, k), -1, dtype=np.int64)
        for i in range(m):
            s, lab = self._fuse_one(ds[i], dl[i], ls[i], ll[i])
            n = min(k, lab.size)
            scores[i, :n], labels[i, :n] = s[:n], lab[:n]
        return scores, labels

    def _fuse_one(
        self, ds: np.ndarray, dl: np.ndarray, ls: np.ndarray, ll: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        dv, lv = dl >= 0, ll >= 0
        dl, ds, ll, ls = dl[dv], ds[dv].astype(np.float64), ll[lv], ls[lv].astype(np.float64)
        w = self.weight
        if self.method == "rrf":
            dpart = 2 * w / (self.rrf_k + np.arange(1, dl.size + 1))
            lpart = 2 * (1 - w) / (self.rrf_k + np.arange(1, ll.size + 1))
        elif self.method == "weighted":
            dpart, lpart = w * _minmax(ds), (1 - w) * _minmax(ls)
        else:
            dpart, lpart = w * _dbsf(ds), (1 - w) * _dbsf(ls)
        labels, inverse = np.unique(np.concatenate((dl, ll)), return_inverse=True)
        fused = np.zeros(labels.size, dtype=np.float64)
        np.add.at(fused, inverse, np.concatenate((dpart, lpart)))
        order = np.lexsort((labels, -fused))
        return fused[order].astype(np.float32), labels[order]


def _dbsf(s: np.ndarray) -> np.ndarray:
    if not s.size:
        return s
    sd = s.std()
    return np.ones_like(s) if sd == 0 else (s - (s.mean() - 3 * sd)) / (6 * sd)


def _minmax(s: np.ndarray) -> np.ndarray:
    if not s.size:
        return s
    lo, hi = s.min(), s.max()
    return np.ones_like(s) if hi == lo else (s - lo) / (hi - lo)


def fusion_for(
    mode: str, fusion: Any, weight: Any, rrf_k: Any, depth: Any, *, base: Fusion | None = None
) -> Fusion | None:
    """The checked Fusion of a ``mode="hybrid"`` search (the given values over ``base``'s);
    None for other modes, which take no fusion arguments.

    Raises:
        ValueError: an unknown mode, a bad fusion value, or fusion arguments outside hybrid.
    """
    if check_mode(mode) == "hybrid":
        return Fusion.make(fusion, weight, rrf_k, depth, base=base)
    if any(a is not None for a in (fusion, weight, rrf_k, depth)):
        raise ValueError("fusion, weight, rrf_k and depth apply to mode='hybrid' only")
    return None
