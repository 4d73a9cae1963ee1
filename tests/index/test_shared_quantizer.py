"""One quantizer shared by several indexes (``train_quantizer`` / ``adopt_quantizer``): shards
that adopt the same arrays answer, merged, as one index over all their vectors."""

from __future__ import annotations

import numpy as np
import pytest

import index
from index.base import merge_topk

DIM, N, K, NLIST = 32, 2_000, 10, 16
SPECS = {
    "ivf": f"ivf:nlist={NLIST},nprobe=4",
    "ivfpq": f"ivf:nlist={NLIST},nprobe=4,pq=8,nbits=5",
    "pq": f"pq:M=8,nbits=5,nlist={NLIST},nprobe=4",
}


@pytest.fixture(scope="module")
def data(make_clustered):
    return make_clustered(N, DIM, n_queries=30, seed=0)


def shards(
    spec: str, metric: str, q: dict[str, np.ndarray], base: np.ndarray, parts: int
) -> list[index.Index]:
    """``parts`` indexes that adopted ``q``, holding the rows of ``base`` round-robin (label =
    row)."""
    out = []
    for s in range(parts):
        idx = index.from_spec(spec, DIM, metric)
        assert isinstance(idx, index.Index)
        idx.adopt_quantizer(q)  # type: ignore[attr-defined]
        rows = np.arange(s, base.shape[0], parts)
        idx.add(base[rows], rows)
        out.append(idx)
    return out


def merged(parts: list[index.Index], queries: np.ndarray, **params) -> tuple:
    return merge_topk([p.search(queries, K, **params) for p in parts], K)


def test_shares_quantizer():
    assert index.shares_quantizer("ivf:nlist=8")
    assert index.shares_quantizer("pq")
    assert not index.shares_quantizer("hnsw:M=16")
    assert not index.shares_quantizer("flat")
    with pytest.raises(ValueError, match="unknown index kind"):
        index.shares_quantizer("nope")


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "pq"])
def test_train_quantizer_is_what_the_index_trains_itself(data, kind):
    """The same seeded sample and faiss training as the index's own (from its buffer)."""
    base, _ = data
    spec = SPECS[kind]
    own = index.from_spec(spec, DIM, "l2")
    n = own.train_size  # type: ignore[attr-defined]
    own.add(base[:n], np.arange(n))
    assert own.trained  # type: ignore[attr-defined]
    q = index.train_quantizer(spec, DIM, "l2", base[:n])
    mine = own.quantizer()  # type: ignore[attr-defined]
    assert (
        sorted(q)
        == sorted(mine)
        == (["centroids", "pq_centroids"] if kind != "ivf" else ["centroids"])
    )
    for name in q:
        assert q[name].dtype == np.float32
        np.testing.assert_allclose(q[name], mine[name], rtol=1e-5, atol=1e-5)


def test_train_quantizer_changes_nothing(data):
    base, _ = data
    idx = index.IVFIndex(DIM, "cosine", nlist=NLIST)
    idx.add(base[:5], np.arange(5))
    q = idx.train_quantizer(base)
    assert not idx.trained and len(idx) == 5 and idx.quantizer() is None
    assert q["centroids"].shape == (NLIST, DIM)
    # Cosine: trained on the normalised vectors, as the index stores them.
    np.testing.assert_allclose(np.linalg.norm(q["centroids"], axis=1), 1.0, atol=0.05)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("nprobe", [4, NLIST])
def test_ivf_shards_merge_to_one_index(data, metric, nprobe):
    """IVF-Flat shards with one quantizer probe the same lists as one index over all the data:
    their top-k merged by score is that index's top-k, at any nprobe (exact at nprobe=nlist)."""
    base, queries = data
    spec = SPECS["ivf"]
    q = index.train_quantizer(spec, DIM, metric, base[:1000])
    a, b = shards(spec, metric, q, base, 2)
    (one,) = shards(spec, metric, q, base, 1)
    for s in (a, b, one):
        np.testing.assert_array_equal(s.quantizer()["centroids"], q["centroids"])  # type: ignore[attr-defined]
    got_s, got_l = merged([a, b], queries, nprobe=nprobe)
    want_s, want_l = one.search(queries, K, nprobe=nprobe)
    np.testing.assert_array_equal(got_l, want_l)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-5)
    if nprobe == NLIST:
        exact = index.FlatIndex(DIM, metric)
        exact.add(base, np.arange(N))
        np.testing.assert_array_equal(got_l, exact.search(queries, K)[1])


@pytest.mark.parametrize("kind", ["ivfpq", "pq"])
def test_pq_shards_merge_to_one_index(data, kind):
    """IVF-PQ shards with one quantizer and codebook code every vector as one index would: the
    merged code scores are that index's. (Labels are compared by score: PQ codes tie.)"""
    base, queries = data
    spec = SPECS[kind]
    q = index.train_quantizer(spec, DIM, "l2", base[:1500])
    parts = shards(spec, "l2", q, base, 2)
    (one,) = shards(spec, "l2", q, base, 1)
    params = {"rescore": 0} if kind == "pq" else {}
    got_s, got_l = merged(parts, queries, **params)
    want_s, want_l = one.search(queries, K, **params)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-5)
    assert (got_l == want_l).mean() >= 0.95  # 1.0 on seed 0
    for p in (*parts, one):
        mine = p.quantizer()  # type: ignore[attr-defined]
        for name in q:
            np.testing.assert_array_equal(mine[name], q[name])


@pytest.mark.parametrize("kind", ["ivf", "pq"])
def test_adopt_needs_an_empty_index(data, kind):
    base, _ = data
    spec = SPECS[kind]
    q = index.train_quantizer(spec, DIM, "l2", base[:1000])
    idx = index.from_spec(spec, DIM, "l2")
    idx.add(base[:3], np.arange(3))
    with pytest.raises(ValueError, match="empty index.*holds 3 vectors"):
        idx.adopt_quantizer(q)  # type: ignore[attr-defined]
    assert not idx.trained  # type: ignore[attr-defined]
    # Emptied again (by removal), it may adopt; so may one that adopted before.
    idx.remove(np.arange(3))
    idx.adopt_quantizer(q)  # type: ignore[attr-defined]
    idx.adopt_quantizer(q)  # type: ignore[attr-defined]
    idx.add(base[:3], np.arange(3))
    assert idx.trained and len(idx) == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["ivfpq", "pq"])
def test_bad_arrays_raise(data, kind):
    base, _ = data
    spec = SPECS[kind]
    q = index.train_quantizer(spec, DIM, "l2", base[:1000])
    idx = index.from_spec(spec, DIM, "l2")
    c, p = q["centroids"], q["pq_centroids"]
    nan = c.copy()
    nan[3, 4] = np.nan
    cases = [
        ({"centroids": c[:-1], "pq_centroids": p}, r"'centroids' has shape \(15, 32\)"),
        ({"centroids": c[:, :-1], "pq_centroids": p}, "'centroids' has shape"),
        ({"centroids": c, "pq_centroids": p[:, :-1]}, "'pq_centroids' has shape"),
        ({"centroids": c}, r"missing \['pq_centroids'\]"),
        ({"centroids": c, "pq_centroids": p, "x": c}, r"unexpected \['x'\]"),
        ({"centroids": c.astype(np.float64), "pq_centroids": p}, "float32 array, got float64"),
        ({"centroids": c.tolist(), "pq_centroids": p}, "float32 array, got list"),
        ({"centroids": nan, "pq_centroids": p}, "'centroids' contains NaN"),
        ([c, p], "dict of arrays"),
    ]
    for arrays, match in cases:
        with pytest.raises(ValueError, match=match):
            idx.adopt_quantizer(arrays)  # type: ignore[attr-defined]
        assert not idx.trained  # type: ignore[attr-defined]
    # An IVF-Flat index takes no codebook.
    flat = index.IVFIndex(DIM, "l2", nlist=NLIST)
    with pytest.raises(ValueError, match=r"unexpected \['pq_centroids'\]"):
        flat.adopt_quantizer(q)


def test_train_quantizer_bad_input(data):
    base, _ = data
    with pytest.raises(ValueError, match=r"at least 16 vectors \(nlist\), got a sample of 10"):
        index.train_quantizer(SPECS["ivf"], DIM, "l2", base[:10])
    with pytest.raises(ValueError, match="at least 32 vectors"):
        index.train_quantizer(SPECS["ivfpq"], DIM, "l2", base[:20])
    with pytest.raises(ValueError, match="sample has dimension 8"):
        index.train_quantizer(SPECS["ivf"], 8 * 4, "l2", base[:, :8])
    with pytest.raises(ValueError, match="no quantizer to share"):
        index.train_quantizer("hnsw", DIM, "l2", base)


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "pq"])
@pytest.mark.parametrize("n", [0, 300])
def test_save_and_load_keep_the_adopted_quantizer(data, tmp_path, kind, n):
    """Trained with 0 vectors (just adopted) or a few (fewer than it would train itself on)."""
    base, queries = data
    spec = SPECS[kind]
    q = index.train_quantizer(spec, DIM, "cosine", base[:1000])
    (idx,) = shards(spec, "cosine", q, base[:n], 1) if n else [index.from_spec(spec, DIM, "cosine")]
    if not n:
        idx.adopt_quantizer(q)  # type: ignore[attr-defined]
    idx.save(tmp_path / "a")
    back = index.load(tmp_path / "a")
    assert back.trained and len(back) == n  # type: ignore[attr-defined]
    for name, arr in back.quantizer().items():  # type: ignore[attr-defined]
        np.testing.assert_array_equal(arr, q[name])
    if n:
        for a, b in zip(idx.search(queries, K), back.search(queries, K), strict=True):
            np.testing.assert_array_equal(a, b)
    # Vectors added after the load go into the adopted lists; a second save holds them all.
    back.add(base[1000:1100], np.arange(1000, 1100))
    back.save(tmp_path / "a")
    again = index.load(tmp_path / "a")
    assert len(again) == n + 100
    np.testing.assert_array_equal(again.quantizer()["centroids"], q["centroids"])  # type: ignore[attr-defined]
    assert (again.search(base[1000:1010], 1)[1][:, 0] == np.arange(1000, 1010)).all()
