"""The parts of a sharded collection: routing ids to shards, its manifest, the host of one shard,
the in-process shard set, and the exact merge of per-shard rankings.

A sharded collection is N ordinary collection directories (``shard-000`` ...) under one directory
whose ``sharded.json`` names them. An id belongs to shard ``blake2b-64(utf-8 id) mod N``: a hash
that is the same in every process and on every machine (Python's ``hash`` of a str is salted per
process), so a writer, a reader and a Ray worker agree on where an id lives.

A shard is served by a ``ShardHost``: a collection opened in one process behind a small method set
whose arguments and results are plain data (arrays, lists, dicts, result dataclasses), so the same
host runs in this process (``LocalShards``, one thread per shard for fan-out) or as a Ray actor
(``engine.rayshards``). Both shard sets answer ``call(i, method, ...)`` and ``gather(method, ...)``.

Marker'd writes carry a position (an increasing integer, e.g. an ingest run's rows done): a
shard stores it with the marker, atomically with the write, and ignores a write whose position it
has passed. A write fans out to the shards concurrently, so a crash can leave some shards one
write ahead; a job that resumes from the least advanced shard's marker re-sends its writes, and
the shards that already hold them skip them, so every shard ends with each write exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from index import storage

from .fusion import Fusion
from .results import Record, SearchResult

SHARDED_MANIFEST = "sharded.json"
FORMAT = "vecdex-sharded"
VERSION = 1
MAX_SHARDS = 1024


def shard_name(i: int) -> str:
    return f"shard-{i:03d}"


def shard_of(ids: Sequence[str], n: int) -> np.ndarray:
    """The shard of each id: blake2b (8-byte digest) of its UTF-8 bytes, mod ``n``."""
    out = np.empty(len(ids), dtype=np.int64)
    for j, key in enumerate(ids):
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
        out[j] = int.from_bytes(digest, "little") % n
    return out


def check_shards(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_SHARDS:
        raise ValueError(f"shards must be an integer in 1..{MAX_SHARDS}, got {n!r}")
    return int(n)


def is_sharded(path: Path) -> bool:
    return (path / SHARDED_MANIFEST).is_file()


def write_manifest(path: Path, shards: int, config: dict[str, Any]) -> None:
    """Writes ``sharded.json`` atomically: the collection exists once it is there."""
    body = {
        "format": FORMAT,
        "version": VERSION,
        "shards": shards,
        "hash": "blake2b-64",
        "config": config,
    }
    tmp = path / (SHARDED_MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(body, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / SHARDED_MANIFEST)
    storage.fsync_dir(path)


def read_manifest(path: Path) -> dict[str, Any]:
    """The checked ``sharded.json`` of ``path``; CorruptFileError names what is wrong."""
    from index import CorruptFileError

    file = path / SHARDED_MANIFEST
    try:
        body = json.loads(file.read_bytes())
    except (OSError, ValueError) as e:
        raise CorruptFileError(str(file), f"unreadable sharded manifest: {e}") from None
    ok = (
        isinstance(body, dict)
        and body.get("format") == FORMAT
        and body.get("version") == VERSION
        and body.get("hash") == "blake2b-64"
        and isinstance(body.get("shards"), int)
        and 1 <= body["shards"] <= MAX_SHARDS
        and isinstance(body.get("config"), dict)
    )
    if not ok:
        raise CorruptFileError(str(file), "not a vecdex sharded-collection manifest (version 1)")
    for i in range(body["shards"]):
        if not (path / shard_name(i)).is_dir():
            raise CorruptFileError(str(file), f"shard directory {shard_name(i)} is missing")
    return body


# ---- one shard ------------------------------------------------------------------------------


def _position(marker: dict[str, Any] | None) -> int:
    if isinstance(marker, dict) and isinstance(marker.get("position"), int):
        return int(marker["position"])
    return 0


class ShardHost:
    """One shard's collection behind plain-data methods (in this process or in a Ray actor).

    Opening it replays the shard's log (WAL recovery), so a restarted host serves every write
    the shard acknowledged.
    """

    def __init__(
        self,
        path: str,
        name: str,
        *,
        read_only: bool = False,
        durability: str = "fsync",
        verify: str = "full",
        settings: dict[str, Any] | None = None,
    ) -> None:
        from .collection import Collection

        self.col = Collection.open(
            Path(path),
            name,
            read_only=read_only,
            durability=durability,
            verify=verify,
            **(settings or {}),
        )

    def ping(self) -> int:
        return os.getpid()

    def count(self) -> int:
        return len(self.col)

    def ids(self) -> list[str]:
        return self.col.ids()

    def contains(self, ids: list[str]) -> list[bool]:
        col = self.col
        return [k in col for k in ids]

    def position(self) -> int:
        return _position(self.col.marker)

    def marker(self) -> dict[str, Any] | None:
        """The marker last committed through the shard set (``{"position", "marker"}``)."""
        return self.col.marker

    def write(
        self,
        replace: bool,
        ids: list[str],
        vectors: Any,
        payloads: list[dict[str, Any]],
        texts: list[str] | None,
        marker: dict[str, Any] | None,
        position: int | None,
    ) -> int:
        """Writes one shard's part of a write; with a position the shard has passed, nothing.
        Returns the shard's position after the write."""
        col = self.col
        if position is not None:
            if position <= _position(col.marker):
                return _position(col.marker)
            wrapped = {"position": position, "marker": marker}
            if not ids:
                col.set_marker(wrapped)
                return position
        else:
            wrapped = None
        if ids:
            write = col.upsert if replace else col.add
            write(ids, vectors, payloads, texts=texts, marker=wrapped)
        return _position(col.marker)

    def delete(self, ids: list[str]) -> int:
        return self.col.delete(ids)

    def get(self, ids: list[str]) -> list[Record | None]:
        return self.col.get(ids)

    def search(self, queries: Any, k: int, options: dict[str, Any]) -> SearchResult:
        return self.col.search_batch(queries, k, **options)

    def describe(self) -> dict[str, Any]:
        return self.col.describe()

    def fusion(self) -> dict[str, Any]:
        return self.col.fusion.to_dict()

    def set_fusion(self, args: dict[str, Any]) -> dict[str, Any]:
        a = args
        return self.col.set_fusion(a["method"], a["weight"], a["rrf_k"], a["depth"]).to_dict()

    def setting(self, name: str, value: Any) -> None:
        """Sets ``durability`` or ``checkpoint_bytes`` of the shard's collection."""
        if name not in ("durability", "checkpoint_bytes"):
            raise ValueError(f"unknown shard setting {name!r}")
        setattr(self.col, name, value)

    def reserve(self, n: int) -> None:
        self.col.reserve(n)

    def flush(self) -> None:
        self.col.flush()

    def verify(self) -> int:
        return self.col.verify()

    def refresh(self) -> None:
        self.col.refresh()

    def close(self) -> None:
        self.col.close()

    def adopt_quantizer(self, arrays: dict[str, np.ndarray]) -> None:
        self.col.adopt_quantizer(arrays)

    def quantizer(self) -> dict[str, np.ndarray] | None:
        return self.col.quantizer()


# ---- a set of shards in this process ---------------------------------------------------------


class LocalShards:
    """N ``ShardHost`` in this process; fan-out on one thread per shard."""

    where = "in-process"

    def __init__(self, hosts: list[ShardHost]) -> None:
        self.hosts = hosts
        self.n = len(hosts)
        self._pool = ThreadPoolExecutor(max_workers=self.n, thread_name_prefix="vecdex-shard")

    def call(self, i: int, method: str, *args: Any) -> Future[Any]:
        return self._pool.submit(getattr(self.hosts[i], method), *args)

    def gather(
        self,
        method: str,
        args: Callable[[int], tuple[Any, ...]] | tuple[Any, ...] = (),
        *,
        shards: Sequence[int] | None = None,
        partial: bool = False,
    ) -> tuple[list[Any], list[int]]:
        """Calls ``method`` on each shard (``args`` the same for all, or ``args(i)``): the
        results in shard order, and the shards that could not answer (always empty here:
        an in-process shard fails only by raising, and that error is raised)."""
        which = list(range(self.n)) if shards is None else list(shards)
        if len(which) == 1:
            i = which[0]
            a = args(i) if callable(args) else args
            return [getattr(self.hosts[i], method)(*a)], []
        futures = [self.call(i, method, *(args(i) if callable(args) else args)) for i in which]
        return [f.result() for f in futures], []

    def close(self) -> None:
        self._pool.shutdown(wait=True)


# ---- merging --------------------------------------------------------------------------------


def merge(results: Sequence[SearchResult | None], k: int) -> SearchResult:
    """The exact top-k of each query over per-shard top-k rankings (None: a missing shard).

    A shard's top-k holds every one of its items that can be in the global top-k, so the best
    k of the union is the global top-k. Equal scores keep the lower shard first.
    """
    parts = [r for r in results if r is not None]
    if not parts:
        raise ValueError("no shard answered")
    m = len(parts[0])
    ids = np.concatenate([r.ids for r in parts], axis=1)
    scores = np.concatenate([r.scores for r in parts], axis=1)
    # A result's payloads cover its hits only (they come first): pad each to its width.
    payloads = [
        [p for r in parts for p in [*r.payloads[i], *[{}] * (r.ids.shape[1] - len(r.payloads[i]))]]
        for i in range(m)
    ]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_scores = np.take_along_axis(scores, order, axis=1).astype(np.float32, copy=False)
    out_payloads = [
        [payloads[i][j] for j, doc in zip(order[i], out_ids[i], strict=True) if doc is not None]
        for i in range(m)
    ]
    if out_ids.shape[1] < k:  # fewer than k slots in all: pad to (m, k)
        pad = k - out_ids.shape[1]
        out_ids = np.concatenate([out_ids, np.full((m, pad), None, dtype=object)], axis=1)
        out_scores = np.concatenate(
            [out_scores, np.full((m, pad), -np.inf, dtype=np.float32)], axis=1
        )
    return SearchResult(out_ids, out_scores, out_payloads)


def split_rows(shard: np.ndarray, n: int) -> list[np.ndarray]:
    """The row indices (in input order) that go to each of ``n`` shards."""
    order = np.argsort(shard, kind="stable")
    bounds = np.searchsorted(shard[order], np.arange(n + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n)]


def take_rows(x: np.ndarray, offsets: np.ndarray | None, rows: np.ndarray) -> Any:
    """Rows ``rows`` of a checked write: an (r, dim) array, or r token sets."""
    if offsets is None:
        return x[rows]
    return [x[offsets[j] : offsets[j + 1]] for j in rows]


def fuse(plan: Fusion, dense: SearchResult, lexical: SearchResult, k: int) -> SearchResult:
    """Fuses the merged dense and lexical rankings (ids) as one collection fuses its own."""
    m = len(dense)
    out_ids = np.full((m, k), None, dtype=object)
    out_scores = np.full((m, k), -np.inf, dtype=np.float32)
    out_payloads: list[list[dict[str, Any]]] = []
    for i in range(m):
        # Labels in order of first appearance (dense first): ties fall to the better dense rank.
        label_of: dict[str, int] = {}
        payload_of: dict[str, dict[str, Any]] = {}
        sides = []
        for res in (dense, lexical):
            labels = np.full(res.ids.shape[1], -1, dtype=np.int64)
            for j, hit in enumerate(res[i]):
                labels[j] = label_of.setdefault(hit.id, len(label_of))
                payload_of.setdefault(hit.id, hit.payload)
            sides.append((res.scores[i : i + 1], labels[None, :]))
        scores, labels = plan.fuse(sides[0], sides[1], k)
        names = list(label_of)
        hits = [int(lab) for lab in labels[0] if lab >= 0]
        out_ids[i, : len(hits)] = [names[lab] for lab in hits]
        out_scores[i, : len(hits)] = scores[0, : len(hits)]
        out_payloads.append([payload_of[names[lab]] for lab in hits])
    missing = tuple(sorted(set(dense.missing_shards) | set(lexical.missing_shards)))
    return SearchResult(out_ids, out_scores, out_payloads, missing_shards=missing)
