"""Training data and hard-negative mining for ``vecdex train``; the loop lives in ``encoders``.

Pairs come from a BEIR directory's qrels, from a JSONL/Parquet file of (query, positive
[, negative]), or from the corpus alone (title -> text, random span crops). Hard negatives are
mined with vecdex's own exact index over the corpus.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.json as pj
import pyarrow.parquet as pq

from encoders import Encoder, SentenceEncoder
from encoders.train import Example, Miner
from index import FlatIndex

from . import beir

log = logging.getLogger(__name__)


def beir_examples(
    directory: str | Path, split: str = "train"
) -> tuple[list[Example], dict[str, str]]:
    """Examples from ``qrels/<split>.tsv`` (relevance > 0), and the corpus as ``{id: text}``."""
    directory = Path(directory)
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise ValueError(f"{qrels_path} does not exist (is {directory} a BEIR directory?)")
    corpus = {d["_id"]: beir.document_text(d) for d in beir.read_jsonl(directory / "corpus.jsonl")}
    queries = {q["_id"]: q["text"] for q in beir.read_jsonl(directory / "queries.jsonl")}
    examples = []
    for qid, rels in beir.read_qrels(qrels_path).items():
        for doc, rel in rels.items():
            if rel > 0 and qid in queries and doc in corpus:
                examples.append(Example(queries[qid], corpus[doc]))
    if not examples:
        raise ValueError(f"{qrels_path} yields no (query, positive) pairs")
    return examples, corpus


def file_examples(path: str | Path) -> list[Example]:
    """Examples from JSONL or Parquet: columns ``query``, ``positive``, optional ``negative``."""
    path = Path(path)
    if path.suffix == ".parquet":
        table = pq.read_table(path)
    elif path.suffix in (".jsonl", ".json"):
        table = pj.read_json(path)
    else:
        raise ValueError(f"{path}: pairs must be .jsonl or .parquet")
    missing = {"query", "positive"} - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    negs = table.column("negative").to_pylist() if "negative" in table.column_names else None
    out = []
    for i, (q, p) in enumerate(
        zip(table.column("query").to_pylist(), table.column("positive").to_pylist(), strict=True)
    ):
        if not isinstance(q, str) or not q.strip() or not isinstance(p, str) or not p.strip():
            raise ValueError(f"{path}: row {i} has an empty or non-string query/positive")
        out.append(Example(q, p, negs[i] if negs and negs[i] else None))
    return out


def corpus_examples(
    docs: Sequence[dict], seed: int = 0, crop_words: tuple[int, int] = (8, 32)
) -> list[Example]:
    """Unsupervised pairs from documents alone: title -> text, and two random spans of one text."""
    rng = random.Random(seed)
    out = []
    for d in docs:
        text = d.get("text", "")
        words = text.split()
        if d.get("title") and text:
            out.append(Example(d["title"], text))
        if len(words) >= 2 * crop_words[0]:
            n = rng.randint(crop_words[0], min(crop_words[1], len(words) // 2))
            a, b = rng.randrange(0, len(words) - n + 1), rng.randrange(0, len(words) - n + 1)
            out.append(Example(" ".join(words[a : a + n]), " ".join(words[b : b + 2 * n])))
    return out


def _words(text: str) -> str:
    return " ".join(text.split())


def make_miner(
    corpus: dict[str, str],
    *,
    depth: int = 30,
    margin: float = 0.95,
    seed: int = 0,
    batch_size: int = 256,
    first_doc_vectors: np.ndarray | None = None,
) -> Miner:
    """A miner: for each example, a hard negative among the top ``depth`` documents that are not
    its positive, skipping candidates that score above ``margin`` x the positive's score (likely
    unlabelled positives). A document that holds a positive verbatim (whitespace aside) is that
    positive's source (``corpus_examples`` takes positives from a document's text or a span of
    it, while the corpus holds "title text"), so it is never a negative, however it scores.
    Multi-vector encoders are mined with the default single-vector model.
    ``first_doc_vectors`` (the corpus already encoded by the untrained encoder) saves the first
    mining pass its corpus encoding."""
    doc_ids = list(corpus)
    texts = [corpus[d] for d in doc_ids]
    padded = [f" {_words(t)} " for t in texts]  # for word-aligned containment tests
    rng = random.Random(seed)

    def mine(encoder: Encoder, examples: list[Example]) -> list[Example]:
        enc = encoder if not encoder.multi_vector else SentenceEncoder("default")
        log.info("mining hard negatives over %d documents", len(texts))
        nonlocal first_doc_vectors
        index = FlatIndex(enc.dim, metric="ip")
        if first_doc_vectors is not None and first_doc_vectors.shape == (len(texts), enc.dim):
            index.add(first_doc_vectors, np.arange(len(texts)))
        else:
            for start in range(0, len(texts), batch_size * 8):
                chunk = texts[start : start + batch_size * 8]
                index.add(enc.encode_documents(chunk), np.arange(start, start + len(chunk)))
        first_doc_vectors = None
        q = enc.encode_queries([e.query for e in examples])
        p = enc.encode_documents([e.positive for e in examples])
        pos_score = (q * p).sum(1)
        scores, labels = index.search(q, min(depth + 1, len(texts)))
        positives: dict[str, set[str]] = {}
        for e in examples:
            positives.setdefault(e.query, set()).add(f" {_words(e.positive)} ")
        out = []
        for i, e in enumerate(examples):
            pool = [
                texts[lab]
                for s, lab in zip(scores[i], labels[i], strict=True)
                if lab >= 0
                and s < margin * pos_score[i]
                and not any(pos in padded[lab] for pos in positives[e.query])
            ]
            out.append(replace(e, negative=rng.choice(pool[:depth]) if pool else None))
        return out

    return mine
