"""The gRPC server under concurrent load: QPS and latency, micro-batcher on and off, against the
embedded engine in-process.

    python -m bench.server                                  # 1/8/32/128 clients, 5 s per run
    python -m bench.server --duration 2 --clients 1 8 32    # quicker

The coordinator (this process) builds three collections: 20k clustered 384-d vectors indexed
``flat`` (exact scoring: a batch reads the vectors once for all its queries) and ``hnsw`` (cheap
queries, so the per-call cost of gRPC shows), and the bundled SciFact sample as texts with the
default MiniLM encoder. It measures the engine in-process (c threads calling
``Collection.search``), then starts ``vecdex serve`` as a subprocess, once with the micro-batcher
on and once off (--max-batch 1), and drives it from a second process of asyncio clients (one
grpc.aio channel, c concurrent callers; each run measures --duration seconds, 3x for text, after
a warm-up, and counts the calls completed inside that window). Every query is one Search call.
Besides QPS and latency it records CPU time per query of the serving process (the Stats rpc's
``cpu_seconds``; process time in-process), steadier than QPS on a shared machine, and it times
the encoder alone at batch sizes 1/8/32.

Writes bench/results/server.json and prints the table and the ratios the issue targets at 32
clients: text QPS with the batcher on / off (>= 3x), vector in-process / server cost (<= 2x), zero
errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .common import RESULTS, ROOT, load_average, machine_info, start_serve, write_load_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULT = RESULTS / "server.json"
SAMPLE = ROOT / "engine" / "sample"
K = 10
# mode -> collection: exact scoring (flat), HNSW over the same vectors, texts (MiniLM, flat)
COLLECTIONS = {"exact": "exact", "hnsw": "hnsw", "text": "texts"}
TEXT_SCALE = 3.0


@dataclass
class Row:
    """One measured configuration (medians over --repeat runs)."""

    target: str  # "inprocess" or "server"
    batcher: str  # "on", "off", or "-" in-process
    mode: str  # "exact" or "hnsw" (vector queries), or "text"
    clients: int
    qps: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    calls: int = 0
    errors: int = 0
    mean_batch: float = 0.0  # queries per micro-batch on the server
    cpu_ms_per_query: float = 0.0  # CPU time of the serving process (server, or in-process)
    runs: list[dict[str, float]] = field(default_factory=list)


def window(args: argparse.Namespace, mode: str) -> tuple[float, float]:
    """(warm-up, measured) seconds of one run: text calls take ~100x longer, so 3x both."""
    scale = TEXT_SCALE if mode == "text" else 1.0
    return args.warmup * scale, args.duration * scale


def summarize(latencies: list[float], duration: float, errors: int) -> dict[str, float]:
    lat = np.asarray(latencies) * 1000.0
    if lat.size == 0:
        return {
            "qps": 0.0,
            "p50_ms": 0.0,
            "p95_ms": 0.0,
            "p99_ms": 0.0,
            "calls": 0,
            "errors": errors,
        }
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {
        "qps": lat.size / duration,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "calls": int(lat.size),
        "errors": errors,
    }


def median_row(row: Row, runs: list[dict[str, float]]) -> Row:
    row.runs = runs
    for key in ("qps", "p50_ms", "p95_ms", "p99_ms", "mean_batch", "cpu_ms_per_query"):
        vals = [r[key] for r in runs if key in r]
        if vals:
            setattr(row, key, float(statistics.median(vals)))
    row.calls = int(sum(r["calls"] for r in runs))
    row.errors = int(sum(r["errors"] for r in runs))
    return row


# ---- data --------------------------------------------------------------------------------------
def make_data(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Builds the two collections in work/data; returns the query sets (saved for the loader)."""
    from engine import Engine, beir

    rng = np.random.default_rng(1338)
    centres = rng.normal(size=(64, args.dim)).astype(np.float32)
    assign = rng.integers(0, 64, args.n)
    x = centres[assign] + 0.3 * rng.normal(size=(args.n, args.dim)).astype(np.float32)
    qv = centres[rng.integers(0, 64, 512)] + 0.3 * rng.normal(size=(512, args.dim))
    corpus = beir.read_jsonl(SAMPLE / "corpus.jsonl")
    texts = [beir.document_text(d)[:400] for d in corpus]
    queries = [q["text"] for q in beir.read_jsonl(SAMPLE / "queries.jsonl")]
    t0 = time.perf_counter()
    with Engine(work / "data") as eng:
        for mode, index in (("exact", "flat"), ("hnsw", args.hnsw)):
            vec = eng.create_collection(COLLECTIONS[mode], dim=args.dim, index=index)
            for s in range(0, args.n, 5000):
                e = min(args.n, s + 5000)
                payloads = [{"c": int(c)} for c in assign[s:e]]
                vec.add([f"v{i}" for i in range(s, e)], x[s:e], payloads)
        txt = eng.create_collection(COLLECTIONS["text"], encoder=args.encoder, index="flat")
        txt.add([d["_id"] for d in corpus], texts=texts)
    print(f"built collections in {time.perf_counter() - t0:.1f}s", flush=True)
    qpath = work / "queries.npy"
    np.save(qpath, qv.astype(np.float32), allow_pickle=False)
    (work / "queries.json").write_text(json.dumps(queries))
    return {"exact": qv.astype(np.float32), "hnsw": qv.astype(np.float32), "text": queries}


def encoder_scaling(args: argparse.Namespace, texts: list[str]) -> dict[str, float]:
    """Wall and CPU ms per query of ``encode_queries`` at batch sizes 1, 8, 32 (best of 3)."""
    from engine import encoding

    enc = encoding.resolve(args.encoder)
    enc.encode_queries(texts[:8])
    out = {}
    for n in (1, 8, 32):
        wall = cpu = float("inf")
        for r in range(3):
            batch = [texts[(r * n + j) % len(texts)] for j in range(n)]
            reps = max(1, 16 // n)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(reps):
                enc.encode_queries(batch)
            wall = min(wall, (time.perf_counter() - t0) / (reps * n) * 1e3)
            cpu = min(cpu, (time.process_time() - c0) / (reps * n) * 1e3)
        out[f"batch_{n}_wall_ms_per_query"] = wall
        out[f"batch_{n}_cpu_ms_per_query"] = cpu
    return out


# ---- in-process baseline -----------------------------------------------------------------------
def inprocess(data: Path, mode: str, clients: int, queries: Any, args: argparse.Namespace):
    from engine import Engine

    with Engine(data) as eng:
        col = eng.open_collection(COLLECTIONS[mode])
        for q in queries[:8]:  # warm caches, load the encoder
            col.search(q, k=K)
        runs = []
        for _ in range(args.repeat):
            lat: list[list[float]] = [[] for _ in range(clients)]
            total = [0] * clients
            warmup, duration = window(args, mode)
            start = time.perf_counter() + warmup
            stop = start + duration

            def loop(j: int, lat=lat, total=total, start=start, stop=stop) -> None:
                i, mine = j, lat[j]
                while True:
                    t = time.perf_counter()
                    if t >= stop:
                        return
                    col.search(queries[i % len(queries)], k=K)
                    end = time.perf_counter()
                    total[j] += 1
                    if t >= start and end <= stop:
                        mine.append(end - t)
                    i += clients

            threads = [threading.Thread(target=loop, args=(j,)) for j in range(clients)]
            cpu0 = time.process_time()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            run = summarize([v for m in lat for v in m], duration, 0)
            run["cpu_ms_per_query"] = (time.process_time() - cpu0) * 1e3 / max(1, sum(total))
            runs.append(run)
    return median_row(Row("inprocess", "-", mode, clients), runs)


# ---- the server and its load generator ---------------------------------------------------------
def start_server(
    data: Path, max_batch: int, max_wait_ms: float, concurrency: int
) -> tuple[subprocess.Popen, str]:
    return start_serve(
        data,
        *("--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)),
        *("--search-concurrency", str(concurrency)),
        timeout=180,
    )


def drive(address: str, work: Path, plan: list[dict[str, Any]], args: argparse.Namespace) -> list:
    """Runs the load generator (a second process) over ``plan``; returns its results."""
    cmd = [sys.executable, "-m", "bench.server", "--loader", address, "--work", str(work)]
    cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    cmd += ["--repeat", str(args.repeat), "--plan", json.dumps(plan)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


async def load(address: str, work: Path, plan: list[dict[str, Any]], args: argparse.Namespace):
    import grpc

    from server.pb import vecdex_pb2 as pb
    from server.pb import vecdex_pb2_grpc as pb_grpc

    qv = np.load(work / "queries.npy", allow_pickle=False)
    texts = json.loads((work / "queries.json").read_text())
    reqs = {
        mode: [pb.SearchRequest(collection=COLLECTIONS[mode], k=K) for _ in qv]
        for mode in ("exact", "hnsw")
    }
    reqs["text"] = [pb.SearchRequest(collection=COLLECTIONS["text"], k=K) for _ in texts]
    for mode in ("exact", "hnsw"):
        for r, q in zip(reqs[mode], qv, strict=True):
            r.query.vector.values.extend(q.tolist())
    for r, t in zip(reqs["text"], texts, strict=True):
        r.query.text = t
    results = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.VecDexStub(channel)
        for item in plan:
            mode, clients = item["mode"], item["clients"]
            mine = reqs[mode]
            await asyncio.gather(*(stub.Search(r, timeout=60) for r in mine[:8]))  # warm up
            runs = []
            for _ in range(args.repeat):
                before = await stub.Stats(pb.StatsRequest())
                lat: list[float] = []
                errors = [0]
                warmup, duration = window(args, mode)
                start = time.perf_counter() + warmup
                stop = start + duration

                async def caller(
                    j: int,
                    mine=mine,
                    lat=lat,
                    errors=errors,
                    start=start,
                    stop=stop,
                    clients=clients,
                ):
                    i = j
                    while True:
                        t = time.perf_counter()
                        if t >= stop:
                            return
                        try:
                            await stub.Search(mine[i % len(mine)], timeout=60)
                        except grpc.RpcError:
                            errors[0] += 1
                        end = time.perf_counter()
                        if t >= start and end <= stop:
                            lat.append(end - t)
                        i += clients

                await asyncio.gather(*(caller(j) for j in range(clients)))
                after = await stub.Stats(pb.StatsRequest())
                run = summarize(lat, duration, errors[0])
                batches = after.search_batches - before.search_batches
                if batches:
                    run["mean_batch"] = (after.search_requests - before.search_requests) / batches
                calls = after.rpcs["Search"] - before.rpcs["Search"]
                cpu = after.cpu_seconds - before.cpu_seconds
                run["cpu_ms_per_query"] = cpu * 1e3 / max(1, calls)
                runs.append(run)
            results.append({**item, "runs": runs})
    return results


# ---- report ------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """``bench.common.machine_info`` with grpcio, and the load when the run started."""
    return {
        **machine_info(("grpcio", "protobuf")),
        "load_avg_at_start": load_average(),
    }


def find(rows: list[Row], target: str, batcher: str, mode: str, clients: int) -> Row | None:
    for r in rows:
        if (r.target, r.batcher, r.mode, r.clients) == (target, batcher, mode, clients):
            return r
    return None


def ratios(rows: list[Row], at: int) -> dict[str, Any]:
    """The issue's targets at ``at`` clients, by throughput and by CPU time per query.

    CPU per query (the serving process's user + system time over its Search calls) is the
    steadier measure on a shared machine: it ignores time spent waiting for other jobs' cores.
    """
    out: dict[str, Any] = {"at_clients": at, "errors_total": sum(r.errors for r in rows)}

    def ratio(name: str, a: Row | None, b: Row | None, attr: str) -> None:
        x, y = (getattr(a, attr), getattr(b, attr)) if a and b else (0.0, 0.0)
        if x and y:
            out[name] = x / y

    def get(target: str, batcher: str, mode: str) -> Row | None:
        return find(rows, target, batcher, mode, at)

    on_t, off_t, in_t = (
        get("server", "on", "text"),
        get("server", "off", "text"),
        get("inprocess", "-", "text"),
    )
    ratio("text_qps_batching_on_over_off", on_t, off_t, "qps")  # target >= 3
    ratio("text_cpu_per_query_off_over_on", off_t, on_t, "cpu_ms_per_query")
    ratio("text_qps_inprocess_over_server", in_t, on_t, "qps")
    for mode in ("exact", "hnsw"):
        inproc, on, off = (
            get("inprocess", "-", mode),
            get("server", "on", mode),
            get("server", "off", mode),
        )
        ratio(f"{mode}_qps_inprocess_over_server", inproc, on, "qps")  # target <= 2
        ratio(f"{mode}_cpu_per_query_server_over_inprocess", on, inproc, "cpu_ms_per_query")
        ratio(f"{mode}_qps_batching_on_over_off", on, off, "qps")
        ratio(f"{mode}_qps_inprocess_over_server_nobatch", inproc, off, "qps")
    return out


def print_table(rows: list[Row]) -> None:
    head = f"{'target':10} {'batch':5} {'mode':6} {'clients':>7} {'QPS':>9} {'p50 ms':>8} "
    head += f"{'p95 ms':>8} {'p99 ms':>8} {'errors':>6} {'batch':>6} {'cpu ms/q':>8}"
    print(head)
    for r in rows:
        print(
            f"{r.target:10} {r.batcher:5} {r.mode:6} {r.clients:7d} {r.qps:9.1f} {r.p50_ms:8.2f} "
            f"{r.p95_ms:8.2f} {r.p99_ms:8.2f} {r.errors:6d} {r.mean_batch:6.1f} "
            f"{r.cpu_ms_per_query:8.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    run = p.add_argument_group("run")
    run.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    run.add_argument("--modes", nargs="+", default=list(COLLECTIONS), choices=list(COLLECTIONS))
    run.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    run.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    run.add_argument("--repeat", type=int, default=1, help="runs per point (median reported)")
    run.add_argument("--max-wait-ms", type=float, default=0.0)
    run.add_argument("--max-batch", type=int, default=64)
    run.add_argument("--search-concurrency", type=int, default=2)
    run.add_argument("--no-inprocess", action="store_true")
    data = p.add_argument_group("data")
    data.add_argument("--n", type=int, default=20_000, help="vectors in the vector collection")
    data.add_argument("--dim", type=int, default=384, help="as MiniLM's vectors")
    data.add_argument("--hnsw", default="hnsw", help="index spec of the hnsw collection")
    data.add_argument("--encoder", default="default")
    data.add_argument("--out", type=Path, default=RESULT)
    data.add_argument("--keep", type=Path, help="build the data here once and reuse it")
    internal = p.add_argument_group("internal (the load-generator process)")
    internal.add_argument("--loader", help=argparse.SUPPRESS)
    internal.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    internal.add_argument("--plan", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.loader:
        print(json.dumps(asyncio.run(load(args.loader, args.work, json.loads(args.plan), args))))
        return 0

    info = machine()
    work = args.keep or Path(tempfile.mkdtemp(prefix="vecdex-bench-server-"))
    rows: list[Row] = []
    try:
        if args.keep and (work / "queries.json").exists():
            qv = np.load(work / "queries.npy", allow_pickle=False)
            queries = {
                "exact": qv,
                "hnsw": qv,
                "text": json.loads((work / "queries.json").read_text()),
            }
        else:
            queries = make_data(args, work)
        if "text" in args.modes:
            info["encoder_alone"] = encoder_scaling(args, queries["text"])
            print(f"encoder alone: {info['encoder_alone']}", flush=True)
        if not args.no_inprocess:
            for mode in args.modes:
                for c in args.clients:
                    rows.append(inprocess(work / "data", mode, c, queries[mode], args))
                    print_table(rows[-1:])
        plan = [{"mode": m, "clients": c} for m in args.modes for c in args.clients]
        for batcher, max_batch in (("on", args.max_batch), ("off", 1)):
            proc, address = start_server(
                work / "data", max_batch, args.max_wait_ms, args.search_concurrency
            )
            try:
                for item in drive(address, work, plan, args):
                    row = median_row(
                        Row("server", batcher, item["mode"], item["clients"]), item["runs"]
                    )
                    rows.append(row)
                    print_table([row])
            finally:
                proc.terminate()
                proc.wait(60)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print_table(rows)
    at = 32 if 32 in args.clients else max(args.clients)
    summary = ratios(rows, at)
    print(json.dumps(summary, indent=2))
    write_load_report(
        "server", argv, args, info, summary, rows, drop=("loader", "work", "plan", "keep")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
