"""The micro-batcher merges concurrent Search calls, answers the right callers, honours deadlines
and cancellation; over the wire and as a unit."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import grpc
import numpy as np
import pytest

from server import Client
from server.batcher import DeadlineExpired, MicroBatcher
from server.pb import vecdex_pb2 as pb
from server.pb import vecdex_pb2_grpc as pb_grpc

DIM = 16


def data(n: int = 200, seed: int = 7):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return [f"v{i}" for i in range(n)], x


async def fire(address: str, requests: list[pb.SearchRequest]) -> list[pb.SearchResponse]:
    """All requests at once from one asyncio client (as many concurrent calls as requests)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.VecDexStub(channel)
        return await asyncio.gather(*(stub.Search(r, timeout=60) for r in requests))


def test_concurrent_searches_are_merged_and_routed(start_server):
    srv = start_server(max_batch=32, max_wait_ms=50.0, search_concurrency=1)
    client = Client(srv.address)
    ids, x = data()
    col = client.create_collection("v", dim=DIM, index="flat")
    col.add(ids, x, [{"i": i, "odd": i % 2 == 1} for i in range(len(ids))])
    before = client.stats()

    reqs = []
    for i in range(96):  # each query is a stored vector: its own id must come back first
        r = pb.SearchRequest(collection="v", k=3 + i % 2)  # two k values: two batch keys
        r.query.vector.values.extend(x[i].tolist())
        if i % 3 == 0:
            r.where.update({"odd": i % 2 == 1})
        reqs.append(r)
    answers = asyncio.run(fire(srv.address, reqs))

    for i, (r, res) in enumerate(zip(reqs, answers, strict=True)):
        assert res.hits[0].id == f"v{i}", f"caller {i} got another caller's answer"
        assert len(res.hits) == r.k
        assert res.hits[0].payload["i"] == i
        expected = col.search_batch(
            x[i : i + 1], k=r.k, where={"odd": i % 2 == 1} if i % 3 == 0 else None
        )
        assert [h.id for h in res.hits] == list(expected.ids[0])

    s = client.stats()
    requests = s["search_requests"] - before["search_requests"]
    batches = s["search_batches"] - before["search_batches"]
    assert requests == 96
    assert batches < requests / 2, s  # gives 4-8 batches of 12-32 on a loaded 2-core machine
    assert s["mean_batch_size"] > 2 and 1 < s["max_batch_size_seen"] <= 32
    assert s["rpcs"]["Search"] >= 96
    client.close()


def test_text_batches_make_one_encoder_call_each(start_server, tiny_st_dir):
    # No window: continuous batching, the queries queue while the first one is encoded.
    srv = start_server(max_batch=16, max_wait_ms=0.0, search_concurrency=1)
    client = Client(srv.address)
    docs = [f"document number {i} about topic {i % 5}" for i in range(40)]
    client.create_collection("t", encoder=str(tiny_st_dir), index="flat").add(
        [f"d{i}" for i in range(40)], texts=docs
    )
    engine_col = srv.server.engine.open_collection("t")
    enc = engine_col.encoder
    calls: list[int] = []
    original = enc.encode_queries

    def counting(texts: Any) -> Any:
        calls.append(len(texts))
        return original(texts)

    enc.encode_queries = counting  # type: ignore[method-assign]
    try:
        reqs = [
            pb.SearchRequest(collection="t", k=2, query=pb.Query(text=docs[i])) for i in range(32)
        ]
        answers = asyncio.run(fire(srv.address, reqs))
    finally:
        del enc.encode_queries
    for i, res in enumerate(answers):
        assert res.hits[0].id == f"d{i}"
    stats = client.stats()
    assert sum(calls) == 32 and len(calls) == stats["search_batches"] < 32
    assert max(calls) > 1
    client.close()


# ---- the batcher as a unit ----------------------------------------------------------------------
class FakeCollection:
    """search_batch returns each query back as its 'hits'; a query 'bad' fails the batch."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sizes: list[int] = []
        self.started = threading.Event()

    def search_batch(self, queries: list[Any], k: int, where: Any = None, **params: Any) -> Any:
        self.sizes.append(len(queries))
        self.started.set()
        time.sleep(self.delay)
        if "bad" in queries:
            raise ValueError("queries contain 'bad'")
        return [[q] * k for q in queries]


def make_batcher(max_batch: int = 8, max_wait_ms: float = 5.0) -> MicroBatcher:
    async def runner(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    return MicroBatcher(runner, max_batch=max_batch, max_wait_ms=max_wait_ms, concurrency=1)


def test_batches_respect_max_batch_and_answer_each_caller():
    async def main() -> None:
        b, col = make_batcher(max_batch=4), FakeCollection()
        out = await asyncio.gather(
            *(b.search(("c",), col, f"q{i}", 1, None, {}) for i in range(10))
        )
        assert out == [[f"q{i}"] for i in range(10)]
        assert max(col.sizes) <= 4 and sum(col.sizes) == 10 and len(col.sizes) >= 3
        assert b.stats.batches == len(col.sizes) and b.stats.requests == 10

    asyncio.run(main())


def test_cancelled_and_expired_callers_are_dropped_from_the_batch():
    async def main() -> None:
        b, col = make_batcher(max_batch=8, max_wait_ms=0.0), FakeCollection(delay=0.3)
        key = ("c",)
        first = asyncio.ensure_future(b.search(key, col, "first", 1, None, {}))
        await asyncio.to_thread(col.started.wait, 5)  # the only slot is now busy for 0.3 s
        keep = [asyncio.ensure_future(b.search(key, col, f"k{i}", 1, None, {})) for i in range(3)]
        gone = [asyncio.ensure_future(b.search(key, col, f"x{i}", 1, None, {})) for i in range(2)]
        late = asyncio.ensure_future(b.search(key, col, "late", 1, None, {}, timeout=0.01))
        await asyncio.sleep(0.05)
        for t in gone:
            t.cancel()
        assert await first == ["first"]
        assert [await t for t in keep] == [["k0"], ["k1"], ["k2"]]
        with pytest.raises(DeadlineExpired):
            await late
        assert col.sizes == [1, 3]  # neither the cancelled nor the expired query was searched
        assert b.stats.cancelled == 2 and b.stats.expired == 1

    asyncio.run(main())


def test_a_bad_query_fails_only_its_caller():
    async def main() -> None:
        b, col = make_batcher(max_batch=8, max_wait_ms=20.0), FakeCollection()
        res = await asyncio.gather(
            *(b.search(("c",), col, q, 1, None, {}) for q in ["a", "bad", "c"]),
            return_exceptions=True,
        )
        assert res[0] == ["a"] and res[2] == ["c"]
        assert isinstance(res[1], ValueError)
        assert col.sizes[0] == 3  # one batch, then retried one by one

    asyncio.run(main())


def test_close_cancels_queued_queries():
    async def main() -> None:
        b, col = make_batcher(max_batch=8, max_wait_ms=10_000.0), FakeCollection(delay=0.3)
        first = asyncio.ensure_future(b.search(("c",), col, "first", 1, None, {}))
        await asyncio.to_thread(col.started.wait, 5)  # the only slot is busy
        queued = asyncio.ensure_future(b.search(("c",), col, "queued", 1, None, {}))
        await asyncio.sleep(0.01)
        await b.close()
        for t in (first, queued):
            with pytest.raises(asyncio.CancelledError):
                await t
        assert col.sizes == [1]  # the queued query never reached the engine

    asyncio.run(main())


def test_a_lone_caller_does_not_wait_for_the_window():
    async def main() -> None:
        b, col = make_batcher(max_batch=8, max_wait_ms=5_000.0), FakeCollection()
        t0 = time.perf_counter()
        assert await b.search(("c",), col, "alone", 1, None, {}) == ["alone"]
        assert time.perf_counter() - t0 < 2.0  # not the 5 s window: nothing else was running

    asyncio.run(main())
