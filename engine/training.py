"""Training data and hard-negative mining for ``vecdex train``; the loop lives in ``encoders``.

Pairs come from a BEIR directory's qrels, from a JSONL/Parquet file of (query, positive
[, negative]), or from the corpus alone (title -> text, random span crops). Hard negatives are
mined with vecdex's own exact index over the corpus. ``hybrid_teacher`` gives examples a
teacher's candidates and scores (BM25 fused with the single-vector model) for distillation.
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


def beir_corpus(directory: str | Path) -> dict[str, str]:
    """A BEIR directory's corpus as ``{id: "title text"}`` (no qrels needed)."""
    path = Path(directory) / "corpus.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} does not exist (is {directory} a BEIR directory?)")
    return {d["_id"]: beir.document_text(d) for d in beir.read_jsonl(path)}


def beir_queries(directory: str | Path) -> dict[str, str]:
    """A BEIR directory's queries as ``{id: text}``."""
    return {q["_id"]: q["text"] for q in beir.read_jsonl(Path(directory) / "queries.jsonl")}


def hybrid_teacher(
    corpus: dict[str, str],
    examples: Sequence[Example],
    *,
    candidates: int = 8,
    depth: int = 30,
    dense: Encoder | None = None,
    dense_weight: float = 0.5,
) -> list[Example]:
    """Teacher scores from a fused lexical + dense ranking: each example gets its positive and
    ``candidates - 1`` other documents, scored by the fusion.

    The candidate pool of a query is the top ``depth`` documents by BM25 (vecdex's lexical
    index, bm25s) and by the single-vector ``dense`` encoder (default all-MiniLM-L6-v2); its
    members are scored by both, each scorer z-normalised over the pool and positive, and mixed
    with ``dense_weight`` (see ``encoders.distill.fuse``). The best-fused ``candidates - 1``
    non-positives join the positive. Documents that hold a positive verbatim (its source, as in
    ``make_miner``) are never candidates. Positives that are not corpus documents (span crops,
    a pairs file's texts) are scored as extra rows of both indexes.

    Raises:
        ValueError: fewer than 2 candidates, an empty corpus, or a weight outside [0, 1].
    """
    from encoders.distill import fuse
    from index.lexical import BM25Index

    if candidates < 2:
        raise ValueError(f"candidates must be >= 2, got {candidates}")
    if not 0.0 <= dense_weight <= 1.0:
        raise ValueError(f"dense_weight must be in [0, 1], got {dense_weight}")
    texts = list(corpus.values())
    n_docs = len(texts)
    if not n_docs:
        raise ValueError("the hybrid teacher needs a corpus")
    row_of = {t: i for i, t in enumerate(texts)}
    for e in examples:
        if e.positive not in row_of:
            row_of[e.positive] = len(texts)
            texts.append(e.positive)
    enc = dense if dense is not None else SentenceEncoder("default")
    log.info("hybrid teacher: BM25 + %s over %d texts", enc, len(texts))
    lexical = BM25Index()
    lexical.add(texts, np.arange(len(texts)))
    lexical.rebuild()
    vectors = np.asarray(enc.encode_documents(texts), dtype=np.float32)
    q_vecs = np.asarray(enc.encode_queries([e.query for e in examples]), dtype=np.float32)
    q_terms = lexical.query_terms([e.query for e in examples])
    padded = [f" {_words(t)} " for t in texts[:n_docs]]
    positives: dict[str, set[str]] = {}
    for e in examples:
        positives.setdefault(e.query, set()).add(f" {_words(e.positive)} ")
    out = []
    for i, e in enumerate(examples):
        lex = lexical.score_terms(q_terms[i])[: len(texts)]
        den = vectors @ q_vecs[i]
        top = min(depth, n_docs)
        pool = np.union1d(
            np.argpartition(-lex[:n_docs], top - 1)[:top],
            np.argpartition(-den[:n_docs], top - 1)[:top],
        )
        pool = np.asarray(
            [
                r
                for r in pool
                if texts[r] != e.positive and not any(p in padded[r] for p in positives[e.query])
            ],
            dtype=np.int64,
        )
        rows = np.concatenate([[row_of[e.positive]], pool]).astype(np.int64)
        fused = fuse([lex[rows], den[rows]], [1.0 - dense_weight, dense_weight])
        keep = np.concatenate([[0], 1 + np.argsort(-fused[1:], kind="stable")[: candidates - 1]])
        if keep.size < 2:
            log.warning("no candidates for %r; it trains contrastively only", e.query)
            out.append(e)
            continue
        out.append(
            replace(
                e,
                candidates=tuple(texts[rows[k]] for k in keep),
                scores=tuple(float(fused[k]) for k in keep),
            )
        )
    return out


def gather_examples(
    *,
    beir_dir: str | Path | None = None,
    split: str = "train",
    pairs: str | Path | None = None,
    unsupervised: bool = False,
    teacher_file: str | Path | None = None,
    seed: int = 0,
) -> tuple[list[Example], dict[str, str]]:
    """``vecdex train``'s data: every source given, and the corpus (empty without ``beir_dir``).

    A BEIR directory without ``qrels/<split>.tsv`` (your own documents) is accepted with
    ``unsupervised``: its corpus alone gives the pairs. Teacher-file ids are resolved through
    the BEIR directory's queries and corpus.

    Raises:
        ValueError: no source yields an example, or ``unsupervised`` without ``beir_dir``.
    """
    from encoders.distill import read_teacher_file

    examples: list[Example] = []
    corpus: dict[str, str] = {}
    if beir_dir:
        if unsupervised and not (Path(beir_dir) / "qrels" / f"{split}.tsv").is_file():
            corpus = beir_corpus(beir_dir)
        else:
            examples, corpus = beir_examples(beir_dir, split)
    if pairs:
        examples += file_examples(pairs)
    if unsupervised:
        if not beir_dir:
            raise ValueError("--unsupervised needs --beir DIR (its corpus.jsonl)")
        examples += corpus_examples(beir.read_jsonl(Path(beir_dir) / "corpus.jsonl"), seed=seed)
    if teacher_file:
        examples += read_teacher_file(
            teacher_file,
            corpus=corpus or None,
            queries=beir_queries(beir_dir) if beir_dir else None,
        )
    if not examples:
        raise ValueError(
            "no training data: give --beir DIR, --pairs FILE, --distill FILE and/or --unsupervised"
        )
    return examples, corpus
