"""Distillation of a token encoder from a teacher's scores: the KL loss falls, held-out MRR rises,
teacher files are checked line by line, checkpoints are written per epoch and reload."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from encoders import SentenceEncoder, TokenEncoder
from encoders.distill import fuse, read_teacher_file, zscore
from encoders.train import Example, TrainConfig, save_trained, train

WORDS = (
    "apple river stone cloud engine violin pepper castle silver garden rocket winter "
    "candle forest mirror ocean pencil thunder marble dragon lemon harbor velvet comet "
    "anchor desert falcon glacier honey island jungle kettle ladder meadow needle orchid"
).split()
N_TOPICS = 6


def topics() -> list[list[str]]:
    return [WORDS[i * 6 : (i + 1) * 6] for i in range(N_TOPICS)]


def distill_data(seed: int = 0):
    """Queries use a topic's first three words, documents its last three: no shared word, so
    only the teacher's scores (its topic's document high, a graded rest) connect them."""
    rng = random.Random(seed)
    ts = topics()
    docs = [" ".join(t[3:]) for t in ts]

    def query(t: int) -> str:
        return " ".join(rng.sample(ts[t][:3], 2))

    train_ex = []
    for t in range(N_TOPICS):
        for _ in range(8):
            scores = tuple(6.0 if j == t else rng.uniform(0.0, 1.0) for j in range(N_TOPICS))
            train_ex.append(Example(query(t), docs[t], candidates=tuple(docs), scores=scores))
    held_out = [(query(t), t) for t in range(N_TOPICS) for _ in range(4)]
    return train_ex, docs, held_out


def mrr(encoder, docs, held_out) -> float:
    d = encoder.encode_documents(docs)
    q = encoder.encode_queries([t for t, _ in held_out])
    scores = np.array([[np.max(qi @ dj.T, axis=1).sum() for dj in d] for qi in q])
    ranks = [
        (-row).argsort().tolist().index(topic) + 1
        for row, (_, topic) in zip(scores, held_out, strict=True)
    ]
    return float(np.mean([1.0 / r for r in ranks]))


def tiny_token(tiny_bert_dir) -> TokenEncoder:
    return TokenEncoder(tiny_bert_dir, dim=16, query_len=8, doc_max_len=12)


def test_distillation_lowers_kl_and_raises_held_out_mrr(tiny_bert_dir):
    train_ex, docs, held_out = distill_data()
    enc = tiny_token(tiny_bert_dir)
    before = mrr(enc, docs, held_out)
    cfg = TrainConfig(epochs=6, batch_size=16, lr=1e-3, head_lr=1e-2, train_layers=-1, seed=0)
    losses = train(enc, train_ex, cfg)
    after = mrr(enc, docs, held_out)
    kl = cfg.distill_losses
    steps = len(kl) // cfg.epochs
    assert len(kl) == len(losses) == 18  # every step had a KL term (weight 1: KL only)
    np.testing.assert_allclose(kl, losses, rtol=1e-6)
    first, last = np.mean(kl[:steps]), np.mean(kl[-steps:])  # first and last epoch
    assert last < 0.5 * first, (first, last)  # observed 1.74 -> 0.55 on seed 0
    assert after > before + 0.4, (before, after)  # observed 0.36 -> 0.96 on seed 0


def test_distillation_mixed_with_contrastive_runs(tiny_bert_dir):
    train_ex, docs, held_out = distill_data()
    plain = [Example(e.query, e.positive) for e in train_ex[:8]]  # no teacher: InfoNCE only
    enc = tiny_token(tiny_bert_dir)
    cfg = TrainConfig(epochs=1, batch_size=16, distill_weight=0.5, teacher_temperature=2.0)
    losses = train(enc, train_ex + plain, cfg)
    assert all(np.isfinite(losses)) and len(cfg.distill_losses) == len(losses)


def test_checkpoints_are_written_per_epoch_and_reload(tiny_bert_dir, tmp_path):
    train_ex, docs, _ = distill_data()
    enc = tiny_token(tiny_bert_dir)
    ckpt = tmp_path / "ckpt"
    cfg = TrainConfig(epochs=2, batch_size=16, lr=5e-4, head_lr=5e-3, checkpoint_dir=str(ckpt))
    train(enc, train_ex, cfg)
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch-1", "epoch-2"]
    last, first = TokenEncoder.load(ckpt / "epoch-2"), TokenEncoder.load(ckpt / "epoch-1")
    want = enc.encode_documents(docs)
    for a, b in zip(last.encode_documents(docs), want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(first.encode_documents(docs)[0], want[0], atol=1e-4)
    # a checkpoint trains on: resuming from epoch 1 is an ordinary encoder
    train(first, train_ex[:16], TrainConfig(epochs=1, batch_size=16))


def test_bad_distillation_input(tiny_bert_dir, tiny_st_dir):
    ex = [Example("q a", "d", candidates=("d", "e"), scores=(1.0, 0.0))] * 2
    with pytest.raises(TypeError, match="distillation trains a TokenEncoder"):
        train(SentenceEncoder(tiny_st_dir), ex)
    enc = tiny_token(tiny_bert_dir)
    with pytest.raises(ValueError, match="2 candidates and 1 teacher scores"):
        train(enc, [Example("q", "d", candidates=("d", "e"), scores=(1.0,))] * 2)
    with pytest.raises(ValueError, match="distill_weight must be in"):
        train(enc, ex, TrainConfig(distill_weight=1.5))
    with pytest.raises(ValueError, match="teacher_temperature must be positive"):
        train(enc, ex, TrainConfig(teacher_temperature=0))


def write_lines(path, rows) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def test_teacher_file_reads_texts_and_ids(tmp_path):
    path = tmp_path / "teacher.jsonl"
    write_lines(
        path,
        [
            {"query": "q one", "documents": ["a", "b", "c"], "scores": [0.1, 2.5, 1]},
            "",
            {"query_id": "q2", "document_ids": ["d1", "d2"], "scores": [1, 3], "positive": "x"},
        ],
    )
    got = read_teacher_file(
        path, corpus={"d1": "doc one", "d2": "doc two"}, queries={"q2": "query two"}
    )
    assert got[0] == Example("q one", "b", candidates=("a", "b", "c"), scores=(0.1, 2.5, 1.0))
    assert got[1] == Example("query two", "x", candidates=("doc one", "doc two"), scores=(1, 3))


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"documents": ["a", "b"], "scores": [1, 2]}, "no 'query'"),
        ({"query": "q", "scores": [1, 2]}, "no 'documents'"),
        ({"query": "q", "documents": ["a", ""], "scores": [1, 2]}, "non-empty strings"),
        ({"query": "q", "documents": ["a", "b"], "scores": [1]}, "2 documents but 1 scores"),
        ({"query": "q", "documents": ["a", "b"], "scores": [1, "x"]}, "list of numbers"),
        ({"query": "q", "documents": ["a"], "scores": [1]}, "at least 2 documents"),
        ({"query": "q", "documents": ["a", "b"], "scores": [1, float("nan")]}, "non-finite"),
        ({"query_id": "q", "document_ids": ["a", "b"], "scores": [1, 2]}, "needs a corpus"),
    ],
)
def test_teacher_file_rejects_a_malformed_line_naming_it(tmp_path, line, problem):
    path = tmp_path / "teacher.jsonl"
    good = {"query": "q", "documents": ["a", "b"], "scores": [1, 2]}
    write_lines(path, [good, good, line])
    with pytest.raises(ValueError, match=rf"teacher\.jsonl:3: .*{problem}"):
        read_teacher_file(path)


def test_teacher_file_unknown_id_and_empty_file(tmp_path):
    path = tmp_path / "t.jsonl"
    write_lines(path, [{"query_id": "q9", "document_ids": ["d1", "d2"], "scores": [1, 2]}])
    with pytest.raises(ValueError, match=r"t\.jsonl:1: unknown query_id 'q9'"):
        read_teacher_file(path, corpus={"d1": "x", "d2": "y"}, queries={"q1": "z"})
    path.write_text("\n")
    with pytest.raises(ValueError, match="no teacher lines"):
        read_teacher_file(path)


def test_fuse_standardises_each_scorer():
    bm25 = np.array([0.0, 10.0, 30.0])
    cos = np.array([0.9, 0.1, 0.5])
    np.testing.assert_allclose(zscore(bm25).std(), 1.0)
    np.testing.assert_allclose(fuse([bm25, cos], [1.0, 0.0]), zscore(bm25))
    np.testing.assert_allclose(fuse([bm25, cos]), (zscore(bm25) + zscore(cos)) / 2)
    np.testing.assert_array_equal(zscore(np.ones(3)), np.zeros(3))
    with pytest.raises(ValueError, match="bad fusion weights"):
        fuse([bm25, cos], [1.0])


def test_lengths_past_the_models_position_limit_are_refused(tiny_bert_dir):
    # The tiny model takes 128 positions: the default document length (256) shrinks to it,
    # an explicit length past it is refused with the limit named.
    assert TokenEncoder(tiny_bert_dir, dim=16).doc_max_len == 128
    with pytest.raises(ValueError, match=r"doc_max_len must be in 4\.\.128 .*got 129"):
        TokenEncoder(tiny_bert_dir, dim=16, doc_max_len=129)
    with pytest.raises(ValueError, match=r"query_len must be in 4\.\.128 .*got 3"):
        TokenEncoder(tiny_bert_dir, dim=16, query_len=3)


def test_a_saved_token_encoder_loads_with_another_document_length(tiny_bert_dir, tmp_path):
    import encoders

    enc = tiny_token(tiny_bert_dir)  # doc_max_len=12
    enc.save(tmp_path / "m")
    long_doc = " ".join(WORDS)  # more than 12 tokens
    short = encoders.load(str(tmp_path / "m"))
    longer = encoders.load(str(tmp_path / "m"), doc_max_len=40)
    assert (short.doc_max_len, longer.doc_max_len) == (12, 40)
    a, b = short.encode_documents([long_doc])[0], longer.encode_documents([long_doc])[0]
    assert len(b) > len(a)  # more of the document is kept, by the same weights:
    np.testing.assert_allclose(
        longer.encode_queries(["apple river"])[0], short.encode_queries(["apple river"])[0]
    )
    with pytest.raises(ValueError, match=r"cannot change \['dim'\]"):
        encoders.load(str(tmp_path / "m"), dim=8)
    with pytest.raises(ValueError, match="token encoders only"):
        encoders.load("default", doc_max_len=512)


def test_training_can_save_a_longer_document_length(tiny_bert_dir, tiny_st_dir, tmp_path):
    train_ex, _, _ = distill_data()
    enc = tiny_token(tiny_bert_dir)
    cfg = TrainConfig(epochs=1, batch_size=16, encode_doc_len=48, checkpoint_dir=str(tmp_path))
    seen = []
    tokenize = enc.tokenize
    enc.tokenize = lambda texts, is_query: seen.append(enc.doc_max_len) or tokenize(texts, is_query)
    train(enc, train_ex[:16], cfg)
    assert set(seen) == {12}  # training read documents at the encoder's own length
    assert enc.doc_max_len == 12
    assert TokenEncoder.load(tmp_path / "epoch-1").doc_max_len == 48
    save_trained(enc, tmp_path / "final", cfg)
    assert TokenEncoder.load(tmp_path / "final").doc_max_len == 48 and enc.doc_max_len == 12
    with pytest.raises(ValueError, match=r"encode_doc_len must be in 4\.\.128"):
        train(enc, train_ex[:16], TrainConfig(batch_size=16, encode_doc_len=600))
    with pytest.raises(ValueError, match="not a SentenceEncoder's"):
        train(SentenceEncoder(tiny_st_dir), train_ex[:16], TrainConfig(encode_doc_len=64))
