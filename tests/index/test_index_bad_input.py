"""Bad input raises ValueError / TypeError naming the problem, for every index kind, and leaves
the index as it was."""

from __future__ import annotations

import numpy as np
import pytest

import index

DIM = 8
SPECS = ["flat", "hnsw", "ivf:nlist=2", "ivf:nlist=2,pq=4,nbits=4", "sq8", "binary", "pq:nlist=2"]


@pytest.fixture(params=SPECS)
def idx(request):
    """A small index of each kind (the IVFs hold 100 vectors: trained IVF-Flat, untrained PQ;
    the quantized kinds are untrained too: their validation is the base class's either way)."""
    i = index.from_spec(request.param, DIM, "l2")
    i.add(np.random.default_rng(0).normal(size=(100, DIM)), np.arange(100))
    return i


def good(n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, DIM)).astype(np.float32)


def unchanged(i: index.Index) -> None:
    assert len(i) == 100
    assert sorted(i.labels().tolist()) == list(range(100))


@pytest.mark.parametrize(
    ("vectors", "labels", "error", "match"),
    [
        (good()[:, :5], [200, 201, 202], ValueError, "vectors has dimension 5, expected 8"),
        (np.zeros((2, 3, DIM)), [200, 201], ValueError, r"vectors must be 2-D \(n, 8\)"),
        (np.zeros((0, DIM)), [], ValueError, "vectors is an empty batch"),
        (np.zeros((0, 0)), [], ValueError, "vectors is an empty batch"),
        ([[np.nan] * DIM], [200], ValueError, "vectors row 0 contains NaN or inf"),
        (np.r_[good(2), [[np.inf] * DIM]], [200, 201, 202], ValueError, "row 2 contains NaN"),
        (np.r_[good(2), [[-np.inf] * DIM]], [200, 201, 202], ValueError, "row 2 contains NaN"),
        ([["a"] * DIM], [200], TypeError, "vectors must be numeric"),
        (good(), [200, 201], ValueError, r"labels must have shape \(3,\), got \(2,\)"),
        (good(), [[200, 201, 202]], ValueError, r"labels must have shape \(3,\)"),
        (good(), [200.0, 201.0, 202.0], TypeError, "labels must be integers, got dtype float64"),
        (good(), ["a", "b", "c"], TypeError, "labels must be integers"),
        (good(), [200, -1, 202], ValueError, "labels must be non-negative, got -1"),
        (good(), [200, 201, 200], ValueError, "labels contain duplicates within one call"),
        (good(), [200, 5, 202], ValueError, "label 5 is already in the index"),
    ],
)
def test_bad_add(idx, vectors, labels, error, match):
    with pytest.raises(error, match=match):
        idx.add(vectors, labels)
    unchanged(idx)


def test_huge_finite_values_and_other_dtypes_are_accepted(idx):
    """Validation is about shape and finiteness, not dtype: float64 / int inputs are fine."""
    idx.add(np.arange(DIM, dtype=np.int32)[None, :], np.array([300], dtype=np.uint16))
    idx.add(good(1).astype(np.float64), [301])
    assert idx.contains(np.array([300, 301])).all()


@pytest.mark.parametrize(
    ("queries", "k", "error", "match"),
    [
        (good()[:, :7], 3, ValueError, "queries has dimension 7, expected 8"),
        (np.zeros((0, DIM)), 3, ValueError, "queries is an empty batch"),
        ([], 3, ValueError, "queries is an empty batch|queries has dimension 0"),
        ([[np.nan] * DIM], 3, ValueError, "queries row 0 contains NaN or inf"),
        (np.r_[good(1), [[0] * (DIM - 1) + [np.inf]]], 3, ValueError, "queries row 1 contains"),
        ([["x"] * DIM], 3, TypeError, "queries must be numeric"),
        (good(), 0, ValueError, "k must be positive, got 0"),
        (good(), -2, ValueError, "k must be positive, got -2"),
        (good(), 2.0, TypeError, "k must be an integer, got float"),
        (good(), "5", TypeError, "k must be an integer, got str"),
        (good(), None, TypeError, "k must be an integer, got NoneType"),
        (good(), True, TypeError, "k must be an integer, got bool"),
    ],
)
def test_bad_search(idx, queries, k, error, match):
    with pytest.raises(error, match=match):
        idx.search(queries, k)


@pytest.mark.parametrize(
    "allowed", [[1.5, 2.0], ["a"], [True, False], np.array([0.0]), [[1, 2], [3]]]
)
def test_allowed_must_hold_integer_labels(idx, allowed):
    with pytest.raises(TypeError, match="allowed must hold integer labels"):
        idx.search(good(), 3, allowed=allowed)


def test_allowed_accepts_any_integer_container(idx):
    want = idx.search(good(), 3, allowed=[1, 2, 3, 4])
    for allowed in ({1, 2, 3, 4}, (4, 3, 2, 1, 1), range(1, 5), np.array([[1, 2], [3, 4]], "u2")):
        for got, exp in zip(idx.search(good(), 3, allowed=allowed), want, strict=True):
            np.testing.assert_array_equal(got, exp)


def test_numpy_integer_k_is_fine(idx):
    _, found = idx.search(good(), np.int64(4))
    assert found.shape == (3, 4)


def test_unknown_search_parameter_is_named(idx):
    with pytest.raises(ValueError, match=rf"unknown {idx.kind} search parameter\(s\) \['efs'\]"):
        idx.search(good(), 3, efs=10)


def test_bad_ivf_nprobe_is_named():
    i = index.from_spec("ivf:nlist=2", DIM)
    i.add(np.random.default_rng(0).normal(size=(100, DIM)), np.arange(100))
    assert i.trained
    with pytest.raises(ValueError, match="nprobe must be >= 1, got 0"):
        i.search(good(), 3, nprobe=0)


def test_remove_tolerates_absent_labels_and_empty_input(idx):
    assert idx.remove([]) == 0
    assert idx.remove([1000, 1001]) == 0
    assert idx.remove(np.array([3, 3, 1000])) == 1
    assert len(idx) == 99


def test_search_before_anything_is_added():
    for spec in SPECS:
        i = index.from_spec(spec, DIM)
        scores, found = i.search(good(), 4)
        assert (found == -1).all() and np.isneginf(scores).all()
        assert scores.dtype == np.float32 and found.dtype == np.int64
