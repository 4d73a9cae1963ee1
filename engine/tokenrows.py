"""Token sets kept by a multi-vector collection: float32, exactly as written, keyed by label.

The multi-vector counterpart of ``index.labelmap.RowStore``: what ``get`` returns, what the
checkpoint writes (``tokens.G.npy`` + ``offsets.G.npy``) and what the index is rebuilt from. (The
index keeps its own float16, normalised copy for scoring.) Set i of the stored rows is
``tokens[offsets[i]:offsets[i + 1]]``.
"""

from __future__ import annotations

import numpy as np

from index.scoring import ragged_arange


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """Offsets (n + 1,) int64 of sets with the given token counts."""
    offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class TokenRows:
    """Growable ragged token sets with labels; removals tombstone, compaction when sparse.

    After ``load`` the tokens may be a read-only memory map; the first ``append`` copies them.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.tokens: np.ndarray = np.empty((0, dim), dtype=np.float32)
        self.offsets = np.zeros(1, dtype=np.int64)
        self.lab = np.empty(0, dtype=np.int64)
        self.alive = np.empty(0, dtype=bool)
        self.n = 0  # sets stored (alive or dead)
        self.n_tokens = 0
        self.dead_tokens = 0
        self.rows: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def has_dead(self) -> bool:
        return len(self.rows) < self.n

    def get(self, label: int) -> np.ndarray:
        """A copy of the (n_i, dim) float32 tokens of a live label."""
        row = self.rows[label]
        return np.array(self.tokens[self.offsets[row] : self.offsets[row + 1]], dtype=np.float32)

    def append(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        n_new, t_new = labels.shape[0], tokens.shape[0]
        need_t, need_n = self.n_tokens + t_new, self.n + n_new
        if need_t > self.tokens.shape[0] or not self.tokens.flags.writeable:
            cap = max(need_t, 2 * self.tokens.shape[0], 4096)
            grown = np.empty((cap, self.dim), dtype=np.float32)
            grown[: self.n_tokens] = self.tokens[: self.n_tokens]
            self.tokens = grown
        if need_n + 1 > self.offsets.shape[0]:
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

    def remove(self, labels: np.ndarray) -> None:
        rows = np.fromiter(map(self.rows.__getitem__, labels.tolist()), np.int64, labels.size)
        self.alive[rows] = False
        self.dead_tokens += int((self.offsets[rows + 1] - self.offsets[rows]).sum())
        for lab in labels.tolist():
            del self.rows[lab]
        if self.dead_tokens > 4096 and 4 * self.dead_tokens > self.n_tokens:
            self.load(*self.live())

    def live(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tokens, offsets, labels)`` of the live sets, in row order (copies when some are
        dead; views otherwise)."""
        if not self.has_dead():
            return (
                self.tokens[: self.n_tokens],
                self.offsets[: self.n + 1],
                self.lab[: self.n],
            )
        keep = np.flatnonzero(self.alive[: self.n])
        starts = self.offsets[keep]
        lengths = self.offsets[keep + 1] - starts
        tokens = self.tokens[ragged_arange(starts, lengths)]
        return tokens, offsets_of(lengths), self.lab[keep].copy()

    def load(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        """Installs checked sets (tokens may be a read-only memory map)."""
        self.tokens = tokens
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.lab = np.ascontiguousarray(labels, dtype=np.int64)
        self.n = self.lab.shape[0]
        self.n_tokens = int(self.offsets[-1])
        self.alive = np.ones(self.n, dtype=bool)
        self.dead_tokens = 0
        self.rows = dict(zip(self.lab.tolist(), range(self.n), strict=True))
