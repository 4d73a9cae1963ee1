"""Durability benchmark: upsert throughput through the write-ahead log, and recovery time.

Throughput: vectors per second of upserts of 1-10 vectors per call (seeded sizes), with
``durability="fsync"`` and ``"none"``, from one writer thread and from 8 concurrent writer
threads. Group commit lets concurrent writers share an fsync, so 8 fsync writers should beat
8 x one fsync writer (the same calls made one after another) by 4x or more; the ratio is printed.
Recovery: a worker process logs vectors without a checkpoint and exits without closing (as if
killed); opening the collection then replays the whole log. The time is reported per million
logged vectors, extrapolated from ``--recovery-vectors`` (linear: replay is one pass).

Usage:
    python -m bench.durability                 # ~3 min on 2 cores
    python -m bench.durability --quick         # ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .common import ROOT, machine_info, work_dir


@dataclass(frozen=True)
class Run:
    """One throughput measurement."""

    durability: str
    writers: int
    index: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.durability",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("throughput")
    g.add_argument("--dim", type=int, default=128, help="vector dimension")
    g.add_argument("--index", default="flat", help="index spec of the throughput collections")
    g.add_argument("--seconds", type=float, default=3.0, help="duration of one measurement")
    g.add_argument("--repeats", type=int, default=3, help="measurements per run (median)")
    g.add_argument("--writers", type=int, default=8, help="concurrent writer threads")
    g.add_argument("--max-batch", type=int, default=10, help="vectors per call: 1..this")
    g = p.add_argument_group("recovery")
    g.add_argument("--recovery-vectors", type=int, default=200_000, help="vectors logged (flat)")
    g.add_argument(
        "--recovery-hnsw-vectors", type=int, default=20_000, help="vectors logged (hnsw)"
    )
    g.add_argument("--recovery-batch", type=int, default=10, help="vectors per logged call")
    g = p.add_argument_group("output")
    g.add_argument("--dir", type=Path, default=None, help="data directory (default: a temp dir)")
    g.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "durability.json")
    g.add_argument("--quick", action="store_true", help="shorter runs, fewer vectors")
    p.add_argument("--log-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 1.5, 2
        args.recovery_vectors, args.recovery_hnsw_vectors = 50_000, 5_000
    return args


def fsync_latency_ms(directory: Path, n: int = 100) -> float:
    """Median latency of a 200-byte append plus fdatasync on this disk, without the engine."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, b"x" * 200)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1e3


def throughput(run: Run, args: argparse.Namespace, directory: Path, rep: int) -> dict[str, Any]:
    from engine import Engine

    path = directory / f"tp-{run.durability}-{run.writers}-{rep}"
    eng = Engine(path)
    col = eng.create_collection("c", dim=args.dim, index=run.index, durability=run.durability)
    counts = [0] * run.writers
    calls = [0] * run.writers
    start = threading.Barrier(run.writers + 1)
    stop = threading.Event()

    def writer(w: int) -> None:
        rng = np.random.default_rng([w, rep])
        pool = rng.standard_normal((4096, args.dim)).astype(np.float32)
        start.wait()
        i = 0
        while not stop.is_set():
            n = int(rng.integers(1, args.max_batch + 1))
            ids = [f"w{w}-{i + j}" for j in range(n)]
            rows = pool[(i + np.arange(n)) % len(pool)]
            col.upsert(ids, rows, [{"w": w, "i": i + j} for j in range(n)])
            i += n
            counts[w] += n
            calls[w] += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(run.writers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    fsyncs = col._wal.fsyncs if col._wal is not None else 0
    eng.drop_collection("c")
    shutil.rmtree(path, ignore_errors=True)
    return {
        "vectors_per_s": sum(counts) / elapsed,
        "calls_per_s": sum(calls) / elapsed,
        "calls_per_fsync": sum(calls) / fsyncs if fsyncs else None,
        "vectors": sum(counts),
        "seconds": elapsed,
    }


def log_worker(spec_json: str) -> None:
    """Logs vectors with no checkpoint, then exits without closing (like a killed process)."""
    from engine import Engine

    spec = json.loads(spec_json)
    eng = Engine(spec["path"], checkpoint_bytes=1 << 62)
    col = eng.create_collection("c", dim=spec["dim"], index=spec["index"], durability="none")
    rng = np.random.default_rng(0)
    n, b = spec["vectors"], spec["batch"]
    x = rng.standard_normal((n, spec["dim"])).astype(np.float32)
    for i in range(0, n, b):
        m = min(b, n - i)
        col.upsert([f"d{i + j}" for j in range(m)], x[i : i + m], [{"i": i + j} for j in range(m)])
    col.durability = "fsync"  # everything logged is on disk before the "crash"
    sys.stdout.flush()
    os._exit(0)


def recovery(args: argparse.Namespace, directory: Path, index: str, vectors: int) -> dict:
    from engine import Engine

    path = directory / f"recovery-{index.split(':')[0]}"
    spec = {
        "path": str(path),
        "dim": args.dim,
        "index": index,
        "vectors": vectors,
        "batch": args.recovery_batch,
    }
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench.durability", "--log-worker", json.dumps(spec)],
        check=True,
        cwd=ROOT,
    )
    log_s = time.perf_counter() - t
    wal_dir = path / "c" / "wal"
    log_bytes = sum(p.stat().st_size for p in wal_dir.iterdir())
    opens = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        col = Engine(path, read_only=True).open_collection("c")
        opens.append(time.perf_counter() - t)
        if len(col) != vectors:
            raise RuntimeError(f"recovered {len(col)} of {vectors} vectors")
        del col
    # An empty collection's open, to subtract what does not depend on the log.
    base = directory / f"empty-{index.split(':')[0]}"
    Engine(base).create_collection("c", dim=args.dim, index=index).close()
    t = time.perf_counter()
    Engine(base, read_only=True).open_collection("c")
    empty_s = time.perf_counter() - t
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)
    replay_s = statistics.median(opens)
    return {
        "index": index,
        "logged_vectors": vectors,
        "logged_calls": -(-vectors // args.recovery_batch),
        "log_bytes": log_bytes,
        "log_bytes_per_vector": log_bytes / vectors,
        "logging_process_s": log_s,
        "open_with_replay_s": replay_s,
        "open_empty_s": empty_s,
        "recovery_s_per_million_vectors": (replay_s - empty_s) * 1e6 / vectors,
        "extrapolated_from": vectors,
    }


def filesystem(path: Path) -> str:
    """The type of the filesystem holding ``path`` (fsync on tmpfs costs nothing)."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    real = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) > 2 and real.startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def machine(directory: Path) -> dict[str, Any]:
    """``bench.common.machine_info`` and the filesystem the data lives on (fsync's cost)."""
    return {
        **machine_info(("hnswlib", "pyarrow")),
        "data_dir": str(directory),
        "filesystem": filesystem(directory),
        "fdatasync_ms_median": round(fsync_latency_ms(directory), 3),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.log_worker:
        log_worker(args.log_worker)
        return 0
    directory, tmp = work_dir(args.dir, "vecdex-durability-")
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "durability",
        "machine": machine(directory),
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "throughput": [],
    }
    runs = [Run(d, w, args.index) for d in ("fsync", "none") for w in (1, args.writers)]
    medians: dict[tuple[str, int], float] = {}
    for run in runs:
        reps = [throughput(run, args, directory, r) for r in range(args.repeats)]
        med = statistics.median(r["vectors_per_s"] for r in reps)
        medians[(run.durability, run.writers)] = med
        row = {**asdict(run), "vectors_per_s_median": med, "repeats": reps}
        report["throughput"].append(row)
        per_fsync = statistics.median(r["calls_per_fsync"] or 0 for r in reps)
        print(
            f"{run.durability:5s} {run.writers} writer(s): {med:10.0f} vectors/s "
            f"({per_fsync:.1f} calls per fsync)",
            flush=True,
        )
    ratio = medians[("fsync", args.writers)] / medians[("fsync", 1)]
    report["group_commit"] = {
        "writers": args.writers,
        "speedup_vs_sequential_fsync_writer": ratio,
        "target": 4.0,
        "meets_target": ratio >= 4.0,
        "note": (
            f"{args.writers} concurrent fsync writers vs the same calls made one after another "
            "by one fsync writer (throughput ratio)"
        ),
    }
    report["none_vs_fsync_single_writer"] = medians[("none", 1)] / medians[("fsync", 1)]
    print(f"group commit: {args.writers} writers are {ratio:.1f}x one fsync writer", flush=True)
    report["recovery"] = [
        recovery(args, directory, "flat", args.recovery_vectors),
        recovery(args, directory, "hnsw", args.recovery_hnsw_vectors),
    ]
    for r in report["recovery"]:
        print(
            f"recovery ({r['index']}): {r['open_with_replay_s']:.2f} s for "
            f"{r['logged_vectors']} logged vectors -> {r['recovery_s_per_million_vectors']:.1f} s "
            f"per million (extrapolated), {r['log_bytes_per_vector']:.0f} log bytes per vector",
            flush=True,
        )
    report["wall_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} in {report['wall_s']:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
