"""Scale-out benchmark: what sharding and Ray cost and buy on one machine, and a scale model.

Three parts, each configuration in a fresh subprocess (``bench.scale_worker``) so that RSS and Ray
state never leak between configurations:

1. ``index-text``: SciFact (the first ``--docs`` documents, a BEIR directory under
   ``bench/.cache/scale``) through ``engine.ingest.ingest`` with the default encoder (MiniLM,
   offline), index ``flat``, 2 in-process shards: locally with torch at 1 and 2 threads, and on a
   local Ray cluster (``num_cpus=2``) with 1 encoder x 1 CPU, 1 x 2 and 2 x 1. Derived: Ray's
   overhead on one worker (1 - ray 1x2 / local 2 threads; target <= 15%) and the scaling
   efficiency of two encoders (ray 2x1 / (2 x ray 1x1)).
2. ``index-vectors``: ``--vectors`` SYNTHETIC clustered 128-d vectors (Parquet, fixed-size-list
   column, row groups of 65,536) into ``--ivf-spec`` with 2 shards, local vs Ray read tasks: rows/s,
   their ratio, the child's peak RSS (ru_maxrss; with Ray, the driver's only, so the process
   tree's sampled peak is reported too) and the size on disk.
3. ``fanout``: ``--fanout-n`` clustered 128-d vectors in one collection and in 1, 2 and 4 shards,
   ``flat`` and ``hnsw:M=16,ef_construction=100`` (ef=64), shards hosted in-process and by Ray
   actors: single-query p50/p99 (one query a call), batch QPS (one ``search_batch``), recall@10
   against the exact top-k. Collections are built once and cached, keyed by size, spec and shards.

Then a scale model from those figures (``bench.scale_model``): the JSON's ``"model"``, a Markdown
table, and a PNG of QPS and p50 against shards.

Usage:
    nice python -m bench.scale --quick    # tiny sizes, < 3 min: bench/results/scale-quick.json
    nice python -m bench.scale                  # the full run: bench/results/scale.json + .png
    nice python -m bench.scale --only fanout    # rerun one part, merged into the existing JSON
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import CACHE_ROOT, RESULTS, ROOT, LoadSampler, json_default, log, positive_ints

PARTS = ("index-text", "index-vectors", "fanout")
CACHE = CACHE_ROOT / "scale"
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
HNSW = "hnsw:M=16,ef_construction=100"
DISTS = ("ray", "faiss-cpu", "hnswlib", "pyarrow", "sentence-transformers", "psutil")
QUICK = {"docs": 96, "vectors": 20_000, "fanout_n": 5_000, "single": 50, "batch": 200}


@dataclass
class Run:
    """One configuration: the part it belongs to, its name, and the worker job that measures it."""

    part: str
    name: str
    job: dict[str, Any]
    label: str = ""
    notes: list[str] = field(default_factory=list)


# ---- running a job in a fresh process -----------------------------------------------------------
def spawn(job: dict[str, Any], timeout: int) -> dict[str, Any]:
    """Runs one worker job; its result, or a failed record saying why there is none."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads do not spin on 2 cores
    env.setdefault("RAY_DEDUP_LOGS", "0")
    cmd = [sys.executable, "-m", "bench.scale_worker", json.dumps(job, default=json_default)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, timeout=timeout, capture_output=True, text=True, check=False
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        tail = (proc.stderr or proc.stdout)[-1500:]
        return {"status": "failed", "reason": f"exit status {proc.returncode}", "stderr": tail}
    out: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    out["status"] = "ok"
    out["process_wall_s"] = round(time.perf_counter() - t0, 2)
    return out


# ---- data ---------------------------------------------------------------------------------------
def scifact_subset(n: int, source: Path) -> tuple[Path, int]:
    """The first ``n`` SciFact documents as a BEIR directory (corpus.jsonl only), cached."""
    d = CACHE / f"scifact-{n}"
    corpus = d / "corpus.jsonl"
    if not corpus.exists():
        d.mkdir(parents=True, exist_ok=True)
        lines = []
        with open(source / "corpus.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    lines.append(line if line.endswith("\n") else line + "\n")
                if len(lines) == n:
                    break
        tmp = corpus.with_suffix(".tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.replace(corpus)
    with open(corpus, encoding="utf-8") as f:
        return d, sum(1 for line in f if line.strip())


def vectors_file(args: argparse.Namespace) -> Path:
    path = CACHE / f"vectors-{args.vectors}x128-seed{args.seed}.parquet"
    if not path.exists():
        log(f"writing {path.name}")
        job = {
            "kind": "prep-vectors",
            "path": path,
            "n": args.vectors,
            "seed": args.seed,
            "row_group": args.row_group,
        }
        r = spawn(job, args.timeout)
        if r["status"] != "ok":
            raise SystemExit(f"could not write {path}: {r}")
    return path


def fanout_data(args: argparse.Namespace) -> Path:
    d = CACHE / f"fanout-{args.fanout_n}-seed{args.seed}"
    if not (d / "gt.npy").exists():
        d.mkdir(parents=True, exist_ok=True)
        log(f"writing {d.name} (base, queries, exact top-10)")
        nq = max(args.batch_queries, args.single_queries)
        job = {
            "kind": "prep-fanout",
            "dir": d,
            "n": args.fanout_n,
            "queries": nq,
            "k": 10,
            "seed": args.seed + 1,
        }
        r = spawn(job, args.timeout)
        if r["status"] != "ok":
            raise SystemExit(f"could not write {d}: {r}")
    return d


# ---- the configurations -------------------------------------------------------------------------
def text_runs(args: argparse.Namespace, corpus: Path) -> list[Run]:
    base = {
        "kind": "index-text",
        "input": corpus,
        "spec": "flat",
        "shards": 2,
        "work": CACHE / "work" / "text",
    }
    ray = {**base, "ray": True}

    def cpus(encoders: int, per: int) -> dict[str, Any]:
        # The cluster has the machine's cores: with encoders, Ray Data's read tasks take no
        # CPU of their own (engine/ingest/distributed.py).
        return {"encoders": encoders, "cpus_per_encoder": per, "ray_cpus": args.ray_cpus}

    return [
        Run("index-text", "local-1t", {**base, "threads": 1}, "local, torch 1 thread"),
        Run("index-text", "local-2t", {**base, "threads": 2}, "local, torch 2 threads"),
        Run("index-text", "ray-1x1", {**ray, **cpus(1, 1)}, "Ray, 1 encoder x 1 CPU"),
        Run("index-text", "ray-1x2", {**ray, **cpus(1, 2)}, "Ray, 1 encoder x 2 CPUs"),
        Run("index-text", "ray-2x1", {**ray, **cpus(2, 1)}, "Ray, 2 encoders x 1 CPU"),
    ]


def vector_runs(args: argparse.Namespace, parquet: Path) -> list[Run]:
    base = {
        "kind": "index-vectors",
        "input": parquet,
        "spec": args.ivf_spec,
        "shards": 2,
        "vector_column": "vector",
        "work": CACHE / "work" / "vectors",
    }
    return [
        Run("index-vectors", "local", base, "local"),
        Run(
            "index-vectors",
            "ray",
            {**base, "ray": True, "ray_cpus": args.ray_cpus},
            "Ray read tasks",
        ),
    ]


def slug(spec: str) -> str:
    return spec.replace(":", "_").replace(",", "_").replace("=", "")


def fanout_runs(args: argparse.Namespace, data: Path) -> tuple[list[Run], list[dict[str, Any]]]:
    runs, builds = [], []
    for spec in ("flat", HNSW):
        params = {"ef": args.ef} if spec.startswith("hnsw") else {}
        index = spec.split(":")[0]
        layouts: list[tuple[str, int | None]] = [("single", None)]
        layouts += [(f"s{s}", s) for s in args.shards]
        for layout, shards in layouts:
            d = data / f"{slug(spec)}-{layout}"
            builds.append({"dir": d, "spec": spec, "shards": shards})
            hosts = ["inproc"] if shards is None else ["inproc", "ray"]
            for host in hosts:
                job = {
                    "kind": "fanout",
                    "dir": d,
                    "data": data,
                    "host": host,
                    "ray_cpus": args.ray_cpus,
                    "k": 10,
                    "params": params,
                    "single": args.single_queries,
                    "batch": args.batch_queries,
                    "repeats": args.repeats,
                }
                name = f"{index}-{layout}-{host}"
                run = Run("fanout", name, job, f"{index}, {layout}, {host}")
                run.notes.append(f"spec {spec}, shards {shards}, search params {params}")
                runs.append(run)
    return runs, builds


def measure(runs: list[Run], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for run in runs:
        log(f"  {run.part} {run.name}: {run.label}")
        r = spawn(run.job, args.timeout)
        r["label"], r["job"] = run.label, {k: v for k, v in run.job.items() if k != "kind"}
        if run.notes:
            r["notes"] = run.notes
        if r["status"] != "ok":
            log(f"  {run.name} FAILED: {r['reason']}\n{r.get('stderr', '')}")
        out[run.name] = r
    return out


# ---- the parts ----------------------------------------------------------------------------------
def part_text(args: argparse.Namespace) -> dict[str, Any]:
    corpus, docs = scifact_subset(args.docs, args.scifact)
    log(f"== index-text: {docs} SciFact documents, flat, 2 shards")
    runs = measure(text_runs(args, corpus), args)
    rate = {k: r.get("rows_per_s") for k, r in runs.items() if r["status"] == "ok"}
    for k, r in runs.items():
        if r["status"] == "ok":
            log(f"  {k}: {r['rows_per_s']:.1f} docs/s, {r['wall_s']:.1f} s, stages {r['stages']}")
    derived: dict[str, Any] = {}
    if rate.get("ray-1x2") and rate.get("local-2t"):
        derived["ray_overhead_one_worker"] = round(1 - rate["ray-1x2"] / rate["local-2t"], 4)
        derived["ray_overhead_target"] = 0.15
        derived["ray_overhead_met"] = derived["ray_overhead_one_worker"] <= 0.15
    if rate.get("ray-2x1") and rate.get("ray-1x1"):
        derived["scaling_efficiency_2_encoders"] = round(rate["ray-2x1"] / (2 * rate["ray-1x1"]), 4)
    if rate.get("local-2t") and rate.get("local-1t"):
        derived["local_thread_scaling_1_to_2"] = round(rate["local-2t"] / rate["local-1t"], 4)
    return {
        "docs": docs,
        "input": corpus,
        "index": "flat",
        "shards": 2,
        "runs": runs,
        "derived": derived,
    }


def part_vectors(args: argparse.Namespace) -> dict[str, Any]:
    parquet = vectors_file(args)
    log(f"== index-vectors: {args.vectors:,} x 128 into {args.ivf_spec}, 2 shards")
    runs = measure(vector_runs(args, parquet), args)
    for k, r in runs.items():
        if r["status"] == "ok":
            log(
                f"  {k}: {r['rows_per_s']:,.0f} rows/s, {r['wall_s']:.1f} s, peak RSS "
                f"{r['peak_rss_mb']:.0f} MB (tree {r['process_tree_peak_rss_mb']:.0f} MB), "
                f"disk {r['bytes_on_disk'] / 2**20:.1f} MiB"
            )
    derived: dict[str, Any] = {}
    local, ray = runs.get("local", {}), runs.get("ray", {})
    if local.get("status") == ray.get("status") == "ok":
        derived["ray_vs_local_rows_per_s"] = round(ray["rows_per_s"] / local["rows_per_s"], 4)
        derived["ray_overhead"] = round(1 - derived["ray_vs_local_rows_per_s"], 4)
        derived["ray_vs_local_driver_peak_rss"] = round(
            ray["peak_rss_mb"] / local["peak_rss_mb"], 4
        )
    return {
        "rows": args.vectors,
        "dim": 128,
        "spec": args.ivf_spec,
        "shards": 2,
        "input": parquet,
        "input_bytes": parquet.stat().st_size,
        "runs": runs,
        "derived": derived,
    }


def part_fanout(args: argparse.Namespace) -> dict[str, Any]:
    data = fanout_data(args)
    runs, builds = fanout_runs(args, data)
    missing = [b for b in builds if not (Path(b["dir"]) / "done.json").exists()]
    if missing:
        log(f"== fanout: building {len(missing)} collection(s) of {args.fanout_n:,} x 128")
        r = spawn({"kind": "build", "data": data, "collections": missing}, args.timeout)
        if r["status"] != "ok":
            raise SystemExit(f"building the fan-out collections failed: {r}")
    build_s = {
        Path(b["dir"]).name: json.loads((Path(b["dir"]) / "done.json").read_text())["build_s"]
        for b in builds
    }
    log(
        f"== fanout: {len(runs)} configurations, {args.single_queries} single queries, "
        f"batch of {args.batch_queries}"
    )
    results = measure(runs, args)
    for k, r in results.items():
        if r["status"] == "ok":
            log(
                f"  {k}: p50 {r['single']['p50_ms']:.2f} ms, p99 {r['single']['p99_ms']:.2f} ms,"
                f" batch {r['batch']['qps']:,.0f} QPS, recall@10 {r['recall@10_vs_exact']:.4f}"
            )
    return {
        "n": args.fanout_n,
        "dim": 128,
        "specs": ["flat", HNSW],
        "ef": args.ef,
        "shards": list(args.shards),
        "data": data,
        "build_s": build_s,
        "runs": results,
    }


# ---- command line -------------------------------------------------------------------------------
def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"unknown parts {sorted(unknown)}; known: {PARTS}")
    return parts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("what to run")
    g.add_argument("--only", type=_parts, default=PARTS, help="parts: " + ",".join(PARTS))
    g.add_argument("--quick", action="store_true", help=f"tiny sizes {QUICK}")
    g = p.add_argument_group("sizes")
    g.add_argument("--docs", type=int, default=1500, help="SciFact documents indexed")
    g.add_argument("--vectors", type=int, default=1_000_000, help="vectors indexed into IVF-PQ")
    g.add_argument("--fanout-n", type=int, default=200_000, help="vectors in each fan-out layout")
    g.add_argument("--shards", type=positive_ints, default=(1, 2, 4), help="fan-out shard counts")
    g.add_argument("--single-queries", type=int, default=300, help="queries timed one at a time")
    g.add_argument("--batch-queries", type=int, default=1000, help="queries in one search_batch")
    g.add_argument("--repeats", type=int, default=3, help="batch passes (median)")
    g = p.add_argument_group("parameters")
    g.add_argument("--ivf-spec", default="ivf:nlist=1024,pq=16")
    g.add_argument("--ef", type=int, default=64, help="HNSW search ef")
    g.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    g.add_argument("--row-group", type=int, default=65_536)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--scifact", type=Path, default=SCIFACT)
    g = p.add_argument_group("scale model (assumptions, stated in the output)")
    g.add_argument(
        "--assumed-gpu-docs-per-s",
        type=float,
        default=1500.0,
        help="ASSUMED MiniLM documents/s on one GPU (not measured here)",
    )
    g.add_argument("--docs-per-shard", type=int, default=25_000_000)
    g.add_argument("--node-ram-gb", type=float, default=64.0)
    g = p.add_argument_group("run")
    g.add_argument("--timeout", type=int, default=7200, help="seconds per subprocess")
    g.add_argument("--out", type=Path, default=None, help="JSON (the PNG goes beside it)")
    args = p.parse_args(argv)
    if args.quick:
        args.docs, args.vectors, args.fanout_n = QUICK["docs"], QUICK["vectors"], QUICK["fanout_n"]
        args.single_queries, args.batch_queries = QUICK["single"], QUICK["batch"]
        args.repeats = 1
        if args.ivf_spec == "ivf:nlist=1024,pq=16":
            args.ivf_spec = "ivf:nlist=64,pq=16"  # 20k rows train 64 lists, not 1,024
        args.timeout = min(args.timeout, 600)
    if args.out is None:
        args.out = RESULTS / ("scale-quick.json" if args.quick else "scale.json")
    if args.quick and args.out.resolve() == (RESULTS / "scale.json").resolve():
        p.error("a --quick run must not overwrite bench/results/scale.json")
    return args


def main(argv: list[str] | None = None) -> int:
    from . import scale_model

    args = parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    t0, load = time.perf_counter(), LoadSampler()
    previous: dict[str, Any] = {}
    if args.out.exists() and set(args.only) != set(PARTS):
        previous = json.loads(args.out.read_text())
    parts = dict(previous.get("parts", {}))
    settings = dict(previous.get("settings", {}))
    run_part = {"index-text": part_text, "index-vectors": part_vectors, "fanout": part_fanout}
    for name in args.only:
        parts[name] = run_part[name](args)
        parts[name]["measured"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
        settings[name] = {k: v for k, v in vars(args).items() if k != "only"}
    report = {
        "benchmark": "scale",
        "command": "python -m bench.scale " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "quick": args.quick,
        "settings": settings,
        "parts": parts,
        "load": load.summary(),
        "wall_s": round(time.perf_counter() - t0, 1),
        "machine": scale_model.machine(DISTS),
    }
    report["model"] = scale_model.model(report, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=json_default) + "\n")
    print(scale_model.markdown(report))
    png = scale_model.plot(report, args.out.with_suffix(".png"))
    log(f"wrote {args.out}{' and ' + str(png) if png else ''} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
