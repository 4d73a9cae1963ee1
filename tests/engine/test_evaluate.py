"""Retrieval metrics against hand computation, `vecdex eval` / `vecdex train` end to end, and the
training data: the hard-negative miner and `--pairs` files."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encoders.train import Example
from engine import cli, training
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


def test_train_cli_with_hard_negatives(tiny_beir, tiny_st_dir, tmp_path, capsys, monkeypatch):
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

    # Watch the miner the CLI builds: what it hands the training loop is what we check.
    mined: list[list[Example]] = []
    real_make_miner = training.make_miner

    def spy_make_miner(corpus, **kwargs):
        mine = real_make_miner(corpus, **kwargs)

        def spy(encoder, examples):
            out = mine(encoder, examples)
            mined.append(out)
            return out

        return spy

    monkeypatch.setattr(training, "make_miner", spy_make_miner)
    before = encoding.resolve(str(tiny_st_dir)).encode_documents(["a fixed text"])
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "training " in out and " on 6 examples" in out and "saved" in out
    # Mined once (no --refresh-negatives), for all 6 examples (2 qrels pairs + 4 title -> text);
    # every negative is a corpus document other than its example's positive.
    assert len(mined) == 1 and len(mined[0]) == 6
    corpus = set(training.beir_examples(tiny_beir)[1].values())
    negatives = [e.negative for e in mined[0] if e.negative is not None]
    assert len(negatives) >= 4  # 5 of 6 mined with the tiny model on seed 0
    assert all(e.negative in corpus and e.negative != e.positive for e in mined[0] if e.negative)
    assert cli.main(["eval", str(tiny_beir), "--encoder", str(model)]) == 0
    # Training worked on its own copy: the process-wide encoder of the spec is untouched.
    cached = encoding.resolve(str(tiny_st_dir))
    assert cached.name == str(tiny_st_dir.resolve())
    assert (cached.encode_documents(["a fixed text"]) == before).all()


class TableEncoder:
    """A stand-in encoder whose vectors are looked up by text, so scores are known exactly."""

    multi_vector = False
    dim = 2

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def encode_queries(self, texts):
        return np.array([self.table[t] for t in texts], dtype=np.float32)

    encode_documents = encode_queries


def test_miner_skips_likely_positives_above_the_margin():
    # Inner products with the query (1, 0): positive 1.0, near-duplicate 0.99, hard negative
    # 0.6, easy negative -1.0.
    table = {
        "query": [1.0, 0.0],
        "positive": [1.0, 0.0],
        "near duplicate": [0.99, 0.1],
        "hard negative": [0.6, 0.8],
        "easy negative": [-1.0, 0.0],
    }
    corpus = {f"d{i}": t for i, t in enumerate(list(table)[1:])}
    enc = TableEncoder(table)
    ex = [Example("query", "positive")]
    # Without a margin that bites, the near-duplicate is the hardest negative (depth 1), taken.
    [got] = training.make_miner(corpus, depth=1, margin=1.5)(enc, ex)
    assert (got.query, got.positive, got.negative) == ("query", "positive", "near duplicate")
    # The margin (0.95 x 1.0) drops it: of the top 2 other documents, the hard negative is left.
    [got] = training.make_miner(corpus, depth=2, margin=0.95)(enc, ex)
    assert got.negative == "hard negative"
    # ... and at depth 1 nothing is left: no negative rather than a likely positive.
    [got] = training.make_miner(corpus, depth=1, margin=0.95)(enc, ex)
    assert got.negative is None
    # The positive itself is never drawn, and at any depth only candidates below the margin.
    drawn = {
        training.make_miner(corpus, depth=10, margin=0.95, seed=s)(enc, ex)[0].negative
        for s in range(8)
    }
    assert drawn == {"hard negative", "easy negative"}
    # Nothing under the margin: no negative rather than a likely positive.
    [got] = training.make_miner(corpus, depth=10, margin=-2.0)(enc, ex)
    assert got.negative is None


def test_miner_never_draws_the_document_that_holds_the_positive():
    """Unsupervised pairs take their positive from a document's text (title -> text, or a span):
    that document ("title text" in the corpus) is a positive however low it scores."""
    docs = [
        {"_id": "d1", "title": "Cats", "text": "the cat sat on the mat"},
        {"_id": "d2", "title": "Dogs", "text": "a dog ran"},
    ]
    corpus = {d["_id"]: f"{d['title']} {d['text']}" for d in docs}
    ex = training.corpus_examples(docs)
    assert ex[0] == Example("Cats", "the cat sat on the mat")
    # The positive's own document scores 0.9 x the positive: under the 0.95 margin.
    table = {
        "Cats": [1.0, 0.0],
        "the cat sat on the mat": [1.0, 0.0],
        "Cats the cat sat on the mat": [0.9, 0.44],
        "Dogs a dog ran": [0.3, 0.95],
    }
    for seed in range(4):
        [got] = training.make_miner(corpus, depth=10, seed=seed)(TableEncoder(table), ex[:1])
        assert got.negative == "Dogs a dog ran"


def write_pairs(path, rows):
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


PAIRS = [
    {"query": "where is the cat", "positive": "the cat sat on the mat", "negative": "a dog ran"},
    {"query": "protein folding", "positive": "proteins fold inside living cells"},
    {"query": "launch to orbit", "positive": "the rocket launched into orbit", "negative": None},
    {"query": "stock prices", "positive": "stock markets fell", "negative": "markets of fish"},
]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_train_cli_with_pairs_file(suffix, tiny_st_dir, tmp_path, capsys, monkeypatch):
    """`vecdex train --pairs FILE`: (query, positive[, negative]) rows reach the training loop."""
    import encoders.train

    pairs = tmp_path / f"pairs{suffix}"
    write_pairs(pairs, PAIRS)
    seen: list[list[Example]] = []
    real_train = encoders.train.train

    def spy_train(encoder, examples, config=None, **kwargs):
        seen.append(list(examples))
        return real_train(encoder, examples, config, **kwargs)

    monkeypatch.setattr(encoders.train, "train", spy_train)
    model = tmp_path / "trained"
    argv = ["train", "--encoder", str(tiny_st_dir), "--pairs", str(pairs), "--epochs", "1"]
    argv += ["--batch-size", "2", "--out", str(model), "--quiet"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "on 4 examples" in out and f"saved {model}" in out
    assert seen == [[Example(r["query"], r["positive"], r.get("negative")) for r in PAIRS]]
    # The saved model loads and encodes.
    from engine import encoding

    assert encoding.resolve(str(model)).encode_queries(["cat"]).shape[0] == 1


def test_pairs_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    write_pairs(bad, [{"query": "q", "doc": "d"}])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['positive'\]"):
        training.file_examples(bad)
    write_pairs(bad, [{"query": "q", "positive": "p"}, {"query": " ", "positive": "p"}])
    with pytest.raises(ValueError, match="row 1 has an empty"):
        training.file_examples(bad)
    (tmp_path / "pairs.csv").write_text("query,positive\nq,p\n")
    with pytest.raises(ValueError, match="must be .jsonl or .parquet"):
        training.file_examples(tmp_path / "pairs.csv")


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
