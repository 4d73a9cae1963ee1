"""``index.efgate.EfGate``: searches at one ef share the graph, another ef waits for them to
drain, writers are alone; nobody waiting starves behind a stream of same-ef searches."""

from __future__ import annotations

import threading
import time

import numpy as np

from index import HNSWIndex
from index.efgate import EfGate


class _Graph:
    """Records set_ef calls and whether ef changed while a search was inside."""

    def __init__(self) -> None:
        self.ef = 10
        self.calls: list[int] = []
        self.inside = 0
        self.bad = False

    def set_ef(self, ef: int) -> None:
        if self.inside:
            self.bad = True
        self.ef = ef
        self.calls.append(ef)


def _search(gate: EfGate, g: _Graph, ef: int, hold: float, seen: list) -> None:
    gate.enter(ef)
    try:
        g.inside += 1
        seen.append((ef, g.ef))
        time.sleep(hold)
        g.inside -= 1
    finally:
        gate.leave()


def test_same_ef_searches_overlap_and_never_set_ef() -> None:
    g = _Graph()
    gate = EfGate(g.set_ef, 10)
    inside = threading.Barrier(3, timeout=5)  # all three inside at once, or this times out

    def run() -> None:
        gate.enter(10)
        try:
            inside.wait()
        finally:
            gate.leave()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert g.calls == []


def test_other_ef_waits_for_the_running_searches() -> None:
    g = _Graph()
    gate = EfGate(g.set_ef, 10)
    seen: list = []
    threads = [
        threading.Thread(target=_search, args=(gate, g, ef, 0.02, seen))
        for ef in (10, 64, 10, 128, 64, 10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not g.bad  # ef never changed under a running search
    assert all(asked == graph_ef for asked, graph_ef in seen)
    assert sorted(e for e, _ in seen) == [10, 10, 10, 64, 64, 128]


def test_writer_is_alone_and_is_not_starved() -> None:
    g = _Graph()
    gate = EfGate(g.set_ef, 10)
    stop = threading.Event()
    wrote = threading.Event()
    overlap: list[bool] = []

    def reader() -> None:
        while not stop.is_set():
            gate.enter(10)
            try:
                g.inside += 1
                time.sleep(0.001)
                g.inside -= 1
            finally:
                gate.leave()

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    time.sleep(0.02)
    with gate.exclusive():
        overlap.append(g.inside != 0)
        wrote.set()
    stop.set()
    for t in readers:
        t.join()
    assert wrote.is_set() and overlap == [False]


def test_any_ef_reader_joins_whatever_ef_runs() -> None:
    g = _Graph()
    gate = EfGate(g.set_ef, 10)
    gate.enter(64)
    gate.enter(None)  # e.g. reading stored vectors: needs no particular ef
    gate.leave()
    gate.leave()
    assert g.calls == [64] and gate.ef == 64


def test_hnsw_index_searches_concurrently_at_several_ef_give_sequential_results() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 12)).astype(np.float32)
    idx = HNSWIndex(dim=12, metric="l2", M=8, ef_construction=40)
    idx.add(x, np.arange(2000))
    q = rng.normal(size=(20, 12)).astype(np.float32)
    want = {ef: idx.search(q, 5, ef=ef) for ef in (5, 40, 200)}
    errors: list[BaseException] = []

    def run(ef: int) -> None:
        try:
            for _ in range(20):
                for i in range(q.shape[0]):
                    s, lab = idx.search(q[i], 5, ef=ef)
                    assert np.array_equal(lab[0], want[ef][1][i])
                    assert np.array_equal(s[0], want[ef][0][i])
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(ef,)) for ef in (5, 40, 200, 40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
