"""SearchStream, omit_payloads and inline searches: the fast paths answer what Search answers."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np
import pytest

from engine import CollectionNotFoundError
from server import Client
from server.pb import vecdex_pb2 as pb
from server.pb import vecdex_pb2_grpc as pb_grpc
from server.search import Inline

DIM = 16


def data(n: int = 300, seed: int = 1338) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, DIM))
    x = centres[rng.integers(0, 8, n)] + 0.4 * rng.normal(size=(n, DIM))
    return [f"v{i}" for i in range(n)], x.astype(np.float32)


def request(col: str, q: np.ndarray, k: int, **fields: Any) -> pb.SearchRequest:
    r = pb.SearchRequest(collection=col, k=k, **fields)
    r.query.vector.values.extend(np.asarray(q, dtype=np.float32).tolist())
    return r


def setup(client: Client, index: str) -> tuple[Any, np.ndarray]:
    ids, x = data()
    col = client.create_collection("c", dim=DIM, index=index)
    col.add(ids, x, [{"i": i, "odd": i % 2 == 1} for i in range(len(ids))])
    return col, x


async def stream_all(address: str, reqs: list[pb.SearchRequest], token: str | None = None):
    """Writes every request on one stream (tags 100..), then reads every answer."""
    meta = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.VecDexStub(channel).SearchStream(metadata=meta, timeout=60)
        answers = {}
        try:
            for i, r in enumerate(reqs):
                await call.write(pb.StreamSearchRequest(tag=100 + i, search=r))
            await call.done_writing()
            async for msg in call:
                answers[msg.tag] = msg
        except grpc.RpcError:  # the stream itself failed (a write may see it first)
            pass
        return answers, await call.code()


async def unary_all(address: str, reqs: list[pb.SearchRequest]) -> list[pb.SearchResponse]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.VecDexStub(channel)
        return list(await asyncio.gather(*(stub.Search(r, timeout=60) for r in reqs)))


@pytest.mark.parametrize("index", ["hnsw:M=16,ef=64", "flat"])
def test_stream_answers_what_search_answers(start_server, index):
    srv = start_server(max_batch=8, max_wait_ms=1.0)
    client = Client(srv.address)
    col, x = setup(client, index)
    reqs = []
    for i in range(60):  # plain, filtered and ef-tuned queries, two k values
        fields: dict[str, Any] = {}
        r = request("c", x[i] + 0.01, 3 + i % 2, **fields)
        if i % 3 == 1:
            r.where.update({"odd": True})
        if i % 5 == 2:
            r.params.update({"ef": 100}) if index.startswith("hnsw") else None
        reqs.append(r)
    answers, code = asyncio.run(stream_all(srv.address, reqs))
    assert code == grpc.StatusCode.OK
    assert sorted(answers) == list(range(100, 160))  # every tag answered once
    unary = asyncio.run(unary_all(srv.address, reqs))
    for i, (r, u) in enumerate(zip(reqs, unary, strict=True)):
        got = answers[100 + i]
        assert got.code == 0 and got.message == ""
        assert [h.id for h in got.result.hits] == [h.id for h in u.hits], i
        np.testing.assert_allclose(
            [h.score for h in got.result.hits], [h.score for h in u.hits], rtol=1e-5, atol=1e-6
        )
        assert [dict(h.payload) for h in got.result.hits] == [dict(h.payload) for h in u.hits]
        assert len(got.result.hits) == r.k
    stats = client.stats()
    assert stats["stream_queries"] == 60
    assert stats["rpcs"]["SearchStream"] == 1
    client.close()


def test_a_failed_query_is_answered_with_its_status_and_the_stream_goes_on(start_server):
    srv = start_server()
    client = Client(srv.address)
    _, x = setup(client, "hnsw")
    reqs = [
        request("c", x[0], 0),  # k out of range
        request("nope", x[0], 3),  # no such collection
        pb.SearchRequest(collection="c", k=3),  # no query
        request("c", x[0][:4], 3),  # wrong dimension
        request("c", np.full(DIM, np.nan), 3),  # NaN
        request("c", x[0], 3),  # fine
    ]
    answers, code = asyncio.run(stream_all(srv.address, reqs))
    assert code == grpc.StatusCode.OK
    codes = [answers[100 + i].code for i in range(len(reqs))]
    invalid, not_found = (
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.NOT_FOUND.value[0],
    )
    assert codes == [invalid, not_found, invalid, invalid, invalid, 0]
    assert "k must be positive" in answers[100].message
    assert "nope" in answers[101].message
    assert "query is missing" in answers[102].message
    assert "dimension 4" in answers[103].message
    assert "NaN" in answers[104].message
    assert not answers[100].HasField("result")
    assert answers[105].result.hits[0].id == "v0"
    # The same statuses as unary Search gives.
    for r, i in ((reqs[0], 0), (reqs[1], 1), (reqs[3], 3)):
        with pytest.raises(grpc.RpcError) as e:
            asyncio.run(unary_all(srv.address, [r]))
        assert e.value.code().value[0] == codes[i]
        assert e.value.details() == answers[100 + i].message
    stats = client.stats()
    assert stats["errors"]["INVALID_ARGUMENT"] >= 4 and stats["errors"]["NOT_FOUND"] >= 1
    client.close()


def test_a_stream_needs_the_token(start_server):
    srv = start_server(token="s3cret")
    client = Client(srv.address, token="s3cret")
    _, x = setup(client, "hnsw")

    async def without_token() -> tuple[grpc.StatusCode, str]:
        # Nothing written: a write racing the refusal may fail first, with its own status.
        async with grpc.aio.insecure_channel(srv.address) as channel:
            call = pb_grpc.VecDexStub(channel).SearchStream(timeout=60)
            return await call.code(), await call.details()

    code, details = asyncio.run(without_token())
    assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization" in details
    answers, code = asyncio.run(stream_all(srv.address, [request("c", x[0], 3)], "s3cret"))
    assert code == grpc.StatusCode.OK and answers[100].result.hits[0].id == "v0"
    client.close()


def test_omit_payloads_drops_only_the_payloads(start_server):
    srv = start_server()
    client = Client(srv.address)
    _, x = setup(client, "flat")
    full, bare = asyncio.run(
        unary_all(srv.address, [request("c", x[5], 4), request("c", x[5], 4, omit_payloads=True)])
    )
    assert [h.id for h in bare.hits] == [h.id for h in full.hits]
    assert [h.score for h in bare.hits] == [h.score for h in full.hits]
    assert full.hits[0].payload["i"] == 5
    assert all(not h.HasField("payload") for h in bare.hits)
    batch = pb.SearchBatchRequest(collection="c", k=4, omit_payloads=True)
    batch.queries.add().vector.values.extend(x[5].tolist())
    with grpc.insecure_channel(srv.address) as ch:
        res = pb_grpc.VecDexStub(ch).SearchBatch(batch)
    assert [h.id for h in res.results[0].hits] == [h.id for h in full.hits]
    assert all(not h.HasField("payload") for h in res.results[0].hits)
    client.close()


@pytest.mark.parametrize("max_batch", [1, 8])
def test_inline_searches_answer_what_threaded_ones_do(start_server, max_batch):
    srv = start_server(max_batch=max_batch, inline_max_ms=1000.0)  # every timed search qualifies
    client = Client(srv.address)
    col, x = setup(client, "hnsw:M=16,ef=64")
    for i in range(20):
        q = x[i] + 0.01
        one = col.search(q, k=5)  # the first one runs on a thread (cost unknown), then inline
        batch = col.search_batch(q[None], k=5)[0]  # SearchBatch: always on a thread
        assert [h.id for h in one] == [h.id for h in batch]
        assert [h.payload for h in one] == [h.payload for h in batch]
        np.testing.assert_allclose([h.score for h in one], [h.score for h in batch], rtol=1e-6)
    filtered = col.search(x[0], k=5, where={"odd": True})  # filters never run inline
    assert all(h.payload["odd"] for h in filtered)
    stats = client.stats()
    assert 0 < stats["inline_searches"] <= 19
    client.close()


def test_writes_keep_searches_off_the_loop_and_results_current(start_server):
    srv = start_server(inline_max_ms=1000.0)
    client = Client(srv.address)
    col, x = setup(client, "hnsw:M=16,ef=64")
    for _ in range(3):
        col.search(x[0], k=3)
    col.upsert(["new"], x[7:8] * 3.0, [{"i": -1}])
    assert col.search(x[7] * 3.0, k=1)[0].id in {"new", "v7"}  # cosine: both point the same way
    col.delete(["new", "v7"])
    assert {h.id for h in col.search(x[7], k=5)}.isdisjoint({"new", "v7"})
    assert srv.server.servicer.inline.writes == 0
    client.close()


def test_the_inline_policy():
    class Col:
        index_spec = "hnsw:M=16"

    class Flat:
        index_spec = "flat"

    pol = Inline(0.5)
    key = pol.key(Col(), {})  # type: ignore[arg-type]
    assert key is not None and pol.key(Flat(), {}) is None  # type: ignore[arg-type]
    assert pol.key(Col(), {"ef": 10}) != key  # type: ignore[arg-type]
    assert not pol.ok(key)  # never measured: unknown cost
    assert pol.timed(key, lambda a, b=0: a + b, 1, b=2) == 3
    assert pol.ok(key)
    pol.writes = 1
    assert not pol.ok(key)
    pol.writes = 0
    pol._cost[key] = 0.01  # 10 ms on average: too slow
    assert not pol.ok(key)
    # Batched meanwhile, but timed again now and then, so a cost that fell is seen.
    assert pol.measure(pol.key(Flat(), {}) or ("x", "")) is True  # type: ignore[arg-type]
    timed = [pol.measure(key) for _ in range(128)]
    assert sum(timed) == 2 and timed[63] and timed[127]
    for ef in range(2000):  # many parameter sets: the averages stay bounded
        pol.timed(pol.key(Col(), {"ef": ef}), lambda: None)  # type: ignore[arg-type]
    assert len(pol._cost) <= 1024
    assert Inline(0).key(Col(), {}) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inline_max_ms"):
        Inline(-1)


def test_a_cancelled_stream_leaves_the_server_serving(start_server):
    srv = start_server(max_batch=8)
    client = Client(srv.address)
    col, x = setup(client, "flat")

    async def cancel_midway() -> None:
        async with grpc.aio.insecure_channel(srv.address) as channel:
            call = pb_grpc.VecDexStub(channel).SearchStream()
            for i in range(20):
                await call.write(pb.StreamSearchRequest(tag=i, search=request("c", x[i], 3)))
            await call.read()
            call.cancel()

    asyncio.run(cancel_midway())
    for _ in range(100):  # the server notices the cancellation on its own loop
        if client.stats()["in_flight"] == 0:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert client.stats()["in_flight"] == 0
    assert col.search(x[3], k=1)[0].id == "v3"
    client.close()


def test_client_search_stream_answers_what_search_does(start_server):
    srv = start_server(token="s3cret")
    client = Client(srv.address, token="s3cret")
    col, x = setup(client, "hnsw:M=16,ef=64")
    queries = [x[i] + 0.01 for i in range(40)]
    streamed = col.search_stream(queries, k=5, ef=32)
    assert len(streamed) == len(queries)
    for q, hits in zip(queries, streamed, strict=True):  # in the order of the queries
        one = col.search(q, k=5, ef=32)
        assert [h.id for h in hits] == [h.id for h in one]
        assert [h.payload for h in hits] == [h.payload for h in one]
    odd = col.search_stream(queries[:5], k=3, where={"odd": True})
    assert all(h.payload["odd"] for hits in odd for h in hits)
    bare = col.search_stream(queries[:5], k=3, omit_payloads=True)
    assert all(h.payload == {} for hits in bare for h in hits)
    assert [h.id for h in bare[0]] == [h.id for h in col.search(queries[0], k=3)]
    assert col.search_stream([], k=3) == []
    bad = [queries[0], np.zeros(DIM + 1, dtype=np.float32), queries[1]]
    with pytest.raises(ValueError, match=r"queries\[1\]: .*dimension"):
        col.search_stream(bad, k=3)
    assert client.stats()["stream_queries"] >= 40
    client.drop_collection("c")
    with pytest.raises(CollectionNotFoundError):
        col.search_stream(queries[:2], k=3)
    client.close()
