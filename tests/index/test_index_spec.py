"""Spec strings: canonical forms that round-trip, and errors that name what is wrong."""

from __future__ import annotations

import pytest

import index
from index import from_spec, parse_spec

SPECS = [
    "flat",
    "hnsw",
    "hnsw:M=32,ef_construction=200,ef=128",
    "hnsw:ef=10",
    "ivf",
    "ivf:nlist=1024,nprobe=16",
    "ivf:nlist=1024,pq=32",
    "ivf:pq=16",
    "ivf:nbits=4,pq=8,nprobe=3,nlist=7",
    " HNSW : M = 8 , ef = 20 ",
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_spec_round_trips(spec, metric):
    idx = from_spec(spec, dim=64, metric=metric)
    again = from_spec(idx.spec, dim=64, metric=metric)
    assert again.spec == idx.spec
    assert type(again) is type(idx) and again.params == idx.params
    assert idx.metric.value == metric and idx.dim == 64
    # What the spec names is what the index holds; the rest are the defaults.
    kind, given = parse_spec(spec)
    assert idx.kind == kind
    assert idx.params == {**type(idx).config_keys, **given}
    assert idx.get_config() == {"kind": kind, "dim": 64, "metric": metric, **idx.params}


def test_canonical_forms():
    assert from_spec("flat", 8).spec == "flat"
    assert from_spec("hnsw:ef=128,M=32", 8).spec == "hnsw:M=32,ef_construction=200,ef=128"
    assert from_spec("ivf:pq=16", 64).spec == "ivf:nlist=256,nprobe=16,pq=16,nbits=8"
    assert from_spec("hnsw", 8).spec == index.HNSWIndex(8).spec
    assert "hnsw:M=16" in repr(from_spec("hnsw", 8))


def test_spec_survives_save_and_load(tmp_path):
    idx = from_spec("ivf:nlist=3,nprobe=2,pq=4,nbits=5", 8, "ip")
    idx.save(tmp_path)
    loaded = index.load(tmp_path)
    assert (loaded.spec, loaded.metric, loaded.dim) == (idx.spec, idx.metric, 8)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("annoy", r"unknown index kind 'annoy'; known: flat, hnsw, ivf"),
        ("annoy:n_trees=10", r"unknown index kind 'annoy'"),
        ("hnsw:ef_search=10", r"unknown hnsw parameter\(s\) \['ef_search'\]; known: M, "),
        ("hnsw:m=16", r"unknown hnsw parameter\(s\) \['m'\]"),  # keys are case-sensitive
        ("flat:M=4", r"unknown flat parameter\(s\) \['M'\]; known: none"),
        ("ivf:nlist=4,probe=2", r"unknown ivf parameter\(s\) \['probe'\]"),
        ("hnsw:M", r"malformed index spec parameter 'M' in 'hnsw:M'; expected key=value"),
        ("hnsw:M=", r"malformed index spec parameter 'M='"),
        ("hnsw:=16", r"malformed index spec parameter '=16'"),
        ("ivf:nlist=4;nprobe=2", r"unknown ivf parameter|must be a non-negative int"),
        ("hnsw:M=8,M=16", r"parameter 'M' given twice"),
        ("hnsw:M=abc", r"hnsw parameter M must be a non-negative int, got 'abc'"),
        ("hnsw:M=1.5", r"hnsw parameter M must be a non-negative int, got 1.5"),
        ("hnsw:M=-4", r"hnsw parameter M must be a non-negative int, got -4"),
        ("hnsw:M=1", r"hnsw parameter M must be >= 2, got 1"),
        ("ivf:nlist=0", r"nlist and nprobe must be >= 1, got 0, 16"),
        ("ivf:pq=7", r"pq=7 must divide dim=64"),
        ("ivf:pq=8,nbits=17", r"nbits must be in 1\.\.16, got 17"),
        ("", r"index spec must be a non-empty string, got ''"),
        ("   ", r"index spec must be a non-empty string"),
    ],
)
def test_bad_specs_raise_value_error_naming_the_problem(spec, match):
    with pytest.raises(ValueError, match=match):
        from_spec(spec, dim=64)


def test_non_string_spec_is_refused():
    with pytest.raises(ValueError, match="non-empty string, got None"):
        parse_spec(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("dim", [0, -3, 2.5, True, "64", None])
def test_bad_dim_is_refused(dim):
    with pytest.raises(ValueError, match=f"dim must be a positive integer, got {dim!r}"):
        from_spec("flat", dim=dim)  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", ["dot", "euclidean", "", None])
def test_unknown_metric_is_refused(metric):
    with pytest.raises(ValueError, match=f"unknown metric {metric!r}; expected one of cosine, ip"):
        from_spec("hnsw", dim=8, metric=metric)  # type: ignore[arg-type]


def test_metric_accepts_names_and_members():
    assert from_spec("flat", 4, "L2").metric is index.Metric.L2
    assert from_spec("flat", 4, index.Metric.IP).metric is index.Metric.IP
