"""Quantized indexes (``sq8``, ``binary``, ``pq``): recall against flat at documented floors,
exact rescored scores, filters, deletes, re-adds, save/load, corrupted files, bad specs."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import index
from index import quantized_hnsw, scoring
from index.quantized_hnsw import TRAIN_SIZE
from index.quantized_pq import default_m

N, DIM, N_QUERIES, K = 3_000, 128, 100, 10
# Rescored scores equal flat's: to float32 rounding on the CPU; on CUDA both score float16 rows
# (in different kernels), so to float16 rounding.
TOL = 1e-5 if scoring.device().type == "cpu" else 2e-3
METRICS = ("cosine", "l2")
# pq with nbits=6 and nlist=16 trains at 39 * 64 = 2,496 vectors (the default nbits=8 needs
# 9,984): a small data set reaches the trained state. Everything else is the spec default.
SPECS = {"sq8": "sq8", "binary": "binary", "pq": "pq:nlist=16,nbits=6"}
KINDS = list(SPECS)
# Observed recall@10 against flat on seed 0 (3,000 x 128 clustered, 100 queries), cosine / l2,
# with the default oversample (sq8 2, binary 4, pq 8), rescored -- and from the codes alone:
#   sq8     1.000 / 1.000   (codes 0.99 / 0.99)
#   binary  0.994 / 0.990   (codes 0.80 / 0.76)
#   pq      0.999 / 1.000   (codes 0.76 / 0.81)
FLOORS = {"sq8": 0.98, "binary": 0.95, "pq": 0.95}
CODE_FLOORS = {"sq8": 0.95, "binary": 0.60, "pq": 0.60}
# Filtered through the codes (exact_filter_max=0), the worst of the sets below (5% allowed):
# the allowed neighbours are far, where one bit per dimension tells them apart poorly (binary
# gives 0.80 / 0.65 for cosine / l2, as a brute-force Hamming scan of the allowed set does: not
# the graph's doing; oversample=16 per call gives 0.92-1.0).
FILTER_FLOORS = {"sq8": 0.95, "binary": 0.60, "pq": 0.90}


@pytest.fixture(scope="module")
def data(make_clustered):
    base, queries = make_clustered(N, DIM, n_queries=N_QUERIES, seed=0)
    # Neither 0..n-1 nor sorted, so a position/label mix-up cannot pass.
    labels = np.random.default_rng(0).permutation(N).astype(np.int64) * 3 + 2
    return base, queries, labels


@pytest.fixture(scope="module")
def flat(data):
    base, _, labels = data
    out = {}
    for metric in METRICS:
        f = index.FlatIndex(DIM, metric)
        f.add(base, labels)
        out[metric] = f
    return out


@pytest.fixture(scope="module")
def built(data):
    """``built(kind, metric)``: built once per module (searches only; tests that mutate build
    their own)."""
    base, _, labels = data
    cache: dict[tuple[str, str], index.Index] = {}

    def get(kind: str, metric: str) -> index.Index:
        if (kind, metric) not in cache:
            idx = index.from_spec(SPECS[kind], DIM, metric)
            idx.add(base[:1000], labels[:1000])  # below the training size: exact
            assert not idx.trained
            idx.add(base[1000:], labels[1000:])
            assert idx.trained
            cache[kind, metric] = idx
        return cache[kind, metric]

    return get


def exact_scores(f: index.Index, queries: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Flat's score of each (query, label) pair; -inf where the label is -1."""
    out = np.full(labels.shape, -np.inf, dtype=np.float32)
    for i in range(labels.shape[0]):
        ok = labels[i] >= 0
        if ok.any():
            s, lab = f.search(queries[i : i + 1], int(ok.sum()), allowed=labels[i][ok])
            by = dict(zip(lab[0].tolist(), s[0].tolist(), strict=True))
            out[i, ok] = [by[x] for x in labels[i][ok].tolist()]
    return out


# ---- specs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("sq8", "sq8:M=16,ef_construction=200,ef=64,oversample=2,rescore=1"),
        (
            "sq8:M=16,ef_construction=200,ef=64,oversample=2,rescore=1",
            "sq8:M=16,ef_construction=200,ef=64,oversample=2,rescore=1",
        ),
        ("binary", "binary:M=16,ef_construction=200,ef=64,oversample=4,rescore=1"),
        (
            "binary:M=16,oversample=4",
            "binary:M=16,ef_construction=200,ef=64,oversample=4,rescore=1",
        ),
        ("binary:rescore=0,M=8", "binary:M=8,ef_construction=200,ef=64,oversample=4,rescore=0"),
        ("pq", "pq:M=16,nbits=8,nlist=256,nprobe=16,oversample=8,rescore=1"),
        (
            "pq:M=16,nlist=1024,nprobe=16,oversample=8",
            "pq:M=16,nbits=8,nlist=1024,nprobe=16,oversample=8,rescore=1",
        ),
        ("pq:M=32,nbits=4", "pq:M=32,nbits=4,nlist=256,nprobe=16,oversample=8,rescore=1"),
    ],
)
def test_spec_round_trips(spec, canonical):
    idx = index.from_spec(spec, DIM, "cosine")
    assert idx.spec == canonical
    assert index.from_spec(idx.spec, DIM, "cosine").spec == canonical


def test_pq_default_m_is_about_an_eighth_of_the_dimension():
    assert [default_m(d) for d in (128, 384, 768, 50, 7, 16)] == [16, 48, 96, 5, 1, 2]
    assert index.from_spec("pq", 50).spec.startswith("pq:M=5,")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("sq8:oversample=0", r"sq8 parameter oversample must be >= 1, got 0"),
        ("binary:rescore=2", r"binary parameter rescore must be 0 or 1, got 2"),
        ("sq8:M=1", r"sq8 parameter M must be >= 2, got 1"),
        ("binary:ef=0", r"binary parameters ef_construction and ef must be >= 1"),
        ("sq8:oversample=-2", r"sq8 parameter oversample must be a non-negative int, got -2"),
        ("sq8:oversample=1.5", r"sq8 parameter oversample must be a non-negative int, got 1.5"),
        ("sq8:nprobe=4", r"unknown sq8 parameter\(s\) \['nprobe'\]"),
        ("binary:bits=1", r"unknown binary parameter\(s\) \['bits'\]"),
        ("pq:M=3", r"pq parameter M=3 must divide dim=128"),
        ("pq:nbits=17", r"pq parameter nbits must be in 1\.\.16, got 17"),
        ("pq:nlist=0", r"pq parameters nlist and nprobe must be >= 1, got 0, 16"),
        ("pq:ef=4", r"unknown pq parameter\(s\) \['ef'\]"),
        ("pq:oversample=0", r"pq parameter oversample must be >= 1, got 0"),
        ("pq:M", r"malformed index spec parameter 'M'"),
    ],
)
def test_bad_spec_parameters_are_named(spec, match):
    with pytest.raises(ValueError, match=match):
        index.from_spec(spec, DIM)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_search_parameters_are_named(built, data, kind):
    idx = built(kind, "cosine")
    q = data[1][:2]
    with pytest.raises(ValueError, match=r"oversample must be >= 1, got 0"):
        idx.search(q, 5, oversample=0)
    with pytest.raises(ValueError, match=r"rescore must be 0 or 1, got 3"):
        idx.search(q, 5, rescore=3)
    with pytest.raises(ValueError, match=r"oversample must be an integer, got 2\.5"):
        idx.search(q, 5, oversample=2.5)
    with pytest.raises(ValueError, match=r"rescore must be an integer, got 'yes'"):
        idx.search(q, 5, rescore="yes")
    width = "nprobe" if kind == "pq" else "ef"
    with pytest.raises(ValueError, match=rf"{width} must be an integer, got nan"):
        idx.search(q, 5, **{width: float("nan")})
    # Whole floats (what a protobuf Struct carries from gRPC) are integers, bools too.
    np.testing.assert_array_equal(
        idx.search(q, 5, rescore=False)[0], idx.search(q, 5, rescore=0)[0]
    )
    np.testing.assert_array_equal(
        idx.search(q, 5, oversample=3.0, **{width: 32.0})[1],
        idx.search(q, 5, oversample=3, **{width: 32})[1],
    )
    other = "nprobe" if kind != "pq" else "ef"
    with pytest.raises(ValueError, match=rf"unknown {kind} search parameter\(s\) \['{other}'\]"):
        idx.search(q, 5, **{other: 8})


# ---- recall and exact scores ----------------------------------------------------------------
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kind", KINDS)
def test_recall_against_flat_at_floor(built, flat, data, recall_of, kind, metric):
    _, queries, _ = data
    idx = built(kind, metric)
    _, truth = flat[metric].search(queries, K)
    _, found = idx.search(queries, K)
    _, coded = idx.search(queries, K, rescore=0)
    recall, code_recall = recall_of(found, truth), recall_of(coded, truth)
    assert recall >= FLOORS[kind], (recall, code_recall)
    assert code_recall >= CODE_FLOORS[kind], (recall, code_recall)
    assert recall >= code_recall - 0.01
    # Wider per-call parameters search more and lose nothing.
    wide = {"nprobe": 16} if kind == "pq" else {"ef": 256}
    _, more = idx.search(queries, K, oversample=8, **wide)
    assert recall_of(more, truth) >= recall - 0.01


@pytest.mark.parametrize("metric", [*METRICS, "ip"])
@pytest.mark.parametrize("kind", KINDS)
def test_rescored_scores_equal_flats(built, flat, data, kind, metric):
    base, queries, labels = data
    if metric == "ip":
        idx = index.from_spec(SMALL[kind], DIM, "ip")
        idx.add(base[:1500], labels[:1500])
        f = index.FlatIndex(DIM, "ip")
        f.add(base[:1500], labels[:1500])
    else:
        idx, f = built(kind, metric), flat[metric]
    scores, found = idx.search(queries[:40], K)
    assert (found >= 0).all()
    np.testing.assert_allclose(scores, exact_scores(f, queries[:40], found), rtol=TOL, atol=TOL)
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    # Code-space scores are not exact (binary: minus the Hamming distance).
    coded, _ = idx.search(queries[:40], K, rescore=0)
    assert (np.diff(coded, axis=1) <= 0).all()
    if kind == "binary":
        assert (coded <= 0).all() and (coded == np.round(coded)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_spec_rescore_0_gives_code_scores(data, kind):
    base, queries, labels = data
    spec = SPECS[kind] + ("," if ":" in SPECS[kind] else ":") + "rescore=0"
    idx = index.from_spec(spec, DIM, "cosine")
    idx.add(base, labels)
    s0, l0 = idx.search(queries[:20], K)
    s1, l1 = idx.search(queries[:20], K, rescore=1)
    assert not np.allclose(s0, s1)
    assert len(np.intersect1d(l0[0], l1[0])) >= K // 2


@pytest.mark.parametrize("kind", KINDS)
def test_untrained_index_is_exact(data, flat, kind):
    base, queries, labels = data
    idx = index.from_spec(SPECS[kind], DIM, "l2")
    idx.add(base[:500], labels[:500])
    assert not idx.trained and len(idx) == 500
    f = index.FlatIndex(DIM, "l2")
    f.add(base[:500], labels[:500])
    s, found = idx.search(queries, K)
    want_s, want = f.search(queries, K)
    np.testing.assert_array_equal(found, want)
    np.testing.assert_allclose(s, want_s, rtol=TOL, atol=TOL)
    assert set(idx.memory_usage()) == {"vectors", "labels"}


# ---- filters --------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kind", KINDS)
def test_filters_are_exact(built, flat, data, recall_of, kind, metric):
    _, queries, labels = data
    idx, f = built(kind, metric), flat[metric]
    rng = np.random.default_rng(5)
    sets = {
        "tiny": rng.choice(labels, 7, replace=False),  # fewer than k
        "small": rng.choice(labels, 150, replace=False),
        "half": rng.choice(labels, N // 2, replace=False),
        "with-absent": np.r_[rng.choice(labels, 900, replace=False), [1, 10**9]],
    }
    try:
        for exact_max in (2048, 0):  # 0: every set goes through the codes' selector
            idx.exact_filter_max = exact_max
            idx.exact_filter_fraction = 0.0 if exact_max == 0 else 0.02
            for name, allowed in sets.items():
                scores, found = idx.search(queries, K, allowed=allowed)
                want_s, want = f.search(queries, K, allowed=allowed)
                assert np.isin(found[found >= 0], allowed).all(), name
                np.testing.assert_array_equal(found >= 0, want >= 0)  # as many as there are
                assert recall_of(found, want) >= FILTER_FLOORS[kind], (name, exact_max)
                got = exact_scores(f, queries, found)
                np.testing.assert_allclose(scores, got, rtol=TOL, atol=TOL)
                _, more = idx.search(queries, K, allowed=allowed, oversample=16)
                assert recall_of(more, want) >= 0.90, (name, exact_max)  # binary l2: 0.916
    finally:
        del idx.exact_filter_max, idx.exact_filter_fraction


# ---- deletes and re-adds --------------------------------------------------------------------
# Trained at 1,500 vectors: sq8 / binary train at 1,024; this pq at 39 * 32 = 1,248.
SMALL = {"sq8": "sq8:ef_construction=64", "binary": "binary:ef_construction=64"}
SMALL["pq"] = "pq:nlist=8,nbits=5"


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("kind", KINDS)
def test_removed_labels_are_never_returned_and_can_come_back(data, kind, metric):
    base, queries, labels = data
    n = 1500
    idx = index.from_spec(SMALL[kind], DIM, metric)
    idx.add(base[:n], labels[:n])
    assert idx.trained
    gone = np.random.default_rng(1).choice(labels[:n], size=n // 3, replace=False)
    assert idx.remove(gone) == gone.size and idx.remove(gone) == 0
    assert len(idx) == n - gone.size and not idx.contains(gone).any()
    assert set(idx.labels().tolist()) == set(labels[:n].tolist()) - set(gone.tolist())
    for k in (1, K, n):
        for params in ({}, {"rescore": 0}, {"oversample": 1}):
            _, found = idx.search(queries, k, **params)
            assert not np.isin(found, gone).any()
            if k == n:  # everything there is, and nothing more
                assert (found[:, : len(idx)] >= 0).all() and (found[:, len(idx) :] == -1).all()
    for exact_max in (2048, 0):
        idx.exact_filter_max = exact_max
        for allowed in (gone[:5], np.r_[gone, labels[:n][:300]]):
            _, found = idx.search(queries, K, allowed=allowed)
            assert not np.isin(found, gone).any()
    del idx.exact_filter_max
    # Re-adding removed labels takes their new vectors.
    fresh = base[-20:]  # held out of this index
    victims = gone[:20]
    with pytest.raises(ValueError, match="already in the index"):
        idx.add(base[:1], labels[n - 1 : n])
    idx.add(fresh, victims)
    assert len(idx) == n - gone.size + 20 and idx.contains(victims).all()
    want = index.metric.prepare(fresh, index.Metric(metric))
    np.testing.assert_allclose(idx.vectors(victims), want, rtol=1e-6, atol=1e-6)
    scores, found = idx.search(fresh, 1)
    np.testing.assert_array_equal(found[:, 0], victims)
    if metric == "l2":
        np.testing.assert_allclose(scores[:, 0], 0.0, atol=1e-3)
    # Removing everything leaves an empty, searchable index.
    idx.remove(labels)
    idx.remove(victims)
    assert len(idx) == 0
    scores, found = idx.search(queries, 3)
    assert (found == -1).all() and np.isneginf(scores).all()


# ---- persistence ----------------------------------------------------------------------------
FILES = {
    "sq8": [
        "codes.npy",
        "entry.npy",
        "labels.npy",
        "levels.npy",
        "neighbors.npy",
        "positions.npy",
        "quantizer.npy",
        "vectors.npy",
    ],
    "pq": ["labels.npy", "vectors.npy"],
}
FILES["binary"] = FILES["sq8"]
INNER_FILES = ["centroids.npy", "codes.npy", "ids.npy", "list_sizes.npy", "pq_centroids.npy"]


def manifest(d: Path) -> dict:
    return json.loads((d / "index.json").read_text())


def build_small(data, kind: str, metric: str = "l2", n: int = 1500) -> index.Index:
    base, _, labels = data
    idx = index.from_spec(SMALL[kind], DIM, metric)
    idx.add(base[:n], labels[:n])
    idx.remove(labels[:n:20])  # tombstones (5%: below the rebuild fraction)
    return idx


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_gives_the_same_results(data, tmp_path, kind):
    base, queries, labels = data
    idx = build_small(data, kind)
    before = idx.search(queries, K)
    allowed = labels[100:700]
    before_f = idx.search(queries, K, allowed=allowed)
    idx.save(tmp_path / "a")
    assert sorted(manifest(tmp_path / "a")["files"]) == FILES[kind]
    if kind == "pq":
        assert sorted(manifest(tmp_path / "a" / "inner")["files"]) == INNER_FILES
    for got in (idx, index.load(tmp_path / "a")):
        assert got.spec == idx.spec and len(got) == len(idx)
        for want, res in (
            (before, got.search(queries, K)),
            (before_f, got.search(queries, K, allowed=allowed)),
        ):
            np.testing.assert_array_equal(res[1], want[1])
            np.testing.assert_array_equal(res[0], want[0])
    loaded = index.load(tmp_path / "a")
    mem = loaded.memory_usage(tmp_path / "a")
    graph = "lists" if kind == "pq" else "graph"
    assert {"codes", graph, "vectors", "labels"} <= set(mem)
    assert mem["vectors"]["ram"] == 0  # full vectors are memory-mapped
    assert mem["vectors"]["disk"] == (tmp_path / "a" / "vectors.npy").stat().st_size
    assert mem["codes"]["ram"] > 0 and mem["codes"]["disk"] > 0
    # It grows after loading, and saves again (over its own mapped files, then elsewhere).
    loaded.add(base[2000:2100], labels[2000:2100])
    _, found = loaded.search(base[2000:2010], 1)
    np.testing.assert_array_equal(found[:, 0], labels[2000:2010])
    want = loaded.search(queries, K)
    loaded.save(tmp_path / "a")
    loaded.save(tmp_path / "b")
    for d in ("a", "b"):
        again = index.load(tmp_path / d)
        res = again.search(queries, K)
        np.testing.assert_array_equal(res[1], want[1])
        np.testing.assert_allclose(res[0], want[0], rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_untrained_save_load(data, tmp_path, kind):
    base, queries, labels = data
    idx = index.from_spec(SMALL[kind], DIM, "cosine")
    idx.add(base[:300], labels[:300])
    idx.save(tmp_path / "u")
    assert sorted(manifest(tmp_path / "u")["files"]) == ["labels.npy", "vectors.npy"]
    again = index.load(tmp_path / "u")
    assert not again.trained
    np.testing.assert_array_equal(again.search(queries, K)[1], idx.search(queries, K)[1])
    # It trains after loading once enough vectors arrive; a later untrained save into a
    # trained directory leaves no code files behind.
    again.add(base[300:1500], labels[300:1500])
    assert again.trained
    again.save(tmp_path / "u")
    fresh = index.from_spec(SMALL[kind], DIM, "cosine")
    fresh.add(base[:10], labels[:10])
    fresh.save(tmp_path / "u")
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == ["index.json", *FILES["pq"]]
    assert len(index.load(tmp_path / "u")) == 10


@pytest.mark.parametrize("kind", ["sq8", "binary"])
def test_save_rebuilds_a_graph_that_is_mostly_tombstones(data, recall_of, tmp_path, kind):
    base, queries, labels = data
    idx = index.from_spec(SPECS[kind], DIM, "cosine")
    idx.add(base[:1500], labels[:1500])
    idx.remove(labels[:600])
    f = index.FlatIndex(DIM, "cosine")
    f.add(base[600:1500], labels[600:1500])
    _, truth = f.search(queries, K)
    before = recall_of(idx.search(queries, K)[1], truth)
    idx.save(tmp_path / "r")
    assert np.load(tmp_path / "r" / "positions.npy").shape == (900,)  # the dead are gone
    assert (np.load(tmp_path / "r" / "positions.npy") >= 0).all()
    for got in (idx, index.load(tmp_path / "r")):
        assert len(got) == 900
        scores, found = got.search(queries, K)
        # Binary gives 0.88 here on 900 vectors, before and after (fewer vectors: farther
        # neighbours, which one bit per dimension tells apart less well).
        assert recall_of(found, truth) >= min(FLOORS[kind], before - 0.03)
        assert recall_of(found, truth) >= 0.85
        np.testing.assert_allclose(scores, exact_scores(f, queries, found), rtol=TOL, atol=TOL)
        assert not np.isin(found, labels[:600]).any()


# ---- retraining as the index grows ----------------------------------------------------------
# Sorted data (GloVe's rows come by word frequency): the first 1,024 vectors are a tight blob
# away from the centre (0.2x the clustered spread around one random point), the rest the
# clustered data. 64-d, cosine, HNSW ef_construction=64.
HEAD, SORTED_N, SORTED_DIM = TRAIN_SIZE, 6_000, 64
# recall@10 against flat on seed 0, added as the head then batches of 1,000 with 205 head
# vectors removed on the way (retrained once, at 4,819 live vectors) -- and with retraining
# switched off (the quantizer of the head alone, as before retraining existed); codes alone:
#   sq8     0.953 retrained (codes 0.951)   0.607 head only (codes 0.523)
#   binary  0.918 retrained (codes 0.580)   0.769 head only (codes 0.492)
SORTED_FLOORS = {"sq8": 0.90, "binary": 0.86}
SORTED_GAIN = 0.08  # retrained minus head only, at least


@pytest.fixture(scope="module")
def sorted_data(make_clustered):
    base, queries = make_clustered(SORTED_N, SORTED_DIM, n_queries=100, seed=0)
    centre = np.random.default_rng(1).normal(size=SORTED_DIM).astype(np.float32)
    base[:HEAD] = centre + 0.2 * base[:HEAD]
    labels = np.arange(SORTED_N, dtype=np.int64) * 2 + 1
    f = index.FlatIndex(SORTED_DIM, "cosine")
    f.add(base, labels)
    return base, queries, labels, f.search(queries, K)[1]


def add_sorted(idx: index.Index, base: np.ndarray, labels: np.ndarray, gone: np.ndarray) -> list:
    """The head, then batches of 1,000 (``gone`` removed before the fourth); returns the
    ``trained_on`` after each add."""
    cuts = [0, *range(HEAD, SORTED_N, 1000), SORTED_N]
    steps = []
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        if i == 4:
            idx.remove(gone)
        idx.add(base[lo:hi], labels[lo:hi])
        steps.append(idx.trained_on)
    return steps


def sq8_codes(x: np.ndarray, quantizer: np.ndarray) -> np.ndarray:
    """faiss' QT_8bit encoding: 255 * (x - min) / range, clamped to 0..1, truncated."""
    d = x.shape[1]
    vmin, vdiff = quantizer[:d], quantizer[d:]
    return (255 * np.clip((x - vmin) / vdiff, 0, 1)).astype(np.int32)


@pytest.mark.parametrize("kind", ["sq8", "binary"])
def test_retraining_recovers_from_an_unrepresentative_first_batch(
    sorted_data, recall_of, tmp_path, monkeypatch, kind
):
    base, queries, labels, truth = sorted_data
    gone = labels[:HEAD:5]
    spec = SMALL[kind]
    idx = index.from_spec(spec, SORTED_DIM, "cosine")
    live = HEAD + 3000 - gone.size + 1000  # at the fifth add: past 4 x 1,024
    assert add_sorted(idx, base, labels, gone) == [TRAIN_SIZE] * 4 + [live] * 2
    scores, found = idx.search(queries, K)
    recall = recall_of(found, truth)
    assert not np.isin(found, gone).any()
    f = index.FlatIndex(SORTED_DIM, "cosine")
    kept = np.setdiff1d(labels, gone)
    f.add(base[np.isin(labels, kept)], kept)
    np.testing.assert_allclose(scores, exact_scores(f, queries, found), rtol=TOL, atol=TOL)

    # The retrained quantizer is what one training on the same live vectors gives, and every
    # live position's code was rewritten with it (tombstones may keep their old codes).
    idx.save(tmp_path / "r")
    quantizer = np.load(tmp_path / "r" / "quantizer.npy")
    once = index.from_spec(spec, SORTED_DIM, "cosine")
    rows = np.flatnonzero(np.isin(labels[: HEAD + 4000], kept))
    once.add(base[rows], labels[rows])
    once.save(tmp_path / "once")
    np.testing.assert_array_equal(quantizer, np.load(tmp_path / "once" / "quantizer.npy"))
    positions = np.load(tmp_path / "r" / "positions.npy")
    codes = np.load(tmp_path / "r" / "codes.npy")[positions >= 0]
    x = idx.vectors(positions[positions >= 0])
    if kind == "binary":
        np.testing.assert_array_equal(codes, np.packbits(x > quantizer, axis=1))
    else:
        assert np.abs(codes.astype(np.int32) - sq8_codes(x, quantizer)).max() <= 1

    # The same adds with retraining off: the quantizer of the head alone (the old behaviour).
    monkeypatch.setattr(quantized_hnsw, "RETRAIN_GROWTH", 10**9)
    head_only = index.from_spec(spec, SORTED_DIM, "cosine")
    assert add_sorted(head_only, base, labels, gone) == [TRAIN_SIZE] * 6
    before = recall_of(head_only.search(queries, K)[1], truth)
    assert recall >= SORTED_FLOORS[kind], (recall, before)
    assert recall >= before + SORTED_GAIN, (recall, before)


@pytest.mark.parametrize("kind", ["sq8", "binary"])
def test_retrained_quantizer_is_saved_and_reopened_indexes_go_on_with_the_schedule(
    sorted_data, tmp_path, kind
):
    base, queries, labels, _ = sorted_data
    idx = index.from_spec(SMALL[kind], SORTED_DIM, "cosine")
    idx.add(base[:HEAD], labels[:HEAD])
    idx.add(base[HEAD:2000], labels[HEAD:2000])
    idx.save(tmp_path / "a")
    assert manifest(tmp_path / "a")["quantizer_trained_on"] == TRAIN_SIZE
    again = index.load(tmp_path / "a")
    assert again.trained_on == TRAIN_SIZE
    # Both cross 4 x 1,024 with the same add: each retrains on the same 4,100 live vectors.
    for got in (idx, again):
        got.add(base[2000:4000], labels[2000:4000])
        assert got.trained_on == TRAIN_SIZE
        got.add(base[4000:4100], labels[4000:4100])
        assert got.trained_on == 4100
    idx.save(tmp_path / "b")
    again.save(tmp_path / "c")
    assert manifest(tmp_path / "c")["quantizer_trained_on"] == 4100
    np.testing.assert_array_equal(
        np.load(tmp_path / "b" / "quantizer.npy"), np.load(tmp_path / "c" / "quantizer.npy")
    )
    want = again.search(queries, K)
    reopened = index.load(tmp_path / "c")
    assert reopened.trained_on == 4100
    res = reopened.search(queries, K)
    np.testing.assert_array_equal(res[1], want[1])
    np.testing.assert_array_equal(res[0], want[0])
    # Next retrain at 4 x 4,100 (not reached here).
    reopened.add(base[4100:], labels[4100:])
    assert reopened.trained_on == 4100


@pytest.mark.parametrize("kind", ["sq8", "binary"])
def test_a_file_saved_before_retraining_counts_as_trained_on_its_vectors(
    sorted_data, tmp_path, kind
):
    base, _, labels, _ = sorted_data
    idx = index.from_spec(SMALL[kind], SORTED_DIM, "cosine")
    idx.add(base[:1100], labels[:1100])
    idx.save(tmp_path / "old")
    m = manifest(tmp_path / "old")
    del m["quantizer_trained_on"]
    (tmp_path / "old" / "index.json").write_text(json.dumps(m))
    old = index.load(tmp_path / "old")
    assert old.trained_on == 1100
    old.add(base[1100:4399], labels[1100:4399])
    assert old.trained_on == 1100
    old.add(base[4399:4400], labels[4399:4400])
    assert old.trained_on == 4400
    # Emptied by removals: counted as TRAIN_SIZE, so that it does not retrain on every add.
    idx.remove(labels[:1100])
    idx.save(tmp_path / "empty")
    m = manifest(tmp_path / "empty")
    del m["quantizer_trained_on"]
    (tmp_path / "empty" / "index.json").write_text(json.dumps(m))
    assert index.load(tmp_path / "empty").trained_on == TRAIN_SIZE


# ---- corrupted files ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("saved")
    out = {}
    for kind in KINDS:
        build_small(data, kind).save(root / kind)
        out[kind] = root / kind
    return out


def all_files(kind: str) -> list[str]:
    extra = [f"inner/{name}" for name in [*INNER_FILES, "index.json"]] if kind == "pq" else []
    return FILES[kind] + extra


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("kind", KINDS)
def test_flipped_byte_is_named(saved, tmp_path, kind):
    for i, name in enumerate(all_files(kind)):
        d = copy(saved[kind], tmp_path / str(i))
        data = bytearray((d / name).read_bytes())
        data[len(data) // 2] ^= 0x40
        (d / name).write_bytes(bytes(data))
        problem = "SHA-256 does not match"
        if name == "inner/index.json":  # JSON text: a flipped byte may or may not still parse
            problem = "(SHA-256 does not match|not valid JSON)"
        with pytest.raises(index.CorruptFileError, match=rf"{name}: {problem}"):
            index.load(d)


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_file_is_named(saved, tmp_path, kind):
    for i, name in enumerate(all_files(kind)):
        d = copy(saved[kind], tmp_path / str(i))
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])
        problem = r"size \d+ bytes.*truncated"
        if name == "inner/index.json":
            problem = "(SHA-256 does not match|not valid JSON)"
        with pytest.raises(index.CorruptFileError, match=rf"{name}: {problem}"):
            index.load(d)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def rewrite(d: Path, name: str, data: bytes) -> None:
    """Replaces a data file and fixes every manifest above it (its own directory's, and for a
    file in ``inner/`` the outer one's record of the inner manifest): only the structural checks
    can catch it."""
    (d / name).write_bytes(data)
    head, _, rest = name.rpartition("/")
    where = d / head if head else d
    m = manifest(where)
    m["files"][rest] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (where / "index.json").write_text(json.dumps(m))
    if head:
        outer = manifest(d)
        raw = (where / "index.json").read_bytes()
        outer["inner_manifest_sha256"] = hashlib.sha256(raw).hexdigest()
        (d / "index.json").write_text(json.dumps(outer))


def _array(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    return lambda d: rewrite(d, name, npy_bytes(fn(np.load(d / name))))


def _config(where: str = "", **changes) -> Callable[[Path], None]:
    """Edits a manifest's config (the outer one's record of an inner manifest follows)."""

    def damage(d: Path) -> None:
        m = manifest(d / where)
        m["config"].update(changes)
        (d / where / "index.json").write_text(json.dumps(m))
        if where:
            outer = manifest(d)
            raw = (d / where / "index.json").read_bytes()
            outer["inner_manifest_sha256"] = hashlib.sha256(raw).hexdigest()
            (d / "index.json").write_text(json.dumps(outer))

    return damage


def _set(a: np.ndarray, at: int, value: int) -> np.ndarray:
    a = a.copy()
    a[at] = value
    return a


def _top_node(levels: np.ndarray) -> int:
    return int(np.argmax(levels))


def _entry_not_top(d: Path) -> None:
    levels = np.load(d / "levels.npy")
    low = int(np.flatnonzero(levels == 1)[0])
    rewrite(d, "entry.npy", npy_bytes(np.array([low, levels.max() - 1], dtype=np.int64)))


def _positions_duplicate(a: np.ndarray) -> np.ndarray:
    live = np.flatnonzero(a >= 0)
    return _set(a, int(live[1]), int(a[live[0]]))


def _inner_sha_lie(d: Path) -> None:
    m = manifest(d / "inner")
    m["count"] = m["count"]  # rewritten with other formatting: same content, other bytes
    (d / "inner" / "index.json").write_text(json.dumps(m, indent=1))


def _manifest_field(key: str, value: object) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        m = manifest(d)
        m[key] = value
        (d / "index.json").write_text(json.dumps(m))

    return damage


def _drop_file(name: str) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        m = manifest(d)
        del m["files"][name]
        (d / "index.json").write_text(json.dumps(m))

    return damage


HNSW_CRAFTED: dict[str, tuple[Callable[[Path], None], str]] = {
    "quantizer-short": (_array("quantizer.npy", lambda a: a[:-1]), "quantizer.npy"),
    "quantizer-nan": (_array("quantizer.npy", lambda a: a * np.nan), "quantizer.npy"),
    "quantizer-2d": (_array("quantizer.npy", lambda a: a[None]), "quantizer.npy"),
    "codes-short": (_array("codes.npy", lambda a: a[:-1]), "codes.npy"),
    "codes-narrow": (_array("codes.npy", lambda a: a[:, :-1]), "codes.npy"),
    "codes-int8": (_array("codes.npy", lambda a: a.astype(np.int8)), "codes.npy"),
    "levels-zero": (_array("levels.npy", lambda a: _set(a, 3, 0)), "levels.npy"),
    "levels-huge": (_array("levels.npy", lambda a: _set(a, 3, 99)), "levels.npy"),
    "levels-short": (_array("levels.npy", lambda a: a[:-1]), "levels.npy"),
    "levels-raised": (_array("levels.npy", lambda a: _set(a, 3, a[3] + 1)), "neighbors.npy"),
    "neighbors-out-of-range": (
        _array("neighbors.npy", lambda a: _set(a, 5, 10**6)),
        "neighbors.npy",
    ),
    "neighbors-below-minus-1": (_array("neighbors.npy", lambda a: _set(a, 5, -7)), "neighbors.npy"),
    "neighbors-short": (_array("neighbors.npy", lambda a: a[:-1]), "neighbors.npy"),
    "neighbors-int64": (_array("neighbors.npy", lambda a: a.astype(np.int64)), "neighbors.npy"),
    "entry-out-of-range": (_array("entry.npy", lambda a: _set(a, 0, 10**6)), "entry.npy"),
    "entry-negative": (_array("entry.npy", lambda a: _set(a, 0, -1)), "entry.npy"),
    "entry-max-level-lie": (_array("entry.npy", lambda a: _set(a, 1, a[1] + 1)), "entry.npy"),
    "entry-not-top": (_entry_not_top, "entry.npy"),
    "entry-shape": (_array("entry.npy", lambda a: a[:1]), "entry.npy"),
    "positions-duplicate": (_array("positions.npy", _positions_duplicate), "positions.npy"),
    "positions-foreign-label": (
        _array("positions.npy", lambda a: np.where(a == a.max(), 10**9, a)),
        "positions.npy",
    ),
    "positions-below-minus-1": (_array("positions.npy", lambda a: _set(a, 0, -5)), "positions.npy"),
    "positions-short": (_array("positions.npy", lambda a: a[:-1]), "positions.npy"),
    "positions-revive-a-dead-one": (
        _array("positions.npy", lambda a: np.where(a < 0, 10**9, a)),
        "positions.npy",
    ),
    "vectors-nan": (_array("vectors.npy", lambda a: a * np.nan), "vectors.npy"),
    "vectors-narrow": (_array("vectors.npy", lambda a: a[:, :-1]), "vectors.npy"),
    "labels-duplicate": (_array("labels.npy", lambda a: np.r_[a[:-1], a[:1]]), "labels.npy"),
    "labels-short": (_array("labels.npy", lambda a: a[:-1]), "vectors.npy"),
    "dim-lie": (_config(dim=DIM // 2), "vectors.npy"),
    "M-lie": (_config(M=8), "neighbors.npy"),
    "codes-unlisted": (_drop_file("codes.npy"), "index.json"),
    "trained-on-small": (_manifest_field("quantizer_trained_on", TRAIN_SIZE - 1), "index.json"),
    "trained-on-bool": (_manifest_field("quantizer_trained_on", True), "index.json"),
    "trained-on-float": (_manifest_field("quantizer_trained_on", 4096.0), "index.json"),
    "trained-on-text": (_manifest_field("quantizer_trained_on", "4096"), "index.json"),
}
PQ_CRAFTED: dict[str, tuple[Callable[[Path], None], str]] = {
    "inner-manifest-sha": (_inner_sha_lie, "inner/index.json"),
    "inner-codes-narrow": (_array("inner/codes.npy", lambda a: a[:, :-1]), "inner/codes.npy"),
    "inner-ids-foreign": (
        _array("inner/ids.npy", lambda a: np.where(a == a.max(), 10**9, a)),
        "inner/index.json",
    ),
    "inner-centroids-nan": (
        _array("inner/centroids.npy", lambda a: a * np.nan),
        "inner/centroids.npy",
    ),
    "inner-spec-lie": (_config("inner", nprobe=3), "inner/index.json"),
    "vectors-nan": (_array("vectors.npy", lambda a: a * np.nan), "vectors.npy"),
    "labels-foreign": (
        _array("labels.npy", lambda a: np.where(a == a.max(), 10**9, a)),
        "inner/index.json",
    ),
    "nlist-lie": (_config(nlist=12), "inner/index.json"),
    "untrained-with-many-vectors": (
        lambda d: (shutil.rmtree(d / "inner"), _drop_sha(d)),
        "index.json",
    ),
}


def _drop_sha(d: Path) -> None:
    m = manifest(d)
    del m["inner_manifest_sha256"]
    (d / "index.json").write_text(json.dumps(m))


CRAFTED = {
    **{
        f"{kind}-{case}": (kind, *v)
        for kind in ("sq8", "binary")
        for case, v in HNSW_CRAFTED.items()
    },
    **{f"pq-{case}": ("pq", *v) for case, v in PQ_CRAFTED.items()},
    "sq8-negative-range": (
        "sq8",
        _array("quantizer.npy", lambda a: np.r_[a[:DIM], -a[DIM:] - 1]),
        "quantizer.npy",
    ),
}


@pytest.fixture(scope="module")
def child_results(saved, tmp_path_factory, run_in_child) -> dict[str, dict]:
    """Builds every crafted directory, then loads them all in one child process (a crash fails
    its case instead of killing pytest)."""
    root = tmp_path_factory.mktemp("crafted")
    jobs = [["pristine-" + kind, str(saved[kind])] for kind in KINDS]
    for name, (kind, damage, _) in CRAFTED.items():
        d = copy(saved[kind], root / name)
        damage(d)
        jobs.append([name, str(d)])
    return run_in_child(jobs, allowed=500)


@pytest.mark.parametrize("kind", KINDS)
def test_pristine_directories_load_in_the_child(child_results, kind):
    assert child_results["pristine-" + kind]["error"] is None, child_results["pristine-" + kind]


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_file_is_refused_naming_it(child_results, case):
    got = child_results[case]
    assert got["error"] == "CorruptFileError", got
    assert f"{os.sep}{case}{os.sep}{CRAFTED[case][2]}: " in got["message"], got


def test_train_size_is_what_the_docs_say():
    assert TRAIN_SIZE == 1024
    assert index.from_spec("pq:nlist=16,nbits=6", DIM).train_size == 39 * 64


@pytest.mark.parametrize("kind", ["sq8", "binary"])
def test_a_graph_emptied_by_removals_saves_loads_and_grows(data, tmp_path, kind):
    base, queries, labels = data
    idx = index.from_spec(SMALL[kind], DIM, "l2")
    idx.add(base[:1100], labels[:1100])
    assert idx.trained
    idx.remove(labels[:1100])
    idx.save(tmp_path / "e")  # rebuilt: an empty graph, the quantizer kept
    assert np.load(tmp_path / "e" / "positions.npy").shape == (0,)
    again = index.load(tmp_path / "e")
    assert again.trained and len(again) == 0
    assert (again.search(queries, 3)[1] == -1).all()
    again.add(base[1100:1300], labels[1100:1300])
    _, found = again.search(base[1100:1110], 1)
    np.testing.assert_array_equal(found[:, 0], labels[1100:1110])


def test_binary_dimension_need_not_be_a_multiple_of_8(tmp_path, make_clustered):
    base, queries = make_clustered(1500, 13, seed=4, n_queries=10)
    idx = index.from_spec("binary", 13, "cosine")
    idx.add(base, np.arange(1500))
    assert idx.trained
    idx.save(tmp_path / "b")
    assert np.load(tmp_path / "b" / "codes.npy").shape == (1500, 2)
    again = index.load(tmp_path / "b")
    np.testing.assert_array_equal(again.search(queries, 5)[1], idx.search(queries, 5)[1])
    f = index.FlatIndex(13, "cosine")
    f.add(base, np.arange(1500))
    s, found = again.search(queries, 5)
    np.testing.assert_allclose(s, exact_scores(f, queries, found), rtol=TOL, atol=TOL)
