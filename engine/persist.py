"""A collection's checkpoint data files: writing them, and reading them back verified.

Generation G of a collection holds ``rows.G.parquet`` (labels, ids, payloads), ``index.G/`` (the
index's own files) and its vectors: ``vectors.G.npy`` (float32 (n, d)) for a single-vector
collection, or for a multi-vector one ``tokens.G.npy`` (float32 (T, d), every set's tokens in row
order) with ``offsets.G.npy`` (int64 (n + 1,); set i is ``tokens[offsets[i]:offsets[i + 1]]``).
A collection with a lexical index also holds ``lexical.G/`` (the BM25 index: vocabulary, documents'
term ids and the score matrix, with its own ``lexical.json`` of checksums; ``index.lexical``).
Rows of the vector files follow the rows table. Every file is checked against the manifest (done
by the caller) and for shape and consistency here; errors name the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import index as ix
from index import storage
from index.lexical import BM25Index

FORMAT_VERSION = 2  # 2 added the write-ahead log (``wal/``, ``wal_seq``); 1 still opens
MULTI_FORMAT_VERSION = 3  # multi-vector collections (token files); older readers refuse them
# Collections with a lexical index (``lexical.G/``), of either kind: a reader that did not know
# it would drop the index at its next checkpoint, so older readers must refuse them.
LEXICAL_FORMAT_VERSION = 4
READABLE_FORMATS = (1, 2, MULTI_FORMAT_VERSION, LEXICAL_FORMAT_VERSION)


def format_version(multi_vector: bool, lexical: bool = False) -> int:
    if lexical:
        return LEXICAL_FORMAT_VERSION
    return MULTI_FORMAT_VERSION if multi_vector else FORMAT_VERSION


def check_format(version: int, multi_vector: bool, lexical: bool) -> str | None:
    """Why a manifest's format_version does not fit the collection it describes, or None."""
    if (version == LEXICAL_FORMAT_VERSION) != lexical:
        return "a lexical index" if lexical else "no lexical index"
    if not lexical and (version == MULTI_FORMAT_VERSION) != multi_vector:
        return "a multi-vector index" if multi_vector else "a single-vector index"
    return None


def data_names(gen: int, multi_vector: bool) -> tuple[str, ...]:
    """The vector files of generation ``gen`` (the rows table excluded)."""
    if multi_vector:
        return f"tokens.{gen}.npy", f"offsets.{gen}.npy"
    return (f"vectors.{gen}.npy",)


def rows_name(gen: int) -> str:
    return f"rows.{gen}.parquet"


# ---- writing ---------------------------------------------------------------------------------
def save_vectors(path: Path, gen: int, x: np.ndarray) -> tuple[str, ...]:
    names = data_names(gen, False)
    storage.save_npy(path / names[0], x)
    return names


def save_tokens(path: Path, gen: int, tokens: np.ndarray, offsets: np.ndarray) -> tuple[str, ...]:
    names = data_names(gen, True)
    storage.save_npy(path / names[0], np.asarray(tokens, dtype=np.float32))
    storage.save_npy(path / names[1], np.asarray(offsets, dtype=np.int64))
    return names


def save_rows(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)
    storage.fsync_file(path)


# ---- reading ---------------------------------------------------------------------------------
def load_vectors(path: Path, gen: int, count: int, dim: int) -> np.ndarray:
    """``vectors.G.npy``, copied into memory."""
    vpath = path / data_names(gen, False)[0]
    x = storage.load_npy(vpath, np.float32, 2, mmap=True)
    if x.shape != (count, dim):
        raise storage.CorruptFileError(vpath, f"shape {x.shape}, manifest says ({count}, {dim})")
    return np.array(x)


def load_tokens(path: Path, gen: int, count: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens (T, dim) float32 memory-mapped, offsets (count + 1,))``, checked."""
    tpath, opath = (path / n for n in data_names(gen, True))
    tokens = storage.load_npy(tpath, np.float32, 2, mmap=True)
    offsets = np.array(storage.load_npy(opath, np.int64, 1))
    if tokens.shape[1] != dim:
        raise storage.CorruptFileError(
            tpath, f"tokens have dimension {tokens.shape[1]}, manifest says {dim}"
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


def load_rows(path: Path, count: int, next_label: int) -> tuple[pa.Table, np.ndarray, list[str]]:
    """The rows table with its labels and ids, checked against the manifest's counts."""
    try:
        table = pq.read_table(path)
        labels = table.column("_label").to_numpy().astype(np.int64)
        ids = table.column("_id").to_pylist()
    except (pa.ArrowException, KeyError, OSError) as e:
        raise storage.CorruptFileError(path, f"unreadable rows table: {e}") from None
    if (
        len(ids) != count
        or len(set(ids)) != count
        or (labels.size and (labels.min() < 0 or labels.max() >= next_label))
    ):
        raise storage.CorruptFileError(path, "ids/labels inconsistent with the manifest")
    return table, labels, ids


def load_lexical(directory: Path, config: dict[str, Any], labels: np.ndarray) -> BM25Index:
    """The lexical index in ``directory``, checked against the collection: the same
    configuration, and only labels the collection holds."""
    lexical = BM25Index.load(directory)
    if lexical.config != config:
        raise storage.CorruptFileError(
            directory / "lexical.json", "lexical configuration differs from the collection's"
        )
    if not np.isin(lexical.live_labels(), labels).all():
        raise storage.CorruptFileError(
            directory / "labels.npy", "the lexical index holds labels the collection does not"
        )
    return lexical


def load_index(
    index_dir: Path, spec: str, dim: int, count: int, labels: np.ndarray
) -> ix.Index | ix.MultiVectorIndex:
    """The index in ``index_dir``, checked to hold exactly the collection's labels."""
    index = ix.load(index_dir)
    if index.dim != dim or index.spec != spec or len(index) != count:
        raise storage.CorruptFileError(
            index_dir / "index.json", "index does not match the collection manifest"
        )
    if not index.contains(labels).all():
        raise storage.CorruptFileError(
            index_dir / "index.json", "index lacks labels the collection holds"
        )
    return index
