"""Token pruning (``index.tokenprune``): kept counts, ratio 0, determinism, what the centroids
keep, and the ``prune=`` spec parameter of the multi-vector kinds."""

from __future__ import annotations

import math

import numpy as np
import pytest

import index as ix
from index.multivector import MultiVectorIndex
from index.tokenprune import check_ratio, cluster_tokens, kept_counts, prune_token_sets
from index.tokens import check_token_sets

DIM = 16


def topical_sets(n: int, seed: int) -> list[np.ndarray]:
    """Documents of 1-40 tokens drawn around 1-5 of 12 topics (repeated words, near-duplicates)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, DIM))
    out = []
    for _ in range(n):
        topics = rng.choice(12, size=int(rng.integers(1, 6)), replace=False)
        pick = centres[topics[rng.integers(0, len(topics), size=int(rng.integers(1, 41)))]]
        out.append((pick + 0.15 * rng.standard_normal(pick.shape)).astype(np.float32))
    return out


def packed(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return check_token_sets(sets, DIM)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.4, 0.5, 0.9])
def test_kept_count_is_what_the_ratio_says(ratio):
    tokens, offsets = packed(topical_sets(60, seed=1))
    out, out_off = prune_token_sets(tokens, offsets, ratio)
    n = np.diff(offsets)
    want = [max(1, math.ceil((1 - ratio) * int(k))) for k in n]
    assert np.diff(out_off).tolist() == want
    assert out.shape == (int(out_off[-1]), DIM) and out.dtype == np.float32
    assert kept_counts(n, ratio).tolist() == want
    assert out_off[0] == 0


def test_ratio_zero_is_no_pruning():
    tokens, offsets = packed(topical_sets(20, seed=2))
    out, out_off = prune_token_sets(tokens, offsets, 0.0)
    assert out is tokens and out_off is offsets


def test_sets_that_keep_every_token_are_unchanged_bit_for_bit():
    sets = [np.full((1, DIM), 3.0, np.float32), np.arange(2 * DIM, dtype=np.float32).reshape(2, -1)]
    tokens, offsets = packed(sets)
    out, out_off = prune_token_sets(tokens, offsets, 0.3)  # ceil(0.7) = 1, ceil(1.4) = 2
    assert out.tobytes() == tokens.tobytes() and out_off.tolist() == offsets.tolist()


def test_deterministic_and_independent_of_the_batch():
    sets = topical_sets(40, seed=3)
    tokens, offsets = packed(sets)
    a = prune_token_sets(tokens, offsets, 0.5)
    b = prune_token_sets(tokens.copy(), offsets.copy(), 0.5)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tolist() == b[1].tolist()
    # Each document is pruned on its own: alone or in a batch, the same bytes.
    for i in (0, 7, 39):
        alone = prune_token_sets(*packed([sets[i]]), 0.5)[0]
        assert alone.tobytes() == a[0][a[1][i] : a[1][i + 1]].tobytes()


def test_cosine_centroids_are_unit_and_cover_every_token():
    """Documents of at most 5 topics pruned to >= 5 vectors: every token keeps a close
    representative (its MaxSim against the pruned set barely drops)."""
    sets = [s for s in topical_sets(80, seed=4) if s.shape[0] >= 10]
    tokens, offsets = packed(sets)
    out, out_off = prune_token_sets(tokens, offsets, 0.5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    worst = 1.0
    for i, s in enumerate(sets):
        q = s / np.linalg.norm(s, axis=1, keepdims=True)
        best = (q @ out[out_off[i] : out_off[i + 1]].T).max(axis=1)
        worst = min(worst, float(best.min()))
    assert worst >= 0.9  # gives 0.976 on seed 4


def test_ip_centroids_are_means():
    x = np.array([[2.0, 0.0], [4.0, 0.0], [0.0, 10.0]], dtype=np.float32)
    c = cluster_tokens(x, 2, cosine=False)
    assert sorted(map(tuple, c.tolist())) == [(0.0, 10.0), (3.0, 0.0)]
    out, _ = ix.from_spec("chamfer:prune=0.5", 2, "ip").prune(x, np.array([0, 3]))
    assert sorted(map(tuple, out.tolist())) == [(0.0, 10.0), (3.0, 0.0)]


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), "abc", None, True])
def test_bad_ratio_raises_naming_the_parameter(bad):
    with pytest.raises(ValueError, match="prune"):
        check_ratio(bad)
    with pytest.raises(ValueError, match="prune"):
        ix.ChamferIndex(DIM, prune=bad)


@pytest.mark.parametrize("bad", ["1", "1.2", "-0.5", "x"])
def test_bad_ratio_in_a_spec(bad):
    with pytest.raises(ValueError, match="chamfer parameter prune"):
        ix.from_spec(f"chamfer:prune={bad}", DIM, "cosine")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "sq8", "pq"])
def test_single_vector_kinds_refuse_pruning(kind):
    with pytest.raises(ValueError, match="prune"):
        ix.from_spec(f"{kind}:prune=0.3", DIM, "cosine")


def test_spec_round_trips_and_leaves_the_default_out():
    assert "tokens" == list(MultiVectorIndex.config_keys)[-1]
    assert ix.from_spec("chamfer:prune=0", DIM, "cosine").spec == "chamfer"
    idx = ix.from_spec("chamfer:tokens=int8,prune=0.4", DIM, "cosine")
    assert idx.spec == "chamfer:prune=0.4,tokens=int8" and idx.prune_ratio == 0.4
    assert ix.from_spec(idx.spec, DIM, "cosine").params == idx.params
    for spec in ("muvera:k_sim=2,d_proj=4,r_reps=2,inner=flat,prune=0.3", "token_ann:prune=0.3"):
        idx = ix.from_spec(spec, DIM, "cosine")
        assert idx.prune_ratio == 0.3 and "prune=0.3" in idx.spec
        assert list(type(idx).config_keys)[-1] == "tokens"
        assert ix.from_spec(idx.spec, DIM, "cosine").params == idx.params


def test_prune_ratio_survives_index_save_and_load(tmp_path):
    idx = ix.from_spec("chamfer:prune=0.25", DIM, "cosine")
    idx.add(topical_sets(5, seed=5), np.arange(5))
    idx.save(tmp_path / "i")
    again = ix.load(tmp_path / "i")
    assert again.prune_ratio == 0.25 and again.spec == idx.spec
