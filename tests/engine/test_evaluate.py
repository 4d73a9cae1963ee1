"""Retrieval metrics against hand computation, and `vecdex eval` / `vecdex train` end to end."""

from __future__ import annotations

import json
import math

import pytest

from engine import cli
from engine.evaluate import evaluate_run, mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_graded_by_hand():
    rel = {"a": 2, "b": 1, "c": 0}
    ranked = ["x", "b", "a", "c"]
    # Linear gains (trec_eval's, so BEIR's): the grade itself over log2(rank + 1).
    # DCG = 1/log2(3) + 2/log2(4) ; IDCG = 2/log2(2) + 1/log2(3)
    dcg = 1 / math.log2(3) + 2 / 2
    idcg = 2 / 1 + 1 / math.log2(3)
    assert ndcg_at_k(ranked, rel, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["a", "b"], rel, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "b", "a"], rel, 1) == 0.0
    assert ndcg_at_k(["a"], {"a": 0}, 10) == 0.0


def test_recall_and_mrr_by_hand():
    rel = {"a": 1, "b": 2, "c": 0}
    assert recall_at_k(["x", "a", "c"], rel, 100) == pytest.approx(0.5)
    assert recall_at_k(["x", "a", "b"], rel, 2) == pytest.approx(0.5)
    assert mrr_at_k(["x", "c", "b"], rel, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["x", "y"], rel, 10) == 0.0


def test_evaluate_run_averages_over_judged_queries():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    run = {"q1": ["a"], "q2": ["x", "b"]}
    m = evaluate_run(run, qrels)
    # q3 is judged (all zero) and unranked: it counts, scoring 0.
    assert m["queries"] == 3
    assert m["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["recall@100"] == pytest.approx((1 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="no query"):
        evaluate_run(run, {"q": {}})
    with pytest.raises(ValueError, match="qrels is empty"):
        evaluate_run(run, {})


@pytest.fixture
def tiny_beir(tmp_path):
    d = tmp_path / "beir"
    (d / "qrels").mkdir(parents=True)
    docs = [
        ("d1", "Cats", "the cat sat on the mat"),
        ("d2", "Proteins", "proteins fold inside living cells"),
        ("d3", "Markets", "stock markets fell sharply today"),
        ("d4", "Rockets", "the rocket launched into orbit"),
    ]
    with open(d / "corpus.jsonl", "w") as f:
        for i, t, x in docs:
            f.write(json.dumps({"_id": i, "title": t, "text": x}) + "\n")
    queries = [
        ("q1", "where is the cat"),
        ("q2", "protein folding"),
        ("q3", "launch to orbit"),
        ("q4", "stock prices dropped"),
    ]
    with open(d / "queries.jsonl", "w") as f:
        for i, t in queries:
            f.write(json.dumps({"_id": i, "text": t}) + "\n")
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    (d / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td4\t1\nq4\td3\t1\n")
    return d


def test_eval_cli(tiny_beir, tiny_st_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = [
        "eval",
        str(tiny_beir),
        "--encoder",
        str(tiny_st_dir),
        "--index",
        "flat",
        "hnsw",
        "--json",
        str(out),
    ]
    assert cli.main(argv) == 0
    rows = json.loads(out.read_text())
    assert [r["index"].split(":")[0] for r in rows] == ["flat", "hnsw"]
    assert all(r["queries"] == 2 and 0 <= r["ndcg@10"] <= 1 for r in rows)
    assert rows[0]["ndcg@10"] == pytest.approx(rows[1]["ndcg@10"])  # 4 docs: hnsw is exact
    assert "nDCG@10" in capsys.readouterr().out


def test_train_cli_with_hard_negatives(tiny_beir, tiny_st_dir, tmp_path, capsys):
    model = tmp_path / "trained"
    argv = [
        "train",
        "--encoder",
        str(tiny_st_dir),
        "--beir",
        str(tiny_beir),
        "--unsupervised",
        "--hard-negatives",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(model),
        "--quiet",
    ]
    from engine import encoding

    before = encoding.resolve(str(tiny_st_dir)).encode_documents(["a fixed text"])
    assert cli.main(argv) == 0
    assert "saved" in capsys.readouterr().out
    assert cli.main(["eval", str(tiny_beir), "--encoder", str(model)]) == 0
    # Training worked on its own copy: the process-wide encoder of the spec is untouched.
    cached = encoding.resolve(str(tiny_st_dir))
    assert cached.name == str(tiny_st_dir.resolve())
    assert (cached.encode_documents(["a fixed text"]) == before).all()


def test_train_cli_errors(tiny_beir, tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path / "m")]) == 2
    assert "no training data" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "BEIR directory" in capsys.readouterr().err


def test_eval_cli_modes_and_fitted_fusion(tiny_beir, tiny_st_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = ["eval", str(tiny_beir), "--encoder", str(tiny_st_dir), "--mode", "dense"]
    argv += ["lexical", "hybrid", "--fusion", "rrf", "--fit-fusion", "train", "--json", str(out)]
    assert cli.main(argv) == 0
    rows = json.loads(out.read_text())
    modes = [r["mode"] for r in rows]
    assert modes[:3] == ["dense", "lexical", "hybrid rrf k=60 w=0.5"]
    assert modes[3].startswith("hybrid ") and modes[3].endswith("(fitted on train)")
    assert rows[3]["fusion"]["method"] in ("rrf", "weighted", "dbsf")
    # BM25 finds both judged documents at rank 1 (cat -> d1, protein folding -> d2).
    assert rows[1]["ndcg@10"] == pytest.approx(1.0)
    assert "lexical" in capsys.readouterr().out


def test_eval_cli_refuses_fitting_on_the_scored_split(tiny_beir, capsys):
    argv = ["eval", str(tiny_beir), "--mode", "hybrid", "--fit-fusion", "test"]
    assert cli.main(argv) == 2
    assert "is the split being scored" in capsys.readouterr().err
    assert cli.main(["eval", str(tiny_beir), "--mode", "sparse"]) == 2
    assert "unknown search mode 'sparse'" in capsys.readouterr().err
