"""A collection: string ids, vectors (or token sets), payloads and one index, persisted as one
directory.

``Collection`` joins the parts: what it holds in memory (``engine.contents``: ids, items by kind
in ``engine.itemstore``, payloads, indexes), the write path and the log (``engine.writing``),
searches (``engine.searching``), and checkpoints on disk (``engine.checkpoint``); opening replays
the log through ``Collection.replay`` (``engine.replay``).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

import encoders
import index as ix
from index import storage
from index.lexical import BM25Index

from . import catchup, checkpoint, encoding, locking, usage, wal
from .checkpoint import FORMAT_VERSION as FORMAT_VERSION
from .checkpoint import MANIFEST as MANIFEST
from .checkpoint import READABLE_FORMATS as READABLE_FORMATS
from .checkpoint import WAL_DIR as WAL_DIR
from .contents import Contents
from .errors import CollectionExistsError
from .fusion import Fusion
from .replay import Replayer
from .results import Record
from .searching import SearchMixin
from .writing import MAX_MARKER_BYTES as MAX_MARKER_BYTES
from .writing import WriteMixin
from .writing import check_ids as check_ids
from .writing import check_marker as check_marker

log = logging.getLogger(__name__)

CHECKPOINT_BYTES = 64 << 20


class Collection(WriteMixin, SearchMixin):
    """Vectors with string ids and JSON-like payloads, searchable through one index.

    Obtain one from ``Engine.create_collection`` / ``Engine.open_collection``. Every upsert and
    delete goes to the write-ahead log before it applies, and returns once the log is on disk
    (``durability="fsync"``, the default; group commit shares one fsync between concurrent
    writers) or in the OS (``durability="none"``). A checkpoint (``flush()``; automatic once the
    log passes ``checkpoint_bytes`` or ``checkpoint_seconds``, and at ``close()``) writes new files
    atomically and then empties the log; opening replays the log after the last checkpoint.

    Threads: one write at a time, any number of concurrent searches; a search sees a write
    entirely or not at all. One process at a time may open a collection for writing (a lock
    file); others may open it with ``read_only=True``.

    Multi-vector collections (``multi_vector``: a multi-vector index such as ``muvera``, with a
    token encoder or raw ``dim=``) hold one token set per id: ``vectors`` is a list of
    (n_i, dim) arrays, a query is one (m, dim) array (or a text), ``get`` returns the (n_i, dim)
    tokens, and scores are Chamfer (MaxSim) similarities. Everything else is the same.

    Example:
        >>> col = eng.create_collection("docs", dim=3, index="flat")
        >>> col.add(ids=["a"], vectors=[[1, 0, 0]], payloads=[{"year": 2020}])
        >>> col.search([1, 0, 0], k=1)[0].id
        'a'
        >>> mv = eng.create_collection("late", dim=2, index="muvera:inner=flat")
        >>> mv.add(ids=["a"], vectors=[np.eye(2)])
        >>> mv.search(np.eye(2), k=1)[0].id
        'a'
    """

    def __init__(self, path: Path, name: str, config: dict[str, Any]) -> None:
        self.path = path
        self.name = name
        self.dim = int(config["dim"])
        self.metric = ix.Metric.parse(config["metric"])
        lexical = config.get("lexical")
        self.text_field: str | None = config.get("text_field")
        self._contents = Contents(
            ix.from_spec(config["index"], self.dim, self.metric),
            # BM25 over each item's text (``add(texts=...)``, or the payload field ``text_field``).
            BM25Index(**lexical) if lexical is not None else None,
            self.text_field,
        )
        # Whether items are token sets (a multi-vector index) rather than single vectors.
        self.multi_vector = self._contents.items.multi_vector
        self.encoder_spec: str | None = config.get("encoder")
        self._encoder: encoders.Encoder | None = None
        self._fusion = Fusion.from_dict(config["fusion"]) if "fusion" in config else Fusion()
        self._generation = 0
        self._dirty = False
        self._marker: dict[str, Any] | None = None
        # Exclusive for writes, shared for reads, "quiesce" (no writers) for checkpoints.
        self._lock = locking.RWLock()
        self._wal: wal.WalWriter | None = None
        self._claim: locking.Claim | None = None
        self._wal_seq = 0  # the last log record the checkpoint on disk holds
        self._checkpoint_at = time.monotonic()
        self._closed_because: str | None = None  # set: writes raise ReadOnlyError with it
        self.read_only = False
        self.closed = False
        self._files_in_use: set[str] = set()
        self._usage_cache: dict[str, int] = {}  # the rows table's id bytes (``engine.usage``)
        self._durability = "fsync"
        self.checkpoint_bytes = CHECKPOINT_BYTES
        self.checkpoint_seconds: float | None = None
        # Token pruning (``prune=`` on a multi-vector index): counted since this open, not kept.
        self._tokens_in = 0
        self._tokens_kept = 0
        # Background indexing of the rows replayed at open (``engine.catchup``), or None.
        self._catchup: catchup.CatchUp | None = None

    # The in-memory parts under the names they had before ``engine.contents`` (tests read them).
    _index = property(lambda self: self._contents.index)
    _lexical = property(lambda self: self._contents.lexical)
    _payloads = property(lambda self: self._contents.payloads)
    _live_labels = property(lambda self: self._contents.items.live_labels)
    _vectors = property(lambda self: self._contents.items.rows)  # single-vector collections
    _tokens = property(lambda self: self._contents.items.sets)  # multi-vector collections

    # ---- description -------------------------------------------------------------------------
    @property
    def index_spec(self) -> str:
        return self._contents.index.spec

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "dim": self.dim,
            "metric": self.metric.value,
            "index": self._contents.index.spec,
        }
        if self.encoder_spec is not None:
            config["encoder"] = self.encoder_spec
        lexical = self._contents.lexical
        if lexical is not None:
            config["lexical"] = dict(lexical.config)
        if self.text_field is not None:
            config["text_field"] = self.text_field
        if self._fusion != Fusion():
            config["fusion"] = self._fusion.to_dict()
        return config

    @property
    def lexical(self) -> bool:
        """Whether the collection keeps a BM25 index (lexical and hybrid search)."""
        return self._contents.lexical is not None

    @property
    def fusion(self) -> Fusion:
        """The hybrid-search fusion used when a search names none (see ``set_fusion``)."""
        return self._fusion

    @property
    def encoder(self) -> encoders.Encoder | None:
        """The collection's encoder (loaded on first use), or None for raw-vector collections."""
        if self._encoder is None and self.encoder_spec is not None:
            self._encoder = encoding.resolve(self.encoder_spec)
        return self._encoder

    def __len__(self) -> int:
        return len(self._contents)

    def ids(self) -> list[str]:
        """Every id the collection holds, in insertion order of their current version."""
        with self._lock.read():
            return list(self._contents.ids)

    def __contains__(self, id: object) -> bool:
        return str(id) in self._contents.ids

    def __repr__(self) -> str:
        multi = ", multi_vector=True" if self.multi_vector else ""
        return (
            f"Collection({self.name!r}, dim={self.dim}, metric={self.metric.value}, "
            f"index={self.index_spec!r}{multi}, n={len(self)})"
        )

    # ---- reads -------------------------------------------------------------------------------
    def get(self, ids: Any) -> list[Record | None]:
        """Stored items for ``ids``, aligned with them; None where an id is absent.

        ``Record.vector`` is the (dim,) vector, or a multi-vector item's (n_i, dim) tokens."""
        keys = check_ids(ids)
        with self._lock.read():
            return self._contents.get(keys)

    def quantizer(self) -> dict[str, np.ndarray] | None:
        """The trained quantizer of an ``ivf`` or ``pq`` index (copies of its arrays, as
        ``index.train_quantizer`` returns them: what ``adopt_quantizer`` takes), or None while
        it is untrained or for an index of another kind."""
        with self._lock.read():
            idx = self._contents.index
            return idx.quantizer() if isinstance(idx, (ix.IVFIndex, ix.PQIndex)) else None

    def set_fusion(
        self,
        fusion: str | None = None,
        weight: float | None = None,
        rrf_k: float | None = None,
        depth: int | None = None,
    ) -> Fusion:
        """Sets the collection's default hybrid fusion (e.g. one fitted on judged queries by
        ``vecdex eval --fit-fusion``); stored in the manifest at once (a checkpoint).

        Returns:
            The new default ``Fusion``.
        """
        if self._contents.lexical is None:
            raise ValueError(
                f"collection {self.name!r} has no lexical index: there is no hybrid search "
                "whose fusion to set"
            )
        new = Fusion.make(fusion, weight, rrf_k, depth, base=self._fusion)
        self._check_writable()
        with self._lock.quiesce():
            self._check_writable()
            self._fusion = new
            self._dirty = True
            self.flush()
        return new

    # ---- persistence -------------------------------------------------------------------------
    def flush(self) -> None:
        """Writes a checkpoint, then empties the log.

        New files under a new generation (temp name, fsync, rename, fsync the directory), the
        manifest switched last (it records the last log record the checkpoint holds), then the
        log rotated. Writers wait meanwhile; searches go on except while the index saves. A no-op
        when nothing changed, and for a collection that takes no writes.
        """
        with self._lock.quiesce():
            if self._closed_because is not None:
                return
            if not self._dirty and (self.path / MANIFEST).exists():
                return
            if self._catchup is not None:
                self._catchup.finish()  # the checkpoint saves one whole graph
            gen = self._generation + 1
            seq = self._wal.last_seq if self._wal is not None else self._wal_seq
            keep = checkpoint.write(
                self.path,
                gen,
                self._contents,
                exclusive=self._lock,  # an index may compact itself while it saves
                name=self.name,
                config=self.config(),
                wal_seq=seq,
                marker=self._marker,
            )
            self._generation = gen
            self._dirty = False
            self._wal_seq = seq
            self._checkpoint_at = time.monotonic()
            if self._wal is not None:
                self._wal.checkpointed(seq)
            usage.release_freed()
            checkpoint.remove_stale(self.path, keep)

    @classmethod
    def create(
        cls,
        path: Path,
        name: str,
        config: dict[str, Any],
        *,
        durability: str = "fsync",
        checkpoint_bytes: int = CHECKPOINT_BYTES,
        checkpoint_seconds: float | None = None,
    ) -> Collection:
        """Creates a collection in the directory ``path`` and opens it for writing.

        Raises:
            CollectionExistsError: ``path`` holds a collection already.
            CollectionLockedError: another process is creating or writing it.
        """
        durability = wal.check_durability(durability)
        with locking.claimed(path, name) as claim:
            if (path / MANIFEST).exists():
                raise CollectionExistsError(name)
            shutil.rmtree(path / WAL_DIR, ignore_errors=True)  # no manifest: nothing it holds
            col = cls(path, name, config)
            col._set_checkpoints(checkpoint_bytes, checkpoint_seconds)
            col._dirty = True
            col.flush()
            col._start_writing(claim, wal.LogState(next_seq=1), durability)
        return col

    @classmethod
    def open(
        cls,
        path: Path,
        name: str,
        *,
        read_only: bool = False,
        durability: str = "fsync",
        checkpoint_bytes: int = CHECKPOINT_BYTES,
        checkpoint_seconds: float | None = None,
        verify: str = "full",
    ) -> Collection:
        """Opens a collection directory: verifies every file, then replays the log.

        Args:
            path: the collection's directory.
            name: its name.
            read_only: take no lock and write nothing; sees the last checkpoint plus the log.
            durability: ``"fsync"`` (acknowledge writes once the log is on disk) or ``"none"``
                (once it reaches the OS: survives a killed process, not a power cut).
            checkpoint_bytes: checkpoint once the log grows past this many bytes.
            checkpoint_seconds: also checkpoint at the first write this long after the last one.
            verify: ``"full"`` hashes every file against its SHA-256 before use; ``"quick"``
                skips the hash of the memory-mapped vector and token arrays (their size, header
                and shape are still checked), whose pages a search then reads on demand. Files a
                native library parses (hnswlib, faiss) or that load into RAM are always hashed.
                ``verify()`` hashes everything later.

        Raises:
            CorruptFileError: a file fails its checksum, or the log is corrupted before its end;
                the message names the file (and the offset in a log segment).
            CollectionLockedError: another process has it open for writing (unless read-only).
        """
        durability = wal.check_durability(durability)
        with storage.verification(verify):
            if read_only:
                return cls._open_read_only(path, name)
            return cls._open_writable(path, name, durability, checkpoint_bytes, checkpoint_seconds)

    @classmethod
    def _open_writable(
        cls,
        path: Path,
        name: str,
        durability: str,
        checkpoint_bytes: int,
        checkpoint_seconds: float | None,
    ) -> Collection:
        with locking.claimed(path, name) as claim:
            prev = claim.owner()
            if prev is not None:
                prev._supersede(
                    "the collection was opened again for writing in this process; "
                    "use the newer Collection object"
                )
            col, state = cls._load(path, name)
            col._set_checkpoints(checkpoint_bytes, checkpoint_seconds)
            col._start_writing(claim, state, durability)
            checkpoint.remove_stale(path, col._files_in_use)
        col._start_catch_up()
        return col

    @classmethod
    def _open_read_only(cls, path: Path, name: str) -> Collection:
        def manifest_bytes() -> bytes | None:
            try:
                return (path / MANIFEST).read_bytes()
            except OSError:
                return None

        for attempt in range(20):
            before = manifest_bytes()
            try:
                col, _ = cls._load(path, name)
                break
            except (storage.CorruptFileError, FileNotFoundError):
                # A writer's checkpoint replaced files or log segments under us: try again.
                if attempt == 19 or manifest_bytes() == before:
                    raise
        col.read_only = True
        col._closed_because = "it was opened with read_only=True"
        col._start_catch_up()
        return col

    def verify(self) -> int:
        """Hashes every file of the current checkpoint against its manifest (what a full open
        checks, for a collection opened with ``verify="quick"``). Returns the bytes checked.

        Raises:
            CorruptFileError: names the first bad file.
        """
        with self._lock.read():
            return checkpoint.verify(self.path)

    def refresh(self) -> None:
        """Re-reads a read-only collection from disk: the newest checkpoint plus the log."""
        if not self.read_only:
            raise ValueError("refresh() is for read-only collections; a writable one is current")
        fresh = self._open_read_only(self.path, self.name)
        with self._lock:
            for attr in ("_contents", "_generation", "_wal_seq", "_marker"):
                setattr(self, attr, getattr(fresh, attr))
            if self._catchup is not None:
                self._catchup.stop()
            self._catchup, fresh._catchup = fresh._catchup, None
            if self._catchup is not None:
                self._catchup.owner = self

    @classmethod
    def _load(cls, path: Path, name: str) -> tuple[Collection, wal.LogState]:
        """The last checkpoint, verified, with the log after it replayed (nothing written)."""
        m = checkpoint.read_manifest(path)
        try:
            col = cls(path, name, m.config)
        except (KeyError, TypeError, ValueError) as e:
            raise m.invalid(e) from None
        col._files_in_use = checkpoint.load(path, m, col._contents)
        col._generation = m.generation
        col._wal_seq = m.wal_seq
        col._marker = m.marker
        # HNSW: replayed rows wait beside the graph, searched exactly, until a thread started
        # after the open has inserted them (``engine.catchup``).
        waiting = catchup.wrap(col._contents)
        replayer = Replayer(col)
        state = wal.replay(path / WAL_DIR, m.wal_seq, col.dim, replayer.add)
        replayer.flush()
        if waiting is not None and not waiting.waiting:
            col._contents.index = waiting.inner
        if state.records:
            col._dirty = True
            log.info(
                "collection %r: replayed %d log records (%d vectors)",
                name,
                state.records,
                state.vectors,
            )
        usage.release_freed()
        return col, state

    def _start_catch_up(self) -> None:
        idx = self._contents.index
        if isinstance(idx, catchup.CatchUpIndex):
            self._catchup = catchup.CatchUp(self, idx, self.name).start()

    @property
    def unindexed(self) -> int:
        """Items replayed from the log at open that the HNSW graph does not hold yet: they are
        searched exactly (and merged with the graph's results) while a background thread inserts
        them. 0 once the graph has caught up (``wait_indexed``)."""
        c = self._catchup
        return c.waiting if c is not None else 0

    def wait_indexed(self, timeout: float | None = None) -> bool:
        """Waits until the graph holds every item replayed at open (see ``unindexed``).

        Returns:
            True once caught up; False if ``timeout`` seconds passed first, or if the background
            indexing stopped (the collection was closed, or it failed: the rows left are still
            searched exactly, and the next checkpoint indexes them).
        """
        c = self._catchup
        if c is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while not c.wait(0.05):
            if c.error is not None or c.stopped:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

    def close(self) -> None:
        """Checkpoints, closes the log and releases the lock file (reads keep working).

        Writes raise ``ReadOnlyError`` afterwards; ``Engine.open_collection`` opens it anew. A
        checkpoint first finishes indexing the rows replayed at open (``unindexed``); a
        read-only collection stops indexing them (they stay searched exactly).
        """
        try:
            self.flush()
        finally:
            if self._catchup is not None:
                self._catchup.stop()
            with self._lock:
                if self._closed_because is None:
                    self._closed_because = "it was closed"
                self.closed = True
                w, self._wal = self._wal, None
                claim, self._claim = self._claim, None
            try:
                if w is not None:
                    w.close()
            finally:
                if claim is not None:
                    claim.release(self)

    def describe(self) -> dict[str, Any]:
        """Name, config, count, bytes on disk and bytes per component, as ``vecdex info``
        prints it.

        ``memory`` maps each component to ``{"ram": bytes, "disk": bytes}``: ``vectors`` (or
        ``tokens``), ``index``, ``ids``, ``payloads``, ``lexical`` (with a BM25 index), ``log``
        and ``other``; ``index`` and ``lexical`` add ``parts``, the same per part of the index
        (e.g. ``graph``, ``codes``, ``scores``). RAM is what this process holds (numpy arrays by
        their used rows; memory-mapped arrays count 0, being disk-backed; Python dicts and sets
        estimated from a sample); disk sums to ``bytes_on_disk``. See ``engine.usage``. Cheap
        enough to call per request.

        Example:
            >>> col.describe()["memory"]["vectors"]
            {'ram': 12, 'disk': 128}
        """
        with self._lock.read():
            mem = usage.collection_memory(
                self.path, self._generation, self._contents, self._usage_cache
            )
            count = len(self)
            lexical = self._contents.lexical
            lexical_count = len(lexical) if lexical is not None else 0
            idx = self._contents.index
            pruning = (
                {
                    "ratio": idx.prune_ratio,
                    "tokens_stored": idx.num_tokens,
                    "tokens_in": self._tokens_in,
                    "tokens_kept": self._tokens_kept,
                }
                if isinstance(idx, ix.MultiVectorIndex) and idx.prune_ratio > 0
                else None
            )
        size = sum(c["disk"] for c in mem.values())
        return {
            "name": self.name,
            **self.config(),
            "multi_vector": self.multi_vector,
            "count": count,
            **(
                {"lexical_count": lexical_count, "fusion": self._fusion.to_dict()}
                if lexical is not None
                else {}
            ),
            "bytes_on_disk": size,
            "memory": mem,
            **({"pruning": pruning} if pruning is not None else {}),
        }


def remove_tree(path: Path) -> None:
    """Removes a collection directory: renamed away first so a crash never leaves half of one."""
    trash = path.with_name(f".{path.name}.dropped")
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(path, trash)
    storage.fsync_dir(path.parent)
    shutil.rmtree(trash)
