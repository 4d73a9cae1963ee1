"""Collections on quantized indexes (``sq8``, ``binary``, ``pq``): upserts, deletes, filters,
checkpoints, reopen, log replay, SIGKILL recovery, the CLI and gRPC -- as for every index.

Each collection holds more vectors than its index needs to train (sq8 / binary: 1,024; the pq
spec here: 39 * 32 = 1,248), so the compact codes are what is searched, saved and replayed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import index
from engine import Engine, cli
from index import scoring
from index.metric import Metric, prepare

DIM, N, K = 128, 1_400, 10
SPECS = {"sq8": "sq8", "binary": "binary", "pq": "pq:nlist=16,nbits=5"}
KINDS = list(SPECS)
# recall@10 against exact search over the same live vectors (128-d clustered, seed 0), observed
# over the searches below: sq8 1.00, binary 0.915-1.00, pq 0.96-1.00 (5 bits a sub-quantizer
# here, so that it trains on few vectors).
FLOORS = {"sq8": 0.97, "binary": 0.85, "pq": 0.92}
ROOT = Path(__file__).resolve().parents[2]
# Exact scores: to float32 rounding on the CPU, to float16 rounding on CUDA (see index.scoring).
TOL = 1e-5 if scoring.device().type == "cpu" else 2e-3


def clustered(sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Arrays of the given sizes from one distribution: gaussian centres, points on each
    centre's 10-d random subspace plus noise (as tests/index/conftest.py's ``clustered``)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, DIM))
    maps = rng.normal(size=(100, 10, DIM)) / np.sqrt(10)
    out = []
    for n in sizes:
        c = rng.integers(0, 100, n)
        z = rng.normal(size=(n, 1, 10))
        x = centres[c] + (z @ maps[c])[:, 0] + 0.3 * rng.normal(size=(n, DIM))
        out.append(x.astype(np.float32))
    return out


BASE, QUERIES = clustered((N + 400, 40), seed=0)  # queries held out of the base


def live_model(col) -> dict[str, np.ndarray]:
    ids = col.ids()
    return {r.id: r.vector for r in col.get(ids)}


def exact(model: dict[str, np.ndarray], queries: np.ndarray, k: int, allowed=None):
    """(ids, scores) of exact cosine search over ``model`` (restricted to ``allowed`` ids)."""
    ids = [i for i in model if allowed is None or i in allowed]
    x = prepare(np.stack([model[i] for i in ids]), Metric.COSINE)
    s = prepare(queries, Metric.COSINE) @ x.T
    order = np.argsort(-s, axis=1)[:, :k]
    return np.array(ids, dtype=object)[order], np.take_along_axis(s, order, 1)


def check_results(col, kind: str, model: dict[str, np.ndarray], where=None, allowed=None):
    """Search results over exactly the live items, exact scores, recall at the floor."""
    res = col.search_batch(QUERIES, k=K, where=where)
    want_ids, _ = exact(model, QUERIES, K, allowed)
    got = [[i for i in row if i is not None] for row in res.ids]
    assert all(set(row) <= set(model) for row in got)
    if allowed is not None:
        assert all(set(row) <= allowed for row in got)
    found = sum(len(set(g) & set(w)) for g, w in zip(got, want_ids.tolist(), strict=True))
    assert found / want_ids.size >= FLOORS[kind], found / want_ids.size
    q = prepare(QUERIES, Metric.COSINE)
    for j, row in enumerate(got):
        x = prepare(np.stack([model[i] for i in row]), Metric.COSINE)
        np.testing.assert_allclose(res.scores[j][: len(row)], x @ q[j], rtol=TOL, atol=TOL)
    return res


def with_param(spec: str, param: str) -> str:
    return spec + ("," if ":" in spec else ":") + param


def same_results(a, b) -> None:
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


# ---- the library ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_writes_filters_checkpoint_reopen_and_replay(tmp_path, kind):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("c", dim=DIM, index=SPECS[kind])
    spec = index.from_spec(SPECS[kind], DIM).spec
    assert col.describe()["index"] == spec  # the canonical spec, in the manifest
    ids = [f"d{i}" for i in range(N)]
    for a, b in ((0, 500), (500, 1000), (1000, N)):  # trains during the third batch
        col.add(ids[a:b], BASE[a:b], [{"g": i % 5} for i in range(a, b)])
    col.upsert(ids[:40], BASE[N : N + 40], [{"g": 9} for _ in range(40)])  # new vectors
    col.delete(ids[40:100])
    model = live_model(col)
    assert len(model) == N - 60 and not set(ids[40:100]) & set(model)
    check_results(col, kind, model)
    group2 = {i for i in model if int(i[1:]) % 5 == 2 and int(i[1:]) >= 40}
    check_results(col, kind, model, where={"g": 2}, allowed=group2)
    hits = col.search(BASE[N + 3], k=1)  # an upserted vector finds its id
    assert hits[0].id == "d3" and hits[0].payload == {"g": 9}
    parts = col.describe()["memory"]["index"]["parts"]
    assert {"codes", "lists" if kind == "pq" else "graph", "vectors", "labels"} <= set(parts)

    col.flush()
    before = col.search_batch(QUERIES, k=K)
    eng.close()
    eng = Engine(tmp_path / "data")
    col = eng.open_collection("c")
    assert col.describe()["index"] == spec and len(col) == len(model)
    same_results(col.search_batch(QUERIES, k=K), before)
    assert col.describe()["memory"]["index"]["parts"]["vectors"]["ram"] == 0  # mapped

    # Writes after the checkpoint live in the log; a copy of the directory is what a crash
    # leaves, and opening it replays them.
    col.upsert([f"n{i}" for i in range(30)], BASE[N + 100 : N + 130])
    col.delete(ids[100:120])
    model = live_model(col)
    live = col.search_batch(QUERIES, k=K)
    crashed = shutil.copytree(tmp_path / "data", tmp_path / "crashed")
    again = Engine(crashed).open_collection("c")
    assert live_model(again).keys() == model.keys()
    check_results(again, kind, model)
    assert again.search(BASE[N + 110], k=1)[0].id == "n10"
    # The replayed index was rebuilt from the log, not loaded: its graph may differ, but never
    # by much, and its scores are exact.
    ids_a, ids_b = np.array(again.search_batch(QUERIES, k=K).ids), np.array(live.ids)
    assert (ids_a == ids_b).mean() >= FLOORS[kind] - 0.05
    eng.close()


# ---- SIGKILL ----------------------------------------------------------------------------------
WRITER = r"""
import sys
import numpy as np
from engine import Engine
path, seed, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
col = Engine(path).open_collection("c")
print("R", flush=True)
k = 0
while True:
    rng = np.random.default_rng([seed, k])
    print(f"B {k}", flush=True)
    if k % 7 == 6:
        col.flush()
    elif k % 3 == 2:
        col.delete([f"d{i}" for i in rng.choice(1400, 8, replace=False)])
    else:
        ids = [f"w{i}" for i in rng.choice(300, 12, replace=False)]
        col.upsert(ids, rng.normal(size=(12, dim)).astype(np.float32))
    print(f"A {k}", flush=True)
    k += 1
"""


def writer_op(model: dict[str, np.ndarray], seed: int, k: int) -> dict[str, np.ndarray]:
    """The writer's call k applied to a model (flushes change nothing)."""
    rng = np.random.default_rng([seed, k])
    model = dict(model)
    if k % 7 == 6:
        return model
    if k % 3 == 2:
        for i in rng.choice(1400, 8, replace=False):
            model.pop(f"d{i}", None)
        return model
    ids = [f"w{i}" for i in rng.choice(300, 12, replace=False)]
    for i, v in zip(ids, rng.normal(size=(12, DIM)).astype(np.float32), strict=True):
        model[i] = v
    return model


def same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[i], b[i]) for i in a)


def kill_writer(path: Path, seed: int, after: int) -> tuple[list[int], int | None]:
    """Runs the writer, SIGKILLs it once call ``after`` is acknowledged; returns the calls
    acknowledged and the one in flight."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(seed), str(DIM)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line.strip())
        if seen[-1] == f"A {after}":
            proc.send_signal(signal.SIGKILL)
            break
    # What it wrote before the signal landed: it may have finished more calls meanwhile.
    seen += [line.strip() for line in proc.stdout]
    proc.wait(60)
    err = proc.stderr.read() if proc.stderr is not None else ""
    assert proc.returncode == -signal.SIGKILL, (seen[-3:], err[-2000:])
    begun = [int(s[2:]) for s in seen if s.startswith("B ")]
    acked = [int(s[2:]) for s in seen if s.startswith("A ")]
    return acked, begun[-1] if len(begun) > len(acked) else None


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_recovery_keeps_every_acknowledged_write(tmp_path, kind):
    path = tmp_path / "data"
    eng = Engine(path)
    col = eng.create_collection("c", dim=DIM, index=SPECS[kind])
    col.add([f"d{i}" for i in range(N)], BASE[:N])
    model = {f"d{i}": BASE[i] for i in range(N)}
    eng.close()  # a checkpoint: the trained codes are saved and loaded from here on
    rng = np.random.default_rng(len(kind))
    for seed in range(2):
        acked, inflight = kill_writer(path, seed, after=int(rng.integers(3, 15)))
        for k in acked:
            model = writer_op(model, seed, k)
        eng = Engine(path)
        col = eng.open_collection("c")
        got = live_model(col)
        if inflight is not None and not same_state(got, model):
            model = writer_op(model, seed, inflight)  # the call in flight applied entirely
        assert same_state(got, model), (sorted(got.keys() ^ model.keys()), inflight)
        recovered = check_results(col, kind, model)
        eng.close()  # checkpoints what it replayed
        col = Engine(path).open_collection("c")
        same_results(col.search_batch(QUERIES, k=K), recovered)  # reopen: the same results
        col.close()


# ---- the CLI and gRPC -------------------------------------------------------------------------
def test_cli_index_and_search(tmp_path, capsys):
    table = pa.table(
        {
            "id": [f"v{i}" for i in range(N)],
            "vector": pa.array(BASE[:N].tolist(), type=pa.list_(pa.float32())),
            "group": [i % 3 for i in range(N)],
        }
    )
    pq.write_table(table, tmp_path / "v.parquet")
    data = str(tmp_path / "data")
    for kind, spec in SPECS.items():
        args = ["index", str(tmp_path / "v.parquet"), "--data", data, "--collection", kind]
        args += ["--vector-column", "vector", "--index", spec, "--payload-columns", "group"]
        assert cli.main([*args, "--quiet"]) == 0
        query = json.dumps(QUERIES[0].tolist())
        search = ["search", "--data", data, "--collection", kind, query, "--vector", "-k", "5"]
        assert cli.main([*search, "--json", "--param", "oversample=3"]) == 0
        hits = json.loads(capsys.readouterr().out)
        col = Engine(data, read_only=True).open_collection(kind)
        want = col.search(QUERIES[0], k=5, oversample=3)
        assert [h["id"] for h in hits] == [h.id for h in want]
        np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in want], rtol=TOL)
        assert cli.main([*search, "--json", "--where", '{"group": 1}']) == 0
        assert all(h["payload"]["group"] == 1 for h in json.loads(capsys.readouterr().out))
        assert cli.main(["info", "--data", data, "--collection", kind, "--json"]) == 0
        (info,) = json.loads(capsys.readouterr().out)
        assert info["index"] == index.from_spec(spec, DIM).spec and info["count"] == N
    bad = ["search", "--data", data, "--collection", "sq8", query, "--vector"]
    assert cli.main([*bad, "--param", "oversample=0"]) == 2
    assert "oversample must be >= 1, got 0" in capsys.readouterr().err


class _ServerThread:
    """A gRPC server on a loopback port, on its own event loop in a daemon thread."""

    def __init__(self, eng: Engine) -> None:
        from server import Server, ServerConfig

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

        async def start() -> tuple[Any, int]:
            srv = Server(ServerConfig(data=str(eng.path), port=0), eng)
            return srv, await srv.start()

        self.server, port = self.call(start())
        self.address = f"127.0.0.1:{port}"

    def call(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(60)

    def stop(self) -> None:
        try:
            self.call(self.server.stop(1.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def test_grpc_passes_the_spec_and_search_parameters_through(tmp_path):
    from server import Client

    eng = Engine(tmp_path / "served")
    srv = _ServerThread(eng)
    try:
        client = Client(srv.address)
        for kind, spec in SPECS.items():
            rem = client.create_collection(kind, dim=DIM, index=with_param(spec, "oversample=3"))
            rem.add([f"d{i}" for i in range(N)], BASE[:N], [{"g": i % 4} for i in range(N)])
            rem.delete(["d1", "d2"])
            local = eng.open_collection(kind)  # the very collection the server holds
            assert rem.describe()["index"] == local.describe()["index"]
            assert "oversample=3" in local.describe()["index"]
            for params in ({}, {"oversample": 6, "rescore": 0}):
                got = rem.search_batch(QUERIES, k=K, where={"g": 3}, **params)
                want = local.search_batch(QUERIES, k=K, where={"g": 3}, **params)
                same_results(got, want)
            assert "d1" not in {i for row in got.ids for i in row}
        client.close()
    finally:
        srv.stop()
