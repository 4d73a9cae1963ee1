"""engine.metrics against pytrec_eval called directly (the oracle) and against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytrec_eval
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from engine.metrics import evaluate_run, mrr_at_k, ndcg_at_k, recall_at_k, trec_order

KS = (1, 3, 10)
METRICS = [f"{m}@{k}" for m in ("ndcg", "recall", "mrr", "map") for k in KS]
QIDS = [f"q{i}" for i in range(6)]
# "d10" < "d2": the doc-id tie rule must not coincide with numeric order.
DOCS = [f"d{i}" for i in range(12)]
# Ties, and doubles that differ but round to the same float32 (trec_eval's score type).
SCORES = st.sampled_from([-1.0, 0.0, 0.5, 1.0, 1.0 + 1e-9, 1.0 + 1e-7, 2.0]) | st.floats(-10, 10)


@st.composite
def runs_and_qrels(draw):
    grade = st.integers(0, 3) if draw(st.booleans()) else st.integers(0, 1)
    judgements = st.dictionaries(st.sampled_from(DOCS), grade, max_size=6)
    qrels = draw(st.dictionaries(st.sampled_from(QIDS), judgements, min_size=1))
    assume(any(qrels.values()))
    run = {}
    # q6 and q7 are never judged: the run's extra queries.
    for q in draw(st.lists(st.sampled_from([*QIDS, "q6", "q7"]), unique=True)):
        docs = draw(st.lists(st.sampled_from([*DOCS, "u0", "u1"]), unique=True, max_size=14))
        if draw(st.booleans()):
            run[q] = docs
        else:
            run[q] = {d: draw(SCORES) for d in docs}
    return run, qrels


def oracle(run, qrels):
    """Per judged query, pytrec_eval's values on the same data; 0 where the run has nothing."""
    judged = {q: j for q, j in qrels.items() if j}
    as_scores = {
        q: dict(r) if isinstance(r, dict) else {d: -float(i) for i, d in enumerate(r)}
        for q, r in run.items()
    }
    measures = {f"{m}.{','.join(map(str, KS))}" for m in ("ndcg_cut", "recall", "map_cut")}
    full = pytrec_eval.RelevanceEvaluator(judged, measures | {"recip_rank"}).evaluate(as_scores)
    rr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"})
    per = {}
    for q in judged:
        if not run.get(q):
            per[q] = dict.fromkeys(METRICS, 0.0)
            continue
        v = full[q]
        per[q] = {}
        for k in KS:
            per[q][f"ndcg@{k}"] = v[f"ndcg_cut_{k}"]
            per[q][f"recall@{k}"] = v[f"recall_{k}"]
            per[q][f"map@{k}"] = v[f"map_cut_{k}"]
            if isinstance(run[q], dict):
                # Cutting a scored run needs trec_eval's order; take it from pytrec_eval itself:
                # recip_rank is 1 / the first relevant rank, so MRR@k is it when that rank <= k.
                rank = round(1 / v["recip_rank"]) if v["recip_rank"] else math.inf
                per[q][f"mrr@{k}"] = v["recip_rank"] if rank <= k else 0.0
            else:
                cut = {q: {d: -float(i) for i, d in enumerate(run[q][:k])}}
                per[q][f"mrr@{k}"] = rr.evaluate(cut)[q]["recip_rank"]
    return per


@settings(max_examples=400, deadline=None, derandomize=True)
@given(runs_and_qrels())
@example(
    (
        {"q0": ["d1", "d0"], "q1": [], "q2": {"d3": 1.0, "d1": 1.0}, "q7": ["d0"]},
        {"q0": {"d0": 2, "d5": 1}, "q1": {"d0": 1}, "q2": {"d1": 0, "d3": 0}, "q3": {"d0": 3}},
    )
)
def test_every_metric_matches_pytrec_eval(case):
    run, qrels = case
    m = evaluate_run(run, qrels, ndcg_at=KS, recall_at=KS, mrr_at=KS, map_at=KS, per_query=True)
    want = oracle(run, qrels)
    assert m["queries"] == len(want)
    assert set(m["per_query"]) == set(want)
    for q, values in want.items():
        for name, value in values.items():
            assert m["per_query"][q][name] == pytest.approx(value, abs=1e-9), (q, name)
    for name in METRICS:
        mean = sum(values[name] for values in want.values()) / len(want)
        assert m[name] == pytest.approx(mean, abs=1e-9), name


def test_linear_gain_ndcg_by_hand():
    rel = {"a": 3, "b": 2, "c": 1, "d": 0}
    ranked = ["d", "c", "a", "x", "b"]
    # gain = grade, discount log2(rank + 1); the ideal orders all judgements 3, 2, 1.
    dcg = 0 / 1 + 1 / math.log2(3) + 3 / math.log2(4) + 0 / math.log2(5) + 2 / math.log2(6)
    idcg = 3 / 1 + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, rel, 10) == pytest.approx(dcg / idcg, abs=1e-12)  # 0.6100
    dcg3 = 1 / math.log2(3) + 3 / math.log2(4)
    assert ndcg_at_k(ranked, rel, 3) == pytest.approx(dcg3 / idcg, abs=1e-12)
    # The exponential gains 2^grade - 1 the old code used give another number on graded qrels.
    exp_dcg = 1 / math.log2(3) + 7 / math.log2(4) + 3 / math.log2(6)
    exp_idcg = 7 / 1 + 3 / math.log2(3) + 1 / math.log2(4)
    assert abs(ndcg_at_k(ranked, rel, 10) - exp_dcg / exp_idcg) > 0.01  # 0.6100 vs 0.5634
    # On binary qrels the two agree (2^1 - 1 = 1).
    binary = {d: min(g, 1) for d, g in rel.items()}
    assert ndcg_at_k(ranked, binary, 10) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(6)) / (1 + 1 / math.log2(3) + 1 / 2)
    )


def test_recall_mrr_map_by_hand():
    rel = {"a": 3, "b": 2, "c": 1, "d": 0}
    ranked = ["d", "c", "a", "x", "b"]  # relevant at ranks 2, 3, 5
    assert recall_at_k(ranked, rel, 1) == 0.0
    assert recall_at_k(ranked, rel, 3) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, rel, 5) == pytest.approx(1.0)
    assert mrr_at_k(ranked, rel, 1) == 0.0
    assert mrr_at_k(ranked, rel, 2) == pytest.approx(1 / 2)
    m = evaluate_run({"q": ranked}, {"q": rel}, map_at=(3, 10))
    # map_cut divides by every relevant document, also those past the cut.
    assert m["map@3"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert m["map@10"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)


def test_unranked_and_all_zero_queries_count_as_zero():
    qrels = {"hit": {"a": 1}, "absent": {"a": 1}, "empty": {"a": 1}, "zero": {"a": 0}, "none": {}}
    run = {"hit": ["a"], "empty": [], "zero": ["a"], "extra": ["a"]}
    m = evaluate_run(run, qrels, per_query=True)
    assert m["queries"] == 4  # "none" has no judgement; "extra" is not in the qrels
    assert m["ndcg@10"] == m["recall@100"] == m["mrr@10"] == pytest.approx(1 / 4)
    assert set(m["per_query"]) == {"hit", "absent", "empty", "zero"}
    assert m["per_query"]["absent"] == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    # pytrec_eval alone skips the absent query, so its mean would be over 3 and reward silence.
    direct = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(
        {q: {d: 1.0 for d in r} for q, r in run.items()}
    )
    assert "absent" not in direct and direct["zero"]["ndcg_cut_10"] == 0.0


def test_ranked_lists_keep_their_order():
    # Doc ids in reverse of trec_eval's tie order, and long enough to pass ranks 10 and 100.
    ranked = [f"doc{i:03d}" for i in range(150)]
    rel = {"doc000": 1, "doc036": 2, "doc120": 1}
    m = evaluate_run({"q": ranked}, {"q": rel}, recall_at=(100, 150), mrr_at=(10, 100))
    assert m["mrr@10"] == 1.0
    assert m["recall@100"] == pytest.approx(2 / 3)
    assert m["recall@150"] == pytest.approx(1.0)
    assert mrr_at_k(ranked[1:], rel, 100) == pytest.approx(1 / 36)
    assert mrr_at_k(ranked[1:], rel, 35) == 0.0
    # None pads a short result row and is skipped.
    assert mrr_at_k(["x", "doc036", None, None], rel, 10) == pytest.approx(1 / 2)


def test_scored_runs_rank_as_trec_eval_does():
    # Ties go to the larger doc id; 1.0 + 1e-9 is 1.0 in float32, so it ties too.
    scores = {"a": 1.0, "b": 1.0, "c": 2.0, "d": 1.0 + 1e-9, "e": 1.0 + 1e-7}
    assert trec_order(scores) == ["c", "e", "d", "b", "a"]
    assert trec_order({"a": 1e39, "b": math.inf, "c": -1e39}) == ["b", "a", "c"]  # float32 inf
    qrels = {"q": {"a": 1, "b": 2}}
    for cut in (1, 3, 5):
        m = evaluate_run({"q": scores}, qrels, mrr_at=(cut,), ndcg_at=(cut,), recall_at=(cut,))
        assert m == evaluate_run(
            {"q": trec_order(scores)}, qrels, mrr_at=(cut,), ndcg_at=(cut,), recall_at=(cut,)
        )
    assert mrr_at_k(scores, qrels["q"], 3) == 0.0
    assert mrr_at_k(scores, qrels["q"], 4) == pytest.approx(1 / 4)


def test_keys_follow_the_cutoffs():
    m = evaluate_run({"q": ["a"]}, {"q": {"a": 1}}, ndcg_at=(3, 1, 3), recall_at=(), map_at=(5,))
    assert list(m) == ["ndcg@3", "ndcg@1", "mrr@10", "map@5", "queries"]
    assert list(evaluate_run({"q": ["a"]}, {"q": {"a": 1}})) == [
        "ndcg@10",
        "recall@100",
        "mrr@10",
        "queries",
    ]


def test_numpy_inputs():
    row = np.array(["x", "a", None], dtype=object)  # a search_batch row, padded
    qrels = {"q": {np.str_("a"): np.int64(2)}}
    m = evaluate_run({"q": row}, qrels)
    assert m["mrr@10"] == pytest.approx(1 / 2)
    assert evaluate_run({"q": {"a": np.float32(0.5), "x": np.float64(0.7)}}, qrels) == m


def test_single_query_helpers_without_judgements_score_zero():
    assert ndcg_at_k(["a"], {}, 10) == recall_at_k(["a"], {}, 10) == mrr_at_k(["a"], {}, 10) == 0


@pytest.mark.parametrize(
    ("run", "qrels", "kwargs", "error", "match"),
    [
        ({}, {}, {}, ValueError, "qrels is empty"),
        ({}, {"q": {}}, {}, ValueError, "no query in qrels"),
        ({}, {"q": {"a": 1.0}}, {}, ValueError, r"qrels\['q'\]\['a'\]: grade 1.0 is not an int"),
        ({}, {"q": {"a": "1"}}, {}, ValueError, "grade '1' is not an int"),
        ({}, {"q": {"a": 1}}, {"ndcg_at": (0,)}, ValueError, "ndcg_at: cutoff 0 is not"),
        ({}, {"q": {"a": 1}}, {"mrr_at": (-1,)}, ValueError, "mrr_at: cutoff -1"),
        ({}, {"q": {"a": 1}}, {"map_at": (2.5,)}, ValueError, "map_at: cutoff 2.5"),
        ({}, {"q": {"a": 1}}, {"recall_at": (True,)}, ValueError, "recall_at: cutoff True"),
        ({}, {"q": {"a": 1}}, {"recall_at": 10}, TypeError, "recall_at must be a sequence"),
        ({"q": ["a", "b", "a"]}, {"q": {"a": 1}}, {}, ValueError, "ranks doc 'a' twice"),
        ({"q": {"a": math.nan}}, {"q": {"a": 1}}, {}, ValueError, "score nan is not a number"),
        ({"q": {"a": "high"}}, {"q": {"a": 1}}, {}, ValueError, "score 'high' is not a number"),
        ({"q": "ab"}, {"q": {"a": 1}}, {}, TypeError, r"run\['q'\] is a str"),
        ({"q": [1, 2]}, {"q": {"a": 1}}, {}, TypeError, "doc id 1 is not a str"),
        ({}, {"q": {3: 1}}, {}, TypeError, r"qrels\['q'\]: doc id 3 is not a str"),
    ],
)
def test_bad_input_raises(run, qrels, kwargs, error, match):
    with pytest.raises(error, match=match):
        evaluate_run(run, qrels, **kwargs)
