"""Planning a run: which columns hold what, whether the plan fits an existing collection, and
whether the collection holds an earlier run of the same input and plan to resume."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import index as ix

from ..collection import Collection
from ..sources import InputError, Source
from .vectors import parse_vector, pylist

log = logging.getLogger(__name__)

_ID_COLUMNS = ("id", "_id", "doc_id", "docid")
_VECTOR_COLUMNS = ("vector", "embedding", "embeddings", "emb")


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


def make_plan(
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
    """The run's plan from the input's columns and the options, and the encoder spec a new
    collection would use (None with a vector column)."""
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


def is_multi_index(index: str | None) -> bool:
    """Whether index spec ``index`` makes a multi-vector (token set) collection."""
    return index is not None and ix.spec.is_multivector(ix.parse_spec(index)[0])


def previous_run(col: Collection | None, run: dict[str, Any]) -> dict[str, Any] | None:
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


def check_fits(
    col: Collection, plan: Plan, *, encoder: str | None, index: str | None, metric: str | None
) -> None:
    """Raises ValueError when the plan or the options do not fit existing collection ``col``."""
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


def first_dim(source: Source, plan: Plan, batch_size: int) -> int:
    """A new collection's dimension: the column's fixed size, else its first valid vector's."""
    assert plan.vector_column is not None
    fixed = source.vector_size(plan.vector_column)
    if fixed is not None:
        return fixed
    for chunk in source.chunks(plan.columns(), batch_size, strings=plan.strings()):
        values = pylist(chunk.columns[plan.vector_column])
        for v in values:
            try:
                x = parse_vector(v)
            except ValueError:
                continue
            if x is not None and x.size:
                return int(x.shape[-1])
    raise InputError(f"{source.path}: no valid vector in column {plan.vector_column!r}")
