"""Retrieval metrics with trec_eval's semantics, computed by pytrec_eval as BEIR and MTEB do.

Per query, with a document relevant when its grade is at least 1:

- ``ndcg@k``: trec_eval ``ndcg_cut_k``. The gain is the grade itself (linear, not ``2^grade - 1``),
  discounted by ``log2(rank + 1)``; the ideal ranking is drawn from all of the query's judgements.
  Negative grades count as gain 0.
- ``recall@k``: trec_eval ``recall_k``, the relevant documents in the top k over all relevant ones.
- ``map@k``: trec_eval ``map_cut_k``, average precision over the top k, divided by all relevant
  documents (not by ``min(k, relevant)``).
- ``mrr@k``: trec_eval ``recip_rank`` of the run cut to its top k, as BEIR and MTEB define MRR@k.

The mean is taken over every query in the qrels with at least one judgement. A query whose
judgements are all 0 scores 0, as pytrec_eval scores it. A judged query that the run lacks, or
ranks nothing for, also scores 0, where pytrec_eval (and so BEIR's mean) would skip it: a system
that returns nothing must not score higher than one that returns something wrong.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeAlias, overload

import numpy as np
import pytrec_eval

__all__ = ["evaluate_run", "mrr_at_k", "ndcg_at_k", "recall_at_k", "trec_order"]

Ranking: TypeAlias = "Mapping[str, float] | Iterable[str | None]"
"""One query's results: doc ids best first (None, a short row's padding, is skipped), or
``{doc id: score}`` ranked the way trec_eval ranks it (see :func:`trec_order`)."""

# trec_eval keeps scores as C floats: the rank scores n, n - 1, ... 1 given to a ranked list stay
# distinct (and so keep their order) only while n <= 2^24.
MAX_RANKING = 1 << 24


@overload
def evaluate_run(
    run: Mapping[str, Ranking],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    ndcg_at: Iterable[int] = ...,
    recall_at: Iterable[int] = ...,
    mrr_at: Iterable[int] = ...,
    map_at: Iterable[int] = ...,
    per_query: Literal[False] = ...,
) -> dict[str, float]: ...


@overload
def evaluate_run(
    run: Mapping[str, Ranking],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    ndcg_at: Iterable[int] = ...,
    recall_at: Iterable[int] = ...,
    mrr_at: Iterable[int] = ...,
    map_at: Iterable[int] = ...,
    per_query: bool,
) -> dict[str, Any]: ...


def evaluate_run(
    run: Mapping[str, Ranking],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    ndcg_at: Iterable[int] = (10,),
    recall_at: Iterable[int] = (100,),
    mrr_at: Iterable[int] = (10,),
    map_at: Iterable[int] = (),
    per_query: bool = False,
) -> dict[str, Any]:
    """Mean retrieval metrics of a run over the judged queries (see the module docstring).

    Args:
        run: ``{query id: ranking}``; a ranking is a list of doc ids, best first, or a
            ``{doc id: score}`` dict. Queries absent from ``qrels`` are ignored.
        qrels: ``{query id: {doc id: grade}}`` with int grades; queries with no judgement are
            ignored.
        ndcg_at: Cutoffs k of ``ndcg@k``.
        recall_at: Cutoffs k of ``recall@k``.
        mrr_at: Cutoffs k of ``mrr@k``.
        map_at: Cutoffs k of ``map@k``.
        per_query: Also return each judged query's values under ``"per_query"``.

    Returns:
        ``{"ndcg@10": ..., "recall@100": ..., "mrr@10": ..., "queries": n}``: one mean per metric
        and cutoff, and the number of queries averaged over; with ``per_query``, also
        ``"per_query": {query id: {metric: value}}``.

    Raises:
        ValueError: ``qrels`` has no judged query, a cutoff is not a positive int, a grade is not
            an int, a score is NaN, or a ranked list repeats a doc id.
        TypeError: A doc id is not a str, or a ranking is a bare str.

    Example:
        >>> evaluate_run({"q1": ["d3", "d1"]}, {"q1": {"d1": 1}}, ndcg_at=(), recall_at=())
        {'mrr@10': 0.5, 'queries': 1.0}
    """
    cutoffs = {
        "ndcg": _cutoffs("ndcg_at", ndcg_at),
        "recall": _cutoffs("recall_at", recall_at),
        "mrr": _cutoffs("mrr_at", mrr_at),
        "map": _cutoffs("map_at", map_at),
    }
    judged = _judged(qrels)
    ranked = {q: _ranked(q, run[q]) for q in judged if q in run}
    # Queries ranking nothing stay out of pytrec_eval's hands (it would skip them) and score 0.
    ranked = {q: r for q, r in ranked.items() if r}

    names = [f"{metric}@{k}" for metric, ks in cutoffs.items() for k in ks]
    per = {q: dict.fromkeys(names, 0.0) for q in judged}
    trec_names = {"ndcg": "ndcg_cut", "recall": "recall", "map": "map_cut"}
    measures = {
        f"{trec_names[m]}.{','.join(map(str, cutoffs[m]))}" for m in trec_names if cutoffs[m]
    }
    if measures and ranked:
        scores = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(_trec_run(ranked))
        for q, values in scores.items():
            for m, trec_name in trec_names.items():
                for k in cutoffs[m]:
                    per[q][f"{m}@{k}"] = values[f"{trec_name}_{k}"]
    if cutoffs["mrr"] and ranked:
        evaluator = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"})
        for k in cutoffs["mrr"]:
            cut = {q: r[:k] for q, r in ranked.items()}
            for q, values in evaluator.evaluate(_trec_run(cut)).items():
                per[q][f"mrr@{k}"] = values["recip_rank"]

    out: dict[str, Any] = {
        name: math.fsum(values[name] for values in per.values()) / len(per) for name in names
    }
    out["queries"] = float(len(per))
    if per_query:
        out["per_query"] = per
    return out


def ndcg_at_k(ranked: Ranking, relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one query: trec_eval ``ndcg_cut_k``, the grade itself as the gain.

    Example:
        >>> round(ndcg_at_k(["x", "a"], {"a": 2, "b": 1}, 10), 4)  # (2/log2 3) / (2 + 1/log2 3)
        0.4796
    """
    return _one(ranked, relevant, "ndcg", k)


def recall_at_k(ranked: Ranking, relevant: Mapping[str, int], k: int = 100) -> float:
    """Recall@k of one query: the relevant (grade >= 1) documents in the top k over all of them."""
    return _one(ranked, relevant, "recall", k)


def mrr_at_k(ranked: Ranking, relevant: Mapping[str, int], k: int = 10) -> float:
    """MRR@k of one query: 1 / rank of the first relevant document in the top k, else 0."""
    return _one(ranked, relevant, "mrr", k)


def trec_order(scores: Mapping[str, float]) -> list[str]:
    """Doc ids in trec_eval's order: score descending, ties by doc id descending.

    trec_eval keeps scores as C floats, so two doubles that round to the same float32 tie.

    Example:
        >>> trec_order({"a": 1.0, "b": 1.0, "c": 2.0, "d": 1.0 + 1e-9})
        ['c', 'd', 'b', 'a']
    """
    with np.errstate(over="ignore"):  # beyond float32's range a score becomes +-inf, as in C
        sims = np.asarray(list(scores.values()), dtype=np.float64).astype(np.float32)
    return [doc for _, doc in sorted(zip(sims.tolist(), scores, strict=True), reverse=True)]


def _one(ranked: Ranking, relevant: Mapping[str, int], metric: str, k: int) -> float:
    if not relevant:
        return 0.0  # no judgement: nothing to find
    m = evaluate_run({"q": ranked}, {"q": relevant}, ndcg_at=(k,), recall_at=(k,), mrr_at=(k,))
    return m[f"{metric}@{k}"]


def _cutoffs(name: str, ks: Iterable[int]) -> list[int]:
    if isinstance(ks, (numbers.Number, str)):
        raise TypeError(f"{name} must be a sequence of cutoffs, got {ks!r}")
    for k in ks:
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"{name}: cutoff {k!r} is not a positive int")
    return list(dict.fromkeys(int(k) for k in ks))


def _judged(qrels: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    if not qrels:
        raise ValueError("qrels is empty: no query to evaluate")
    judged = {}
    for q, judgements in qrels.items():
        for doc, grade in judgements.items():
            _check_id(f"qrels[{q!r}]", doc)
            if not isinstance(grade, numbers.Integral):
                raise ValueError(f"qrels[{q!r}][{doc!r}]: grade {grade!r} is not an int")
        if judgements:
            # pytrec_eval takes Python ints only (not numpy's).
            judged[q] = {str(doc): int(grade) for doc, grade in judgements.items()}
    if not judged:
        raise ValueError("no query in qrels has a relevance judgement")
    return judged


def _ranked(q: str, ranking: Ranking) -> list[str]:
    if isinstance(ranking, Mapping):
        for doc, score in ranking.items():
            _check_id(f"run[{q!r}]", doc)
            if not isinstance(score, numbers.Real) or math.isnan(score):
                raise ValueError(f"run[{q!r}][{doc!r}]: score {score!r} is not a number")
        return [str(doc) for doc in trec_order(ranking)]
    if isinstance(ranking, str):
        raise TypeError(f"run[{q!r}] is a str; expected doc ids best first or {{doc id: score}}")
    ranked = [doc for doc in ranking if doc is not None]
    seen: set[str] = set()
    for doc in ranked:
        _check_id(f"run[{q!r}]", doc)
        if doc in seen:
            raise ValueError(f"run[{q!r}] ranks doc {doc!r} twice")
        seen.add(doc)
    if len(ranked) > MAX_RANKING:
        raise ValueError(f"run[{q!r}] ranks {len(ranked)} docs; at most {MAX_RANKING} are kept")
    return [str(doc) for doc in ranked]


def _trec_run(ranked: Mapping[str, list[str]]) -> dict[str, dict[str, float]]:
    # Distinct, strictly decreasing scores: trec_eval re-sorts by score (ties by doc id), so this
    # is what keeps the given order.
    return {q: {doc: float(len(r) - i) for i, doc in enumerate(r)} for q, r in ranked.items()}


def _check_id(where: str, doc: object) -> None:
    if not isinstance(doc, str):
        raise TypeError(f"{where}: doc id {doc!r} is not a str")
