"""A sharded collection served over gRPC: the same hits as the embedded engine, a shard that is
down answered with UNAVAILABLE, and partial=true answered from the other shards with
missing_shards naming it (in-process shards with one made unreachable; and Ray-hosted ones)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from engine import Engine, shards
from engine.errors import ShardUnavailableError
from server import Client, RequestError

DIM = 16
N = 300


def corpus(n: int = N, seed: int = 1338) -> tuple[list[str], np.ndarray, list[dict], np.ndarray]:
    """Clustered vectors with payloads, and 6 queries (seeded)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, DIM))
    x = (centres[rng.integers(0, 8, n)] + 0.4 * rng.normal(size=(n, DIM))).astype(np.float32)
    ids = [f"doc-{i}" for i in range(n)]
    payloads = [{"year": 2000 + i % 25, "tag": "abc"[i % 3]} for i in range(n)]
    return ids, x, payloads, rng.normal(size=(6, DIM)).astype(np.float32)


def same_hits(a: Any, b: Any) -> None:
    assert [h.id for h in a] == [h.id for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5, atol=1e-5)
    assert [h.payload for h in a] == [h.payload for h in b]


def same_result(a: Any, b: Any) -> None:
    assert len(a) == len(b)
    for i in range(len(a)):
        same_hits(a[i], b[i])


class DownShards:
    """A shard set whose shards in ``down`` do not answer, as a dead Ray actor's would not."""

    def __init__(self, inner: Any, down: set[int]) -> None:
        self.inner, self.down = inner, down
        self.where, self.n, self.name = inner.where, inner.n, "sh"

    def call(self, i: int, method: str, *args: Any) -> Any:
        return self.inner.call(i, method, *args)

    def gather(self, method, args=(), *, shards=None, partial=False):
        which = list(range(self.n)) if shards is None else list(shards)
        up = [i for i in which if i not in self.down]
        missing = [i for i in which if i in self.down]
        if missing and not partial:
            raise ShardUnavailableError(self.name, missing, method)
        got, _ = self.inner.gather(method, args, shards=up) if up else ([], [])
        answers = dict(zip(up, got, strict=True))
        return [answers.get(i) for i in which], missing

    def close(self) -> None:
        self.inner.close()


def fill(eng: Engine, data: Any) -> tuple[Any, Any, Any]:
    """A sharded collection (2 shards) and one collection of the same items, one shard's part."""
    ids, x, payloads, _ = data
    sh = eng.create_collection("sh", dim=DIM, index="flat", shards=2)
    sh.add(ids, x, payloads)
    kept = [j for j in range(len(ids)) if shards.shard_of([ids[j]], 2)[0] == 0]
    only0 = eng.create_collection("only0", dim=DIM, index="flat")
    only0.add([ids[j] for j in kept], x[kept], [payloads[j] for j in kept])
    return sh, only0, kept


def check_served(client: Client, one: Any, only0: Any, data: Any, down: Any) -> None:
    """Congruence with ``one`` while every shard is up; then, with shard 1 ``down()``,
    UNAVAILABLE and partial answers equal to ``only0``'s."""
    _, _, _, q = data
    remote = client.open_collection("sh")
    for where in (None, {"tag": "b"}):
        same_result(remote.search_batch(q, 10, where=where), one.search_batch(q, 10, where=where))
        for v in q[:3]:
            hits = remote.search(v, 10, where=where)
            same_hits(hits, one.search(v, 10, where=where))
            assert not hits.partial
    down()
    for call in (lambda: remote.search(q[0], 10), lambda: remote.search_batch(q, 10)):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shard-001" in e.value.details()
    hits = remote.search(q[0], 10, partial=True)
    assert hits.partial and hits.missing_shards == (1,)
    same_hits(hits, only0.search(q[0], 10))
    res = remote.search_batch(q, 10, partial=True)
    assert res.partial and res.missing_shards == (1,)
    same_result(res, only0.search_batch(q, 10))


def test_sharded_collection_served_like_the_embedded_one(tmp_path, start_server):
    data = corpus()
    ids, x, payloads, q = data
    ref = Engine(tmp_path / "embedded")
    one = ref.create_collection("one", dim=DIM, index="flat")
    one.add(ids, x, payloads)
    eng = Engine(tmp_path / "served")
    sh, only0, _ = fill(eng, data)
    srv = start_server(engine=eng, max_batch=8, max_wait_ms=1.0)
    with Client(srv.address) as client:

        def down() -> None:
            sh._shards = DownShards(sh._shards, {1})

        check_served(client, one, only0, data, down)
        # partial on a collection that is not sharded: refused, naming the field
        with pytest.raises(RequestError, match="partial: collection 'only0' is not sharded"):
            client.open_collection("only0").search(q[0], 5, partial=True)
        with pytest.raises(RequestError, match="not sharded"):
            client.open_collection("only0").search_batch(q, 5, partial=True)
        assert client.open_collection("only0").search(q[0], 5).missing_shards == ()
        sh._shards = sh._shards.inner  # back up, so that the server's shutdown closes it
        same_result(client.open_collection("sh").search_batch(q, 10), one.search_batch(q, 10))
    ref.close()


def test_a_sharded_collection_created_through_the_client(tmp_path, start_server):
    ids, x, payloads, q = corpus()
    ref = Engine(tmp_path / "embedded")
    one = ref.create_collection("one", dim=DIM, index="flat")
    one.add(ids, x, payloads)
    srv = start_server(engine=Engine(tmp_path / "served"))
    with Client(srv.address) as client:
        col = client.create_collection("sh", dim=DIM, index="flat", shards=3)
        assert col.shards == 3 and client.open_collection("sh").describe()["shards"] == 3
        col.add(ids, x, payloads)
        same_result(col.search_batch(q, 10), one.search_batch(q, 10))
        with pytest.raises(ValueError, match="shards"):
            client.create_collection("bad", dim=DIM, shards=0)
        assert client.create_collection("plain", dim=DIM).shards is None
    ref.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    from engine import raycluster

    if ray.is_initialized():
        ray.shutdown()
    raycluster.connect("local", num_cpus=2)
    yield
    ray.shutdown()


@pytest.mark.ray
def test_ray_hosted_sharded_collection_served(cluster, tmp_path, start_server, end_shard):

    data = corpus()
    ids, x, payloads, _ = data
    ref = Engine(tmp_path / "embedded")
    one = ref.create_collection("one", dim=DIM, index="flat")
    one.add(ids, x, payloads)
    eng = Engine(tmp_path / "served", ray="local")
    sh, _, _ = fill(eng, data)
    only0 = ref.create_collection("only0", dim=DIM, index="flat")
    kept = [j for j in range(len(ids)) if shards.shard_of([ids[j]], 2)[0] == 0]
    only0.add([ids[j] for j in kept], x[kept], [payloads[j] for j in kept])
    assert sh.hosted == "ray"
    srv = start_server(engine=eng, max_batch=8, max_wait_ms=1.0)
    with Client(srv.address) as client:
        check_served(client, one, only0, data, lambda: end_shard(sh._shards, 1))
        sh._shards.restart(1)  # back, so that the server's shutdown closes every shard
        same_result(
            client.open_collection("sh").search_batch(data[3], 10), one.search_batch(data[3], 10)
        )
    ref.close()
