"""Lexical and hybrid search over gRPC: the client gives what the embedded engine gives
(congruence), bad mode / fusion / text input is refused with INVALID_ARGUMENT naming the problem,
and the micro-batcher merges only searches of the same mode and fusion settings."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import numpy as np
import pytest

from engine import Engine
from engine.fusion import Fusion
from server import Client, ServerConfig
from server.batcher import MicroBatcher
from server.pb import vecdex_pb2 as pb
from server.pb import vecdex_pb2_grpc as pb_grpc

from .conftest import ServerThread

DIM = 8
TOPICS = {
    "cats": "cat kitten purr whiskers meow feline paw nap",
    "space": "rocket orbit planet star galaxy launch comet moon",
    "cooking": "recipe oven flour sugar bake dough butter salt",
    "music": "guitar melody chord rhythm song drum bass tempo",
}
NAMES = (
    "amber birch cedar dune ember fjord grove heath iris jade kelp lumen moss nectar opal pine "
    "quartz reed sage tundra umber vale willow xenon yarrow zephyr aspen basil clover dahlia "
    "elm fern"
).split()
C = grpc.StatusCode


def corpus(n: int = 32, seed: int = 1338):
    """Texts on four topics (each with a word of its own), clustered vectors and payloads."""
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)
    centres = rng.normal(size=(len(topics), DIM))
    ids, texts, payloads, vectors = [], [], [], []
    for i in range(n):
        t = i % len(topics)
        words = rng.choice(TOPICS[topics[t]].split(), size=4, replace=False).tolist()
        other = rng.choice(TOPICS[topics[(t + 1) % len(topics)]].split(), size=1).tolist()
        texts.append(" ".join([NAMES[i], *words, *other]))
        ids.append(f"d{i}")
        payloads.append({"n": i, "topic": topics[t], "even": i % 2 == 0})
        vectors.append(centres[t] + 0.5 * rng.normal(size=DIM))
    queries = ["purring kitten nap", "rocket launch to the moon", "bake bread with butter", "drum"]
    qvecs = centres[[0, 1, 2, 3]] + 0.5 * rng.normal(size=(4, DIM))
    return ids, texts, payloads, np.asarray(vectors, np.float32), queries, qvecs.astype(np.float32)


def assert_same_hits(a, b):
    assert [h.id for h in a] == [h.id for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-6, atol=1e-6)
    assert [h.payload for h in a] == [h.payload for h in b]


def assert_same_result(a, b):
    assert a.ids.shape == b.ids.shape
    assert (a.ids == b.ids).all()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-6)
    assert a.payloads == b.payloads


def without_size(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "bytes_on_disk"}


@pytest.fixture
def pair(tmp_path, start_server):
    """(embedded engine, client of a server over another directory)."""
    eng = Engine(tmp_path / "embedded")
    srv = start_server(max_batch=8, max_wait_ms=1.0)
    client = Client(srv.address)
    yield eng, client
    client.close()
    eng.close()


# Every hybrid setting a search can name (fusion=None: the collection's default).
HYBRID = [
    {},
    {"fusion": "rrf"},
    {"fusion": "rrf", "rrf_k": 5.0, "weight": 0.7, "depth": 6},
    {"fusion": "weighted"},
    {"fusion": "weighted", "weight": 0.25, "depth": 3},
]
WHERE = [None, {"even": True}, {"topic": {"$in": ["cats", "music"]}, "n": {"$gte": 4}}]


def test_text_collection_lexical_and_hybrid_congruence(pair, tiny_st_dir):
    """Text queries on an encoder collection (lexical on by default): encoded for the dense side
    and used as they are for the lexical one."""
    eng, client = pair
    ids, texts, payloads, _, queries, _ = corpus()
    cols = [
        side.create_collection("texts", encoder=str(tiny_st_dir), index="flat")
        for side in (eng, client)
    ]
    for col in cols:
        col.add(ids[:24], texts=texts[:24], payloads=payloads[:24])
        col.upsert(ids[20:], texts=texts[20:], payloads=payloads[20:])
    emb, rem = cols
    assert rem.lexical and emb.lexical and rem.text_field is None
    assert without_size(emb.describe()) == without_size(rem.describe())
    d = rem.describe()
    assert d["lexical"]["method"] == "lucene" and d["lexical_count"] == 32
    assert d["fusion"] == Fusion().to_dict() and "fusion" not in rem.config()  # the default

    def check() -> None:
        for where in WHERE:
            for q in queries:
                assert_same_hits(
                    emb.search(q, k=5, where=where, mode="lexical"),
                    rem.search(q, k=5, where=where, mode="lexical"),
                )
                for fusion in HYBRID:
                    assert_same_hits(
                        emb.search(q, k=5, where=where, mode="hybrid", **fusion),
                        rem.search(q, k=5, where=where, mode="hybrid", **fusion),
                    )
            assert_same_result(
                emb.search_batch(queries, k=6, where=where, mode="lexical"),
                rem.search_batch(queries, k=6, where=where, mode="lexical"),
            )
            for fusion in HYBRID:
                assert_same_result(
                    emb.search_batch(queries, k=6, where=where, mode="hybrid", **fusion),
                    rem.search_batch(queries, k=6, where=where, mode="hybrid", **fusion),
                )

    check()
    assert emb.delete(["d1", "d6"]) == rem.delete(["d1", "d6"]) == 2
    check()
    # A new default fusion: the same on both sides, shown by describe, used by searches naming none.
    assert emb.set_fusion("rrf", rrf_k=10.0, depth=8) == rem.set_fusion("rrf", rrf_k=10.0, depth=8)
    assert rem.fusion == emb.fusion == Fusion("rrf", 0.5, 10.0, 8)
    assert rem.describe()["fusion"] == {"method": "rrf", "weight": 0.5, "rrf_k": 10.0, "depth": 8}
    assert without_size(emb.describe()) == without_size(rem.describe())
    assert emb.config() == rem.config()
    check()


def test_vector_collection_with_texts_congruence(pair):
    """A raw-vector collection with lexical=True: vectors plus texts in, a vector plus a text per
    query out (hybrid), a text alone (lexical)."""
    eng, client = pair
    ids, texts, payloads, x, queries, qvecs = corpus()
    cols = [
        side.create_collection("vec", dim=DIM, index="flat", metric="ip", lexical=True)
        for side in (eng, client)
    ]
    for col in cols:
        col.add(ids[:24], x[:24], payloads[:24], texts=texts[:24])
        col.upsert(ids[20:], x[20:] * 1.5, payloads[20:], texts=texts[20:])
    emb, rem = cols
    assert rem.lexical and rem.encoder_spec is None
    assert without_size(emb.describe()) == without_size(rem.describe())

    def check() -> None:
        for where in WHERE:
            for q, v in zip(queries, qvecs, strict=True):
                for side in (emb, rem):  # a text alone and the text as the query: one search
                    assert_same_hits(
                        side.search(None, k=5, where=where, mode="lexical", text=q),
                        side.search(q, k=5, where=where, mode="lexical"),
                    )
                assert_same_hits(
                    emb.search(None, k=5, where=where, mode="lexical", text=q),
                    rem.search(None, k=5, where=where, mode="lexical", text=q),
                )
                for fusion in HYBRID:
                    assert_same_hits(
                        emb.search(v, k=5, where=where, mode="hybrid", text=q, **fusion),
                        rem.search(v, k=5, where=where, mode="hybrid", text=q, **fusion),
                    )
                assert_same_hits(emb.search(v, k=5, where=where), rem.search(v, k=5, where=where))
            assert_same_result(
                emb.search_batch(None, k=6, where=where, mode="lexical", texts=queries),
                rem.search_batch(None, k=6, where=where, mode="lexical", texts=queries),
            )
            for fusion in HYBRID:
                assert_same_result(
                    emb.search_batch(
                        qvecs, k=6, where=where, mode="hybrid", texts=queries, **fusion
                    ),
                    rem.search_batch(
                        qvecs, k=6, where=where, mode="hybrid", texts=queries, **fusion
                    ),
                )

    check()
    assert emb.delete(["d0", "d5", "d30"]) == rem.delete(["d0", "d5", "d30"]) == 3
    check()


def test_text_field_and_lexical_options_congruence(pair):
    """BM25 options and a payload text field travel to the server as the engine takes them."""
    eng, client = pair
    ids, texts, payloads, x, queries, _ = corpus(16)
    options = {"stopwords": "none", "language": "none", "k1": 1.2, "b": 0.5, "method": "robertson"}
    rows = [{**p, "body": t} for p, t in zip(payloads, texts, strict=True)]
    cols = [
        side.create_collection("tf", dim=DIM, index="flat", lexical=options, text_field="body")
        for side in (eng, client)
    ]
    for col in cols:
        col.add(ids, x, rows)
    emb, rem = cols
    assert rem.text_field == emb.text_field == "body"
    d = rem.describe()
    assert d["text_field"] == "body" and d["lexical"] == options
    assert without_size(emb.describe()) == without_size(d)
    for q in queries:
        assert_same_hits(emb.search(q, k=4, mode="lexical"), rem.search(q, k=4, mode="lexical"))
    # No lexical index: the default without an encoder, or said outright.
    for side in (eng, client):
        assert "lexical" not in side.create_collection("plain", dim=DIM, index="flat").describe()
        col = side.create_collection("off", dim=DIM, index="flat", lexical=False)
        assert col.lexical is False


# ---- batching ----------------------------------------------------------------------------------
async def fire(address: str, requests: list[pb.SearchRequest]) -> list[pb.SearchResponse]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.VecDexStub(channel)
        return await asyncio.gather(*(stub.Search(r, timeout=60) for r in requests))


def test_concurrent_hybrid_searches_batch_by_settings(start_server, tiny_st_dir):
    """Concurrent hybrid text searches share encoder calls; different settings never share a
    batch (each answer carries its own fusion's top score)."""
    srv = start_server(max_batch=16, max_wait_ms=0.0, search_concurrency=1)
    client = Client(srv.address)
    ids, texts, payloads, _, _, _ = corpus()
    client.create_collection("t", encoder=str(tiny_st_dir), index="flat").add(
        ids, texts=texts, payloads=payloads
    )
    engine_col = srv.server.engine.open_collection("t")
    enc = engine_col.encoder
    calls: list[int] = []
    original = enc.encode_queries

    def counting(batch: Any) -> Any:
        calls.append(len(batch))
        return original(batch)

    # Each query is a stored text: it ranks first in both lists, so its fused score tells the
    # fusion that ran: weighted gives 1.0, rrf 2 * (w / (rrf_k + 1) + (1 - w) / (rrf_k + 1)).
    settings: list[tuple[dict[str, Any], float | None]] = [
        ({"mode": "hybrid", "fusion": "weighted"}, 1.0),
        ({"mode": "hybrid", "fusion": "rrf", "rrf_k": 9.0}, 0.2),
        ({"mode": "hybrid", "fusion": "rrf", "rrf_k": 4.0}, 0.4),
        ({"mode": "lexical"}, None),
    ]
    reqs = []
    for i in range(32):
        opts, _ = settings[i % len(settings)]
        reqs.append(pb.SearchRequest(collection="t", k=3, query=pb.Query(text=texts[i]), **opts))
    enc.encode_queries = counting  # type: ignore[method-assign]
    try:
        answers = asyncio.run(fire(srv.address, reqs))
    finally:
        del enc.encode_queries
    for i, res in enumerate(answers):
        opts, top = settings[i % len(settings)]
        assert res.hits[0].id == f"d{i}", f"caller {i} got another caller's answer"
        if top is not None:
            assert res.hits[0].score == pytest.approx(top, rel=1e-6), (i, opts)
        else:  # lexical: BM25, as the engine scores it
            expected = engine_col.search(texts[i], k=3, mode="lexical")
            assert [h.id for h in res.hits] == [h.id for h in expected]
            np.testing.assert_allclose(
                [h.score for h in res.hits], [h.score for h in expected], rtol=1e-6
            )
    stats = client.stats()
    assert sum(calls) == 24  # the hybrid queries, each encoded once; lexical ones never
    assert len(calls) < 24 and max(calls) > 1  # encoder calls shared within a setting
    assert stats["search_batches"] < 32
    client.close()


class RecordingCollection:
    """search_batch answers each query with its own text and the keywords it was called with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.gate = threading.Event()

    def search_batch(self, queries: list[Any], k: int, **kwargs: Any) -> Any:
        self.gate.wait(5)
        self.calls.append({"n": len(queries), **kwargs})
        texts = kwargs.get("texts") or [None] * len(queries)
        mode, fusion = kwargs.get("mode"), kwargs.get("fusion")
        return [[(q, t, mode, fusion)] for q, t in zip(queries, texts, strict=True)]


def test_batcher_keys_on_mode_fusion_and_text():
    async def main() -> None:
        async def runner(fn: Any, *args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(fn, *args, **kwargs)

        b = MicroBatcher(runner, max_batch=16, max_wait_ms=50.0, concurrency=1)
        col = RecordingCollection()
        rrf = {"mode": "hybrid", "fusion": "rrf"}
        weighted = {"mode": "hybrid", "fusion": "weighted"}
        # The first call holds the only slot, so the others queue by key meanwhile.
        first = asyncio.ensure_future(b.search(("c",), col, "first", 1, None, {}))
        await asyncio.sleep(0.05)
        plan = [
            ("v0", "t0", rrf),
            ("v1", "t1", weighted),
            ("v2", None, rrf),  # no text beside it: another batch
            ("v3", "t3", rrf),
            ("v4", "t4", weighted),
            ("v5", None, None),  # dense
        ]
        calls = [
            asyncio.ensure_future(b.search(("c",), col, q, 1, None, {}, text=t, options=o))
            for q, t, o in plan
        ]
        await asyncio.sleep(0.05)
        col.gate.set()
        assert await first == [("first", None, None, None)]
        out = [await c for c in calls]
        for (q, t, o), hits in zip(plan, out, strict=True):
            assert hits == [(q, t, (o or {}).get("mode"), (o or {}).get("fusion"))]
        sizes = sorted(
            (c["n"], c.get("fusion") or "", tuple(c.get("texts") or ())) for c in col.calls[1:]
        )
        assert sizes == [
            (1, "", ()),
            (1, "rrf", ()),
            (2, "rrf", ("t0", "t3")),
            (2, "weighted", ("t1", "t4")),
        ]
        await b.close()

    asyncio.run(main())


# ---- bad input ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    srv = ServerThread(ServerConfig(data=str(tmp_path_factory.mktemp("hybrid-bad")), port=0))
    channel = grpc.insecure_channel(srv.address)
    s = pb_grpc.VecDexStub(channel)
    ids, texts, _, x, _, _ = corpus(8)
    for name, lexical in (("plain", False), ("lex", True)):
        s.CreateCollection(
            pb.CreateCollectionRequest(name=name, dim=DIM, index="flat", lexical=lexical)
        )
        up = pb.UpsertRequest(collection=name, ids=ids, texts=texts if lexical else [])
        for v in x:
            up.vectors.add(values=v.tolist())
        s.Upsert(up)
    yield s
    channel.close()
    srv.stop()


def vq(collection: str = "lex", k: int = 3, **kw: Any) -> pb.SearchRequest:
    """A Search with a vector query."""
    req = pb.SearchRequest(collection=collection, k=k, **kw)
    req.query.vector.values.extend([1.0] * DIM)
    return req


def tq(text: str, collection: str = "lex", **kw: Any) -> pb.SearchRequest:
    return pb.SearchRequest(collection=collection, k=3, query=pb.Query(text=text), **kw)


def bq(n: int = 2, collection: str = "lex", **kw: Any) -> pb.SearchBatchRequest:
    req = pb.SearchBatchRequest(collection=collection, k=3, **kw)
    for _ in range(n):
        req.queries.add().vector.values.extend([1.0] * DIM)
    return req


def with_params(req: pb.SearchRequest, params: dict[str, Any]) -> pb.SearchRequest:
    req.params.update(params)
    return req


def B(case: str, rpc: str, make: Any, words: str, code: grpc.StatusCode = C.INVALID_ARGUMENT):
    return pytest.param(rpc, make, code, words, id=case)


BAD = [
    B("unknown-mode", "Search", lambda: vq(mode="fuzzy"), "unknown search mode 'fuzzy'"),
    B("unknown-mode-batch", "SearchBatch", lambda: bq(mode="semantic"), "unknown search mode"),
    B("unknown-fusion", "Search", lambda: vq(mode="hybrid", text="cat", fusion="max"), "fusion"),
    B("weight-1.5", "Search", lambda: vq(mode="hybrid", text="cat", weight=1.5), "weight"),
    B("weight-negative", "Search", lambda: vq(mode="hybrid", text="a", weight=-0.1), "weight"),
    B("rrf-k-zero", "Search", lambda: vq(mode="hybrid", text="cat", rrf_k=0), "rrf_k"),
    B("depth-zero", "Search", lambda: vq(mode="hybrid", text="cat", depth=0), "depth"),
    B("depth-huge", "Search", lambda: vq(mode="hybrid", text="cat", depth=10**6), "depth"),
    B(
        "batch-weight",
        "SearchBatch",
        lambda: bq(mode="hybrid", texts=["a", "b"], weight=2),
        "weight",
    ),
    B("empty-text", "Search", lambda: vq(mode="hybrid", text=""), "text is empty"),
    B("blank-text", "Search", lambda: vq(mode="hybrid", text=" \t\n"), "text is empty"),
    B(
        "blank-text-alone",
        "Search",
        lambda: pb.SearchRequest(collection="lex", k=3, mode="lexical", text=" "),
        "text is empty",
    ),
    B("blank-query-text", "Search", lambda: tq("  ", mode="lexical"), "query.text is empty"),
    B(
        "blank-batch-text",
        "SearchBatch",
        lambda: bq(mode="hybrid", texts=["cat", "  "]),
        "texts[1] is empty",
    ),
    B(
        "lexical-no-index",
        "Search",
        lambda: tq("cat", collection="plain", mode="lexical"),
        "no lexical index",
    ),
    B(
        "hybrid-no-index",
        "Search",
        lambda: vq(collection="plain", mode="hybrid", text="cat"),
        "no lexical index",
    ),
    B(
        "batch-no-index",
        "SearchBatch",
        lambda: bq(collection="plain", mode="lexical", texts=["a", "b"]),
        "no lexical index",
    ),
    B("dense-weight", "Search", lambda: vq(weight=0.3), "mode='hybrid' only"),
    B("dense-fusion", "Search", lambda: vq(mode="dense", fusion="rrf"), "mode='hybrid' only"),
    B("lexical-depth", "Search", lambda: tq("cat", mode="lexical", depth=5), "mode='hybrid' only"),
    B("batch-dense-rrf-k", "SearchBatch", lambda: bq(rrf_k=3.0), "mode='hybrid' only"),
    B("dense-with-text", "Search", lambda: vq(text="cat"), "lexical side"),
    B("lexical-vector", "Search", lambda: vq(mode="lexical", text="cat"), "not a vector"),
    B("hybrid-no-text", "Search", lambda: vq(mode="hybrid"), "query text"),
    B("hybrid-text-no-encoder", "Search", lambda: tq("cat", mode="hybrid"), "no encoder"),
    B(
        "hybrid-text-alone",
        "Search",
        lambda: pb.SearchRequest(collection="lex", k=3, mode="hybrid", text="cat"),
        "query vector",
    ),
    B(
        "no-query-no-text",
        "Search",
        lambda: pb.SearchRequest(collection="lex", k=3, mode="lexical"),
        "query is missing",
    ),
    B(
        "batch-count",
        "SearchBatch",
        lambda: bq(3, mode="hybrid", texts=["a", "b"]),
        "3 query vectors for 2",
    ),
    B("params-mode", "Search", lambda: with_params(vq(), {"mode": "hybrid"}), "params.mode"),
    B(
        "set-fusion-weight",
        "SetFusion",
        lambda: pb.SetFusionRequest(collection="lex", weight=2),
        "weight",
    ),
    B(
        "set-fusion-method",
        "SetFusion",
        lambda: pb.SetFusionRequest(collection="lex", fusion="sum"),
        "unknown fusion",
    ),
    B(
        "set-fusion-missing",
        "SetFusion",
        lambda: pb.SetFusionRequest(collection="nope"),
        "nope",
        C.NOT_FOUND,
    ),
    B(
        "create-bad-bm25",
        "CreateCollection",
        lambda: pb.CreateCollectionRequest(
            name="x", dim=4, lexical_options=pb.LexicalOptions(method="bm99")
        ),
        "BM25 method",
    ),
    B(
        "create-bad-b",
        "CreateCollection",
        lambda: pb.CreateCollectionRequest(name="x", dim=4, lexical_options=pb.LexicalOptions(b=2)),
        "lexical option b",
    ),
    B(
        "create-off-with-options",
        "CreateCollection",
        lambda: pb.CreateCollectionRequest(
            name="x", dim=4, lexical=False, lexical_options=pb.LexicalOptions()
        ),
        "lexical_options",
    ),
    B(
        "create-off-with-field",
        "CreateCollection",
        lambda: pb.CreateCollectionRequest(name="x", dim=4, lexical=False, text_field="body"),
        "text_field",
    ),
    B(
        "upsert-texts-beside-vectors-no-index",
        "Upsert",
        lambda: pb.UpsertRequest(
            collection="plain", ids=["z"], vectors=[pb.Vector(values=[1.0] * DIM)], texts=["cat"]
        ),
        "no lexical index",
    ),
    B(
        "upsert-texts-count",
        "Upsert",
        lambda: pb.UpsertRequest(
            collection="lex", ids=["z"], vectors=[pb.Vector(values=[1.0] * DIM)], texts=["a", "b"]
        ),
        "texts has 2 entries",
    ),
]


@pytest.mark.parametrize("rpc, make, code, words", BAD)
def test_bad_hybrid_request(stub, rpc, make, code, words):
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(make(), timeout=30)
    assert info.value.code() == code, info.value.details()
    assert words in (info.value.details() or ""), info.value.details()


def test_good_requests_after_bad_ones(stub):
    """The text alone (lexical), or a vector with a text (hybrid) on the raw-vector collection."""
    for case in BAD:
        rpc, make = case.values[:2]
        with pytest.raises(grpc.RpcError):
            getattr(stub, rpc)(make(), timeout=30)
    alone = stub.Search(
        pb.SearchRequest(collection="lex", k=2, mode="LEXICAL", text="cat kitten purr")
    )
    assert alone.hits and all(h.score > 0 for h in alone.hits)
    hybrid = stub.Search(vq(k=2, mode="hybrid", text="cat kitten purr", fusion="rrf"))
    assert len(hybrid.hits) == 2
    info = stub.DescribeCollection(pb.DescribeCollectionRequest(name="lex"))
    assert info.lexical and info.lexical_options.method == "lucene" and info.fusion.depth > 0
    assert not stub.DescribeCollection(pb.DescribeCollectionRequest(name="plain")).lexical


def test_client_errors_are_the_engines(pair):
    """Through the client, bad arguments raise what the embedded collection raises."""
    eng, client = pair
    ids, texts, payloads, x, _, qvecs = corpus(8)
    sides = []
    for side in (eng, client):
        side.create_collection("plain", dim=DIM, index="flat").add(ids, x)
        col = side.create_collection("lex", dim=DIM, index="flat", lexical=True)
        col.add(ids, x, texts=texts)
        sides.append((side, col, side.open_collection("plain")))
    v = qvecs[0]
    bad: list[Any] = [
        lambda s, c, p: c.search(v, k=3, mode="fuzzy"),
        lambda s, c, p: c.search(v, k=3, mode=3),
        lambda s, c, p: c.search(v, k=3, mode="hybrid", text="cat", fusion="max"),
        lambda s, c, p: c.search(v, k=3, mode="hybrid", text="cat", weight=1.5),
        lambda s, c, p: c.search(v, k=3, mode="hybrid", text="cat", weight="heavy"),
        lambda s, c, p: c.search(v, k=3, mode="hybrid", text="cat", rrf_k=0),
        lambda s, c, p: c.search(v, k=3, mode="hybrid", text="cat", depth=0),
        lambda s, c, p: c.search(v, k=3, mode="hybrid", text="cat", depth=2.5),
        lambda s, c, p: c.search(v, k=3, weight=0.4),
        lambda s, c, p: c.search(v, k=3, mode="lexical", fusion="rrf"),
        lambda s, c, p: c.search_batch(qvecs, k=3, depth=4),
        lambda s, c, p: c.search_batch(qvecs, k=3, mode="hybrid", texts=[]),
        lambda s, c, p: c.search_batch(qvecs, k=3, mode="hybrid", texts="cat"),
        lambda s, c, p: c.search_batch(qvecs[:2], k=3, mode="hybrid", texts=["cat", 7]),
        lambda s, c, p: p.search(None, k=3, mode="lexical", text="cat"),
        lambda s, c, p: p.search_batch(qvecs, k=3, mode="hybrid", texts=["a"] * 4),
        lambda s, c, p: c.search(v, k=3, mode="hybrid", text=5),
        lambda s, c, p: c.set_fusion(weight=2.0),
        lambda s, c, p: c.set_fusion("sum"),
        lambda s, c, p: s.create_collection("x", dim=4, lexical="yes"),
        lambda s, c, p: s.create_collection("x", dim=4, lexical=False, text_field="body"),
        lambda s, c, p: s.create_collection("x", dim=4, lexical={"bogus": 1}),
        lambda s, c, p: s.create_collection("x", dim=4, text_field="_id"),
    ]
    for i, call in enumerate(bad):
        errors = []
        for side, col, plain in sides:
            with pytest.raises((ValueError, TypeError)) as info:
                call(side, col, plain)
            errors.append(info.value)
        emb, rem = errors
        assert str(emb) == str(rem), i
        assert isinstance(rem, type(emb)), (i, emb, rem)  # RequestError is a ValueError
    # Blank texts: refused on both sides, in each one's words.
    for _, col, _ in sides:
        for blank in ("", "  "):
            with pytest.raises(ValueError, match="empty"):
                col.search(v, k=3, mode="hybrid", text=blank)
            with pytest.raises(ValueError, match="empty"):
                col.search_batch(qvecs[:2], k=3, mode="hybrid", texts=["cat", blank])
    assert client.list_collections() == eng.list_collections() == ["lex", "plain"]
