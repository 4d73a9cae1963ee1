"""Shared fixtures: tiny transformer models built from a config with the bundled tokenizer."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer (random weights, seeded)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from encoders.resolve import default_model_path

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(str(default_model_path()))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_st_dir(tiny_bert_dir, tmp_path_factory):
    """A sentence-transformers model directory over the tiny BERT (mean pooling, normalised)."""
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models  # type: ignore[no-redef]

    path = tmp_path_factory.mktemp("tiny-st")
    word = models.Transformer(str(tiny_bert_dir), max_seq_length=64)
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pool = models.Pooling(dim(), "mean")
    SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu").save(str(path))
    return path


def _end_shard(host, i: int, timeout: float = 60.0) -> None:
    """Kills Ray shard ``i`` for good and returns once it is down: ``ray.kill`` is asynchronous,
    so a call made right after it may still be answered by the dying actor."""
    import time

    import ray

    from engine.errors import ShardUnavailableError

    ray.kill(host.actor(i), no_restart=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            host.call(i, "ping").result()
        except ShardUnavailableError:
            return
        time.sleep(0.05)
    raise AssertionError(f"shard {i} still answers {timeout} s after ray.kill")


@pytest.fixture()
def end_shard():
    """``end_shard(host, i)``: shard i of a Ray-hosted collection killed, and down on return."""
    return _end_shard
