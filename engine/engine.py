"""The front door: an ``Engine`` is a directory of collections."""

from __future__ import annotations

import atexit
import re
import threading
import weakref
from pathlib import Path
from typing import Any

import index as ix
from encoders import Encoder

from . import encoding
from .collection import MANIFEST, Collection, remove_tree
from .errors import CollectionExistsError, CollectionNotFoundError

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


class Engine:
    """A directory of collections, used in-process.

    Example:
        >>> eng = Engine("./vecdex-data")
        >>> col = eng.create_collection("docs", dim=384, index="hnsw")
        >>> eng.list_collections()
        ['docs']
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{self.path} exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, Collection] = {}
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
        index: str = "hnsw",
        exist_ok: bool = False,
    ) -> Collection:
        """Creates an empty collection.

        Args:
            name: 1-64 letters, digits, '_' or '-'.
            dim: vector dimension (taken from the encoder when one is given).
            encoder: ``default``, ``token[:...]``, a saved model directory or an ``Encoder``:
                texts go in (``add(texts=...)``, ``search("query")``); stored in the manifest.
            metric: ``cosine`` (default), ``ip`` or ``l2``.
            index: an index spec, e.g. ``flat``, ``hnsw:M=32,ef=128``, ``ivf:nlist=1024,pq=32``.
            exist_ok: return the existing collection instead of raising.

        Raises:
            CollectionExistsError: the name is taken (unless ``exist_ok``).
            ValueError: invalid name, dim, metric or index spec.
        """
        path = self._dir(name)
        with self._lock:
            if (path / MANIFEST).exists():
                if exist_ok:
                    return self.open_collection(name)
                raise CollectionExistsError(name)
            config: dict[str, Any] = {}
            if encoder is not None:
                enc = encoding.resolve(encoder)
                if dim is not None and dim != enc.dim:
                    raise ValueError(f"dim={dim} does not match the encoder's dimension {enc.dim}")
                if enc.multi_vector:
                    raise ValueError("multi-vector encoders need a multi-vector index (muvera)")
                dim = enc.dim
                config["encoder"] = enc.name
            if dim is None:
                raise ValueError("give dim= (raw vectors) or encoder= (texts)")
            # Validates dim, metric and spec before anything touches the disk.
            spec = ix.from_spec(index, dim, metric).spec
            config.update(dim=int(dim), metric=ix.Metric.parse(metric).value, index=spec)
            path.mkdir(exist_ok=True)
            col = Collection.create(path, name, config)
            self._open[name] = col
            return col

    def get_or_create_collection(self, name: str, **kwargs: Any) -> Collection:
        return self.create_collection(name, exist_ok=True, **kwargs)

    def open_collection(self, name: str) -> Collection:
        """Opens an existing collection (cached: the same object for the same name).

        Raises:
            CollectionNotFoundError: no such collection.
            index.CorruptFileError: a file fails its checksum or is malformed (names the file).
        """
        path = self._dir(name)
        with self._lock:
            col = self._open.get(name)
            if col is not None:
                return col
            if not (path / MANIFEST).exists():
                raise CollectionNotFoundError(name)
            col = Collection.open(path, name)
            self._open[name] = col
            return col

    def list_collections(self) -> list[str]:
        return sorted(
            p.name
            for p in self.path.iterdir()
            if NAME_RE.match(p.name) and (p / MANIFEST).is_file()
        )

    def drop_collection(self, name: str) -> None:
        """Deletes a collection and its files. Raises CollectionNotFoundError if absent."""
        path = self._dir(name)
        with self._lock:
            if not (path / MANIFEST).exists():
                raise CollectionNotFoundError(name)
            self._open.pop(name, None)
            remove_tree(path)

    def flush(self) -> None:
        with self._lock:
            for col in list(self._open.values()):
                col.flush()

    def close(self) -> None:
        """Flushes every open collection."""
        self.flush()
        with self._lock:
            self._open.clear()


@atexit.register
def _flush_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for eng in list(_open_engines):
        try:
            eng.flush()
        except Exception:  # noqa: BLE001 - best effort at exit; errors were logged by flush
            pass
