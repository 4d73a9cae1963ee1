"""Background indexing after a replay: the collection answers at once while its graph catches up.

Opening a collection replays the log after its checkpoint. For an HNSW collection the replayed
rows do not go into the graph during the open (that runs at insertion speed: a minute for a full
log); the index is wrapped in an ``index.catchup.CatchUpIndex``, which searches them exactly and
merges the results with the graph's. A ``CatchUp`` thread then inserts them into the graph in
batches sized to hold the graph's lock about ``BATCH_SECONDS`` (hnswlib on all cores), and puts
the bare graph back once nothing waits. Writes during the catch-up wait as rows too; a
checkpoint (``flush``, ``close``) first finishes the catch-up in its own thread, so what it
saves is one whole graph.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Protocol

import index as ix
from index.catchup import CatchUpIndex as CatchUpIndex

from .contents import Contents

if TYPE_CHECKING:
    from .locking import RWLock

log = logging.getLogger(__name__)

ENABLED = True  # False: replay inserts into the graph during the open, as before
BATCH_SECONDS = 0.05  # how long one batch may hold the graph's lock (searches wait meanwhile)
# Pause between batches: a search waiting for the graph's lock gets it before the next batch
# (a lock is not fair: the thread that just released it would mostly take it again).
PAUSE_SECONDS = 0.002
_FIRST_ROWS = 64
_MAX_ROWS = 8192
_running: weakref.WeakSet[CatchUp] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """At exit, lets each thread finish its batch: hnswlib's worker threads must not be running
    when the process exits (C++ aborts: "terminate called without an active exception")."""
    for c in list(_running):
        c.stop()
    for c in list(_running):
        c._thread.join(30)


def wrap(contents: Contents) -> CatchUpIndex | None:
    """Wraps the checkpointed HNSW index of ``contents`` before replay (None: another kind, or
    catching up is off)."""
    idx = contents.index
    if not ENABLED or type(idx) is not ix.HNSWIndex:
        return None
    wrapper = CatchUpIndex(idx)
    contents.index = wrapper
    return wrapper


class CatchUp:
    """The thread that moves a ``CatchUpIndex``'s waiting rows into its graph.

    ``owner`` holds the collection's ``_contents`` and ``_lock``: the bare graph goes back into
    ``owner._contents`` under the exclusive lock, so that no write is half-way through adding to
    the wrapper when it is retired (``refresh`` hands the thread to another owner).
    """

    def __init__(self, owner: _Owner, wrapper: CatchUpIndex, name: str) -> None:
        self.owner = owner
        self.wrapper = wrapper
        self.name = name
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"vecdex-catchup-{name}", daemon=True
        )

    def start(self) -> CatchUp:
        _running.add(self)
        self._thread.start()
        return self

    @property
    def waiting(self) -> int:
        """Rows not in the graph yet (0 once caught up)."""
        return 0 if self._done.is_set() else self.wrapper.waiting

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until the graph holds every row; False if ``timeout`` passed first."""
        return self._done.wait(timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set() and not self._done.is_set()

    def stop(self) -> None:
        """Stops after the current batch (the rows left keep being searched exactly)."""
        self._stop.set()

    def finish(self) -> None:
        """Moves every waiting row into the graph in the caller's thread and puts the bare graph
        back. The caller keeps writers out (a checkpoint does); searches go on."""
        self.wrapper.finish()
        contents = self.owner._contents
        if contents.index is self.wrapper:
            contents.index = self.wrapper.inner
        self._done.set()

    def _run(self) -> None:
        rows, t0, moved = _FIRST_ROWS, time.perf_counter(), 0
        try:
            while True:
                if self._stop.is_set():
                    return
                t = time.perf_counter()
                n = self.wrapper.move(rows)
                if n == 0:
                    if self._retire():
                        break
                    continue
                moved += n
                # Aim each batch at BATCH_SECONDS of the graph's lock.
                rate = n / max(time.perf_counter() - t, 1e-3)
                rows = int(min(_MAX_ROWS, max(8, rate * BATCH_SECONDS)))
                time.sleep(PAUSE_SECONDS)
        except Exception as e:  # the rows left stay searchable exactly; a checkpoint retries
            self.error = e
            log.exception("collection %r: background indexing failed", self.name)
            return
        log.info(
            "collection %r: %d replayed rows indexed in %.1f s",
            self.name,
            moved,
            time.perf_counter() - t0,
        )

    def _retire(self) -> bool:
        """Puts the bare graph back unless rows came in meanwhile; True when done."""
        with self.owner._lock:
            contents = self.owner._contents
            if contents.index is self.wrapper:
                if self.wrapper.waiting or self.wrapper.move(1):
                    return False
                contents.index = self.wrapper.inner
            self._done.set()
            return True


class _Owner(Protocol):
    """What ``CatchUp`` needs of a collection."""

    _contents: Contents
    _lock: RWLock
