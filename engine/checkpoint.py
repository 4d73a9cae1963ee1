"""A collection's checkpoint: its files on disk, written atomically and read back verified.

A collection directory holds ``manifest.json``, the files of one generation G, and ``wal/`` (the
log after the checkpoint; ``engine.wal``):
- ``rows.G.parquet``: labels (``_label``), ids (``_id``) and one column per payload field;
- the items (``engine.itemstore``): ``vectors.G.npy``, or ``tokens.G.npy`` + ``offsets.G.npy``
  for a multi-vector collection; rows follow the rows table;
- ``index.G/``: the vector index's own files (``index.load``);
- ``lexical.G/``: the BM25 index (vocabulary, documents' term ids and the score matrix, with its
  own ``lexical.json`` of checksums; ``index.lexical``), for a collection with a lexical index.

The manifest records the format version, name, config, counts, the generation, its directories,
the size and SHA-256 of every data file, library versions, the last log record the checkpoint
holds (``wal_seq``) and the caller's marker. It is written last (temp name, fsync, rename), so a
crash leaves the previous checkpoint whole; files of other generations are then removed. Every
file is checked against the manifest, and for shape and consistency, before it is used; errors
name the file.
"""

from __future__ import annotations

import shutil
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import index as ix
from index import storage
from index.lexical import BM25Index

from .contents import Contents

MANIFEST = "manifest.json"
WAL_DIR = "wal"
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


def rows_name(gen: int) -> str:
    return f"rows.{gen}.parquet"


# ---- writing ---------------------------------------------------------------------------------
def write(
    path: Path,
    gen: int,
    contents: Contents,
    *,
    exclusive: AbstractContextManager[Any],
    name: str,
    config: dict[str, Any],
    wal_seq: int,
    marker: dict[str, Any] | None,
) -> set[str]:
    """Writes generation ``gen`` of ``contents`` and then the manifest that switches to it.

    Args:
        exclusive: held while the indexes save (an index may compact itself meanwhile); the
            caller keeps writers out throughout.
        wal_seq: the last log record the checkpoint holds.

    Returns:
        The names in ``path`` the checkpoint uses (what ``remove_stale`` keeps).
    """
    rows, index_name, lexical_name = rows_name(gen), f"index.{gen}", f"lexical.{gen}"
    lexical = contents.lexical
    data, labels = contents.items.save(path, gen)
    save_rows(path / rows, rows_table(contents, labels))
    index_dir = path / index_name
    if index_dir.exists():
        shutil.rmtree(index_dir)
    with exclusive:
        contents.items.adopt(path, gen, labels)
        contents.ids.compact()
        contents.index.save(index_dir)
        if lexical is not None:
            # Rebuilt over the live documents: statistics exact again from here on.
            lexical.save(path / lexical_name)
    storage.fsync_dir(index_dir)
    manifest = {
        "format_version": format_version(contents.items.multi_vector, lexical is not None),
        "name": name,
        "config": config,
        "count": len(contents),
        "next_label": contents.next_label,
        "generation": gen,
        "index_dir": index_name,
        **({"lexical_dir": lexical_name} if lexical is not None else {}),
        "files": {n: storage.file_entry(path / n) for n in (*data, rows)},
        "versions": ix.base.library_versions(),
        "wal_seq": wal_seq,
        "marker": marker,
    }
    storage.write_manifest(path, MANIFEST, manifest)
    keep = {*data, rows, index_name, MANIFEST, WAL_DIR}
    if lexical is not None:
        keep.add(lexical_name)
    return keep


def rows_table(contents: Contents, labels: np.ndarray) -> pa.Table:
    """The rows table of ``labels``: label, id and payload columns."""
    payloads = contents.payloads
    ids = contents.ids.ids(labels)
    schema = pa.schema(
        [pa.field("_label", pa.int64()), pa.field("_id", pa.string()), *payloads.schema]
    )
    if not len(payloads.schema):  # no payloads: columns straight from the arrays
        return pa.table([pa.array(labels, pa.int64()), pa.array(ids, pa.string())], schema=schema)
    get = payloads.get
    rows = [
        {"_label": lab, "_id": i, **get(lab)} for lab, i in zip(labels.tolist(), ids, strict=True)
    ]
    return pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()


def save_rows(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)
    storage.fsync_file(path)


def remove_stale(path: Path, keep: set[str]) -> None:
    """Removes everything in the collection directory but ``keep`` (and the lock file)."""
    for entry in path.iterdir():
        if entry.name in keep or entry.name == ".lock":
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


# ---- reading ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """A parsed manifest (``read_manifest``); ``load`` checks the files it lists."""

    path: Path
    version: int
    config: dict[str, Any]
    count: int
    next_label: int
    generation: int
    wal_seq: int
    marker: dict[str, Any] | None
    index_dir: str
    lexical_dir: Any
    files: Any

    def invalid(self, why: object) -> storage.CorruptFileError:
        return storage.CorruptFileError(self.path, f"invalid manifest: {why}")


def read_manifest(path: Path) -> Manifest:
    """The manifest in the collection directory ``path``, parsed (its files are not read).

    Raises:
        CorruptFileError: an unreadable manifest, an unknown format version or a bad field.
        FileNotFoundError: there is no manifest.
    """
    mpath = path / MANIFEST
    manifest = storage.read_manifest(mpath)
    if manifest.get("format_version") not in READABLE_FORMATS:
        raise storage.CorruptFileError(
            mpath, f"unsupported format_version {manifest.get('format_version')!r}"
        )
    try:
        config = manifest["config"]
        count = int(manifest["count"])
        next_label = int(manifest["next_label"])
        gen = int(manifest["generation"])
        wal_seq = int(manifest.get("wal_seq", 0))
        marker = manifest.get("marker")
        if marker is not None and not isinstance(marker, dict):
            raise ValueError("marker must be an object")
        index_dir = str(manifest["index_dir"])
        files = manifest["files"]
    except (KeyError, TypeError, ValueError) as e:
        raise storage.CorruptFileError(mpath, f"invalid manifest: {e}") from None
    version = manifest["format_version"]
    lexical_dir = manifest.get("lexical_dir")
    return Manifest(
        mpath,
        version,
        config,
        count,
        next_label,
        gen,
        wal_seq,
        marker,
        index_dir,
        lexical_dir,
        files,
    )


def load(path: Path, m: Manifest, contents: Contents) -> set[str]:
    """Verifies the files ``m`` lists and loads them into ``contents`` (empty, made from
    ``m.config``). Returns the names in ``path`` the checkpoint uses.

    Raises:
        CorruptFileError: a file fails its checksum or its checks; the message names it.
    """
    items, gen, count = contents.items, m.generation, m.count
    misfit = check_format(m.version, items.multi_vector, contents.lexical is not None)
    if misfit is not None:
        raise storage.CorruptFileError(
            m.path,
            f"format_version {m.version} does not fit a collection with {misfit} "
            f"(index {contents.index.spec!r})",
        )
    data, rows = items.files(gen), rows_name(gen)
    if set(m.files) != {*data, rows}:
        raise storage.CorruptFileError(
            m.path, f"manifest files {sorted(m.files)} do not match generation {gen}"
        )
    storage.verify_files(path, m.files, mapped=items.mapped_files(gen))
    arrays = items.read(path, gen, count)
    table, labels, ids = load_rows(path / rows, count, m.next_label)
    index_dir = path / m.index_dir
    contents.index = load_index(index_dir, contents.index.spec, items.dim, count, labels)
    in_use = {*data, rows, index_dir.name, MANIFEST, WAL_DIR}
    if contents.lexical is not None:
        lexical_dir = m.lexical_dir
        if not isinstance(lexical_dir, str) or not lexical_dir.startswith("lexical."):
            raise storage.CorruptFileError(m.path, "config has a lexical index, no lexical_dir")
        contents.lexical = load_lexical(path / lexical_dir, contents.lexical.config, labels)
        in_use.add(lexical_dir)
    items.install(arrays, labels)
    try:
        contents.install(ids, labels, table, m.next_label)
    except ValueError as e:  # a duplicate id
        raise storage.CorruptFileError(path / rows, str(e)) from None
    return in_use


def verify(path: Path) -> int:
    """Hashes every file of the checkpoint in ``path`` (the collection's files, and those the
    index and lexical manifests list, inner indexes included) against its manifest, whatever
    the verification mode of the open. Returns the bytes checked.

    Raises:
        CorruptFileError: the first file that is missing, of the wrong size or corrupted.
    """
    m = read_manifest(path)
    checked = [(path, m.files)]
    dirs = [path / m.index_dir] + ([path / m.lexical_dir] if isinstance(m.lexical_dir, str) else [])
    for top in dirs:
        for sub in sorted({top, *(p.parent for p in top.rglob("*.json"))}):
            for name in (ix.base.MANIFEST, "lexical.json"):
                if (sub / name).is_file():
                    checked.append((sub, storage.read_manifest(sub / name).get("files")))
    with storage.verification("full"):
        for directory, files in checked:
            storage.verify_files(directory, files)
    return sum(
        int(e["size"]) for _, files in checked if isinstance(files, dict) for e in files.values()
    )


def load_rows(path: Path, count: int, next_label: int) -> tuple[pa.Table, np.ndarray, pa.Array]:
    """The rows table with its labels and ids (an Arrow string array: no Python string per
    id is made), checked against the manifest's counts (``IdMap.install`` finds duplicates)."""
    try:
        table = pq.read_table(path)
        labels = table.column("_label").to_numpy().astype(np.int64)
        ids = table.column("_id").combine_chunks()
    except (pa.ArrowException, KeyError, OSError) as e:
        raise storage.CorruptFileError(path, f"unreadable rows table: {e}") from None
    if (
        len(ids) != count
        or ids.null_count
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
