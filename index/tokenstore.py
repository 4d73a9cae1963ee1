"""The token store multi-vector indexes and collections keep (``TokenStore``): token sets by
label in a memory-mapped base segment of saved sets plus a RAM tail of sets appended since, read
by the Chamfer kernels through ``index.ragged.TokenBlocks``.

``index.tokens`` re-exports both (the place callers import them from).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import memory, storage
from .ragged import TokenBlocks, offsets_of, ragged_arange
from .tokenfiles import read_saved

# Bytes of tokens copied at a time when a store writes its sets.
_CHUNK_BYTES = 64 << 20


@dataclass(eq=False)
class _State:
    """Everything a ``TokenStore`` holds; replaced as a whole when a save re-serves the sets
    from the written file, so a reader that took the state once never sees half of a swap.

    Rows ``0 .. n_base - 1`` keep their tokens in the base segment (``base[col]``, the tokens
    usually a read-only memory map), rows ``n_base ..`` in the tail (``tail[col]``, RAM with
    spare capacity). Token positions are global: the base holds ``0 .. t_base - 1``, tail token
    ``i`` is global ``t_base + i``; ``offsets`` are global too.
    """

    base: dict[str, np.ndarray]
    tail: dict[str, np.ndarray]
    t_base: int
    n_base: int
    offsets: np.ndarray  # (capacity + 1,) int64
    lab: np.ndarray  # (capacity,) int64
    alive: np.ndarray  # (capacity,) bool
    n: int  # rows stored (alive or dead)
    n_tokens: int  # tokens stored (alive or dead)
    live: int  # live rows
    dead_base: int = 0  # dead tokens in the base
    dead_tail: int = 0  # dead tokens in the tail
    # Labels out of row order (after the first out-of-order append): the live labels sorted,
    # with their rows. None while ``lab[:n]`` rises strictly (then a binary search over it).
    skey: np.ndarray | None = None
    srow: np.ndarray | None = None


class TokenStore:
    """Token sets stored contiguously (float16 by default) with int64 offsets, keyed by label.

    Multi-vector indexes keep float16, normalised tokens for scoring; a multi-vector collection
    keeps a float32 store of the tokens exactly as written (``dtype=np.float32``: what ``get``
    returns and what its checkpoint writes). ``columns`` adds per-token arrays kept beside the
    tokens, row for row (e.g. an index's compact codes: ``{"codes": (np.int8, (dim,))}``); they
    are held in RAM, where the tokens of saved sets are a memory map.

    Two segments: the sets saved or loaded last are the *base* (tokens memory-mapped from the
    file, read through the page cache), sets appended since are the *tail* (RAM). Removals
    tombstone a set; the tail compacts itself once its dead tokens pass a quarter of it, and the
    base is never copied into RAM: its dead sets go at the next ``save``, which writes the live
    sets in chunks and then serves them from a memory map of the written file. Labels are found
    by binary search over the row labels while they rise (as a collection numbers its items),
    else over a sorted copy of the live labels; no per-label Python objects.
    """

    FILES = ("tokens.npy", "offsets.npy", "labels.npy")

    def __init__(
        self,
        dim: int,
        dtype: type[np.floating] = np.float16,
        columns: Mapping[str, tuple[Any, tuple[int, ...]]] | None = None,
    ) -> None:
        self.dim = dim
        self.dtype = dtype
        # column -> (dtype, shape of one token's entry); "tokens" first.
        self.columns: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
            "tokens": (np.dtype(dtype), (dim,)),
            **{k: (np.dtype(t), tuple(s)) for k, (t, s) in (columns or {}).items()},
        }
        self._st = self._empty_state()
        self.version = 0  # bumped on every change

    def _empty_state(self) -> _State:
        return _State(
            base={c: self._column_array(c, 0) for c in self.columns},
            tail={c: self._column_array(c, 0) for c in self.columns},
            t_base=0,
            n_base=0,
            offsets=np.zeros(1, dtype=np.int64),
            lab=np.empty(0, dtype=np.int64),
            alive=np.empty(0, dtype=bool),
            n=0,
            n_tokens=0,
            live=0,
        )

    def _column_array(self, col: str, rows: int) -> np.ndarray:
        dtype, shape = self.columns[col]
        return np.empty((rows, *shape), dtype=dtype)

    # ---- counters (read by indexes and tests) -----------------------------------------------
    def __len__(self) -> int:
        return self._st.live

    @property
    def n(self) -> int:
        """Rows stored, alive or dead."""
        return self._st.n

    @property
    def n_tokens(self) -> int:
        """Tokens stored, alive or dead."""
        return self._st.n_tokens

    @property
    def dead_tokens(self) -> int:
        st = self._st
        return st.dead_base + st.dead_tail

    @property
    def n_base(self) -> int:
        """Rows in the base segment (served from a memory map once saved or loaded)."""
        return self._st.n_base

    @property
    def tokens(self) -> np.ndarray:
        """The base segment's tokens (a read-only memory map after ``save`` or ``load``)."""
        return self._st.base["tokens"]

    @property
    def lab(self) -> np.ndarray:
        """(n,) label of each row, dead rows included."""
        st = self._st
        return st.lab[: st.n]

    @property
    def alive(self) -> np.ndarray:
        """(n,) whether each row is live."""
        st = self._st
        return st.alive[: st.n]

    @property
    def offsets(self) -> np.ndarray:
        """(n + 1,) global token offsets of the rows."""
        st = self._st
        return st.offsets[: st.n + 1]

    # ---- lookups -----------------------------------------------------------------------------
    @staticmethod
    def _find(st: _State, labels: np.ndarray) -> np.ndarray:
        """The row of each label, -1 where it is absent or dead (any shape)."""
        labels = np.asarray(labels, dtype=np.int64)
        flat = labels.reshape(-1)
        if st.skey is not None:
            keys, rows = st.skey, st.srow
        else:
            keys, rows = st.lab[: st.n], None
        if keys.shape[0] == 0:
            return np.full(labels.shape, -1, dtype=np.int64)
        idx = np.minimum(np.searchsorted(keys, flat), keys.shape[0] - 1)
        hit = keys[idx] == flat
        if rows is None:
            found = idx
            hit &= st.alive[idx]
        else:
            found = rows[idx]
        return np.where(hit, found, -1).reshape(labels.shape)

    def contains(self, labels: np.ndarray) -> np.ndarray:
        return self._find(self._st, labels) >= 0

    def row_of(self, labels: np.ndarray) -> np.ndarray:
        """Rows of labels; -1 for a label that is -1 or absent."""
        return self._find(self._st, labels)

    def live_labels(self) -> np.ndarray:
        st = self._st
        return st.lab[: st.n][st.alive[: st.n]]

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """Token counts of the given rows."""
        off = self._st.offsets
        return off[rows + 1] - off[rows]

    def has_dead(self) -> bool:
        st = self._st
        return st.live < st.n

    def ram_bytes(self) -> tuple[int, int]:
        """RAM of ``(the tokens and their offsets, the labels, tombstones and label lookup)``;
        memory-mapped tokens count 0 (see ``index.memory``); other columns: ``column_ram``."""
        st = self._st
        tokens = memory.array_ram(st.base["tokens"], st.t_base)
        tokens += memory.array_ram(st.tail["tokens"], st.n_tokens - st.t_base)
        book = st.n * (st.lab.itemsize + st.alive.itemsize)
        if st.skey is not None and st.srow is not None:
            book += st.skey.nbytes + st.srow.nbytes
        return tokens + (st.n + 1) * 8, book

    def column_ram(self, col: str) -> int:
        """RAM of a per-token column beside the tokens (0 where memory-mapped)."""
        st = self._st
        return memory.array_ram(st.base[col], st.t_base) + memory.array_ram(
            st.tail[col], st.n_tokens - st.t_base
        )

    def get(self, label: int) -> np.ndarray:
        """A float32 copy of the (n_i, dim) tokens of a live label."""
        st = self._st
        row = int(self._find(st, np.array([label]))[0])
        if row < 0:
            raise KeyError(label)
        a, b = int(st.offsets[row]), int(st.offsets[row + 1])
        return np.array(self._block(st, "tokens", a, b), dtype=np.float32)

    # ---- reading tokens across the two segments ----------------------------------------------
    @staticmethod
    def _block(st: _State, col: str, t0: int, t1: int) -> np.ndarray:
        """Global token rows ``t0:t1`` of a column: a view within one segment, a copy of just
        this block across the boundary."""
        tb = st.t_base
        if t1 <= tb:
            return st.base[col][t0:t1]
        if t0 >= tb:
            return st.tail[col][t0 - tb : t1 - tb]
        return np.concatenate([st.base[col][t0:tb], st.tail[col][: t1 - tb]])

    @staticmethod
    def _take(st: _State, col: str, idx: np.ndarray) -> np.ndarray:
        """Global token rows ``idx`` of a column (a gather from each segment)."""
        tb = st.t_base
        if idx.size == 0 or int(idx.max()) < tb:
            return st.base[col][idx]
        if int(idx.min()) >= tb:
            return st.tail[col][idx - tb]
        in_base = idx < tb
        dtype, shape = st.tail[col].dtype, st.tail[col].shape[1:]
        out = np.empty((idx.shape[0], *shape), dtype=dtype)
        out[in_base] = st.base[col][idx[in_base]]
        out[~in_base] = st.tail[col][idx[~in_base] - tb]
        return out

    def blocks(self, col: str = "tokens") -> TokenBlocks:
        """All stored token rows of a column (dead sets included, global positions) for the
        scoring kernels: blocks and gathers read each segment in place, nothing is concatenated
        beyond the block asked for. Bound to the current state (a later save swaps it)."""
        return _StoreBlocks(self, self._st, col)

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens (T, d), offsets (n + 1,))`` of all stored rows, dead ones included; one
        array, so a copy when both segments hold tokens (search reads ``blocks()`` instead)."""
        st = self._st
        return self._block(st, "tokens", 0, st.n_tokens), st.offsets[: st.n + 1]

    def live(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tokens, offsets, labels)`` of the live sets in row order (views when none is
        dead and one segment holds them all, copies otherwise; nothing is compacted, so readers
        may go on). ``write`` saves them without one array in memory."""
        st = self._st
        if st.live == st.n:
            tokens, offsets = self.view()
            return tokens, offsets, st.lab[: st.n]
        keep = np.flatnonzero(st.alive[: st.n])
        tokens, offsets = self.subset(keep)
        return tokens, offsets, st.lab[keep].copy()

    def subset(self, rows: np.ndarray, col: str = "tokens") -> tuple[np.ndarray, np.ndarray]:
        """Tokens (or another column) and offsets of the given rows, packed in that order."""
        st = self._st
        rows = np.asarray(rows, dtype=np.int64)
        starts = st.offsets[rows]
        lens = st.offsets[rows + 1] - starts
        return self._take(st, col, ragged_arange(starts, lens)), offsets_of(lens)

    # ---- mutation ----------------------------------------------------------------------------
    def append(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        labels: np.ndarray,
        columns: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Stores sets under new labels (not live in the store) in the tail; ``columns`` gives
        the other columns' entries for the same tokens."""
        st = self._st
        labels = np.asarray(labels, dtype=np.int64)
        values = {"tokens": tokens, **(columns or {})}
        if set(values) != set(self.columns):
            raise ValueError(f"append needs columns {sorted(self.columns)}, got {sorted(values)}")
        n_new, t_new = labels.shape[0], tokens.shape[0]
        need_t, need_n = st.n_tokens + t_new, st.n + n_new
        used = st.n_tokens - st.t_base  # tail tokens
        if used + t_new > st.tail["tokens"].shape[0]:
            cap = max(used + t_new, 2 * st.tail["tokens"].shape[0], 4096)
            for col in self.columns:
                grown = self._column_array(col, cap)
                grown[:used] = st.tail[col][:used]
                st.tail[col] = grown
        if need_n > st.lab.shape[0]:
            cap = max(need_n, 2 * st.lab.shape[0], 1024)
            lab = np.full(cap, -1, dtype=np.int64)
            lab[: st.n] = st.lab[: st.n]
            alive = np.zeros(cap, dtype=bool)
            alive[: st.n] = st.alive[: st.n]
            off = np.zeros(cap + 1, dtype=np.int64)
            off[: st.n + 1] = st.offsets[: st.n + 1]
            st.lab, st.alive, st.offsets = lab, alive, off
        rows = np.arange(st.n, need_n, dtype=np.int64)
        if st.skey is None and n_new:
            after = st.n == 0 or labels[0] > st.lab[st.n - 1]
            if not (after and bool(np.all(labels[1:] > labels[:-1]))):
                live = np.flatnonzero(st.alive[: st.n])
                order = np.argsort(st.lab[live], kind="stable")
                st.skey, st.srow = st.lab[live][order], live[order]
        for col, v in values.items():
            st.tail[col][used : used + t_new] = v
        st.offsets[st.n + 1 : need_n + 1] = offsets[1:] + st.n_tokens
        st.lab[st.n : need_n] = labels
        st.alive[st.n : need_n] = True
        if st.skey is not None and st.srow is not None:
            order = np.argsort(labels, kind="stable")
            pos = np.searchsorted(st.skey, labels[order])
            st.skey = np.insert(st.skey, pos, labels[order])
            st.srow = np.insert(st.srow, pos, rows[order])
        st.n, st.n_tokens, st.live = need_n, need_t, st.live + n_new
        self.version += 1

    def remove(self, labels: np.ndarray) -> None:
        """Tombstones live labels (each at most once)."""
        st = self._st
        labels = np.unique(np.asarray(labels, dtype=np.int64))
        rows = self._find(st, labels)
        if rows.size and rows.min() < 0:
            raise KeyError(int(labels[np.argmin(rows)]))
        st.alive[rows] = False
        lens = st.offsets[rows + 1] - st.offsets[rows]
        in_base = rows < st.n_base
        st.dead_base += int(lens[in_base].sum())
        st.dead_tail += int(lens[~in_base].sum())
        st.live -= rows.size
        if st.skey is not None and st.srow is not None:
            pos = np.searchsorted(st.skey, labels)
            st.skey, st.srow = np.delete(st.skey, pos), np.delete(st.srow, pos)
        self.version += 1
        dead, held = self._compactable(st)
        if dead > 4096 and 4 * dead > held:
            self.compact()

    def _mapped_base(self, st: _State) -> bool:
        return st.t_base > 0 and memory.is_mapped(st.base["tokens"])

    def _compactable(self, st: _State) -> tuple[int, int]:
        """(dead tokens compaction can drop, tokens it would rewrite): the tail's, and the
        base's when it is held in RAM rather than mapped."""
        if self._mapped_base(st):
            return st.dead_tail, st.n_tokens - st.t_base
        return st.dead_base + st.dead_tail, st.n_tokens

    def compact(self) -> None:
        """Drops dead sets from the tail (from everything when the base is in RAM); a mapped
        base is left as it is, its dead sets go at the next ``save``."""
        st = self._st
        first = st.n_base if self._mapped_base(st) else 0
        keep = first + np.flatnonzero(st.alive[first : st.n])
        starts = st.offsets[keep]
        lens = st.offsets[keep + 1] - starts
        idx = ragged_arange(starts, lens)
        new_tail = {col: np.ascontiguousarray(self._take(st, col, idx)) for col in self.columns}
        t_first = int(st.offsets[first])
        if first == 0:
            base = {c: self._column_array(c, 0) for c in self.columns}
        else:
            base = st.base
        offsets = np.concatenate([st.offsets[: first + 1], t_first + np.cumsum(lens)])
        n = first + keep.shape[0]
        lab = np.concatenate([st.lab[:first], st.lab[keep]])
        alive = np.concatenate([st.alive[:first], np.ones(keep.shape[0], dtype=bool)])
        new = _State(
            base=base,
            tail=new_tail,
            t_base=t_first if first else 0,
            n_base=first,
            offsets=offsets,
            lab=lab,
            alive=alive,
            n=n,
            n_tokens=int(offsets[-1]),
            live=st.live,
            dead_base=st.dead_base if first else 0,
        )
        self._index_labels(new)
        self._st = new
        self.version += 1

    @staticmethod
    def _index_labels(st: _State) -> None:
        """Sets the label lookup of a freshly built state: none when row labels rise strictly,
        else the live labels sorted."""
        lab = st.lab[: st.n]
        if bool(np.all(lab[1:] > lab[:-1])):
            st.skey = st.srow = None
            return
        live = np.flatnonzero(st.alive[: st.n])
        order = np.argsort(lab[live], kind="stable")
        st.skey, st.srow = lab[live][order], live[order]

    def install(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        labels: np.ndarray,
        columns: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Takes checked sets as they are, as the base (tokens may be a read-only memory map:
        they stay one; appends go to a tail in RAM)."""
        values = {"tokens": tokens, **(columns or {})}
        if set(values) != set(self.columns):
            raise ValueError(f"install needs the columns {sorted(self.columns)}")
        st = self._base_state(
            values,
            np.ascontiguousarray(offsets, dtype=np.int64),
            np.ascontiguousarray(labels, dtype=np.int64),
        )
        if st.skey is not None and np.any(st.skey[1:] == st.skey[:-1]):
            raise ValueError("labels must be unique")
        self._st = st
        self.version += 1

    def set_column(self, col: str, values: np.ndarray) -> None:
        """Replaces every stored token's entry of a non-token column (e.g. codes re-encoded
        against a new codebook); ``values`` has one entry per stored token, dead ones included."""
        if col == "tokens":
            raise ValueError("set_column replaces the columns beside the tokens, not the tokens")
        st = self._st
        tb, used = st.t_base, st.n_tokens - st.t_base
        if values.shape[0] != st.n_tokens:
            raise ValueError(f"{col} needs {st.n_tokens} entries, got {values.shape[0]}")
        st.base[col] = np.ascontiguousarray(values[:tb])
        tail = self._column_array(col, st.tail[col].shape[0])
        tail[:used] = values[tb:]
        st.tail[col] = tail
        self.version += 1

    # ---- persistence -------------------------------------------------------------------------
    def _live_chunks(self, st: _State, col: str) -> Iterator[np.ndarray]:
        """The live sets' rows of a column in row order, a bounded chunk at a time."""
        dtype, shape = self.columns[col]
        per_row = max(1, dtype.itemsize * int(np.prod(shape, dtype=np.int64)))
        step = max(1, _CHUNK_BYTES // per_row)
        for a, b, seg, seg_first in (
            (0, st.n_base, st.base[col], 0),
            (st.n_base, st.n, st.tail[col], st.t_base),
        ):
            if a == b:
                continue
            alive = st.alive[a:b]
            # A mapped chunk, once yielded (written), leaves the resident set (the page cache
            # keeps it): rewriting a large base does not pull the whole file into the process.
            if alive.all():  # contiguous: slices of the segment
                t0, t1 = int(st.offsets[a]) - seg_first, int(st.offsets[b]) - seg_first
                for s in range(t0, t1, step):
                    yield seg[s : min(t1, s + step)]
                    memory.drop_pages(seg[s : min(t1, s + step)])
                continue
            keep = a + np.flatnonzero(alive)
            starts, lens = st.offsets[keep] - seg_first, st.offsets[keep + 1] - st.offsets[keep]
            ends = np.cumsum(lens)
            r = 0
            while r < keep.shape[0]:  # whole sets, about ``step`` tokens at a time
                done = int(ends[r - 1]) if r else 0
                stop = max(r + 1, int(np.searchsorted(ends, done + step, side="right")))
                yield seg[ragged_arange(starts[r:stop], lens[r:stop])]
                memory.drop_pages(seg[int(starts[r]) : int(starts[stop - 1] + lens[stop - 1])])
                r = stop

    def _live_layout(self, st: _State) -> tuple[np.ndarray, np.ndarray]:
        keep = np.flatnonzero(st.alive[: st.n])
        lens = st.offsets[keep + 1] - st.offsets[keep]
        return offsets_of(lens), st.lab[keep].copy()

    def write(self, tokens_path: Path, offsets_path: Path) -> np.ndarray:
        """Writes the live sets' tokens and offsets (each atomically: temp name, fsync, rename)
        in bounded chunks, never one array of them in memory; the store is left as it is
        (readers may go on). Returns the labels in row order. ``remap`` then serves the sets
        from the written file.
        """
        st = self._st
        offsets, labels = self._live_layout(st)
        shape = (int(offsets[-1]), self.dim)
        storage.replace_npy_chunks(tokens_path, shape, self.dtype, self._live_chunks(st, "tokens"))
        storage.save_npy_replace(offsets_path, offsets)
        return labels

    def remap(self, tokens_path: Path, labels: np.ndarray) -> None:
        """Serves the live sets from ``tokens_path``, which ``write`` wrote from this very
        state (nothing may change in between): the tokens become a memory map of it, the other
        columns compacted copies in RAM, the tail empty. One step for readers."""
        st = self._st
        offsets, live_labels = self._live_layout(st)
        mapped = storage.load_npy(tokens_path, self.dtype, 2, mmap=True)
        if mapped.shape != (int(offsets[-1]), self.dim) or not np.array_equal(live_labels, labels):
            raise ValueError(f"{tokens_path} does not hold this store's live sets")
        columns = {
            c: _concat(list(self._live_chunks(st, c)), self._column_array(c, 0))
            for c in self.columns
            if c != "tokens"
        }
        self._rebase(mapped, offsets, live_labels, columns)

    def _rebase(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        labels: np.ndarray,
        columns: Mapping[str, np.ndarray],
    ) -> None:
        self._st = self._base_state({"tokens": tokens, **columns}, offsets, labels)
        self.version += 1

    def _base_state(
        self, base: Mapping[str, np.ndarray], offsets: np.ndarray, labels: np.ndarray
    ) -> _State:
        """A state whose rows are all the base ``base`` (per column) with an empty tail."""
        n = labels.shape[0]
        st = _State(
            base=dict(base),
            tail={c: self._column_array(c, 0) for c in self.columns},
            t_base=int(offsets[-1]),
            n_base=n,
            offsets=offsets,
            lab=labels,
            alive=np.ones(n, dtype=bool),
            n=n,
            n_tokens=int(offsets[-1]),
            live=n,
        )
        self._index_labels(st)
        return st

    def column_file(self, col: str) -> str:
        return f"{col}.npy"

    def save(self, directory: Path) -> list[str]:
        """Writes the live sets (``tokens.npy``, ``offsets.npy``, ``labels.npy`` and a file per
        other column) without copying the mapped base into RAM, then serves them from the
        written files (``write``, ``remap``); each file goes through a temp name."""
        labels = self.write(directory / "tokens.npy", directory / "offsets.npy")
        self.remap(directory / "tokens.npy", labels)
        storage.save_npy_replace(directory / "labels.npy", labels)
        st = self._st
        for col in self.columns:
            if col != "tokens":
                storage.save_npy_replace(directory / self.column_file(col), st.base[col])
        return [*self.FILES, *(self.column_file(c) for c in self.columns if c != "tokens")]

    def load(self, directory: Path) -> None:
        """Loads and checks the files ``save`` wrote (``index.tokenfiles``); the tokens stay
        memory-mapped, the other columns are read into RAM."""
        extra = {
            c: (self.column_file(c), spec) for c, spec in self.columns.items() if c != "tokens"
        }
        self.install(*read_saved(directory, self.FILES, self.dtype, self.dim, extra))


def _concat(chunks: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate(chunks)) if chunks else empty


class _StoreBlocks(TokenBlocks):
    def __init__(self, store: TokenStore, st: _State, col: str) -> None:
        self._st, self._col = st, col
        self.shape = (st.n_tokens, store.dim)

    def block(self, t0: int, t1: int) -> np.ndarray:
        return TokenStore._block(self._st, self._col, t0, t1)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        return TokenStore._take(self._st, self._col, idx)
