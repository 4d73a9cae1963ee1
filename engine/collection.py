"""A collection: string ids, vectors, payloads and one index, persisted as one directory."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import encoders
import index as ix
from index import storage
from index.labelmap import RowStore
from index.validate import check_k, check_vectors

from . import encoding
from .payloads import PayloadStore, check_payloads
from .results import Hit, Record, SearchResult

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def check_ids(ids: Any) -> list[str]:
    """Ids as strings (ints accepted); raises on an empty batch, bad types or duplicates."""
    if isinstance(ids, (str, bytes, int)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise TypeError("ids must be a list of strings (or ints)")
    out = []
    for i, v in enumerate(ids):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (str, int, np.integer)):
            raise TypeError(f"id {i} must be a string or int, got {type(v).__name__}")
        s = str(v)
        if not s:
            raise ValueError(f"id {i} is empty")
        out.append(s)
    if not out:
        raise ValueError("ids is an empty batch")
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(s for s in out if s in seen or seen.add(s))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate id {dup!r} within one call")
    return out


class Collection:
    """Vectors with string ids and JSON-like payloads, searchable through one index.

    Obtain one from ``Engine.create_collection`` / ``Engine.open_collection``. Writes apply in
    memory at once and reach disk atomically at ``flush()`` (also called by ``close()`` and by
    ``Engine.close()``): a crash loses what was not flushed, never what was.

    Example:
        >>> col = eng.create_collection("docs", dim=3, index="flat")
        >>> col.add(ids=["a"], vectors=[[1, 0, 0]], payloads=[{"year": 2020}])
        >>> col.search([1, 0, 0], k=1)[0].id
        'a'
    """

    def __init__(self, path: Path, name: str, config: dict[str, Any]) -> None:
        self.path = path
        self.name = name
        self.dim = int(config["dim"])
        self.metric = ix.Metric.parse(config["metric"])
        self._index = ix.from_spec(config["index"], self.dim, self.metric)
        self.encoder_spec: str | None = config.get("encoder")
        self._encoder: encoders.Encoder | None = None
        self._vectors = RowStore(self.dim)
        self._payloads = PayloadStore()
        self._label_of: dict[str, int] = {}
        self._id_of = np.empty(0, dtype=object)
        self._next_label = 0
        self._generation = 0
        self._dirty = False
        self._lock = threading.RLock()

    # ---- description -------------------------------------------------------------------------
    @property
    def index_spec(self) -> str:
        return self._index.spec

    def config(self) -> dict[str, Any]:
        config = {"dim": self.dim, "metric": self.metric.value, "index": self._index.spec}
        if self.encoder_spec is not None:
            config["encoder"] = self.encoder_spec
        return config

    @property
    def encoder(self) -> encoders.Encoder | None:
        """The collection's encoder (loaded on first use), or None for raw-vector collections."""
        if self._encoder is None and self.encoder_spec is not None:
            self._encoder = encoding.resolve(self.encoder_spec)
        return self._encoder

    def _query_vectors(self, queries: Any, batch: bool) -> Any:
        """Query text(s) -> vectors through the encoder; vectors pass through unchanged."""
        is_text = (
            isinstance(queries, str)
            if not batch
            else (
                isinstance(queries, (list, tuple)) and bool(queries) and isinstance(queries[0], str)
            )
        )
        if not is_text:
            return queries
        enc = self.encoder
        if enc is None:
            raise ValueError(f"collection {self.name!r} has no encoder: search it with vectors")
        texts = encoders.check_texts([queries] if not batch else queries, "queries")
        out = enc.encode_queries(texts)
        return out[0] if not batch else out

    def __len__(self) -> int:
        return len(self._label_of)

    def __contains__(self, id: object) -> bool:
        return str(id) in self._label_of

    def __repr__(self) -> str:
        return (
            f"Collection({self.name!r}, dim={self.dim}, metric={self.metric.value}, "
            f"index={self.index_spec!r}, n={len(self)})"
        )

    # ---- writes ------------------------------------------------------------------------------
    def add(
        self,
        ids: Any,
        vectors: Any = None,
        payloads: Sequence[Any] | None = None,
        *,
        texts: Sequence[str] | None = None,
    ) -> None:
        """Adds new items; fails (changing nothing) if any id already exists.

        Args:
            ids: n distinct string (or int) ids.
            vectors: (n, dim) finite floats; or give ``texts`` to a collection with an encoder.
            payloads: optional n JSON-like dicts.
            texts: n non-empty documents, encoded with the collection's encoder.

        Raises:
            ValueError: on an existing or duplicate id, wrong dimension, NaN/inf, empty batch.
        """
        vectors = encoding.texts_or_vectors(vectors, texts, self.encoder, "add")
        self._write(ids, vectors, payloads, replace=False)

    def upsert(
        self,
        ids: Any,
        vectors: Any = None,
        payloads: Sequence[Any] | None = None,
        *,
        texts: Sequence[str] | None = None,
    ) -> None:
        """Adds items, replacing the vector and payload of ids that already exist."""
        vectors = encoding.texts_or_vectors(vectors, texts, self.encoder, "upsert")
        self._write(ids, vectors, payloads, replace=True)

    def _write(self, ids: Any, vectors: Any, payloads: Sequence[Any] | None, replace: bool) -> None:
        keys = check_ids(ids)
        x = check_vectors(vectors, self.dim)
        if x.shape[0] != len(keys):
            raise ValueError(f"got {x.shape[0]} vectors for {len(keys)} ids")
        rows = check_payloads(payloads, len(keys))
        with self._lock:
            if not replace:
                for k in keys:
                    if k in self._label_of:
                        raise ValueError(f"id {k!r} already exists (use upsert to replace it)")
            schema = self._payloads.check_types(rows)
            old = [self._label_of[k] for k in keys if k in self._label_of]
            if old:
                self._drop_labels(np.asarray(old, dtype=np.int64))
            labels = np.arange(self._next_label, self._next_label + len(keys), dtype=np.int64)
            self._index.add(x, labels)
            self._next_label += len(keys)
            self._vectors.append(x, labels)
            self._payloads.put(labels, rows, schema)
            self._label_of.update(zip(keys, labels.tolist(), strict=True))
            if self._id_of.shape[0] < self._next_label:
                grown = np.empty(max(self._next_label, 2 * self._id_of.shape[0]), dtype=object)
                grown[: self._id_of.shape[0]] = self._id_of
                self._id_of = grown
            self._id_of[labels] = keys
            self._dirty = True

    def delete(self, ids: Any) -> int:
        """Deletes the given ids; absent ones are ignored. Returns how many were deleted."""
        keys = check_ids(ids)
        with self._lock:
            labels = [self._label_of.pop(k) for k in keys if k in self._label_of]
            if labels:
                self._drop_labels(np.asarray(labels, dtype=np.int64))
                self._dirty = True
            return len(labels)

    def _drop_labels(self, labels: np.ndarray) -> None:
        for lab in labels.tolist():
            key = self._id_of[lab]
            if self._label_of.get(key) == lab:
                del self._label_of[key]
            self._id_of[lab] = None
        self._index.remove(labels)
        self._vectors.remove(labels)
        self._payloads.remove(labels)

    # ---- reads -------------------------------------------------------------------------------
    def get(self, ids: Any) -> list[Record | None]:
        """Stored items for ``ids``, aligned with them; None where an id is absent."""
        keys = check_ids(ids)
        with self._lock:
            out: list[Record | None] = []
            for k in keys:
                lab = self._label_of.get(k)
                if lab is None:
                    out.append(None)
                    continue
                row = self._vectors.rows[lab]
                out.append(Record(k, self._vectors.x[row].copy(), dict(self._payloads.get(lab))))
            return out

    def _allowed(self, where: dict[str, Any] | None) -> np.ndarray | None:
        if where is None:
            return None
        if not isinstance(where, dict):
            raise TypeError(f"where must be a dict, got {type(where).__name__}")
        if not where:
            return None
        return self._payloads.matching(where)

    def search(
        self, vector: Any, k: int = 10, *, where: dict[str, Any] | None = None, **params: Any
    ) -> list[Hit]:
        """The k best matches for one query: a vector, or a text for a collection with an encoder.

        Args:
            vector: (dim,) floats, or a query string.
            k: how many hits, > 0.
            where: optional payload filter, e.g. ``{"year": {"$gte": 2021}}``.
            **params: index search parameters (``ef`` for hnsw, ``nprobe`` for ivf).

        Returns:
            Up to k ``Hit(id, score, payload)``, best first.
        """
        q = np.asarray(self._query_vectors(vector, batch=False), dtype=np.float32)
        if q.ndim != 1:
            raise ValueError(
                f"search takes one vector of shape ({self.dim},), got {q.shape}; use search_batch"
            )
        k = check_k(k)
        with self._lock:
            allowed = self._allowed(where)
            scores, labels = self._index.search(q, k, allowed=allowed, **params)
            id_of, payload = self._id_of, self._payloads.by_label.get
            return [
                Hit(id_of[lab], s, dict(payload(lab, ())))
                for s, lab in zip(scores[0].tolist(), labels[0].tolist(), strict=True)
                if lab >= 0
            ]

    def search_batch(
        self, vectors: Any, k: int = 10, *, where: dict[str, Any] | None = None, **params: Any
    ) -> SearchResult:
        """The k best matches for each of m queries (vectors, or texts with an encoder):
        ``.ids`` and ``.scores`` (m, k)."""
        q = check_vectors(self._query_vectors(vectors, batch=True), self.dim, "queries")
        k = check_k(k)
        with self._lock:
            allowed = self._allowed(where)
            scores, labels = self._index.search(q, k, allowed=allowed, **params)
            ids = np.full(labels.shape, None, dtype=object)
            found = labels >= 0
            ids[found] = self._id_of[labels[found]]
            get = self._payloads.get
            payloads = [[dict(get(lab)) for lab in row if lab >= 0] for row in labels.tolist()]
            return SearchResult(ids, scores, payloads)

    # ---- persistence -------------------------------------------------------------------------
    def flush(self) -> None:
        """Writes a checkpoint: new files under a new generation, then the manifest, atomically."""
        with self._lock:
            if not self._dirty and (self.path / MANIFEST).exists():
                return
            gen = self._generation + 1
            vec_name, rows_name, index_name = (
                f"vectors.{gen}.npy",
                f"rows.{gen}.parquet",
                f"index.{gen}",
            )
            x, labels = self._vectors.live()
            storage.save_npy(self.path / vec_name, x)
            table = self._rows_table(labels)
            pq.write_table(table, self.path / rows_name)
            storage.fsync_file(self.path / rows_name)
            index_dir = self.path / index_name
            if index_dir.exists():
                shutil.rmtree(index_dir)
            self._index.save(index_dir)
            storage.fsync_dir(index_dir)
            manifest = {
                "format_version": FORMAT_VERSION,
                "name": self.name,
                "config": self.config(),
                "count": len(self),
                "next_label": self._next_label,
                "generation": gen,
                "index_dir": index_name,
                "files": {n: storage.file_entry(self.path / n) for n in (vec_name, rows_name)},
                "versions": ix.base.library_versions(),
            }
            storage.write_manifest(self.path, MANIFEST, manifest)
            self._generation = gen
            self._dirty = False
            self._remove_stale(keep={vec_name, rows_name, index_name, MANIFEST})

    def _rows_table(self, labels: np.ndarray) -> pa.Table:
        ids = self._id_of[labels].tolist() if labels.size else []
        get = self._payloads.get
        schema = pa.schema(
            [pa.field("_label", pa.int64()), pa.field("_id", pa.string()), *self._payloads.schema]
        )
        rows = [
            {"_label": lab, "_id": i, **get(lab)}
            for lab, i in zip(labels.tolist(), ids, strict=True)
        ]
        return pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()

    def _remove_stale(self, keep: set[str]) -> None:
        for entry in self.path.iterdir():
            if entry.name in keep or entry.name == ".lock":
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    @classmethod
    def create(cls, path: Path, name: str, config: dict[str, Any]) -> Collection:
        col = cls(path, name, config)
        col._dirty = True
        col.flush()
        return col

    @classmethod
    def open(cls, path: Path, name: str) -> Collection:
        """Opens a collection directory, verifying every file against the manifest first."""
        mpath = path / MANIFEST
        manifest = storage.read_manifest(mpath)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise storage.CorruptFileError(
                mpath, f"unsupported format_version {manifest.get('format_version')!r}"
            )
        try:
            config = manifest["config"]
            count = int(manifest["count"])
            next_label = int(manifest["next_label"])
            gen = int(manifest["generation"])
            index_dir = path / str(manifest["index_dir"])
            files = manifest["files"]
            vec_name = f"vectors.{gen}.npy"
            rows_name = f"rows.{gen}.parquet"
            col = cls(path, name, config)
        except (KeyError, TypeError, ValueError) as e:
            raise storage.CorruptFileError(mpath, f"invalid manifest: {e}") from None
        if set(files) != {vec_name, rows_name}:
            raise storage.CorruptFileError(
                mpath, f"manifest files {sorted(files)} do not match generation {gen}"
            )
        storage.verify_files(path, files)
        x = storage.load_npy(path / vec_name, np.float32, 2, mmap=True)
        if x.shape != (count, col.dim):
            raise storage.CorruptFileError(
                path / vec_name, f"shape {x.shape}, manifest says ({count}, {col.dim})"
            )
        try:
            table = pq.read_table(path / rows_name)
            labels = table.column("_label").to_numpy().astype(np.int64)
            ids = table.column("_id").to_pylist()
        except (pa.ArrowException, KeyError, OSError) as e:
            raise storage.CorruptFileError(
                path / rows_name, f"unreadable rows table: {e}"
            ) from None
        if (
            len(ids) != count
            or len(set(ids)) != count
            or (labels.size and (labels.min() < 0 or labels.max() >= next_label))
        ):
            raise storage.CorruptFileError(
                path / rows_name, "ids/labels inconsistent with the manifest"
            )
        index = ix.Index.load(index_dir)
        if index.dim != col.dim or index.spec != col._index.spec or len(index) != count:
            raise storage.CorruptFileError(
                index_dir / "index.json", "index does not match the collection manifest"
            )
        if not index.contains(labels).all():
            raise storage.CorruptFileError(
                index_dir / "index.json", "index lacks labels the collection holds"
            )
        col._index = index
        col._vectors.load(np.array(x), labels)
        col._payloads.load(labels, table)
        col._label_of = dict(zip(ids, labels.tolist(), strict=True))
        col._id_of = np.empty(next_label, dtype=object)
        col._id_of[labels] = ids
        col._next_label = next_label
        col._generation = gen
        col._remove_stale(keep={vec_name, rows_name, index_dir.name, MANIFEST})
        return col

    def close(self) -> None:
        self.flush()

    def describe(self) -> dict[str, Any]:
        """Name, config, count and bytes on disk, as ``vecdex info`` prints it."""
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {"name": self.name, **self.config(), "count": len(self), "bytes_on_disk": size}


def remove_tree(path: Path) -> None:
    """Removes a collection directory: renamed away first so a crash never leaves half of one."""
    trash = path.with_name(f".{path.name}.dropped")
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(path, trash)
    storage.fsync_dir(path.parent)
    shutil.rmtree(trash)
