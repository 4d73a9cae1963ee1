"""A collection: string ids, vectors (or token sets), payloads and one index, persisted as one
directory."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import encoders
import index as ix
from index import storage
from index.labelmap import RowStore
from index.lexical import BM25Index
from index.tokens import TokenStore, check_token_sets
from index.validate import check_k, check_vectors

from . import encoding, locking, persist, wal
from .errors import CollectionExistsError, ReadOnlyError
from .fusion import Fusion, check_mode
from .payloads import PayloadStore, check_payloads
from .persist import FORMAT_VERSION as FORMAT_VERSION
from .persist import READABLE_FORMATS as READABLE_FORMATS
from .replay import Replayer
from .results import Hit, Record, SearchResult

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WAL_DIR = "wal"
CHECKPOINT_BYTES = 64 << 20


MAX_MARKER_BYTES = 65536


def check_marker(marker: Any) -> dict[str, Any]:
    """A marker: a JSON object (finite numbers) of at most 64 KiB, returned as a deep copy."""
    if not isinstance(marker, dict):
        raise TypeError(f"marker must be a dict (a JSON object), got {type(marker).__name__}")
    try:
        text = json.dumps(marker, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"marker is not JSON-serialisable: {e}") from None
    if len(text) > MAX_MARKER_BYTES:
        raise ValueError(f"marker is {len(text)} bytes of JSON, at most {MAX_MARKER_BYTES}")
    out: dict[str, Any] = json.loads(text)
    return out


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
        self._index = ix.from_spec(config["index"], self.dim, self.metric)
        # Whether items are token sets (a multi-vector index) rather than single vectors.
        self.multi_vector = isinstance(self._index, ix.MultiVectorIndex)
        self.encoder_spec: str | None = config.get("encoder")
        self._encoder: encoders.Encoder | None = None
        self._vectors = RowStore(self.dim)  # single-vector collections
        # Multi-vector collections: the tokens as written (the index keeps float16 copies).
        self._tokens = TokenStore(self.dim, dtype=np.float32)
        self._payloads = PayloadStore()
        # BM25 over each item's text (``add(texts=...)``, or the payload field ``text_field``).
        lexical = config.get("lexical")
        self._lexical = BM25Index(**lexical) if lexical is not None else None
        self.text_field: str | None = config.get("text_field")
        self._fusion = Fusion.from_dict(config["fusion"]) if "fusion" in config else Fusion()
        self._label_of: dict[str, int] = {}
        self._id_of = np.empty(0, dtype=object)
        self._next_label = 0
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
        self._durability = "fsync"
        self.checkpoint_bytes = CHECKPOINT_BYTES
        self.checkpoint_seconds: float | None = None

    # ---- description -------------------------------------------------------------------------
    @property
    def index_spec(self) -> str:
        return self._index.spec

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "dim": self.dim,
            "metric": self.metric.value,
            "index": self._index.spec,
        }
        if self.encoder_spec is not None:
            config["encoder"] = self.encoder_spec
        if self._lexical is not None:
            config["lexical"] = dict(self._lexical.config)
        if self.text_field is not None:
            config["text_field"] = self.text_field
        if self._fusion != Fusion():
            config["fusion"] = self._fusion.to_dict()
        return config

    @property
    def lexical(self) -> bool:
        """Whether the collection keeps a BM25 index (lexical and hybrid search)."""
        return self._lexical is not None

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

    def ids(self) -> list[str]:
        """Every id the collection holds, in insertion order of their current version."""
        with self._lock.read():
            return list(self._label_of)

    def __contains__(self, id: object) -> bool:
        return str(id) in self._label_of

    def __repr__(self) -> str:
        multi = ", multi_vector=True" if self.multi_vector else ""
        return (
            f"Collection({self.name!r}, dim={self.dim}, metric={self.metric.value}, "
            f"index={self.index_spec!r}{multi}, n={len(self)})"
        )

    # ---- writes ------------------------------------------------------------------------------
    def add(
        self,
        ids: Any,
        vectors: Any = None,
        payloads: Sequence[Any] | None = None,
        *,
        texts: Sequence[str] | None = None,
        marker: dict[str, Any] | None = None,
    ) -> None:
        """Adds new items; fails (changing nothing) if any id already exists.

        Args:
            ids: n distinct string (or int) ids.
            vectors: (n, dim) finite floats (a multi-vector collection: n (n_i, dim) arrays of
                at least one token each); or give ``texts`` to a collection with an encoder.
            payloads: optional n JSON-like dicts.
            texts: n non-empty documents, encoded with the collection's encoder and indexed
                lexically (BM25) when the collection keeps a lexical index. Given together
                with ``vectors``, the vectors are stored as they are and the texts only
                indexed lexically (a pipeline that encodes elsewhere).
            marker: optional JSON object committed atomically with this write; ``marker``
                returns the last one committed (see ``set_marker``).

        Raises:
            ValueError: on an existing or duplicate id, wrong dimension, NaN/inf, empty batch
                (or a token set without tokens).
        """
        self._write(ids, *self._vectors_and_texts(vectors, texts, "add"), payloads, False, marker)

    def upsert(
        self,
        ids: Any,
        vectors: Any = None,
        payloads: Sequence[Any] | None = None,
        *,
        texts: Sequence[str] | None = None,
        marker: dict[str, Any] | None = None,
    ) -> None:
        """Adds items, replacing the vector, payload (and text) of ids that already exist."""
        self._write(ids, *self._vectors_and_texts(vectors, texts, "upsert"), payloads, True, marker)

    def _vectors_and_texts(
        self, vectors: Any, texts: Any, what: str
    ) -> tuple[Any, list[str] | None]:
        """(vectors to store, texts for the lexical index or None)."""
        if texts is not None and vectors is not None:
            if self._lexical is None or self.text_field is not None:
                why = (
                    f"its lexical index takes the payload field {self.text_field!r}"
                    if self.text_field is not None
                    else "this collection keeps no lexical index"
                )
                raise ValueError(
                    f"give exactly one of vectors= or texts= to {what} (both together index "
                    f"the texts lexically only, and {why})"
                )
            return vectors, encoders.check_texts(texts, "texts")
        vectors = encoding.texts_or_vectors(vectors, texts, self.encoder, what)
        return vectors, (list(texts) if texts is not None and self._lexical is not None else None)

    def _lexical_texts(
        self, rows: list[dict[str, Any]], texts: list[str] | None
    ) -> list[str | None] | None:
        """What the lexical index takes for each item: its text, or None (not indexed)."""
        if self._lexical is None:
            return None
        if self.text_field is None:
            return None if texts is None else list(texts)
        out: list[str | None] = []
        for i, row in enumerate(rows):
            value = row.get(self.text_field)
            if value is not None and not isinstance(value, str):
                raise ValueError(
                    f"payload {i}: field {self.text_field!r} is the collection's text field and "
                    f"must be a string, got {type(value).__name__}"
                )
            out.append(value if value is not None and value.strip() else None)
        return out

    def _write(
        self,
        ids: Any,
        vectors: Any,
        texts: list[str] | None,
        payloads: Sequence[Any] | None,
        replace: bool,
        marker: dict[str, Any] | None = None,
    ) -> None:
        keys = check_ids(ids)
        if marker is not None:
            marker = check_marker(marker)
        offsets: np.ndarray | None = None
        if self.multi_vector:
            x, offsets = check_token_sets(vectors, self.dim, "vectors")
            if offsets.shape[0] - 1 != len(keys):
                raise ValueError(f"got {offsets.shape[0] - 1} token sets for {len(keys)} ids")
        else:
            x = check_vectors(vectors, self.dim)
            if x.shape[0] != len(keys):
                raise ValueError(f"got {x.shape[0]} vectors for {len(keys)} ids")
        rows = check_payloads(payloads, len(keys))
        if texts is not None and len(texts) != len(keys):
            raise ValueError(f"got {len(texts)} texts for {len(keys)} ids")
        lex_texts = self._lexical_texts(rows, texts)
        self._check_writable()
        lengths = None if offsets is None else np.diff(offsets)
        body = wal.encode_upsert(keys, x, rows, lengths, marker, texts=texts)
        with self._lock:
            self._check_writable()
            if not replace:
                for k in keys:
                    if k in self._label_of:
                        raise ValueError(f"id {k!r} already exists (use upsert to replace it)")
            schema = self._payloads.check_types(rows)
            # Everything that can reject the call has run: a logged record always replays.
            seq = self._log(wal.UPSERT, body)
            with self._failing_write():
                self._apply_upsert(keys, x, rows, schema, offsets, lex_texts)
            if marker is not None:
                self._marker = marker
        self._commit(seq)

    def reserve(self, n: int) -> None:
        """A hint that the collection will hold about ``n`` items (a bulk load knows): the
        vector store and the index allocate once instead of growing by copying."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"reserve takes a non-negative item count, got {n!r}")
        with self._lock:
            if isinstance(self._index, ix.Index):
                self._vectors.reserve(int(n))
                self._index.reserve(int(n))

    @property
    def marker(self) -> dict[str, Any] | None:
        """The last marker committed (by ``set_marker`` or a write's ``marker=``), or None.

        A marker is how a job that feeds a collection resumes exactly: it commits its position
        in its input with each batch, atomically with the batch (one log record), so after a
        crash the marker read back names exactly the batches that survived.
        """
        return copy.deepcopy(self._marker)

    def set_marker(self, marker: dict[str, Any]) -> None:
        """Commits ``marker`` (a JSON object of at most 64 KiB) without writing any item."""
        marker = check_marker(marker)
        self._check_writable()
        body = wal.encode_mark(marker)
        with self._lock:
            self._check_writable()
            seq = self._log(wal.MARK, body)
            self._marker = marker
            self._dirty = True
        self._commit(seq)

    def _apply_upsert(
        self,
        keys: list[str],
        x: np.ndarray,
        rows: list[dict[str, Any]],
        schema: pa.Schema,
        offsets: np.ndarray | None = None,
        texts: list[str | None] | None = None,
    ) -> None:
        """Applies a validated upsert to memory (caller holds the write lock). ``x`` is (n, dim)
        vectors, or for a multi-vector collection the sets' tokens with their ``offsets``;
        ``texts`` what the lexical index takes (``_lexical_texts``)."""
        if self.multi_vector != (offsets is not None):
            raise ValueError(
                "token sets for a single-vector collection"
                if offsets is not None
                else "single vectors (no token counts) for a multi-vector collection"
            )
        old = [self._label_of[k] for k in keys if k in self._label_of]
        if old:
            self._drop_labels(np.asarray(old, dtype=np.int64))
        labels = np.arange(self._next_label, self._next_label + len(keys), dtype=np.int64)
        if offsets is not None:
            self._index.add(np.split(x, offsets[1:-1]), labels)
            self._tokens.append(x, offsets, labels)
        else:
            self._index.add(x, labels)
            self._vectors.append(x, labels)
        self._next_label += len(keys)
        if self._lexical is not None and texts is not None:
            has = [i for i, t in enumerate(texts) if t is not None]
            if has:
                self._lexical.add([texts[i] for i in has], labels[has])  # type: ignore[misc]
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
        self._check_writable()
        with self._lock:
            self._check_writable()
            present = [k for k in keys if k in self._label_of]
            if not present:
                return 0
            seq = self._log(wal.DELETE, wal.encode_delete(present))
            with self._failing_write():
                self._apply_delete(present)
        self._commit(seq)
        return len(present)

    def _apply_delete(self, keys: list[str]) -> None:
        labels = [self._label_of.pop(k) for k in keys if k in self._label_of]
        if labels:
            self._drop_labels(np.asarray(labels, dtype=np.int64))
            self._dirty = True

    def _drop_labels(self, labels: np.ndarray) -> None:
        for lab in labels.tolist():
            key = self._id_of[lab]
            if self._label_of.get(key) == lab:
                del self._label_of[key]
            self._id_of[lab] = None
        self._index.remove(labels)
        if self.multi_vector:
            self._tokens.remove(labels)
        else:
            self._vectors.remove(labels)
        self._payloads.remove(labels)
        if self._lexical is not None:
            self._lexical.remove(labels)

    # ---- the log -----------------------------------------------------------------------------
    @property
    def durability(self) -> str:
        """``"fsync"``: writes return once the log is on disk; ``"none"``: once it reaches the OS
        (a killed process loses nothing, a power cut may). Settable, e.g. ``"none"`` for a bulk
        load and back to ``"fsync"``, which first makes everything logged so far durable."""
        return self._durability

    @durability.setter
    def durability(self, value: str) -> None:
        value = wal.check_durability(value)
        with self._lock:
            if self._wal is not None:
                self._wal.set_sync(value == "fsync")
            self._durability = value

    @property
    def writable(self) -> bool:
        """Whether writes are accepted (False when read-only, closed or superseded)."""
        return self._closed_because is None

    def _check_writable(self) -> None:
        if self._closed_because is not None:
            raise ReadOnlyError(self.name, self._closed_because)

    def _log(self, kind: int, body: bytes) -> int:
        if self._wal is None:
            raise ReadOnlyError(self.name, "it is not open for writing")
        return self._wal.append(kind, body)

    @contextlib.contextmanager
    def _failing_write(self) -> Iterator[None]:
        try:
            yield
        except BaseException as e:
            # The record is in the log but memory holds part of it: take no more writes, so no
            # checkpoint persists the half; reopening replays the log.
            self._closed_because = f"a write failed half-way ({e!r}); reopen the collection"
            log.error("collection %r: %s", self.name, self._closed_because)
            raise

    def _commit(self, seq: int) -> None:
        """Returns once record ``seq`` is durable (group commit); checkpoints if one is due."""
        w = self._wal
        if w is None:
            return  # superseded or closed meanwhile: closing the log made the record durable
        w.wait(seq)
        if self._checkpoint_due(w):
            with self._lock.quiesce():
                if self._wal is w and self._checkpoint_due(w):
                    self.flush()

    def _checkpoint_due(self, w: wal.WalWriter) -> bool:
        if w.bytes >= self.checkpoint_bytes:
            return True
        return (
            self.checkpoint_seconds is not None
            and w.bytes > 0
            and time.monotonic() - self._checkpoint_at >= self.checkpoint_seconds
        )

    # ---- reads -------------------------------------------------------------------------------
    def get(self, ids: Any) -> list[Record | None]:
        """Stored items for ``ids``, aligned with them; None where an id is absent.

        ``Record.vector`` is the (dim,) vector, or a multi-vector item's (n_i, dim) tokens."""
        keys = check_ids(ids)
        with self._lock.read():
            out: list[Record | None] = []
            for k in keys:
                lab = self._label_of.get(k)
                if lab is None:
                    out.append(None)
                    continue
                if self.multi_vector:
                    vector = self._tokens.get(lab)
                else:
                    vector = self._vectors.x[self._vectors.row_of(np.array([lab]))[0]].copy()
                out.append(Record(k, vector, dict(self._payloads.get(lab))))
            return out

    def _one_token_set(self, q: Any) -> np.ndarray:
        try:
            arr = np.asarray(q, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise TypeError(f"the query must be an (m, {self.dim}) array or a text: {e}") from None
        if arr.ndim != 2:
            raise ValueError(
                f"search takes one query token set of shape (m, {self.dim}) in a multi-vector "
                f"collection, got shape {arr.shape}; use search_batch for several"
            )
        return arr

    def _allowed(self, where: dict[str, Any] | None) -> np.ndarray | None:
        if where is None:
            return None
        if not isinstance(where, dict):
            raise TypeError(f"where must be a dict, got {type(where).__name__}")
        if not where:
            return None
        return self._payloads.matching(where, self._live_labels)

    def _live_labels(self) -> np.ndarray:
        store = self._tokens if self.multi_vector else self._vectors
        return store.live_labels()

    def search(
        self,
        vector: Any = None,
        k: int = 10,
        *,
        where: dict[str, Any] | None = None,
        mode: str = "dense",
        text: str | None = None,
        fusion: str | None = None,
        weight: float | None = None,
        rrf_k: float | None = None,
        depth: int | None = None,
        **params: Any,
    ) -> list[Hit]:
        """The k best matches for one query: a vector, or a text for a collection with an encoder.

        Args:
            vector: (dim,) floats (a multi-vector collection: one (m, dim) token set), or a
                query string.
            k: how many hits, > 0.
            where: optional payload filter, e.g. ``{"year": {"$gte": 2021}}``; applies exactly
                in every mode.
            mode: ``"dense"`` (default: the vector index), ``"lexical"`` (BM25 over the items'
                texts) or ``"hybrid"`` (both, fused). Lexical and hybrid need a collection with
                a lexical index, and a query text: ``vector`` itself, or ``text=`` beside a
                query vector.
            text: the query text for the lexical side when ``vector`` is a vector.
            fusion: hybrid only: ``"rrf"`` or ``"weighted"`` (default: the collection's,
                see ``set_fusion``; ``engine.fusion`` documents both).
            weight: hybrid only: the dense side's weight in [0, 1].
            rrf_k: hybrid ``rrf`` only: the rank offset (default 60).
            depth: hybrid only: how many results each side contributes (at least k).
            **params: index search parameters (``ef`` for hnsw, ``nprobe`` for ivf;
                ``candidates``, ``tau``, ``inner_ef``... for muvera).

        Returns:
            Up to k ``Hit(id, score, payload)``, best first. Scores are the index's similarity
            (dense), BM25 (lexical) or the fused score (hybrid).

        Raises:
            ValueError: an unknown mode or fusion, a weight outside [0, 1], an empty query
                text, or a lexical / hybrid query on a collection without a lexical index.

        Example:
            >>> col.search("protein folding", k=5, mode="hybrid", fusion="rrf")
        """
        if mode != "dense":
            mode = check_mode(mode)  # "DENSE", " dense" are dense too
        if mode != "dense" or text is not None or fusion is not None or weight is not None:
            res = self._search_modes(
                vector,
                [text] if text is not None else None,
                k,
                where,
                mode,
                batch=False,
                fusion=self._fusion_for(mode, fusion, weight, rrf_k, depth),
                params=params,
            )
            return res[0]
        if rrf_k is not None or depth is not None:
            _no_fusion(fusion, weight, rrf_k, depth)
        q: Any = self._query_vectors(vector, batch=False)
        if self.multi_vector:
            q = [self._one_token_set(q)]
        else:
            q = np.asarray(q, dtype=np.float32)
            if q.ndim != 1:
                raise ValueError(
                    f"search takes one vector of shape ({self.dim},), got {q.shape}; "
                    "use search_batch"
                )
        k = check_k(k)
        with self._lock.read():
            allowed = self._allowed(where)
            scores, labels = self._index.search(q, k, allowed=allowed, **params)
            id_of, payload = self._id_of, self._payloads.by_label.get
            return [
                Hit(id_of[lab], s, dict(payload(lab, ())))
                for s, lab in zip(scores[0].tolist(), labels[0].tolist(), strict=True)
                if lab >= 0
            ]

    def search_batch(
        self,
        vectors: Any = None,
        k: int = 10,
        *,
        where: dict[str, Any] | None = None,
        mode: str = "dense",
        texts: Sequence[str] | None = None,
        fusion: str | None = None,
        weight: float | None = None,
        rrf_k: float | None = None,
        depth: int | None = None,
        **params: Any,
    ) -> SearchResult:
        """The k best matches for each of m queries (vectors, or texts with an encoder):
        ``.ids`` and ``.scores`` (m, k). A multi-vector collection takes a list of (m_j, dim)
        token sets (or texts). ``mode``, ``texts`` (the lexical side's query texts beside
        query vectors) and the fusion arguments are those of ``search``."""
        if mode != "dense":
            mode = check_mode(mode)
        if mode != "dense" or texts is not None or fusion is not None or weight is not None:
            return self._search_modes(
                vectors,
                texts,
                k,
                where,
                mode,
                batch=True,
                fusion=self._fusion_for(mode, fusion, weight, rrf_k, depth),
                params=params,
            )
        if rrf_k is not None or depth is not None:
            _no_fusion(fusion, weight, rrf_k, depth)
        q = self._query_vectors(vectors, batch=True)
        if not self.multi_vector:
            q = check_vectors(q, self.dim, "queries")
        k = check_k(k)
        with self._lock.read():
            allowed = self._allowed(where)
            scores, labels = self._index.search(q, k, allowed=allowed, **params)
            return self._result(scores, labels)

    def _result(self, scores: np.ndarray, labels: np.ndarray) -> SearchResult:
        """(scores, labels) -> ids and payloads (caller holds the read lock)."""
        ids = np.full(labels.shape, None, dtype=object)
        found = labels >= 0
        ids[found] = self._id_of[labels[found]]
        get = self._payloads.get
        payloads = [[dict(get(lab)) for lab in row if lab >= 0] for row in labels.tolist()]
        return SearchResult(ids, scores, payloads)

    def _search_modes(
        self,
        queries: Any,
        texts: Sequence[str] | None,
        k: int,
        where: dict[str, Any] | None,
        mode: str,
        *,
        batch: bool,
        fusion: Fusion | None,
        params: dict[str, Any],
    ) -> SearchResult:
        """Lexical and hybrid search (and dense search given ``text=``, which is refused)."""
        mode = check_mode(mode)
        if mode == "dense":
            raise ValueError(
                "a query text beside the query (text= / texts=) is the lexical side's query: "
                "it needs mode='lexical' or 'hybrid'"
            )
        lexical = self._lexical
        if lexical is None:
            raise ValueError(
                f"collection {self.name!r} has no lexical index, so it cannot run a {mode} "
                "search: create it with lexical=True (the default for collections with an "
                "encoder) or text_field=, and add texts"
            )
        k = check_k(k)
        is_text = _are_texts(queries, batch)
        if texts is not None:
            if is_text:
                raise ValueError(
                    "give the query text once: as the query itself or as text(s)=, not both"
                )
            texts = encoders.check_texts(texts, "query texts")
        elif is_text:
            texts = encoders.check_texts([queries] if not batch else queries, "query texts")
        else:
            raise ValueError(
                f"a {mode} search needs a query text: search with a string, or give "
                "text= (texts= for search_batch) beside the query vector"
            )
        if mode == "lexical" and queries is not None and not is_text:
            raise ValueError("a lexical search takes a query text, not a vector")
        q: Any = None
        if mode == "hybrid":
            q = self._query_vectors(queries, batch=batch) if queries is not None else None
            if q is None:
                raise ValueError("a hybrid search needs a query vector or a text to encode")
            if not batch:
                q = [self._one_token_set(q)] if self.multi_vector else np.asarray(q, np.float32)
                if not self.multi_vector and q.ndim != 1:
                    raise ValueError(f"search takes one vector of shape ({self.dim},)")
            if not self.multi_vector:
                q = check_vectors(q, self.dim, "queries")
            n = len(q) if self.multi_vector else q.shape[0]
            if n != len(texts):
                raise ValueError(f"{n} query vectors for {len(texts)} query texts")
        with self._lock.read():
            allowed = self._allowed(where)
            if mode == "lexical":
                scores, labels = lexical.search(list(texts), k, allowed=allowed)
            else:
                assert fusion is not None
                depth = max(k, fusion.depth)
                dense = self._index.search(q, depth, allowed=allowed, **params)
                lex = lexical.search(list(texts), depth, allowed=allowed)
                scores, labels = fusion.fuse(dense, lex, k)
            return self._result(scores, labels)

    def _fusion_for(
        self, mode: str, fusion: Any, weight: Any, rrf_k: Any, depth: Any
    ) -> Fusion | None:
        if check_mode(mode) == "hybrid":
            return Fusion.make(fusion, weight, rrf_k, depth, base=self._fusion)
        _no_fusion(fusion, weight, rrf_k, depth)
        return None

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
        if self._lexical is None:
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
            gen = self._generation + 1
            rows_name, index_name = persist.rows_name(gen), f"index.{gen}"
            if self.multi_vector:
                tokens, offsets, labels = self._tokens.live()
                data = persist.save_tokens(self.path, gen, tokens, offsets)
            else:
                x, labels = self._live_rows()
                data = persist.save_vectors(self.path, gen, x)
            persist.save_rows(self.path / rows_name, self._rows_table(labels))
            index_dir = self.path / index_name
            if index_dir.exists():
                shutil.rmtree(index_dir)
            lexical_name = f"lexical.{gen}"
            with self._lock:  # exclusive: an index may compact itself while it saves
                self._index.save(index_dir)
                if self._lexical is not None:
                    # Rebuilt over the live documents: statistics exact again from here on.
                    self._lexical.save(self.path / lexical_name)
            storage.fsync_dir(index_dir)
            seq = self._wal.last_seq if self._wal is not None else self._wal_seq
            manifest = {
                "format_version": persist.format_version(
                    self.multi_vector, self._lexical is not None
                ),
                "name": self.name,
                "config": self.config(),
                "count": len(self),
                "next_label": self._next_label,
                "generation": gen,
                "index_dir": index_name,
                **({"lexical_dir": lexical_name} if self._lexical is not None else {}),
                "files": {n: storage.file_entry(self.path / n) for n in (*data, rows_name)},
                "versions": ix.base.library_versions(),
                "wal_seq": seq,
                "marker": self._marker,
            }
            storage.write_manifest(self.path, MANIFEST, manifest)
            self._generation = gen
            self._dirty = False
            self._wal_seq = seq
            self._checkpoint_at = time.monotonic()
            if self._wal is not None:
                self._wal.checkpointed(seq)
            keep = {*data, rows_name, index_name, MANIFEST, WAL_DIR}
            if self._lexical is not None:
                keep.add(lexical_name)
            self._remove_stale(keep=keep)

    def _live_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, labels) of live rows, without compacting: searches may be reading them."""
        v = self._vectors
        if v.has_dead():
            keep = v.alive[: v.n]
            return v.x[: v.n][keep], v.lab[: v.n][keep]
        return v.x[: v.n], v.lab[: v.n]

    def _rows_table(self, labels: np.ndarray) -> pa.Table:
        ids = self._id_of[labels].tolist() if labels.size else []
        get = self._payloads.get
        schema = pa.schema(
            [pa.field("_label", pa.int64()), pa.field("_id", pa.string()), *self._payloads.schema]
        )
        if not len(self._payloads.schema):  # no payloads: columns straight from the arrays
            return pa.table(
                [pa.array(labels, pa.int64()), pa.array(ids, pa.string())], schema=schema
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

        Raises:
            CorruptFileError: a file fails its checksum, or the log is corrupted before its end;
                the message names the file (and the offset in a log segment).
            CollectionLockedError: another process has it open for writing (unless read-only).
        """
        durability = wal.check_durability(durability)
        if read_only:
            return cls._open_read_only(path, name)
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
            col._remove_stale(keep=col._files_in_use)
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
        return col

    def refresh(self) -> None:
        """Re-reads a read-only collection from disk: the newest checkpoint plus the log."""
        if not self.read_only:
            raise ValueError("refresh() is for read-only collections; a writable one is current")
        fresh = self._open_read_only(self.path, self.name)
        with self._lock:
            for attr in (
                "_index",
                "_vectors",
                "_tokens",
                "_payloads",
                "_lexical",
                "_label_of",
                "_id_of",
                "_next_label",
                "_generation",
                "_wal_seq",
                "_marker",
            ):
                setattr(self, attr, getattr(fresh, attr))

    def _set_checkpoints(self, checkpoint_bytes: int, checkpoint_seconds: float | None) -> None:
        if isinstance(checkpoint_bytes, bool) or not isinstance(checkpoint_bytes, int):
            raise TypeError(f"checkpoint_bytes must be an int, got {checkpoint_bytes!r}")
        if checkpoint_bytes <= 0:
            raise ValueError(f"checkpoint_bytes must be positive, got {checkpoint_bytes}")
        if checkpoint_seconds is not None and not checkpoint_seconds > 0:
            raise ValueError(f"checkpoint_seconds must be positive, got {checkpoint_seconds}")
        self.checkpoint_bytes = checkpoint_bytes
        self.checkpoint_seconds = checkpoint_seconds

    def _start_writing(self, claim: locking.Claim, state: wal.LogState, durability: str) -> None:
        self._wal = wal.WalWriter(self.path / WAL_DIR, state, sync=durability == "fsync")
        self._durability = durability
        self._claim = claim
        claim.give_to(self)

    def _supersede(self, reason: str) -> None:
        """Stops taking writes (another object owns the collection now); reads keep working."""
        with self._lock:
            self._closed_because = reason
            w, self._wal = self._wal, None
            self._claim = None
        if w is not None:
            w.close()

    @classmethod
    def _load(cls, path: Path, name: str) -> tuple[Collection, wal.LogState]:
        """The last checkpoint, verified, with the log after it replayed (nothing written)."""
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
            index_dir = path / str(manifest["index_dir"])
            lexical_dir = manifest.get("lexical_dir")
            files = manifest["files"]
            col = cls(path, name, config)
        except (KeyError, TypeError, ValueError) as e:
            raise storage.CorruptFileError(mpath, f"invalid manifest: {e}") from None
        version = manifest["format_version"]
        misfit = persist.check_format(version, col.multi_vector, col._lexical is not None)
        if misfit is not None:
            raise storage.CorruptFileError(
                mpath,
                f"format_version {version} does not fit a collection with {misfit} "
                f"(index {col.index_spec!r})",
            )
        data, rows_name = persist.data_names(gen, col.multi_vector), persist.rows_name(gen)
        if set(files) != {*data, rows_name}:
            raise storage.CorruptFileError(
                mpath, f"manifest files {sorted(files)} do not match generation {gen}"
            )
        storage.verify_files(path, files)
        if col.multi_vector:
            tokens, offsets = persist.load_tokens(path, gen, count, col.dim)
        else:
            x = persist.load_vectors(path, gen, count, col.dim)
        table, labels, ids = persist.load_rows(path / rows_name, count, next_label)
        col._index = persist.load_index(index_dir, col.index_spec, col.dim, count, labels)
        if col._lexical is not None:
            if not isinstance(lexical_dir, str) or not lexical_dir.startswith("lexical."):
                raise storage.CorruptFileError(mpath, "config has a lexical index, no lexical_dir")
            col._lexical = persist.load_lexical(path / lexical_dir, col._lexical.config, labels)
        if col.multi_vector:
            col._tokens.install(tokens, offsets, labels)
        else:
            col._vectors.load(x, labels)
        col._payloads.load(labels, table)
        col._label_of = dict(zip(ids, labels.tolist(), strict=True))
        col._id_of = np.empty(next_label, dtype=object)
        col._id_of[labels] = ids
        col._next_label = next_label
        col._generation = gen
        col._wal_seq = wal_seq
        col._marker = marker
        col._files_in_use = {*data, rows_name, index_dir.name, MANIFEST, WAL_DIR}
        if col._lexical is not None:
            col._files_in_use.add(str(lexical_dir))
        replayer = Replayer(col)
        state = wal.replay(path / WAL_DIR, wal_seq, col.dim, replayer.add)
        replayer.flush()
        if state.records:
            col._dirty = True
            log.info(
                "collection %r: replayed %d log records (%d vectors)",
                name,
                state.records,
                state.vectors,
            )
        return col, state

    def close(self) -> None:
        """Checkpoints, closes the log and releases the lock file (reads keep working).

        Writes raise ``ReadOnlyError`` afterwards; ``Engine.open_collection`` opens it anew.
        """
        try:
            self.flush()
        finally:
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
        """Name, config, count and bytes on disk, as ``vecdex info`` prints it."""
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {
            "name": self.name,
            **self.config(),
            "multi_vector": self.multi_vector,
            "count": len(self),
            **(
                {"lexical_count": len(self._lexical), "fusion": self._fusion.to_dict()}
                if self._lexical is not None
                else {}
            ),
            "bytes_on_disk": size,
        }


def _are_texts(queries: Any, batch: bool) -> bool:
    if not batch:
        return isinstance(queries, str)
    return isinstance(queries, (list, tuple)) and bool(queries) and isinstance(queries[0], str)


def _no_fusion(*given: Any) -> None:
    """Fusion arguments belong to hybrid searches; anywhere else they are a mistake."""
    if any(g is not None for g in given):
        raise ValueError("fusion, weight, rrf_k and depth apply to mode='hybrid' only")


def remove_tree(path: Path) -> None:
    """Removes a collection directory: renamed away first so a crash never leaves half of one."""
    trash = path.with_name(f".{path.name}.dropped")
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(path, trash)
    storage.fsync_dir(path.parent)
    shutil.rmtree(trash)
