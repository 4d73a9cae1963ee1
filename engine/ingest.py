"""``vecdex index``: from a file of any size to a searchable collection, resumably.

The input streams in chunks of ``batch_size`` rows (``engine.sources``). Three stages overlap, each
on its own thread: reading and checking a chunk, encoding its texts (the caller's thread), and
writing it to the collection. Each chunk is one write carrying the run's position in its input as
the collection's marker (``Collection.upsert(marker=...)``, one log record), so whatever survives a
crash is a whole number of chunks and the marker says exactly how many: running the same command
again continues from there, with no duplicates and no gaps. Because of that the writes skip the
per-write fsync (``durability="none"``: a killed process loses nothing, and after a power cut the
surviving log prefix still matches its marker); the final checkpoint makes the collection durable.

Malformed rows (no id, no text, a vector of the wrong length or with NaN/inf, an id seen before,
a line that is not JSON) are reported with their row numbers. ``on_error="fail"`` (the default)
checks the whole input before writing anything, so a bad row leaves nothing half-written;
``"skip"`` indexes the good rows and reports the rest.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import index as ix

from . import collection as collection_mod
from .collection import Collection
from .engine import Engine
from .payloads import check_payloads
from .sources import Chunk, InputError, Source

log = logging.getLogger(__name__)

ON_ERROR = ("fail", "skip")
MAX_REPORTED = 100  # malformed rows kept in a report (all are counted)
TEXT_BATCH = 256
VECTOR_BATCH = 8192
_ID_COLUMNS = ("id", "_id", "doc_id", "docid")
_VECTOR_COLUMNS = ("vector", "embedding", "embeddings", "emb")


class MalformedInputError(ValueError):
    """``on_error="fail"`` met malformed rows; nothing of the run was written."""

    def __init__(self, bad: list[BadRow], total: int) -> None:
        self.bad, self.total = bad, total
        shown = "; ".join(str(b) for b in bad[:10])
        more = f" (and {total - 10} more)" if total > 10 else ""
        super().__init__(
            f"{total} malformed row{'s' if total != 1 else ''}: {shown}{more}. Nothing was "
            "written; fix the input or pass on_error='skip' (--on-error skip) to index the rest"
        )


class IngestInterrupted(Exception):
    """Ctrl-C (KeyboardInterrupt): the chunks already written are committed whole."""

    def __init__(self, report: Report) -> None:
        self.report = report
        super().__init__(
            f"interrupted after {report.resumed_from + report.rows} input rows; "
            "run the same command again to continue from there"
        )


@dataclass(frozen=True)
class BadRow:
    where: str  # "row 17" or "row 17 (line 18)"
    id: str | None
    reason: str

    def __str__(self) -> str:
        ident = f" id {self.id!r}" if self.id is not None else ""
        return f"{self.where}{ident}: {self.reason}"


@dataclass
class Report:
    """What a run did: rows read, items written, rows skipped, time, size on disk."""

    collection: str
    input: str
    format: str
    total_rows: int | None = None  # rows in the input (estimated for CSV)
    resumed_from: int = 0  # input rows a previous run had already committed
    rows: int = 0  # input rows this run read
    added: int = 0  # items this run wrote
    skipped: int = 0  # malformed rows this run skipped
    errors: list[BadRow] = field(default_factory=list)  # the first MAX_REPORTED of them
    already_done: bool = False  # an earlier run had indexed this input completely
    seconds: float = 0.0
    count: int = 0  # items in the collection at the end
    bytes_on_disk: int = 0
    # Seconds each stage worked, and the encoding stage's waits: on the reader ("starved") and
    # on the writer ("blocked"); with overlap, the sum of stages exceeds ``seconds``.
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def docs_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["errors"] = [str(b) for b in self.errors]
        d["docs_per_s"] = self.docs_per_s
        return d

    def summary(self) -> str:
        if self.already_done:
            return (
                f"{self.input} is already indexed in {self.collection!r} "
                f"({self.count:,} items); nothing to do"
            )
        resumed = f" (resumed at row {self.resumed_from:,})" if self.resumed_from else ""
        return (
            f"indexed {self.added:,} items from {self.rows:,} rows of {self.input}{resumed} into "
            f"{self.collection!r} in {self.seconds:.2f} s ({self.docs_per_s:,.0f} rows/s); "
            f"{self.skipped:,} malformed rows skipped; collection: {self.count:,} items, "
            f"{self.bytes_on_disk / 1e6:,.1f} MB on disk"
        )


@dataclass(frozen=True)
class Plan:
    """Which columns hold what, and how rows are written."""

    id_column: str
    text_columns: tuple[str, ...]
    vector_column: str | None
    payload_columns: tuple[str, ...]
    upsert: bool

    def columns(self) -> list[str]:
        cols = [self.id_column, *self.text_columns, *self.payload_columns]
        if self.vector_column:
            cols.append(self.vector_column)
        return list(dict.fromkeys(cols))

    def strings(self) -> tuple[str, ...]:
        """Columns that a CSV reader must keep as text."""
        return (
            self.id_column,
            *self.text_columns,
            *((self.vector_column,) if self.vector_column else ()),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id_column,
            "texts": list(self.text_columns),
            "vector": self.vector_column,
            "payloads": list(self.payload_columns),
            "mode": "upsert" if self.upsert else "add",
        }


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


# ---- the entry point --------------------------------------------------------------------------
def ingest(
    eng: Engine,
    input: str | Path,
    collection: str,
    *,
    format: str | None = None,
    encoder: str | None = None,
    vector_column: str | None = None,
    index: str | None = None,
    metric: str | None = None,
    id_column: str | None = None,
    text_columns: list[str] | tuple[str, ...] | None = None,
    payload_columns: list[str] | tuple[str, ...] | None = None,
    store_text: bool = True,
    batch_size: int | None = None,
    on_error: str = "fail",
    upsert: bool = False,
    overwrite: bool = False,
    progress: Callable[[Report], None] | None = None,
    lexical: bool = True,
) -> Report:
    """Indexes a Parquet / JSONL / CSV file (or a directory of them, or a BEIR directory) into
    collection ``collection`` of ``eng``, creating it when absent; resumes an interrupted run.

    Args:
        input: the file or directory; ``format`` overrides detection by extension.
        encoder: texts are encoded with it (a new collection; an existing one uses its own).
        vector_column: precomputed vectors instead (a list or fixed-size-list column; in CSV a
            string such as ``"[0.1, 0.2]"``). With neither, a column named vector / embedding
            is used if present, else texts with the ``default`` encoder.
        index, metric: for a new collection (default: the engine's defaults).
        id_column: default the first of id, _id, doc_id, docid present.
        text_columns: joined with a space (default: title and text, or text).
        payload_columns: stored as each item's payload; with ``store_text`` the text columns too.
        batch_size: rows per chunk (one write each; default 256 for texts, 8192 for vectors).
            A resumed run keeps the batch size it started with.
        on_error: ``"fail"`` (check everything first; write nothing if a row is malformed) or
            ``"skip"`` (write the good rows, report the malformed ones).
        upsert: ids already in the collection (or repeated in the input) replace the earlier
            item instead of being malformed rows.
        overwrite: drop the collection first.
        progress: called after each committed chunk with the running report.
        lexical: a new collection from texts keeps a BM25 index of them (lexical and hybrid
            search); False skips it. An existing collection keeps its own setting.

    Raises:
        InputError: unreadable input or absent columns. MalformedInputError: malformed rows
        under ``on_error="fail"``. IngestInterrupted: Ctrl-C (the run can be resumed).
        ValueError: arguments that do not fit each other or the collection.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    if encoder is not None and vector_column is not None:
        raise ValueError("give an encoder or a vector column, not both")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    source = Source(input, format)
    t0 = time.perf_counter()
    if overwrite and collection in eng.list_collections():
        eng.drop_collection(collection)
    col = eng.open_collection(collection) if collection in eng.list_collections() else None
    plan, encoder_spec = _plan(
        source,
        col,
        encoder=encoder,
        vector_column=vector_column,
        id_column=id_column,
        text_columns=text_columns,
        payload_columns=payload_columns,
        store_text=store_text,
        upsert=upsert,
    )
    report = Report(collection, str(input), source.format)
    run = {"input": source.fingerprint(), "plan": plan.as_json()}
    state = _previous_run(col, run)
    if state is not None and state.get("done"):
        report.already_done = True
        report.count = len(col) if col is not None else 0
        report.bytes_on_disk = col.describe()["bytes_on_disk"] if col is not None else 0
        return report
    if state is not None:
        batch_size = int(state["batch_size"])
        report.resumed_from = int(state["rows"])
        log.info("resuming %s into %r at row %d", input, collection, report.resumed_from)
    elif batch_size is None:
        batch_size = VECTOR_BATCH if plan.vector_column else TEXT_BATCH
    assert batch_size is not None
    report.total_rows = source.count_rows()

    if col is None:
        dim = None if plan.vector_column is None else _first_dim(source, plan, batch_size)
        if on_error == "fail":
            _check_all(source, plan, batch_size, dim, None, multi=_multi(index))
        col = eng.create_collection(
            collection,
            dim=dim,
            encoder=encoder_spec if plan.vector_column is None else None,
            index=index,
            metric=metric or "cosine",
            lexical=lexical and plan.vector_column is None,
        )
    else:
        _check_fits(col, plan, encoder=encoder, index=index, metric=metric)
        if on_error == "fail" and state is None:
            _check_all(source, plan, batch_size, col.dim, col, multi=col.multi_vector)
    _Pipeline(col, source, plan, run, state, batch_size, on_error, report, progress, t0).run()
    return report


# ---- planning ---------------------------------------------------------------------------------
def _plan(
    source: Source,
    col: Collection | None,
    *,
    encoder: str | None,
    vector_column: str | None,
    id_column: str | None,
    text_columns: Any,
    payload_columns: Any,
    store_text: bool,
    upsert: bool,
) -> tuple[Plan, str | None]:
    names = source.column_names()

    def need(c: str, what: str) -> str:
        if c not in names:
            raise InputError(f"{source.path}: no {what} column {c!r} (columns: {names})")
        return c

    if id_column is None:
        id_column = next((c for c in _ID_COLUMNS if c in names), None)
        if id_column is None:
            raise InputError(
                f"{source.path}: no id column (looked for {', '.join(_ID_COLUMNS)}); name it "
                f"with --id-column (columns: {names})"
            )
    need(id_column, "id")
    if vector_column is None and encoder is None:
        has_encoder = col is not None and col.encoder_spec is not None
        if not has_encoder:
            vector_column = next((c for c in _VECTOR_COLUMNS if c in names), None)
    if vector_column is not None:
        need(vector_column, "vector")
        texts: tuple[str, ...] = ()
    else:
        if encoder is None:
            encoder = col.encoder_spec if col is not None and col.encoder_spec else "default"
        if text_columns is None:
            if "text" not in names:
                raise InputError(
                    f"{source.path}: no text column; name it with --text-column (columns: {names})"
                )
            text_columns = [c for c in ("title", "text") if c in names]
        if isinstance(text_columns, str) or not text_columns:
            raise ValueError("text_columns must be a non-empty list of column names")
        texts = tuple(need(c, "text") for c in text_columns)
    if isinstance(payload_columns, str):
        raise ValueError("payload_columns must be a list of column names")
    payloads = [need(c, "payload") for c in payload_columns or ()]
    if store_text:
        payloads = [*texts, *payloads]
    for c in payloads:
        if c.startswith("_"):
            raise ValueError(
                f"payload column {c!r}: payload keys starting with '_' are reserved; leave it "
                "out of the payload columns"
            )
    plan = Plan(id_column, texts, vector_column, tuple(dict.fromkeys(payloads)), bool(upsert))
    return plan, encoder


def _multi(index: str | None) -> bool:
    return index is not None and ix.spec.is_multivector(ix.parse_spec(index)[0])


def _previous_run(col: Collection | None, run: dict[str, Any]) -> dict[str, Any] | None:
    """The state of an earlier run of the same input and plan, if the collection holds one."""
    if col is None:
        return None
    state = (col.marker or {}).get("ingest")
    if not isinstance(state, dict):
        return None
    if state.get("run") == run:
        return state
    before = state.get("run", {}).get("input", {})
    if not state.get("done") and before.get("path") != run["input"]["path"]:
        log.warning(
            "collection %r holds an unfinished run of %s; indexing %s instead (that run can no "
            "longer be resumed)",
            col.name,
            before.get("path"),
            run["input"]["path"],
        )
    if not state.get("done") and before.get("path") == run["input"]["path"]:
        raise ValueError(
            f"collection {col.name!r} holds an unfinished run of {before.get('path')}, and the "
            "input or the options changed since (file sizes, times, columns or mode): run it "
            "with the same input and options to finish it, or pass overwrite=True "
            "(--overwrite) to rebuild the collection"
        )
    return None


def _check_fits(
    col: Collection, plan: Plan, *, encoder: str | None, index: str | None, metric: str | None
) -> None:
    if plan.vector_column is None and col.encoder_spec is None:
        raise ValueError(
            f"collection {col.name!r} has no encoder: give the vector column (--vector-column)"
        )
    if encoder is not None and col.encoder_spec is not None and encoder != col.encoder_spec:
        raise ValueError(
            f"collection {col.name!r} uses encoder {col.encoder_spec!r}, not {encoder!r}"
        )
    if index is not None and index.split(":", 1)[0] != col.index_spec.split(":", 1)[0]:
        raise ValueError(f"collection {col.name!r} has index {col.index_spec!r}, not {index!r}")
    if metric is not None and metric != col.metric.value:
        raise ValueError(f"collection {col.name!r} has metric {col.metric.value!r}, not {metric!r}")


def _first_dim(source: Source, plan: Plan, batch_size: int) -> int:
    assert plan.vector_column is not None
    fixed = source.vector_size(plan.vector_column)
    if fixed is not None:
        return fixed
    for chunk in source.chunks(plan.columns(), batch_size, strings=plan.strings()):
        values = _pylist(chunk.columns[plan.vector_column])
        for v in values:
            try:
                x = _parse_vector(v)
            except ValueError:
                continue
            if x is not None and x.size:
                return int(x.shape[-1])
    raise InputError(f"{source.path}: no valid vector in column {plan.vector_column!r}")


# ---- checking rows ----------------------------------------------------------------------------
def _pylist(values: pa.Array | list[Any]) -> list[Any]:
    return values if isinstance(values, list) else values.to_pylist()


def _parse_vector(v: Any) -> np.ndarray | None:
    """A row's vector as float32 (1-D, or 2-D for a token set); None when absent."""
    if v is None:
        return None
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        if s.startswith("["):
            try:
                v = json.loads(s)
            except ValueError:
                raise ValueError("vector is not a JSON list of numbers") from None
        else:
            v = s.replace(",", " ").split()
    try:
        return np.asarray(v, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError("vector holds something other than numbers") from None


def _arrow_vectors(arr: pa.Array, dim: int) -> tuple[np.ndarray, dict[int, str]] | None:
    """(n, dim) float32 and per-row problems, vectorised, for list / fixed-size-list columns of
    numbers; None for other types (checked row by row instead)."""
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return None
    if not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        return None
    n = len(arr)
    x = np.zeros((n, dim), dtype=np.float32)
    problems: dict[int, str] = {}
    null = arr.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(t):
        lengths = np.full(n, t.list_size, dtype=np.int64)
    else:
        lengths = np.asarray(
            pa.compute.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
        )
    ok = ~null & (lengths == dim)
    for r in np.flatnonzero(~ok).tolist():
        problems[r] = "missing vector" if null[r] else f"vector has {lengths[r]} values, not {dim}"
    if ok.any():
        good = arr.filter(pa.array(ok))
        values = good.flatten() if not pa.types.is_fixed_size_list(t) else good.values
        if pa.types.is_fixed_size_list(t) and good.offset:
            values = values.slice(good.offset * dim, len(good) * dim)
        flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        x[ok] = flat.reshape(-1, dim)
    return x, problems


def _check_chunk(
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
    raw_ids = _pylist(chunk.columns[plan.id_column])
    ids: list[str | None] = []
    for r, v in enumerate(raw_ids):
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
    texts: list[str] | None = None
    if plan.text_columns:
        columns = [_pylist(chunk.columns[c]) for c in plan.text_columns]
        texts = []
        for r in range(n):
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
    vectors: np.ndarray | list[Any] | None = None
    if plan.vector_column is not None:
        assert dim is not None
        vectors = _chunk_vectors(chunk, plan.vector_column, dim, multi, problems)
    payload_cols = {c: _pylist(chunk.columns[c]) for c in plan.payload_columns}
    payloads: list[dict[str, Any]] = []
    for r in range(n):
        p = {c: values[r] for c, values in payload_cols.items() if values[r] is not None}
        if p and chunk.start + r not in problems:
            try:
                check_payloads([p], 1)
            except (TypeError, ValueError) as e:
                problems[chunk.start + r] = str(e).replace("payload 0 ", "payload ")
        payloads.append(p)
    # Duplicates, among rows that are otherwise fine.
    keep = np.ones(n, dtype=bool)
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
    rows = np.flatnonzero(keep).tolist()
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


def _chunk_vectors(
    chunk: Chunk, column: str, dim: int, multi: bool, problems: dict[int, str]
) -> np.ndarray | list[Any]:
    values = chunk.columns[column]
    if not multi and isinstance(values, pa.Array):
        fast = _arrow_vectors(values, dim)
        if fast is not None:
            stacked, found = fast
            for r, why in found.items():
                problems.setdefault(chunk.start + r, why)
            finite = np.isfinite(stacked).all(axis=1)
            for r in np.flatnonzero(~finite).tolist():
                problems.setdefault(chunk.start + r, "vector contains NaN or inf")
            return stacked
    rows = _pylist(values)
    out: list[Any] = []
    for r, v in enumerate(rows):
        row = chunk.start + r
        x: np.ndarray | None
        try:
            x = _parse_vector(v)
        except ValueError as e:
            problems.setdefault(row, str(e))
            x = None
        if x is None:
            problems.setdefault(row, "missing vector")
        elif multi and (x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != dim):
            problems.setdefault(row, f"token set of shape {x.shape}, expected (n >= 1, {dim})")
            x = None
        elif not multi and (x.ndim != 1 or x.shape[0] != dim):
            what = f"{x.shape[0]} values" if x.ndim == 1 else f"shape {x.shape}"
            problems.setdefault(row, f"vector has {what}, not {dim}")
            x = None
        elif not np.isfinite(x).all():
            problems.setdefault(row, "vector contains NaN or inf")
        out.append(x)
    if multi:
        return out
    stacked = np.zeros((len(rows), dim), dtype=np.float32)
    for r, x in enumerate(out):
        if x is not None and x.shape == (dim,):
            stacked[r] = x
    return stacked


def _check_all(
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
        batch = _check_chunk(chunk, plan, dim, exists, multi)
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
            batch = _check_chunk(chunk, plan, dim, exists, multi)
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


# ---- the pipeline -----------------------------------------------------------------------------
_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Pipeline:
    """read+check (thread) -> encode (caller's thread) -> write (thread), two chunks in flight
    between stages."""

    def __init__(
        self,
        col: Collection,
        source: Source,
        plan: Plan,
        run: dict[str, Any],
        state: dict[str, Any] | None,
        batch_size: int,
        on_error: str,
        report: Report,
        progress: Callable[[Report], None] | None,
        t0: float,
    ) -> None:
        self.col, self.source, self.plan, self.run_id = col, source, plan, run
        self.batch_size, self.on_error, self.report = batch_size, on_error, report
        self.progress, self.t0 = progress, t0
        self.stop = threading.Event()
        self.checked: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.encoded: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.writer_error: BaseException | None = None
        self.rows_done = report.resumed_from
        self.added = int(state["added"]) if state else 0
        self.skipped = int(state["skipped"]) if state else 0
        self.bytes_per_item = col.dim * 4
        # Ids of chunks checked but not yet committed: a later chunk's duplicate check must see
        # them (the collection holds an id only once its chunk is written).
        self.pending: dict[int, set[str]] = {}
        self.pending_lock = threading.Lock()

    def _exists(self, key: str) -> bool:
        if key in self.col:
            return True
        with self.pending_lock:
            return any(key in ids for ids in self.pending.values())

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue[Any]) -> Any:
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self.writer_error is not None:
                    raise self.writer_error from None

    def _time(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        stages = self.report.stages
        stages[stage] = stages.get(stage, 0.0) + now - since
        return now

    def _read(self) -> None:
        try:
            chunks = self.source.chunks(
                self.plan.columns(),
                self.batch_size,
                skip=self.report.resumed_from,
                strings=self.plan.strings(),
            )
            t = time.perf_counter()
            for chunk in chunks:
                batch = _check_chunk(
                    chunk, self.plan, self.col.dim, self._exists, self.col.multi_vector
                )
                with self.pending_lock:
                    self.pending[batch.start] = set(batch.ids)
                self._time("read", t)
                if not self._put(self.checked, batch):
                    return
                t = time.perf_counter()
            self._put(self.checked, _END)
        except BaseException as e:  # handed to the caller's thread
            self._put(self.checked, _Failed(e))

    def _write(self) -> None:
        try:
            while True:
                item = self.encoded.get()
                if item is _END:
                    return
                self._commit(item)
        except BaseException as e:
            self.writer_error = e
            self.stop.set()

    def _state(self, rows: int, done: bool) -> dict[str, Any]:
        return {
            "ingest": {
                "run": self.run_id,
                "batch_size": self.batch_size,
                "rows": rows,
                "added": self.added,
                "skipped": self.skipped,
                "done": done,
            }
        }

    def _commit(self, batch: Batch) -> None:
        col = self.col
        self.skipped += len(batch.bad)
        self.added += len(batch.ids)
        marker = self._state(batch.end, done=False)
        t = time.perf_counter()
        try:
            if batch.ids:
                col.upsert(
                    batch.ids,
                    batch.vectors,
                    batch.payloads,
                    marker=marker,
                    texts=batch.lexical_texts,
                )
            else:
                col.set_marker(marker)
        except (TypeError, ValueError) as e:
            raise ValueError(f"rows {batch.start + 1}-{batch.end}: {e}") from None
        self._time("write", t)
        self.rows_done = batch.end
        with self.pending_lock:
            self.pending.pop(batch.start, None)
        r = self.report
        r.rows = batch.end - r.resumed_from
        r.added += len(batch.ids)
        r.skipped += len(batch.bad)
        r.errors.extend(batch.bad[: max(0, MAX_REPORTED - len(r.errors))])
        r.seconds = time.perf_counter() - self.t0
        log.info(
            "committed rows %d-%d of %s (%d written, %d malformed)",
            batch.start + 1,
            batch.end,
            self.source.path,
            len(batch.ids),
            len(batch.bad),
        )
        # Checkpoint as the collection doubles: the log stays below the collection's size (a
        # bounded replay after a crash) and checkpoints cost O(final size) in all.
        col.checkpoint_bytes = max(collection_mod.CHECKPOINT_BYTES, len(col) * self.bytes_per_item)
        if self.progress is not None:
            self.progress(r)

    def _encode(self, batch: Batch) -> Batch:
        if self.col.lexical and self.col.text_field is None and batch.ids:
            batch.lexical_texts = batch.texts
        if batch.texts is not None and batch.ids:
            enc = self.col.encoder
            assert enc is not None
            t = time.perf_counter()
            batch.vectors = enc.encode_documents(batch.texts)
            self._time("encode", t)
            if enc.multi_vector:
                self.bytes_per_item = max(
                    self.bytes_per_item,
                    int(sum(v.nbytes for v in batch.vectors) / max(1, len(batch.ids))),
                )
        batch.texts = None
        return batch

    def run(self) -> None:
        col = self.col
        durability = col.durability
        col.durability = "none"
        if self.report.total_rows:
            col.reserve(len(col) + max(0, self.report.total_rows - self.report.resumed_from))
        reader = threading.Thread(target=self._read, name="vecdex-ingest-read", daemon=True)
        writer = threading.Thread(target=self._write, name="vecdex-ingest-write", daemon=True)
        reader.start()
        writer.start()
        finished = False
        try:
            while True:
                t = time.perf_counter()
                item = self._get(self.checked)
                self._time("encode_starved", t)
                if item is _END:
                    break
                if isinstance(item, _Failed):
                    raise item.error
                if item.bad and self.on_error == "fail":
                    raise MalformedInputError(item.bad, len(item.bad))
                item = self._encode(item)
                t = time.perf_counter()
                if not self._put(self.encoded, item):
                    break
                self._time("encode_blocked", t)
            finished = True
        except KeyboardInterrupt:
            self._drain(writer)
            raise IngestInterrupted(self.report) from None
        finally:
            if not finished:
                self.stop.set()
            self._drain(writer)
            self.stop.set()
            reader.join(timeout=5)
            try:
                col.durability = durability
            except Exception:  # pragma: no cover - the collection was superseded
                log.exception("restoring durability")
        if self.writer_error is not None:
            raise self.writer_error
        col.set_marker(self._state(self.rows_done, done=True))
        t = time.perf_counter()
        col.flush()
        self._time("checkpoint", t)
        r = self.report
        r.seconds = time.perf_counter() - self.t0
        r.count = len(col)
        r.bytes_on_disk = col.describe()["bytes_on_disk"]

    def _drain(self, writer: threading.Thread) -> None:
        """Lets the writer commit what is already encoded, then stops it."""
        if not writer.is_alive():
            return
        while writer.is_alive():
            try:
                self.encoded.put(_END, timeout=0.1)
                break
            except queue.Full:
                if self.writer_error is not None:
                    break
        writer.join()
