"""A collection's write path: checked writes, the write-ahead log they go to first, group commit,
when to checkpoint, and why a collection refuses writes (``WriteMixin``, part of ``Collection``)."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import encoders
import index as ix
from index.tokens import offsets_of

from . import encoding, locking, wal
from .checkpoint import WAL_DIR
from .contents import Contents
from .errors import ReadOnlyError
from .payloads import check_payloads

log = logging.getLogger(__name__)

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
        if not s.isascii():
            try:
                s.encode()
            except UnicodeEncodeError:
                raise ValueError(
                    f"id {i} ({s!r}) is not valid Unicode text (a lone surrogate)"
                ) from None
        out.append(s)
    if not out:
        raise ValueError("ids is an empty batch")
    if len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(s for s in out if s in seen or seen.add(s))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate id {dup!r} within one call")
    return out


class WriteMixin:
    """Upserts, deletes and markers: checked, logged, applied to ``_contents``, then committed."""

    if TYPE_CHECKING:  # provided by Collection
        path: Path
        name: str
        text_field: str | None
        checkpoint_bytes: int
        checkpoint_seconds: float | None
        _contents: Contents
        _lock: locking.RWLock
        _marker: dict[str, Any] | None
        _dirty: bool
        _wal: wal.WalWriter | None
        _claim: locking.Claim | None
        _durability: str
        _closed_because: str | None  # set: writes raise ReadOnlyError with it
        _checkpoint_at: float  # time.monotonic() of the last checkpoint
        _tokens_in: int  # tokens given to writes since open, before pruning
        _tokens_kept: int  # the same writes' tokens after pruning

        @property
        def encoder(self) -> encoders.Encoder | None: ...

        @property
        def unindexed(self) -> int: ...  # rows replayed at open not in the graph yet

        def flush(self) -> None: ...

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
        lexical = self._contents.lexical
        if texts is not None and vectors is not None:
            if lexical is None or self.text_field is not None:
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
        return vectors, (list(texts) if texts is not None and lexical is not None else None)

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
        contents = self._contents
        x, offsets = contents.items.check(vectors, len(keys))
        given = x.shape[0]
        if offsets is not None and isinstance(contents.index, ix.MultiVectorIndex):
            # The one place a write's token sets are pruned: before the log, so the log holds
            # what is stored and replay never prunes (``index.tokenprune``).
            x, offsets = contents.index.prune(x, offsets)
        rows = check_payloads(payloads, len(keys))
        if texts is not None and len(texts) != len(keys):
            raise ValueError(f"got {len(texts)} texts for {len(keys)} ids")
        lex_texts = contents.lexical_texts(rows, texts)
        self._check_writable()
        lengths = None if offsets is None else np.diff(offsets)
        body = wal.encode_upsert(keys, x, rows, lengths, marker, texts=texts)
        with self._lock:
            self._check_writable()
            contents = self._contents
            if not replace:
                for k in keys:
                    if k in contents.ids:
                        raise ValueError(f"id {k!r} already exists (use upsert to replace it)")
            schema = contents.payloads.check_types(rows)
            # Everything that can reject the call has run: a logged record always replays.
            seq = self._log(wal.UPSERT, body)
            with self._failing_write():
                contents.upsert(keys, x, rows, schema, offsets, lex_texts)
                self._dirty = True
            if offsets is not None:
                self._tokens_in += given
                self._tokens_kept += x.shape[0]
            if marker is not None:
                self._marker = marker
        self._commit(seq)

    def reserve(self, n: int) -> None:
        """A hint that the collection will hold about ``n`` items (a bulk load knows): the
        vector store and the index allocate once instead of growing by copying."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"reserve takes a non-negative item count, got {n!r}")
        with self._lock:
            self._contents.reserve(int(n))

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

    def delete(self, ids: Any) -> int:
        """Deletes the given ids; absent ones are ignored. Returns how many were deleted."""
        keys = check_ids(ids)
        self._check_writable()
        with self._lock:
            self._check_writable()
            present = [k for k in keys if k in self._contents.ids]
            if not present:
                return 0
            seq = self._log(wal.DELETE, wal.encode_delete(present))
            with self._failing_write():
                if self._contents.delete(present):
                    self._dirty = True
        self._commit(seq)
        return len(present)

    def adopt_quantizer(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Makes the empty collection's ``ivf`` or ``pq`` index trained with a quantizer trained
        elsewhere (``index.train_quantizer`` with the collection's index spec, dim and metric),
        so that every vector added later goes into the inverted lists of those centroids:
        the shards of one collection share a quantizer this way.

        Durable when it returns: it writes a checkpoint at once, so a reopen after a crash has
        the adopted quantizer, and the writes logged after it replay into its lists.

        Args:
            arrays: ``{"centroids": (nlist, dim)}``, plus ``"pq_centroids"`` for PQ codes;
                float32, finite (``Collection.quantizer()`` of another collection returns them).

        Raises:
            ValueError: the index kind shares no quantizer, the collection holds items, or the
                arrays do not fit the index (the message names the array).
            ReadOnlyError: the collection takes no writes.

        Example:
            >>> q = index.train_quantizer(col.index_spec, col.dim, col.metric, sample)
            >>> col.adopt_quantizer(q)
        """
        self._check_writable()
        with self._lock.quiesce():
            self._check_writable()
            idx = self._contents.index
            if not isinstance(idx, (ix.IVFIndex, ix.PQIndex)):
                raise ValueError(
                    f"collection {self.name!r} has index {idx.spec!r}, which has no quantizer "
                    "to adopt (only ivf and pq indexes do)"
                )
            if len(self._contents):
                raise ValueError(
                    f"collection {self.name!r} holds {len(self._contents)} items; a quantizer "
                    "can only be adopted while it is empty"
                )
            with self._lock:
                idx.adopt_quantizer(arrays)  # checks the arrays before it changes anything
                self._dirty = True
            # Memory now differs from the last checkpoint in a way the log cannot replay: a
            # failed checkpoint must stop writes, or they would be logged against the wrong lists.
            with self._failing_write():
                self.flush()
        log.info("collection %r: adopted a quantizer for %s", self.name, idx.spec)

    # ---- replay: writes from the log -------------------------------------------------------------
    def replay(
        self,
        kind: int,
        ids: Sequence[str] = (),
        vectors: np.ndarray | None = None,
        payloads: list[dict[str, Any]] | None = None,
        *,
        lengths: np.ndarray | None = None,
        texts: Sequence[str | None] | None = None,
        marker: dict[str, Any] | None = None,
    ) -> None:
        """Applies one log record to memory without logging it: the entry point of the log
        replayer (``engine.replay.Replayer``), which runs at open and may merge a run of upserts
        into one call.

        Args:
            kind: ``wal.UPSERT``, ``wal.DELETE`` or ``wal.MARK`` (only ``marker`` applies).
            ids: the ids upserted or deleted.
            vectors: an upsert's (n, dim) vectors, or its token sets' tokens concatenated.
            payloads: an upsert's payloads (None: none).
            lengths: token sets only: the token count of each id.
            texts: an upsert's texts for the lexical index (None where an item has none).
            marker: when given, the marker committed with the record.

        Raises:
            ValueError: an upsert does not fit the collection (no vectors, payload types that
                clash with the collection's, a text field that is not a string, token sets in a
                single-vector collection or the reverse); nothing changed.
        """
        with self._lock:
            if marker is not None:
                self._marker = marker
            if kind == wal.DELETE:
                if self._contents.delete(list(ids)):
                    self._dirty = True
            elif kind == wal.UPSERT:
                if vectors is None:
                    raise ValueError("an upsert record without vectors")
                rows = payloads if payloads is not None else [{} for _ in ids]
                offsets = None if lengths is None else offsets_of(lengths)
                schema = self._contents.payloads.check_types(rows)
                lex = self._contents.lexical_texts(rows, texts)
                self._contents.upsert(list(ids), vectors, rows, schema, offsets, lex)
                self._dirty = True

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
        if self.unindexed:
            # A checkpoint would first wait for the graph to catch up (``engine.catchup``):
            # until then the log may grow to twice its threshold.
            return w.bytes >= 2 * self.checkpoint_bytes
        if w.bytes >= self.checkpoint_bytes:
            return True
        return (
            self.checkpoint_seconds is not None
            and w.bytes > 0
            and time.monotonic() - self._checkpoint_at >= self.checkpoint_seconds
        )

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
