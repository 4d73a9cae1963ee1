"""Compact token codes for the Chamfer rerank (issue 13, item 3) on SciFact test: nDCG@10 of
exact MaxSim with the float16 tokens against ``tokens=int8|res4|res2``, the RAM the rerank's
tokens take, build and rerank time.

Token embeddings are bench/hybrid's (the ``token`` model: MiniLM states through a seeded 128-d
projection), read from its cache ``bench/.cache/hybrid/{docs,queries}-tokens-*``; run
``python -m bench.hybrid --token-model token`` first if it is missing (this script never encodes).

Three rankings per option, all scored by the option's own tokens:
- rerank of MUVERA's candidates (paper default FDE, exact inner search, ``candidates``): what a
  ``muvera:...,tokens=X`` index returns (its rerank is the compact exhaustive index's over its
  candidates; tests/index/test_tokens_compact.py);
- rerank of the exact float16 top-``candidates`` (ideal candidates: only the codes differ);
- exhaustive MaxSim over every document (``chamfer:tokens=X``; ``--no-exhaustive`` skips it).

    python -m bench.tokens_compact [--data /work/shared/data/scifact] [--candidates 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import RESULTS, LoadSampler, json_default, log, machine_info  # noqa: E402
from bench.hybrid_quality import CACHE, load_data, texts_digest  # noqa: E402
from engine.metrics import evaluate_run  # noqa: E402

OPTIONS = ("f16", "int8", "res4", "res2")
ADD_BATCH = 1000  # documents per add: the residual codebook re-trains as the index grows
MUVERA = "muvera:k_sim=5,d_proj=16,r_reps=20,inner=flat"


def cached_tokens(side: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """(float16 tokens memory-mapped, offsets, cache key) of bench/hybrid's token model."""
    digest = texts_digest(texts)
    hits = sorted(CACHE.glob(f"{side}-tokens-*-{digest}.tokens.npy"))
    if len(hits) != 1:
        raise SystemExit(
            f"need exactly one {side} token cache for these texts in {CACHE} (found {len(hits)});"
            " run python -m bench.hybrid --token-model token first"
        )
    key = hits[0].name[: -len(".tokens.npy")]
    tokens = np.load(hits[0], mmap_mode="r", allow_pickle=False)
    offsets = np.load(CACHE / f"{key}.offsets.npy", allow_pickle=False)
    return tokens, offsets, key


def split(tokens: np.ndarray, offsets: np.ndarray, a: int, b: int) -> list[np.ndarray]:
    return [np.asarray(tokens[offsets[i] : offsets[i + 1]]) for i in range(a, b)]


def ndcg(rows: np.ndarray, labels: np.ndarray | None, ids: list[str], qids, qrels) -> float:
    lab = rows if labels is None else labels
    run = {q: [ids[d] for d in row if d >= 0] for q, row in zip(qids, lab.tolist(), strict=True)}
    return round(float(evaluate_run(run, qrels, ndcg_at=(10,))["ndcg@10"]), 4)


def recall_vs(got: np.ndarray, want: np.ndarray) -> float:
    import index

    return round(float(index.recall_at_k(got, want)), 4)


def median_s(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def judge(rows: list[dict[str, Any]]) -> None:
    """Adds each option's nDCG@10 difference from float16 and whether it meets the target: RAM
    <= 0.5x and nDCG@10 no more than 0.005 below float16's in every ranking (a gain is no loss)."""
    base = rows[0]["ndcg@10"]
    for row in rows[1:]:
        row["ndcg@10_minus_f16"] = {k: round(v - base[k], 4) for k, v in row["ndcg@10"].items()}
        row["meets_target"] = bool(
            row["ram_vs_f16"] <= 0.5 and all(v >= -0.005 for v in row["ndcg@10_minus_f16"].values())
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = ap.add_argument_group("data")
    g.add_argument("--data", type=Path, default=Path("/work/shared/data/scifact"))
    g = ap.add_argument_group("run")
    g.add_argument("--candidates", type=int, default=100)
    g.add_argument("--options", default=",".join(OPTIONS))
    g.add_argument("--no-exhaustive", action="store_true", help="skip exhaustive MaxSim")
    g.add_argument("--repeats", type=int, default=3, help="timed rerank repeats (median)")
    g.add_argument("--out", type=Path, default=RESULTS / "tokens_compact.json")
    args = ap.parse_args(argv)

    import torch

    import index
    from index.tokens import check_token_sets

    started = time.time()
    load = LoadSampler()
    data = load_data(args.data, quick=False)
    qids, qrels = data.qids["test"], data.qrels["test"]
    dt, d_off, dkey = cached_tokens("docs", data.texts)
    qt, q_off, qkey = cached_tokens("queries", data.query_texts("test"))
    n_docs, dim = d_off.shape[0] - 1, dt.shape[1]
    queries = split(qt, q_off, 0, q_off.shape[0] - 1)
    log(f"{n_docs} docs, {dt.shape[0]} tokens x {dim}; {len(queries)} test queries")
    c = args.candidates

    # Candidates shared by every option: MUVERA's (float16 index: FDEs come from the full
    # tokens whatever the option) and the exact float16 top-c.
    muvera = index.from_spec(MUVERA, dim)
    t0 = time.perf_counter()
    for a in range(0, n_docs, ADD_BATCH):
        b = min(n_docs, a + ADD_BATCH)
        muvera.add(split(dt, d_off, a, b), np.arange(a, b))
    muvera_build_s = time.perf_counter() - t0
    mv_cand = muvera.candidate_labels(queries, candidates=c)
    del muvera
    log(f"MUVERA candidates ({muvera_build_s:.0f}s build)")

    q, q_off_p = check_token_sets(queries, dim, "queries")
    rows: list[dict[str, Any]] = []
    exact_f16: np.ndarray | None = None
    ref: dict[str, np.ndarray] = {}
    for option in args.options.split(","):
        idx = index.from_spec(f"chamfer:tokens={option}", dim)
        t0 = time.perf_counter()
        for a in range(0, n_docs, ADD_BATCH):
            b = min(n_docs, a + ADD_BATCH)
            idx.add(split(dt, d_off, a, b), np.arange(a, b))
        build_s = time.perf_counter() - t0
        qp = idx._prepare(q)
        mem = idx.memory_usage()
        f16_bytes = dt.shape[0] * dim * 2
        ram = mem["codes"]["ram"] if "codes" in mem else mem["tokens"]["ram"] - (n_docs + 1) * 8
        row: dict[str, Any] = {
            "option": option,
            "spec": idx.spec,
            "token_ram_bytes": int(ram),
            "bytes_per_token": round(ram / dt.shape[0], 2),
            "ram_vs_f16": round(ram / f16_bytes, 4),
            "build_s": round(build_s, 1),
        }
        if option == "res4" or option == "res2":
            row["centroids"] = int(idx._codec.centroids.shape[0])
        if exact_f16 is None:
            if option != "f16":
                raise SystemExit("--options must start with f16 (the reference)")
            t0 = time.perf_counter()
            _, exact_f16 = idx.search(queries, c)
            row["exhaustive_s"] = round(time.perf_counter() - t0, 1)
        # The ideal-candidate rerank and MUVERA's, scored by this option's tokens.
        _, ideal = idx.rerank(qp, q_off_p, exact_f16, 10)
        _, mv = idx.rerank(qp, q_off_p, mv_cand, 10)
        rerank_s = median_s(
            lambda idx=idx, qp=qp: idx.rerank(qp, q_off_p, mv_cand, 10), args.repeats
        )
        row["rerank_ms_per_query"] = round(1000 * rerank_s / len(queries), 3)
        row["ndcg@10"] = {
            "muvera_rerank": ndcg(mv, None, data.doc_ids, qids, qrels),
            "exact_top_rerank": ndcg(ideal, None, data.doc_ids, qids, qrels),
        }
        if option == "f16":
            ref = {"muvera_rerank": mv, "exact_top_rerank": ideal}
            row["ndcg@10"]["exhaustive"] = ndcg(exact_f16[:, :10], None, data.doc_ids, qids, qrels)
            ref["exhaustive"] = exact_f16[:, :10]
        elif not args.no_exhaustive:
            t0 = time.perf_counter()
            _, ex = idx.search(queries, 10)
            row["exhaustive_s"] = round(time.perf_counter() - t0, 1)
            row["ndcg@10"]["exhaustive"] = ndcg(ex, None, data.doc_ids, qids, qrels)
            row["recall@10_vs_f16_exhaustive"] = recall_vs(ex, ref["exhaustive"])
        if option != "f16":
            row["recall@10_vs_f16"] = {
                "muvera_rerank": recall_vs(mv, ref["muvera_rerank"]),
                "exact_top_rerank": recall_vs(ideal, ref["exact_top_rerank"]),
            }
        rows.append(row)
        log(json.dumps(row))
        del idx

    judge(rows)
    out = {
        "benchmark": "tokens_compact",
        "command": "python -m bench.tokens_compact "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "target": "multi-vector SciFact: token memory in RAM <= 0.5x float16 at nDCG@10 "
        "within 0.005 (issue 13)",
        "parameters": {
            "data": str(args.data),
            "split": "test",
            "queries": len(queries),
            "docs": n_docs,
            "tokens": int(dt.shape[0]),
            "dim": dim,
            "token_caches": [dkey, qkey],
            "candidates": c,
            "muvera": MUVERA,
            "add_batch_docs": ADD_BATCH,
            "scoring": "torch, CPU float32; compact codes dequantized per block",
            "torch_threads": torch.get_num_threads(),
        },
        "results": rows,
        "load": load.summary(),
        "machine": machine_info(["faiss-cpu"]),
        "wall_s": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=json_default) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
