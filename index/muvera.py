"""MUVERA: multi-vector search as one single-vector search over Fixed Dimensional Encodings,
then an exact Chamfer rerank of the candidates (Dhulipala et al., NeurIPS 2024)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import storage
from .base import Index
from .carving import ball_carve
from .fde import FDE
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
from .tokens import check_token_sets

_MATRIX_FILES = {
    "hyperplanes": "fde_hyperplanes.npy",
    "projections": "fde_projections.npy",
    "final": "fde_final.npy",
    "sketch_buckets": "fde_sketch_buckets.npy",
    "sketch_signs": "fde_sketch_signs.npy",
}


class MuveraIndex(MultiVectorIndex):
    """Document FDEs in an inner single-vector index (inner product), exact Chamfer rerank.

    Spec (defaults shown): ``muvera:k_sim=5,d_proj=16,r_reps=20,d_final=0,final=dense,seed=0,
    inner=hnsw,candidates=100,tau=0`` (and ``tokens``, see ``index.multivector``) followed by
    the inner index's parameters prefixed ``inner_``
    (``inner=hnsw,inner_M=32,inner_ef=200``; ``inner=ivf,inner_nlist=256,inner_pq=64``).

    - ``k_sim``, ``d_proj``, ``r_reps``, ``d_final``, ``seed``: the FDE (see ``index.fde``);
      ``d_proj=0`` means no inner projection (the token dimension), ``d_final=0`` no final one.
    - ``final``: the final projection to ``d_final`` dimensions, ``dense`` (a +-1 matrix, d_FDE
      x d_final entries) or ``sketch`` (a Count-Sketch, two arrays of d_FDE; what large FDEs
      need: the paper's ``r_reps=40,k_sim=6,d_proj=128,d_final=10240,final=sketch``). The
      default stays ``dense`` (and the spec leaves ``final=dense`` out) so that specs, indexes
      and collections from before the option keep their meaning; ignored when ``d_final=0``.
    - ``candidates``: documents fetched by FDE search and reranked exactly (raised to ``k``).
    - ``tau``: ball-carving threshold for query tokens before the rerank, as an integer
      percentage (70 = cosine 0.7, the paper's value); 0 turns it off. Carving sums the tokens
      of each cluster, so the rerank scores (and ranking) approximate exact Chamfer.

    ``search`` accepts per call: ``candidates``, ``tau`` and the inner index's search keys with
    the ``inner_`` prefix (``inner_ef=256``, ``inner_nprobe=32``).

    Example:
        >>> idx = MuveraIndex(dim=8, k_sim=2, d_proj=4, r_reps=2, inner="flat")
        >>> rng = np.random.default_rng(0)
        >>> idx.add([rng.standard_normal((3, 8)) for _ in range(5)], np.arange(5))
        >>> idx.search([rng.standard_normal((2, 8))], k=3)[1].shape
        (1, 3)
    """

    kind = "muvera"
    file_parts: ClassVar[dict[str, str]] = {
        **MultiVectorIndex.file_parts,
        **{name: "fde" for name in _MATRIX_FILES.values()},
    }
    config_keys: ClassVar[dict[str, Any]] = {
        "k_sim": 5,
        "d_proj": 16,
        "r_reps": 20,
        "d_final": 0,
        "final": "dense",
        "seed": 0,
        "inner": "hnsw",
        "candidates": 100,
        "tau": 0,
        **MultiVectorIndex.config_keys,
    }

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        kind = str(params.get("inner", self.config_keys["inner"])).strip().lower()
        own, inner_params = split_inner(kind, params)
        super().__init__(dim, metric, **own)
        p = self.params
        if p["r_reps"] < 1:
            raise ValueError("muvera parameter r_reps must be >= 1, got 0")
        if p["tau"] > 100:
            raise ValueError(f"muvera parameter tau is a percentage (0-100), got {p['tau']}")
        self.fde = FDE(
            self.dim,
            k_sim=p["k_sim"],
            d_proj=p["d_proj"],
            r_reps=p["r_reps"],
            d_final=p["d_final"],
            seed=p["seed"],
            final=p["final"],
        )
        self._inner = new_inner(kind, self.fde.out_dim, inner_params)
        self.params.update({f"inner_{k}": v for k, v in self._inner.params.items()})
        self.search_keys = ("candidates", "tau", *(f"inner_{k}" for k in self._inner.search_keys))

    @property
    def spec(self) -> str:
        """The canonical spec string; ``final=dense`` (the default) is left out, so specs from
        before the option read the same."""
        kind, _, body = super().spec.partition(":")
        body = ",".join(p for p in body.split(",") if p != "final=dense")
        return kind + (":" + body if body else "")

    @property
    def inner(self) -> Index:
        """The single-vector index over the document FDEs."""
        return self._inner

    # ---- encoding ----------------------------------------------------------------------------
    def encode_queries(self, queries: Any) -> np.ndarray:
        """Query FDEs (m, out_dim) of a list of token sets (prepared as ``search`` does)."""
        q, q_off = check_token_sets(queries, self.dim, "queries")
        return self.fde.encode_queries(self._prepare(q), q_off)

    def encode_documents(self, documents: Any) -> np.ndarray:
        """Document FDEs (n, out_dim) of a list of token sets (prepared as ``add`` does)."""
        d, d_off = check_token_sets(documents, self.dim, "documents")
        return self.fde.encode_documents(self._prepare(d), d_off)

    # ---- accounting --------------------------------------------------------------------------
    def _ram_parts(self) -> dict[str, int]:
        """The token store's parts, fde (the FDE random matrices) and the inner index's parts
        prefixed ``inner_`` (its document FDEs)."""
        fde = sum(int(a.nbytes) for a in self.fde.matrices.values())
        return {**super()._ram_parts(), "fde": fde, **inner_ram(self._inner)}

    def _file_part(self, name: str) -> str:
        return inner_file_part(self._inner, name) or super()._file_part(name)

    # ---- protocol hooks ----------------------------------------------------------------------
    def _add_extra(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        self._inner.add(self.fde.encode_documents(tokens, offsets), labels)

    def _remove_extra(self, labels: np.ndarray) -> None:
        self._inner.remove(labels)

    def candidate_labels(self, queries: Any, **params: Any) -> np.ndarray:
        """The documents FDE search hands to the rerank: (m, candidates) labels, -1 padded."""
        q, q_off = check_token_sets(queries, self.dim, "queries")
        return self._candidates(self._prepare(q), q_off, 1, None, **params)

    def _candidates(
        self, q: np.ndarray, q_off: np.ndarray, k: int, allowed: np.ndarray | None, **params: Any
    ) -> np.ndarray:
        c = int(params.pop("candidates", self.params["candidates"]))
        params.pop("tau", None)
        if c < 1:
            raise ValueError(f"candidates must be >= 1, got {c}")
        inner_params = {key[len("inner_") :]: v for key, v in params.items()}
        qf = self.fde.encode_queries(q, q_off)
        _, labels = self._inner.search(qf, max(c, k), allowed=allowed, **inner_params)
        return labels

    def _search(
        self, q: TokenSets, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        tokens, q_off = q
        tau = int(params.get("tau", self.params["tau"]))
        if not 0 <= tau <= 100:
            raise ValueError(f"tau is a percentage (0-100), got {tau}")
        cand = self._candidates(tokens, q_off, k, allowed, **params)
        if tau:
            tokens, q_off = ball_carve(tokens, q_off, tau / 100.0)
        return self.rerank(tokens, q_off, cand, k)

    # ---- persistence -------------------------------------------------------------------------
    def _save_extra(self, directory: Path) -> list[str]:
        names = []
        for key, arr in self.fde.matrices.items():
            storage.save_npy_replace(directory / _MATRIX_FILES[key], arr)
            names.append(_MATRIX_FILES[key])
        self._inner.save(directory / INNER_DIR)
        return names

    def _manifest_fields(self, directory: Path) -> dict[str, Any]:
        return {**super()._manifest_fields(directory), **inner_fields(directory)}

    def _load_extra(self, directory: Path, manifest: dict[str, Any]) -> None:
        matrices = {}
        for key, (shape, dtype) in self.fde.expected_shapes().items():
            path = directory / _MATRIX_FILES[key]
            if not path.is_file():
                raise storage.CorruptFileError(path, "FDE matrix file is missing")
            matrices[key] = np.array(storage.load_npy(path, dtype, len(shape)))
            try:
                self.fde.check_matrix(key, matrices[key])
            except ValueError as e:
                raise storage.CorruptFileError(path, str(e)) from None
        self.fde.set_matrices(matrices)
        inner = load_inner(directory, manifest, type(self._inner))
        if inner.dim != self.fde.out_dim:
            raise storage.CorruptFileError(
                directory / INNER_DIR / "index.json",
                f"inner index has dimension {inner.dim}, the FDE {self.fde.out_dim}",
            )
        labels = self._store.lab
        if len(inner) != labels.shape[0] or not inner.contains(labels).all():
            raise storage.CorruptFileError(
                directory / INNER_DIR / "index.json", "inner index labels differ from labels.npy"
            )
        self._inner = inner
