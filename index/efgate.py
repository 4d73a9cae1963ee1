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
search on an uncontended ``Lock``, and a ``Condition`` only for those that must wait. Once anyone
waits, newcomers queue too, so a stream of searches at one ef starves neither writers nor a
search at another ef.
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

    __slots__ = ("_mu", "_cond", "_readers", "_writer", "_waiting", "_epoch", "_set_ef", "ef")

    def __init__(self, set_ef: Callable[[int], Any], ef: int) -> None:
        self._mu = threading.Lock()
        self._cond = threading.Condition(self._mu)
        self._readers = 0
        self._writer = False
        self._waiting = 0
        self._epoch = 0  # counts drains (no search left) and writer exits
        self._set_ef = set_ef
        self.ef = ef

    def rebind(self, set_ef: Callable[[int], Any], ef: int) -> None:
        """Points the gate at a new graph (a load); the caller holds it exclusively."""
        self._set_ef = set_ef
        self.ef = ef

    def enter(self, ef: int | None) -> None:
        """Starts a search at ``ef`` (None: any ef, e.g. reading stored vectors)."""
        with self._mu:
            if (
                not self._writer
                and not self._waiting
                and (not self._readers or ef is None or ef == self.ef)
            ):
                self._admit(ef)
                return
            # Queue: behind a writer, behind searches at another ef, or (when others wait
            # already) until the searches running now have drained.
            self._waiting += 1
            epoch = self._epoch
            try:
                while self._writer or (
                    self._readers and (epoch == self._epoch or (ef is not None and ef != self.ef))
                ):
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._admit(ef)

    def _admit(self, ef: int | None) -> None:
        if ef is not None and ef != self.ef:
            self._set_ef(ef)  # no search runs now: safe to change
            self.ef = ef
        self._readers += 1

    def leave(self) -> None:
        """Ends a search started with ``enter``."""
        with self._mu:
            self._readers -= 1
            if not self._readers:
                self._epoch += 1
                if self._waiting:
                    self._cond.notify_all()

    def exclusive(self) -> _Exclusive:
        """``with gate.exclusive():`` no search or other writer runs meanwhile."""
        return _Exclusive(self)

    def _acquire(self) -> None:
        with self._mu:
            if self._writer or self._readers or self._waiting:
                self._waiting += 1
                try:
                    while self._writer or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting -= 1
            self._writer = True

    def _release(self) -> None:
        with self._mu:
            self._writer = False
            self._epoch += 1
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
