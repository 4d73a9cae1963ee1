"""Every rpc through the client gives what the embedded engine gives (qdrant-style congruence).

The same operations go to an embedded ``Engine`` and, through ``server.Client``, to a server over
another data directory; every read must agree (ids and payloads exactly, scores to float32
rounding: the server answers single searches from batches).
"""

from __future__ import annotations

import hnswlib
import numpy as np
import pytest

from engine import CollectionExistsError, CollectionNotFoundError, Engine
from server import Client, RequestError

DIM = 16


def corpus(n: int = 240, seed: int = 1338):
    """Clustered vectors (not completely random, still challenging) with varied payloads."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, DIM))
    x = centres[rng.integers(0, 8, n)] + 0.4 * rng.normal(size=(n, DIM))
    ids = [f"doc-{i}" for i in range(n)]
    payloads = [
        {
            "year": 2000 + i % 25,
            "tag": "abc"[i % 3],
            "score": round(i / 7 + 0.01, 4),
            "flags": [i % 2 == 0, i % 5 == 0],
            "meta": {"src": f"s{i % 4}", "rank": i},
        }
        for i in range(n)
    ]
    return ids, x.astype(np.float32), payloads, rng.normal(size=(12, DIM)).astype(np.float32)


def assert_same_hits(a, b):
    assert [h.id for h in a] == [h.id for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5, atol=1e-5)
    assert [h.payload for h in a] == [h.payload for h in b]


def assert_same_result(a, b):
    assert a.ids.shape == b.ids.shape
    assert (a.ids == b.ids).all()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-5)
    assert a.payloads == b.payloads
    for i in range(len(a)):
        assert_same_hits(a[i], b[i])


@pytest.fixture(autouse=True)
def serial_hnsw_builds(monkeypatch):
    """hnswlib inserts with every core by default, and its graph then depends on how the threads
    interleave: two sides given the same operations hold different graphs, whose approximate
    answers may differ. One thread makes the graph a function of the operations, so an HNSW
    collection's answers can be compared exactly like a flat one's (the server runs in-process)."""
    add_items = hnswlib.Index.add_items

    def serial(self, data, ids=None, num_threads=-1, replace_deleted=False):
        return add_items(self, data, ids, 1, replace_deleted)

    monkeypatch.setattr(hnswlib.Index, "add_items", serial)


@pytest.fixture
def pair(tmp_path, start_server):
    """(embedded engine, client of a server over another directory)."""
    eng = Engine(tmp_path / "embedded")
    srv = start_server(max_batch=8, max_wait_ms=1.0)
    client = Client(srv.address)
    yield eng, client
    client.close()
    eng.close()


@pytest.mark.parametrize("index", ["flat", "hnsw:M=16,ef_construction=100,ef=64"])
def test_vector_collection_congruence(pair, index):
    eng, client = pair
    ids, x, payloads, queries = corpus()
    cols = [
        side.create_collection("docs", dim=DIM, index=index, metric="cosine")
        for side in (eng, client)
    ]
    for col in cols:
        col.add(ids[:200], x[:200], payloads[:200])
        col.upsert(ids[150:], x[150:] * 1.5, payloads[150:])  # replaces 50, adds 40
    emb, rem = cols
    assert eng.list_collections() == client.list_collections() == ["docs"]
    assert len(emb) == len(rem) == 240
    assert emb.config() == rem.config()
    d_emb, d_rem = emb.describe(), rem.describe()
    assert {k: v for k, v in d_emb.items() if k != "bytes_on_disk"} == {
        k: v for k, v in d_rem.items() if k != "bytes_on_disk"
    }

    def check_reads():
        for q in queries:  # single searches (micro-batched on the server)
            assert_same_hits(emb.search(q, k=7), rem.search(q, k=7))
            where = {"year": {"$gte": 2012}, "tag": {"$in": ["a", "c"]}}
            assert_same_hits(emb.search(q, k=5, where=where), rem.search(q, k=5, where=where))
        assert_same_result(emb.search_batch(queries, k=9), rem.search_batch(queries, k=9))
        sel = {"year": 2003}  # very selective: rows padded with None
        assert_same_result(
            emb.search_batch(queries, k=20, where=sel), rem.search_batch(queries, k=20, where=sel)
        )
        probe = ["doc-3", "nope", "doc-199", "doc-239"]
        for a, b in zip(emb.get(probe), rem.get(probe), strict=True):
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert a.id == b.id and a.payload == b.payload
                np.testing.assert_array_equal(a.vector, b.vector)

    check_reads()
    assert emb.delete(["doc-1", "doc-2", "zz"]) == rem.delete(["doc-1", "doc-2", "zz"]) == 2
    assert emb.delete(ids[100:130]) == rem.delete(ids[100:130]) == 30
    assert len(emb) == len(rem) == 208
    check_reads()
    assert ("doc-1" in rem) is ("doc-1" in emb) is False
    assert ("doc-0" in rem) is ("doc-0" in emb) is True


def test_search_params_pass_through(pair):
    eng, client = pair
    ids, x, payloads, queries = corpus()
    cols = [c.create_collection("p", dim=DIM, index="hnsw:M=8,ef=16") for c in (eng, client)]
    for col in cols:
        col.add(ids, x, payloads)
    emb, rem = cols
    for q in queries[:4]:
        assert_same_hits(emb.search(q, k=10, ef=200), rem.search(q, k=10, ef=200))
    assert_same_result(
        emb.search_batch(queries, k=10, ef=50), rem.search_batch(queries, k=10, ef=50)
    )
    with pytest.raises(ValueError):
        emb.search(queries[0], k=3, bogus=1)
    with pytest.raises(ValueError):
        rem.search(queries[0], k=3, bogus=1)


def test_text_collection_congruence(pair, tiny_st_dir):
    eng, client = pair
    docs = [
        "the cat sat on the mat",
        "dogs chase cats in the park",
        "vector search finds nearest neighbours",
        "gRPC carries protobuf messages",
        "an index maps vectors to documents",
        "the quick brown fox jumps over the lazy dog",
        "coffee keeps engineers awake",
        "batching amortises encoder calls",
    ]
    ids = [f"t{i}" for i in range(len(docs))]
    payloads = [{"n": i, "even": i % 2 == 0} for i in range(len(docs))]
    cols = [
        side.create_collection("texts", encoder=str(tiny_st_dir), index="flat")
        for side in (eng, client)
    ]
    for col in cols:
        col.add(ids, texts=docs, payloads=payloads)
    emb, rem = cols
    assert rem.encoder_spec is not None and rem.dim == emb.dim == 32
    queries = ["a cat on a mat", "nearest neighbour search", "protobuf over grpc", "dog"]
    for q in queries:
        assert_same_hits(emb.search(q, k=4), rem.search(q, k=4))
        assert_same_hits(
            emb.search(q, k=3, where={"even": True}), rem.search(q, k=3, where={"even": True})
        )
    assert_same_result(emb.search_batch(queries, k=5), rem.search_batch(queries, k=5))
    # vectors work on a text collection too
    v = emb.get(["t2"])[0]
    assert v is not None
    assert_same_hits(emb.search(v.vector, k=3), rem.search(v.vector, k=3))


def test_collection_management_congruence(pair):
    eng, client = pair
    for side in (eng, client):
        side.create_collection("a", dim=4, index="flat", metric="l2")
        side.create_collection("b", dim=4, index="flat", metric="ip")
        assert side.create_collection("a", dim=4, index="flat", exist_ok=True).name == "a"
        with pytest.raises(CollectionExistsError):
            side.create_collection("a", dim=4)
        with pytest.raises(CollectionNotFoundError):
            side.open_collection("zz")
        with pytest.raises(CollectionNotFoundError):
            side.drop_collection("zz")
        with pytest.raises(ValueError):
            side.create_collection("../evil", dim=4)
        with pytest.raises(ValueError):
            side.create_collection("c", dim=4, index="nope")
    assert eng.list_collections() == client.list_collections() == ["a", "b"]
    assert eng.open_collection("b").config() == client.open_collection("b").config()
    eng.drop_collection("a")
    client.drop_collection("a")
    assert eng.list_collections() == client.list_collections() == ["b"]
    # add() refuses existing ids on both sides
    for side in (eng, client):
        col = side.open_collection("b")
        col.add(["x"], [[1, 2, 3, 4]], [{"k": 1.5}])
        with pytest.raises(ValueError, match="already exists"):
            col.add(["x"], [[1, 2, 3, 4]])
    emb, rem = eng.open_collection("b"), client.open_collection("b")
    assert emb.get(["x"])[0].payload == rem.get(["x"])[0].payload == {"k": 1.5}
    with pytest.raises(RequestError):
        rem.add(["y"], [[1, 2, 3]])


@pytest.mark.parametrize("index", ["chamfer", "muvera:k_sim=3,d_proj=8,r_reps=4,inner=flat"])
def test_multi_vector_congruence(pair, index):
    """Token-set collections: queries and documents are (n, dim) arrays, scores are Chamfer."""
    eng, client = pair
    rng = np.random.default_rng(5)
    docs = [rng.normal(size=(int(rng.integers(2, 7)), 8)).astype(np.float32) for _ in range(40)]
    ids = [f"m{i}" for i in range(40)]
    payloads = [{"g": i % 4} for i in range(40)]
    emb = eng.create_collection("mv", dim=8, index=index)
    emb.add(ids, docs, payloads)
    rem = client.create_collection("mv", dim=8, index=index)
    rem.add(ids, docs, payloads)
    assert rem.describe()["count"] == len(emb) == 40
    kind = index.split(":")[0]
    assert emb.config()["index"].split(":")[0] == rem.config()["index"].split(":")[0] == kind
    queries = [d[:2] + 0.1 for d in docs[:6]]

    def check():
        for q in queries:  # single searches (micro-batched on the server)
            assert_same_hits(emb.search(q, k=5), rem.search(q, k=5))
            assert_same_hits(emb.search(q, k=3, where={"g": 1}), rem.search(q, k=3, where={"g": 1}))
        assert_same_result(emb.search_batch(queries, k=4), rem.search_batch(queries, k=4))
        for a, b in zip(emb.get(["m0", "zz", "m7"]), rem.get(["m0", "zz", "m7"]), strict=True):
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert a.vector.shape == b.vector.shape and a.payload == b.payload
                np.testing.assert_allclose(a.vector, b.vector, rtol=1e-3, atol=1e-3)

    # Not vacuous: each query (two tokens of a document, shifted) finds that document first.
    assert [rem.search(q, k=1)[0].id for q in queries] == [f"m{i}" for i in range(6)]
    check()
    new = [rng.normal(size=(3, 8)).astype(np.float32) for _ in range(2)]
    for col in (emb, rem):
        col.upsert(["m0", "m1"], new, [{"g": 9}, {"g": 9}])
        col.delete(["m2", "m3"])
    check()
    with pytest.raises(ValueError):
        rem.search(np.ones(8), k=3)  # one dense vector to a token-set collection
