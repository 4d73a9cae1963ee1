"""One job of the scale benchmark, run in a fresh process so that its RSS and its Ray state are its
own: ``python -m bench.scale_worker JOB_JSON``. Prints one line ``RESULT {json}`` (the parent
reads the last such line; Ray may print other lines).

Jobs: ``prep-vectors`` (the Parquet file of clustered vectors), ``prep-fanout`` (base, queries and
exact top-k as ``.npy``), ``build`` (fan-out collections, cached), ``index-text``,
``index-vectors`` (one ingest configuration each) and ``fanout`` (latency and QPS of one hosted
collection).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 128


# ---- memory ------------------------------------------------------------------------------------
def proc_status() -> dict[str, float]:
    """VmRSS and VmHWM of this process in MB (VmHWM is this exec's own peak)."""
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(rest.split()[0]) / 1024, 1)
    return out


def maxrss_mb() -> float:
    """``ru_maxrss`` (KiB on Linux) in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class TreeSampler:
    """Peak summed RSS of this process and its descendants (a local Ray's GCS, raylet and
    workers are descendants of the driver that started it), sampled every ``every`` s."""

    def __init__(self, every: float = 0.5) -> None:
        import psutil

        self._me = psutil.Process()
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        total = 0
        for p in [self._me, *self._me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak_mb = max(self.peak_mb, total / 2**20)

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self._every):
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak_mb, 1)


# ---- data --------------------------------------------------------------------------------------
def clustered(seed: int) -> Any:
    """A seeded draw(m) of SYNTHETIC clustered unit vectors: 1,000 Gaussian clusters in a 32-d
    latent space mapped linearly to 128-d plus isotropic noise (as ``bench.memory_data``)."""
    latent, clusters = 32, 1000
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, latent)).astype(np.float32)
    proj = (rng.standard_normal((latent, DIM)) / np.sqrt(latent)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        c = rng.integers(clusters, size=m)
        z = centers[c] + 0.5 * rng.standard_normal((m, latent), dtype=np.float32)
        x = z @ proj + 0.1 * rng.standard_normal((m, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32)

    return draw


def prep_vectors(job: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, n, group = Path(job["path"]), int(job["n"]), int(job["row_group"])
    draw = clustered(job["seed"])
    schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), DIM))])
    tmp = path.with_suffix(".tmp")
    t0 = time.perf_counter()
    with pq.ParquetWriter(tmp, schema) as w:
        for a in range(0, n, group):
            x = draw(min(group, n - a))
            vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM)
            ids = pa.array(np.arange(a, a + x.shape[0], dtype=np.int64))
            w.write_table(pa.table({"id": ids, "vector": vec}, schema=schema), row_group_size=group)
    tmp.replace(path)
    return {"path": str(path), "bytes": path.stat().st_size, "seconds": time.perf_counter() - t0}


def prep_fanout(job: dict[str, Any]) -> dict[str, Any]:
    d, n, nq, k = Path(job["dir"]), int(job["n"]), int(job["queries"]), int(job["k"])
    draw = clustered(job["seed"])
    t0 = time.perf_counter()
    base = np.concatenate([draw(min(100_000, n - a)) for a in range(0, n, 100_000)])
    queries = draw(nq)
    gt = np.empty((nq, k), dtype=np.int64)
    for a in range(0, nq, 250):  # exact top-k by inner product (unit vectors: cosine)
        s = queries[a : a + 250] @ base.T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1)
        gt[a : a + 250] = np.take_along_axis(top, order, axis=1)
    for name, arr in (("base", base), ("queries", queries), ("gt", gt)):
        np.save(d / f"{name}.tmp.npy", arr)
        os.replace(d / f"{name}.tmp.npy", d / f"{name}.npy")
    return {"seconds": time.perf_counter() - t0}


# ---- fan-out collections ----------------------------------------------------------------------
def build(job: dict[str, Any]) -> dict[str, Any]:
    """Builds each missing collection of ``job["collections"]`` in-process (a Ray-hosted
    collection opens the same files); ``done.json`` marks a complete one."""
    from engine import Engine

    base = np.load(Path(job["data"]) / "base.npy", mmap_mode="r")
    built = {}
    for c in job["collections"]:
        path = Path(c["dir"])
        if (path / "done.json").exists():
            continue
        t0 = time.perf_counter()
        eng = Engine(path)
        if "c" in eng.list_collections():
            eng.drop_collection("c")
        col = eng.create_collection("c", dim=DIM, index=c["spec"], shards=c["shards"])
        col.durability = "none"
        for a in range(0, base.shape[0], 50_000):
            x = np.ascontiguousarray(base[a : a + 50_000])
            col.add([str(i) for i in range(a, a + x.shape[0])], x)
        eng.close()
        seconds = time.perf_counter() - t0
        (path / "done.json").write_text(json.dumps({"build_s": seconds}))
        built[str(path)] = seconds
    return {"built": built}


def percentiles_ms(ns: list[int]) -> dict[str, float]:
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "n": int(ms.size),
    }


def fanout(job: dict[str, Any]) -> dict[str, Any]:
    from engine import Engine

    t0 = time.perf_counter()
    ray = None
    if job["host"] == "ray":
        from engine import raycluster

        raycluster.connect("local", num_cpus=job["ray_cpus"])
        ray = "local"
    ray_start_s = time.perf_counter() - t0
    data = Path(job["data"])
    queries = np.load(data / "queries.npy")
    gt = np.load(data / "gt.npy")
    k, params = int(job["k"]), dict(job["params"])
    t1 = time.perf_counter()
    eng = Engine(job["dir"], read_only=True, verify="quick", ray=ray)
    col = eng.open_collection("c")
    open_s = time.perf_counter() - t1
    single_q, batch_q = queries[: job["single"]], queries[: job["batch"]]
    for q in queries[:10]:  # warm-up: first calls, caches, actor threads
        col.search(q, k=k, **params)
    col.search_batch(queries[:50], k=k, **params)
    ns = []
    for q in single_q:
        a = time.perf_counter_ns()
        col.search(q, k=k, **params)
        ns.append(time.perf_counter_ns() - a)
    passes, res = [], None
    for _ in range(job["repeats"]):
        a = time.perf_counter()
        res = col.search_batch(batch_q, k=k, **params)
        passes.append(time.perf_counter() - a)
    assert res is not None
    found = np.array([[-1 if i is None else int(i) for i in row] for row in res.ids])
    hits = sum(len(set(found[j]) & set(gt[j, :k])) for j in range(len(batch_q)))
    described = col.describe()
    out = {
        "ray_start_s": round(ray_start_s, 2) if ray else None,
        "open_s": round(open_s, 3),
        "single": percentiles_ms(ns),
        "batch": {
            "queries": len(batch_q),
            "seconds": [round(s, 4) for s in passes],
            "qps": round(len(batch_q) / float(np.median(passes)), 1),
        },
        "recall@10_vs_exact": round(hits / (len(batch_q) * k), 4),
        "count": described["count"],
        "bytes_on_disk": described["bytes_on_disk"],
        "memory": described["memory"],
        "hosted": described.get("hosted", "in-process"),
    }
    eng.close()
    return out


# ---- ingest runs -------------------------------------------------------------------------------
def index_run(job: dict[str, Any]) -> dict[str, Any]:
    """One ingest configuration into a fresh engine directory; shards in-process."""
    import shutil

    import torch

    from engine import Engine
    from engine.ingest import ingest

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    sampler = TreeSampler()
    work = Path(job["work"])
    shutil.rmtree(work, ignore_errors=True)
    ray_start_s = None
    if job.get("ray"):
        from engine import raycluster

        t0 = time.perf_counter()
        raycluster.connect("local", num_cpus=job["ray_cpus"])
        ray_start_s = round(time.perf_counter() - t0, 2)
    eng = Engine(work)
    options: dict[str, Any] = {"index": job["spec"], "shards": job["shards"]}
    if job.get("vector_column"):
        options["vector_column"] = job["vector_column"]
    if job.get("ray"):
        options.update(ray="local", encoders=job.get("encoders", 1))
        if job.get("cpus_per_encoder"):
            options["cpus_per_encoder"] = job["cpus_per_encoder"]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    report = ingest(eng, job["input"], "c", **options)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    col = eng.open_collection("c")
    described = col.describe()
    eng.close()
    tree_peak = sampler.stop()
    if not job.get("keep"):
        shutil.rmtree(work, ignore_errors=True)
    return {
        "rows": report.rows,
        "added": report.added,
        "wall_s": round(wall, 3),
        "rows_per_s": round(report.rows / wall, 2),
        "report_seconds": round(report.seconds, 3),
        "report_docs_per_s": round(report.docs_per_s, 2),
        "stages": {k: round(v, 3) for k, v in report.stages.items()},
        "driver_cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
        "ray_start_s": ray_start_s,
        "count": described["count"],
        "bytes_on_disk": described["bytes_on_disk"],
        "memory": described["memory"],
        "peak_rss_mb": maxrss_mb(),
        "proc": proc_status(),
        "process_tree_peak_rss_mb": tree_peak,
        "torch_threads": torch.get_num_threads(),
    }


JOBS = {
    "prep-vectors": prep_vectors,
    "prep-fanout": prep_fanout,
    "build": build,
    "fanout": fanout,
    "index-text": index_run,
    "index-vectors": index_run,
}


def main() -> int:
    job = json.loads(sys.argv[1])
    t0 = time.perf_counter()
    out = JOBS[job["kind"]](job)
    out["child_wall_s"] = round(time.perf_counter() - t0, 2)
    out.setdefault("peak_rss_mb", maxrss_mb())
    print("RESULT " + json.dumps(out), flush=True)
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()  # stops the local cluster this process started
    os._exit(0)  # skip Ray's and torch's slow interpreter teardown; the result is out


if __name__ == "__main__":
    sys.exit(main())
