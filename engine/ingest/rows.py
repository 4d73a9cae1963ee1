"""Checking rows: a chunk's ids, texts, vectors and payloads, and ids repeated within the chunk,
across chunks or already in the collection. A malformed row keeps its first problem."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..collection import Collection
from ..payloads import check_payloads
from ..sources import Chunk, Source
from .plan import Plan
from .report import MAX_REPORTED, BadRow, MalformedInputError
from .vectors import chunk_vectors, pylist


@dataclass
class Batch:
    """One chunk, checked: the rows to write and the malformed ones."""

    start: int
    end: int  # one past its last input row
    rows: list[int]  # the input row (0-based) of each item to write
    ids: list[str]
    texts: list[str] | None
    vectors: np.ndarray | list[np.ndarray] | None
    payloads: list[dict[str, Any]]
    bad: list[BadRow]
    lexical_texts: list[str] | None = None  # the texts the collection's BM25 index takes


def check_chunk(
    chunk: Chunk,
    plan: Plan,
    dim: int | None,
    exists: Callable[[str], bool] | None,
    multi: bool,
) -> Batch:
    """The chunk's good rows, ready to encode or write, and its malformed ones (in row order).
    ``exists(id)`` says whether an earlier chunk (or run) already holds the id."""
    n = chunk.n
    problems: dict[int, str] = dict(chunk.bad)
    ids = _check_ids(chunk, plan, problems)
    texts = _check_texts(chunk, plan, problems)
    vectors: np.ndarray | list[Any] | None = None
    if plan.vector_column is not None:
        assert dim is not None
        vectors = chunk_vectors(chunk, plan.vector_column, dim, multi, problems)
    payloads = _check_payloads(chunk, plan, problems)
    rows = _unique_rows(chunk, plan, ids, exists, problems)
    bad = [
        BadRow(chunk.where(row), ids[row - chunk.start], why)
        for row, why in sorted(problems.items())
    ]
    bad += [BadRow(where, None, why) for where, why in chunk.unplaced]
    out_vectors: np.ndarray | list[np.ndarray] | None = None
    if isinstance(vectors, np.ndarray):
        out_vectors = vectors[rows]
    elif vectors is not None:
        out_vectors = [vectors[r] for r in rows]
    return Batch(
        start=chunk.start,
        end=chunk.start + n,
        rows=[chunk.start + r for r in rows],
        ids=[ids[r] for r in rows],  # type: ignore[misc]
        texts=None if texts is None else [texts[r] for r in rows],
        vectors=out_vectors,
        payloads=[payloads[r] for r in rows],
        bad=bad,
    )


def _check_ids(chunk: Chunk, plan: Plan, problems: dict[int, str]) -> list[str | None]:
    """Each row's id as a stripped string; None (and a problem) where it is missing or not a
    string or integer."""
    ids: list[str | None] = []
    for r, v in enumerate(pylist(chunk.columns[plan.id_column])):
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            ids.append(None)
            if chunk.start + r not in problems:
                problems[chunk.start + r] = (
                    "missing id" if v is None else f"id must be a string or integer, not {v!r}"
                )
            continue
        s = str(v).strip()
        ids.append(s or None)
        if not s and chunk.start + r not in problems:
            problems[chunk.start + r] = "missing id"
    return ids


def _check_texts(chunk: Chunk, plan: Plan, problems: dict[int, str]) -> list[str] | None:
    """Each row's text columns joined with a space; None when the plan takes vectors."""
    if not plan.text_columns:
        return None
    columns = [pylist(chunk.columns[c]) for c in plan.text_columns]
    texts = []
    for r in range(chunk.n):
        parts = []
        for c, values in zip(plan.text_columns, columns, strict=True):
            v = values[r]
            if v is not None and not isinstance(v, str):
                problems.setdefault(chunk.start + r, f"column {c!r} is not text: {v!r}")
            elif v and v.strip():
                parts.append(v.strip())
        texts.append(" ".join(parts))
        if not parts:
            problems.setdefault(
                chunk.start + r, f"missing text (empty {' and '.join(plan.text_columns)})"
            )
    return texts


def _check_payloads(chunk: Chunk, plan: Plan, problems: dict[int, str]) -> list[dict[str, Any]]:
    """Each row's payload (its non-null payload columns), checked on rows still fine."""
    payload_cols = {c: pylist(chunk.columns[c]) for c in plan.payload_columns}
    payloads: list[dict[str, Any]] = []
    for r in range(chunk.n):
        p = {c: values[r] for c, values in payload_cols.items() if values[r] is not None}
        if p and chunk.start + r not in problems:
            try:
                check_payloads([p], 1)
            except (TypeError, ValueError) as e:
                problems[chunk.start + r] = str(e).replace("payload 0 ", "payload ")
        payloads.append(p)
    return payloads


def _unique_rows(
    chunk: Chunk,
    plan: Plan,
    ids: list[str | None],
    exists: Callable[[str], bool] | None,
    problems: dict[int, str],
) -> list[int]:
    """The rows (relative to the chunk) to write: those without a problem, less duplicate ids
    (under upsert the last row of an id wins; otherwise a repeat is a problem)."""
    keep = np.ones(chunk.n, dtype=bool)
    first: dict[str, int] = {}
    for r, key in enumerate(ids):
        row = chunk.start + r
        if key is None or row in problems:
            keep[r] = False
            continue
        if key in first:
            if plan.upsert:
                keep[first[key]] = False  # the later row replaces the earlier one
            else:
                keep[r] = False
                problems[row] = f"duplicate id (first at {chunk.where(chunk.start + first[key])})"
                continue
        elif not plan.upsert and exists is not None and exists(key):
            keep[r] = False
            problems[row] = "duplicate id: already in the collection (an earlier row or run)"
            continue
        first[key] = r
    rows: list[int] = np.flatnonzero(keep).tolist()
    return rows


def check_all(
    source: Source,
    plan: Plan,
    batch_size: int,
    dim: int | None,
    col: Collection | None,
    multi: bool,
) -> None:
    """Checks every row before anything is written (``on_error="fail"``). Ids repeated across
    chunks are found through their 64-bit hashes (8 bytes a row), then confirmed exactly."""
    bad: list[BadRow] = []
    total = 0
    hashes: list[np.ndarray] = []
    exists = None if col is None else col.__contains__
    chunks = source.chunks(plan.columns(), batch_size, strings=plan.strings())
    for chunk in chunks:
        batch = check_chunk(chunk, plan, dim, exists, multi)
        total += len(batch.bad)
        bad.extend(batch.bad[: max(0, MAX_REPORTED - len(bad))])
        if not plan.upsert:
            hashes.append(np.fromiter((hash(k) for k in batch.ids), np.int64, len(batch.ids)))
    if len(hashes) > 1:
        h = np.sort(np.concatenate(hashes))
        dup = set(h[1:][h[1:] == h[:-1]].tolist())
        seen: dict[str, str] = {}
        for chunk in source.chunks(plan.columns(), batch_size, strings=plan.strings()):
            if not dup:
                break
            batch = check_chunk(chunk, plan, dim, exists, multi)
            for key, row in zip(batch.ids, batch.rows, strict=True):
                if hash(key) not in dup:
                    continue
                if key in seen:
                    total += 1
                    if len(bad) < MAX_REPORTED:
                        why = f"duplicate id (first at {seen[key]})"
                        bad.append(BadRow(chunk.where(row), key, why))
                else:
                    seen[key] = chunk.where(row)
    if total:
        raise MalformedInputError(bad, total)
