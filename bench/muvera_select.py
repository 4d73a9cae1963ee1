"""MUVERA at a fixed candidate budget, the FDE configuration chosen on SciFact's train queries.

The target "MUVERA within 0.005 nDCG@10 of exact MaxSim from 100 candidates" depends on the FDE
configuration, and picking it by its test score would tune on the test split. Here:

1. The trained token encoder's document tokens (cached by ``bench.encoders``), its train and
   test query tokens (cached beside them).
2. Exhaustive MaxSim over all documents for both splits (the oracle): a full (queries x docs)
   score matrix each, from ``ChamferIndex``.
3. For each FDE configuration, ascending in FDE size: ``MuveraIndex(inner="flat")`` over the
   documents, its candidates for both splits; the rerank of the first c candidates is exact
   MaxSim (read from the oracle's matrix, which is what ``MuveraIndex.search`` computes: checked
   against it for the chosen configuration on the test queries).
4. The choice: the smallest configuration whose nDCG@10 at ``--budget`` candidates is within
   ``--tolerance`` of exhaustive MaxSim on the **train** queries. Its test figures are the
   report; every configuration's test figures are written too, marked as not used to choose.

``python -m bench.muvera_select --token-model bench/.cache/encoders/models/token-a6b025ebe9``
writes bench/results/muvera_select.json (5-8 minutes on 2 cores with cached tokens).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import RESULTS, SCIFACT, log, split, write_choice_report
from .encoders import cached_tokens, token_key
from .muvera_scifact import run_metrics

# (r_reps, k_sim, d_proj, d_final, final), ascending in FDE dimensions; the paper's (40,6,128)
# families cost ~5 minutes each to encode here and are left to ``bench.muvera --paper``.
CONFIGS = (
    (20, 5, 16, 0, "dense"),
    (40, 6, 16, 10240, "sketch"),
    (20, 6, 16, 0, "dense"),
    (40, 6, 16, 0, "dense"),
)
K = 10


def config_name(cfg: tuple[int, int, int, int, str]) -> str:
    r, k, d, f, final = cfg
    return f"({r},{k},{d})" + (f"->{f} {final}" if f else "")


def fde_dims(cfg: tuple[int, int, int, int, str]) -> int:
    r, k, d, f, _ = cfg
    return f or r * (1 << k) * d


def oracle(ex: Any, qs: list[np.ndarray], n: int) -> np.ndarray:
    """(m, n) exact MaxSim score of every query against every document."""
    scores, labels = ex.search(qs, n)
    full = np.full((len(qs), n), -np.inf, dtype=np.float32)
    np.put_along_axis(full, labels, scores, axis=1)
    return full


def rerank(full: np.ndarray, cand: np.ndarray, c: int) -> np.ndarray:
    """The exact top-K of each query's first ``c`` candidates (labels, best first)."""
    cut = cand[:, :c]
    s = np.take_along_axis(full, np.maximum(cut, 0), axis=1)
    s[cut < 0] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :K]
    return np.take_along_axis(cut, order, axis=1)


def split_metrics(labels: np.ndarray, qids: list[str], doc_ids: list[str], qrels) -> dict:
    m = run_metrics(labels, qids, doc_ids, qrels)
    return {k: v for k, v in m.items() if k in ("ndcg@10", "mrr@10")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--token-model", required=True, help="a trained token encoder's directory")
    p.add_argument("--doc-max-len", type=int, default=0, help="0: the model's own")
    p.add_argument("--data", type=Path, default=SCIFACT)
    p.add_argument("--budget", type=int, default=100, help="candidates the target allows")
    p.add_argument("--tolerance", type=float, default=0.005)
    p.add_argument("--points", default="50,100,200", help="candidate counts reported")
    p.add_argument("--out", type=Path, default=RESULTS / "muvera_select.json")
    args = p.parse_args(argv)

    import encoders
    from engine import beir
    from index import ChamferIndex, MuveraIndex, recall_at_k

    t_start = time.time()
    enc = encoders.load(args.token_model)
    if args.doc_max_len:
        enc.doc_max_len = args.doc_max_len
    corpus = beir.read_jsonl(args.data / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in beir.read_jsonl(args.data / "queries.jsonl")}
    doc_ids = [d["_id"] for d in corpus]
    n = len(doc_ids)
    texts = [beir.document_text(d) for d in corpus]
    key = token_key(enc, args.data, args.token_model)
    log(f"document tokens (cache key {key})")
    dt, doff, _ = cached_tokens(key, lambda: enc.encode_documents(texts))
    docs = [x.astype(np.float32) for x in split(dt, doff)]
    labels = np.arange(n, dtype=np.int64)
    ex = ChamferIndex(enc.dim, metric="ip")
    ex.add(docs, labels)

    splits: dict[str, dict[str, Any]] = {}
    for name in ("train", "test"):
        qrels = beir.read_qrels(args.data / "qrels" / f"{name}.tsv")
        qids = [q for q in qrels if q in queries]
        qt, qoff, _ = cached_tokens(
            f"{key}-queries-{name}",
            lambda qids=qids: enc.encode_queries([queries[i] for i in qids]),
        )
        qs = [x.astype(np.float32) for x in split(qt, qoff)]
        log(f"{name}: exhaustive MaxSim, {len(qs)} queries x {n} documents")
        full = oracle(ex, qs, n)
        gt = np.argsort(-full, axis=1, kind="stable")[:, :K]
        splits[name] = {
            "qids": qids,
            "qrels": qrels,
            "qs": qs,
            "full": full,
            "gt": gt,
            "exhaustive": split_metrics(gt, qids, doc_ids, qrels),
        }
        log(f"{name}: exhaustive {splits[name]['exhaustive']}")

    points = sorted({int(x) for x in args.points.split(",")} | {args.budget})
    configs: dict[str, Any] = {}
    indexes: dict[str, Any] = {}
    for cfg in CONFIGS:
        r, k, d, f, final = cfg
        name = config_name(cfg)
        mv = MuveraIndex(
            enc.dim, metric="ip", inner="flat", r_reps=r, k_sim=k, d_proj=d, d_final=f, final=final
        )
        t0 = time.perf_counter()
        mv.add(docs, labels)
        row: dict[str, Any] = {
            "fde_dims": fde_dims(cfg),
            "build_s": round(time.perf_counter() - t0, 1),
        }
        for part, s in splits.items():
            cand = mv.candidate_labels(s["qs"], candidates=max(points))
            by = {}
            for c in points:
                lab = rerank(s["full"], cand, c)
                m = split_metrics(lab, s["qids"], doc_ids, s["qrels"])
                m["ndcg@10_minus_exhaustive"] = round(m["ndcg@10"] - s["exhaustive"]["ndcg@10"], 4)
                m["recall@10_vs_exhaustive"] = round(recall_at_k(lab, s["gt"], K), 4)
                by[str(c)] = m
            row[part] = by
        log(f"{name}: train {row['train'][str(args.budget)]} test {row['test'][str(args.budget)]}")
        configs[name] = row
        indexes[name] = (mv, cfg)

    within = [
        name
        for name, row in configs.items()
        if abs(row["train"][str(args.budget)]["ndcg@10_minus_exhaustive"]) <= args.tolerance
    ]
    chosen = within[0] if within else None
    check: dict[str, Any] = {}
    if chosen is not None:
        mv, _ = indexes[chosen]
        s = splits["test"]
        _, lab = mv.search(s["qs"], K, candidates=args.budget)
        mine = rerank(s["full"], mv.candidate_labels(s["qs"], candidates=args.budget), args.budget)
        check = {
            "what": "MuveraIndex.search(candidates=budget) against the oracle-matrix rerank",
            "rows_equal": round(float(np.mean(np.all(lab == mine, axis=1))), 4),
            "metrics_from_search": split_metrics(lab, s["qids"], doc_ids, s["qrels"]),
        }
    out = {
        "benchmark": "muvera_select",
        "command": "python -m bench.muvera_select " + " ".join(argv or []),
        "token_model": args.token_model,
        "encoder": enc.config(),
        "budget": args.budget,
        "tolerance": args.tolerance,
        "exhaustive": {k: v["exhaustive"] for k, v in splits.items()},
        "queries": {k: len(v["qids"]) for k, v in splits.items()},
        "configs": configs,
        "chosen_on_train": chosen,
        "chosen_test": configs[chosen]["test"][str(args.budget)] if chosen else None,
        "search_check": check,
        "note": "the configuration is chosen on train queries only; the test rows of the other "
        "configurations are reported, not used",
    }
    write_choice_report(args.out, out, t_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
