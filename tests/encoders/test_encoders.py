"""Encoders: offline loading, shapes, save/load round trips, bad input, text collections."""

from __future__ import annotations

import socket

import numpy as np
import pytest

import encoders
from encoders import SentenceEncoder, TokenEncoder
from engine import Engine

TEXTS = ["the cat sat on the mat.", "proteins fold inside cells", "markets fell, sharply; today!"]


@pytest.fixture(scope="module")
def minilm():
    return encoders.load("default")


def test_default_model_encodes_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    enc = SentenceEncoder("default")
    x = enc.encode_documents(TEXTS)
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    sims = enc.encode_queries(["a kitten on a rug"]) @ x.T
    assert sims.argmax() == 0


def test_sentence_save_load_identical(tiny_st_dir, tmp_path):
    enc = encoders.load(str(tiny_st_dir))
    assert isinstance(enc, SentenceEncoder) and enc.dim == 32
    enc.save(tmp_path / "m")
    again = encoders.load(str(tmp_path / "m"))
    assert np.array_equal(enc.encode_documents(TEXTS), again.encode_documents(TEXTS))
    assert again.name == str((tmp_path / "m").resolve())


def test_matryoshka_truncation(tiny_st_dir):
    enc = SentenceEncoder(tiny_st_dir, truncate_dim=8)
    x = enc.encode_documents(TEXTS)
    assert x.shape == (3, 8) and enc.dim == 8
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="truncate_dim"):
        SentenceEncoder(tiny_st_dir, truncate_dim=33)


def test_token_encoder_shapes_markers_skiplist(tiny_bert_dir):
    enc = TokenEncoder(tiny_bert_dir, dim=16, query_len=12, doc_max_len=10)
    docs = enc.encode_documents(TEXTS)
    # [CLS] [D] the cat sat on the mat [SEP]: punctuation dropped, markers and specials kept.
    assert docs[0].shape == (9, 16)
    assert docs[2].shape[0] == 10 - 3  # cut at doc_max_len=10, then ',', ';' and '!' dropped
    for d in docs:
        np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    q = enc.encode_queries(["cat?"])
    assert q[0].shape == (5, 16)  # [CLS] [Q] cat ? [SEP]: no [MASK] padding by default
    batch = enc.tokenize(["cat?"], True)
    assert batch["input_ids"][0, 1] == enc._q_marker


def test_token_query_augmentation_is_opt_in(tiny_bert_dir, tmp_path):
    enc = TokenEncoder(tiny_bert_dir, dim=16, query_len=12, query_augment=True)
    assert enc.encode_queries(["cat?"])[0].shape == (12, 16)  # padded with [MASK] to query_len
    ids = enc.tokenize(["cat?"], True)["input_ids"][0]
    assert (ids[5:] == enc.tokenizer.mask_token_id).all()
    enc.save(tmp_path / "aug")
    again = encoders.load(str(tmp_path / "aug"))
    assert isinstance(again, TokenEncoder) and again.query_augment
    assert not encoders.load(f"token:base={tiny_bert_dir},dim=16").query_augment


def test_token_save_load_identical(tiny_bert_dir, tmp_path):
    enc = TokenEncoder(tiny_bert_dir, dim=16, seed=3)
    enc.save(tmp_path / "tok")
    again = encoders.load(str(tmp_path / "tok"))
    assert isinstance(again, TokenEncoder) and again.dim == 16
    for a, b in zip(enc.encode_documents(TEXTS), again.encode_documents(TEXTS), strict=True):
        assert np.array_equal(a, b)
    other = TokenEncoder(tiny_bert_dir, dim=16, seed=4)
    assert not np.array_equal(other.encode_documents(TEXTS)[0], enc.encode_documents(TEXTS)[0])


@pytest.mark.parametrize(
    ("texts", "exc", "match"),
    [
        (["ok", ""], ValueError, r"documents\[1\] is empty"),
        (["ok", "   "], ValueError, r"documents\[1\] is empty"),
        (["ok", 3], TypeError, r"documents\[1\] must be a string"),
        ([], ValueError, "empty batch"),
        ("just one string", TypeError, "not one string"),
    ],
)
def test_bad_texts(tiny_st_dir, texts, exc, match):
    enc = encoders.load(str(tiny_st_dir))
    with pytest.raises(exc, match=match):
        enc.encode_documents(texts)


def test_unknown_encoder_spec():
    with pytest.raises(ValueError, match="unknown encoder 'sentence-transformers/all-mpnet"):
        encoders.load("sentence-transformers/all-mpnet-base-v2")


def test_text_collection_round_trip(tiny_st_dir, tmp_path):
    eng = Engine(tmp_path)
    col = eng.create_collection("t", encoder=str(tiny_st_dir), index="flat")
    assert col.dim == 32
    col.add(["a", "b", "c"], texts=TEXTS, payloads=[{"n": 1}, {"n": 2}, {"n": 3}])
    hits = col.search("a cat on a mat", k=3)
    batch = col.search_batch(["a cat on a mat", "cells"], k=2)
    eng.close()
    again = Engine(tmp_path).open_collection("t")
    assert again.config()["encoder"] == str(tiny_st_dir.resolve())
    assert again.search("a cat on a mat", k=3) == hits
    assert (again.search_batch(["a cat on a mat", "cells"], k=2).ids == batch.ids).all()


def test_text_collection_bad_input(tiny_st_dir, tmp_path):
    eng = Engine(tmp_path)
    with pytest.raises(ValueError, match="dim=64 does not match the encoder's dimension 32"):
        eng.create_collection("t", encoder=str(tiny_st_dir), dim=64)
    col = eng.create_collection("t", encoder=str(tiny_st_dir), index="flat", lexical=False)
    with pytest.raises(ValueError, match=r"texts\[0\] is empty"):
        col.add(["a"], texts=[""])
    # Vectors and texts together only index the texts lexically: without a lexical index,
    # that is a mistake.
    with pytest.raises(ValueError, match="exactly one of vectors= or texts="):
        col.add(["a"], np.ones((1, 32)), texts=["x"])
    with pytest.raises(ValueError, match=r"queries\[0\] is empty"):
        col.search("", k=1)
    raw = eng.create_collection("raw", dim=32)
    with pytest.raises(ValueError, match="has no encoder"):
        raw.search("text", k=1)
    with pytest.raises(ValueError, match="no encoder"):
        raw.add(["a"], texts=["x"])
    with pytest.raises(ValueError, match="multi-vector"):
        eng.create_collection("m", encoder="token", index="hnsw")
