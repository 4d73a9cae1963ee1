"""Recovery after a crash: an HNSW collection killed with SIGKILL at the largest log the default
checkpoint policy allows, reopened, timed from open to the first answer, with its results' recall
against exact search while the graph catches up and after.

A writer process creates the collection with the default checkpoint policy (a checkpoint once the
log passes ``engine.collection.CHECKPOINT_BYTES``, 64 MiB), writes ``--base`` vectors and
checkpoints them, then logs batches (new ids, upserts of checkpointed ids, deletes of both) until
the next batch would trigger a checkpoint, and waits to be killed with SIGKILL. The parent
rebuilds the same writes as a model (ids -> vector, payload), reopens the collection for writing
and measures:
- open -> returned, and open -> first answer (one query, k=10);
- recall@10 of ``--queries`` held-out queries against exact search over the model, without and
  with a payload filter, and single-query latency, while the graph catches up and after;
- the time until the graph holds every vector (``Collection.wait_indexed``), and whether every
  write is there (count, and every id's vector and payload against the model).

    python -m bench.recovery                     # ~3-4 min on 2 shared cores
    python -m bench.recovery --base 5000 --log-mib 8   # a small run (~30 s)

Results: ``bench/results/recovery.json``. Page cache warm (the log was just written), as after a
process crash (not a machine crash).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import RESULTS, ROOT, json_default, log, machine_info, work_dir

K = 10
CLUSTERS = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.recovery",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("workload")
    g.add_argument("--dim", type=int, default=128)
    g.add_argument("--index", default="hnsw", help="index spec")
    g.add_argument("--base", type=int, default=20_000, help="vectors checkpointed before the log")
    g.add_argument("--batch", type=int, default=100, help="vectors per logged upsert")
    g.add_argument(
        "--log-mib", type=float, default=None, help="log size to stop at (default: the threshold)"
    )
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("measurement")
    g.add_argument("--queries", type=int, default=200, help="held-out queries for recall")
    g.add_argument("--latency-queries", type=int, default=50, help="single queries timed")
    g.add_argument("--dir", type=Path, default=None, help="where the data goes (default: a tmp)")
    g.add_argument(
        "--reuse", action="store_true", help="reuse a killed writer's directory in --dir"
    )
    g.add_argument("--out", type=Path, default=RESULTS / "recovery.json")
    p.add_argument("--writer", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---- the workload: one deterministic sequence, run by the writer, modelled by the parent -------
def data(seed: int, dim: int) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((CLUSTERS, dim)).astype(np.float32), rng


def vectors(centers: np.ndarray, seed: list[int], n: int) -> np.ndarray:
    """n clustered vectors (a seeded cluster each, plus noise): structured, not uniform."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, CLUSTERS, n)
    return (centers[c] + 0.6 * rng.standard_normal((n, centers.shape[1]))).astype(np.float32)


def base_ops(args: argparse.Namespace, centers: np.ndarray) -> list[tuple]:
    ops = []
    for a in range(0, args.base, 1000):
        n = min(1000, args.base - a)
        ids = [f"b{a + j}" for j in range(n)]
        ops.append(("upsert", ids, vectors(centers, [args.seed, 1, a], n), None))
    return ops


def log_op(args: argparse.Namespace, centers: np.ndarray, i: int) -> tuple:
    """Logged batch i: new ids mostly; every 10th upserts checkpointed ids again, every 7th
    deletes some ids (checkpointed and logged ones)."""
    rng = np.random.default_rng([args.seed, 2, i])
    if i % 7 == 6:
        old = [f"b{j}" for j in rng.choice(max(args.base, 1), 5, replace=False)]
        new = [f"l{j}" for j in rng.choice(max(i * args.batch, 1), 5, replace=False)]
        return ("delete", sorted(set(old + new)), None, None)
    if i % 10 == 9 and args.base:
        ids = [f"b{j}" for j in rng.choice(args.base, args.batch // 5, replace=False)]
    else:
        ids = [f"l{i * args.batch + j}" for j in range(args.batch)]
    return ("upsert", ids, vectors(centers, [args.seed, 3, i], len(ids)), i)


def payloads(op: tuple) -> list[dict[str, Any]]:
    kind, ids, _, i = op
    return [{"g": int(k[1:]) % 10, "batch": -1 if i is None else i} for k in ids]


def writer(args: argparse.Namespace) -> None:
    """The process that gets killed: checkpointed base, then the log up to the threshold."""
    from engine import Engine
    from engine.collection import CHECKPOINT_BYTES

    limit = int(args.log_mib * 2**20) if args.log_mib else CHECKPOINT_BYTES
    centers, _ = data(args.seed, args.dim)
    col = Engine(args.writer).create_collection("c", dim=args.dim, index=args.index)
    for op in base_ops(args, centers):
        col.upsert(op[1], op[2], payloads(op))
    col.flush()
    assert col._wal is not None
    biggest = 0
    i = 0
    while True:
        before = col._wal.bytes
        if before + 2 * biggest >= limit:
            break
        op = log_op(args, centers, i)
        if op[0] == "delete":
            col.delete(op[1])
        else:
            col.upsert(op[1], op[2], payloads(op))
        biggest = max(biggest, col._wal.bytes - before)
        i += 1
    print(f"READY {i} {col._wal.bytes}", flush=True)
    time.sleep(3600)


def model(args: argparse.Namespace, batches: int) -> dict[str, tuple[np.ndarray, dict]]:
    centers, _ = data(args.seed, args.dim)
    state: dict[str, tuple[np.ndarray, dict]] = {}
    ops = base_ops(args, centers) + [log_op(args, centers, i) for i in range(batches)]
    for op in ops:
        if op[0] == "delete":
            for k in op[1]:
                state.pop(k, None)
        else:
            for k, v, p in zip(op[1], op[2], payloads(op), strict=True):
                state.pop(k, None)
                state[k] = (v, p)
    return state


# ---- the measurement ---------------------------------------------------------------------------
def exact_topk(x: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = qn @ xn.T
    if mask is not None:
        s[:, ~mask] = -np.inf
    return np.argsort(-s, axis=1)[:, :k]


def recall(found: np.ndarray, truth: list[set[str]]) -> float:
    hits = sum(len(set(r) & t) for r, t in zip(found.tolist(), truth, strict=True))
    return hits / sum(len(t) for t in truth)


def measure(col: Any, queries: np.ndarray, truth: dict[str, list], args: argparse.Namespace):
    res = col.search_batch(queries, k=K)
    filt = col.search_batch(queries, k=K, where={"g": 3})
    lat = []
    for q in queries[: args.latency_queries]:
        t = time.perf_counter()
        col.search(q, k=K)
        lat.append(time.perf_counter() - t)
    return {
        "recall_at_10": recall(res.ids, truth["all"]),
        "recall_at_10_filtered": recall(filt.ids, truth["g3"]),
        "single_query_ms_median": 1e3 * statistics.median(lat),
        "single_query_ms_max": 1e3 * max(lat),
    }


def pending(col: Any) -> int:
    return int(getattr(col, "unindexed", 0))


def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    from engine import Engine

    data_dir = directory / "data"
    if not args.reuse:
        shutil.rmtree(data_dir, ignore_errors=True)
        spec = [*sys.argv[1:], "--writer", str(data_dir)]
        t = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.recovery", *spec],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "READY":
            proc.kill()
            raise RuntimeError(f"the writer failed: {line}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        (directory / "batches").write_text(line[1])
        took = time.perf_counter() - t
        log(f"writer: {line[1]} logged batches, {line[2]} log bytes, {took:.0f} s")
    batches = int((directory / "batches").read_text())
    work = directory / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(data_dir, work)
    wal_dir = work / "c" / "wal"
    log_bytes = sum(p.stat().st_size for p in wal_dir.iterdir())

    state = model(args, batches)
    ids = list(state)
    x = np.stack([state[k][0] for k in ids])
    g3 = np.array([state[k][1]["g"] == 3 for k in ids])
    centers, _ = data(args.seed, args.dim)
    queries = vectors(centers, [args.seed, 9], args.queries)
    truth = {
        "all": [{ids[j] for j in row} for row in exact_topk(x, queries, K, None).tolist()],
        "g3": [{ids[j] for j in row} for row in exact_topk(x, queries, K, g3).tolist()],
    }
    logged = sum(len(log_op(args, centers, i)[1]) for i in range(batches))

    t0 = time.perf_counter()
    col = Engine(work).open_collection("c")
    t_open = time.perf_counter() - t0
    first = col.search(queries[0], k=K)
    t_first = time.perf_counter() - t0
    unindexed_at_first = pending(col)
    during = measure(col, queries, truth, args)
    during["unindexed_at_start"] = unindexed_at_first
    during["unindexed_at_end"] = pending(col)
    wait = getattr(col, "wait_indexed", None)
    if wait is not None:
        wait()
    t_caught_up = time.perf_counter() - t0
    after = measure(col, queries, truth, args)
    # Every write there: the count, and each id's vector and payload.
    got = col.get(ids)
    wrong = sum(
        r is None or not np.array_equal(r.vector, state[k][0]) or r.payload != state[k][1]
        for k, r in zip(ids, got, strict=True)
    )
    complete = len(col) == len(ids) and wrong == 0
    t = time.perf_counter()
    col.close()
    t_close = time.perf_counter() - t
    return {
        "collection": {
            "index": col.index_spec,
            "checkpointed_vectors": args.base,
            "logged_batches": batches,
            "logged_ids": logged,
            "log_bytes": log_bytes,
            "items_after_recovery": len(ids),
        },
        "open_s": t_open,
        "first_answer_s": t_first,
        "first_answer_hits": len(first),
        "graph_caught_up_s": t_caught_up,
        "close_s": t_close,
        "every_write_there": complete,
        "items_wrong": wrong,
        "while_catching_up": during,
        "after_catching_up": after,
        "target": {"first_answer_s_at_most": 5.0},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.writer:
        writer(args)
        return 0
    directory, tmp = work_dir(args.dir, "vecdex-recovery-")
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "recovery",
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        **run(args, directory),
    }
    report["machine"] = machine_info(("hnswlib",))
    report["wall_s"] = time.perf_counter() - t0
    r = report
    log(
        f"open {r['open_s']:.2f} s, first answer {r['first_answer_s']:.2f} s, graph caught up "
        f"{r['graph_caught_up_s']:.1f} s; recall@10 while catching up "
        f"{r['while_catching_up']['recall_at_10']:.4f} (filtered "
        f"{r['while_catching_up']['recall_at_10_filtered']:.4f}), after "
        f"{r['after_catching_up']['recall_at_10']:.4f} (filtered "
        f"{r['after_catching_up']['recall_at_10_filtered']:.4f}); every write there: "
        f"{r['every_write_there']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=json_default) + "\n")
    log(f"wrote {args.out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
