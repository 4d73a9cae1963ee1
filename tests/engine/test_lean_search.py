"""The lean search path (``Collection.search`` / ``search_batch``: the query checked once, payloads
copied when read, the index's shared ef gate) against the full path it replaces: the index's own
checked ``search`` with the filter, then ids and payload copies looked up hit by hit. Results must
be identical: ids, scores (bit for bit) and payloads, under filters, deletes, upserts, ef overrides,
every metric, k beyond the count, and single queries against batches."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engine import Engine
from engine.results import Hit, SearchResult

N, DIM = 600, 16


def _data(seed: int = 7) -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, DIM))
    x = (centers[rng.integers(0, 8, N)] + 0.3 * rng.normal(size=(N, DIM))).astype(np.float32)
    ids = [f"d{i}" for i in range(N)]
    # Some items carry no payload at all, some a nested one.
    payloads = [
        {} if i % 5 == 0 else {"year": 2000 + i % 25, "tag": f"t{i % 7}", "tags": [i % 3]}
        for i in range(N)
    ]
    return ids, x, payloads


def _reference(col, q: np.ndarray, k: int, where=None, **params) -> list[list[Hit]]:
    """The full path: the index's checked search, then each hit's id and payload copy."""
    contents = col._contents
    allowed = contents.allowed(where)
    scores, labels = contents.index.search(q, k, allowed=allowed, **params)
    out = []
    for srow, lrow in zip(scores, labels, strict=True):
        out.append(
            [
                Hit(contents.ids.id(int(lab)), float(s), dict(contents.payloads.get(int(lab))))
                for s, lab in zip(srow, lrow, strict=True)
                if lab >= 0
            ]
        )
    return out


def _as_tuples(hits: list[Hit]) -> list[tuple]:
    return [(h.id, h.score, h.payload) for h in hits]


def _check_congruent(col, q: np.ndarray, k: int, where=None, **params) -> None:
    ref = _reference(col, q, k, where, **params)
    batch = col.search_batch(q, k=k, where=where, **params)
    assert isinstance(batch, SearchResult)
    for i in range(q.shape[0]):
        single = col.search(q[i], k=k, where=where, **params)
        # One query against one query (exact search's matmul rounds by batch shape).
        one = _reference(col, q[i : i + 1], k, where, **params)[0]
        assert _as_tuples(single) == _as_tuples(one)
        assert _as_tuples(batch[i]) == _as_tuples(ref[i])
        assert batch.payloads[i] == [h.payload for h in ref[i]]
        ids = [d for d in batch.ids[i] if d is not None]
        assert ids == [h.id for h in ref[i]]
        found = len(ids)
        assert np.array_equal(batch.scores[i, :found], np.array([h.score for h in ref[i]]))
        assert np.all(np.isneginf(batch.scores[i, found:]))


@pytest.fixture(params=["hnsw:M=8,ef_construction=64,ef=16", "flat"])
def spec(request) -> str:
    return request.param


@pytest.fixture(params=["cosine", "ip", "l2"])
def metric(request) -> str:
    return request.param


@pytest.fixture
def col(tmp_path, spec, metric):
    eng = Engine(tmp_path / "e")
    c = eng.create_collection("c", dim=DIM, metric=metric, index=spec)
    ids, x, payloads = _data()
    c.add(ids, x, payloads)
    return c


def _queries(n: int = 12, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def test_plain_search_matches_the_full_path(col) -> None:
    _check_congruent(col, _queries(), k=10)


@pytest.mark.parametrize(
    "where",
    [
        {"year": {"$gte": 2010}},  # broad: walks the graph with a filter
        {"tag": "t3"},  # about a seventh
        {"year": 2004, "tag": "t4"},  # tiny: searched exactly
        {"year": 1900},  # matches nothing
    ],
)
def test_filtered_search_matches_the_full_path(col, where) -> None:
    _check_congruent(col, _queries(), k=10, where=where)


def test_deletes_and_upserts_match_the_full_path(col) -> None:
    ids, x, _ = _data()
    col.delete(ids[::3])
    rng = np.random.default_rng(11)
    new = rng.normal(size=(30, DIM)).astype(np.float32)
    col.upsert(ids[1:60:2], new, [{"new": i} for i in range(30)])
    q = np.concatenate([_queries(), x[1:6]])
    _check_congruent(col, q, k=10)
    _check_congruent(col, q, k=10, where={"year": {"$lt": 2012}})
    hits = col.search(x[1], k=N)
    assert not {h.id for h in hits} & (set(ids[::3]) - set(ids[1:60:2]))


def test_k_beyond_the_count_matches_the_full_path(tmp_path, metric) -> None:
    eng = Engine(tmp_path / "e")
    c = eng.create_collection("c", dim=DIM, metric=metric, index="hnsw")
    ids, x, payloads = _data()
    c.add(ids[:5], x[:5], payloads[:5])
    _check_congruent(c, _queries(3), k=9)
    assert len(c.search(x[0], k=9)) == 5


def test_ef_overrides_match_the_full_path_in_any_order(tmp_path, metric) -> None:
    eng = Engine(tmp_path / "e")
    c = eng.create_collection("c", dim=DIM, metric=metric, index="hnsw:M=4,ef_construction=16")
    ids, x, payloads = _data()
    c.add(ids, x, payloads)
    q = _queries(20)
    # The graph's ef changes only between searches; each answer is that of its own ef.
    for ef in (200, 10, 64, 10, 1, 200):
        _check_congruent(c, q, k=10, ef=ef)
    _check_congruent(c, q, k=10)  # the spec's ef again


def test_payloads_are_copies_read_lazily(col) -> None:
    ids, x, payloads = _data()
    hits = col.search(x[1], k=3)
    assert hits[0].id == "d1" or col.metric.value == "ip"
    res = col.search_batch(x[1:3], k=3)
    first = {h.id: h for h in hits}
    # Deleting after the search does not take the payloads the search found.
    col.delete([h.id for h in hits])
    for h in hits:
        assert h.payload == payloads[int(h.id[1:])]
    assert res.payloads[0] == [payloads[int(d[1:])] for d in res.ids[0]]
    # Changing a returned payload changes neither the store nor the other results.
    hits2 = col.search(x[2], k=3)
    for h in hits2:
        h.payload["year"] = -1
    again = col.search(x[2], k=3)
    assert [h.payload for h in again] == [payloads[int(h.id[1:])] for h in again]
    assert first  # the hits stay usable after the lock was released


def test_batch_rows_as_hits_carry_copies_of_the_payloads(col) -> None:
    ids, x, payloads = _data()
    res = col.search_batch(x[1:4], k=3)
    rows = [res[i] for i in range(3)]
    for i, hits in enumerate(rows):
        assert [h.id for h in hits] == res.ids[i].tolist()
        assert [h.score for h in hits] == res.scores[i].tolist()
        assert [h.payload for h in hits] == [payloads[int(h.id[1:])] for h in hits]
    rows[0][0].payload["year"] = -1  # a copy: the store does not change
    assert col.search(x[1], k=3)[0].payload == payloads[int(res.ids[0][0][1:])]
    short = col.search_batch(x[1:2], k=len(ids) + 5)  # padded rows: the hits stop at the last
    assert len(short[0]) == len(col) and short[0][-1].id == short.ids[0][len(col) - 1]


def test_hit_behaves_like_the_dataclass_it_replaced() -> None:
    h = Hit("a", 0.5)
    assert h.payload == {} and h == Hit("a", 0.5, {})
    assert h != Hit("a", 0.5, {"x": 1})
    assert repr(Hit("a", 0.5, {"x": 1})) == "Hit(id='a', score=0.5, payload={'x': 1})"
    stored = {"x": 1}
    lazy = Hit("a", 0.5, _stored=stored)
    assert lazy == Hit("a", 0.5, {"x": 1})
    lazy.payload["x"] = 2
    assert stored == {"x": 1}
    lazy.payload = {"y": 3}
    assert lazy.payload == {"y": 3}
    match Hit("b", 1.0, {"z": 0}):
        case Hit(id, score, payload):
            assert (id, score, payload) == ("b", 1.0, {"z": 0})
    with pytest.raises(TypeError):
        hash(h)


def test_search_result_without_payloads_gives_empty_dicts(tmp_path) -> None:
    eng = Engine(tmp_path / "e")
    c = eng.create_collection("c", dim=DIM, index="hnsw")
    ids, x, _ = _data()
    c.add(ids[:4], x[:4])
    res = c.search_batch(x[:2], k=6)
    assert [h.payload for h in res[1]] == [{}] * 4 and len(res[0]) == 4
    assert res.payloads == [[{}] * 4, [{}] * 4]
    assert all(h.payload == {} for h in c.search(x[0], k=6))


def test_bad_queries_are_refused_naming_the_input(col) -> None:
    with pytest.raises(ValueError, match="dimension 3, expected 16"):
        col.search(np.ones(3), k=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        col.search(np.full(DIM, np.nan), k=1)
    with pytest.raises(ValueError, match="k must be positive"):
        col.search(np.ones(DIM), k=0)
    with pytest.raises(ValueError, match="use search_batch"):
        col.search(np.ones((2, DIM)), k=1)
    with pytest.raises(ValueError, match="unknown .* search parameter"):
        col.search(np.ones(DIM), k=1, nprobe_typo=3)
    with pytest.raises(ValueError, match="queries row 1 contains NaN"):
        col.search_batch(np.array([np.ones(DIM), np.full(DIM, np.inf)]), k=1)


def test_concurrent_searches_at_several_ef_and_writes_stay_exact(tmp_path) -> None:
    eng = Engine(tmp_path / "e")
    c = eng.create_collection("c", dim=DIM, metric="ip", index="hnsw:M=8,ef_construction=64")
    ids, x, payloads = _data()
    c.add(ids[:400], x[:400], payloads[:400])
    q = _queries(8)
    errors: list[BaseException] = []

    def reader(ef: int) -> None:
        try:
            for _ in range(15):
                for v in q:
                    hits = c.search(v, k=5, ef=ef)
                    assert len(hits) == 5
                    # Whatever the writes did meanwhile, each hit is a stored item with its
                    # own score and payload.
                    for h in hits:
                        i = int(h.id[1:])
                        assert h.score == pytest.approx(float(x[i] @ v), rel=1e-5, abs=1e-5)
                        assert h.payload == payloads[i]
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(ef,)) for ef in (8, 32, 128, 8)]
    for t in threads:
        t.start()
    for s in range(400, N, 50):  # writes (add_items, resize) while the readers run
        c.add(ids[s : s + 50], x[s : s + 50], payloads[s : s + 50])
    for t in threads:
        t.join()
    assert not errors, errors[0]
    for ef in (8, 32, 128):
        _check_congruent(c, q, k=5, ef=ef)


@pytest.mark.parametrize("prefix", ["id", "ïd-é"])  # ASCII ids, and ids of multi-byte UTF-8
def test_batch_ids_decoded_in_bulk_match_one_by_one(tmp_path, prefix) -> None:
    eng = Engine(tmp_path / "e")
    c = eng.create_collection("c", dim=DIM, index="flat")
    _, x, _ = _data()
    ids = [f"{prefix}{i}" for i in range(N)]
    c.add(ids, x)
    c.delete(ids[:7])
    q = _queries(40)  # 40 x 12 hits: past the bulk decoding threshold
    res = c.search_batch(q, k=12)
    for i in range(q.shape[0]):
        assert list(res.ids[i]) == [h.id for h in c.search(q[i], k=12)]
    assert {type(d) for d in res.ids.reshape(-1)} == {str}
    few = c.search_batch(q[:1], k=N)  # fewer than k live: padded with None
    assert sum(d is not None for d in few.ids[0]) == N - 7
