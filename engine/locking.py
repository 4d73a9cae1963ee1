"""Locks: many readers or one writer between threads, one writing process per collection.

``RWLock`` orders the threads of one process around a collection's in-memory state. ``claimed``
takes the collection's lock file (``.lock``, ``fcntl.flock``) so that a second process opening the
same collection for writing gets ``CollectionLockedError`` instead of a second, diverging log.
The kernel drops a flock when its holder dies, so a ``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import CollectionLockedError

LOCK_FILE = ".lock"


class _Side:
    """One side of an ``RWLock`` as a reusable context manager (its state lives in the lock)."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Any, release: Any) -> None:
        self._acquire = acquire
        self._release = release

    def __enter__(self) -> None:
        self._acquire()

    def __exit__(self, *exc: object) -> None:
        self._release()


class RWLock:
    """Shared readers, one exclusive writer, and a "quiesce" mode for checkpoints.

    ``with lock:`` (or ``lock.write()``) is exclusive: no reader, writer or quiescer runs
    alongside. ``lock.read()`` is shared between readers. ``lock.quiesce()`` keeps writers out but
    lets readers in, so a checkpoint can copy state to disk while searches go on. Writers are
    preferred: once a writer waits for the readers to drain, new readers queue behind it, so a
    stream of searches cannot starve writes. A thread holding the write side or quiescing may take
    any side again; a reader may re-enter ``read()`` but cannot upgrade to a write.

    Example:
        >>> lock = RWLock()
        >>> with lock.read():
        ...     pass
    """

    def __init__(self) -> None:
        # Readers take the Condition's plain lock directly (a C-level ``with``), not the
        # Condition's Python-level ``__enter__``: a search's read lock is on its hot path.
        self._state = threading.Lock()
        self._cond = threading.Condition(self._state)
        self._mutex = threading.RLock()  # writers and quiescers, one thread at a time
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0
        self._waiting = 0
        self._local = threading.local()
        self._read = _Side(self._acquire_read, self._release_read)
        self._write = _Side(self._acquire_write, self._release_write)
        self._quiesce = _Side(self._mutex.acquire, self._mutex.release)

    def read(self) -> _Side:
        return self._read

    def write(self) -> _Side:
        return self._write

    def quiesce(self) -> _Side:
        return self._quiesce

    def __enter__(self) -> None:
        self._acquire_write()

    def __exit__(self, *exc: object) -> None:
        self._release_write()

    def _acquire_read(self) -> None:
        local = self._local
        depth = getattr(local, "depth", 0)
        if depth:
            local.depth = depth + 1
            return
        if self._writer == threading.get_ident():
            local.depth, local.counted = 1, False  # the writer reading its own state
            return
        with self._state:
            while self._writer is not None or self._waiting:
                self._cond.wait()
            self._readers += 1
        local.depth, local.counted = 1, True

    def _release_read(self) -> None:
        local = self._local
        local.depth -= 1
        if local.depth or not local.counted:
            return
        with self._state:
            self._readers -= 1
            if not self._readers and self._waiting:
                self._cond.notify_all()

    def _acquire_write(self) -> None:
        me = threading.get_ident()
        if self._writer == me:
            self._depth += 1
            return
        if getattr(self._local, "depth", 0):
            raise RuntimeError("a thread holding the read lock cannot take the write lock")
        self._mutex.acquire()
        try:
            with self._cond:
                self._waiting += 1
                try:
                    while self._readers:
                        self._cond.wait()
                finally:
                    self._waiting -= 1
                self._writer, self._depth = me, 1
        except BaseException:
            self._mutex.release()
            raise

    def _release_write(self) -> None:
        self._depth -= 1
        if self._depth:
            return
        with self._cond:
            self._writer = None
            self._cond.notify_all()
        self._mutex.release()


class Claim:
    """This process's hold on a collection's lock file, owned by one ``Collection`` at a time.

    Within one process a newer open of the same collection takes the claim over (the caller makes
    the previous owner read-only first); between processes the flock keeps the second one out.
    """

    def __init__(self, key: tuple[int, int], fd: int, path: Path) -> None:
        self.key = key
        self.path = path
        self._fd: int | None = fd
        self._owner: weakref.ref[Any] | None = None
        self.opening = 0  # opens in progress inside ``claimed``

    def owner(self) -> Any:
        """The live object holding the claim, or None."""
        return self._owner() if self._owner is not None else None

    def give_to(self, obj: Any) -> None:
        with _registry:
            self._owner = weakref.ref(obj)
        # A collection dropped without close() still lets go of the lock when collected.
        weakref.finalize(obj, _release_orphan, self)

    def release(self, obj: Any = None) -> None:
        """Unlocks the file; with ``obj``, only while ``obj`` is still the owner."""
        with _registry:
            if obj is not None and self.owner() is not obj:
                return
            if _claims.get(self.key) is self:
                del _claims[self.key]
            fd, self._fd = self._fd, None
            self._owner = None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock


_registry = threading.RLock()
_claims: dict[tuple[int, int], Claim] = {}
_openers: dict[tuple[int, int], threading.Lock] = {}


def _release_orphan(claim: Claim) -> None:
    with _registry:
        if _claims.get(claim.key) is not claim or claim.owner() is not None or claim.opening:
            return  # released already, handed to a newer owner, or being taken over
        claim.release()


def _holder_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


@contextlib.contextmanager
def claimed(directory: Path, name: str) -> Iterator[Claim]:
    """Claims ``directory`` for writing while the block runs; raises if another process has it.

    Opens of the same collection in this process run one at a time inside the block. The claim
    stays held after the block unless the block raises (then it is released); the caller hands it
    to its new owner with ``Claim.give_to``.

    Raises:
        CollectionLockedError: another process holds the lock file.
    """
    lock_file = Path(directory) / LOCK_FILE
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    key = (st.st_dev, st.st_ino)
    with _registry:
        opener = _openers.setdefault(key, threading.Lock())
    with opener:
        with _registry:
            claim = _claims.get(key)
            if claim is not None:
                claim.opening += 1
        if claim is not None:
            os.close(fd)  # this process holds it already: the new owner takes it over
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _holder_pid(fd)
                os.close(fd)
                raise CollectionLockedError(name, str(lock_file), pid) from None
            except BaseException:
                os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            claim = Claim(key, fd, lock_file)
            claim.opening = 1
            with _registry:
                _claims[key] = claim
        try:
            yield claim
        except BaseException:
            claim.release()
            raise
        finally:
            with _registry:
                claim.opening -= 1
