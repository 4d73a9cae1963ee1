"""Item stores: a collection's items exactly as written, one kind of item per store.

A single-vector collection holds one (dim,) vector per id (``VectorStore``); a multi-vector one a
token set, (n_i, dim) tokens per id (``TokenSetStore``). The store is the one place that knows the
difference: how a write's items are checked, what the index takes, how a query is shaped, what
``get`` returns and which files a checkpoint holds. ``Collection`` talks to ``ItemStore`` only.

Files of generation G (the rest of the checkpoint is ``engine.checkpoint``'s):
- vectors: ``vectors.G.npy``, float32 (n, d), rows in the order of the rows table, memory-mapped
  once written or read (only writes since the last checkpoint are held in RAM);
- token sets: ``tokens.G.npy``, float32 (T, d), every set's tokens in row order, with
  ``offsets.G.npy``, int64 (n + 1,): set i is ``tokens[offsets[i]:offsets[i + 1]]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import index as ix
from index import storage
from index.labelmap import RowStore
from index.tokens import TokenStore, check_token_sets
from index.validate import check_vectors


class ItemStore(ABC):
    """The items of a collection by label: one vector, or one token set, per label.

    ``x`` below is a batch of items as the store holds them: (n, dim) vectors, or for token
    sets every set's tokens concatenated, with ``offsets`` (n + 1,) marking where each starts.
    """

    multi_vector: ClassVar[bool]
    component: ClassVar[str]  # what ``describe()["memory"]`` calls the items
    # Whether ``query`` / ``queries`` return queries that the index's own check would pass
    # unchanged, so the search skips it (``Index.search_checked``).
    checks_queries: ClassVar[bool] = False

    def __init__(self, dim: int) -> None:
        self.dim = dim

    @abstractmethod
    def ram_bytes(self) -> tuple[int, int]:
        """RAM of ``(the items, their labels and tombstones)``; memory-mapped items count 0."""

    @abstractmethod
    def check(self, items: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """A write's items, checked (finite, right dimension, one per id): ``(x, offsets)``."""

    @abstractmethod
    def for_index(self, x: np.ndarray, offsets: np.ndarray | None) -> Any:
        """A checked batch in the form the collection's index adds."""

    @abstractmethod
    def append(self, x: np.ndarray, offsets: np.ndarray | None, labels: np.ndarray) -> None:
        """Stores a checked batch under new labels."""

    @abstractmethod
    def remove(self, labels: np.ndarray) -> None: ...

    @abstractmethod
    def get(self, label: int) -> np.ndarray:
        """A copy of a live label's item: (dim,) or (n_i, dim)."""

    @abstractmethod
    def live_labels(self) -> np.ndarray: ...

    def reserve(self, n: int) -> None:
        """Room for ``n`` items in all (a hint; a store that cannot use it ignores it)."""
        return None

    @abstractmethod
    def query(self, q: Any, *, hybrid: bool = False) -> Any:
        """One search query (a vector or a token set) in the form the index searches."""

    @abstractmethod
    def queries(self, q: Any) -> Any:
        """A batch of search queries in the form the index searches."""

    @staticmethod
    @abstractmethod
    def files(gen: int) -> tuple[str, ...]:
        """The store's files in generation ``gen`` of a checkpoint."""

    @classmethod
    def mapped_files(cls, gen: int) -> tuple[str, ...]:
        """The files of generation ``gen`` that ``read`` memory-maps (the items themselves)."""
        return cls.files(gen)[:1]

    @abstractmethod
    def save(self, path: Path, gen: int) -> tuple[tuple[str, ...], np.ndarray]:
        """Writes the live items as generation ``gen`` in ``path`` without compacting (searches
        may be reading): ``(file names, labels in row order)``."""

    def adopt(self, path: Path, gen: int, labels: np.ndarray) -> None:
        """Serves the items from the files ``save`` just wrote (nothing changed since; called
        with readers kept out), so that RAM holds only later writes. The default keeps them."""
        return None

    @abstractmethod
    def read(self, path: Path, gen: int, count: int) -> tuple[np.ndarray, ...]:
        """Generation ``gen``'s files, checked against ``count`` items; errors name the file."""

    @abstractmethod
    def install(self, arrays: tuple[np.ndarray, ...], labels: np.ndarray) -> None:
        """Takes what ``read`` returned, the rows under ``labels``."""


def store_for(index: ix.Index | ix.MultiVectorIndex) -> ItemStore:
    """The store for a collection with this index: token sets for a multi-vector index."""
    dim = index.dim
    return TokenSetStore(dim) if isinstance(index, ix.MultiVectorIndex) else VectorStore(dim)


class VectorStore(ItemStore):
    """One float32 (dim,) vector per label (``index.labelmap.RowStore``)."""

    multi_vector = False
    component = "vectors"
    checks_queries = True

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.rows = RowStore(dim)

    def ram_bytes(self) -> tuple[int, int]:
        return self.rows.ram_bytes()

    def check(self, items: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        x = check_vectors(items, self.dim)
        if x.shape[0] != n:
            raise ValueError(f"got {x.shape[0]} vectors for {n} ids")
        return x, None

    def for_index(self, x: np.ndarray, offsets: np.ndarray | None) -> Any:
        return x

    def append(self, x: np.ndarray, offsets: np.ndarray | None, labels: np.ndarray) -> None:
        self.rows.append(x, labels)

    def remove(self, labels: np.ndarray) -> None:
        self.rows.remove(labels)

    def get(self, label: int) -> np.ndarray:
        return self.rows.get(np.array([label]))[0]

    def live_labels(self) -> np.ndarray:
        return self.rows.live_labels()

    def reserve(self, n: int) -> None:
        self.rows.reserve(n)

    def query(self, q: Any, *, hybrid: bool = False) -> Any:
        q = np.asarray(q, dtype=np.float32)
        if q.ndim != 1:
            if hybrid:
                raise ValueError(f"search takes one vector of shape ({self.dim},)")
            raise ValueError(
                f"search takes one vector of shape ({self.dim},), got {q.shape}; use search_batch"
            )
        x = check_vectors(q, self.dim, "queries")  # checked once for the search
        return x if hybrid else x[0]

    def queries(self, q: Any) -> Any:
        return check_vectors(q, self.dim, "queries")

    @staticmethod
    def files(gen: int) -> tuple[str, ...]:
        return (f"vectors.{gen}.npy",)

    def save(self, path: Path, gen: int) -> tuple[tuple[str, ...], np.ndarray]:
        names = self.files(gen)
        return names, self.rows.write(path / names[0])

    def adopt(self, path: Path, gen: int, labels: np.ndarray) -> None:
        """Serves the rows from the file ``save`` wrote: a memory map (RAM keeps later writes)."""
        self.rows.remap(path / self.files(gen)[0], labels)

    def read(self, path: Path, gen: int, count: int) -> tuple[np.ndarray, ...]:
        """``vectors.G.npy``, memory-mapped (rows are read through the page cache)."""
        vpath = path / self.files(gen)[0]
        x = storage.load_npy(vpath, np.float32, 2, mmap=True)
        if x.shape != (count, self.dim):
            raise storage.CorruptFileError(
                vpath, f"shape {x.shape}, manifest says ({count}, {self.dim})"
            )
        return (x,)

    def install(self, arrays: tuple[np.ndarray, ...], labels: np.ndarray) -> None:
        self.rows.load(arrays[0], labels)


class TokenSetStore(ItemStore):
    """One token set per label: float32 tokens exactly as written (``index.tokens.TokenStore``;
    the index keeps its own float16 copies)."""

    multi_vector = True
    component = "tokens"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.sets = TokenStore(dim, dtype=np.float32)

    def ram_bytes(self) -> tuple[int, int]:
        return self.sets.ram_bytes()

    def check(self, items: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        x, offsets = check_token_sets(items, self.dim, "vectors")
        if offsets.shape[0] - 1 != n:
            raise ValueError(f"got {offsets.shape[0] - 1} token sets for {n} ids")
        return x, offsets

    def for_index(self, x: np.ndarray, offsets: np.ndarray | None) -> Any:
        assert offsets is not None  # the caller checked the kind of its items
        return np.split(x, offsets[1:-1])

    def append(self, x: np.ndarray, offsets: np.ndarray | None, labels: np.ndarray) -> None:
        assert offsets is not None
        self.sets.append(x, offsets, labels)

    def remove(self, labels: np.ndarray) -> None:
        self.sets.remove(labels)

    def get(self, label: int) -> np.ndarray:
        return self.sets.get(label)

    def live_labels(self) -> np.ndarray:
        return self.sets.live_labels()

    def query(self, q: Any, *, hybrid: bool = False) -> Any:
        try:
            arr = np.asarray(q, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise TypeError(f"the query must be an (m, {self.dim}) array or a text: {e}") from None
        if arr.ndim != 2:
            raise ValueError(
                f"search takes one query token set of shape (m, {self.dim}) in a multi-vector "
                f"collection, got shape {arr.shape}; use search_batch for several"
            )
        return [arr]

    def queries(self, q: Any) -> Any:
        return q  # the index checks token sets

    @staticmethod
    def files(gen: int) -> tuple[str, ...]:
        return f"tokens.{gen}.npy", f"offsets.{gen}.npy"

    def save(self, path: Path, gen: int) -> tuple[tuple[str, ...], np.ndarray]:
        """Writes the live sets in bounded chunks (the memory-mapped ones are never copied
        into RAM as a whole)."""
        names = self.files(gen)
        return names, self.sets.write(path / names[0], path / names[1])

    def adopt(self, path: Path, gen: int, labels: np.ndarray) -> None:
        """Serves the sets from the tokens file ``save`` wrote: a memory map (RAM keeps the
        sets written after this checkpoint)."""
        self.sets.remap(path / self.files(gen)[0], labels)

    def read(self, path: Path, gen: int, count: int) -> tuple[np.ndarray, ...]:
        """``(tokens (T, dim) float32 memory-mapped, offsets (count + 1,))``, checked."""
        tpath, opath = (path / n for n in self.files(gen))
        tokens = storage.load_npy(tpath, np.float32, 2, mmap=True)
        offsets = np.array(storage.load_npy(opath, np.int64, 1))
        if tokens.shape[1] != self.dim:
            raise storage.CorruptFileError(
                tpath, f"tokens have dimension {tokens.shape[1]}, manifest says {self.dim}"
            )
        if offsets.shape[0] != count + 1:
            raise storage.CorruptFileError(
                opath, f"{offsets.shape[0]} offsets, manifest says {count} token sets (+1)"
            )
        if offsets[0] != 0 or offsets[-1] != tokens.shape[0] or (np.diff(offsets) <= 0).any():
            raise storage.CorruptFileError(
                opath, f"offsets must rise strictly from 0 to {tokens.shape[0]} (the token count)"
            )
        return tokens, offsets

    def install(self, arrays: tuple[np.ndarray, ...], labels: np.ndarray) -> None:
        tokens, offsets = arrays
        self.sets.install(tokens, offsets, labels)
