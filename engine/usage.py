"""Bytes per component of a collection, in RAM and on disk (``Collection.describe()["memory"]``).

Components (each ``{"ram": B, "disk": B}``; ``index`` and ``lexical`` add ``"parts"``, the same
figures per part as the index reports them, e.g. an HNSW index's ``graph`` and ``labels``):

- ``vectors`` (``tokens`` in a multi-vector collection): the items as written, the used rows of
  the store; disk ``vectors.G.npy`` (``tokens.G.npy`` + ``offsets.G.npy``);
- ``index``: the vector index (``Index.memory_usage``); disk ``index.G/``;
- ``ids``: the id <-> label map (``engine.idmap``) and the stores' labels and tombstones;
  disk the ``_label`` and ``_id`` columns of ``rows.G.parquet``;
- ``payloads``: the payload dicts and the Arrow table and masks cached for filters; disk the rest
  of ``rows.G.parquet`` (payload columns and the Parquet footer);
- ``lexical`` (collections with a BM25 index only): ``BM25Index.memory_usage``; disk
  ``lexical.G/``;
- ``log``: the write-ahead log ``wal/`` (disk only);
- ``other``: ``manifest.json``, the lock file and any file of another generation (disk only).

The disk figures cover every file in the directory, so they sum to ``bytes_on_disk``. RAM is
what ``index.memory`` says: numpy arrays by their used rows, memory-mapped arrays (checkpointed
vectors and tokens) count 0 since they are disk-backed pages the kernel can drop,
and Python dicts and sets are estimated from ``sys.getsizeof`` over a sample. Nothing is hashed
or read but a Parquet footer (once per checkpoint), so describing is cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from index import memory

from .checkpoint import WAL_DIR, rows_name
from .contents import Contents

ID_COLUMNS = ("_label", "_id")


def with_parts(parts: memory.Parts) -> dict[str, Any]:
    return {**memory.total(parts), "parts": parts}


def id_column_bytes(path: Path, cache: dict[str, int]) -> int:
    """Compressed bytes of the id columns of a rows table; read from its footer once (a
    checkpoint's files never change)."""
    key = f"{path.name}:{path.stat().st_size}"
    if key not in cache:
        meta = pq.ParquetFile(path).metadata
        n = 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                col = group.column(c)
                if col.path_in_schema in ID_COLUMNS:
                    n += col.total_compressed_size
        cache.clear()
        cache[key] = n
    return cache[key]


def collection_memory(
    path: Path, generation: int, contents: Contents, cache: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """Bytes in RAM and on disk per component (see the module docstring); ``generation`` is
    the checkpoint on disk, ``cache`` the collection's memo of ``id_column_bytes``."""
    items = contents.items
    item_files = set(items.files(generation))
    rows = rows_name(generation)
    index_dir, lexical_dir = f"index.{generation}", f"lexical.{generation}"
    disk = {name: 0 for name in (items.component, "ids", "payloads", "log", "other")}
    index_parts = contents.index.memory_usage(path / index_dir)
    lexical = contents.lexical
    lexical_parts = lexical.memory_usage(path / lexical_dir) if lexical is not None else None
    own = {index_dir, lexical_dir} if lexical is not None else {index_dir}
    with os.scandir(path) as entries:
        for e in entries:
            try:
                if e.name in own and e.is_dir():
                    continue  # the indexes' own figures
                if e.is_dir():
                    size = sum(memory.file_sizes(Path(e.path)).values())
                    disk["log" if e.name == WAL_DIR else "other"] += size
                elif e.name in item_files:
                    disk[items.component] += e.stat().st_size
                elif e.name == rows:
                    size = e.stat().st_size
                    ids = min(id_column_bytes(Path(e.path), cache), size)
                    disk["ids"] += ids
                    disk["payloads"] += size - ids
                else:
                    disk["other"] += e.stat().st_size
            except OSError:
                continue  # replaced by a checkpoint meanwhile
    item_ram, item_labels = items.ram_bytes()
    ids_ram = item_labels + contents.ids.ram_bytes()
    out: dict[str, dict[str, Any]] = {
        items.component: memory.usage(item_ram, disk[items.component]),
        "index": with_parts(index_parts),
        "ids": memory.usage(ids_ram, disk["ids"]),
        "payloads": memory.usage(contents.payloads.ram_bytes(), disk["payloads"]),
    }
    if lexical_parts is not None:
        out["lexical"] = with_parts(lexical_parts)
    out["log"] = memory.usage(0, disk["log"])
    out["other"] = memory.usage(0, disk["other"])
    return out


def release_freed() -> None:
    """Hands memory freed by a large transient job (an open, a checkpoint) back to the kernel:
    Arrow's allocator (mimalloc or jemalloc) and glibc's heap keep freed pages for reuse, which
    the kernel counts as the process's resident memory. Measured on a 398k-id collection, an
    open left ~120 MB of such pages behind. A no-op where glibc is not the C library."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Any:
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _find_malloc_trim()
