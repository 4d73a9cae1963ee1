"""Collection and Engine: semantics, filters, persistence, corruption and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import CollectionExistsError, CollectionNotFoundError, Engine
from index import CorruptFileError, recall_at_k

DIM = 16


def data(n: int = 300, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    ids = [f"doc-{i}" for i in range(n)]
    payloads = [
        {"year": 2000 + i % 25, "lang": ["en", "fr", "de"][i % 3], "score": float(i % 7) / 2}
        for i in range(n)
    ]
    return ids, x, payloads


@pytest.fixture
def eng(tmp_path):
    return Engine(tmp_path / "data")


@pytest.mark.parametrize("spec", ["flat", "hnsw", "ivf:nlist=4,nprobe=4"])
def test_add_search_get_delete_upsert(eng, spec):
    ids, x, payloads = data()
    col = eng.create_collection("docs", dim=DIM, index=spec)
    col.add(ids, x, payloads)
    assert len(col) == 300
    hits = col.search(x[7], k=5)
    assert hits[0].id == "doc-7" and hits[0].payload == payloads[7]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)

    assert col.delete(["doc-7", "missing"]) == 1
    assert all(h.id != "doc-7" for h in col.search(x[7], k=20))
    assert col.get(["doc-7", "doc-8"])[0] is None

    col.upsert(["doc-8"], x[9:10], [{"year": 1999}])
    rec = col.get(["doc-8"])[0]
    assert rec is not None and rec.payload == {"year": 1999}
    np.testing.assert_allclose(rec.vector, x[9])
    assert len(col) == 299
    top = {h.id for h in col.search(x[9], k=2)}
    assert top == {"doc-8", "doc-9"}


def test_int_ids_are_strings(eng):
    col = eng.create_collection("c", dim=DIM, index="flat")
    col.add([1, 2], np.eye(2, DIM))
    assert col.search(np.eye(1, DIM)[0], k=1)[0].id == "1"
    assert 2 in col and "2" in col


def test_search_batch_shapes_and_padding(eng):
    ids, x, _ = data(5)
    col = eng.create_collection("c", dim=DIM, index="flat")
    col.add(ids, x)
    res = col.search_batch(x[:3], k=8)
    assert res.ids.shape == (3, 8) and res.scores.shape == (3, 8)
    assert res.ids[0, 0] == "doc-0"
    assert res.ids[0, 5] is None and res.scores[0, 5] == -np.inf
    assert [h.id for h in res[1]][:1] == ["doc-1"] and len(res[1]) == 5


@pytest.mark.parametrize(
    "where",
    [
        {"lang": "fr"},
        {"year": {"$gte": 2020}},
        {"year": {"$in": [2001, 2003]}, "lang": {"$nin": ["de"]}},
        {"$or": [{"year": 2000}, {"score": {"$lt": 0.5}}]},
        {"$and": [{"year": {"$gt": 2005}}, {"year": {"$lte": 2007}}]},
        {"year": 1800},
    ],
)
@pytest.mark.parametrize("spec", ["flat", "hnsw"])
def test_filtered_search_equals_brute_force(eng, where, spec):
    ids, x, payloads = data(2000)
    col = eng.create_collection("c", dim=DIM, index=spec)
    col.add(ids, x, payloads)
    oracle = eng.create_collection("o", dim=DIM, index="flat")
    oracle.add(ids, x, payloads)
    q = np.random.default_rng(1).standard_normal((10, DIM)).astype(np.float32)
    res = col.search_batch(q, k=10, where=where)
    exp = oracle.search_batch(q, k=10, where=where)
    allowed = set(oracle._payloads.matching(where, oracle._live_labels).tolist())
    for row in res.ids:
        for doc in row:
            if doc is not None:
                assert col._contents.ids.label(doc) in allowed
    # Exact for flat and for selective filters; hnsw walk otherwise. (None padding never counts:
    # no match left, as for {"year": 1800}, is a recall of 1.)
    assert recall_at_k(res.ids, exp.ids) >= 0.9


def test_persistence_round_trip(tmp_path):
    ids, x, payloads = data(3000)
    q = x[:20] + 0.01
    with Engine(tmp_path) as eng:
        for spec in ("flat", "hnsw", "ivf:nlist=8,nprobe=2", "ivf:nlist=8,pq=4"):
            name = spec.split(":")[0] + str(len(spec))
            col = eng.create_collection(name, dim=DIM, metric="l2", index=spec)
            col.add(ids, x, payloads)
            col.delete(ids[:10])
            col.upsert(ids[10:12], x[20:22], [{"year": 1}, {"year": 2}])
    eng2 = Engine(tmp_path)
    eng3 = Engine(tmp_path)
    for name in eng2.list_collections():
        before = eng3.open_collection(name)
        after = eng2.open_collection(name)
        assert before is not after
        a, b = before.search_batch(q, k=10), after.search_batch(q, k=10)
        assert (a.ids == b.ids).all() and np.array_equal(a.scores, b.scores)
        assert len(after) == 2990
        assert after.get(["doc-11"])[0].payload == {"year": 2}
        assert after.get(["doc-3"])[0] is None
        assert after.index_spec == before.index_spec


def test_unflushed_generation_is_ignored(tmp_path):
    ids, x, _ = data(50)
    eng = Engine(tmp_path)
    col = eng.create_collection("c", dim=DIM, index="flat")
    col.add(ids, x)
    col.flush()
    # A crash mid-checkpoint leaves files of the next generation but the old manifest.
    (col.path / "vectors.99.npy").write_bytes(b"partial")
    (col.path / "index.99").mkdir()
    reopened = Engine(tmp_path).open_collection("c")
    assert len(reopened) == 50
    assert not (col.path / "vectors.99.npy").exists()


def test_corrupted_collection_files_are_named(tmp_path):
    ids, x, _ = data(100)
    eng = Engine(tmp_path)
    col = eng.create_collection("c", dim=DIM, index="hnsw")
    col.add(ids, x)
    eng.close()
    vec = next(col.path.glob("vectors.*.npy"))
    raw = bytearray(vec.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    vec.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=vec.name):
        Engine(tmp_path).open_collection("c")


def test_manifest_lying_about_dim(tmp_path):
    ids, x, _ = data(100)
    eng = Engine(tmp_path)
    col = eng.create_collection("c", dim=DIM, index="flat")
    col.add(ids, x)
    eng.close()
    mpath = col.path / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["config"]["dim"] = DIM * 2
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(CorruptFileError, match="vectors"):
        Engine(tmp_path).open_collection("c")


def test_engine_collections(eng):
    eng.create_collection("a", dim=4)
    eng.create_collection("b-2", dim=4, metric="ip", index="flat")
    assert eng.list_collections() == ["a", "b-2"]
    with pytest.raises(CollectionExistsError, match="'a'"):
        eng.create_collection("a", dim=4)
    assert eng.create_collection("a", dim=4, exist_ok=True) is eng.open_collection("a")
    eng.drop_collection("a")
    assert eng.list_collections() == ["b-2"]
    with pytest.raises(CollectionNotFoundError, match="'a'"):
        eng.open_collection("a")
    with pytest.raises(CollectionNotFoundError):
        eng.drop_collection("nope")


@pytest.mark.parametrize(
    "name", ["../evil", "a/b", "", ".hidden", "x" * 65, "sp ace", None, "..", "/abs"]
)
def test_invalid_collection_names(eng, name):
    with pytest.raises(ValueError, match="invalid collection name"):
        eng.create_collection(name, dim=4)
    with pytest.raises(ValueError, match="invalid collection name"):
        eng.open_collection(name)
    assert not any(eng.path.parent.glob("evil*"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "dim"),
        ({"dim": 4, "metric": "hamming"}, "unknown metric 'hamming'"),
        ({"dim": 4, "index": "hnsw:MM=3"}, r"unknown hnsw parameter\(s\) \['MM'\]"),
        ({"dim": 4, "index": "annoy"}, "unknown index kind 'annoy'"),
        ({"dim": 4, "index": "hnsw:M"}, "malformed index spec parameter 'M'"),
    ],
)
def test_bad_collection_config(eng, kwargs, match):
    with pytest.raises(ValueError, match=match):
        eng.create_collection("c", **kwargs)
    assert eng.list_collections() == []


def test_bad_writes_change_nothing(eng):
    ids, x, payloads = data(10)
    col = eng.create_collection("c", dim=DIM, index="hnsw")
    col.add(ids, x, payloads)
    cases = [
        (lambda: col.add(["n1"], np.ones((1, DIM + 1))), ValueError, "dimension 17, expected 16"),
        (lambda: col.add(["n1"], np.full((1, DIM), np.nan)), ValueError, "NaN or inf"),
        (lambda: col.add([], np.empty((0, DIM))), ValueError, "empty batch"),
        (lambda: col.add(["n1", "n1"], np.ones((2, DIM))), ValueError, "duplicate id 'n1'"),
        (
            lambda: col.add(["n1", "\ud800x"], np.ones((2, DIM))),
            ValueError,
            "id 1 .* is not valid Unicode text",
        ),
        (lambda: col.add(["doc-1"], np.ones((1, DIM))), ValueError, "'doc-1' already exists"),
        (lambda: col.add(["n1", "n2"], np.ones((1, DIM))), ValueError, "1 vectors for 2 ids"),
        (lambda: col.add(["n1"], np.ones((1, DIM)), [{"year": "x"}]), ValueError, "field 'year'"),
        (lambda: col.add(["n1"], np.ones((1, DIM)), [{"_label": 1}]), ValueError, "reserved"),
        (lambda: col.add(["n1"], np.ones((1, DIM)), [{"f": float("inf")}]), ValueError, "finite"),
        (lambda: col.add(["n1"], np.ones((1, DIM)), [{"f": object()}]), TypeError, "JSON-like"),
        (lambda: col.add([None], np.ones((1, DIM))), TypeError, "id 0"),
        (lambda: col.upsert(["doc-1"], np.ones((1, 3))), ValueError, "dimension 3"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
    assert len(col) == 10
    assert col.get(["n1"]) == [None]
    assert col.get(["doc-1"])[0].payload == payloads[1]


def test_bad_searches(eng):
    ids, x, _ = data(10)
    col = eng.create_collection("c", dim=DIM, index="hnsw")
    col.add(ids, x)
    with pytest.raises(ValueError, match="k must be positive"):
        col.search(x[0], k=0)
    with pytest.raises(TypeError, match="k must be an integer"):
        col.search(x[0], k=2.5)
    with pytest.raises(ValueError, match="dimension 3"):
        col.search(np.ones(3), k=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        col.search(np.full(DIM, np.inf), k=1)
    with pytest.raises(ValueError, match="search_batch"):
        col.search(x[:2], k=1)
    with pytest.raises(ValueError, match="empty batch"):
        col.search_batch(np.empty((0, DIM)), k=1)
    with pytest.raises(ValueError, match=r"unknown hnsw search parameter\(s\) \['nprobe'\]"):
        col.search(x[0], k=1, nprobe=3)
    with pytest.raises(ValueError, match=r"\$regex"):
        col.search(x[0], k=1, where={"lang": {"$regex": "e.*"}})
    with pytest.raises(TypeError, match="where must be a dict"):
        col.search(x[0], k=1, where=[("lang", "en")])


@pytest.mark.parametrize("spec", ["flat", "hnsw", "ivf:nlist=4"])
def test_reserve_allocates_ahead_and_changes_no_result(tmp_path, spec):
    x = np.random.default_rng(5).standard_normal((300, 8)).astype(np.float32)
    eng = Engine(tmp_path / "data")
    a = eng.create_collection("a", dim=8, index=spec)
    b = eng.create_collection("b", dim=8, index=spec)
    b.reserve(5000)
    with pytest.raises(ValueError, match="reserve"):
        b.reserve(-1)
    for col in (a, b):
        for i in range(0, 300, 70):
            col.add([f"d{j}" for j in range(i, min(i + 70, 300))], x[i : i + 70])
    assert b._vectors.tail.shape[0] == 5000 and len(b) == 300
    if spec == "hnsw":
        assert b._index._g.get_max_elements() >= 5000
    ra, rb = a.search_batch(x[:20], k=5), b.search_batch(x[:20], k=5)
    assert (ra.ids == rb.ids).all()
    b.flush()
    again = Engine(tmp_path / "data").open_collection("b")
    assert (again.search_batch(x[:20], k=5).ids == rb.ids).all()


def test_items_without_payloads_are_all_null_rows_for_filters(tmp_path):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("c", dim=4, index="flat")
    x = np.eye(4, dtype=np.float32)
    col.add(["a", "b", "c", "d"], x, [{"year": 2020}, None, {"tag": "x"}, {}])
    assert col._payloads.by_label.keys() == {0, 2}  # nothing held for b and d

    def ids(where, c=col):
        return sorted(h.id for h in c.search(x[0], k=10, where=where))

    cases = {
        json.dumps({"year": 2020}): ["a"],
        json.dumps({"year": {"$ne": 2020}}): ["b", "c", "d"],
        json.dumps({"tag": {"$nin": ["x"]}}): ["a", "b", "d"],
        json.dumps({"$or": [{"tag": "x"}, {"year": {"$gte": 2000}}]}): ["a", "c"],
    }
    for where, want in cases.items():
        assert ids(json.loads(where)) == want, where
    col.upsert(["b"], x[1:2], [{"year": 1999}])  # b gains a payload
    assert ids({"year": {"$ne": 2020}}) == ["b", "c", "d"] and ids({"year": 1999}) == ["b"]
    col.delete(["d"])
    eng.close()
    again = Engine(tmp_path / "data").open_collection("c")
    assert ids({"year": {"$ne": 2020}}, again) == ["b", "c"]
    assert again.get(["c", "a"])[0].payload == {"tag": "x"} and again.get(["b"])[0].payload


def test_ids_lists_the_live_ids(tmp_path):
    from engine import Engine

    col = Engine(tmp_path).create_collection("c", dim=2, index="flat")
    assert col.ids() == []
    col.add(["a", "b", "c"], np.eye(3, 2))
    col.delete(["b"])
    col.upsert(["a"], np.ones((1, 2)))
    assert col.ids() == ["c", "a"] and len(col.ids()) == len(col)
