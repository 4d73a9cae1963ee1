"""Tests for engine.filters: where-filter compilation and evaluation over payload tables."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.filters import MAX_DEPTH, FilterError, compile_where, evaluate

NAN = float("nan")


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """Six rows with nulls in every column, a nested struct and an engine-owned column."""
    return pa.table(
        {
            "year": pa.array([2019, 2020, 2021, 2022, None, 2020], pa.int64()),
            "score": pa.array([0.5, 1.5, NAN, -0.0, 2.5, None], pa.float64()),
            "lang": pa.array(["en", "de", None, "fr", "en", "é"], pa.string()),
            "flag": pa.array([True, False, None, True, False, True], pa.bool_()),
            "meta": pa.array(
                [
                    {"n": 1, "sub": {"tag": "a"}},
                    {"n": 2, "sub": {"tag": "b"}},
                    None,
                    {"n": None, "sub": None},
                    {"n": 5, "sub": {"tag": None}},
                    {"n": 1, "sub": {"tag": "a"}},
                ]
            ),
            "empty": pa.nulls(6),
            "tags": pa.array([["x"], [], None, ["y"], ["x", "y"], []]),
            "_label": pa.array(range(6), pa.int64()),
        }
    )


def rows(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


# --- operators --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"year": 2020}, [1, 5]),
        ({"year": {"$eq": 2020}}, [1, 5]),
        ({"year": {"$ne": 2020}}, [0, 2, 3, 4]),  # the null year is "not equal"
        ({"year": {"$gt": 2020}}, [2, 3]),
        ({"year": {"$gte": 2020}}, [1, 2, 3, 5]),
        ({"year": {"$lt": 2020}}, [0]),
        ({"year": {"$lte": 2020}}, [0, 1, 5]),
        ({"year": {"$in": [2019, 2022, 1999]}}, [0, 3]),
        ({"year": {"$nin": [2019, 2022]}}, [1, 2, 4, 5]),
        ({"year": {"$in": []}}, []),
        ({"year": {"$nin": []}}, [0, 1, 2, 3, 4, 5]),
        ({"year": {"$in": (2021,)}}, [2]),  # tuples are lists
        ({"lang": "en"}, [0, 4]),
        ({"lang": {"$ne": "en"}}, [1, 2, 3, 5]),
        ({"lang": {"$gt": "en"}}, [3, 5]),  # code-point order: "é" > "fr"
        ({"lang": {"$lte": "en"}}, [0, 1, 4]),
        ({"lang": {"$in": ["de", "é"]}}, [1, 5]),
        ({"lang": {"$nin": ["de", "é"]}}, [0, 2, 3, 4]),
        ({"flag": True}, [0, 3, 5]),
        ({"flag": {"$ne": True}}, [1, 2, 4]),
        ({"flag": {"$in": [False]}}, [1, 4]),
        ({"flag": {"$nin": [False]}}, [0, 2, 3, 5]),
        ({"score": 0.5}, [0]),
        ({"score": {"$gt": 1}}, [1, 4]),  # NaN compares false, null compares false
        ({"score": {"$ne": 0.5}}, [1, 2, 3, 4, 5]),  # NaN and null are "not equal"
        ({"score": {"$lte": 0}}, [3]),
    ],
)
def test_operator(table: pa.Table, where: dict[str, Any], expected: list[int]) -> None:
    assert rows(evaluate(where, table)) == expected


def test_int_column_with_float_values(table: pa.Table) -> None:
    assert rows(evaluate({"year": 2020.0}, table)) == [1, 5]
    assert rows(evaluate({"year": {"$lt": 2019.5}}, table)) == [0]
    assert rows(evaluate({"year": {"$in": [2020.0, 2021.5, 2022]}}, table)) == [1, 3, 5]
    assert rows(evaluate({"score": {"$in": [1, 2.5]}}, table)) == [4]


def test_negative_zero_matches_zero_in_every_operator(table: pa.Table) -> None:
    # is_in hashes bit patterns, so without normalisation -0.0 would miss 0.0 in $in only.
    assert rows(evaluate({"score": 0.0}, table)) == [3]
    assert rows(evaluate({"score": {"$in": [0.0]}}, table)) == [3]
    assert rows(evaluate({"score": {"$in": [0]}}, table)) == [3]
    assert rows(evaluate({"score": {"$nin": [0.0]}}, table)) == [0, 1, 2, 4, 5]


def test_numpy_scalars_are_accepted(table: pa.Table) -> None:
    assert rows(evaluate({"year": np.int64(2020)}, table)) == [1, 5]
    assert rows(evaluate({"score": {"$gt": np.float32(1.0)}}, table)) == [1, 4]
    assert rows(evaluate({"flag": np.bool_(False)}, table)) == [1, 4]
    assert rows(evaluate({"year": {"$in": [np.int32(2019)]}}, table)) == [0]


# --- combinations -----------------------------------------------------------------------------


def test_several_operators_on_one_field_are_anded(table: pa.Table) -> None:
    assert rows(evaluate({"year": {"$gte": 2020, "$lt": 2022}}, table)) == [1, 2, 5]
    assert rows(evaluate({"year": {"$gte": 2020, "$ne": 2021}}, table)) == [1, 3, 5]


def test_several_fields_are_anded(table: pa.Table) -> None:
    assert rows(evaluate({"year": 2020, "lang": "de"}, table)) == [1]
    assert rows(evaluate({"year": {"$gte": 2019}, "flag": True}, table)) == [0, 3, 5]


def test_and_or(table: pa.Table) -> None:
    assert rows(evaluate({"$or": [{"year": 2019}, {"lang": "fr"}]}, table)) == [0, 3]
    assert rows(evaluate({"$and": [{"year": {"$gte": 2020}}, {"flag": True}]}, table)) == [3, 5]
    assert rows(evaluate({"$or": [{"year": 2019}]}, table)) == [0]


def test_nesting(table: pa.Table) -> None:
    where = {
        "$or": [
            {"$and": [{"year": 2020}, {"lang": {"$in": ["de"]}}]},
            {"$and": [{"flag": True}, {"$or": [{"lang": "fr"}, {"score": {"$gt": 100}}]}]},
        ],
        "year": {"$ne": 2019},
    }
    assert rows(evaluate(where, table)) == [1, 3]


def test_logical_operators_mix_with_fields(table: pa.Table) -> None:
    where = {"flag": True, "$or": [{"lang": "en"}, {"lang": "é"}]}
    assert rows(evaluate(where, table)) == [0, 5]


def test_empty_subfilter_matches_everything(table: pa.Table) -> None:
    assert rows(evaluate({"$or": [{}, {"year": 2019}]}, table)) == [0, 1, 2, 3, 4, 5]
    assert rows(evaluate({"$and": [{}, {"year": 2019}]}, table)) == [0]


# --- missing fields, nulls, nested paths ------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "matches_all"),
    [
        ({"nope": 1}, False),
        ({"nope": {"$eq": "x"}}, False),
        ({"nope": {"$gt": 1}}, False),
        ({"nope": {"$lte": 1.5}}, False),
        ({"nope": {"$in": [1, "a", True]}}, False),
        ({"nope": {"$ne": 1}}, True),
        ({"nope": {"$nin": [1, "a"]}}, True),
        ({"nope": {"$nin": []}}, True),
        ({"meta.nope": 1}, False),
        ({"meta.nope": {"$ne": 1}}, True),
        ({"year.month": 1}, False),  # a path into a scalar column does not exist
        ({"year.month": {"$ne": 1}}, True),
        ({"empty": 1}, False),  # an all-null column behaves like a missing field
        ({"empty": {"$in": ["a"]}}, False),
        ({"empty": {"$ne": True}}, True),
    ],
)
def test_missing_fields(table: pa.Table, where: dict[str, Any], matches_all: bool) -> None:
    assert evaluate(where, table).tolist() == [matches_all] * len(table)


def test_missing_field_combined_with_present_field(table: pa.Table) -> None:
    assert rows(evaluate({"nope": {"$ne": 3}, "year": 2020}, table)) == [1, 5]
    assert rows(evaluate({"$or": [{"nope": 3}, {"year": 2020}]}, table)) == [1, 5]


def test_nulls_never_match_comparisons(table: pa.Table) -> None:
    null_year = 4
    for op in ("$eq", "$gt", "$gte", "$lt", "$lte"):
        for value in (2019, 2030, 1900):
            assert null_year not in rows(evaluate({"year": {op: value}}, table)), (op, value)
    assert null_year not in rows(evaluate({"year": {"$in": [2019, 2020, 2021, 2022]}}, table))


def test_nulls_are_not_equal(table: pa.Table) -> None:
    assert 4 in rows(evaluate({"year": {"$ne": 2019}}, table))
    assert 4 in rows(evaluate({"year": {"$nin": [2019, 2020]}}, table))
    assert 2 in rows(evaluate({"lang": {"$ne": "en"}}, table))
    assert 2 in rows(evaluate({"flag": {"$ne": False}}, table))


def test_mask_has_no_nulls_even_when_negated_under_or(table: pa.Table) -> None:
    mask = evaluate({"$or": [{"year": {"$ne": 2020}}, {"lang": {"$nin": ["en"]}}]}, table)
    assert mask.dtype == np.bool_
    assert rows(mask) == [0, 1, 2, 3, 4, 5]


def test_dotted_paths_address_struct_fields(table: pa.Table) -> None:
    assert rows(evaluate({"meta.n": 1}, table)) == [0, 5]
    assert rows(evaluate({"meta.n": {"$gt": 1}}, table)) == [1, 4]
    assert rows(evaluate({"meta.n": {"$ne": 1}}, table)) == [1, 2, 3, 4]  # null struct, null n
    assert rows(evaluate({"meta.sub.tag": "a"}, table)) == [0, 5]
    assert rows(evaluate({"meta.sub.tag": {"$in": ["b"]}}, table)) == [1]
    assert rows(evaluate({"meta.sub.tag": {"$nin": ["a"]}}, table)) == [1, 2, 3, 4]


def test_underscore_inside_a_struct_is_allowed() -> None:
    t = pa.table({"doc": pa.array([{"_v": 1}, {"_v": 2}])})
    assert rows(evaluate({"doc._v": 2}, t)) == [1]


# --- bool / int never mix ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        {"year": True},
        {"year": {"$ne": False}},
        {"year": {"$in": [2020, True]}},
        {"score": {"$gt": False}},
        {"flag": 1},
        {"flag": {"$eq": 0}},
        {"flag": {"$in": [True, 1]}},
        {"flag": {"$nin": [0.0]}},
        {"meta.n": True},
    ],
)
def test_bool_and_number_do_not_mix(table: pa.Table, where: dict[str, Any]) -> None:
    with pytest.raises(FilterError, match=r"True does not equal 1"):
        evaluate(where, table)


@pytest.mark.parametrize("op", ["$gt", "$gte", "$lt", "$lte"])
def test_ordering_on_bool_is_rejected(table: pa.Table, op: str) -> None:
    with pytest.raises(FilterError, match=rf"operator \{op} is not defined for bool field 'flag'"):
        evaluate({"flag": {op: True}}, table)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "match"),
    [
        # type mismatches
        ({"lang": 1}, r"str field 'lang'.*int value 1"),
        ({"lang": {"$gt": 1.5}}, r"\$gt on str field 'lang'.*float value 1.5"),
        ({"year": "2020"}, r"int field 'year'.*str value '2020'"),
        ({"score": {"$in": [1.0, "x"]}}, r"float field 'score'.*'x'.*\['\$in'\]\[1\]"),
        ({"meta.sub.tag": 3}, r"str field 'meta.sub.tag'.*int value 3"),
        # unknown operators
        ({"lang": {"$regex": "^e"}}, r"unknown operator '\$regex' for field 'lang'"),
        ({"lang": {"$eq": "en", "$like": "e"}}, r"unknown operator '\$like'"),
        ({"year": {"$and": [{}]}}, r"unknown operator '\$and' for field 'year'"),
        ({"$not": {"year": 1}}, r"unknown logical operator '\$not'"),
        ({"$gt": 1}, r"unknown logical operator '\$gt'.*inside a field"),
        ({"meta": {"n": 1}}, r"unknown operator 'n' for field 'meta'.*dotted path.*'meta.n'"),
        ({"year": {1: 2}}, r"unknown operator 1 for field 'year'"),
        # $in / $nin operands
        ({"year": {"$in": 2020}}, r"\$in expects a list of values for field 'year', got int"),
        ({"lang": {"$nin": "en"}}, r"\$nin expects a list.*got str 'en'"),
        ({"year": {"$in": {2020}}}, r"\$in expects a list.*got set"),
        ({"year": {"$in": [[2020]]}}, r"expected a scalar.*got list \[2020\]"),
        # logical operands
        ({"$and": []}, r"\$and expects a non-empty list"),
        ({"$or": []}, r"\$or expects a non-empty list"),
        ({"$or": {"year": 1}}, r"\$or expects a list of filters, got dict"),
        ({"$and": [{"year": 1}, 3]}, r"filter must be a dict, got int 3 at where\['\$and'\]\[1\]"),
        ({"$or": [[{"year": 1}]]}, r"filter must be a dict, got list"),
        # keys
        ({1: 2}, r"filter keys must be strings, got int 1"),
        ({("a",): 2}, r"filter keys must be strings, got tuple"),
        ({"_label": 1}, r"field '_label' is reserved"),
        ({"$or": [{"_label": {"$ne": 1}}]}, r"field '_label' is reserved"),
        ({"_nonexistent": 1}, r"field '_nonexistent' is reserved"),
        ({"meta..n": 1}, r"field name 'meta..n' has an empty path segment"),
        ({"": 1}, r"field name '' has an empty path segment"),
        ({"year": {}}, r"empty operator dict for field 'year'"),
        # values
        ({"year": [2020]}, r"expected a scalar.*got list \[2020\] at where\['year'\]"),
        ({"year": {"$gt": {"a": 1}}}, r"expected a scalar.*got dict"),
        ({"year": None}, r"null is not a valid filter value"),
        ({"year": {"$ne": None}}, r"null is not a valid filter value"),
        ({"lang": {"$in": ["en", None]}}, r"null is not a valid filter value"),
        ({"score": NAN}, r"NaN is not a valid filter value"),
        ({"year": 2**63}, r"integer 9223372036854775808 .* does not fit in 64 bits"),
        ({"year": b"2020"}, r"expected a scalar.*got bytes"),
        ({"nope": [1]}, r"expected a scalar.*got list"),  # checked even for missing fields
        ({"nope": {"$regex": "x"}}, r"unknown operator '\$regex' for field 'nope'"),
        # unsupported column types
        ({"tags": "x"}, r"field 'tags' has type list<item: string>, which filters cannot compare"),
        ({"meta": {"$ne": 1}}, r"field 'meta' has type struct"),
    ],
)
def test_malformed_filter_raises(table: pa.Table, where: Any, match: str) -> None:
    with pytest.raises(FilterError, match=match):
        evaluate(where, table)
    with pytest.raises(FilterError, match=match):
        compile_where(where, table.schema)


@pytest.mark.parametrize("where", [[{"year": 1}], "year = 1", 3, ({"year": 1},)])
def test_non_dict_filter_raises(table: pa.Table, where: Any) -> None:
    with pytest.raises(FilterError, match=r"a filter must be a dict, got \w+ .* at where$"):
        evaluate(where, table)


def test_errors_are_value_errors() -> None:
    assert issubclass(FilterError, ValueError)


def test_errors_raised_even_on_empty_table(table: pa.Table) -> None:
    with pytest.raises(FilterError, match="unknown operator"):
        evaluate({"year": {"$regex": "x"}}, table.slice(0, 0))


def test_depth_is_bounded(table: pa.Table) -> None:
    where: dict[str, Any] = {"year": 2019}
    for _ in range(MAX_DEPTH - 1):
        where = {"$and": [where]}
    assert rows(evaluate(where, table)) == [0]
    for _ in range(10):
        where = {"$or": [where]}
    with pytest.raises(FilterError, match=f"nested deeper than {MAX_DEPTH} levels"):
        evaluate(where, table)


def test_error_location_names_the_path(table: pa.Table) -> None:
    where = {"$or": [{"year": 1}, {"$and": [{"lang": {"$in": ["a", 2]}}]}]}
    with pytest.raises(FilterError) as info:
        evaluate(where, table)
    assert "where['$or'][1]['$and'][0]['lang']['$in'][1]" in str(info.value)


# --- evaluate / compile_where contract ---------------------------------------------------------


@pytest.mark.parametrize("where", [None, {}])
def test_no_filter_matches_everything(table: pa.Table, where: dict[str, Any] | None) -> None:
    mask = evaluate(where, table)
    assert mask.dtype == np.bool_
    assert mask.shape == (len(table),)
    assert mask.all()


@pytest.mark.parametrize("where", [None, {}, {"year": 2020}, {"nope": {"$ne": 1}}])
def test_empty_table_gives_empty_mask(table: pa.Table, where: dict[str, Any] | None) -> None:
    mask = evaluate(where, table.slice(0, 0))
    assert mask.dtype == np.bool_
    assert mask.shape == (0,)


def test_table_without_columns() -> None:
    t = pa.table({"_label": [1, 2, 3]}).drop_columns(["_label"])
    assert t.num_rows == 3
    assert evaluate({"x": 1}, t).tolist() == [False] * 3
    assert evaluate({"x": {"$ne": 1}}, t).tolist() == [True] * 3
    assert evaluate({"x": 1, "y": {"$ne": 1}}, t).tolist() == [False] * 3


def test_compile_where_returns_expression_usable_by_table_filter(table: pa.Table) -> None:
    expr = compile_where({"year": {"$gte": 2021}}, table.schema)
    assert isinstance(expr, pc.Expression)
    assert table.filter(expr).column("_label").to_pylist() == [2, 3]
    assert compile_where({}, table.schema).equals(pc.scalar(True))


def test_multi_chunk_table_keeps_row_order() -> None:
    t = pa.concat_tables([pa.table({"x": [i, -i]}) for i in range(50)])
    assert t.column("x").num_chunks == 50
    mask = evaluate({"x": {"$gt": 10}}, t)
    assert rows(mask) == [2 * i for i in range(11, 50)]


def test_columns_not_referenced_are_never_read() -> None:
    # string_view has no filter kernel in pyarrow; it must not matter unless referenced.
    t = pa.table({"x": [1, 2, 3], "sv": pa.array(["a", "b", None], pa.string_view())})
    assert rows(evaluate({"x": {"$gte": 2}}, t)) == [1, 2]
    assert rows(evaluate({"sv": {"$lt": "b"}}, t)) == [0]
    assert rows(evaluate({"sv": {"$nin": ["a"]}}, t)) == [1, 2]


@pytest.mark.parametrize(
    "column",
    [
        pa.array(["a", "b", None, "a"]).dictionary_encode(),
        pa.array(["a", "b", None, "a"], pa.large_string()),
    ],
)
def test_other_string_layouts(column: pa.Array) -> None:
    t = pa.table({"s": column})
    assert rows(evaluate({"s": "a"}, t)) == [0, 3]
    assert rows(evaluate({"s": {"$ne": "a"}}, t)) == [1, 2]
    assert rows(evaluate({"s": {"$in": ["b"]}}, t)) == [1]
    assert rows(evaluate({"s": {"$gt": "a"}}, t)) == [1]


@pytest.mark.parametrize("dtype", [pa.int8(), pa.int32(), pa.uint16(), pa.float32()])
def test_narrow_numeric_columns_accept_wide_values(dtype: pa.DataType) -> None:
    t = pa.table({"n": pa.array([1, 2, None, 100], dtype)})
    assert rows(evaluate({"n": {"$in": [2, 2**40]}}, t)) == [1]
    assert rows(evaluate({"n": {"$lt": 2**40}}, t)) == [0, 1, 3]
    assert rows(evaluate({"n": {"$gt": -(2**40)}}, t)) == [0, 1, 3]
    assert rows(evaluate({"n": 2**40}, t)) == []


# --- property test against a pure-Python evaluator ---------------------------------------------

_PY_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def _py_op(op: str, x: Any, arg: Any) -> bool:
    if op == "$ne":
        return not _py_op("$eq", x, arg)
    if op == "$nin":
        return not _py_op("$in", x, arg)
    if x is None:
        return False
    if op == "$eq":
        return bool(x == arg)
    if op == "$in":
        return any(x == a for a in arg)
    return _PY_COMPARE[op](x, arg)


def _py_match(where: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    for key, spec in where.items():
        if key == "$and":
            ok = all(_py_match(sub, row) for sub in spec)
        elif key == "$or":
            ok = any(_py_match(sub, row) for sub in spec)
        else:
            ops = spec if isinstance(spec, dict) else {"$eq": spec}
            ok = all(_py_op(op, row.get(key), arg) for op, arg in ops.items())
        if not ok:
            return False
    return True


# Small domains so that filter values often coincide with cell values (the boundary cases).
_INTS = st.integers(-2, 2)
_FLOATS = st.sampled_from([-0.0, 0.0, 0.5, 1.0, 2.0, -1.5, math.inf, -math.inf])
_STRS = st.sampled_from(["", "a", "ab", "b", "B", "é", "z", "\U0001f600"])
_NUMBERS = st.one_of(_INTS, _FLOATS)
_VALUES = {"i": _NUMBERS, "f": _NUMBERS, "s": _STRS, "missing": st.one_of(_NUMBERS, _STRS)}
_FIELDS = ["i", "i", "f", "f", "s", "s", "missing"]
_LISTS = {f: st.lists(v, min_size=1, max_size=4) | st.just([]) for f, v in _VALUES.items()}
_OPS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"]


@st.composite
def _conditions(draw: st.DrawFn, op: str | None = None) -> dict[str, Any]:
    """One field's condition: shorthand equality, or a dict of one or two operators."""
    field = draw(st.sampled_from(_FIELDS))
    values = _VALUES[field]
    if op is None:
        n_ops = draw(st.sampled_from([0, 1, 1, 1, 2]))
        if n_ops == 0:
            return {field: draw(values)}
        ops = draw(st.lists(st.sampled_from(_OPS), min_size=n_ops, max_size=n_ops, unique=True))
    else:
        ops = [op]
    spec = {o: draw(_LISTS[field]) if o in ("$in", "$nin") else draw(values) for o in ops}
    return {field: spec}


_FILTERS = st.recursive(
    _conditions(),
    lambda children: st.one_of(
        st.builds(lambda subs: {"$and": subs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda subs: {"$or": subs}, st.lists(children, min_size=1, max_size=3)),
        # several keys at one level: merge distinct fields / logical operators
        st.lists(children, min_size=2, max_size=3).map(
            lambda subs: {k: v for sub in subs for k, v in sub.items()}
        ),
    ),
    max_leaves=6,
)

_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "i": st.none() | _INTS,
            "f": st.none() | _FLOATS | st.just(NAN),
            "s": st.none() | _STRS,
        }
    ),
    min_size=3,
    max_size=12,
)


def _check(table_rows: list[dict[str, Any]], where: dict[str, Any], split: int) -> None:
    schema = pa.schema([("i", pa.int64()), ("f", pa.float64()), ("s", pa.string())])
    # Two chunks: the mask must come back in row order whatever the chunking.
    head, tail = table_rows[:split], table_rows[split:]
    t = pa.concat_tables(
        [pa.Table.from_pylist(head, schema=schema), pa.Table.from_pylist(tail, schema=schema)]
    )
    expected = [_py_match(where, row) for row in table_rows]
    assert evaluate(where, t).tolist() == expected


@pytest.mark.parametrize("op", _OPS)
@settings(max_examples=60, derandomize=True, deadline=None)
@given(data=st.data(), table_rows=_ROWS, split=st.integers(0, 12))
def test_each_operator_matches_python_evaluator(
    op: str, data: st.DataObject, table_rows: list[dict[str, Any]], split: int
) -> None:
    _check(table_rows, data.draw(_conditions(op)), split)


@settings(max_examples=150, derandomize=True, deadline=None)
@given(table_rows=_ROWS, where=_FILTERS, split=st.integers(0, 12))
def test_nested_filter_matches_python_evaluator(
    table_rows: list[dict[str, Any]], where: dict[str, Any], split: int
) -> None:
    _check(table_rows, where, split)
