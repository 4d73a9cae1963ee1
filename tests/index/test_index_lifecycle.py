"""Remove, re-add, growth and save/load round trips, for every index kind and IVF state."""

from __future__ import annotations

import numpy as np
import pytest

import index
from index.metric import prepare

DIM = 16
# (spec, how many vectors): IVF with nlist=4 trains at 39 * 4 = 156 vectors; IVF-PQ with
# nbits=4 at max(156, 39 * 2**4) = 624. Each IVF appears below and above its threshold.
IVF = "ivf:nlist=4,nprobe=2"
IVFPQ = "ivf:nlist=4,nprobe=2,pq=4,nbits=4"
STATES = [
    pytest.param("flat", 400, id="flat"),
    pytest.param("hnsw:M=8,ef_construction=64,ef=32", 400, id="hnsw"),
    pytest.param(IVF, 120, id="ivf-untrained"),
    pytest.param(IVF, 400, id="ivf-trained"),
    pytest.param(IVFPQ, 300, id="ivfpq-untrained"),
    pytest.param(IVFPQ, 800, id="ivfpq-trained"),
]
METRICS = ["cosine", "ip", "l2"]


@pytest.fixture
def data(make_clustered):
    base, queries = make_clustered(1_000, DIM, n_queries=30, seed=11, n_centres=20)
    labels = np.random.default_rng(11).permutation(1_000).astype(np.int64) * 3 + 2
    return base, queries, labels


def is_trained(idx: index.Index) -> bool | None:
    return getattr(idx, "trained", None)


def expect_state(idx: index.Index, spec: str, n: int) -> None:
    if spec.startswith("ivf"):
        assert idx.trained == (n >= idx.train_size), (spec, n, idx.train_size)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("spec", "n"), STATES)
def test_removed_labels_are_never_returned(data, build, spec, n, metric):
    base, queries, labels = data
    idx = build(spec, base[:n], labels[:n], metric)
    expect_state(idx, spec, n)
    gone = np.random.default_rng(1).choice(labels[:n], size=n // 3, replace=False)
    assert idx.remove(gone) == gone.size
    assert idx.remove(gone) == 0  # absent labels are ignored
    assert len(idx) == n - gone.size
    assert not idx.contains(gone).any()
    assert set(idx.labels().tolist()) == set(labels[:n].tolist()) - set(gone.tolist())
    wide = {"nprobe": 4} if spec.startswith("ivf") else {"ef": 400} if "hnsw" in spec else {}
    for k in (1, 10, n):  # k = n asks for everything there is
        for params in ({}, wide):
            _, found = idx.search(queries, k, **params)
            assert not np.isin(found, gone).any()
    # Filters that name removed labels still never return them, exact path or not.
    for exact_max in (2048, 0):
        idx.exact_filter_max = exact_max
        for allowed in (gone[:5], np.concatenate([gone, labels[:n][:50]])):
            _, found = idx.search(queries, 10, allowed=allowed)
            assert not np.isin(found, gone).any()
    del idx.exact_filter_max
    # Removing everything leaves an empty, searchable index.
    idx.remove(labels[:n])
    assert len(idx) == 0
    scores, found = idx.search(queries, 3)
    assert (found == -1).all() and np.isneginf(scores).all()


@pytest.mark.parametrize("spec", [IVF, IVFPQ])
def test_ivf_removals_before_training_stay_removed_after(data, spec):
    """Vectors removed from the untrained buffer must not reappear when it trains."""
    base, queries, labels = data
    idx = index.from_spec(spec, DIM, "l2")
    idx.add(base[:100], labels[:100])
    idx.remove(labels[:100:2])
    assert not idx.trained
    idx.add(base[100:], labels[100:])
    assert idx.trained and len(idx) == 950
    _, found = idx.search(queries, 50, nprobe=4)
    assert not np.isin(found, labels[:100:2]).any()
    assert idx.contains(labels[1:100:2]).all()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize(("spec", "n"), STATES)
def test_re_adding_a_removed_label_uses_the_new_vector(data, build, spec, n, metric):
    base, _, labels = data
    idx = build(spec, base[:n], labels[:n], metric)
    victims = labels[:n][:10]
    idx.remove(victims)
    with pytest.raises(ValueError, match="already in the index"):
        idx.add(base[n : n + 1], labels[n - 1 : n])
    fresh = base[-10:]  # held out of every index here
    idx.add(fresh, victims)  # the same labels, new vectors
    assert len(idx) == n and idx.contains(victims).all()
    m = index.Metric(metric)
    stored, new, old = idx.vectors(victims), prepare(fresh, m), prepare(base[:10], m)
    if "pq" in spec and idx.trained:
        # PQ keeps codes, not vectors: the reconstruction must be nearer the new vector.
        near_new = np.linalg.norm(stored - new, axis=1) < np.linalg.norm(stored - old, axis=1)
        assert near_new.all()
        return
    np.testing.assert_allclose(stored, new, rtol=1e-5, atol=1e-5)
    params = {"nprobe": 4} if spec.startswith("ivf") else {"ef": 128} if "hnsw" in spec else {}
    _, found = idx.search(fresh, 1, **params)
    np.testing.assert_array_equal(found[:, 0], victims)


@pytest.mark.parametrize("spec", ["flat", "hnsw:M=8,ef_construction=64", "ivf:nlist=1"])
def test_random_add_remove_sequences_agree_with_a_model(spec):
    """Seeded random add / remove / re-add sequences; the index must agree with a dict.

    (Re-adding a removed label used to corrupt hnswlib's label lookup once the label's old slot
    was reused: the live label then raised "Label not found" from ``vectors`` and ``remove``.)
    ``ivf:nlist=1`` trains at 39 vectors, part way through most sequences, and probes its one
    list, so it is exact like flat.
    """
    found_self = checked = 0
    for seed in range(20 if spec.startswith("hnsw") else 8):
        rng = np.random.default_rng(seed)
        idx = index.from_spec(spec, 8, "l2")
        live: dict[int, np.ndarray] = {}
        for _ in range(40):
            if rng.random() < 0.6:
                cand = rng.choice(60, size=int(rng.integers(1, 8)), replace=False)
                cand = np.array([c for c in cand.tolist() if c not in live], dtype=np.int64)
                if cand.size == 0:
                    continue
                x = rng.normal(size=(cand.size, 8)).astype(np.float32)
                idx.add(x, cand)
                live.update(zip(cand.tolist(), x, strict=True))
            elif live:
                out = rng.choice(list(live), size=min(len(live), int(rng.integers(1, 6))))
                assert idx.remove(out) == np.unique(out).size  # duplicates count once
                for lab in out.tolist():
                    live.pop(lab, None)
            want = np.array(sorted(live), dtype=np.int64)
            assert len(idx) == want.size
            assert sorted(idx.labels().tolist()) == want.tolist()
            if want.size:
                x = np.stack([live[lab] for lab in want.tolist()])
                np.testing.assert_allclose(idx.vectors(want), x, atol=1e-5)
                _, found = idx.search(x, 3)
                assert np.isin(found[found >= 0], want).all()
                found_self += int((found[:, 0] == want).sum())
                checked += want.size
    if spec.startswith("hnsw"):
        # hnswlib's slot replacement leaves the odd element unreachable from the entry point
        # (upstream behaviour, seen before the fix above too): gives 0.998 here.
        assert found_self / checked >= 0.99
    else:
        assert found_self == checked


def test_hnsw_grows_past_initial_capacity_without_rebuild(make_clustered):
    base, _ = make_clustered(3_000, DIM, seed=12, n_centres=20)
    idx = index.HNSWIndex(DIM, "l2", M=8, ef_construction=64)
    graph = idx._g
    assert graph.get_max_elements() == 1024
    for start in range(0, 3_000, 700):
        idx.add(base[start : start + 700], np.arange(start, min(start + 700, 3_000)))
    assert idx._g is graph, "the graph was rebuilt instead of resized"
    assert graph.get_max_elements() >= 3_000 and len(idx) == 3_000
    _, found = idx.search(base, 1)
    assert (found[:, 0] == np.arange(3_000)).mean() >= 0.99  # gives 1.000 on seed 12
    # Removed slots are reused before the graph grows again.
    idx.remove(np.arange(500))
    used = graph.element_count
    idx.add(base[:400] + 0.01, np.arange(10_000, 10_400))
    assert graph.element_count == used and len(idx) == 2_900


def _search_all(idx, queries, allowed):
    """Results that a loaded index must reproduce: plain, wide, filtered both ways."""
    params = {"nprobe": 3} if idx.kind == "ivf" else {"ef": 50} if idx.kind == "hnsw" else {}
    out = [
        idx.search(queries, 10),
        idx.search(queries, 25, **params),
        idx.search(queries, 10, allowed=allowed[:20]),
    ]
    idx.exact_filter_max, idx.exact_filter_fraction = 0, 0.0  # through the ANN structure
    out.append(idx.search(queries, 10, allowed=allowed))
    del idx.exact_filter_max, idx.exact_filter_fraction  # back to the class defaults
    return out


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("spec", "n"), STATES)
def test_save_load_round_trip_gives_identical_results(data, build, tmp_path, spec, n, metric):
    base, queries, labels = data
    idx = build(spec, base[:n], labels[:n], metric)
    idx.remove(labels[: n // 5])  # tombstones / deleted slots must survive the round trip
    allowed = labels[: n // 2]
    before = _search_all(idx, queries, allowed)
    idx.save(tmp_path / "a")
    loaded = index.load(tmp_path / "a")
    assert type(loaded) is type(idx)
    assert (loaded.spec, loaded.dim, loaded.metric, len(loaded)) == (
        idx.spec,
        idx.dim,
        idx.metric,
        len(idx),
    )
    assert is_trained(loaded) == is_trained(idx)
    assert set(loaded.labels().tolist()) == set(idx.labels().tolist())
    for (s0, l0), (s1, l1) in zip(before, _search_all(loaded, queries, allowed), strict=True):
        np.testing.assert_array_equal(l1, l0)
        np.testing.assert_array_equal(s1, s0)
    # The loaded index keeps working: adds (re-adding removed labels too) and removes.
    loaded.add(base[n : n + 50], labels[n : n + 50])
    loaded.add(base[: n // 5], labels[: n // 5])
    loaded.remove(labels[n : n + 10])
    assert len(loaded) == len(idx) + 40 + n // 5
    _, found = loaded.search(queries, 10)
    assert not np.isin(found, labels[n : n + 10]).any()
    # A second save into the same directory replaces the first, whatever state it was in.
    loaded.save(tmp_path / "a")
    again = type(idx).load(tmp_path / "a")
    assert len(again) == len(loaded)
    assert is_trained(again) == is_trained(loaded)


def test_ivf_save_into_a_directory_of_its_untrained_self(data, tmp_path):
    """A trained save over an untrained one must not load the stale buffer back."""
    base, queries, labels = data
    idx = index.from_spec(IVF, DIM, "l2")
    idx.add(base[:100], labels[:100])
    idx.save(tmp_path)
    idx.add(base[100:400], labels[100:400])
    idx.remove(np.concatenate([labels[:100], labels[200:400]]))
    assert idx.trained and len(idx) == 100  # as many as the stale buffer, but other labels
    idx.save(tmp_path)
    loaded = index.load(tmp_path)
    assert loaded.trained
    assert set(loaded.labels().tolist()) == set(labels[100:200].tolist())
    np.testing.assert_array_equal(loaded.search(queries, 5)[1], idx.search(queries, 5)[1])


def test_load_checks_the_class(data, tmp_path):
    base, _, labels = data
    flat = index.FlatIndex(DIM)
    flat.add(base[:10], labels[:10])
    flat.save(tmp_path)
    assert isinstance(index.Index.load(tmp_path), index.FlatIndex)
    with pytest.raises(index.CorruptFileError, match="holds a FlatIndex, not a HNSWIndex"):
        index.HNSWIndex.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        index.load(tmp_path / "nowhere")
