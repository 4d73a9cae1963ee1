"""Payloads: JSON-like dicts per label, kept in memory and as an Arrow table for filters/disk."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from index import memory

from . import filters

_SCALARS = (str, int, float, bool, type(None))


def check_payloads(payloads: Sequence[Any] | None, n: int) -> list[dict[str, Any]]:
    """Validates one call's payloads; returns n dicts (empty where None was given)."""
    if payloads is None:
        return [{} for _ in range(n)]
    if isinstance(payloads, (str, bytes, dict)) or not isinstance(payloads, Sequence):
        raise TypeError("payloads must be a list of dicts, one per id")
    if len(payloads) != n:
        raise ValueError(f"got {len(payloads)} payloads for {n} ids")
    out: list[dict[str, Any]] = []
    for i, p in enumerate(payloads):
        if p is None:
            out.append({})
            continue
        if not isinstance(p, dict):
            raise TypeError(f"payload {i} must be a dict, got {type(p).__name__}")
        for key, value in p.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"payload {i} has a non-string or empty key {key!r}")
            if key.startswith("_"):
                raise ValueError(f"payload {i} key {key!r}: keys starting with '_' are reserved")
            _check_value(value, f"payload {i} field {key!r}")
        out.append({k: v for k, v in p.items() if v is not None})
    return out


def _check_value(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}; payload numbers must be finite")
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_value(v, where)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a non-string key {k!r}")
            _check_value(v, f"{where}.{k}")
        return
    raise TypeError(f"{where} has type {type(value).__name__}; payloads hold JSON-like values")


class PayloadStore:
    """label -> payload dict (only labels with a non-empty payload are held: a bulk load of bare
    vectors costs nothing here), plus a lazily built Arrow table of every live label (``_label``,
    one column a field; nulls where a label has no value) for ``where`` filters."""

    def __init__(self) -> None:
        self.by_label: dict[int, dict[str, Any]] = {}
        self.schema = pa.schema([])
        self.version = 0
        self._table: pa.Table | None = None
        self._table_version = -1
        self._mask_cache: dict[str, np.ndarray] = {}

    def check_types(self, payloads: list[dict[str, Any]]) -> pa.Schema:
        """Returns the schema after adding ``payloads``; raises naming a conflicting field."""
        rows = [p for p in payloads if p]
        if not rows:
            return self.schema
        # Every key of every row (from_pylist alone would take the first row's keys only).
        keys = dict.fromkeys(k for row in rows for k in row)
        try:
            new = pa.Table.from_pydict({k: [row.get(k) for row in rows] for k in keys}).schema
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"payloads have inconsistent types within the call: {e}") from None
        for f in new:
            if f.name in self.schema.names:
                old = self.schema.field(f.name)
                try:
                    pa.unify_schemas(
                        [pa.schema([old]), pa.schema([f])], promote_options="permissive"
                    )
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    raise ValueError(
                        f"payload field {f.name!r} has type {f.type} here "
                        f"but {old.type} in the collection"
                    ) from None
        return pa.unify_schemas([self.schema, new], promote_options="permissive")

    def ram_bytes(self) -> int:
        """The payload dicts (estimated from a sample, see ``index.memory``) plus the Arrow
        table and filter masks cached for ``where`` searches."""
        cached = self._table.nbytes if self._table is not None else 0
        masks = sum(int(m.nbytes) for m in self._mask_cache.values())
        return memory.values_ram(self.by_label) + int(cached) + masks

    def put(self, labels: np.ndarray, payloads: list[dict[str, Any]], schema: pa.Schema) -> None:
        pairs = zip(labels.tolist(), payloads, strict=True)
        self.by_label.update((lab, p) for lab, p in pairs if p)
        self.schema = schema
        self.version += 1

    def remove(self, labels: np.ndarray) -> None:
        for lab in labels.tolist():
            self.by_label.pop(lab, None)
        self.version += 1

    def get(self, label: int) -> dict[str, Any]:
        return self.by_label.get(label, {})

    def table(self, live: Callable[[], np.ndarray]) -> pa.Table:
        """The payloads of the ``live()`` labels as an Arrow table with a ``_label`` column
        (rebuilt only after changes)."""
        if self._table is None or self._table_version != self.version:
            schema = pa.schema([pa.field("_label", pa.int64()), *self.schema])
            rows = [{"_label": lab, **p} for lab, p in self.by_label.items()]
            table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
            held = np.fromiter(self.by_label, dtype=np.int64, count=len(self.by_label))
            bare = np.setdiff1d(np.asarray(live(), dtype=np.int64), held, assume_unique=True)
            if bare.size:
                nulls = [pa.nulls(bare.size, f.type) for f in self.schema]
                table = pa.concat_tables(
                    [table, pa.Table.from_arrays([pa.array(bare), *nulls], schema=schema)]
                )
            self._table = table
            self._table_version = self.version
            self._mask_cache.clear()
        return self._table

    def matching(self, where: dict[str, Any], live: Callable[[], np.ndarray]) -> np.ndarray:
        """Labels whose payload matches ``where`` (sorted int64), cached until the next change;
        ``live()`` gives every live label (those without a payload match as all-null rows)."""
        key = json.dumps(where, sort_keys=True, default=str)
        table = self.table(live)
        hit = self._mask_cache.get(key)
        if hit is None:
            mask = filters.evaluate(where, table)
            hit = np.sort(table.column("_label").to_numpy()[mask])
            if len(self._mask_cache) > 64:
                self._mask_cache.clear()
            self._mask_cache[key] = hit
        return hit

    def load(self, labels: np.ndarray, table: pa.Table) -> None:
        fields = [f for f in table.schema if f.name not in ("_label", "_id")]
        self.schema = pa.schema(fields)
        cols = [f.name for f in fields]
        self.by_label = {}
        self.version += 1
        if not cols:  # bare vectors: nothing to hold
            return
        rows = table.select(cols).to_pylist()
        for lab, row in zip(labels.tolist(), rows, strict=True):
            p = {k: v for k, v in row.items() if v is not None}
            if p:
                self.by_label[lab] = p
        self.version += 1
