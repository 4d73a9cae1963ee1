"""Teacher scores for distillation: reading a teacher file, and fusing scorers into soft labels.

A teacher file is JSONL, one query a line, in the shape PyLate / ColBERTv2 distillation uses,
with texts or with ids:

- ``{"query": "...", "documents": ["...", ...], "scores": [s1, ...]}``, optionally
  ``"positive": "..."`` (the text the contrastive term treats as the answer; by default the
  top-scored document);
- ``{"query_id": "q1", "document_ids": ["d1", ...], "scores": [...]}``, resolved through the
  ``queries`` and ``corpus`` maps (a BEIR directory's), as PyLate's ``(query_id, document_ids,
  scores)`` training rows are.

Scores are any real numbers (cross-encoder logits, BM25, cosines): only their differences
within a line matter, scaled by the teacher temperature (``TrainConfig.teacher_temperature``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .train import Example

__all__ = ["fuse", "read_teacher_file", "zscore"]


def read_teacher_file(
    path: str | Path,
    *,
    corpus: Mapping[str, str] | None = None,
    queries: Mapping[str, str] | None = None,
) -> list[Example]:
    """Examples with candidates and teacher scores from a JSONL teacher file.

    Args:
        path: the JSONL file (format in the module docstring).
        corpus: ``{doc_id: text}`` for lines that give ``document_ids``.
        queries: ``{query_id: text}`` for lines that give ``query_id``.

    Returns:
        One ``Example`` per line: ``candidates`` and ``scores`` from the line, ``positive`` the
        line's ``positive`` or its top-scored document.

    Raises:
        ValueError: the file is empty, or a line is not a JSON object with a query, at least two
            documents and one finite score for each, or names an unknown id; the message names
            the file and line (``teacher.jsonl:3: 2 documents but 3 scores``).

    Example:
        >>> read_teacher_file("teacher.jsonl")  # doctest: +SKIP
        [Example(query='...', positive='...', candidates=(...), scores=(...))]
    """
    path = Path(path)
    out: list[Example] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                out.append(_parse_line(line, f"{path}:{n}", corpus, queries))
    if not out:
        raise ValueError(f"{path}: no teacher lines")
    return out


def _parse_line(
    line: str,
    where: str,
    corpus: Mapping[str, str] | None,
    queries: Mapping[str, str] | None,
) -> Example:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "query" in row:
        query = row["query"]
    elif "query_id" in row:
        query = _lookup(queries, row["query_id"], "query_id", where)
    else:
        raise ValueError(f"{where}: no 'query' (or 'query_id')")
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"{where}: 'query' must be a non-empty string")
    if "documents" in row:
        docs = row["documents"]
        key = "documents"
    elif "document_ids" in row:
        ids = row["document_ids"]
        if not isinstance(ids, list):
            raise ValueError(f"{where}: 'document_ids' must be a list")
        docs = [_lookup(corpus, i, "document_ids", where) for i in ids]
        key = "document_ids"
    else:
        raise ValueError(f"{where}: no 'documents' (or 'document_ids')")
    if not isinstance(docs, list) or not all(isinstance(d, str) and d.strip() for d in docs):
        raise ValueError(f"{where}: '{key}' must be a list of non-empty strings")
    scores = row.get("scores")
    if not isinstance(scores, list) or not all(
        isinstance(s, int | float) and not isinstance(s, bool) for s in scores
    ):
        raise ValueError(f"{where}: 'scores' must be a list of numbers")
    if len(scores) != len(docs):
        raise ValueError(f"{where}: {len(docs)} documents but {len(scores)} scores")
    if len(docs) < 2:
        raise ValueError(f"{where}: at least 2 documents are needed to distil a ranking")
    if not all(math.isfinite(s) for s in scores):
        raise ValueError(f"{where}: 'scores' holds a non-finite value")
    positive = row.get("positive")
    if positive is None:
        positive = docs[int(np.argmax(scores))]
    elif not isinstance(positive, str) or not positive.strip():
        raise ValueError(f"{where}: 'positive' must be a non-empty string")
    return Example(query, positive, candidates=tuple(docs), scores=tuple(float(s) for s in scores))


def _lookup(table: Mapping[str, str] | None, key: object, field: str, where: str) -> str:
    if table is None:
        raise ValueError(f"{where}: '{field}' needs a corpus and queries (give --beir DIR)")
    if not isinstance(key, str | int) or str(key) not in table:
        raise ValueError(f"{where}: unknown {field} {key!r}")
    return table[str(key)]


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardised over the last axis (a constant row becomes zeros)."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(-1, keepdims=True)
    return (x - x.mean(-1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def fuse(parts: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """A fused teacher score: the weighted mean of each scorer's z-scores over the candidates.

    Scorers on different scales (BM25 in 0..30, cosines in -1..1) then count alike; the result
    is centred with unit-ish spread, so a teacher temperature of 1 gives moderately soft labels.
    """
    if not parts:
        raise ValueError("fuse needs at least one scorer")
    w = np.ones(len(parts)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(parts),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"bad fusion weights {list(w)} for {len(parts)} scorers")
    return sum(wi * zscore(p) for wi, p in zip(w, parts, strict=True)) / w.sum()  # type: ignore[no-any-return]
