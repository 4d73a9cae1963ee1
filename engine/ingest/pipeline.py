"""The threaded pipeline of a run: read and check a chunk, encode its texts, write it.

Three stages overlap, two chunks in flight between each: reading and checking (a thread), encoding
(the caller's thread) and writing (a thread). Each chunk is one write carrying the run's position
in its input as the collection's marker, so a crash leaves a whole number of chunks and the marker
says how many.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import collection as collection_mod
from ..collection import Collection
from ..errors import ShardUnavailableError
from ..sharded import ShardedCollection
from ..sources import Source
from .plan import Plan
from .report import MAX_REPORTED, IngestInterrupted, MalformedInputError, Report
from .rows import Batch, check_chunk

log = logging.getLogger(__name__)

SHARD_RETRIES = 5  # writes retried while a shard restarts (each waits for it to answer)
SHARD_WAIT = 120.0  # seconds a retry waits for the shard
_END = object()  # the last item a stage puts on its queue


class _Failed:
    """An exception of the reader's thread, handed to the caller's."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Pipeline:
    """read+check (thread) -> encode (caller's thread) -> write (thread), two chunks in flight
    between stages. ``run()`` once; it fills ``report`` as chunks commit.

    Ctrl-C (KeyboardInterrupt in the caller's thread) from the first chunk to the end of the
    final checkpoint, the final drain included, lets the writer commit the chunks already
    encoded and raises ``IngestInterrupted``: the threads have ended, the collection's
    durability is restored, and the same call again finishes the run.
    """

    def __init__(
        self,
        col: Collection | ShardedCollection,
        source: Source,
        plan: Plan,
        run: dict[str, Any],
        state: dict[str, Any] | None,
        batch_size: int,
        on_error: str,
        report: Report,
        progress: Callable[[Report], None] | None,
        t0: float,
    ) -> None:
        self.col, self.source, self.plan, self.run_id = col, source, plan, run
        self.batch_size, self.on_error, self.report = batch_size, on_error, report
        self.progress, self.t0 = progress, t0
        self.stop = threading.Event()
        self.checked: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.encoded: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.writer_error: BaseException | None = None
        self.rows_done = report.resumed_from
        self.added = int(state["added"]) if state else 0
        self.skipped = int(state["skipped"]) if state else 0
        self.bytes_per_item = col.dim * 4
        # Ids of chunks checked but not yet committed: a later chunk's duplicate check must see
        # them (the collection holds an id only once its chunk is written).
        self.pending: dict[int, set[str]] = {}
        self.pending_lock = threading.Lock()
        # A sharded collection takes each write at a position (the run's base plus its rows
        # done), the same positions when the run resumes: shards that hold a write skip it.
        self.sharded = isinstance(col, ShardedCollection)
        # An empty sharded ivf / pq collection: the first chunks are held until there are
        # enough vectors to train the quantizer all shards share, then written in order.
        self.held: list[Batch] = []
        self.hold = isinstance(col, ShardedCollection) and col.needs_quantizer and not len(col)
        self.base = 0
        if isinstance(col, ShardedCollection):
            self.base = int(state["base"]) if state and "base" in state else col.position

    def _exists(self, key: str, position: int) -> bool:
        return self._exist_many([key], position)[0]

    def _exist_many(self, keys: list[str], position: int) -> list[bool]:
        """Whether an earlier chunk or run wrote each key (the chunk ending at ``position``
        checks them): a shard that already took this chunk (a resumed run) does not count."""
        col = self.col
        # Chunks in flight first, the collection second: the writer drops a chunk from
        # ``pending`` only after writing it, so a key is seen in one or the other (the other
        # order missed a chunk written between the two looks).
        with self.pending_lock:
            pending = list(self.pending.values())
        if isinstance(col, ShardedCollection):
            there: list[bool] = self._retrying(lambda: col.settled(keys, self.base + position))
        else:
            there = [k in col for k in keys]
        return [t or any(k in ids for ids in pending) for k, t in zip(keys, there, strict=True)]

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue[Any]) -> Any:
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self.writer_error is not None:
                    raise self.writer_error from None

    def _time(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        stages = self.report.stages
        stages[stage] = stages.get(stage, 0.0) + now - since
        return now

    def _read(self) -> None:
        """The reader thread: checked batches onto ``checked``, in input order."""
        try:
            t = time.perf_counter()
            for batch in self._checked_batches():
                with self.pending_lock:
                    self.pending[batch.start] = set(batch.ids)
                self._time("read", t)
                if not self._put(self.checked, batch):
                    return
                t = time.perf_counter()
            self._put(self.checked, _END)
        except BaseException as e:  # handed to the caller's thread
            self._put(self.checked, _Failed(e))

    def _checked_batches(self) -> Iterator[Batch]:
        """The input's chunks from the resume point on, each checked."""
        chunks = self.source.chunks(
            self.plan.columns(),
            self.batch_size,
            skip=self.report.resumed_from,
            strings=self.plan.strings(),
        )
        for chunk in chunks:
            end = chunk.start + chunk.n
            yield check_chunk(
                chunk,
                self.plan,
                self.col.dim,
                lambda key, end=end: self._exists(key, end),  # type: ignore[misc]
                self.col.multi_vector,
            )

    def _write(self) -> None:
        try:
            while True:
                item = self.encoded.get()
                if item is _END:
                    return
                self._commit(item)
        except BaseException as e:
            self.writer_error = e
            self.stop.set()

    def _state(self, rows: int, done: bool) -> dict[str, Any]:
        return {
            "ingest": {
                "run": self.run_id,
                "batch_size": self.batch_size,
                "rows": rows,
                "added": self.added,
                "skipped": self.skipped,
                "done": done,
                **({"base": self.base} if self.sharded else {}),
            }
        }

    def _at(self, position: int) -> dict[str, Any]:
        """A write's position argument: sharded collections only."""
        return {"position": self.base + position} if self.sharded else {}

    def _retrying(self, call: Callable[[], Any]) -> Any:
        """Runs a call to the collection; while a shard is down, waits for it (Ray restarts
        it) and calls again: shards that took a write already skip it (same position)."""
        for attempt in range(SHARD_RETRIES + 1):
            try:
                return call()
            except ShardUnavailableError as e:
                if attempt == SHARD_RETRIES or not isinstance(self.col, ShardedCollection):
                    raise
                log.warning("%s; waiting for it, then trying again", e)
                self.col.wait_ready(SHARD_WAIT)

    def _hold(self, batch: Batch | None) -> list[Batch]:
        """The batches to commit now: while the shared quantizer waits for enough vectors,
        none (``batch`` is held); then the held ones, after training it on them. ``None``:
        the run's end (the quantizer trains on what there is, if that is enough)."""
        col = self.col
        assert isinstance(col, ShardedCollection)
        if batch is not None:
            self.held.append(batch)
        have = sum(len(b.ids) for b in self.held)
        if batch is not None and have < col.train_size:
            return []
        self.hold = False
        held, self.held = self.held, []
        vectors = [b.vectors for b in held if b.ids and isinstance(b.vectors, np.ndarray)]
        if vectors and have >= col.train_size:
            t = time.perf_counter()
            col.train_quantizer(np.concatenate(vectors))
            self._time("train", t)
        return held

    def _commit(self, batch: Batch) -> None:
        if self.hold:
            for held in self._hold(batch):
                self._commit_one(held)
            return
        self._commit_one(batch)

    def _commit_one(self, batch: Batch) -> None:
        col = self.col
        self.skipped += len(batch.bad)
        self.added += len(batch.ids)
        marker = self._state(batch.end, done=False)
        t = time.perf_counter()
        at = self._at(batch.end)
        try:
            if batch.ids:
                self._retrying(
                    lambda: col.upsert(
                        batch.ids,
                        batch.vectors,
                        batch.payloads,
                        marker=marker,
                        texts=batch.lexical_texts,
                        **at,
                    )
                )
            else:
                self._retrying(lambda: col.set_marker(marker, **at))
        except (TypeError, ValueError) as e:
            raise ValueError(f"rows {batch.start + 1}-{batch.end}: {e}") from None
        self._time("write", t)
        self.rows_done = batch.end
        with self.pending_lock:
            self.pending.pop(batch.start, None)
        r = self.report
        r.rows = batch.end - r.resumed_from
        r.added += len(batch.ids)
        r.skipped += len(batch.bad)
        r.errors.extend(batch.bad[: max(0, MAX_REPORTED - len(r.errors))])
        r.seconds = time.perf_counter() - self.t0
        log.info(
            "committed rows %d-%d of %s (%d written, %d malformed)",
            batch.start + 1,
            batch.end,
            self.source.path,
            len(batch.ids),
            len(batch.bad),
        )
        # Checkpoint as the collection doubles: the log stays below the collection's size (a
        # bounded replay after a crash) and checkpoints cost O(final size) in all.
        col.checkpoint_bytes = max(collection_mod.CHECKPOINT_BYTES, len(col) * self.bytes_per_item)
        if self.progress is not None:
            self.progress(r)

    def _encode(self, batch: Batch) -> Batch:
        if self.col.lexical and self.col.text_field is None and batch.ids:
            batch.lexical_texts = batch.texts
        if batch.texts is not None and batch.ids:
            enc = self.col.encoder
            assert enc is not None
            t = time.perf_counter()
            batch.vectors = enc.encode_documents(batch.texts)
            self._time("encode", t)
            if enc.multi_vector:
                self.bytes_per_item = max(
                    self.bytes_per_item,
                    int(sum(v.nbytes for v in batch.vectors) / max(1, len(batch.ids))),
                )
        batch.texts = None
        return batch

    def run(self) -> None:
        col = self.col
        durability = col.durability
        col.durability = "none"
        if self.report.total_rows:
            col.reserve(len(col) + max(0, self.report.total_rows - self.report.resumed_from))
        reader = threading.Thread(target=self._read, name="vecdex-ingest-read", daemon=True)
        writer = threading.Thread(target=self._write, name="vecdex-ingest-write", daemon=True)
        reader.start()
        writer.start()
        finished = False
        try:
            self._encode_all()
            finished = True
            # Inside the try: a Ctrl-C while the last chunks commit is an interruption too.
            self._drain(writer)
        except KeyboardInterrupt:
            self._drain(writer)  # again if the Ctrl-C came during the drain: it has not ended
            raise IngestInterrupted(self.report) from None
        finally:
            if not finished:
                self.stop.set()
            self._drain(writer)
            self.stop.set()
            reader.join(timeout=5)
            try:
                col.durability = durability
            except Exception:  # pragma: no cover - the collection was superseded
                log.exception("restoring durability")
        if self.writer_error is not None:
            raise self.writer_error
        try:
            self._finish()
        except KeyboardInterrupt:
            # Every chunk is committed but the run may not be marked done or checkpointed: the
            # same call again finishes it without reading a row.
            raise IngestInterrupted(self.report) from None

    def _encode_all(self) -> None:
        """The encoding stage: checked chunks in, encoded chunks out, until the reader's end."""
        while True:
            t = time.perf_counter()
            item = self._get(self.checked)
            self._time("encode_starved", t)
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            if item.bad and self.on_error == "fail":
                raise MalformedInputError(item.bad, len(item.bad))
            item = self._encode(item)
            t = time.perf_counter()
            if not self._put(self.encoded, item):
                return
            self._time("encode_blocked", t)

    def _finish(self) -> None:
        """Marks the run done, checkpoints the collection and completes the report."""
        if self.hold:
            for held in self._hold(None):
                self._commit_one(held)
        col = self.col
        done = self._state(self.rows_done, done=True)
        self._retrying(lambda: col.set_marker(done, **self._at(self.rows_done + 1)))
        t = time.perf_counter()
        col.flush()
        self._time("checkpoint", t)
        r = self.report
        r.seconds = time.perf_counter() - self.t0
        r.count = len(col)
        r.bytes_on_disk = col.describe()["bytes_on_disk"]

    def _drain(self, writer: threading.Thread) -> None:
        """Lets the writer commit what is already encoded, then stops it."""
        if not writer.is_alive():
            return
        while writer.is_alive():
            try:
                self.encoded.put(_END, timeout=0.1)
                break
            except queue.Full:
                if self.writer_error is not None:
                    break
        writer.join()
