"""Fixed Dimensional Encodings (MUVERA, Dhulipala et al., NeurIPS 2024).

A token set becomes one vector whose inner products approximate Chamfer similarity:

- SimHash partition: ``k_sim`` Gaussian hyperplanes per repetition; a token's bucket is the
  integer whose bit j is 1 when the token lies on the positive side of hyperplane j (plain
  binary, no Gray code), so the Hamming distance between two buckets' bit strings is
  ``popcount(a ^ b)``. B = 2**k_sim buckets.
- Inner projection psi(x) = S x / sqrt(d_proj) with S uniform +-1 of shape (d, d_proj); the
  identity when ``d_proj`` equals the token dimension (or is 0).
- Query FDE: per bucket, the SUM of the projected tokens. Document FDE: per bucket, the AVERAGE,
  and an empty bucket takes the projected token whose bits are nearest (Hamming) to the bucket's
  bits (``fill_empty_partitions``; documents only, never queries; ties go to the earliest token).
- ``r_reps`` independent repetitions are concatenated, repetition-major then bucket-major:
  d_FDE = r_reps * B * d_proj.
- An optional final projection to ``d_final`` dimensions, applied to both sides: ``dense``, a
  matrix S' (d_FDE, d_final) uniform +-1 scaled by 1 / sqrt(d_final); or ``sketch``, a
  Count-Sketch (one signed output bucket per FDE coordinate, ``index.fde_sketch``), which
  stores two arrays of length d_FDE instead of d_FDE * d_final entries. Both give unbiased
  inner products with the same variance.

Everything is vectorised over a whole batch of token sets (a loop over repetitions only); the
random matrices are drawn from ``seed`` and kept as arrays, so a reopened index that loads them
encodes new queries bit for bit as before.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import fde_sketch
from .fde_sketch import CountSketch

MAX_K_SIM = 12
# Bound on the (tokens x buckets) Hamming key matrix built to fill empty document buckets.
_FILL_BLOCK_ELEMENTS = 1 << 23
# Token sets encoded per block: bounds the (docs, d_FDE) float32 output and the token temporaries.
_DOC_BLOCK_BYTES = 256 << 20
_BLOCK_TOKENS = 1 << 16
FINAL_KINDS = ("dense", "sketch")
# Entries of a dense final matrix beyond which FDE refuses it (drawing it takes 8 bytes an
# entry, applying it 4): the paper's 327,680 -> 10,240 is 3.4e9 and needs ``final=sketch``.
MAX_DENSE_FINAL = 1 << 30


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of non-negative ints (< 2**32)."""
    x = np.asarray(x, dtype=np.uint32)
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * np.uint32(0x01010101)) >> 24).astype(np.int64)


_POPCOUNT = popcount(np.arange(1 << MAX_K_SIM)).astype(np.int64)


def simhash_buckets(tokens: np.ndarray, hyperplanes: np.ndarray) -> np.ndarray:
    """Bucket id of each token: bit j set iff ``tokens @ hyperplanes[:, j] > 0``.

    Args:
        tokens: (T, d) float32.
        hyperplanes: (d, k_sim) float32.

    Returns:
        (T,) int64 in [0, 2**k_sim).
    """
    k_sim = hyperplanes.shape[1]
    if k_sim == 0:
        return np.zeros(tokens.shape[0], dtype=np.int64)
    bits = (tokens @ hyperplanes) > 0
    codes = np.zeros(tokens.shape[0], dtype=np.int64)
    for j in range(k_sim):
        codes |= bits[:, j].astype(np.int64) << j
    return codes


def nearest_tokens(codes: np.ndarray, offsets: np.ndarray, n_buckets: int) -> np.ndarray:
    """For every (document, bucket), the token whose bucket bits are nearest to the bucket's.

    Args:
        codes: (T,) bucket ids of the tokens.
        offsets: (n + 1,) document boundaries; every document holds at least one token.
        n_buckets: B.

    Returns:
        (n, B) int64 global token index: the smallest Hamming distance ``popcount(code ^ b)``,
        the earliest token of the document on ties.
    """
    n = offsets.shape[0] - 1
    out = np.empty((n, n_buckets), dtype=np.int64)
    buckets = np.arange(n_buckets, dtype=np.int64)
    lengths = np.diff(offsets)
    step = max(1, _FILL_BLOCK_ELEMENTS // n_buckets)
    a = 0
    while a < n:
        # Whole documents, up to ``step`` tokens (at least one document).
        b = int(np.searchsorted(offsets, offsets[a] + step, side="right")) - 1
        b = min(n, max(a + 1, b))
        t0, t1 = int(offsets[a]), int(offsets[b])
        local = np.arange(t1 - t0, dtype=np.int64) - np.repeat(offsets[a:b] - t0, lengths[a:b])
        # Key = distance in the high bits, position within the document in the low 32 bits:
        # the segment minimum picks the nearest bucket, then the earliest token.
        # (Buckets, tokens) layout: reduceat along the contiguous axis is ~7x faster.
        key = (_POPCOUNT[buckets[:, None] ^ codes[None, t0:t1]] << 32) | local[None, :]
        best = np.minimum.reduceat(key, offsets[a:b] - t0, axis=1)
        out[a:b] = (best.T & 0xFFFFFFFF) + offsets[a:b, None]
        a = b
    return out


def draw_matrices(
    dim: int,
    k_sim: int,
    d_proj: int,
    r_reps: int,
    d_final: int,
    seed: int,
    final: str = "dense",
) -> dict[str, np.ndarray]:
    """The random matrices of an FDE, drawn from ``seed`` in a fixed order (the final
    projection last, so both kinds share the hyperplanes and inner projections of a seed).

    Returns:
        ``hyperplanes`` (r_reps, dim, k_sim) float32 Gaussian; ``projections`` (r_reps, dim,
        d_proj) int8 +-1 (absent when the inner projection is the identity); when d_final is
        set, ``final`` (d_FDE, d_final) int8 +-1 (``final="dense"``) or ``sketch_buckets``
        (d_FDE,) int32 in [0, d_final) and ``sketch_signs`` (d_FDE,) int8 +-1 (``"sketch"``).
    """
    rng = np.random.default_rng(seed)
    out = {
        "hyperplanes": rng.standard_normal((r_reps, dim, k_sim), dtype=np.float32),
    }
    if d_proj and d_proj != dim:
        out["projections"] = (2 * rng.integers(0, 2, (r_reps, dim, d_proj)) - 1).astype(np.int8)
    d_fde = r_reps * (1 << k_sim) * (d_proj or dim)
    if d_final and final == "sketch":
        out.update(fde_sketch.draw_sketch(rng, d_fde, d_final))
    elif d_final:
        out["final"] = (2 * rng.integers(0, 2, (d_fde, d_final)) - 1).astype(np.int8)
    return out


class FDE:
    """Encodes ragged token sets into Fixed Dimensional Encodings.

    Example:
        >>> fde = FDE(dim=64, k_sim=3, d_proj=8, r_reps=4, seed=0)
        >>> toks = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
        >>> fde.encode_documents(toks, np.array([0, 2, 5])).shape
        (2, 256)
    """

    def __init__(
        self,
        dim: int,
        k_sim: int = 5,
        d_proj: int = 16,
        r_reps: int = 20,
        d_final: int = 0,
        seed: int = 0,
        matrices: dict[str, np.ndarray] | None = None,
        final: str = "dense",
    ) -> None:
        for name, value, low in (
            ("dim", dim, 1),
            ("k_sim", k_sim, 0),
            ("d_proj", d_proj, 0),
            ("r_reps", r_reps, 1),
            ("d_final", d_final, 0),
            ("seed", seed, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"FDE parameter {name} must be an int >= {low}, got {value!r}")
        if k_sim > MAX_K_SIM:
            raise ValueError(f"FDE parameter k_sim must be <= {MAX_K_SIM}, got {k_sim}")
        if final not in FINAL_KINDS:
            raise ValueError(f"FDE parameter final must be one of {FINAL_KINDS}, got {final!r}")
        self.dim, self.k_sim, self.r_reps = int(dim), int(k_sim), int(r_reps)
        self.d_final, self.seed = int(d_final), int(seed)
        self.d_proj = int(d_proj) or self.dim
        self.n_buckets = 1 << self.k_sim
        self.d_fde = self.r_reps * self.n_buckets * self.d_proj
        self.final = final
        entries = self.d_fde * self.d_final
        if final == "dense" and entries > MAX_DENSE_FINAL:
            raise ValueError(
                f"a dense final projection {self.d_fde} -> {self.d_final} would hold "
                f"{entries:.3g} entries ({4 * entries / 2**30:.1f} GiB as float32; the limit is "
                f"{MAX_DENSE_FINAL:.3g}): use the Count-Sketch (final=sketch)"
            )
        if matrices is None:
            matrices = draw_matrices(dim, k_sim, d_proj, r_reps, d_final, seed, final)
        self.set_matrices(matrices)

    @property
    def out_dim(self) -> int:
        """Dimension of the encodings: d_final when set, else d_FDE."""
        return self.d_final or self.d_fde

    @property
    def identity_projection(self) -> bool:
        return self.d_proj == self.dim

    def expected_shapes(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        shapes: dict[str, tuple[tuple[int, ...], Any]] = {
            "hyperplanes": ((self.r_reps, self.dim, self.k_sim), np.float32)
        }
        if not self.identity_projection:
            shapes["projections"] = ((self.r_reps, self.dim, self.d_proj), np.int8)
        if self.d_final and self.final == "sketch":
            shapes[fde_sketch.BUCKETS] = ((self.d_fde,), np.int32)
            shapes[fde_sketch.SIGNS] = ((self.d_fde,), np.int8)
        elif self.d_final:
            shapes["final"] = ((self.d_fde, self.d_final), np.int8)
        return shapes

    def check_matrix(self, name: str, arr: np.ndarray) -> None:
        """Raises ValueError unless ``arr`` is a valid random matrix ``name`` of this FDE."""
        want = self.expected_shapes()
        if name not in want:
            raise ValueError(f"FDE matrix {name} is not used by this FDE ({sorted(want)})")
        shape, dtype = want[name]
        if arr.shape != shape or arr.dtype != dtype:
            raise ValueError(
                f"FDE matrix {name} has shape {arr.shape} {arr.dtype}, expected {shape} "
                f"{np.dtype(dtype)}"
            )
        if dtype == np.int8 and not np.isin(arr, (-1, 1)).all():
            raise ValueError(f"FDE matrix {name} holds values other than -1 and +1")
        if dtype == np.float32 and not np.isfinite(arr).all():
            raise ValueError(f"FDE matrix {name} holds NaN or inf")
        if name == fde_sketch.BUCKETS:
            fde_sketch.check_buckets(arr, self.d_final)

    def set_matrices(self, matrices: dict[str, np.ndarray]) -> None:
        """Checks and installs the random matrices (e.g. read back from disk)."""
        want = self.expected_shapes()
        if set(matrices) != set(want):
            raise ValueError(f"FDE matrices {sorted(matrices)}, expected {sorted(want)}")
        for name, arr in matrices.items():
            self.check_matrix(name, arr)
        self.matrices = {name: np.ascontiguousarray(matrices[name]) for name in want}
        # (dim, r_reps * k) and (dim, r_reps * d_proj): every repetition in one matmul.
        hyper = self.matrices["hyperplanes"]
        self._hyper_flat = np.ascontiguousarray(hyper.transpose(1, 0, 2).reshape(self.dim, -1))
        self._proj_flat = None
        if not self.identity_projection:
            proj = self.matrices["projections"].astype(np.float32) / np.float32(
                math.sqrt(self.d_proj)
            )
            self._proj_flat = np.ascontiguousarray(proj.transpose(1, 0, 2).reshape(self.dim, -1))
        self._final = None
        self._sketch = None
        if "final" in self.matrices:
            self._final = self.matrices["final"].astype(np.float32) / np.float32(
                math.sqrt(self.d_final)
            )
        elif self.d_final:
            self._sketch = CountSketch(
                self.matrices[fde_sketch.BUCKETS], self.matrices[fde_sketch.SIGNS], self.d_final
            )

    def get_config(self) -> dict[str, int | str]:
        return {
            "dim": self.dim,
            "k_sim": self.k_sim,
            "d_proj": self.d_proj,
            "r_reps": self.r_reps,
            "d_final": self.d_final,
            "final": self.final,
            "seed": self.seed,
        }

    # ---- encoding ----------------------------------------------------------------------------
    def bucket_ids(self, tokens: np.ndarray) -> np.ndarray:
        """(r_reps, T) int64 SimHash bucket of every token in every repetition."""
        x = np.ascontiguousarray(tokens, dtype=np.float32)
        if self.k_sim == 0:
            return np.zeros((self.r_reps, x.shape[0]), dtype=np.int64)
        bits = ((x @ self._hyper_flat) > 0).reshape(x.shape[0], self.r_reps, self.k_sim)
        codes = np.zeros((self.r_reps, x.shape[0]), dtype=np.int64)
        for j in range(self.k_sim):
            codes |= bits[:, :, j].T.astype(np.int64) << j
        return codes

    def encode_queries(self, tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Query FDEs: per-bucket sums, empty buckets left zero. Returns (m, out_dim) float32."""
        return self._encode(tokens, offsets, document=False)

    def encode_documents(self, tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Document FDEs: per-bucket averages, empty buckets filled from the nearest token.
        Returns (n, out_dim) float32."""
        return self._encode(tokens, offsets, document=True)

    def _encode(self, tokens: np.ndarray, offsets: np.ndarray, document: bool) -> np.ndarray:
        tokens = np.ascontiguousarray(tokens, dtype=np.float32)
        offsets = np.asarray(offsets, dtype=np.int64)
        n = offsets.shape[0] - 1
        if tokens.ndim != 2 or tokens.shape[1] != self.dim:
            raise ValueError(f"tokens must be (T, {self.dim}), got shape {tokens.shape}")
        if n < 0 or offsets[0] != 0 or offsets[-1] != tokens.shape[0]:
            raise ValueError("offsets must start at 0 and end at the number of tokens")
        if (np.diff(offsets) <= 0).any():
            raise ValueError("every token set must hold at least one token")
        out = np.zeros((n, self.out_dim), dtype=np.float32)
        max_docs = max(1, _DOC_BLOCK_BYTES // (4 * self.d_fde))
        a = 0
        while a < n:
            # Whole token sets, at most ``max_docs`` of them and about _BLOCK_TOKENS tokens.
            b = int(np.searchsorted(offsets, offsets[a] + _BLOCK_TOKENS, side="right")) - 1
            b = min(n, a + max_docs, max(a + 1, b))
            t0, t1 = int(offsets[a]), int(offsets[b])
            block = offsets[a : b + 1] - t0
            if not self.d_final:
                self._encode_block(tokens[t0:t1], block, document, out[a:b])
            else:
                fde = np.zeros((b - a, self.d_fde), dtype=np.float32)
                self._encode_block(tokens[t0:t1], block, document, fde)
                if self._sketch is not None:
                    self._sketch.apply(fde, out[a:b])
                elif self._final is not None:
                    out[a:b] = fde @ self._final
            a = b
        return out

    def _encode_block(
        self, x: np.ndarray, offsets: np.ndarray, document: bool, out: np.ndarray
    ) -> None:
        """Writes the FDEs of one block of token sets into ``out`` (n, d_FDE), zero-filled."""
        # numpy rather than torch scatter ops: torch's index_add_ on a loaded shared CPU is
        # dominated by thread synchronisation (10x slower than one thread).
        n = offsets.shape[0] - 1
        nb, dp, reps = self.n_buckets, self.d_proj, self.r_reps
        rows = out.reshape(n * reps * nb, dp)  # row (doc * reps + r) * nb + bucket
        doc_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
        codes_all = self.bucket_ids(x)  # one matmul for all repetitions
        proj_all = None if self._proj_flat is None else x @ self._proj_flat
        for r in range(reps):
            codes = codes_all[r]
            proj = x if proj_all is None else proj_all[:, r * dp : (r + 1) * dp]
            seg = doc_of * nb + codes
            order = np.argsort(seg, kind="stable")
            ordered = seg[order]
            starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
            sums = np.add.reduceat(proj[order], starts, axis=0)
            used = ordered[starts]
            if document:
                counts = np.diff(np.r_[starts, ordered.shape[0]])
                sums /= counts[:, None].astype(np.float32)
            rows[(used // nb) * (reps * nb) + r * nb + used % nb] = sums
            if document and used.shape[0] < n * nb:
                empty = np.ones(n * nb, dtype=bool)
                empty[used] = False
                hole = np.flatnonzero(empty)
                near = nearest_tokens(codes, offsets, nb).reshape(-1)
                rows[(hole // nb) * (reps * nb) + r * nb + hole % nb] = proj[near[hole]]
