"""The front door: an ``Engine`` is a directory of collections."""

from __future__ import annotations

import atexit
import contextlib
import re
import threading
import weakref
from pathlib import Path
from typing import Any

import index as ix
from encoders import Encoder
from index import storage
from index.lexical import check_config as check_lexical_config

from . import encoding, locking, wal
from . import shards as shards_mod
from .collection import CHECKPOINT_BYTES, MANIFEST, Collection, remove_tree
from .errors import CollectionExistsError, CollectionNotFoundError, ReadOnlyError
from .sharded import ShardedCollection

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

_open_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def check_name(name: Any) -> str:
    """Returns a valid collection name or raises ValueError naming it (no path traversal)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def lexical_config(lexical: Any, text_field: Any, has_encoder: bool) -> dict[str, Any]:
    """The ``lexical`` / ``text_field`` entries of a new collection's config."""
    if text_field is not None:
        if not isinstance(text_field, str) or not text_field or text_field.startswith("_"):
            raise ValueError(
                f"text_field must be a payload field name (not starting with '_'), got "
                f"{text_field!r}"
            )
    if lexical is None:
        lexical = has_encoder or text_field is not None
    if lexical is False:
        if text_field is not None:
            raise ValueError("text_field names the field a lexical index takes: lexical=False")
        return {}
    if lexical is True:
        options: dict[str, Any] = {}
    elif isinstance(lexical, dict):
        options = lexical
    else:
        raise TypeError(f"lexical must be True, False or a dict of options, got {lexical!r}")
    out: dict[str, Any] = {"lexical": check_lexical_config(options)}
    if text_field is not None:
        out["text_field"] = text_field
    return out


def check_kinds(encoder: Encoder, index: str) -> None:
    """Raises ValueError when an encoder and an index spec disagree on vectors per item."""
    multi_index = ix.spec.is_multivector(ix.parse_spec(index)[0])
    if encoder.multi_vector and not multi_index:
        raise ValueError(
            f"encoder {encoder.name!r} is multi-vector (one vector per token) but index "
            f"{index!r} is single-vector: use a multi-vector index "
            f"({', '.join(ix.spec.MULTIVECTOR_REGISTRY)})"
        )
    if multi_index and not encoder.multi_vector:
        raise ValueError(
            f"index {index!r} is multi-vector but encoder {encoder.name!r} gives one vector per "
            f"text: use a single-vector index ({', '.join(ix.spec.REGISTRY)}) or a token encoder"
        )


class Engine:
    """A directory of collections, used in-process.

    Args:
        path: the data directory (created unless ``read_only``).
        read_only: open every collection read-only: no lock files, no log writes, no
            checkpoints; each collection shows its last checkpoint plus its log as of opening
            (``Collection.refresh()`` catches up). Writes raise ``ReadOnlyError``.
        checkpoint_bytes: collections checkpoint once their log passes this size (64 MiB).
        checkpoint_seconds: and at the first write this long after their last checkpoint.
        verify: how opening a collection checks its files: ``"full"`` (every file's SHA-256)
            or ``"quick"`` (memory-mapped vectors and tokens by size and shape only; see
            ``Collection.open`` and ``Collection.verify``).
        ray: where sharded collections host their shards: None (default: in this process,
            one thread per shard for fan-out), ``"local"`` (a Ray cluster vecdex starts on
            this machine, listening on 127.0.0.1 only) or a Ray address (``"ray://..."``,
            ``"host:port"``, ``"auto"``): one Ray actor per shard, restarted by Ray if it dies.
            Needs the ``ray`` extra (``pip install vecdex[ray]``).

    Example:
        >>> eng = Engine("./vecdex-data")
        >>> col = eng.create_collection("docs", dim=384, index="hnsw")
        >>> eng.list_collections()
        ['docs']
    """

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        checkpoint_bytes: int = CHECKPOINT_BYTES,
        checkpoint_seconds: float | None = None,
        verify: str = "full",
        ray: str | None = None,
    ) -> None:
        self.path = Path(path)
        if ray is not None and (not isinstance(ray, str) or not ray.strip()):
            raise ValueError(f"ray must be None, 'local' or a Ray address, got {ray!r}")
        self.ray = ray
        self.verify = storage.check_verify(verify)
        self.read_only = bool(read_only)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{self.path} exists and is not a directory")
        if self.read_only and not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: no such data directory")
        if not self.read_only:
            self.path.mkdir(parents=True, exist_ok=True)
        self._settings: dict[str, Any] = {
            "checkpoint_bytes": checkpoint_bytes,
            "checkpoint_seconds": checkpoint_seconds,
        }
        self._open: dict[str, Collection | ShardedCollection] = {}
        self._open_ro: dict[str, Collection | ShardedCollection] = {}  # read-only snapshots
        self._lock = threading.RLock()
        _open_engines.add(self)

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r})"

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dir(self, name: str) -> Path:
        return self.path / check_name(name)

    def create_collection(
        self,
        name: str,
        *,
        dim: int | None = None,
        encoder: str | Encoder | None = None,
        metric: str = "cosine",
        index: str | None = None,
        exist_ok: bool = False,
        durability: str = "fsync",
        lexical: bool | dict[str, Any] | None = None,
        text_field: str | None = None,
        shards: int | None = None,
    ) -> Any:
        """Creates an empty collection.

        Args:
            name: 1-64 letters, digits, '_' or '-'.
            dim: vector dimension (taken from the encoder when one is given).
            encoder: ``default``, ``token[:...]``, a saved model directory or an ``Encoder``:
                texts go in (``add(texts=...)``, ``search("query")``); stored in the manifest.
                A multi-vector encoder (``token``) needs a multi-vector index.
            metric: ``cosine`` (default), ``ip`` or ``l2`` (not for multi-vector indexes).
            index: an index spec, e.g. ``flat``, ``hnsw:M=32,ef=128``, ``ivf:nlist=1024,pq=32``;
                or a multi-vector one (token sets: one (n_i, dim) array per item), e.g.
                ``muvera:k_sim=5,d_proj=16,r_reps=20``, ``chamfer`` (exhaustive), ``token_ann``.
                Default: ``muvera`` for a multi-vector encoder, else ``hnsw``.
            exist_ok: return the existing collection instead of raising.
            durability: ``"fsync"`` (default): writes return once the log is on disk.
                ``"none"``: once it reaches the OS (survives a killed process, not a power cut;
                for bulk loads). Per open, not stored: see ``Collection.durability``.
            lexical: keep a BM25 index of the items' texts for ``mode="lexical"`` and
                ``"hybrid"`` searches: True, False, or a dict of options (``language``: the
                stemmer, default ``english``, or ``none``; ``stopwords``: ``en``, ``none``...;
                ``k1`` 1.5; ``b`` 0.75; ``method``: ``lucene``, ``robertson`` or ``atire``).
                Default: on for collections with an encoder or a ``text_field``.
            text_field: index this payload field (a string) lexically, instead of the texts
                given to ``add(texts=...)``; works for raw-vector collections too.
            shards: split the collection into this many shards by id hash (a
                ``ShardedCollection``: the same API, searches merged into the exact top-k;
                README "Beyond one machine"). None: one ordinary collection.

        Returns:
            The open ``Collection`` (or ``ShardedCollection``).

        Raises:
            CollectionExistsError: the name is taken (unless ``exist_ok``).
            ValueError: invalid name, dim, metric or index spec, or an encoder and index of
                different kinds (multi-vector vs single-vector).
        """
        path = self._dir(name)
        durability = wal.check_durability(durability)
        if self.read_only:
            raise ReadOnlyError(name, "the engine was opened with read_only=True")
        with self._lock:
            if (path / MANIFEST).exists() or shards_mod.is_sharded(path):
                if exist_ok:
                    return self.open_collection(name, durability=durability)
                raise CollectionExistsError(name)
            if shards is not None:
                shards = shards_mod.check_shards(shards)
            config: dict[str, Any] = {}
            if encoder is not None:
                enc = encoding.resolve(encoder)
                if dim is not None and dim != enc.dim:
                    raise ValueError(f"dim={dim} does not match the encoder's dimension {enc.dim}")
                if index is None:
                    index = "muvera" if enc.multi_vector else "hnsw"
                check_kinds(enc, index)
                dim = enc.dim
                config["encoder"] = enc.name
            if dim is None:
                raise ValueError("give dim= (raw vectors) or encoder= (texts)")
            config.update(lexical_config(lexical, text_field, encoder is not None))
            # Validates dim, metric and spec before anything touches the disk.
            spec = ix.from_spec(index or "hnsw", dim, metric).spec
            config.update(dim=int(dim), metric=ix.Metric.parse(metric).value, index=spec)
            path.mkdir(exist_ok=True)
            if shards is not None:
                return self._create_sharded(path, name, config, shards, durability)
            col = Collection.create(path, name, config, durability=durability, **self._settings)
            self._open[name] = col
            return col

    def _create_sharded(
        self, path: Path, name: str, config: dict[str, Any], n: int, durability: str
    ) -> ShardedCollection:
        """Creates n empty shard collections, then the manifest that makes them one."""
        for i in range(n):
            part = path / shards_mod.shard_name(i)
            if (part / MANIFEST).exists():  # a creation that crashed before its manifest
                remove_tree(part)
            part.mkdir()
            Collection.create(part, f"{name}/{shards_mod.shard_name(i)}", config).close()
        shards_mod.write_manifest(path, n, config)
        col = self._open_sharded(path, name, read_only=False, durability=durability)
        self._open[name] = col
        return col

    def _open_sharded(
        self, path: Path, name: str, *, read_only: bool, durability: str
    ) -> ShardedCollection:
        manifest = shards_mod.read_manifest(path)
        parts = [
            (str(path / shards_mod.shard_name(i)), f"{name}/{shards_mod.shard_name(i)}")
            for i in range(manifest["shards"])
        ]
        options: dict[str, Any] = {
            "read_only": read_only,
            "durability": durability,
            "verify": self.verify,
            "settings": self._settings,
        }
        if self.ray is not None:
            from . import rayshards  # imports ray: only for Ray-hosted shards

            hosts: Any = rayshards.RayShards(parts, options, address=self.ray)
        else:
            opened: list[shards_mod.ShardHost] = []
            try:
                for part, part_name in parts:
                    opened.append(shards_mod.ShardHost(part, part_name, **options))
            except BaseException:
                for host in opened:
                    host.close()
                raise
            hosts = shards_mod.LocalShards(opened)
        col = ShardedCollection(path, name, manifest, hosts)
        col.durability = durability
        return col

    def get_or_create_collection(self, name: str, **kwargs: Any) -> Any:
        return self.create_collection(name, exist_ok=True, **kwargs)

    def open_collection(
        self, name: str, *, read_only: bool | None = None, durability: str | None = None
    ) -> Any:
        """Opens an existing collection (cached: the same object for the same name).

        Opening verifies every file against the manifest and replays the log after the last
        checkpoint. One process at a time may open a collection for writing; opening it again
        for writing in the same process (another ``Engine`` on the same directory) hands the
        writing over to the new object, and the old one becomes read-only.

        Args:
            name: the collection.
            read_only: no lock file, no log writes; sees the last checkpoint plus the log as of
                now. Defaults to the engine's ``read_only``.
            durability: ``"fsync"`` or ``"none"`` (see ``create_collection``); None keeps a
                cached collection's setting, and means ``"fsync"`` for a new open.

        Raises:
            CollectionNotFoundError: no such collection.
            CollectionLockedError: another process has it open for writing.
            index.CorruptFileError: a file fails its checksum or is malformed, or the log is
                corrupted before its end (names the file, and the offset in the log).
        """
        path = self._dir(name)
        ro = self.read_only if read_only is None else bool(read_only)
        if self.read_only and not ro:
            raise ReadOnlyError(name, "the engine was opened with read_only=True")
        with self._lock:
            cache = self._open_ro if ro else self._open
            col = cache.get(name)
            if col is not None and not col.closed and (ro or getattr(col, "writable", True)):
                if durability is not None and not ro:
                    col.durability = durability
                return col
            if shards_mod.is_sharded(path):
                col = self._open_sharded(path, name, read_only=ro, durability=durability or "fsync")
                cache[name] = col
                return col
            if not (path / MANIFEST).exists():
                raise CollectionNotFoundError(name)
            col = Collection.open(
                path,
                name,
                read_only=ro,
                durability=durability or "fsync",
                verify=self.verify,
                **self._settings,
            )
            cache[name] = col
            return col

    def list_collections(self) -> list[str]:
        return sorted(
            p.name
            for p in self.path.iterdir()
            if NAME_RE.match(p.name) and ((p / MANIFEST).is_file() or shards_mod.is_sharded(p))
        )

    def drop_collection(self, name: str) -> None:
        """Deletes a collection and its files. Raises CollectionNotFoundError if absent.

        The open collection object stops taking writes and its log closes first; the lock file
        is held while the directory is removed, so dropping a collection that another process
        has open for writing raises ``CollectionLockedError`` instead.
        """
        path = self._dir(name)
        if self.read_only:
            raise ReadOnlyError(name, "the engine was opened with read_only=True")
        with self._lock:
            if shards_mod.is_sharded(path):
                self._drop_sharded(path, name)
                return
            if not (path / MANIFEST).exists():
                raise CollectionNotFoundError(name)
            self._open.pop(name, None)
            self._open_ro.pop(name, None)
            with locking.claimed(path, name) as claim:
                prev = claim.owner()
                if prev is not None:
                    prev._supersede("the collection was dropped")
                try:
                    remove_tree(path)
                finally:
                    claim.release()

    def _drop_sharded(self, path: Path, name: str) -> None:
        """Closes the open sharded collection, then removes it holding every shard's lock."""
        for cache in (self._open, self._open_ro):
            col = cache.pop(name, None)
            if col is not None:
                col.close()
        with contextlib.ExitStack() as stack:
            for part in sorted(path.glob("shard-*")):
                claim = stack.enter_context(locking.claimed(part, f"{name}/{part.name}"))
                stack.callback(claim.release)
            remove_tree(path)

    def flush(self) -> None:
        """Checkpoints every collection open for writing."""
        with self._lock:
            for col in list(self._open.values()):
                col.flush()

    def close(self) -> None:
        """Checkpoints every open collection, closes its log and releases its lock file."""
        with self._lock:
            cols = [*self._open.values(), *self._open_ro.values()]
            self._open.clear()
            self._open_ro.clear()
        failed: Exception | None = None
        for col in cols:
            try:
                col.close()
            except Exception as e:  # noqa: BLE001 - close the others, then report the first
                failed = failed or e
        if failed is not None:
            raise failed


@atexit.register
def _flush_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for eng in list(_open_engines):
        try:
            eng.flush()
        except Exception:  # noqa: BLE001 - best effort at exit; errors were logged by flush
            pass
