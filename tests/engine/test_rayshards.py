"""Shards hosted by Ray actors on a real local Ray cluster: the same answers as one collection,
shard errors as themselves, a dead shard reported (or skipped with partial=True), a restarted one
serving every acknowledged write; and the local cluster reachable from this machine only."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from engine import CorruptFileError, Engine, FilterError, shards
from engine.errors import ShardUnavailableError

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.ray

DIM = 16
N = 400
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def data(n: int = N, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict]]:
    """Clustered vectors with payloads (seeded)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, DIM))
    x = (centres[rng.integers(0, 8, n)] + 0.4 * rng.normal(size=(n, DIM))).astype(np.float32)
    ids = [f"doc{i}" for i in range(n)]
    payloads = [{"group": i % 4, "year": 2000 + i % 25} for i in range(n)]
    return ids, x, payloads


def queries(m: int = 8, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((m, DIM)).astype(np.float32)


def same(a: Any, b: Any) -> None:
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-6)
    assert a.payloads == b.payloads


def listening() -> set[tuple[str, int, int | None]]:
    return {
        (c.laddr.ip, c.laddr.port, c.pid)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    """One local Ray cluster (2 CPUs) for the module; the listening sockets from before it."""
    from engine import raycluster

    if ray.is_initialized():  # another module's cluster: start ours, on loopback
        ray.shutdown()
    before = listening()
    raycluster.connect("local", num_cpus=2)
    yield {"before": before}
    ray.shutdown()


@pytest.fixture
def eng(cluster, tmp_path) -> Iterator[Engine]:
    with Engine(tmp_path / "data", ray="local") as e:
        yield e


def test_import_leaves_ray_out():
    """Nothing imports ray until a sharded collection is hosted by Ray."""
    code = "import sys, engine, server, index; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_local_cluster_listens_on_loopback_only(cluster):
    ours = psutil.Process()
    procs = {ours.pid} | {p.pid for p in ours.children(recursive=True)}
    after = listening()
    ray_sockets = {(ip, port) for ip, port, pid in after if pid in procs}
    # gcs_server, raylet (2), this driver's core worker, the runtime-env agent at least
    assert len(ray_sockets) >= 4, ray_sockets
    assert {ip for ip, _ in ray_sockets} <= LOOPBACK, ray_sockets
    # Nothing that appeared since the cluster started (from any of our processes) is reachable
    # from elsewhere, and there is no dashboard / job-submission API.
    new = {(ip, port) for ip, port, pid in after - cluster["before"] if pid in procs}
    assert new and {ip for ip, _ in new} <= LOOPBACK, new
    assert 8265 not in {port for _, port, _ in after}
    assert 52365 not in {port for _, port in ray_sockets}  # no dashboard agent either


def test_ray_sharded_flat_answers_exactly_as_one_collection(eng):
    ids, x, payloads = data()
    one = eng.create_collection("one", dim=DIM, index="flat")
    sh = eng.create_collection("sh", dim=DIM, index="flat", shards=2)
    assert sh.hosted == "ray" and sh.describe()["hosted"] == "ray"
    for col in (one, sh):
        col.add(ids[:300], x[:300], payloads[:300])
        col.add(ids[300:], x[300:], payloads[300:])
    q = queries()

    def agree() -> None:
        for where in (None, {"group": 2}, {"year": {"$gte": 2020}}):
            same(sh.search_batch(q, 10, where=where), one.search_batch(q, 10, where=where))
            assert sh.search(q[0], 7, where=where) == one.search(q[0], 7, where=where)
        assert len(sh) == len(one)

    agree()
    gone = ids[::7]
    assert sh.delete(gone + ["absent"]) == one.delete(gone) == len(gone)
    changed = ids[1::5]
    rng = np.random.default_rng(3)
    new = rng.standard_normal((len(changed), DIM)).astype(np.float32)
    for col in (one, sh):
        col.upsert(changed, new, [{"group": 9, "year": 1999}] * len(changed))
    agree()
    assert sh.get(["doc1", "doc7", "absent"])[0].payload == {"group": 9, "year": 1999}
    assert sh.get(["doc7"]) == [None]


def test_shard_errors_come_back_as_themselves(eng, tmp_path):
    ids, x, payloads = data(40)
    sh = eng.create_collection("sh", dim=DIM, index="flat", shards=2)
    sh.add(ids, x, payloads)
    with pytest.raises(FilterError, match=r"\$bad"):
        sh.search(x[0], 5, where={"$bad": 1})
    with pytest.raises(ValueError, match="already exists"):
        sh.add(ids[:1], x[:1])
    eng.close()
    # A shard whose file is corrupt: opening the collection raises CorruptFileError naming it.
    bad = tmp_path / "data" / "sh" / shards.shard_name(1) / "index.2" / "vectors.npy"
    bad.write_bytes(bad.read_bytes()[:-8])
    with (
        Engine(tmp_path / "data", ray="local") as e,
        pytest.raises(CorruptFileError, match="vectors"),
    ):
        e.open_collection("sh")


def test_a_shard_ended_for_good_is_missing_until_restarted(eng, end_shard):
    ids, x, payloads = data()
    one = eng.create_collection("one", dim=DIM, index="flat")
    sh = eng.create_collection("sh", dim=DIM, index="flat", shards=2)
    for col in (one, sh):
        col.add(ids, x, payloads)
    q = queries()
    before = sh.search_batch(q, 10)
    host = sh._shards
    end_shard(host, 1)  # down, and Ray will not bring it back
    with pytest.raises(ShardUnavailableError, match="shard-001"):
        sh.search(q[0], 10)
    with pytest.raises(ShardUnavailableError, match="partial=True"):
        sh.search_batch(q, 10)
    with pytest.raises(ShardUnavailableError):  # shard 0 takes its part (the same items)
        sh.upsert(ids[:20], x[:20], payloads[:20])
    # partial: the other shard's hits, exactly those of one collection holding only its items
    kept = [j for j in range(N) if shards.shard_of([ids[j]], 2)[0] == 0]
    only = eng.create_collection("only0", dim=DIM, index="flat")
    only.add([ids[j] for j in kept], x[kept], [payloads[j] for j in kept])
    res = sh.search_batch(q, 10, partial=True)
    assert res.partial and res.missing_shards == (1,)
    same(res, only.search_batch(q, 10))
    hits = sh.search(q[0], 10, partial=True)
    assert hits.partial and hits.missing_shards == (1,)
    assert hits == only.search(q[0], 10)
    host.restart(1)
    same(sh.search_batch(q, 10), before)
    assert not sh.search(q[0], 10).partial


def test_ray_restarts_a_killed_shard_with_every_acknowledged_write(eng):
    ids, x, payloads = data()
    sh = eng.create_collection("sh", dim=DIM, index="flat", shards=2)
    one = eng.create_collection("one", dim=DIM, index="flat")
    sh.durability = "fsync"
    for col in (one, sh):
        col.add(ids[:300], x[:300], payloads[:300])
        col.add(ids[300:], x[300:], payloads[300:])  # acknowledged just before the kill
    q = queries()
    before = sh.search_batch(q, 10)
    same(before, one.search_batch(q, 10))
    host = sh._shards
    old = host.wait_ready(10)
    ray.kill(host.actor(0), no_restart=False)  # Ray restarts it
    # Right after the kill the shard is down or (if Ray was quick) back: either is reported.
    res = sh.search_batch(q, 10, partial=True)
    assert res.missing_shards in ((), (0,))
    if not res.partial:
        same(res, before)
    new = host.wait_ready(120)
    assert new[0] != old[0] and new[1] == old[1]  # a new process for shard 0 only
    same(sh.search_batch(q, 10), before)
    assert len(sh) == N
    assert [r.id for r in sh.get(ids[300:])] == ids[300:]
