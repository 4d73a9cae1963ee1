"""Metadata filters: compile Mongo/Chroma-style ``where`` dicts into pyarrow compute expressions.

A filter is a JSON-like dict evaluated against a pyarrow Table of payloads, one column per
top-level payload field. Columns whose names start with ``"_"`` belong to the engine (``"_label"``,
...) and can never be referenced by a filter.

Grammar::

    where     := {clause, ...}                       # clauses are AND-ed; {} matches everything
    clause    := FIELD: scalar                       # shorthand for {"$eq": scalar}
               | FIELD: {OP: operand, ...}           # several operators are AND-ed
               | "$and": [where, ...]                # non-empty list
               | "$or": [where, ...]                 # non-empty list
    OP        := $eq | $ne | $gt | $gte | $lt | $lte | $in | $nin
    operand   := scalar, or a list of scalars for $in / $nin (an empty list is allowed)
    scalar    := str | int | float | bool            # not None, not NaN, ints within int64
    FIELD     := "name" or a dotted path "a.b.c" into struct (nested dict) payloads

Missing fields and nulls follow one rule: a value that is absent (field not in the schema, path
not resolving to a column, or a null cell) is *not equal* to anything and *not comparable* with
anything. So ``$eq``, ``$gt``/``$gte``/``$lt``/``$lte`` and ``$in`` are False there, while ``$ne``
and ``$nin`` are True.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.acero as acero
import pyarrow.compute as pc

__all__ = ["FilterError", "compile_where", "evaluate"]

_ORDERING = ("$gt", "$gte", "$lt", "$lte")
_FIELD_OPERATORS = ("$eq", "$ne", *_ORDERING, "$in", "$nin")
_LOGICAL_OPERATORS = ("$and", "$or")
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "$eq": operator.eq,
    "$ne": operator.ne,
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
# Deep enough for any hand-written filter; bounds recursion on hostile input (gRPC requests).
MAX_DEPTH = 32
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TRUE = pc.scalar(True)
_FALSE = pc.scalar(False)


class FilterError(ValueError):
    """A malformed ``where`` filter; the message names the offending key, operator or value."""


def compile_where(where: Mapping[str, Any], schema: pa.Schema) -> pc.Expression:
    """Compile a ``where`` filter into a boolean expression over a payload table.

    The expression never evaluates to null: see the module docstring for how missing fields and
    null cells behave. Types are checked against ``schema``: strings compare only with string
    columns, numbers (int or float) only with numeric columns, and bools only with bool columns
    (``True`` never equals ``1``). Ordering operators are not defined on bool columns.

    Args:
        where: The filter, e.g. ``{"year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}}``.
        schema: Schema of the payload table the expression will be evaluated against.

    Returns:
        A ``pyarrow.compute.Expression`` of type bool; ``{}`` compiles to ``true``.

    Raises:
        FilterError: The filter is malformed: not a dict, a non-string or reserved (``"_"``)
            key, an unknown operator, an empty ``$and``/``$or``, a non-list ``$in`` operand, a
            non-scalar, null or NaN value, or a value whose type does not match its column.

    Example:
        >>> schema = pa.schema([("year", pa.int64())])
        >>> compile_where({"year": {"$gte": 2021}}, schema)  # doctest: +SKIP
        <pyarrow.compute.Expression (((year >= 2021) and is_valid(year)))>
    """
    return _Compiler(schema).compile(where)


def evaluate(where: Mapping[str, Any] | None, table: pa.Table) -> np.ndarray:
    """Evaluate a ``where`` filter against every row of a payload table.

    The filter is always validated, even against an empty table. Only the columns it references
    are read, and evaluation runs in pyarrow compute (an Acero projection).

    Args:
        where: The filter (see :func:`compile_where`); ``None`` or ``{}`` matches every row.
        table: Payload table, one column per top-level payload field.

    Returns:
        Boolean mask of shape ``(len(table),)``; True where the row matches.

    Raises:
        FilterError: The filter is malformed (see :func:`compile_where`).

    Example:
        >>> t = pa.table({"year": [2020, 2021, None]})
        >>> evaluate({"year": {"$ne": 2020}}, t).tolist()
        [False, True, True]
    """
    compiler = _Compiler(table.schema)
    expr = compiler.compile({} if where is None else where)
    n = table.num_rows
    if n == 0:
        return np.zeros(0, dtype=bool)
    if not compiler.columns:  # only literals: {} or filters on missing fields
        if expr.equals(_TRUE):
            return np.ones(n, dtype=bool)
        if expr.equals(_FALSE):
            return np.zeros(n, dtype=bool)
    columns = sorted(compiler.columns)
    row = "_row"  # cannot clash: filters never reference "_" columns
    source = table.select(columns).append_column(row, pa.array(np.arange(n, dtype=np.int64)))
    # A projection rather than Table.filter: filtering would copy every referenced column (and
    # has no kernel for some types, e.g. string_view). The row index makes the result
    # independent of batch order.
    plan = acero.Declaration.from_sequence(
        [
            acero.Declaration("table_source", acero.TableSourceNodeOptions(source)),
            acero.Declaration("project", acero.ProjectNodeOptions([pc.field(row), expr])),
        ]
    )
    result = plan.to_table(use_threads=False)
    rows = result.column(0).to_numpy()
    hits = pc.fill_null(result.column(1), False).to_numpy(zero_copy_only=False)
    mask = np.zeros(n, dtype=bool)
    mask[rows[hits.astype(bool)]] = True
    return mask


def _loc(path: str, key: object) -> str:
    return f"{path}[{key!r}]"


def _and_all(exprs: Sequence[pc.Expression]) -> pc.Expression:
    return functools.reduce(operator.and_, exprs) if exprs else _TRUE


class _Compiler:
    """One compilation: walks the filter, type-checks against the schema, records columns read."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.columns: set[str] = set()

    def compile(self, where: object, path: str = "where", depth: int = 0) -> pc.Expression:
        if depth > MAX_DEPTH:
            raise FilterError(f"filter nested deeper than {MAX_DEPTH} levels at {path}")
        if not isinstance(where, Mapping):
            raise FilterError(
                f"a filter must be a dict, got {type(where).__name__} {where!r} at {path}"
            )
        clauses = []
        for key, value in where.items():
            if not isinstance(key, str):
                raise FilterError(
                    f"filter keys must be strings, got {type(key).__name__} {key!r} at {path}"
                )
            here = _loc(path, key)
            if key.startswith("$"):
                clauses.append(self._logical(key, value, here, depth))
            else:
                clauses.append(self._field(key, value, here))
        return _and_all(clauses)

    def _logical(self, op: str, value: object, path: str, depth: int) -> pc.Expression:
        if op not in _LOGICAL_OPERATORS:
            hint = " (field operators go inside a field: {'f': {'$gt': 1}})"
            raise FilterError(
                f"unknown logical operator {op!r} at {path}; supported: "
                f"{', '.join(_LOGICAL_OPERATORS)}" + (hint if op in _FIELD_OPERATORS else "")
            )
        if not isinstance(value, (list, tuple)):
            raise FilterError(
                f"{op} expects a list of filters, got {type(value).__name__} {value!r} at {path}"
            )
        if not value:
            raise FilterError(f"{op} expects a non-empty list of filters at {path}")
        parts = [self.compile(sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(value)]
        return functools.reduce(operator.and_ if op == "$and" else operator.or_, parts)

    def _field(self, name: str, spec: object, path: str) -> pc.Expression:
        column = self._resolve(name, path)
        if isinstance(spec, Mapping):
            if not spec:
                raise FilterError(f"empty operator dict for field {name!r} at {path}")
            clauses = [self._operator(name, column, op, arg, path) for op, arg in spec.items()]
            return _and_all(clauses)
        return self._operator(name, column, "$eq", spec, path, shorthand=True)

    def _resolve(self, name: str, path: str) -> tuple[pc.Expression, pa.DataType] | None:
        """The column a (dotted) field name addresses, or None when it is absent."""
        if name.startswith("_"):
            raise FilterError(
                f"field {name!r} is reserved: names starting with '_' belong to the engine "
                f"and cannot be filtered on (at {path})"
            )
        parts = name.split(".")
        if not all(parts):
            raise FilterError(f"field name {name!r} has an empty path segment at {path}")
        indices = self.schema.get_all_field_indices(parts[0])
        if len(indices) > 1:
            raise FilterError(f"field {parts[0]!r} is ambiguous: the table has duplicate columns")
        if not indices:
            return None
        dtype = self.schema.field(indices[0]).type
        for part in parts[1:]:
            if not pa.types.is_struct(dtype) or dtype.get_field_index(part) < 0:
                return None  # e.g. "year.month" where year is an int: the path does not exist
            dtype = dtype.field(part).type
        self.columns.add(parts[0])
        expr = pc.field(*parts)
        if pa.types.is_dictionary(dtype):
            dtype = dtype.value_type
            expr = expr.cast(dtype)
        if pa.types.is_string_view(dtype):  # comparison kernels take string, not string_view
            dtype = pa.large_string()
            expr = expr.cast(dtype)
        return expr, dtype

    def _operator(
        self,
        name: str,
        column: tuple[pc.Expression, pa.DataType] | None,
        op: object,
        arg: object,
        path: str,
        shorthand: bool = False,
    ) -> pc.Expression:
        here = path if shorthand else _loc(path, op)
        if not isinstance(op, str) or op not in _FIELD_OPERATORS:
            if isinstance(op, str) and not op.startswith("$"):
                raise FilterError(
                    f"unknown operator {op!r} for field {name!r} at {here}: dict values are not "
                    f"matched as sub-documents; use a dotted path such as '{name}.{op}'"
                )
            raise FilterError(
                f"unknown operator {op!r} for field {name!r} at {here}; supported: "
                f"{', '.join(_FIELD_OPERATORS)}"
            )
        if op in ("$in", "$nin"):
            if not isinstance(arg, (list, tuple)):
                raise FilterError(
                    f"{op} expects a list of values for field {name!r}, "
                    f"got {type(arg).__name__} {arg!r} at {here}"
                )
            values = [_scalar(v, f"{here}[{i}]") for i, v in enumerate(arg)]
            locations = [f"{here}[{i}]" for i in range(len(values))]
        else:
            values = [_scalar(arg, here)]
            locations = [here]
        negated = op in ("$ne", "$nin")
        if column is None:  # absent: not equal, not comparable
            return _TRUE if negated else _FALSE
        expr, dtype = column
        kind = _kind(dtype, name, here)
        if kind == "null":  # an all-null column behaves like an absent field
            return _TRUE if negated else _FALSE
        for v, loc in zip(values, locations, strict=True):
            _check_compatible(kind, dtype, v, name, op, loc)
        if op in _ORDERING and kind == "bool":
            raise FilterError(
                f"operator {op} is not defined for bool field {name!r} at {here}; "
                f"use $eq / $ne / $in / $nin"
            )
        if op in ("$in", "$nin"):
            matched = _is_in(expr, kind, values)
            return ~matched if negated else matched
        value = values[0]
        operand = expr
        if kind == "float" or isinstance(value, float):
            # Compare in float64 explicitly: left implicit, pyarrow would cast an int64 value down
            # to a float32 column's type and fail on large integers.
            operand = expr if pa.types.is_float64(dtype) else expr.cast(pa.float64())
            value = float(value)
        compared = _COMPARE[op](operand, pa.scalar(value, _scalar_type(value)))
        # Kleene logic: null | True -> True, null & False -> False, so nulls never escape.
        return compared | expr.is_null() if negated else compared & expr.is_valid()


def _scalar(value: object, path: str) -> bool | int | float | str:
    """Validate one filter value (numpy scalars are accepted and unwrapped)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise FilterError(f"integer {value} at {path} does not fit in 64 bits")
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise FilterError(f"NaN is not a valid filter value (at {path})")
        return value
    if value is None:
        raise FilterError(
            f"null is not a valid filter value (at {path}); null cells already fail $eq and "
            f"pass $ne"
        )
    raise FilterError(
        f"expected a scalar (str, int, float or bool), got {type(value).__name__} {value!r} "
        f"at {path}"
    )


def _scalar_type(value: bool | int | float | str) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def _kind(dtype: pa.DataType, name: str, path: str) -> str:
    if pa.types.is_null(dtype):
        return "null"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "str"
    raise FilterError(
        f"field {name!r} has type {dtype}, which filters cannot compare (at {path}); "
        f"supported: strings, integers, floats, bools, and struct paths to them"
    )


def _check_compatible(
    kind: str, dtype: pa.DataType, value: object, name: str, op: str, path: str
) -> None:
    if isinstance(value, bool):
        ok = kind == "bool"
    elif isinstance(value, int | float):
        ok = kind in ("int", "float")
    else:
        ok = kind == "str"
    if not ok:
        hint = ""
        if kind == "bool" or isinstance(value, bool):
            hint = " (bools and numbers are never compared: True does not equal 1)"
        raise FilterError(
            f"{op} on {kind} field {name!r} (type {dtype}) cannot take "
            f"{type(value).__name__} value {value!r} at {path}{hint}"
        )


def _is_in(expr: pc.Expression, kind: str, values: list[Any]) -> pc.Expression:
    """Membership that never yields null (is_in gives False for a null cell)."""
    if not values:
        return _FALSE
    if kind == "str":
        return expr.isin(pa.array(values, pa.string()))
    if kind == "bool":
        return expr.isin(pa.array(values, pa.bool_()))
    if kind == "int" and all(isinstance(v, int) for v in values):
        return expr.cast(pa.int64()).isin(pa.array(values, pa.int64()))
    # Floats: is_in hashes bits, so -0.0 would not match 0.0 although they compare equal;
    # adding +0.0 turns -0.0 into +0.0 on both sides.
    as_float = pc.add(expr.cast(pa.float64()), pa.scalar(0.0))
    return as_float.isin(pa.array([float(v) + 0.0 for v in values], pa.float64()))
