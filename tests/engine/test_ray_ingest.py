"""``vecdex index --ray``: Ray Data reads, checks and encodes on a local Ray cluster, and the
result equals a local run's; a shard actor killed during a run is waited for and the run ends
complete."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from engine import Engine  # noqa: E402
from engine.errors import ShardUnavailableError  # noqa: E402
from engine.ingest import MalformedInputError, ingest  # noqa: E402

pytestmark = pytest.mark.ray

WORDS = ["protein", "cell", "gene", "virus", "drug", "trial", "mouse", "brain", "heart"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    from engine import raycluster

    if ray.is_initialized():
        ray.shutdown()
    raycluster.connect("local", num_cpus=2)
    yield
    ray.shutdown()


def corpus(path: Path, n: int) -> Path:
    rng = np.random.default_rng(4)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "corpus.jsonl", "w") as f:
        for i in range(n):
            text = " ".join(rng.choice(WORDS, 10)) + f" item{i}"
            f.write(json.dumps({"_id": f"d{i}", "title": f"T{i % 7}", "text": text}) + "\n")
    return path


def contents(col) -> dict:
    ids = sorted(col.ids())
    return {r.id: (r.vector, r.payload) for r in col.get(ids)}


def assert_same(got, want) -> None:
    a, b = contents(got), contents(want)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k][0], b[k][0], rtol=1e-5, atol=1e-6)
        assert a[k][1] == b[k][1]
    for q in ("gene virus", "item7 heart", "mouse trial drug"):
        for mode in ("dense", "lexical", "hybrid"):
            assert [h.id for h in got.search(q, 8, mode=mode)] == [
                h.id for h in want.search(q, 8, mode=mode)
            ], (q, mode)


def test_shards_built_through_ray_equal_shards_built_locally(cluster, tmp_path, tiny_st_dir):
    beir = corpus(tmp_path / "beir", 90)
    opts = {"encoder": str(tiny_st_dir), "index": "flat", "batch_size": 16, "shards": 2}
    local = Engine(tmp_path / "local")
    ingest(local, beir, "c", **opts)
    # Ray Data reads and encodes (two encoder actors); the shards are Ray actors too.
    with Engine(tmp_path / "ray", ray="local") as eng:
        report = ingest(eng, beir, "c", ray="local", encoders=2, cpus_per_encoder=1, **opts)
        assert report.added == 90 and report.skipped == 0
        col = eng.open_collection("c")
        assert col.hosted == "ray" and col.shards == 2
        assert_same(col, local.open_collection("c"))
        # The same command again: nothing to do.
        assert ingest(eng, beir, "c", ray="local", **opts).already_done
    local.close()


def test_malformed_rows_are_named_by_row_through_ray(cluster, tmp_path):
    path = tmp_path / "v.jsonl"
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for i in range(40):
            v = rng.standard_normal(4).tolist()
            if i == 13:
                v = v[:3]
            f.write(json.dumps({"id": f"v{i % 37}", "vector": v}) + "\n")
        f.write("{not json\n")
    opts = {"vector_column": "vector", "index": "flat", "batch_size": 8, "shards": 2}
    with Engine(tmp_path / "a") as eng:
        with pytest.raises(MalformedInputError):
            ingest(eng, path, "c", ray="local", **opts)
        assert "c" not in eng.list_collections() or len(eng.open_collection("c")) == 0
        report = ingest(eng, path, "c", ray="local", on_error="skip", **opts)
    with Engine(tmp_path / "b") as eng:
        want = ingest(eng, path, "c", on_error="skip", **opts)
    assert report.added == want.added == 36 and report.skipped == want.skipped == 5
    assert sorted(map(str, report.errors)) == sorted(map(str, want.errors))


def test_a_shard_actor_killed_during_a_run_is_waited_for_and_the_run_completes(cluster, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 8)).astype(np.float32)
    path = tmp_path / "v.jsonl"
    with open(path, "w") as f:
        for i, v in enumerate(x):
            f.write(json.dumps({"id": f"v{i}", "vector": v.tolist(), "g": i % 3}) + "\n")
    opts = {
        "vector_column": "vector",
        "index": "hnsw:M=8,ef_construction=64",
        "payload_columns": ["g"],
        "batch_size": 25,
        "shards": 2,
    }
    with Engine(tmp_path / "ray", ray="local") as eng:
        killed = []

        def kill_once(report) -> None:
            if report.added >= 100 and not killed:
                col = eng.open_collection("c")
                ray.kill(col._shards.actor(1), no_restart=False)  # Ray restarts it
                killed.append(report.added)

        report = ingest(eng, path, "c", ray="local", progress=kill_once, **opts)
        assert killed and report.added == 400 and report.skipped == 0
        col = eng.open_collection("c")
        assert len(col) == 400 and col.marker["ingest"]["done"]
        got = {r.id: (r.vector.tolist(), r.payload) for r in col.get([f"v{i}" for i in range(400)])}
        assert got == {f"v{i}": (x[i].tolist(), {"g": i % 3}) for i in range(400)}
        before = col.search_batch(x[:20], 5, ef=200)
        pid = col._shards.call(0, "ping").result()
        ray.kill(col._shards.actor(0), no_restart=False)
        deadline = time.monotonic() + 120
        while True:  # down (the kill is asynchronous), then a new process opens the shard
            try:
                if col._shards.call(0, "ping").result() != pid:
                    break
            except ShardUnavailableError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        after = col.search_batch(x[:20], 5, ef=200)
        assert after.ids.tolist() == before.ids.tolist()
        assert len(col) == 400
