"""One system's build and sweeps, run in a subprocess of its own so that its peak RSS is its own.

The parent (``bench.ann``) writes a ``Job`` as JSON and runs ``python -m bench.ann --worker FILE``;
the worker writes a ``RunResult`` as JSON next to it. The head-to-head (``bench.ann_h2h``) runs in
such a subprocess too (``bench.ann`` dispatches: neither module imports the other's runner).
"""

from __future__ import annotations

import gc
import shutil
import statistics
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Imported before any adapter's RSS baseline: recall is scored with the library's one definition.
from index import recall_at_k

from .ann_systems import ADAPTERS, Skip, System

WARMUP_BATCH = 100
WARMUP_SINGLE = 20


@dataclass(frozen=True)
class Run:
    """A run descriptor: one system, its build parameters and its sweeps.

    ``sweep`` values of ``sweep_key`` (``ef`` / ``nprobe``; None: nothing to sweep) are tried in
    batch mode (all queries in one call), ``single_sweep`` values one query at a time on the first
    ``single_queries`` queries; the library's default parameters are always measured in batch mode.
    ``persist`` saves the index after the build (timed apart) for the head-to-head run.
    """

    name: str
    family: str
    params: dict[str, Any]
    sweep_key: str | None = None
    sweep: tuple[int, ...] = ()
    single_sweep: tuple[int, ...] = ()
    single_queries: int = 500
    persist: bool = False
    label: str = ""


@dataclass(frozen=True)
class Job:
    run: Run
    data_dir: str
    work_dir: str
    result: str
    k: int
    repeats: int


@dataclass
class Point:
    """One operating point: parameter value, recall@k and throughput (median over repeats)."""

    param: int | None
    recall: float
    qps: float
    latency_us: float
    seconds: list[float]
    queries: int
    variant: str = "batch"


@dataclass
class RunResult:
    name: str
    family: str
    label: str
    params: dict[str, Any]
    sweep_key: str | None
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    build_s: float = float("nan")
    persist_s: float | None = None
    rss_baseline_mb: float = float("nan")
    rss_build_mb: float = float("nan")
    rss_peak_mb: float = float("nan")
    rss_method: str = ""
    artifact: dict[str, Any] | None = None
    default: Point | None = None
    default_param: int | None = None
    batch: list[Point] = field(default_factory=list)
    single: list[Point] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    wall_s: float = float("nan")


# ---- memory ----------------------------------------------------------------------------------
def _status_kb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


class Rss:
    """Peak RSS since ``reset``: Linux's VmHWM reset through /proc/self/clear_refs when it can,
    else ``ru_maxrss`` (a whole-process peak, so the increase is a lower bound)."""

    def __init__(self) -> None:
        self.method = "VmHWM"
        self.baseline_mb = 0.0

    def reset(self) -> None:
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.method = "ru_maxrss"
        self.baseline_mb = self.current_mb()

    def current_mb(self) -> float:
        import psutil

        return psutil.Process().memory_info().rss / 2**20

    def peak_mb(self) -> float:
        hwm = _status_kb("VmHWM") if self.method == "VmHWM" else None
        if hwm is None:
            import resource

            self.method = "ru_maxrss"
            hwm = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return hwm / 1024

    def increase_mb(self) -> float:
        return max(0.0, self.peak_mb() - self.baseline_mb)


# ---- measurement -----------------------------------------------------------------------------
def time_batch(fn: Any, q: np.ndarray, repeats: int) -> tuple[list[float], Any]:
    fn(q[: min(WARMUP_BATCH, q.shape[0])])
    times, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn(q)
        times.append(time.perf_counter() - t0)
    return times, res


def time_single(fn: Any, rows: list[np.ndarray], repeats: int) -> tuple[list[float], list[Any]]:
    for v in rows[:WARMUP_SINGLE]:
        fn(v)
    times: list[float] = []
    out: list[Any] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = [fn(v) for v in rows]
        times.append(time.perf_counter() - t0)
    return times, out


def batch_point(
    sysm: System, q: np.ndarray, gt: np.ndarray, k: int, repeats: int, value: int | None
) -> Point:
    sysm.set_param(value)
    times, res = time_batch(sysm.batch_fn(k), q, repeats)
    labels = sysm.batch_labels(res, q.shape[0], k)
    med = statistics.median(times)
    m = q.shape[0]
    return Point(value, recall_at_k(labels, gt), m / med, med / m * 1e6, times, m)


def single_points(
    sysm: System, q: np.ndarray, gt: np.ndarray, k: int, repeats: int, value: int | None
) -> list[Point]:
    sysm.set_param(value)
    rows = [q[i] for i in range(q.shape[0])]
    points = []
    for variant in sysm.single_variants:
        times, out = time_single(sysm.single_fn(k, variant), rows, repeats)
        labels = np.stack([sysm.single_labels(r, k) for r in out])
        med = statistics.median(times) / len(rows)
        rec = recall_at_k(labels, gt)
        points.append(Point(value, rec, 1.0 / med, med * 1e6, times, len(rows), variant))
    return points


def load_data(data_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = Path(data_dir)
    base = np.ascontiguousarray(np.load(d / "base.npy"), dtype=np.float32)
    return base, np.load(d / "queries.npy"), np.load(d / "gt.npy")


def run_job(job: Job) -> RunResult:
    run = job.run
    res = RunResult(run.name, run.family, run.label, dict(run.params), run.sweep_key)
    t_start = time.perf_counter()
    work = Path(job.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        base, queries, gt = load_data(job.data_dir)
        gt = gt[:, : job.k]
        sysm = ADAPTERS[run.family](work, base.shape[1], dict(run.params))
        res.versions = sysm.versions()
        sysm.prepare(base)
        rss = Rss()
        rss.reset()
        res.rss_baseline_mb = rss.baseline_mb
        t0 = time.perf_counter()
        sysm.build()
        res.build_s = time.perf_counter() - t0
        res.rss_build_mb = rss.increase_mb()
        res.params = dict(sysm.params)
        print(f"  {run.name}: built in {res.build_s:.1f} s, +{res.rss_build_mb:.0f} MB", flush=True)
        if run.persist:
            t0 = time.perf_counter()
            res.artifact = sysm.persist()
            res.persist_s = time.perf_counter() - t0
        res.default = batch_point(sysm, queries, gt, job.k, job.repeats, None)
        res.default_param = sysm.default_value()
        d = res.default
        print(f"  {run.name} default: batch recall {d.recall:.4f} qps {d.qps:9.0f}", flush=True)
        ns = min(run.single_queries, queries.shape[0])
        if run.sweep_key is None:  # nothing to sweep: the default point is the batch run
            plan = [(None, False, True)]
        else:
            values = sorted(set(run.sweep) | set(run.single_sweep))
            plan = [(v, v in run.sweep, v in run.single_sweep) for v in values]
        for value, in_batch, in_single in plan:
            line = ""
            if in_batch:
                p = batch_point(sysm, queries, gt, job.k, job.repeats, value)
                res.batch.append(p)
                line = f"batch recall {p.recall:.4f} qps {p.qps:9.0f} | "
            if in_single:
                pts = single_points(sysm, queries[:ns], gt[:ns], job.k, job.repeats, value)
                res.single.extend(pts)
                line += "single " + ", ".join(
                    f"{p.variant} {p.latency_us:.0f} us (r {p.recall:.3f})" for p in pts
                )
            print(f"  {run.name} {run.sweep_key or 'exact'}={value}: {line}", flush=True)
        res.rss_peak_mb = rss.increase_mb()
        res.rss_method = rss.method
    except Skip as e:
        res.status, res.reason = "skipped", str(e)
    except Exception as e:  # noqa: BLE001 - a failing system is reported, the others still run
        res.status, res.reason = "failed", f"{type(e).__name__}: {e}"
        traceback.print_exc()
    res.wall_s = time.perf_counter() - t_start
    return res


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A ``Job`` as the parent wrote it (JSON) -> its ``RunResult`` as a dict."""
    run = spec["run"]
    run = Run(**{**run, "sweep": tuple(run["sweep"]), "single_sweep": tuple(run["single_sweep"])})
    return asdict(run_job(Job(**{**spec, "run": run})))
