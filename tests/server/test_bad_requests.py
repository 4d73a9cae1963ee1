"""Bad requests get a precise status code and a message naming the field; the server keeps going."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest

from server import Limits, ServerConfig
from server.pb import vecdex_pb2 as pb
from server.pb import vecdex_pb2_grpc as pb_grpc

from .conftest import ServerThread

TOKEN = "s3cret-token"
GOOD = (("authorization", f"Bearer {TOKEN}"),)
LIMITS = Limits(
    max_message_bytes=1 << 20,
    max_k=100,
    max_batch_queries=16,
    max_items=50,
    max_text_chars=200,
    max_query_vectors=8,
)
C = grpc.StatusCode


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    srv = ServerThread(
        ServerConfig(data=str(tmp_path_factory.mktemp("bad")), port=0, token=TOKEN, limits=LIMITS)
    )
    channel = grpc.insecure_channel(srv.address, options=[("grpc.max_send_message_length", -1)])
    s = pb_grpc.VecDexStub(channel)
    s.CreateCollection(pb.CreateCollectionRequest(name="vec", dim=4, index="flat"), metadata=GOOD)
    up = pb.UpsertRequest(collection="vec", ids=["a", "b", "c"])
    for i, v in enumerate(np.eye(3, 4)):
        up.vectors.add(values=v.tolist())
        up.payloads.add().update({"year": 2020 + i})
    s.Upsert(up, metadata=GOOD)
    yield s
    channel.close()
    srv.stop()


def vec(*values: float) -> pb.Query:
    return pb.Query(vector=pb.Vector(values=list(values)))


def search(query: pb.Query | None = None, k: int = 3, collection: str = "vec", **kw: Any):
    req = pb.SearchRequest(collection=collection, k=k, **kw)
    if query is not None:
        req.query.CopyFrom(query)
    return req


def with_where(where: dict[str, Any], params: dict[str, Any] | None = None) -> pb.SearchRequest:
    req = search(vec(1, 0, 0, 0))
    req.where.update(where)
    if params:
        req.params.update(params)
    return req


def batch(*queries: pb.Query, k: int = 3) -> pb.SearchBatchRequest:
    return pb.SearchBatchRequest(collection="vec", k=k, queries=list(queries))


def upsert(ids: list[str], rows: list[list[float]], payloads=None, **kw: Any):
    req = pb.UpsertRequest(collection="vec", ids=ids, **kw)
    for r in rows:
        req.vectors.add(values=r)
    for p in payloads or []:
        req.payloads.add().update(p)
    return req


multi = pb.Query(multi_vector=pb.MultiVector(rows=[pb.Vector(values=[1, 0, 0, 0])] * 2))


def P(case: str, rpc: str, make: Callable[[], Any], code: grpc.StatusCode, words: str, md=GOOD):
    """One bad request: the rpc, a request factory, the expected code and words in the message."""
    return pytest.param(rpc, make, md, code, words, id=case)


CASES = [
    P("wrong-dim", "Search", lambda: search(vec(1, 0, 0)), C.INVALID_ARGUMENT, "query.vector"),
    P("nan", "Search", lambda: search(vec(1, math.nan, 0, 0)), C.INVALID_ARGUMENT, "NaN"),
    P("inf", "Search", lambda: search(vec(1, math.inf, 0, 0)), C.INVALID_ARGUMENT, "inf"),
    P("empty-vector", "Search", lambda: search(vec()), C.INVALID_ARGUMENT, "query.vector"),
    P("empty-text", "Search", lambda: search(pb.Query(text="")), C.INVALID_ARGUMENT, "text"),
    P("blank-text", "Search", lambda: search(pb.Query(text="  \n")), C.INVALID_ARGUMENT, "text"),
    P(
        "long-text",
        "Search",
        lambda: search(pb.Query(text="x" * 201)),
        C.RESOURCE_EXHAUSTED,
        "query.text",
    ),
    P(
        "text-no-encoder",
        "Search",
        lambda: search(pb.Query(text="hi")),
        C.INVALID_ARGUMENT,
        "no encoder",
    ),
    P("no-query", "Search", lambda: search(None), C.INVALID_ARGUMENT, "query"),
    P("unset-query", "Search", lambda: search(pb.Query()), C.INVALID_ARGUMENT, "query"),
    P("multi-on-single", "Search", lambda: search(multi), C.INVALID_ARGUMENT, "multi_vector"),
    P("k-zero", "Search", lambda: search(vec(1, 0, 0, 0), k=0), C.INVALID_ARGUMENT, "k"),
    P("k-negative", "Search", lambda: search(vec(1, 0, 0, 0), k=-3), C.INVALID_ARGUMENT, "k"),
    P("k-too-large", "Search", lambda: search(vec(1, 0, 0, 0), k=101), C.INVALID_ARGUMENT, "limit"),
    P(
        "unknown-collection",
        "Search",
        lambda: search(vec(1, 0, 0, 0), collection="nope"),
        C.NOT_FOUND,
        "nope",
    ),
    P(
        "traversal-name",
        "Search",
        lambda: search(vec(1, 0, 0, 0), collection="../etc"),
        C.INVALID_ARGUMENT,
        "name",
    ),
    P(
        "empty-name",
        "Search",
        lambda: search(vec(1, 0, 0, 0), collection=""),
        C.INVALID_ARGUMENT,
        "collection",
    ),
    P(
        "bad-operator",
        "Search",
        lambda: with_where({"year": {"$near": 3}}),
        C.INVALID_ARGUMENT,
        "where",
    ),
    P(
        "bad-filter-type",
        "Search",
        lambda: with_where({"year": {"$gte": "x"}}),
        C.INVALID_ARGUMENT,
        "year",
    ),
    P("bad-param", "Search", lambda: with_where({}, {"bogus": 3}), C.INVALID_ARGUMENT, "bogus"),
    P("batch-empty", "SearchBatch", lambda: batch(), C.INVALID_ARGUMENT, "queries"),
    P(
        "batch-too-many",
        "SearchBatch",
        lambda: batch(*[vec(1, 0, 0, 0)] * 17),
        C.RESOURCE_EXHAUSTED,
        "queries",
    ),
    P(
        "batch-mixed",
        "SearchBatch",
        lambda: batch(vec(1, 0, 0, 0), pb.Query(text="x")),
        C.INVALID_ARGUMENT,
        "queries[1]",
    ),
    P(
        "batch-bad-row",
        "SearchBatch",
        lambda: batch(vec(1, 0, 0, 0), vec(1, 0, 0, 0), vec(1, 0)),
        C.INVALID_ARGUMENT,
        "queries[2]",
    ),
    P("batch-k-zero", "SearchBatch", lambda: batch(vec(1, 0, 0, 0), k=0), C.INVALID_ARGUMENT, "k"),
    P(
        "upsert-nan",
        "Upsert",
        lambda: upsert(["x", "y"], [[1, 0, 0, 0], [0, math.nan, 0, 0]]),
        C.INVALID_ARGUMENT,
        "vectors[1]",
    ),
    P("upsert-dim", "Upsert", lambda: upsert(["x"], [[1, 0]]), C.INVALID_ARGUMENT, "vectors[0]"),
    P(
        "upsert-count",
        "Upsert",
        lambda: upsert(["x", "y"], [[1, 0, 0, 0]]),
        C.INVALID_ARGUMENT,
        "vectors",
    ),
    P("upsert-nothing", "Upsert", lambda: upsert(["x"], []), C.INVALID_ARGUMENT, "vectors"),
    P("upsert-no-ids", "Upsert", lambda: upsert([], []), C.INVALID_ARGUMENT, "ids"),
    P(
        "upsert-empty-id",
        "Upsert",
        lambda: upsert(["x", ""], [[1, 0, 0, 0]] * 2),
        C.INVALID_ARGUMENT,
        "ids[1]",
    ),
    P(
        "upsert-dup-ids",
        "Upsert",
        lambda: upsert(["x", "x"], [[1, 0, 0, 0]] * 2),
        C.INVALID_ARGUMENT,
        "duplicate",
    ),
    P(
        "upsert-too-many",
        "Upsert",
        lambda: upsert([f"i{i}" for i in range(51)], [[1, 0, 0, 0]] * 51),
        C.RESOURCE_EXHAUSTED,
        "ids",
    ),
    P(
        "upsert-payloads",
        "Upsert",
        lambda: upsert(["x"], [[1, 0, 0, 0]], [{}, {}]),
        C.INVALID_ARGUMENT,
        "payloads",
    ),
    P(
        "upsert-reserved",
        "Upsert",
        lambda: upsert(["x"], [[1, 0, 0, 0]], [{"_id": 1}]),
        C.INVALID_ARGUMENT,
        "_id",
    ),
    P(
        "upsert-type-clash",
        "Upsert",
        lambda: upsert(["x"], [[1, 0, 0, 0]], [{"year": "new"}]),
        C.INVALID_ARGUMENT,
        "year",
    ),
    P(
        "add-existing",
        "Upsert",
        lambda: upsert(["a"], [[1, 0, 0, 0]], add_only=True),
        C.ALREADY_EXISTS,
        "ids[0]",
    ),
    P(
        "upsert-texts-no-encoder",
        "Upsert",
        lambda: pb.UpsertRequest(collection="vec", ids=["x"], texts=["hello"]),
        C.INVALID_ARGUMENT,
        "encoder",
    ),
    P(
        "upsert-multi-on-single",
        "Upsert",
        lambda: pb.UpsertRequest(collection="vec", ids=["x"], multi_vectors=[multi.multi_vector]),
        C.INVALID_ARGUMENT,
        "multi_vectors",
    ),
    P("get-no-ids", "Get", lambda: pb.GetRequest(collection="vec"), C.INVALID_ARGUMENT, "ids"),
    P(
        "get-unknown",
        "Get",
        lambda: pb.GetRequest(collection="nope", ids=["a"]),
        C.NOT_FOUND,
        "nope",
    ),
    P(
        "delete-unknown",
        "Delete",
        lambda: pb.DeleteRequest(collection="nope", ids=["a"]),
        C.NOT_FOUND,
        "nope",
    ),
    P(
        "create-existing",
        "CreateCollection",
        lambda: pb.CreateCollectionRequest(name="vec", dim=4),
        C.ALREADY_EXISTS,
        "vec",
    ),
    P(
        "create-bad-metric",
        "CreateCollection",
        lambda: pb.CreateCollectionRequest(name="m", dim=4, metric="manhattan"),
        C.INVALID_ARGUMENT,
        "manhattan",
    ),
    P(
        "create-bad-index",
        "CreateCollection",
        lambda: pb.CreateCollectionRequest(name="m", dim=4, index="btree"),
        C.INVALID_ARGUMENT,
        "btree",
    ),
    P(
        "create-no-dim",
        "CreateCollection",
        lambda: pb.CreateCollectionRequest(name="m"),
        C.INVALID_ARGUMENT,
        "dim",
    ),
    P(
        "create-traversal",
        "CreateCollection",
        lambda: pb.CreateCollectionRequest(name="../../tmp/x", dim=4),
        C.INVALID_ARGUMENT,
        "name",
    ),
    P(
        "drop-unknown",
        "DropCollection",
        lambda: pb.DropCollectionRequest(name="nope"),
        C.NOT_FOUND,
        "nope",
    ),
    P(
        "describe-unknown",
        "DescribeCollection",
        lambda: pb.DescribeCollectionRequest(name="nope"),
        C.NOT_FOUND,
        "nope",
    ),
    P("oversized", "Upsert", lambda: upsert(["big"], [[0.5] * 300_000]), C.RESOURCE_EXHAUSTED, ""),
    P(
        "no-token",
        "ListCollections",
        lambda: pb.ListCollectionsRequest(),
        C.UNAUTHENTICATED,
        "authorization",
        md=(),
    ),
    P(
        "wrong-token",
        "ListCollections",
        lambda: pb.ListCollectionsRequest(),
        C.UNAUTHENTICATED,
        "token",
        md=(("authorization", "Bearer nope"),),
    ),
    P(
        "not-bearer",
        "Stats",
        lambda: pb.StatsRequest(),
        C.UNAUTHENTICATED,
        "token",
        md=(("authorization", TOKEN),),
    ),
    P("no-token-search", "Search", lambda: search(vec(1, 0, 0, 0)), C.UNAUTHENTICATED, "", md=()),
]


@pytest.mark.parametrize("rpc, make, metadata, code, words", CASES)
def test_bad_request(stub, rpc, make, metadata, code, words):
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(make(), metadata=metadata, timeout=30)
    assert info.value.code() == code, info.value.details()
    assert words in (info.value.details() or ""), info.value.details()


def test_deadline_exceeded(start_server, monkeypatch):
    # A deadline that passes while the search is held: the call can end no other way. (A tiny
    # deadline alone races the server: on a loaded machine its answer could come back before
    # the client's deadline timer fired.) Its own server, so the held search delays no other test.
    srv = start_server(token=TOKEN, limits=LIMITS)
    channel = grpc.insecure_channel(srv.address)
    s = pb_grpc.VecDexStub(channel)
    s.CreateCollection(pb.CreateCollectionRequest(name="vec", dim=4, index="flat"), metadata=GOOD)
    col = srv.server.engine.open_collection("vec")  # the object the server searches
    release = threading.Event()

    def hold(search: Callable[..., Any]) -> Callable[..., Any]:
        def held_search(*args: Any, **kwargs: Any) -> Any:
            release.wait(30)
            return search(*args, **kwargs)

        return held_search

    monkeypatch.setattr(col, "search", hold(col.search))  # without the micro-batcher
    monkeypatch.setattr(col, "search_batch", hold(col.search_batch))  # with it
    try:
        with pytest.raises(grpc.RpcError) as info:
            s.Search(search(vec(1, 0, 0, 0)), metadata=GOOD, timeout=0.2)
    finally:
        release.set()
        channel.close()
    # Expired while queued (the server's answer) or while searching (the client's timer).
    assert info.value.code() == C.DEADLINE_EXCEEDED, info.value.details()


def test_still_serving_after_bad_requests(stub):
    for case in CASES:  # every bad request again, then good ones
        rpc, make, metadata = case.values[:3]
        try:
            getattr(stub, rpc)(make(), metadata=metadata, timeout=30)
        except grpc.RpcError:
            pass
    res = stub.Search(search(vec(1, 0, 0, 0), k=2), metadata=GOOD, timeout=30)
    assert [h.id for h in res.hits] == ["a", "b"]
    assert (
        len(stub.Get(pb.GetRequest(collection="vec", ids=["a", "b", "c"]), metadata=GOOD).records)
        == 3
    )
    names = stub.ListCollections(pb.ListCollectionsRequest(), metadata=GOOD).names
    assert list(names) == ["vec"]  # nothing the bad requests named was created
    stats = stub.Stats(pb.StatsRequest(), metadata=GOOD)
    assert stats.errors["INVALID_ARGUMENT"] > 0 and stats.errors["UNAUTHENTICATED"] > 0
    assert stats.errors["NOT_FOUND"] > 0
    assert stats.in_flight == 0
