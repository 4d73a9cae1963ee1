"""Chamfer / MaxSim kernels (index.scoring) against a straightforward numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from index import scoring
from index.tokens import ball_carve, check_token_sets


def pack(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sets], out=offsets[1:])
    return np.concatenate(sets).astype(np.float32), offsets


def reference(q_sets: list[np.ndarray], d_sets: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(q_sets), len(d_sets)))
    for i, q in enumerate(q_sets):
        for j, d in enumerate(d_sets):
            out[i, j] = (q.astype(np.float64) @ d.astype(np.float64).T).max(axis=1).sum()
    return out


@pytest.fixture(scope="module")
def awkward() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Documents of 1 token, queries longer than any document, uneven lengths."""
    rng = np.random.default_rng(7)
    d = 12
    doc_lens = [1, 1, 5, 2, 9, 1, 3, 4, 1, 6, 2, 1, 7]
    q_lens = [11, 1, 3, 15, 2]
    docs = [rng.standard_normal((n, d)).astype(np.float32) for n in doc_lens]
    queries = [rng.standard_normal((n, d)).astype(np.float32) for n in q_lens]
    return queries, docs


@pytest.mark.parametrize("query_chunk", [None, 1, 3, 7])
@pytest.mark.parametrize("doc_chunk", [None, 1, 3, 7])
def test_chamfer_matrix_matches_reference(awkward, query_chunk, doc_chunk):
    queries, docs = awkward
    qt, qo = pack(queries)
    dt, do = pack(docs)
    got = scoring.chamfer_matrix(qt, qo, dt, do, query_chunk=query_chunk, doc_chunk=doc_chunk)
    np.testing.assert_allclose(got, reference(queries, docs), rtol=1e-5, atol=1e-4)


def test_chamfer_matrix_tiny_block_budget(awkward):
    """A block budget smaller than one document still makes progress, one document at a time."""
    queries, docs = awkward
    qt, qo = pack(queries)
    dt, do = pack(docs)
    got = scoring.chamfer_matrix(qt, qo, dt, do, block_bytes=1)
    np.testing.assert_allclose(got, reference(queries, docs), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("chunk", [None, 1, 3, 7])
def test_chamfer_topk_matches_reference(awkward, chunk):
    queries, docs = awkward
    qt, qo = pack(queries)
    dt, do = pack(docs)
    ref = reference(queries, docs)
    valid = np.ones(len(docs), dtype=bool)
    valid[[0, 4, 9]] = False
    masked = np.where(valid[None, :], ref, -np.inf)
    for k in (1, 4, len(docs), len(docs) + 3):
        scores, rows = scoring.chamfer_topk(
            qt, qo, dt, do, k, valid=valid, query_chunk=chunk, doc_chunk=chunk
        )
        assert scores.shape == rows.shape == (len(queries), k)
        n_valid = int(valid.sum())
        assert (rows[:, n_valid:] == -1).all() and np.isneginf(scores[:, n_valid:]).all()
        top = rows[:, : min(k, n_valid)]
        assert valid[top].all()
        want = -np.sort(-masked, axis=1)[:, : min(k, n_valid)]
        np.testing.assert_allclose(scores[:, : min(k, n_valid)], want, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(
            np.take_along_axis(ref, top, 1), scores[:, : top.shape[1]], rtol=1e-5, atol=1e-4
        )


@pytest.mark.parametrize("query_chunk", [None, 1, 3, 7])
def test_chamfer_pairs_matches_reference(awkward, query_chunk):
    queries, docs = awkward
    qt, qo = pack(queries)
    dt, do = pack(docs)
    ref = reference(queries, docs)
    rng = np.random.default_rng(3)
    rows = rng.integers(-1, len(docs), (len(queries), 9))
    rows[1] = -1  # a query without any candidate
    rows[2, :] = 0  # the same single-token document repeated
    got = scoring.chamfer_pairs(qt, qo, dt, do, rows, query_chunk=query_chunk)
    want = np.where(rows >= 0, np.take_along_axis(ref, np.maximum(rows, 0), 1), -np.inf)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_float16_tokens_score_as_their_float32_values(awkward):
    """Stored float16 tokens are scored exactly as their (float32) values."""
    queries, docs = awkward
    qt, qo = pack(queries)
    dt, do = pack(docs)
    dt16 = dt.astype(np.float16)
    rounded = [dt16[do[i] : do[i + 1]].astype(np.float32) for i in range(len(docs))]
    got = scoring.chamfer_matrix(qt, qo, dt16, do)
    np.testing.assert_allclose(got, reference(queries, rounded), rtol=1e-5, atol=1e-4)
    rows = np.tile(np.arange(len(docs)), (len(queries), 1))
    np.testing.assert_allclose(scoring.chamfer_pairs(qt, qo, dt16, do, rows), got, atol=1e-4)


def test_ragged_arange():
    got = scoring.ragged_arange(np.array([5, 0, 9]), np.array([2, 0, 3]))
    assert got.tolist() == [5, 6, 9, 10, 11]
    assert scoring.ragged_arange(np.array([1]), np.array([0])).size == 0


def naive_carve(x: np.ndarray, tau: float) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    free = list(range(len(x)))
    out = []
    while free:
        c = free[0]
        members = [i for i in free if i == c or unit[i] @ unit[c] >= tau]
        out.append(x[members].sum(0))
        free = [i for i in free if i not in members]
    return np.array(out)


def test_ball_carving_matches_greedy_reference():
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((4, 16))
    sets = []
    for n in (1, 6, 13, 3):
        pick = centres[rng.integers(0, 4, n)]
        sets.append((pick + 0.3 * rng.standard_normal((n, 16))).astype(np.float32))
    tokens, offsets = pack(sets)
    for tau in (0.5, 0.7, 0.95):
        carved, c_off = ball_carve(tokens, offsets, tau)
        for i, s in enumerate(sets):
            np.testing.assert_allclose(carved[c_off[i] : c_off[i + 1]], naive_carve(s, tau), 1e-5)
    # Carving never adds tokens, and a threshold above 1 keeps every token as it is.
    same, s_off = ball_carve(tokens, offsets, 1.01)
    np.testing.assert_array_equal(s_off, offsets)
    np.testing.assert_allclose(same, tokens)


def test_check_token_sets_names_the_problem():
    ok = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="empty batch"):
        check_token_sets([], 4)
    with pytest.raises(ValueError, match=r"documents\[1\] has no tokens"):
        check_token_sets([ok, np.zeros((0, 4))], 4)
    with pytest.raises(ValueError, match=r"documents\[0\] has dimension 3, expected 4"):
        check_token_sets([np.ones((2, 3))], 4)
    bad = ok.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"queries\[1\] token 1 contains NaN"):
        check_token_sets([ok, bad], 4, "queries")
    with pytest.raises(ValueError, match="wrap a single token set in a list"):
        check_token_sets(ok, 4)
    with pytest.raises(TypeError):
        check_token_sets("abc", 4)
    tokens, offsets = check_token_sets(np.ones((3, 2, 4)), 4)
    assert tokens.shape == (6, 4) and offsets.tolist() == [0, 2, 4, 6]
