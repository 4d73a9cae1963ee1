"""MUVERA benchmark, stages ``--synthetic`` (seeded topic-structured token sets: exhaustive ground
truth, MUVERA over IVF, the heuristic, latency, QPS, the FDEs under PQ) and ``--throughput`` (FDE
generation docs/s)."""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .common import dir_bytes, log, split, timed
from .muvera_curves import (
    gt_positions,
    heuristic_curve,
    heuristic_first_rank,
    heuristic_tokens,
    latency,
    muvera_curve,
    ratio,
    threads,
)
from .muvera_data import CACHE, PARETO, TARGETS, K, SyntheticSpec, synthetic_data


def synthetic_stage(args: argparse.Namespace) -> dict[str, Any]:
    from index import ChamferIndex, IVFIndex, MuveraIndex, TokenANNIndex, recall_at_k

    spec = SyntheticSpec(n_docs=args.n_docs, n_queries=args.queries, seed=args.seed)
    log(f"synthetic: {spec}")
    dt, d_off, qt, q_off, meta = synthetic_data(spec)
    n, nq, dim = spec.n_docs, spec.n_queries, spec.dim
    docs = split(dt, d_off)
    qs = [x.astype(np.float32) for x in split(qt, q_off)]
    labels = np.arange(n, dtype=np.int64)
    out: dict[str, Any] = {
        "data": {
            **asdict(spec),
            "topics": max(1, n // spec.docs_per_topic),
            "document_tokens": int(dt.shape[0]),
            "mean_document_tokens": round(dt.shape[0] / n, 1),
            "mean_query_tokens": round(qt.shape[0] / nq, 1),
            "generator": SyntheticSpec.__doc__.split("\n\n")[0].replace("\n   ", ""),
            **meta,
        }
    }
    nts = sorted({1, os.cpu_count() or 1})

    # -- exhaustive Chamfer: ground truth and latency --
    log(f"synthetic: exhaustive Chamfer over {dt.shape[0]:,} tokens, {nq} queries")
    ex = ChamferIndex(dim, metric="ip")
    _, t_add = timed(lambda: ex.add(docs, labels))
    ex.search(qs[:1], K)  # warm-up: converts the float16 store once
    (_, gt), t_gt = timed(lambda: ex.search(qs, K))
    ex_lat = {
        f"threads_{nt}": latency(lambda q: ex.search(q, K), qs, args.lat_slow, nt) for nt in nts
    }
    out["exhaustive"] = {
        "add_s": round(t_add, 2),
        "batch_s": round(t_gt, 2),
        "batch_ms_per_query": round(1000 * t_gt / nq, 2),
        "latency": {t: v | {"recall@10": 1.0} for t, v in ex_lat.items()},
    }
    log(f"synthetic: exhaustive {out['exhaustive']}")
    ex = None  # free memory before the next index
    gc.collect()

    # -- MUVERA: FDEs in IVF-Flat (nprobe = nlist is exact FDE search) --
    cfg = args.synthetic_fde
    nlist = min(args.nlist, max(1, n // 39))
    inner = {"inner": "ivf", "inner_nlist": nlist, "inner_nprobe": 16}
    log(f"synthetic: MUVERA {cfg.name} ({cfg.dims(dim)} dims), inner ivf nlist={nlist}")
    mv = MuveraIndex(dim, metric="ip", **cfg.params(), **inner)
    _, t_build = timed(lambda: mv.add(docs, labels))
    cmax = min(args.cmax, n)
    nprobes = sorted({p for p in args.nprobes if p < nlist} | {nlist})
    curves: dict[str, Any] = {}
    positions: dict[str, np.ndarray] = {}
    for p in nprobes:
        cand, t = timed(lambda p=p: mv.candidate_labels(qs, candidates=cmax, inner_nprobe=p))
        positions[f"{cfg.name} nprobe{p}"] = pos = gt_positions(cand, gt)
        curves[str(p)] = {
            "fde_search_ms_per_query_batch": round(1000 * t / nq, 2),
            **muvera_curve(pos, cmax),
        }
        log(f"synthetic: nprobe={p} {curves[str(p)]['recall_at_candidates']}")
    # Operating points: each nprobe at its recall-0.95 candidate count, measured end to end.
    points: list[dict[str, Any]] = []

    def point(p: int, target: float | None, c: int) -> dict[str, Any]:
        (_, lab), t = timed(lambda: mv.search(qs, K, candidates=c, inner_nprobe=p))
        return {
            "nprobe": p,
            "target": target,
            "candidates": c,
            "recall@10": round(recall_at_k(lab, gt, K), 4),
            "batch_ms_per_query": round(1000 * t / nq, 3),
        }

    for p in nprobes:
        for target in TARGETS:
            c = curves[str(p)]["candidates_for_recall"][str(target)]
            if c is not None:
                points.append(point(p, target, c))
    points += [point(p, None, c) for c in args.candidates for p in (16, nlist) if p in nprobes]
    ok95 = [pt for pt in points if pt["recall@10"] >= 0.95]
    best = min(ok95, key=lambda pt: pt["batch_ms_per_query"]) if ok95 else None
    out["muvera"] = {
        "config": cfg.name,
        **cfg.params(),
        "fde_dims": cfg.dims(dim),
        "inner": f"ivf:nlist={nlist} (IVF-Flat, inner product; nprobe={nlist} = exact FDE search)",
        "build_s": round(t_build, 2),
        "build_docs_per_s": round(n / t_build, 1),
        "by_nprobe": curves,
        "operating_points": points,
        "fastest_at_recall_0.95": best,
    }
    lat: dict[str, Any] = {}
    if best is not None:
        c, p = best["candidates"], best["nprobe"]
        exact_c = curves[str(nlist)]["candidates_for_recall"]["0.95"]
        for nt in nts:
            lat[f"threads_{nt}"] = {
                f"muvera_nprobe{p}_c{c}": latency(
                    lambda q: mv.search(q, K, candidates=c, inner_nprobe=p), qs, args.lat_fast, nt
                )
                | {"recall@10": best["recall@10"]},
            }
            if exact_c is not None:
                lat[f"threads_{nt}"][f"muvera_exactfde_c{exact_c}"] = latency(
                    lambda q: mv.search(q, K, candidates=exact_c, inner_nprobe=nlist),
                    qs,
                    args.lat_fast,
                    nt,
                ) | {"recall@10": curves[str(nlist)]["dense"][exact_c - 1]}
        log(f"synthetic: MUVERA latency {lat}")
    out["muvera"]["latency"] = lat
    sweep: dict[str, Any] = {
        cfg.name: {
            **cfg.params(),
            "fde_dims": cfg.dims(dim),
            "inner": f"ivf nprobe={nlist} (exact FDE search)",
            "build_s": round(t_build, 2),
            "build_docs_per_s": round(n / t_build, 1),
            **{k: v for k, v in curves[str(nlist)].items()},
        }
    }
    speed: dict[str, Any] = {}
    if best is not None:
        key = f"muvera_nprobe{best['nprobe']}_c{best['candidates']}"
        for nt in nts:
            e = ex_lat[f"threads_{nt}"]["median_ms"]
            m = lat[f"threads_{nt}"][key]["median_ms"]
            speed[f"threads_{nt}"] = {
                "exhaustive_ms": e,
                "muvera_ms": m,
                "speedup": round(e / m, 1),
                "exhaustive_qps": round(1000 / e, 2),
                "muvera_qps": round(1000 / m, 1),
            }
        speed["batch_all_cores"] = {
            "exhaustive_ms_per_query": out["exhaustive"]["batch_ms_per_query"],
            "muvera_ms_per_query": best["batch_ms_per_query"],
            "speedup": round(
                out["exhaustive"]["batch_ms_per_query"] / best["batch_ms_per_query"], 1
            ),
        }
    out["speedup_vs_exhaustive_at_recall_0.95"] = speed
    log(f"synthetic: speed {speed}")

    # -- FDE storage: IVF-Flat vs IVF-PQ on the same FDEs --
    fde = mv.inner.vectors(labels)  # IVF-Flat reconstructions are the exact FDEs
    qf = mv.encode_queries(qs)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        mv.inner.save(Path(tmp) / "flat")
        flat_bytes = dir_bytes(Path(tmp) / "flat")
    pq = IVFIndex(fde.shape[1], metric="ip", nlist=args.pq_nlist, pq=args.pq_m, nbits=args.pq_nbits)
    _, t_pq = timed(lambda: pq.add(fde, labels))
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        pq.save(Path(tmp) / "pq")
        pq_bytes = dir_bytes(Path(tmp) / "pq")
    pq_curves = {}
    for p in sorted({16, args.pq_nlist}):
        (_, cand), t = timed(lambda p=p: pq.search(qf, cmax, nprobe=p))
        pq_curves[str(p)] = {
            "fde_search_ms_per_query_batch": round(1000 * t / nq, 2),
            **muvera_curve(gt_positions(cand, gt), cmax),
        }
    out["pq"] = {
        "spec": f"ivf:nlist={args.pq_nlist},pq={args.pq_m},nbits={args.pq_nbits}",
        "note": "the same FDEs put into IVFIndex with PQ; candidates then exact Chamfer rerank",
        "train_add_s": round(t_pq, 2),
        "saved_bytes_per_doc": round(pq_bytes / n, 1),
        "code_bytes_per_doc": args.pq_m * args.pq_nbits / 8,
        "by_nprobe": pq_curves,
    }
    out["bytes_per_doc"] = {
        "fde_float32": 4 * fde.shape[1],
        "ivf_flat_saved": round(flat_bytes / n, 1),
        "ivf_pq_saved": round(pq_bytes / n, 1),
        "tokens_float16": round(2 * dim * dt.shape[0] / n, 1),
    }
    brief = {p: c["recall_at_candidates"] for p, c in pq_curves.items()}
    log(f"synthetic: pq {out['pq']['spec']} {brief} bytes {out['bytes_per_doc']}")
    pq = fde = None
    gc.collect()

    # -- the Pareto points (and the sweep) at full scale, inner = flat (exact FDE search) --
    for scfg in dict.fromkeys(args.synthetic_sweep):
        if scfg == cfg:
            continue
        log(f"synthetic: sweep MUVERA {scfg.name} ({scfg.dims(dim)} dims), inner flat")
        sm = MuveraIndex(dim, metric="ip", inner="flat", **scfg.params())
        _, t_b = timed(lambda sm=sm: sm.add(docs, labels))
        cand, t = timed(lambda sm=sm: sm.candidate_labels(qs, candidates=cmax))
        positions[f"{scfg.name} flat"] = gt_positions(cand, gt)
        sweep[scfg.name] = {
            **scfg.params(),
            "fde_dims": scfg.dims(dim),
            "inner": "flat",
            "build_s": round(t_b, 2),
            "build_docs_per_s": round(n / t_b, 1),
            "fde_search_ms_per_query_batch": round(1000 * t / nq, 2),
            **muvera_curve(positions[f"{scfg.name} flat"], cmax),
        }
        log(f"  recall {sweep[scfg.name]['recall_at_candidates']}")
        sm = None
        gc.collect()
    out["sweep"] = sweep

    # -- the heuristic on a subset of queries (exact token search over every document token) --
    hq = min(args.synthetic_heuristic_queries, nq)
    kmax = args.synthetic_kmax
    log(f"synthetic: heuristic (token_ann, inner=flat) on {hq} queries, kmax={kmax}")
    tok = TokenANNIndex(dim, metric="ip", inner="flat", k_tokens=8)
    _, t_tok_add = timed(lambda: tok.add(docs, labels))
    qcat = np.concatenate(qs[:hq])
    token_docs, t_tok = timed(lambda: heuristic_tokens(tok, qcat, q_off, d_off, kmax))
    first = heuristic_first_rank(token_docs, q_off, hq)
    heur = heuristic_curve(first, gt[:hq], kmax)
    own = tok.candidate_labels(qs[:1], k_tokens=4)
    consistent = np.array_equal(np.sort(own[0][own[0] >= 0]), np.sort(first[0][0][first[0][1] < 4]))
    k95 = (heur["candidates_for_recall"].get("0.95") or {}).get("k_tokens") or kmax
    hlat = {
        f"threads_{nt}": latency(lambda q: tok.search(q, K, k_tokens=k95), qs, args.lat_slow, nt)
        | {"recall@10": heur["dense_recall"][k95 - 1]}
        for nt in nts
    }
    out["heuristic"] = {
        "spec": "token_ann:inner=flat (exact token search over all document tokens)",
        "queries": hq,
        "add_s": round(t_tok_add, 2),
        "token_search_ms_per_query_kmax": round(1000 * t_tok / hq, 2),
        "kmax": kmax,
        "matches_candidate_labels": bool(consistent),
        "latency_k_tokens": k95,
        "latency": hlat,
        **heur,
    }
    sub = {name: muvera_curve(pos[:hq], cmax) for name, pos in positions.items()}
    out["muvera_same_queries"] = {
        name: {k: v for k, v in c.items() if k != "dense"} for name, c in sub.items()
    }
    out["candidate_ratio_heuristic_over_muvera"] = {
        name: ratio(heur, c, cmax) for name, c in sub.items()
    }
    log(f"synthetic: heuristic need {heur['candidates_for_recall']}")
    log(f"synthetic: ratio {out['candidate_ratio_heuristic_over_muvera']}")
    tok = mv = None
    gc.collect()
    return out


def throughput_stage(args: argparse.Namespace) -> dict[str, Any]:
    """FDE generation docs/s on a slice of the synthetic documents (and float32 bytes/doc)."""
    from index import FDE

    spec = SyntheticSpec(n_docs=args.n_docs, n_queries=args.queries, seed=args.seed)
    dt, d_off, _, _, _ = synthetic_data(spec)
    m = min(args.throughput_docs, spec.n_docs)
    x = dt[: d_off[m]].astype(np.float32)
    off = d_off[: m + 1]
    out: dict[str, Any] = {"docs": m, "mean_tokens": round(x.shape[0] / m, 1), "dim": spec.dim}
    rows = {}
    for cfg in dict.fromkeys([*PARETO, args.synthetic_fde]):
        fde = FDE(spec.dim, **cfg.params(), seed=0)
        row: dict[str, Any] = {
            "fde_dims": cfg.dims(spec.dim),
            "bytes_per_doc_float32": 4 * fde.out_dim,
        }
        for nt in sorted({1, os.cpu_count() or 1}):
            with threads(nt):
                times = []
                for _ in range(args.repeats):
                    _, t = timed(lambda fde=fde: fde.encode_documents(x, off))
                    times.append(t)
            row[f"docs_per_s_threads_{nt}"] = round(m / statistics.median(times), 1)
            qt = x[: off[min(m, 200)]]
            _, tq = timed(lambda fde=fde, qt=qt: fde.encode_queries(qt, off[: min(m, 200) + 1]))
            row[f"query_fdes_per_s_threads_{nt}"] = round(min(m, 200) / tq, 1)
        rows[cfg.name] = row
        log(f"throughput {cfg.name}: {row}")
    out["by_config"] = rows
    out["repeats"] = args.repeats
    return out
