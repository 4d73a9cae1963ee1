"""HNSW graph search through hnswlib: growth without rebuild, deletes, filtered search."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from . import memory, storage
from .base import Index
from .efgate import EfGate
from .hnsw_format import check_hnsw_file
from .labelmap import LabelSet
from .metric import Metric
from .validate import check_labels

_SPACE = {Metric.COSINE: "ip", Metric.IP: "ip", Metric.L2: "l2"}
_INITIAL_CAPACITY = 1024
# What hnswlib allocates beside its serialized data (hnswalg.h, 64-bit Linux): per slot of the
# capacity a link-list pointer, a level and a std::mutex; per element a label -> slot hash-map
# node and bucket.
_SLOT_BYTES = 8 + 4 + 40
_ELEMENT_BYTES = 40


class HNSWIndex(Index):
    """Approximate search on an hnswlib graph.

    Spec: ``hnsw:M=16,ef_construction=200,ef=64``. ``ef`` is the default search breadth and can be
    overridden per call (``search(q, k, ef=256)``); it is raised to ``k`` when smaller. Capacity
    doubles as vectors arrive; removed labels are marked deleted and their slots reused.
    Cosine vectors are normalised once and searched by inner product.
    """

    kind = "hnsw"
    file_parts = {"graph.bin": "graph", "labels.npy": "labels"}
    config_keys = {"M": 16, "ef_construction": 200, "ef": 64}
    search_keys = ("ef",)

    def __init__(self, dim: int, metric: str | Metric = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        if self.params["M"] < 2:
            raise ValueError(f"hnsw parameter M must be >= 2, got {self.params['M']}")
        self._live = LabelSet()
        self._deleted = 0
        # Removed labels that may still name their deleted slot in the graph (see ``_add``).
        self._ghosts: set[int] = set()
        self._g = self._new_graph(_INITIAL_CAPACITY)
        # Searches at one ef share the graph; writes (and ef changes) have it alone.
        self._gate = EfGate(self._g.set_ef, self.params["ef"])

    def _new_graph(self, capacity: int) -> hnswlib.Index:
        g = hnswlib.Index(space=_SPACE[self.metric], dim=self.dim)
        g.init_index(
            max_elements=capacity,
            M=self.params["M"],
            ef_construction=self.params["ef_construction"],
            random_seed=100,
            allow_replace_deleted=True,
        )
        g.set_ef(self.params["ef"])
        return g

    def __len__(self) -> int:
        return len(self._live)

    def contains(self, labels: np.ndarray) -> np.ndarray:
        return self._live.contains(labels)

    def labels(self) -> np.ndarray:
        return self._live.array()

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        self._gate.enter(None)
        try:
            return np.asarray(self._g.get_items(labels, return_type="numpy"), dtype=np.float32)
        finally:
            self._gate.leave()

    def reserve(self, n: int) -> None:
        with self._gate.exclusive():
            if n > self._g.get_max_elements():
                self._g.resize_index(int(n))

    def _ram_parts(self) -> dict[str, int]:
        """graph: hnswlib's own size of its data (``index_file_size``: every element's vector,
        level-0 links and label, plus upper-level links; deleted elements included), plus the
        bookkeeping it allocates per slot of the capacity and per element (``_SLOT_BYTES``,
        ``_ELEMENT_BYTES``); labels: the live and removed label sets (Python ints)."""
        self._gate.enter(None)  # reads sizes only
        try:
            g = self._g
            graph = (
                g.index_file_size()
                + g.get_max_elements() * _SLOT_BYTES
                + g.element_count * _ELEMENT_BYTES
            )
        finally:
            self._gate.leave()
        labels = self._live.ram_bytes() + memory.int_container_ram(self._ghosts)
        return {"graph": graph, "labels": labels}

    def _add(self, x: np.ndarray, labels: np.ndarray) -> None:
        with self._gate.exclusive():
            x, rest = self._revive(x, labels)
            # Fresh slots are needed for what the deleted ones cannot absorb.
            need = self._g.element_count + max(0, x.shape[0] - self._deleted)
            if need > self._g.get_max_elements():
                self._g.resize_index(max(need, 2 * self._g.get_max_elements()))
            reuse = min(self._deleted, x.shape[0])
            if reuse:
                self._g.add_items(x[:reuse], rest[:reuse], replace_deleted=True)
                self._deleted -= reuse
            if reuse < x.shape[0]:
                self._g.add_items(x[reuse:], rest[reuse:])
            self._live.add(labels)
            if len(self._ghosts) > 2 * self._deleted + _INITIAL_CAPACITY:
                self._ghosts = self._dead_in_graph()

    def make_room(self, n: int) -> None:
        """Grows the graph now so that ``n`` more vectors go in without a resize (the hook of
        ``index.catchup``, which adds while searches run: a resize moves the graph's memory, so
        only a caller that holds searches off may cause one)."""
        with self._gate.exclusive():
            need = self._g.element_count + max(0, int(n) - self._deleted)
            if need > self._g.get_max_elements():
                self._g.resize_index(max(need, 2 * self._g.get_max_elements()))

    def _revive(self, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Re-adds removed labels into their own deleted slots; returns the other rows.

        hnswlib's ``replace_deleted`` would put such a label into some other vacant slot while its
        old slot keeps the label; when that old slot is reused later, hnswlib erases the label's
        lookup entry and the live label reads as "not found" (``get_items``, ``mark_deleted``).
        """
        if not self._ghosts:
            return x, labels
        revive = np.zeros(labels.shape[0], dtype=bool)
        for i, lab in enumerate(labels.tolist()):
            if lab in self._ghosts:
                self._ghosts.discard(lab)
                try:
                    self._g.unmark_deleted(lab)
                except RuntimeError:
                    continue  # its slot was already reused by another label
                revive[i] = True
        if not revive.any():
            return x, labels
        self._g.add_items(x[revive], labels[revive])  # an existing label: updated in place
        self._deleted -= int(revive.sum())
        return x[~revive], labels[~revive]

    def _dead_in_graph(self, stored: np.ndarray | None = None) -> set[int]:
        """Labels the graph still holds (in deleted slots) that are not live."""
        if stored is None:
            stored = np.asarray(self._g.get_ids_list(), dtype=np.int64)
        return set(stored[~self._live.contains(stored)].tolist())

    def _remove(self, labels: np.ndarray) -> None:
        with self._gate.exclusive():
            for lab in labels.tolist():
                self._g.mark_deleted(lab)
                self._ghosts.add(lab)
            self._live.discard(labels)
            self._deleted += len(labels)

    def _to_scores(self, dist: np.ndarray) -> np.ndarray:
        if self.metric is Metric.L2:
            return -dist
        return (1.0 - dist).astype(np.float32, copy=False)

    def _search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        m = q.shape[0]
        pool = len(self) if allowed is None else allowed.size
        kk = min(k, pool)
        ef = max(int(params["ef"]) if "ef" in params else self.params["ef"], kk)
        filt = None
        if allowed is not None:
            filt = set(allowed.tolist()).__contains__
        gate = self._gate
        gate.enter(ef)
        try:
            # One query on the calling thread: hnswlib would start no thread for it anyway.
            lab, dist = self._g.knn_query(q, k=kk, num_threads=1 if m == 1 else -1, filter=filt)
        except RuntimeError:
            # The graph walk found fewer than kk results (sparse filter or heavy deletions).
            lab = None
        finally:
            gate.leave()
        if lab is None:
            subset = allowed if allowed is not None else self.labels()
            return self.search_subset(q, k, subset)
        if kk == k:
            return self._to_scores(dist), lab.astype(np.int64)
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        labels = np.full((m, k), -1, dtype=np.int64)
        scores[:, :kk] = self._to_scores(dist)
        labels[:, :kk] = lab
        return scores, labels

    def _save_files(self, directory: Path) -> list[str]:
        tmp = directory / ".graph.bin.tmp"
        self._gate.enter(None)  # saving reads the graph: searches may go on
        try:
            self._g.save_index(str(tmp))
        finally:
            self._gate.leave()
        storage.fsync_file(tmp)
        os.replace(tmp, directory / "graph.bin")
        storage.save_npy(directory / "labels.npy", self.labels())
        return ["graph.bin", "labels.npy"]

    def _load_files(self, directory: Path, manifest: dict[str, Any]) -> None:
        path = directory / "graph.bin"
        labels = storage.load_npy(directory / "labels.npy", np.int64, 1)
        try:
            check_labels(labels, labels.shape[0])
        except (ValueError, TypeError) as e:
            raise storage.CorruptFileError(directory / "labels.npy", str(e)) from None
        count = check_hnsw_file(path, self.dim, self.params["M"])
        if count < labels.shape[0]:
            raise storage.CorruptFileError(
                path, f"holds {count} elements, fewer than {labels.shape[0]} live labels"
            )
        g = hnswlib.Index(space=_SPACE[self.metric], dim=self.dim)
        g.load_index(
            str(path), max_elements=max(count, _INITIAL_CAPACITY), allow_replace_deleted=True
        )
        g.set_ef(self.params["ef"])
        stored = np.asarray(g.get_ids_list(), dtype=np.int64)
        if not np.isin(labels, stored).all():
            raise storage.CorruptFileError(path, "live labels missing from the graph")
        self._g = g
        self._gate.rebind(g.set_ef, self.params["ef"])
        self._live = LabelSet()
        self._live.add(labels)
        self._deleted = count - len(self._live)
        self._ghosts = self._dead_in_graph(stored)
