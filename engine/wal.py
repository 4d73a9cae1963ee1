"""The write-ahead log: every upsert and delete, durable before the call returns.

A collection's log lives in ``wal/`` as segment files named by the sequence number of their first
record (``wal/00000000000000000042.log``). Records follow each other with no gaps; all integers
are little-endian::

    offset  size  field
    0       4     magic b"VXW1"
    4       1     kind: 1 upsert, 2 delete, 3 mark
    5       3     reserved (zero)
    8       8     seq: 1, 2, 3, ... over the collection's life, never reused
    16      8     body length in bytes
    24      4     CRC32 of the body
    28      4     CRC32 of bytes 0-27 (the header)
    32      ...   body: u32 n, n bytes of JSON {"ids": [...], "dim": d, "payloads": [...]},
                  then for an upsert the vectors, float32 (len(ids), d) in C order

An upsert may carry ``"marker": {...}``, a small JSON object the caller commits atomically with
the write (``Collection.upsert(marker=...)``: an ingestion job's position in its input); a mark
record's body is ``{"marker": {...}}`` alone (``Collection.set_marker``).

An upsert into a collection with a lexical index may carry ``"texts": [...]`` (one string per id):
the texts the BM25 index takes, replayed with the vectors.

A multi-vector upsert (token sets) adds ``"lengths": [n_0, n_1, ...]`` (each id's token count, all
positive) to the JSON, and its vectors are the sets' tokens concatenated: float32 (sum(lengths), d).

No pickle: JSON for ids and payloads, raw float32 for vectors. A checkpoint records the last
sequence number it holds (``wal_seq`` in the manifest); replay skips records up to it, so a crash
between the manifest switch and the log's rotation applies nothing twice.

Group commit: writers append under a lock (the bytes reach the OS at once, so a killed process
loses nothing), then wait for durability; whichever waiter finds no fsync in flight becomes the
leader and fsyncs everything appended so far, and every writer it covered returns together.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from index import storage

log = logging.getLogger(__name__)

MAGIC = b"VXW1"
UPSERT = 1
DELETE = 2
MARK = 3
KINDS = {UPSERT: "upsert", DELETE: "delete", MARK: "mark"}
_HEAD = struct.Struct("<4sB3xQQI")
_CRC = struct.Struct("<I")
_U32 = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _CRC.size  # 32
SEGMENT_RE = re.compile(r"^(\d{20})\.log$")
DURABILITY = ("fsync", "none")

_fdatasync = getattr(os, "fdatasync", os.fsync)


def check_durability(durability: Any) -> str:
    """``"fsync"``: acknowledge once the log is on disk; ``"none"``: once it reaches the OS."""
    if durability not in DURABILITY:
        raise ValueError(f"durability must be 'fsync' or 'none', got {durability!r}")
    return str(durability)


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.log"


# ---- record bodies ---------------------------------------------------------------------------
def encode_upsert(
    ids: list[str],
    vectors: np.ndarray,
    payloads: list[dict[str, Any]],
    lengths: np.ndarray | None = None,
    marker: dict[str, Any] | None = None,
    *,
    texts: list[str] | None = None,
) -> bytes:
    """The body of an upsert record; ``payloads`` (``marker``, ``texts``) already validated.

    For token sets, ``vectors`` holds every set's tokens concatenated and ``lengths`` the token
    count of each id (so ``vectors`` has ``lengths.sum()`` rows)."""
    meta: dict[str, Any] = {"ids": ids, "dim": int(vectors.shape[1])}
    if lengths is not None:
        meta["lengths"] = [int(n) for n in lengths]
    if any(payloads):
        meta["payloads"] = payloads
    if marker is not None:
        meta["marker"] = marker
    if texts is not None:
        meta["texts"] = texts
    head = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()
    x = np.ascontiguousarray(vectors, dtype="<f4")
    return b"".join((_U32.pack(len(head)), head, x.tobytes()))


def encode_delete(ids: list[str]) -> bytes:
    head = json.dumps({"ids": ids}, separators=(",", ":")).encode()
    return _U32.pack(len(head)) + head


def encode_mark(marker: dict[str, Any]) -> bytes:
    head = json.dumps({"marker": marker}, separators=(",", ":"), allow_nan=False).encode()
    return _U32.pack(len(head)) + head


@dataclass
class Entry:
    """One decoded record, with where it was read from (for error messages)."""

    seq: int
    kind: int
    ids: list[str]
    vectors: np.ndarray | None
    payloads: list[dict[str, Any]] | None
    path: Path
    offset: int
    lengths: np.ndarray | None = None  # token sets: tokens per id (``vectors`` concatenates them)
    marker: dict[str, Any] | None = None  # the caller's marker committed with this record
    texts: list[str] | None = None  # an upsert's texts for the lexical index


def _lengths(meta: dict[str, Any], n_ids: int) -> np.ndarray | None:
    lengths = meta.get("lengths")
    if lengths is None:
        return None
    if (
        not isinstance(lengths, list)
        or len(lengths) != n_ids
        or not all(type(n) is int and n > 0 for n in lengths)
    ):
        raise ValueError("lengths must be a positive token count per id")
    return np.asarray(lengths, dtype=np.int64)


def _decode(kind: int, body: bytes, dim: int) -> tuple[list[str], Any, Any, Any, Any, Any]:
    """(ids, vectors, payloads, lengths, marker, texts) of a record body."""
    if len(body) < _U32.size:
        raise ValueError("body shorter than its length prefix")
    (n_head,) = _U32.unpack_from(body)
    end = _U32.size + n_head
    if end > len(body):
        raise ValueError("JSON header runs past the body")
    meta = json.loads(body[_U32.size : end])
    if not isinstance(meta, dict):
        raise ValueError("the JSON header is not an object")
    marker = meta.get("marker")
    if marker is not None and not isinstance(marker, dict):
        raise ValueError("marker must be a JSON object")
    if kind == MARK:
        if marker is None or end != len(body):
            raise ValueError("a mark record holds one marker object and nothing else")
        return [], None, None, None, marker, None
    ids = meta.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError("ids must be a non-empty list of non-empty strings")
    if kind == DELETE:
        if end != len(body):
            raise ValueError("trailing bytes after a delete")
        return ids, None, None, None, None, None
    if meta.get("dim") != dim:
        raise ValueError(f"vectors of dimension {meta.get('dim')!r}, collection has {dim}")
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate ids in one upsert")
    lengths = _lengths(meta, len(ids))
    rows = len(ids) if lengths is None else int(lengths.sum())
    if len(body) - end != rows * dim * 4:
        what = f"{len(ids)} ids" if lengths is None else f"{rows} tokens"
        raise ValueError(f"{len(body) - end} bytes of vectors for {what} of dim {dim}")
    x = np.frombuffer(body, dtype="<f4", offset=end).reshape(rows, dim).astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or inf")
    payloads = meta.get("payloads")
    if payloads is not None and (
        not isinstance(payloads, list)
        or len(payloads) != len(ids)
        or not all(isinstance(p, dict) for p in payloads)
    ):
        raise ValueError("payloads must be a list of dicts, one per id")
    texts = meta.get("texts")
    if texts is not None and (
        not isinstance(texts, list)
        or len(texts) != len(ids)
        or not all(isinstance(t, str) for t in texts)
    ):
        raise ValueError("texts must be a list of strings, one per id")
    return ids, x, payloads, lengths, marker, texts


def _header(kind: int, seq: int, length: int, body_crc: int) -> bytes:
    head = _HEAD.pack(MAGIC, kind, seq, length, body_crc)
    return head + _CRC.pack(zlib.crc32(head))


def _header_ok(buf: bytes | memoryview, pos: int) -> bool:
    head = bytes(buf[pos : pos + _HEAD.size])
    return (
        len(head) == _HEAD.size
        and head[:4] == MAGIC
        and _CRC.unpack_from(buf, pos + _HEAD.size)[0] == zlib.crc32(head)
    )


# ---- reading ---------------------------------------------------------------------------------
@dataclass
class Segment:
    first_seq: int
    path: Path


def list_segments(wal_dir: Path) -> list[Segment]:
    """The segment files, oldest first (other names, such as temp files, are ignored)."""
    if not wal_dir.is_dir():
        return []
    out = []
    for entry in wal_dir.iterdir():
        m = SEGMENT_RE.match(entry.name)
        if m and entry.is_file():
            out.append(Segment(int(m.group(1)), entry))
    return sorted(out, key=lambda s: s.first_seq)


class _Scan:
    """Reads one segment's records in order; stops at the first one that is not whole and valid.

    After iteration, ``good_end`` is the offset just past the last valid record and ``problem``
    is ``(offset, what)`` for the record that stopped it, or None at a clean end of file.
    """

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.good_end = 0
        self.size = 0
        self.problem: tuple[int, str] | None = None

    def __iter__(self) -> Iterator[Entry]:
        with open(self.path, "rb") as f:
            # A writer may append while a read-only opener reads: what lies past the size seen
            # here is for the next open.
            size = self.size = os.fstat(f.fileno()).st_size
            off = 0
            while off < size:
                head = f.read(HEADER_SIZE)
                if len(head) < HEADER_SIZE:
                    self.problem = (off, f"incomplete record header ({len(head)} bytes)")
                    return
                if head[:4] != MAGIC:
                    self.problem = (off, "no record marker")
                    return
                magic, kind, seq, length, body_crc = _HEAD.unpack_from(head)
                if _CRC.unpack_from(head, _HEAD.size)[0] != zlib.crc32(head[: _HEAD.size]):
                    self.problem = (off, "header checksum mismatch")
                    return
                end = off + HEADER_SIZE + length
                if end > size:
                    self.problem = (off, f"record of {length} bytes runs past the end of the file")
                    return
                body = f.read(length)
                if len(body) != length or zlib.crc32(body) != body_crc:
                    self.problem = (off, "body checksum mismatch")
                    return
                if kind not in KINDS:
                    raise storage.CorruptFileError(self.path, f"offset {off}: unknown kind {kind}")
                try:
                    ids, x, payloads, lengths, marker, texts = _decode(kind, body, self.dim)
                except (ValueError, TypeError, UnicodeDecodeError) as e:
                    raise storage.CorruptFileError(
                        self.path, f"offset {off}: undecodable {KINDS[kind]} record: {e}"
                    ) from None
                yield Entry(seq, kind, ids, x, payloads, self.path, off, lengths, marker, texts)
                off = self.good_end = end

    def valid_record_after(self, offset: int) -> bool:
        """Whether a record header with a valid checksum starts after ``offset`` (and before the
        size the scan saw)."""
        with open(self.path, "rb") as f:
            f.seek(offset + 1)
            rest = f.read(max(0, self.size - offset - 1))
        pos = rest.find(MAGIC)
        while pos >= 0:
            if _header_ok(rest, pos):
                return True
            pos = rest.find(MAGIC, pos + 1)
        return False


@dataclass
class LogState:
    """What replay found: where the next record goes and what the writer must tidy first."""

    next_seq: int
    tail: Path | None = None  # the segment to append to (None: start a new one)
    tail_end: int = 0  # its length up to the last valid record
    torn: tuple[Path, int] | None = None  # (segment, offset) of a torn last record to cut away
    obsolete: list[Path] = field(default_factory=list)  # wholly held by the checkpoint
    live: list[Path] = field(default_factory=list)  # segments replayed from
    records: int = 0  # records applied
    vectors: int = 0  # vectors in the upserts applied
    log_bytes: int = 0  # bytes of log after the checkpoint


def replay(wal_dir: Path, covered: int, dim: int, apply: Callable[[Entry], None]) -> LogState:
    """Applies, in order, every logged record after sequence number ``covered``.

    A partial record at the very end of the log (a write cut short by a crash) ends the replay
    quietly; a bad record anywhere else raises.

    Raises:
        CorruptFileError: a bad record followed by valid ones, a gap in the sequence numbers, or a
            record that does not decode; the message names the segment file and the offset.
    """
    segments = list_segments(wal_dir)
    start = 0
    while start + 1 < len(segments) and segments[start + 1].first_seq <= covered + 1:
        start += 1  # a crash between a checkpoint and the log's rotation left these behind
    state = LogState(next_seq=covered + 1, obsolete=[s.path for s in segments[:start]])
    live = segments[start:]
    if live and live[0].first_seq > covered + 1:
        raise storage.CorruptFileError(
            live[0].path,
            f"the log starts at record {live[0].first_seq} but the checkpoint holds records "
            f"only up to {covered}: log segments are missing",
        )
    prev = covered
    for i, seg in enumerate(live):
        last = i == len(live) - 1
        if i and seg.first_seq != prev + 1:
            raise storage.CorruptFileError(
                seg.path, f"segment starts at record {seg.first_seq}, expected {prev + 1}"
            )
        prev = seg.first_seq - 1
        scan = _Scan(seg.path, dim)
        for entry in scan:
            if entry.seq != prev + 1:
                raise storage.CorruptFileError(
                    seg.path, f"offset {entry.offset}: record {entry.seq}, expected {prev + 1}"
                )
            prev = entry.seq
            if entry.seq <= covered:
                continue
            try:
                apply(entry)
            except storage.CorruptFileError:
                raise
            except (ValueError, TypeError) as e:
                raise storage.CorruptFileError(
                    seg.path, f"offset {entry.offset}: record {entry.seq} does not apply: {e}"
                ) from None
            state.records += 1
            state.vectors += len(entry.ids) if entry.kind == UPSERT else 0
        state.live.append(seg.path)
        state.log_bytes += scan.good_end
        if scan.problem is not None:
            off, what = scan.problem
            if not last:
                raise storage.CorruptFileError(
                    seg.path, f"offset {off}: {what} (not the last segment, so not a torn write)"
                )
            if scan.valid_record_after(off):
                raise storage.CorruptFileError(
                    seg.path,
                    f"offset {off}: {what}, and valid records follow: the log is corrupted",
                )
            log.warning("%s: dropping a torn record at offset %d (%s)", seg.path, off, what)
            state.torn = (seg.path, off)
        if last:
            state.tail, state.tail_end = seg.path, scan.good_end
    state.next_seq = max(prev, covered) + 1
    if state.tail is not None and prev != state.next_seq - 1:
        state.tail = None  # the tail ends before the checkpoint: continue in a new segment
    return state


# ---- writing ---------------------------------------------------------------------------------
class WalError(OSError):
    """The log could not be written or synced; the collection takes no more writes."""


class WalWriter:
    """Appends records to the newest segment and makes them durable with group commit.

    Args:
        wal_dir: the collection's ``wal/`` directory (created if missing).
        state: what ``replay`` found; its torn tail is cut away before anything is appended.
        sync: fsync before acknowledging (``durability="fsync"``); False only writes to the OS.
    """

    def __init__(self, wal_dir: Path, state: LogState, sync: bool) -> None:
        self.dir = wal_dir
        self.sync = sync
        self._cond = threading.Condition(threading.Lock())
        self._written = state.next_seq - 1
        self._synced = self._written
        self._syncing = False
        self._error: BaseException | None = None
        self._closed = False
        self.fsyncs = 0
        if not wal_dir.is_dir():
            wal_dir.mkdir()
            storage.fsync_dir(wal_dir.parent)
        for path in state.obsolete:
            path.unlink(missing_ok=True)
        if state.torn is not None:
            os.truncate(*state.torn)
        # Replayed records may sit unsynced in the page cache after a crash; new records must
        # never become durable without them.
        for path in state.live:
            if path.exists():
                storage.fsync_file(path)
        if state.obsolete or state.torn:
            storage.fsync_dir(wal_dir)
        self.bytes = state.log_bytes  # log bytes since the last checkpoint
        if state.tail is not None:
            self._file: BinaryIO = open(state.tail, "ab", buffering=0)  # noqa: SIM115
            self._end = state.tail_end
            self._segment = state.tail
        else:
            self._file, self._segment = self._new_segment(state.next_seq)
            self._end = 0

    @property
    def last_seq(self) -> int:
        """The sequence number of the last record appended."""
        return self._written

    def _new_segment(self, first_seq: int) -> tuple[BinaryIO, Path]:
        path = self.dir / segment_name(first_seq)
        f = open(path, "ab", buffering=0)  # noqa: SIM115
        if os.fstat(f.fileno()).st_size:
            f.close()
            raise storage.CorruptFileError(path, "a new log segment already holds data")
        storage.fsync_dir(self.dir)
        return f, path

    def _check(self) -> None:
        if self._error is not None:
            raise WalError(f"{self._segment}: the log failed earlier ({self._error})")
        if self._closed:
            raise WalError(f"{self._segment}: the log is closed")

    def append(self, kind: int, body: bytes) -> int:
        """Writes one record to the OS and returns its sequence number (durable after ``wait``)."""
        crc = zlib.crc32(body)
        with self._cond:
            self._check()
            seq = self._written + 1
            data = memoryview(_header(kind, seq, len(body), crc) + body)
            fd = self._file.fileno()
            done = 0
            try:
                while done < len(data):
                    done += os.write(fd, data[done:])
            except OSError as e:
                # Cut the partial record away so no later record follows garbage.
                try:
                    os.ftruncate(fd, self._end)
                except OSError:
                    self._error = e
                raise WalError(f"{self._segment}: writing the log failed: {e}") from e
            self._end += len(data)
            self.bytes += len(data)
            self._written = seq
            if not self.sync:
                self._synced = seq
            return seq

    def set_sync(self, sync: bool) -> None:
        """Turns fsync on or off; turning it on first makes everything appended durable."""
        with self._cond:
            while self._syncing:
                self._cond.wait()
            if sync and not self.sync:
                self._check()
                try:
                    _fdatasync(self._file.fileno())
                except OSError as e:
                    self._error = e
                    raise WalError(f"{self._segment}: syncing the log failed: {e}") from e
            self.sync = sync

    def wait(self, seq: int) -> None:
        """Returns once record ``seq`` is durable, fsyncing as the leader of a group if needed."""
        with self._cond:
            while self._synced < seq:
                if self._error is not None:
                    raise WalError(f"{self._segment}: syncing the log failed: {self._error}")
                if self._closed:
                    raise WalError(f"{self._segment}: the log was closed before record {seq}")
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target, fd = self._written, self._file.fileno()
                self._cond.release()
                try:
                    _fdatasync(fd)
                    err: BaseException | None = None
                except OSError as e:
                    err = e
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                self.fsyncs += 1
                if err is not None:
                    # After a failed fsync the kernel may have dropped the dirty pages: nothing
                    # written since the last good fsync can be promised any more.
                    self._error = err
                    raise WalError(f"{self._segment}: syncing the log failed: {err}") from err
                self._synced = max(self._synced, target)

    def checkpointed(self, seq: int) -> None:
        """Starts a fresh segment after a checkpoint holding every record up to ``seq``.

        Called with writers held off, after the new manifest is durable; deletes older segments.
        """
        with self._cond:
            while self._syncing:
                self._cond.wait()
            if seq != self._written:
                raise RuntimeError(f"checkpoint at record {seq} but the log is at {self._written}")
            if self._end or self._segment.name != segment_name(seq + 1):
                old = self._file
                self._file, self._segment = self._new_segment(seq + 1)
                self._end = 0
                old.close()
            self.bytes = 0
            self._synced = max(self._synced, seq)  # the checkpoint holds them durably
            self._cond.notify_all()
            keep = self._segment
        stale = [s.path for s in list_segments(self.dir) if s.path != keep]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            storage.fsync_dir(self.dir)

    def close(self) -> None:
        """Makes every appended record durable (unless ``sync`` is off) and closes the segment."""
        err: OSError | None = None
        with self._cond:
            if self._closed:
                return
            while self._syncing:
                self._cond.wait()
            if self._synced < self._written and self._error is None:
                try:
                    _fdatasync(self._file.fileno())
                    self._synced = self._written
                except OSError as e:
                    err = self._error = e
            self._closed = True
            self._file.close()
            self._cond.notify_all()
        if err is not None:
            raise WalError(f"{self._segment}: syncing the log failed: {err}") from err
