"""Retrieval metrics (graded relevance) and the BEIR evaluation behind ``vecdex eval``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def dcg(gains: Sequence[float]) -> float:
    return sum((2.0**g - 1.0) / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with graded gains ``2^rel - 1`` (the BEIR / trec_eval convention)."""
    gains = [float(relevant.get(doc, 0)) for doc in ranked[:k]]
    ideal = dcg(sorted((float(r) for r in relevant.values() if r > 0), reverse=True)[:k])
    return dcg(gains) / ideal if ideal > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    pos = {d for d, r in relevant.items() if r > 0}
    return len(pos.intersection(ranked[:k])) / len(pos) if pos else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    for i, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate_run(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """Mean nDCG@10, recall@100 and MRR@10 over the queries that have relevance judgements."""
    qids = [q for q in qrels if any(r > 0 for r in qrels[q].values())]
    if not qids:
        raise ValueError("no query has a positive relevance judgement")
    out = {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for q in qids:
        ranked = list(run.get(q, []))
        out["ndcg@10"] += ndcg_at_k(ranked, qrels[q], 10)
        out["recall@100"] += recall_at_k(ranked, qrels[q], 100)
        out["mrr@10"] += mrr_at_k(ranked, qrels[q], 10)
    return {k: v / len(qids) for k, v in out.items()} | {"queries": float(len(qids))}
