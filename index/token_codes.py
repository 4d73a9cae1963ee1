"""Compact token codes for the Chamfer rerank (the ``tokens=`` option of multi-vector indexes).

The index keeps every token in full (float16, memory-mapped once saved: the truth, read only by
a save) and, beside each token in its ``TokenStore``, a compact code that scoring reads:

- ``int8``: each token scaled by its largest absolute coordinate to int8 (``codes``, d bytes);
  a cosine index re-normalises decoded tokens instead of storing the scale (d bytes per token:
  0.5x float16), an ``ip`` one keeps it (``scales``, float32: d + 4 bytes).
- ``res4`` / ``res2``: residual codes against k-means centroids, as ColBERTv2 and PLAID store
  their tokens (Santhanam et al., NAACL 2022): a token is its nearest centroid (``centroid_ids``,
  uint16) plus its residual quantized per dimension to 4 or 2 bits (``codes``, packed), decoded
  as ``centroid + bucket value`` per dimension (per-dimension bucket cutoffs and values from
  quantiles of training residuals), then L2-normalised again for cosine indexes:
  d / 2 + 2 bytes (0.27x at d = 128) or d / 4 + 2 bytes (0.14x).

Scoring dequantizes blocks on the fly with torch (``TokenBlocks``; on a GPU the codes move and
are decoded there): torch has no int8 x float matmul on the CPU, and ``torch._int_mm`` needs
both sides int8, which would quantize the queries too.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from . import storage
from .tokens import TokenBlocks, TokenStore

if TYPE_CHECKING:
    import torch

# Bytes of tokens encoded or decoded at a time outside the scoring kernels.
_CHUNK_TOKENS = 1 << 16


class TokenCodec(ABC):
    """How a multi-vector index codes its tokens for scoring: the per-token columns it adds to
    the token store, encoding, and decoding blocks for the kernels."""

    name: ClassVar[str]
    # Files beyond the per-token columns (the codebook), saved and loaded by the codec.
    codebook_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dim: int, normalize: bool) -> None:
        self.dim = dim
        self.normalize = normalize  # cosine indexes: decoded tokens are re-normalised

    @abstractmethod
    def columns(self) -> dict[str, tuple[Any, tuple[int, ...]]]:
        """Per-token columns: name -> (dtype, shape of one token's entry)."""

    @abstractmethod
    def encode(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Codes of (T, dim) float tokens (already prepared for the metric), one per column."""

    @abstractmethod
    def decode(self, cols: dict[str, np.ndarray], dev: torch.device) -> torch.Tensor:
        """(T, dim) tokens on ``dev`` in the kernels' dtype from rows of the columns."""

    def after_append(self, store: TokenStore) -> None:  # noqa: B027 - optional hook
        """Called once new tokens are stored (a codebook may re-train on the grown store)."""

    def codebook_ram(self) -> int:
        return 0

    def state(self) -> dict[str, Any]:
        """What the index manifest records of the codec (``load`` gets it back)."""
        return {"name": self.name}

    def save(self, directory: Path) -> list[str]:
        """Writes the codebook files; returns their names."""
        return []

    def load(  # noqa: B027 - optional hook
        self, directory: Path, store: TokenStore, state: dict[str, Any]
    ) -> None:
        """Loads and checks the codebook against the loaded columns (errors name the file)."""

    def blocks(self, store: TokenStore) -> TokenBlocks:
        """Every stored token of ``store``, decoded block by block for the kernels."""
        return _Decoded(self, store)


class _Decoded(TokenBlocks):
    def __init__(self, codec: TokenCodec, store: TokenStore) -> None:
        from . import scoring  # torch loads with the first scoring

        self._codec = codec
        self._cols = {c: store.blocks(c) for c in codec.columns()}
        self._dev = scoring.device()
        self.shape = (store.n_tokens, store.dim)

    def block(self, t0: int, t1: int) -> torch.Tensor:
        return self._codec.decode({c: b.block(t0, t1) for c, b in self._cols.items()}, self._dev)

    def rows(self, idx: np.ndarray) -> torch.Tensor:
        return self._codec.decode({c: b.rows(idx) for c, b in self._cols.items()}, self._dev)


def _kernel_dtype(dev: torch.device) -> torch.dtype:
    import torch

    return torch.float16 if dev.type == "cuda" else torch.float32


def _normalized(x: torch.Tensor) -> torch.Tensor:
    import torch

    norms = torch.linalg.vector_norm(x.float(), dim=1, keepdim=True).clamp_min_(1e-12)
    return (x / norms.to(x.dtype)) if x.dtype != torch.float32 else x.div_(norms)


# ---- int8 ------------------------------------------------------------------------------------
class Int8Codec(TokenCodec):
    """Symmetric int8 per token: ``code = round(x / s)``, ``s = max |x_j| / 127``. A scale per
    token (not per dimension) needs no training, so appends never re-code older tokens. Cosine
    tokens are unit vectors, so their scale is not stored: a decoded token is its codes
    L2-normalised (d bytes per token, exactly half of float16); ``ip`` tokens keep it
    (``scales``, float32: d + 4 bytes)."""

    name = "int8"

    def columns(self) -> dict[str, tuple[Any, tuple[int, ...]]]:
        cols: dict[str, tuple[Any, tuple[int, ...]]] = {"codes": (np.int8, (self.dim,))}
        if not self.normalize:
            cols["scales"] = (np.float32, ())
        return cols

    def encode(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(tokens, dtype=np.float32)
        peak = np.abs(x).max(axis=1)
        scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        codes = np.clip(np.rint(x / scales[:, None]), -127, 127).astype(np.int8)
        return {"codes": codes} if self.normalize else {"codes": codes, "scales": scales}

    def decode(self, cols: dict[str, np.ndarray], dev: torch.device) -> torch.Tensor:
        import torch

        want = _kernel_dtype(dev)
        codes = torch.from_numpy(np.ascontiguousarray(cols["codes"])).to(dev, non_blocking=True)
        if self.normalize:
            return _normalized(codes.to(want))
        scales = torch.from_numpy(np.ascontiguousarray(cols["scales"])).to(dev, non_blocking=True)
        return codes.to(want).mul_(scales.to(want)[:, None])

    def load(self, directory: Path, store: TokenStore, state: dict[str, Any]) -> None:
        if self.normalize:
            return
        scales = store.blocks("scales").block(0, store.n_tokens)
        if (scales <= 0).any():
            raise storage.CorruptFileError(directory / "scales.npy", "scales must be positive")


# ---- residual codes against centroids (ColBERTv2 / PLAID) -----------------------------------
def centroid_count(n_tokens: int) -> int:
    """Centroids trained for a store of ``n_tokens``: the power of two nearest sqrt(T), from 16
    up to 4096. ColBERTv2 takes 16 sqrt(T); on SciFact (1.1M tokens) 4096 centroids instead of
    1024 took 13x the training time for no better nDCG@10 (the residual codes absorb it)."""
    k = 1 << max(4, round(math.log2(max(1.0, math.sqrt(n_tokens)))))
    return min(k, 4096)


class ResidualCodec(TokenCodec):
    """Nearest centroid (uint16) + the residual in ``bits`` bits per dimension, packed.

    Trained (seeded k-means with faiss on a sample) on the first batch, and again each time the
    store has grown fourfold since, until it was trained on ``TRAINED_ENOUGH`` tokens; each
    re-training re-codes every stored token from the full tokens (a pass over the token file).
    """

    TRAINED_ENOUGH = 1 << 20
    SAMPLE_PER_CENTROID = 64
    codebook_files = ("centroids.npy", "cutoffs.npy", "buckets.npy")

    def __init__(self, dim: int, normalize: bool, bits: int, seed: int = 0) -> None:
        super().__init__(dim, normalize)
        if bits not in (2, 4):
            raise ValueError(f"residual codes take 2 or 4 bits per dimension, got {bits}")
        self.bits = bits
        self.name = f"res{bits}"  # type: ignore[misc]
        self.seed = seed
        self.per_byte = 8 // bits
        self.centroids: np.ndarray | None = None  # (K, dim) float32
        self.cutoffs = np.empty((0, dim), dtype=np.float32)  # (2^bits - 1, dim)
        self.buckets = np.empty((0, dim), dtype=np.float32)  # (2^bits, dim)
        self.trained_on = 0
        self._dev_tables: tuple[Any, ...] | None = None

    def columns(self) -> dict[str, tuple[Any, tuple[int, ...]]]:
        width = -(-self.dim // self.per_byte)
        return {"centroid_ids": (np.uint16, ()), "codes": (np.uint8, (width,))}

    def codebook_ram(self) -> int:
        c = 0 if self.centroids is None else self.centroids.nbytes
        return c + self.cutoffs.nbytes + self.buckets.nbytes

    # -- training --
    def train(self, sample: np.ndarray, n_tokens: int) -> None:
        import faiss

        x = np.ascontiguousarray(sample, dtype=np.float32)
        k = min(centroid_count(n_tokens), x.shape[0])
        km = faiss.Kmeans(
            self.dim,
            k,
            niter=20,
            seed=self.seed,
            spherical=self.normalize,
            max_points_per_centroid=1 << 30,  # the sample is ours already
            min_points_per_centroid=1,
        )
        km.train(x)
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
        resid = x - centroids[_nearest(centroids, x)]
        nb = 1 << self.bits
        self.cutoffs = np.quantile(resid, np.arange(1, nb) / nb, axis=0).astype(np.float32)
        self.buckets = np.quantile(resid, (np.arange(nb) + 0.5) / nb, axis=0).astype(np.float32)
        self.centroids = centroids
        self.trained_on = n_tokens
        self._dev_tables = None

    def _sample_rows(self, n_tokens: int) -> np.ndarray:
        want = self.SAMPLE_PER_CENTROID * centroid_count(n_tokens)
        if n_tokens <= want:
            return np.arange(n_tokens, dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(n_tokens, size=want, replace=False))

    def encode(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(tokens, dtype=np.float32)
        if self.centroids is None:  # the first batch trains the codebook
            self.train(x[self._sample_rows(x.shape[0])], x.shape[0])
        assert self.centroids is not None
        out_ids = np.empty(x.shape[0], dtype=np.uint16)
        out_codes = np.empty((x.shape[0], self.columns()["codes"][1][0]), dtype=np.uint8)
        for a in range(0, x.shape[0], _CHUNK_TOKENS):
            chunk = x[a : a + _CHUNK_TOKENS]
            ids = _nearest(self.centroids, chunk)
            resid = chunk - self.centroids[ids]
            q = np.zeros(resid.shape, dtype=np.uint8)
            for c in self.cutoffs:  # bucket = how many cutoffs the residual passes
                q += resid > c
            out_ids[a : a + chunk.shape[0]] = ids
            out_codes[a : a + chunk.shape[0]] = self._pack(q)
        return {"centroid_ids": out_ids, "codes": out_codes}

    def _pack(self, q: np.ndarray) -> np.ndarray:
        width = -(-self.dim // self.per_byte)
        padded = np.zeros((q.shape[0], width * self.per_byte), dtype=np.uint8)
        padded[:, : self.dim] = q
        groups = padded.reshape(q.shape[0], width, self.per_byte)
        out = np.zeros((q.shape[0], width), dtype=np.uint8)
        for j in range(self.per_byte):  # value j of each byte in bits j*b .. j*b + b - 1
            out |= groups[:, :, j] << (j * self.bits)
        return out

    def after_append(self, store: TokenStore) -> None:
        n = store.n_tokens
        if self.trained_on >= self.TRAINED_ENOUGH or n < 4 * self.trained_on:
            return
        full = store.blocks("tokens")
        self.train(np.asarray(full.rows(self._sample_rows(n)), dtype=np.float32), n)
        parts: dict[str, list[np.ndarray]] = {c: [] for c in self.columns()}
        for a in range(0, n, _CHUNK_TOKENS):
            for c, v in self.encode(full.block(a, min(n, a + _CHUNK_TOKENS))).items():
                parts[c].append(v)
        for c, vs in parts.items():
            store.set_column(c, np.concatenate(vs))

    # -- decoding --
    def _byte_table(self) -> np.ndarray:
        """(width * 256, per_byte) float32: the bucket values a byte at position j decodes to
        (row ``256 * j + byte``); dimensions past ``dim`` (padding) decode to 0."""
        width = -(-self.dim // self.per_byte)
        mask = (1 << self.bits) - 1
        byte = np.arange(256)
        table = np.zeros((width, 256, self.per_byte), dtype=np.float32)
        for k in range(self.per_byte):
            dims = np.arange(width) * self.per_byte + k
            ok = dims < self.dim
            bucket = (byte >> (k * self.bits)) & mask  # (256,)
            table[ok, :, k] = self.buckets[bucket[None, :], dims[ok][:, None]]
        return table.reshape(width * 256, self.per_byte)

    def _tables(self, dev: torch.device) -> tuple[Any, ...]:
        import torch

        if self._dev_tables is None or self._dev_tables[0] != dev:
            assert self.centroids is not None
            want = _kernel_dtype(dev)
            width = -(-self.dim // self.per_byte)
            self._dev_tables = (
                dev,
                torch.from_numpy(self.centroids).to(dev, want),
                torch.from_numpy(self._byte_table()).to(dev, want),
                torch.arange(width, device=dev, dtype=torch.int32) * 256,
            )
        return self._dev_tables

    def decode(self, cols: dict[str, np.ndarray], dev: torch.device) -> torch.Tensor:
        """One gather of the byte table per code byte (all its dimensions at once) plus one of
        the centroids: no bit arithmetic per dimension."""
        import torch
        import torch.nn.functional as F

        _, centroids, table, starts = self._tables(dev)
        # int32 indices: half the memory traffic of int64 (F.embedding takes either).
        ids = torch.from_numpy(np.ascontiguousarray(cols["centroid_ids"]).astype(np.int32))
        packed = torch.from_numpy(np.ascontiguousarray(cols["codes"])).to(dev, non_blocking=True)
        vals = F.embedding(packed.int() + starts, table).reshape(packed.shape[0], -1)
        x = F.embedding(ids.to(dev), centroids)
        x += vals if vals.shape[1] == self.dim else vals[:, : self.dim]
        return _normalized(x) if self.normalize else x

    # -- persistence --
    def save(self, directory: Path) -> list[str]:
        assert self.centroids is not None or self.trained_on == 0
        arrays = {
            "centroids.npy": (
                self.centroids
                if self.centroids is not None
                else np.empty((0, self.dim), np.float32)
            ),
            "cutoffs.npy": self.cutoffs,
            "buckets.npy": self.buckets,
        }
        for name, arr in arrays.items():
            storage.save_npy_replace(directory / name, arr)
        return list(arrays)

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "trained_on": self.trained_on}

    def load(self, directory: Path, store: TokenStore, state: dict[str, Any]) -> None:
        trained_on = state.get("trained_on")
        if isinstance(trained_on, bool) or not isinstance(trained_on, int) or trained_on < 0:
            raise ValueError(f"token codes trained_on must be a count, got {trained_on!r}")
        nb = 1 << self.bits
        arrays = {}
        for name, rows in (("centroids.npy", None), ("cutoffs.npy", nb - 1), ("buckets.npy", nb)):
            path = directory / name
            arr = np.array(storage.load_npy(path, np.float32, 2))
            if arr.shape[1] != self.dim or (rows is not None and arr.shape[0] != rows):
                raise storage.CorruptFileError(path, f"shape {arr.shape} does not fit the codes")
            if not np.isfinite(arr).all():
                raise storage.CorruptFileError(path, "contains NaN or inf")
            arrays[name] = arr
        centroids = arrays["centroids.npy"]
        path = directory / "centroids.npy"
        if centroids.shape[0] > 1 << 16 or (centroids.shape[0] == 0) != (store.n_tokens == 0):
            raise storage.CorruptFileError(path, f"{centroids.shape[0]} centroids")
        if store.n_tokens:
            ids = store.blocks("centroid_ids").block(0, store.n_tokens)
            if int(ids.max()) >= centroids.shape[0]:
                raise storage.CorruptFileError(
                    directory / "centroid_ids.npy",
                    f"centroid id {int(ids.max())} of {centroids.shape[0]} centroids",
                )
        self.centroids = centroids if centroids.shape[0] else None
        self.cutoffs, self.buckets = arrays["cutoffs.npy"], arrays["buckets.npy"]
        self.trained_on = trained_on
        self._dev_tables = None


def _nearest(centroids: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (L2) of each row, by faiss exact search."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    _, ids = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return ids[:, 0].astype(np.int64)


CODECS = ("f16", "int8", "res4", "res2")


def make_codec(name: str, dim: int, normalize: bool) -> TokenCodec | None:
    """The codec of a ``tokens=`` value (None for ``f16``: the full tokens are scored)."""
    if name == "f16":
        return None
    if name == "int8":
        return Int8Codec(dim, normalize)
    if name in ("res4", "res2"):
        return ResidualCodec(dim, normalize, int(name[3:]))
    raise ValueError(f"tokens must be one of {', '.join(CODECS)}, got {name!r}")
