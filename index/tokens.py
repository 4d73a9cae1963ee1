"""Ragged token sets (multi-vector documents and queries): validation, packing, and the float16
token store that multi-vector indexes keep.

A batch of token sets is packed as ``tokens (T, d)`` plus ``offsets (n + 1,)`` int64; set i is
``tokens[offsets[i]:offsets[i + 1]]`` and holds at least one token.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import memory, storage
from .carving import ball_carve as ball_carve  # re-exported: MUVERA's, formerly defined here
from .ragged import offsets_of as offsets_of
from .ragged import ragged_arange as ragged_arange
from .validate import check_labels

# Rows of the finite check done on a loaded (memory-mapped) token file at a time.
_CHECK_ROWS = 1 << 20


def check_token_sets(x: Any, dim: int, name: str = "documents") -> tuple[np.ndarray, np.ndarray]:
    """Validates a batch of token sets and packs it.

    Args:
        x: a list (or tuple) of (n_i, dim) float arrays, one per set, or an (n, L, dim) array.
        dim: the token dimension.
        name: what to call ``x`` in error messages.

    Returns:
        ``(tokens (T, dim) float32, offsets (n + 1,) int64)``.

    Raises:
        ValueError: an empty batch, a set without tokens, a wrong shape or dimension, NaN/inf.
        TypeError: ``x`` is not a sequence of numeric arrays.

    Example:
        >>> t, o = check_token_sets([np.ones((2, 3)), np.ones((1, 3))], 3)
        >>> t.shape, o.tolist()
        ((3, 3), [0, 2, 3])
    """
    if isinstance(x, np.ndarray):
        if x.ndim != 3:
            raise ValueError(
                f"{name} must be a list of (n_i, {dim}) arrays or an (n, L, {dim}) array, got an "
                f"array of shape {x.shape}; wrap a single token set in a list"
            )
        sets: list[Any] = list(x)
    elif isinstance(x, (list, tuple)):
        sets = list(x)
    else:
        raise TypeError(f"{name} must be a list of (n_i, {dim}) arrays, got {type(x).__name__}")
    if not sets:
        raise ValueError(f"{name} is an empty batch")
    arrays = []
    for i, item in enumerate(sets):
        try:
            a = np.asarray(item, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}[{i}] must be a numeric array: {e}") from None
        if a.ndim != 2:
            raise ValueError(f"{name}[{i}] must be 2-D (n_tokens, {dim}), got shape {a.shape}")
        if a.shape[0] == 0:
            raise ValueError(f"{name}[{i}] has no tokens")
        if a.shape[1] != dim:
            raise ValueError(f"{name}[{i}] has dimension {a.shape[1]}, expected {dim}")
        arrays.append(a)
    lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.ascontiguousarray(np.concatenate(arrays, axis=0))
    bad = ~np.isfinite(tokens).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        i = int(np.searchsorted(offsets, row, side="right")) - 1
        raise ValueError(f"{name}[{i}] token {row - int(offsets[i])} contains NaN or inf")
    return tokens, offsets


class TokenStore:
    """Token sets stored contiguously (float16 by default) with int64 offsets, keyed by label.

    Multi-vector indexes keep float16, normalised tokens for scoring; a multi-vector collection
    keeps a float32 store of the tokens exactly as written (``dtype=np.float32``: what ``get``
    returns and what its checkpoint writes).

    Removals tombstone a set; the store compacts itself once dead tokens pass a quarter of it.
    After ``load`` the tokens are a read-only memory map; the first ``append`` after that copies
    them into memory (appending in place to a file would break the checksum in its manifest).
    """

    FILES = ("tokens.npy", "offsets.npy", "labels.npy")

    def __init__(self, dim: int, dtype: type[np.floating] = np.float16) -> None:
        self.dim = dim
        self.dtype = dtype
        self.tokens: np.ndarray = np.empty((0, dim), dtype=dtype)
        self.offsets = np.zeros(1, dtype=np.int64)
        self.lab = np.empty(0, dtype=np.int64)
        self.alive = np.empty(0, dtype=bool)
        self.n = 0  # sets stored (alive or dead)
        self.n_tokens = 0
        self.dead_tokens = 0
        self.rows: dict[int, int] = {}
        self.version = 0  # bumped on every change

    def __len__(self) -> int:
        return len(self.rows)

    # ---- lookups -----------------------------------------------------------------------------
    def contains(self, labels: np.ndarray) -> np.ndarray:
        get = self.rows.__contains__
        return np.fromiter(map(get, labels.tolist()), dtype=bool, count=len(labels))

    def row_of(self, labels: np.ndarray) -> np.ndarray:
        """Rows of labels; -1 for a label that is -1 or absent."""
        get = self.rows.get
        flat = np.fromiter(
            (get(x, -1) for x in labels.reshape(-1).tolist()), dtype=np.int64, count=labels.size
        )
        return flat.reshape(labels.shape)

    def live_labels(self) -> np.ndarray:
        return self.lab[: self.n][self.alive[: self.n]]

    def ram_bytes(self) -> tuple[int, int]:
        """RAM of ``(the tokens and their offsets, the labels, tombstones and label -> row map)``;
        memory-mapped tokens count 0 (see ``index.memory``)."""
        tokens = memory.array_ram(self.tokens, self.n_tokens) + (self.n + 1) * 8
        return tokens, self.n * 9 + memory.int_container_ram(self.rows)

    def has_dead(self) -> bool:
        return len(self.rows) < self.n

    def get(self, label: int) -> np.ndarray:
        """A float32 copy of the (n_i, dim) tokens of a live label."""
        row = self.rows[label]
        return np.array(self.tokens[self.offsets[row] : self.offsets[row + 1]], dtype=np.float32)

    def live(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tokens, offsets, labels)`` of the live sets in row order (views when none is
        dead, copies otherwise; nothing is compacted, so readers may go on)."""
        if not self.has_dead():
            return self.tokens[: self.n_tokens], self.offsets[: self.n + 1], self.lab[: self.n]
        keep = np.flatnonzero(self.alive[: self.n])
        tokens, offsets = self.subset(keep)
        return tokens, offsets, self.lab[keep].copy()

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens (T, d), offsets (n + 1,))`` of all stored rows, dead ones included."""
        return self.tokens[: self.n_tokens], self.offsets[: self.n + 1]

    def subset(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and offsets of the given rows, packed in that order."""
        starts = self.offsets[rows]
        lens = self.offsets[rows + 1] - starts
        return self.tokens[ragged_arange(starts, lens)], offsets_of(lens)

    # ---- mutation ----------------------------------------------------------------------------
    def append(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        n_new, t_new = labels.shape[0], tokens.shape[0]
        need_t, need_n = self.n_tokens + t_new, self.n + n_new
        if need_t > self.tokens.shape[0] or not self.tokens.flags.writeable:
            cap = max(need_t, 2 * self.tokens.shape[0], 4096)
            grown = np.empty((cap, self.dim), dtype=self.dtype)
            grown[: self.n_tokens] = self.tokens[: self.n_tokens]
            self.tokens = grown
        if need_n > self.lab.shape[0]:
            cap = max(need_n, 2 * self.lab.shape[0], 1024)
            for name, fill in (("lab", -1), ("alive", False)):
                old = getattr(self, name)
                new = np.full(cap, fill, dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
            off = np.zeros(cap + 1, dtype=np.int64)
            off[: self.n + 1] = self.offsets[: self.n + 1]
            self.offsets = off
        self.tokens[self.n_tokens : need_t] = tokens
        self.offsets[self.n + 1 : need_n + 1] = offsets[1:] + self.n_tokens
        self.lab[self.n : need_n] = labels
        self.alive[self.n : need_n] = True
        self.rows.update(zip(labels.tolist(), range(self.n, need_n), strict=True))
        self.n, self.n_tokens = need_n, need_t
        self.version += 1

    def remove(self, labels: np.ndarray) -> None:
        rows = self.row_of(labels)
        self.alive[rows] = False
        self.dead_tokens += int((self.offsets[rows + 1] - self.offsets[rows]).sum())
        for lab in labels.tolist():
            del self.rows[lab]
        self.version += 1
        if self.dead_tokens > 4096 and 4 * self.dead_tokens > self.n_tokens:
            self.compact()

    def compact(self) -> None:
        live = np.flatnonzero(self.alive[: self.n])
        self.tokens, offsets = self.subset(live)
        self.tokens = np.ascontiguousarray(self.tokens)
        self.install(self.tokens, offsets, self.lab[live].copy())

    def install(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        """Takes checked sets as they are (tokens may be a read-only memory map: the first
        ``append`` copies them)."""
        self.tokens = tokens
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.lab = np.ascontiguousarray(labels, dtype=np.int64)
        self.n = self.lab.shape[0]
        self.n_tokens = int(self.offsets[-1])
        self.alive = np.ones(self.n, dtype=bool)
        self.dead_tokens = 0
        self.rows = dict(zip(labels.tolist(), range(self.n), strict=True))
        self.version += 1

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: Path) -> list[str]:
        """Writes the live sets (compacting first); each file goes through a temp name, since
        the current tokens may be a memory map of the very file being replaced."""
        if self.has_dead():
            self.compact()
        tokens, offsets = self.view()
        arrays = {"tokens.npy": tokens, "offsets.npy": offsets, "labels.npy": self.lab[: self.n]}
        for name, arr in arrays.items():
            save_npy_replace(directory / name, arr)
        return list(self.FILES)

    def load(self, directory: Path) -> None:
        """Loads and checks the three files; the tokens stay memory-mapped."""
        tpath, opath, lpath = (directory / name for name in self.FILES)
        tokens = storage.load_npy(tpath, np.float16, 2, mmap=True)
        offsets = np.array(storage.load_npy(opath, np.int64, 1))
        labels = np.array(storage.load_npy(lpath, np.int64, 1))
        if tokens.shape[1] != self.dim:
            raise storage.CorruptFileError(
                tpath, f"tokens have dimension {tokens.shape[1]}, manifest says {self.dim}"
            )
        if offsets.shape[0] != labels.shape[0] + 1:
            raise storage.CorruptFileError(
                lpath, f"{labels.shape[0]} labels, but offsets.npy has {offsets.shape[0]} entries"
            )
        if offsets[0] != 0 or offsets[-1] != tokens.shape[0] or (np.diff(offsets) <= 0).any():
            raise storage.CorruptFileError(
                opath, f"offsets must rise strictly from 0 to {tokens.shape[0]} (the token count)"
            )
        try:
            check_labels(labels, labels.shape[0])
        except (TypeError, ValueError) as e:
            raise storage.CorruptFileError(lpath, str(e)) from None
        for a in range(0, tokens.shape[0], _CHECK_ROWS):
            if not np.isfinite(tokens[a : a + _CHECK_ROWS]).all():
                raise storage.CorruptFileError(tpath, "contains NaN or inf")
        self.install(tokens, offsets, labels)


def save_npy_replace(path: Path, array: np.ndarray) -> None:
    """``storage.save_npy`` to a temp name, then an atomic rename onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    storage.save_npy(tmp, array)
    os.replace(tmp, path)
