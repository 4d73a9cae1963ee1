"""Who may use an hnswlib graph at once: searches at one ef together, writers alone.

hnswlib's rules (its README and ``hnswalg.h``): ``knn_query`` calls may run concurrently with each
other (each releases the GIL and only reads the graph), but not with ``add_items``,
``mark_deleted``, ``unmark_deleted`` or ``resize_index`` (these relink, flag or reallocate what a
search walks without locks). The search breadth ``ef`` is one field of the graph that every
``searchKnn`` reads, so ``set_ef`` while a query runs is a data race. Hence: searches at the
graph's current ef share it; a search at another ef waits until those have drained, sets ef, and
goes; writers are exclusive. A plain ``threading.Lock`` around every query (what this replaces)
serialised all searches although the library releases the GIL for them.

Python's ``threading`` has no shared lock; this one is small: two short critical sections per
search on an uncontended ``Lock``, and a ``Condition`` only for those that must wait. While a
writer or a search at another ef waits, new searches at the current ef queue behind it, so a
stream of searches at one ef starves neither.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class EfGate:
    """Shared access per ef, exclusive access for writers.

    Args:
        set_ef: applies an ef to the graph (``hnswlib.Index.set_ef``); called only while no
            search runs.
        ef: the graph's ef now.

    Example:
        >>> gate = EfGate(g.set_ef, 64)
        >>> gate.enter(64); g.knn_query(q, k=10); gate.leave()
        >>> with gate.exclusive():
        ...     g.add_items(x, labels)
    """

    __slots__ = ("_mu", "_cond", "_readers", "_writer", "_waiting", "_pending", "_set_ef", "ef")

    def __init__(self, set_ef: Callable[[int], Any], ef: int) -> None:
        self._mu = threading.Lock()
        self._cond = threading.Condition(self._mu)
        self._readers = 0
        self._writer = False
        self._waiting = 0
        # Writers and ef changes waiting: while any waits, no new search at the old ef starts,
        # so a stream of searches at one ef starves neither.
        self._pending = 0
        self._set_ef = set_ef
        self.ef = ef

    def rebind(self, set_ef: Callable[[int], Any], ef: int) -> None:
        """Points the gate at a new graph (a load); the caller holds it exclusively."""
        self._set_ef = set_ef
        self.ef = ef

    def enter(self, ef: int | None) -> None:
        """Starts a search at ``ef`` (None: any ef, e.g. reading stored vectors)."""
        with self._mu:
            switching = False  # waiting to change ef: queued like a writer
            self._waiting += 1
            try:
                while True:
                    free = not self._writer and (switching or not self._pending)
                    if free and (not self._readers or ef is None or ef == self.ef):
                        break
                    if not switching and ef is not None and ef != self.ef:
                        switching = True
                        self._pending += 1  # searches at the old ef now queue behind it
                    self._cond.wait()
            finally:
                self._waiting -= 1
                if switching:
                    self._pending -= 1
            if ef is not None and ef != self.ef:
                self._set_ef(ef)  # no search runs now: safe to change
                self.ef = ef
            self._readers += 1
            if switching and self._waiting:
                self._cond.notify_all()  # others at this ef may join

    def leave(self) -> None:
        """Ends a search started with ``enter``."""
        with self._mu:
            self._readers -= 1
            if not self._readers and self._waiting:
                self._cond.notify_all()

    def exclusive(self) -> _Exclusive:
        """``with gate.exclusive():`` no search or other writer runs meanwhile."""
        return _Exclusive(self)

    def _acquire(self) -> None:
        with self._mu:
            self._waiting += 1
            self._pending += 1  # new searches queue behind a waiting writer
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
                self._pending -= 1
            self._writer = True

    def _release(self) -> None:
        with self._mu:
            self._writer = False
            if self._waiting:
                self._cond.notify_all()


class _Exclusive:
    __slots__ = ("_gate",)

    def __init__(self, gate: EfGate) -> None:
        self._gate = gate

    def __enter__(self) -> None:
        self._gate._acquire()

    def __exit__(self, *exc: object) -> None:
        self._gate._release()
