"""`vecdex train` for the token encoder: the hybrid teacher, distillation from a file or the
hybrid, unsupervised pairs from a corpus without qrels, and per-epoch checkpoints."""

from __future__ import annotations

import json

import pytest

from encoders import SentenceEncoder, TokenEncoder
from engine import cli, training
from engine.training import hybrid_teacher

TOPICS = [
    ("apple river stone", "cloud engine violin"),
    ("pepper castle silver", "garden rocket winter"),
    ("candle forest mirror", "ocean pencil thunder"),
    ("marble dragon lemon", "harbor velvet comet"),
    ("anchor desert falcon", "glacier honey island"),
    ("jungle kettle ladder", "meadow needle orchid"),
]


def write_beir(root, qrels: bool = True) -> None:
    """Document t holds both word sets of topic t; query t uses its first words."""
    root.mkdir()
    with open(root / "corpus.jsonl", "w") as f:
        for t, (a, b) in enumerate(TOPICS):
            f.write(json.dumps({"_id": f"d{t}", "title": a, "text": f"{b} {a} and more words"}))
            f.write("\n")
    with open(root / "queries.jsonl", "w") as f:
        for t, (a, _) in enumerate(TOPICS):
            f.write(json.dumps({"_id": f"q{t}", "text": a}) + "\n")
    if qrels:
        (root / "qrels").mkdir()
        rows = "".join(f"q{t}\td{t}\t1\n" for t in range(len(TOPICS)))
        (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)


def test_hybrid_teacher_scores_the_positive_and_mined_candidates(tmp_path, tiny_st_dir):
    write_beir(tmp_path / "beir")
    examples, corpus = training.beir_examples(tmp_path / "beir")
    dense = SentenceEncoder(tiny_st_dir)
    taught = hybrid_teacher(corpus, examples, candidates=4, dense=dense, dense_weight=0.0)
    for e in taught:
        assert e.candidates[0] == e.positive and len(e.candidates) == len(e.scores) == 4
        assert len(set(e.candidates)) == 4
        # BM25 alone (dense_weight 0): the positive is the only document with the query's words
        assert e.scores[0] == max(e.scores) and e.scores[0] > e.scores[1]
    # span-crop positives are extra rows; their source document is never a candidate
    span = training.Example("apple river", "cloud engine violin apple river")
    (got,) = hybrid_teacher(corpus, [span], candidates=3, dense=dense)
    assert got.candidates[0] == span.positive and corpus["d0"] not in got.candidates
    with pytest.raises(ValueError, match="candidates must be >= 2"):
        hybrid_teacher(corpus, examples, candidates=1, dense=dense)


def token_spec(tiny_bert_dir) -> str:
    return f"token:base={tiny_bert_dir},dim=16,query_len=8,doc_max_len=16"


def test_cli_distils_from_the_hybrid_with_checkpoints(tmp_path, tiny_bert_dir, tiny_st_dir, capsys):
    write_beir(tmp_path / "beir")
    out = tmp_path / "model"
    args = ["train", "--encoder", token_spec(tiny_bert_dir), "--beir", str(tmp_path / "beir")]
    args += ["--distill", "hybrid", "--distill-dense", str(tiny_st_dir), "--distill-candidates"]
    args += ["3", "--distill-weight", "0.5", "--epochs", "2", "--batch-size", "4"]
    args += ["--encode-doc-len", "64"]  # trained at 16 tokens, saved to encode at 64
    assert cli.main([*args, "--checkpoints", "--quiet", "--out", str(out)]) == 0
    assert "distillation KL" in capsys.readouterr().out
    for epoch in (1, 2):
        ckpt = TokenEncoder.load(out / "checkpoints" / f"epoch-{epoch}")
        ckpt.encode_queries(["apple"])
        assert ckpt.doc_max_len == 64
    saved = TokenEncoder.load(out)
    assert saved.dim == 16 and saved.doc_max_len == 64
    bad = [*args[:-2], "--encode-doc-len", "4096", "--quiet", "--out", str(tmp_path / "bad")]
    assert cli.main(bad) == 2
    assert "encode_doc_len must be in 4..128" in capsys.readouterr().err


def test_cli_distils_from_a_teacher_file_and_trains_unsupervised(tmp_path, tiny_bert_dir):
    write_beir(tmp_path / "corpus", qrels=False)  # your own documents: no qrels
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text(
        json.dumps({"query_id": "q0", "document_ids": ["d0", "d1", "d2"], "scores": [5, 1, 0]})
        + "\n"
        + json.dumps({"query": "pepper", "documents": ["garden", "ocean"], "scores": [2, 0]})
        + "\n"
    )
    base = ["train", "--encoder", token_spec(tiny_bert_dir), "--batch-size", "4", "--quiet"]
    src = ["--beir", str(tmp_path / "corpus"), "--unsupervised"]
    assert cli.main([*base, *src, "--distill", str(teacher), "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*base, *src, "--out", str(tmp_path / "b")]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "documents": ["a", "b"], "scores": [1]}\n')
    assert cli.main([*base, "--distill", str(bad), "--out", str(tmp_path / "c")]) != 0
