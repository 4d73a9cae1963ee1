"""One configuration's build, or its reopen-and-search, in a subprocess of its own (for
``bench.memory``).

Run as ``python -m bench.memory_worker JOB.json``; the job's ``kind`` is ``import`` (import some
modules, report RSS), ``build`` (ingest the dataset in batches read from disk, persist, report
build time and peak RSS) or ``query`` (a fresh process: open what ``build`` persisted, run the
queries, report QPS and the steady-state RSS split into anonymous and file-backed pages). The
result is written as JSON next to the job; labels go to a ``.npy`` and the parent scores them.

This module imports numpy and the standard library only: a raw library's process must not pay
for torch or vecdex, so each system imports its own library when it starts.
"""

from __future__ import annotations

import gc
import importlib
import json
import statistics
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .common import dir_bytes, dist_version

STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")
WARMUP_BATCH = 100
WARMUP_SINGLE = 20


# ---- memory, as the kernel sees it ---------------------------------------------------------------
def proc_status() -> dict[str, float]:
    """``/proc/self/status`` memory lines in MiB: total resident (VmRSS), anonymous, file-backed
    and shared resident pages, and the peak resident size (VmHWM) since start or the last reset."""
    out: dict[str, float] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in STATUS_KEYS:
                out[key] = round(int(rest.split()[0]) / 1024, 1)
    return out


def reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---- reading the dataset -------------------------------------------------------------------------
def _npy_header(f: Any, path: Path) -> tuple[int, int]:
    """Reads a ``.npy`` header, leaving ``f`` at the data: (rows, columns) of a 2-d float32."""
    fmt = np.lib.format
    major, _ = fmt.read_magic(f)
    read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if dtype != np.float32 or len(shape) != 2 or fortran:
        raise ValueError(f"{path}: expected a 2-d C-order float32 array, got {dtype} {shape}")
    return int(shape[0]), int(shape[1])


def read_batches(
    path: Path, batch: int, stop: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, rows)`` of a C-order float32 ``.npy``, ``batch`` rows at a time, read with
    plain reads: the input passes through the page cache, never the process's RSS (a memory map
    would leave every page read resident and counted)."""
    with open(path, "rb") as f:
        n, d = _npy_header(f, path)
        stop = n if stop is None else min(stop, n)
        for start in range(0, stop, batch):
            x = np.empty((min(batch, stop - start), d), dtype=np.float32)
            if f.readinto(x.data.cast("B")) != x.nbytes:
                raise ValueError(f"{path}: truncated at row {start}")
            yield start, x


def rescore(base: np.ndarray, q: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    """Exact inner products of each query with its candidates (rows of the memory-mapped
    full-precision ``base``), best ``k`` labels first, -1 padded."""
    m, c = cand.shape
    vecs = np.asarray(base[np.where(cand < 0, 0, cand).ravel()], dtype=np.float32)
    s = np.einsum("mcd,md->mc", vecs.reshape(m, c, -1), q)
    s[cand < 0] = -np.inf
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand, top, axis=1)


# ---- the systems ---------------------------------------------------------------------------------
class System(ABC):
    """One configuration: ``build`` from batches and ``save`` (build process), then ``open`` and
    ``batch`` / ``single`` searches (query process). ``params`` are its build and search
    parameters; ``labels`` turns what a search returned into int64 rows, untimed."""

    module: ClassVar[str]
    dists: ClassVar[tuple[str, ...]]

    def __init__(self, params: dict[str, Any], dim: int, work: Path, base: Path) -> None:
        self.params, self.dim, self.work, self.base_path = params, dim, work, base
        self.lib = importlib.import_module(self.module)

    @abstractmethod
    def build(self, batches: Iterator[tuple[int, np.ndarray]], n: int) -> None: ...

    @abstractmethod
    def save(self) -> None: ...

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def batch(self, q: np.ndarray, k: int) -> Any: ...

    def single(self, v: np.ndarray, k: int) -> Any:
        return self.batch(v[None], k)

    @abstractmethod
    def labels(self, res: Any, m: int, k: int) -> np.ndarray: ...

    def disk_bytes(self) -> int:
        return dir_bytes(self.work)

    def describe(self) -> dict[str, Any] | None:
        return None

    def versions(self) -> dict[str, str]:
        return {d: dist_version(d) for d in self.dists}


class Vecdex(System):
    """A vecdex collection (``index`` spec, metric ip, string ids) through the public API."""

    module, dists = "engine", ("vecdex", "torch", "faiss-cpu", "hnswlib")

    def build(self, batches: Iterator[tuple[int, np.ndarray]], n: int) -> None:
        self.eng = self.lib.Engine(self.work / "vecdex")
        col = self.eng.create_collection(
            "bench", dim=self.dim, metric="ip", index=self.params["index"], durability="none"
        )
        for start, x in batches:
            col.add([str(i) for i in range(start, start + x.shape[0])], x)

    def save(self) -> None:
        self.eng.close()  # checkpoint: vectors, index, ids to disk; the log emptied

    def open(self) -> None:
        self.col = self.lib.Engine(self.work / "vecdex").open_collection("bench")

    def batch(self, q: np.ndarray, k: int) -> Any:
        return self.col.search_batch(q, k=k).ids

    def single(self, v: np.ndarray, k: int) -> Any:
        return [[h.id for h in self.col.search(v, k=k)]]

    def labels(self, res: Any, m: int, k: int) -> np.ndarray:
        out = np.full((m, k), -1, dtype=np.int64)
        for i, row in enumerate(res):
            ids = [int(s) for s in list(row)[:k] if s is not None]
            out[i, : len(ids)] = ids
        return out

    def describe(self) -> dict[str, Any]:
        d = self.col.describe()
        return {key: d[key] for key in ("index", "count", "bytes_on_disk", "memory") if key in d}


class Hnswlib(System):
    """Raw hnswlib, inner product, ``M`` / ``ef_construction`` / ``ef``."""

    module, dists = "hnswlib", ("hnswlib",)

    def build(self, batches: Iterator[tuple[int, np.ndarray]], n: int) -> None:
        p = self.params
        self.g = self.lib.Index(space="ip", dim=self.dim)
        self.g.init_index(max_elements=n, M=p["M"], ef_construction=p["ef_construction"])
        for start, x in batches:
            self.g.add_items(x, np.arange(start, start + x.shape[0]))

    def save(self) -> None:
        self.g.save_index(str(self.work / "hnswlib.bin"))

    def open(self) -> None:
        self.g = self.lib.Index(space="ip", dim=self.dim)
        self.g.load_index(str(self.work / "hnswlib.bin"))
        self.g.set_ef(self.params["ef"])

    def batch(self, q: np.ndarray, k: int) -> Any:
        return self.g.knn_query(q, k=k)[0]

    def labels(self, res: Any, m: int, k: int) -> np.ndarray:
        return np.asarray(res, dtype=np.int64)


class Faiss(System):
    """Raw faiss, inner product: ``flat`` (IndexFlatIP), ``ivf`` (IndexIVFFlat, or IndexIVFPQ
    with ``pq``), ``hnsw_sq8`` (IndexHNSWSQ, int8) and ``binary_hnsw`` (IndexBinaryHNSW over
    sign bits). With ``oversample`` the top ``k * oversample`` candidates are rescored exactly
    from the memory-mapped full vectors (the dataset's ``.npy``, kept on disk), as a quantized
    vecdex collection rescores from its own."""

    module, dists = "faiss", ("faiss-cpu",)

    @property
    def kind(self) -> str:
        return str(self.params["kind"])

    def train_rows(self) -> int:
        """How many leading rows train the index: as many as vecdex's IVF waits for."""
        p = self.params
        if self.kind == "ivf":
            return 39 * max(p["nlist"], (1 << p.get("nbits", 8)) if p.get("pq") else 0)
        return 100_000 if self.kind == "hnsw_sq8" else 0

    def _empty(self) -> Any:
        faiss, p, ip = self.lib, self.params, self.lib.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if self.kind == "hnsw_sq8":
            ix = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_8bit, p["M"], ip)
            ix.hnsw.efConstruction = p["ef_construction"]
            return ix
        if self.kind == "binary_hnsw":
            ix = faiss.IndexBinaryHNSW(8 * ((self.dim + 7) // 8), p["M"])
            ix.hnsw.efConstruction = p["ef_construction"]
            return ix
        self.quantizer = faiss.IndexFlatIP(self.dim)
        if p.get("pq"):
            return faiss.IndexIVFPQ(
                self.quantizer, self.dim, p["nlist"], p["pq"], p.get("nbits", 8), ip
            )
        return faiss.IndexIVFFlat(self.quantizer, self.dim, p["nlist"], ip)

    def _codes(self, x: np.ndarray) -> np.ndarray:
        return np.packbits(x > 0, axis=1) if self.kind == "binary_hnsw" else x

    def build(self, batches: Iterator[tuple[int, np.ndarray]], n: int) -> None:
        self.ix = self._empty()
        need, held = self.train_rows(), []
        for _, x in batches:
            if not need:
                self.ix.add(self._codes(x))
                continue
            held.append(x)
            if sum(len(h) for h in held) >= need:
                self._train_add(np.concatenate(held), need)
                held, need = [], 0
        if held:  # fewer rows than the training sample: train on them all
            self._train_add(np.concatenate(held), None)

    def _train_add(self, x: np.ndarray, need: int | None) -> None:
        self.ix.train(x[:need])
        self.ix.add(self._codes(x))

    def _path(self) -> str:
        return str(self.work / "index.faiss")

    def save(self) -> None:
        write = self.lib.write_index_binary if self.kind == "binary_hnsw" else self.lib.write_index
        write(self.ix, self._path())

    def open(self) -> None:
        read = self.lib.read_index_binary if self.kind == "binary_hnsw" else self.lib.read_index
        self.ix = read(self._path())
        p = self.params
        self.cands = p.get("oversample", 0)
        if self.kind == "ivf":
            self.ix.nprobe = p["nprobe"]
        elif self.kind in ("hnsw_sq8", "binary_hnsw"):
            self.ix.hnsw.efSearch = p["ef"]
        if self.cands:
            self.base = np.load(self.base_path, mmap_mode="r")

    def batch(self, q: np.ndarray, k: int) -> Any:
        c = k * self.cands if self.cands else k
        if self.kind in ("hnsw_sq8", "binary_hnsw"):
            self.ix.hnsw.efSearch = max(self.params["ef"], c)
        labels = self.ix.search(self._codes(q), c)[1]
        return rescore(self.base, q, labels, k) if self.cands else labels

    def labels(self, res: Any, m: int, k: int) -> np.ndarray:
        return np.asarray(res, dtype=np.int64)

    def disk_bytes(self) -> int:
        # A rescoring peer needs the full vectors on disk too.
        extra = self.base_path.stat().st_size if self.params.get("oversample") else 0
        return dir_bytes(self.work) + extra


SYSTEMS: dict[str, type[System]] = {"vecdex": Vecdex, "hnswlib": Hnswlib, "faiss": Faiss}


# ---- the jobs ------------------------------------------------------------------------------------
def _system(job: dict[str, Any]) -> System:
    base = Path(job["data_dir"]) / "base.npy"
    return SYSTEMS[job["family"]](dict(job["params"]), job["dim"], Path(job["work_dir"]), base)


def run_import(job: dict[str, Any]) -> dict[str, Any]:
    for name in job["modules"]:
        importlib.import_module(name)
    gc.collect()
    return {"modules": job["modules"], "rss": proc_status()}


def run_build(job: dict[str, Any]) -> dict[str, Any]:
    work = Path(job["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    start = proc_status()
    sysm = _system(job)
    out: dict[str, Any] = {"rss_start": start, "versions": sysm.versions()}
    out["peak_reset"] = reset_peak()
    out["rss_imported"] = proc_status()
    base = Path(job["data_dir"]) / "base.npy"
    n = job["n"]
    t0 = time.perf_counter()
    sysm.build(read_batches(base, job["batch"], n), n)
    out["build_s"] = round(time.perf_counter() - t0, 3)
    out["rss_built"] = proc_status()
    t0 = time.perf_counter()
    sysm.save()
    out["save_s"] = round(time.perf_counter() - t0, 3)
    out["rss_saved"] = proc_status()
    out["peak_mb"] = out["rss_saved"]["VmHWM"]
    out["peak_increase_mb"] = round(out["peak_mb"] - out["rss_imported"]["VmRSS"], 1)
    out["disk_bytes"] = sysm.disk_bytes()
    return out


def _timed(fn: Any, arg: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    res = fn(arg)
    return time.perf_counter() - t0, res


def run_query(job: dict[str, Any]) -> dict[str, Any]:
    k, repeats = job["k"], job["repeats"]
    out: dict[str, Any] = {"rss_start": proc_status()}
    sysm = _system(job)
    out["rss_imported"] = proc_status()
    torch_at_import = "torch" in sys.modules
    t0 = time.perf_counter()
    sysm.open()
    out["open_s"] = round(time.perf_counter() - t0, 3)
    out["rss_opened"] = proc_status()
    q = np.ascontiguousarray(np.load(Path(job["data_dir"]) / "queries.npy"), dtype=np.float32)
    m = q.shape[0]
    sysm.batch(q[:WARMUP_BATCH], k)
    times, res = [], None
    for _ in range(repeats):
        dt, res = _timed(lambda a: sysm.batch(a, k), q)
        times.append(dt)
    labels = sysm.labels(res, m, k)
    med = statistics.median(times)
    out["batch"] = {"qps": round(m / med, 1), "seconds": [round(t, 4) for t in times], "m": m}
    ns = min(job["single_queries"], m)
    rows = [q[i] for i in range(ns)]
    for v in rows[:WARMUP_SINGLE]:
        sysm.single(v, k)
    per_pass, single = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        single = [sysm.single(v, k) for v in rows]
        per_pass.append(time.perf_counter() - t0)
    med = statistics.median(per_pass) / ns
    one = np.concatenate([sysm.labels(r, 1, k) for r in single])
    out["single"] = {
        "qps": round(1 / med, 1),
        "latency_ms": round(med * 1e3, 4),
        "queries": ns,
        "agrees_with_batch": round(float((one == labels[:ns]).all(axis=1).mean()), 4),
    }
    gc.collect()
    out["rss_after_queries"] = proc_status()  # the steady state the targets are on
    # torch imported by the first search that needed it: part of the import cost, not the data's
    out["torch_loaded_lazily"] = "torch" in sys.modules and not torch_at_import
    out["describe"] = sysm.describe()
    out["disk_bytes"] = sysm.disk_bytes()
    np.save(job["labels"], labels)
    return out


RUNNERS = {"import": run_import, "build": run_build, "query": run_query}


def main(argv: list[str]) -> int:
    path = Path(argv[0])
    job = json.loads(path.read_text())
    t0 = time.perf_counter()
    try:
        result = {"status": "ok", **RUNNERS[job["kind"]](job)}
    except Exception as e:  # noqa: BLE001 - reported in the result; the other configurations go on
        traceback.print_exc()
        result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    Path(job["result"]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
