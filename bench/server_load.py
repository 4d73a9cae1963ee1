"""The gRPC server under load: p50 / p99 latency and QPS at 1, 8, 32 and 128 concurrent clients,
against the engine in-process in the same run, with zero errors.

    python -m bench.server_load                           # the issue's run (about 5 minutes)
    python -m bench.server_load --duration 2 --clients 1 32 --keep /tmp/sl   # quicker, data kept

Data: ``--n`` clustered ``--dim``-d vectors (seeded) in an HNSW collection (default spec), and the
bundled SciFact sample as texts with the default MiniLM encoder (flat). Measured, each for
``--duration`` seconds after ``--warmup`` (text: 3x both):

- in-process: c threads calling ``Collection.search`` (the ratio's denominator), before and
  after the server runs (QPS: the mean of the two, both kept: a shared machine's load drifts);
- the server (``vecdex serve`` in its own process) driven by ``--client-procs`` client processes
  (never more than the clients), each with its own channel (own TCP connection) and c / procs
  asyncio callers, so the clients' Python does not share the server's GIL. Every caller sends one
  query at a time and waits for its answer, as a unary ``Search`` call (``unary``) or on its own
  ``SearchStream`` stream (``stream``);
- text queries at 32 clients, the micro-batcher on and off (``--max-batch 1``).

On a 2-core machine the clients and the server share the cores: the JSON records each side's CPU
time per query (server: the Stats rpc's ``cpu_seconds``; clients: their process time) next to QPS.
Any error fails the run (exit status 1) after the JSON is written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import server as base
from .common import RESULTS, start_serve, write_load_report

RESULT = RESULTS / "server_load.json"
K = 10


def start_server(data: Path, args: argparse.Namespace, *extra: str) -> tuple[Any, str]:
    """``vecdex serve`` on a free port (``extra``: more serve options); (process, address)."""
    return start_serve(data, "--search-concurrency", str(args.search_concurrency), *extra)


@dataclass
class Row:
    target: str  # "inprocess" or "server"
    transport: str  # "unary", "stream", or "-" in-process
    batcher: str  # "on", "off", "-"; "on-inline": on, with --inline-max-ms 1 (lone searches inline)
    mode: str  # "hnsw" or "text"
    clients: int
    qps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    calls: int = 0
    errors: int = 0
    server_cpu_us_per_query: float = 0.0  # the serving process (in-process: the whole process)
    client_cpu_us_per_query: float = 0.0
    mean_batch: float = 0.0
    inline_share: float = 0.0  # queries answered on the server's event loop
    qps_runs: list[float] = field(default_factory=list)  # in-process: before and after the server


# ---- data --------------------------------------------------------------------------------------
def make_data(args: argparse.Namespace, work: Path) -> None:
    from engine import Engine, beir

    rng = np.random.default_rng(1338)
    centres = rng.normal(size=(256, args.dim)).astype(np.float32)
    assign = rng.integers(0, 256, args.n)
    x = centres[assign] + 0.5 * rng.normal(size=(args.n, args.dim)).astype(np.float32)
    qv = centres[rng.integers(0, 256, 1024)] + 0.5 * rng.normal(size=(1024, args.dim))
    np.save(work / "queries.npy", qv.astype(np.float32), allow_pickle=False)
    corpus = beir.read_jsonl(base.SAMPLE / "corpus.jsonl")
    texts = [beir.document_text(d)[:400] for d in corpus]
    queries = [q["text"] for q in beir.read_jsonl(base.SAMPLE / "queries.jsonl")]
    (work / "queries.json").write_text(json.dumps(queries))
    t0 = time.perf_counter()
    with Engine(work / "data") as eng:
        col = eng.create_collection("hnsw", dim=args.dim, index=args.hnsw)
        for s in range(0, args.n, 10_000):
            e = min(args.n, s + 10_000)
            col.add([f"v{i}" for i in range(s, e)], x[s:e], [{"c": int(c)} for c in assign[s:e]])
        if "text" in args.modes:
            txt = eng.create_collection("texts", encoder=args.encoder, index="flat")
            txt.add([d["_id"] for d in corpus], texts=texts)
    print(f"built collections in {time.perf_counter() - t0:.1f}s", flush=True)


def queries_of(work: Path, mode: str) -> Any:
    if mode == "text":
        return json.loads((work / "queries.json").read_text())
    return np.load(work / "queries.npy", allow_pickle=False)


# ---- one client process ------------------------------------------------------------------------
def client_proc(job: dict[str, Any]) -> dict[str, Any]:
    """Runs ``job["callers"]`` callers against the server between two wall-clock instants."""
    return asyncio.run(_client(job))


async def _client(job: dict[str, Any]) -> dict[str, Any]:
    import grpc

    from server.pb import vecdex_pb2 as pb
    from server.pb import vecdex_pb2_grpc as pb_grpc

    work, mode = Path(job["work"]), job["mode"]
    qs = queries_of(work, mode)
    reqs = []
    for q in qs:
        r = pb.SearchRequest(collection="texts" if mode == "text" else "hnsw", k=K)
        if mode == "text":
            r.query.text = q
        else:
            r.query.vector.values.extend(q.tolist())
        reqs.append(r)
    lat: list[float] = []
    errors: list[str] = []
    start, stop, callers = job["start"], job["stop"], job["callers"]
    # A channel of its own (not shared with other processes' subchannels): one connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(job["address"], options=options) as channel:
        stub = pb_grpc.VecDexStub(channel)
        await stub.Search(reqs[0], timeout=60)

        async def unary(j: int) -> None:
            i = j
            while time.time() < stop:
                t = time.perf_counter()
                w = time.time()
                try:
                    await stub.Search(reqs[i % len(reqs)], timeout=60)
                except grpc.RpcError as e:
                    errors.append(f"{e.code().name}: {e.details()}")
                if w >= start and time.time() <= stop:
                    lat.append(time.perf_counter() - t)
                i += job["stride"]

        async def stream(j: int) -> None:
            call = stub.SearchStream(timeout=600)
            i = j
            try:
                while time.time() < stop:
                    t = time.perf_counter()
                    w = time.time()
                    await call.write(pb.StreamSearchRequest(tag=i, search=reqs[i % len(reqs)]))
                    got = await call.read()
                    if got.code or got.tag != i:
                        errors.append(f"code {got.code}: {got.message} (tag {got.tag} for {i})")
                    if w >= start and time.time() <= stop:
                        lat.append(time.perf_counter() - t)
                    i += job["stride"]
                await call.done_writing()
                code = await call.code()
                if code != grpc.StatusCode.OK:
                    errors.append(f"stream ended with {code.name}: {await call.details()}")
            except grpc.RpcError as e:
                errors.append(f"{e.code().name}: {e.details()}")

        caller = stream if job["transport"] == "stream" else unary
        while time.time() < start - job["warmup"]:
            await asyncio.sleep(0.01)
        cpu0 = time.process_time()
        await asyncio.gather(*(caller(job["first"] + j) for j in range(callers)))
        cpu = time.process_time() - cpu0
    return {"lat": lat, "errors": errors, "cpu": cpu}


# ---- a measured point --------------------------------------------------------------------------
def server_point(
    pool: Any, address: str, work: Path, item: dict[str, Any], args: argparse.Namespace
) -> Row:
    import grpc

    from server.pb import vecdex_pb2 as pb
    from server.pb import vecdex_pb2_grpc as pb_grpc

    mode, clients, transport = item["mode"], item["clients"], item["transport"]
    warmup, duration = base.window(args, mode)
    with grpc.insecure_channel(address) as ch:  # loads the encoder before the clock starts
        warm = pb.SearchRequest(collection="texts" if mode == "text" else "hnsw", k=K)
        q = queries_of(work, mode)[0]
        if mode == "text":
            warm.query.text = q
        else:
            warm.query.vector.values.extend(q.tolist())
        pb_grpc.VecDexStub(ch).Search(warm, timeout=600)
    procs = min(clients, args.client_procs)
    per = [clients // procs + (1 if p < clients % procs else 0) for p in range(procs)]
    first = [sum(per[:p]) for p in range(procs)]
    start = time.time() + 3.0 + warmup  # the client processes import and connect first
    stop = start + duration
    jobs = [
        {
            "address": address,
            "work": str(work),
            "mode": mode,
            "transport": transport,
            "callers": per[p],
            "first": first[p],
            "stride": clients,
            "start": start,
            "stop": stop,
            "warmup": warmup,
        }
        for p in range(procs)
    ]
    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.VecDexStub(ch)
        out = pool.map_async(client_proc, jobs)
        while time.time() < start:
            time.sleep(0.01)
        before = stub.Stats(pb.StatsRequest())
        while time.time() < stop:
            time.sleep(0.01)
        after = stub.Stats(pb.StatsRequest())
        results = out.get(duration + warmup + 120)
    lat = [v for r in results for v in r["lat"]]
    errors = [e for r in results for e in r["errors"]]
    s = base.summarize(lat, duration, len(errors))
    answered = (after.rpcs["Search"] - before.rpcs["Search"]) + (
        after.stream_queries - before.stream_queries
    )
    n = max(1, answered)
    row = Row("server", transport, item["batcher"], mode, clients)
    row.qps, row.p50_ms, row.p99_ms = s["qps"], s["p50_ms"], s["p99_ms"]
    row.calls, row.errors = int(s["calls"]), len(errors)
    row.server_cpu_us_per_query = (after.cpu_seconds - before.cpu_seconds) * 1e6 / n
    # Client CPU covers warm-up and drain too: per call made in that span (an upper bound).
    row.client_cpu_us_per_query = sum(r["cpu"] for r in results) * 1e6 / max(1, len(lat))
    batches = after.search_batches - before.search_batches
    if batches:
        row.mean_batch = (after.search_requests - before.search_requests) / batches
    row.inline_share = (after.inline_searches - before.inline_searches) / n
    if errors:
        print(f"  errors ({len(errors)}), first: {errors[0]}", flush=True)
    return row


def inprocess_point(work: Path, mode: str, clients: int, args: argparse.Namespace) -> Row:
    r = base.inprocess(work / "data", mode, clients, queries_of(work, mode), args)
    row = Row("inprocess", "-", "-", mode, clients, r.qps, r.p50_ms, r.p99_ms, r.calls)
    row.server_cpu_us_per_query = r.cpu_ms_per_query * 1e3
    return row


# ---- report ------------------------------------------------------------------------------------
def summary(rows: list[Row], at: int) -> dict[str, Any]:
    def get(target: str, transport: str, batcher: str, mode: str, c: int = at) -> Row | None:
        for r in rows:
            if (r.target, r.transport, r.batcher, r.mode, r.clients) == (
                target,
                transport,
                batcher,
                mode,
                c,
            ):
                return r
        return None

    out: dict[str, Any] = {"at_clients": at, "errors_total": sum(r.errors for r in rows)}
    inproc = get("inprocess", "-", "-", "hnsw")
    for transport in ("unary", "stream"):
        srv = get("server", transport, "on", "hnsw")
        if inproc and srv and inproc.qps:
            out[f"hnsw_{transport}_qps_over_inprocess"] = srv.qps / inproc.qps  # target >= 0.5
        if srv:
            out[f"hnsw_{transport}_p99_ms"] = srv.p99_ms
        if inproc and srv and srv.server_cpu_us_per_query:
            # Steadier than QPS on a shared machine: CPU per query, server and clients together
            # (the machine's cores serve both), against the in-process process's.
            total = srv.server_cpu_us_per_query + srv.client_cpu_us_per_query
            out[f"hnsw_{transport}_cpu_inprocess_over_server_and_clients"] = (
                inproc.server_cpu_us_per_query / total
            )
        inline = get("server", transport, "on-inline", "hnsw")
        if srv and inline and inline.server_cpu_us_per_query:
            out[f"hnsw_{transport}_cpu_per_query_default_over_inline"] = (
                srv.server_cpu_us_per_query / inline.server_cpu_us_per_query
            )
    on, off = get("server", "unary", "on", "text"), get("server", "unary", "off", "text")
    if on and off and off.qps:
        out["text_qps_batching_on_over_off"] = on.qps / off.qps  # target >= 2 (CPU)
    return out


def print_rows(rows: list[Row]) -> None:
    for r in rows:
        print(
            f"{r.target:9} {r.transport:6} {r.batcher:3} {r.mode:4} {r.clients:4d} "
            f"QPS {r.qps:8.1f}  p50 {r.p50_ms:7.2f}  p99 {r.p99_ms:7.2f} ms  errors {r.errors}  "
            f"cpu/q server {r.server_cpu_us_per_query:6.0f} us client "
            f"{r.client_cpu_us_per_query:5.0f} us  batch {r.mean_batch:4.1f}  "
            f"inline {r.inline_share:4.2f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    run = p.add_argument_group("run")
    run.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    run.add_argument("--transports", nargs="+", default=["unary", "stream"])
    run.add_argument("--modes", nargs="+", default=["hnsw", "text"], choices=["hnsw", "text"])
    run.add_argument("--text-clients", type=int, default=32, help="text: batcher on vs off here")
    run.add_argument("--duration", type=float, default=5.0, help="seconds measured per point")
    run.add_argument("--warmup", type=float, default=1.0)
    run.add_argument("--client-procs", type=int, default=4, help="client processes (at most)")
    run.add_argument("--max-batch", type=int, default=64)
    run.add_argument("--search-concurrency", type=int, default=2)
    run.add_argument(
        "--no-compare-inline",
        dest="compare_inline",
        action="store_false",
        help="skip the run with --inline-max-ms 1 (lone HNSW searches on the event loop)",
    )
    data = p.add_argument_group("data")
    data.add_argument("--n", type=int, default=100_000)
    data.add_argument("--dim", type=int, default=128)
    data.add_argument("--hnsw", default="hnsw", help="index spec of the vector collection")
    data.add_argument("--encoder", default="default")
    data.add_argument("--keep", type=Path, help="build the data here once and reuse it")
    data.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args(argv)
    args.repeat, args.max_wait_ms = 1, 0.0  # what bench.server's helpers read

    info = base.machine()
    work = args.keep or Path(tempfile.mkdtemp(prefix="vecdex-bench-load-"))
    rows: list[Row] = []
    try:
        if not (work / "data").exists():
            work.mkdir(parents=True, exist_ok=True)
            make_data(args, work)
        if "hnsw" in args.modes:
            for c in args.clients:
                rows.append(inprocess_point(work, "hnsw", c, args))
                print_rows(rows[-1:])

        def point(mode: str, c: int, transport: str, batcher: str) -> dict[str, Any]:
            return {"mode": mode, "clients": c, "transport": transport, "batcher": batcher}

        on: list[dict[str, Any]] = []
        plan = [("on", on)]
        if "hnsw" in args.modes:
            on += [point("hnsw", c, t, "on") for t in args.transports for c in args.clients]
            if args.compare_inline:  # lone searches on the event loop (off by default)
                old = [c for c in args.clients if c in (1, 32)]
                plan.append(
                    (
                        "on-inline",
                        [point("hnsw", c, t, "on-inline") for t in args.transports for c in old],
                    )
                )
        if "text" in args.modes:
            on.append(point("text", args.text_clients, "unary", "on"))
            plan.append(("off", [point("text", args.text_clients, "unary", "off")]))
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.client_procs) as pool:
            for batcher, items in plan:
                extra = ["--max-batch", str(args.max_batch if batcher != "off" else 1)]
                if batcher == "on-inline":
                    extra += ["--inline-max-ms", "1"]
                proc, address = start_server(work / "data", args, *extra)
                try:
                    for item in items:
                        rows.append(server_point(pool, address, work, item, args))
                        print_rows(rows[-1:])
                finally:
                    proc.terminate()
                    proc.wait(60)
        if "hnsw" in args.modes:  # again after the server runs: the ratio uses both (mean)
            for row in [r for r in rows if r.target == "inprocess"]:
                again = inprocess_point(work, "hnsw", row.clients, args)
                row.qps_runs = [row.qps, again.qps]
                row.qps = (row.qps + again.qps) / 2
                print_rows([again])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    at = 32 if 32 in args.clients else max(args.clients)
    result = summary(rows, at)
    print(json.dumps(result, indent=2))
    write_load_report("server_load", argv, args, info, result, rows, drop=("keep",))
    if result["errors_total"]:
        print(f"FAILED: {result['errors_total']} errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
