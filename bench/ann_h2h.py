"""Head-to-head: vecdex against the raw library it wraps, on reopened indexes, in one process.

The sweep workers save vecdex HNSW / Flat collections and the raw hnswlib graph; this reopens them
side by side and times them *paired*: each batch (or each single query) runs on both systems back
to back, in alternating order, so that the bursts of a shared machine hit both alike. Batch ratios
are medians of per-pair ratios; single-query overheads are medians of per-query differences.

Every single-query callable searches a graph copy of its own. Two callables on one copy, run back
to back on the same query, let the second find that query's graph nodes still in the CPU cache:
on 400k GloVe (graph ~140 MB) the second call took half the time of a cold one, and that is the
"1.6-1.8x graph gap" earlier runs reported between raw hnswlib and vecdex's saved graph (a copy of
hnswlib's own graph, loaded twice, showed the same 2x "gap"; each copy queried once per query,
none).
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .ann_worker import WARMUP_BATCH, WARMUP_SINGLE, load_data


def paired_batch(fns: dict[str, Any], q: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each callable on the whole batch, ``repeats`` rounds, order flipping."""
    names = list(fns)
    for n in names:
        fns[n](q[:WARMUP_BATCH])
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[n](q)
            times[n].append(time.perf_counter() - t0)
    return times


def paired_single(fns: dict[str, Any], rows: list[np.ndarray], repeats: int) -> dict[str, list]:
    """Nanoseconds of each callable on each query (``repeats`` passes), back to back per query."""
    names = list(fns)
    for n in names:
        for v in rows[:WARMUP_SINGLE]:
            fns[n](v)
    clock = time.perf_counter_ns
    times: dict[str, list[int]] = {n: [] for n in names}
    for r in range(repeats):
        for i, v in enumerate(rows):
            for n in names if (i + r) % 2 == 0 else names[::-1]:
                fn = fns[n]
                t0 = clock()
                fn(v)
                times[n].append(clock() - t0)
    return times


def _vecdex_graph(engine_dir: str) -> Path | None:
    def generation(p: Path) -> int:
        tail = p.parent.name.rpartition(".")[2]
        return int(tail) if tail.isdigit() else -1

    # The newest checkpoint (index.10 after index.9: by number, not by name).
    found = sorted(Path(engine_dir).glob("bench/index*/graph.bin"), key=generation)
    return found[-1] if found else None


def head_to_head(spec: dict[str, Any]) -> dict[str, Any]:
    import faiss
    import hnswlib

    from engine import Engine
    from index import recall_at_k

    base, queries, gt = load_data(spec["data_dir"])
    k, repeats, ns = spec["k"], spec["repeats"], spec["single_queries"]
    gt = gt[:, :k]
    m, dim = queries.shape
    rows = [queries[i] for i in range(min(ns, m))]
    out: dict[str, Any] = {
        "method": "paired: batch ratio = median over rounds of t_hnswlib / t_vecdex; single "
        "overhead = median over queries of t_vecdex - t_raw (same query back to back, each "
        "single-query callable on a graph copy of its own)",
        "repeats": repeats,
        "single_queries": len(rows),
        "hnsw": [],
        "flat": None,
    }
    if spec.get("vecdex_hnsw") and spec.get("hnswlib"):
        col = Engine(spec["vecdex_hnsw"]["engine"]).open_collection("bench")

        def load_graph(path: str) -> Any:
            g = hnswlib.Index(space="ip", dim=dim)
            g.load_index(path)
            return g

        g = load_graph(spec["hnswlib"]["path"])
        g_t1 = load_graph(spec["hnswlib"]["path"])  # a copy of its own (module docstring)
        # The same graph vecdex searches, loaded into raw hnswlib: isolates the API-layer cost.
        same_path = _vecdex_graph(spec["vecdex_hnsw"]["engine"])
        same = load_graph(str(same_path)) if same_path is not None else None
        for ef in spec["efs"]:
            g.set_ef(ef)
            g_t1.set_ef(ef)
            bfns = {
                "vecdex": partial(col.search_batch, k=k, ef=ef),
                "hnswlib": partial(g.knn_query, k=k),
            }
            bt = paired_batch(bfns, queries, repeats)
            sfns = {
                "vecdex": partial(col.search, k=k, ef=ef),
                "hnswlib": partial(g.knn_query, k=k),
                "hnswlib_t1": partial(g_t1.knn_query, k=k, num_threads=1),
            }
            if same is not None:
                same.set_ef(ef)
                sfns["hnswlib_same_graph"] = partial(same.knn_query, k=k, num_threads=1)
            st = paired_single(sfns, rows, repeats)
            vres = col.search_batch(queries, k=k, ef=ef)
            v_lab = np.array([[int(s) for s in r] for r in vres.ids], dtype=np.int64)
            h_lab = g.knn_query(queries, k=k)[0].astype(np.int64)
            ratios = [h / v for v, h in zip(bt["vecdex"], bt["hnswlib"], strict=True)]
            vt = np.asarray(st["vecdex"], dtype=np.float64)

            def overhead(name: str, vt: np.ndarray = vt, st: dict = st) -> float:
                return float(np.median(vt - np.asarray(st[name], dtype=np.float64)) / 1e3)

            row = {
                "ef": ef,
                "recall": {"vecdex": recall_at_k(v_lab, gt), "hnswlib": recall_at_k(h_lab, gt)},
                "batch_qps": {n: m / statistics.median(t) for n, t in bt.items()},
                "batch_ratio": statistics.median(ratios),
                "batch_ratios": ratios,
                "single_median_us": {n: statistics.median(t) / 1e3 for n, t in st.items()},
                "single_mean_us": {n: statistics.fmean(t) / 1e3 for n, t in st.items()},
                "overhead_us": overhead("hnswlib"),
                "overhead_t1_us": overhead("hnswlib_t1"),
                "overhead_same_graph_us": overhead("hnswlib_same_graph") if same else None,
            }
            out["hnsw"].append(row)
            med = row["single_median_us"]
            print(
                f"  h2h ef={ef}: batch ratio {row['batch_ratio']:.3f}; single median vecdex "
                f"{med['vecdex']:.1f} us, hnswlib {med['hnswlib']:.1f} us (t1 "
                f"{med['hnswlib_t1']:.1f}); overhead {row['overhead_us']:.1f} us "
                f"(t1 {row['overhead_t1_us']:.1f}, same graph "
                f"{row['overhead_same_graph_us'] or float('nan'):.1f})",
                flush=True,
            )
        del col, g, g_t1, same
    if spec.get("vecdex_flat"):
        col = Engine(spec["vecdex_flat"]["engine"]).open_collection("bench")
        fx = faiss.IndexFlatIP(dim)
        fx.add(base)
        bt = paired_batch(
            {"vecdex": partial(col.search_batch, k=k), "faiss": partial(fx.search, k=k)},
            queries,
            min(repeats, 3),  # seconds per call at 400k: 3 rounds suffice
        )
        ratios = [f / v for v, f in zip(bt["vecdex"], bt["faiss"], strict=True)]
        out["flat"] = {
            "batch_qps": {n: m / statistics.median(t) for n, t in bt.items()},
            "batch_ratio": statistics.median(ratios),
            "batch_ratios": ratios,
        }
        print(f"  h2h flat: batch ratio {out['flat']['batch_ratio']:.3f}", flush=True)
    return out
