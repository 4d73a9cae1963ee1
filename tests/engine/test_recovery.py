"""Recovery: replay in batches equals replay one record at a time, and an HNSW collection answers
exactly while its graph catches up with the replayed rows (``engine.catchup``).

Kills with SIGKILL during replay and catch-up live in ``test_durability_crash.py``.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from engine import Engine, catchup
from engine.replay import Replayer
from index.catchup import CatchUpIndex, exact_topk, merge_unique
from index.metric import Metric

DIM = 8
SPEC = "hnsw:M=8,ef_construction=32"
BASE = 300  # checkpointed items: the graph is small enough for ef=BASE to be exact


def vecs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def payload(i: int, k: int) -> dict:
    return {"g": i % 3, "k": k}


def write_log(col, model: dict, seed: int, n_ops: int) -> None:
    """Seeded writes into ``col`` and ``model`` (id -> (vector, payload)): runs of upserts of new
    ids, of checkpointed ids and of one id twice, deletes of both kinds, and a marker."""
    rng = np.random.default_rng(seed)
    for k in range(n_ops):
        r = rng.random()
        if r < 0.15 and model:
            ids = list(rng.choice(sorted(model), min(4, len(model)), replace=False))
            col.delete(ids)
            for i in ids:
                model.pop(i, None)
            continue
        if r < 0.3:
            nums = rng.choice(BASE + 400, 6, replace=False)  # checkpointed ids or earlier ones
        else:
            nums = np.arange(BASE + 40 * k, BASE + 40 * k + int(rng.integers(1, 40)))
        ids = [f"d{int(i)}" for i in nums]
        x = vecs(len(ids), seed * 1000 + k)
        rows = [payload(int(i), k) for i in nums]
        col.upsert(ids, x, rows, marker={"k": k} if k % 5 == 0 else None)
        for i, v, p in zip(ids, x, rows, strict=True):
            model.pop(i, None)
            model[i] = (v, p)


def crashed(tmp_path: Path, spec: str = SPEC, metric: str = "cosine", seed: int = 0):
    """A collection with a checkpoint of BASE items and a log after it, as a kill -9 leaves it
    (the files copied while the writer still holds them). Returns (path, model)."""
    src = tmp_path / "src"
    col = Engine(src).create_collection("c", dim=DIM, index=spec, metric=metric)
    model: dict = {}
    ids = [f"d{i}" for i in range(BASE)]
    x = vecs(BASE, seed + 77)
    col.upsert(ids, x, [payload(i, -1) for i in range(BASE)])
    model.update({i: (v, payload(j, -1)) for j, (i, v) in enumerate(zip(ids, x, strict=True))})
    col.flush()
    write_log(col, model, seed, 40)
    dst = tmp_path / "crashed"
    shutil.copytree(src, dst)
    return dst, model


def copy(path: Path, name: str) -> Path:
    dst = path.parent / name
    shutil.copytree(path, dst)
    return dst


def state(col) -> tuple[list[str], dict, dict | None, int]:
    """Everything a user sees: ids in order, each item's vector and payload, marker, count."""
    ids = col.ids()
    items = {r.id: (r.vector.tobytes(), r.payload) for r in col.get(ids)}
    return ids, items, col.marker, len(col)


def model_items(model: dict) -> dict:
    return {i: (v.tobytes(), p) for i, (v, p) in model.items()}


def one_at_a_time(path: Path, monkeypatch) -> Engine:
    """Opens with replay record by record straight into the graph (the reference)."""
    with monkeypatch.context() as m:
        m.setattr(Replayer, "batch", 1)
        m.setattr(catchup, "ENABLED", False)
        eng = Engine(path)
        eng.open_collection("c")
    return eng


@pytest.fixture
def paused(monkeypatch):
    """Catch-up threads do not start: the collection stays in its catching-up state."""
    monkeypatch.setattr(catchup.CatchUp, "start", lambda self: self)


def exact(model: dict, q: np.ndarray, k: int, metric: str, where_g: int | None = None):
    """Exact (ids, scores) over the model (the oracle)."""
    ids = [i for i, (_, p) in model.items() if where_g is None or p["g"] == where_g]
    x = np.stack([model[i][0] for i in ids])
    m = Metric(metric)
    if m is Metric.COSINE:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = q @ x.T if m is not Metric.L2 else -((q[:, None, :] - x[None]) ** 2).sum(-1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order], np.take_along_axis(s, order, 1)


def check_exact(col, model: dict, metric: str, k: int = 10) -> None:
    q = vecs(12, 999)
    for g in (None, 1):
        where = None if g is None else {"g": g}
        res = col.search_batch(q, k=k, where=where, ef=4 * BASE)
        want_ids, want_scores = exact(model, q, k, metric, g)
        for row, (got, want) in enumerate(zip(res.ids.tolist(), want_ids, strict=True)):
            # Ties aside, the same ids in the same order; scores match the oracle's.
            assert got == want, (row, g)
        np.testing.assert_allclose(res.scores, want_scores, rtol=1e-4, atol=1e-4)
        for hits_row, ids_row in zip(res.payloads, res.ids.tolist(), strict=True):
            assert hits_row == [model[i][1] for i in ids_row]
    hit = col.search(q[0], k=3, ef=4 * BASE)
    assert [h.id for h in hit] == exact(model, q[:1], 3, metric)[0][0]
    assert [h.payload for h in hit] == [model[h.id][1] for h in hit]


# ---- replay in batches == replay one record at a time --------------------------------------------
@pytest.mark.parametrize("spec", [SPEC, "flat", "ivf:nlist=4,nprobe=4"])
def test_batched_replay_equals_one_record_at_a_time(tmp_path, monkeypatch, spec):
    path, model = crashed(tmp_path, spec)
    ref = one_at_a_time(copy(path, "ref"), monkeypatch).open_collection("c")
    col = Engine(copy(path, "batched")).open_collection("c")
    assert state(col) == state(ref)
    assert state(col)[1] == model_items(model)
    assert col.wait_indexed(60)
    assert col.unindexed == 0
    idx = col._contents.index
    assert not isinstance(idx, CatchUpIndex)
    # The graph holds exactly the live items.
    assert sorted(col._contents.ids.ids(np.sort(idx.labels()))) == sorted(model)
    assert state(col) == state(ref)
    # And both persist the same collection.
    col.close()
    ref.close()
    again = Engine(tmp_path / "batched").open_collection("c")
    assert again.unindexed == 0
    assert state(again) == state(Engine(tmp_path / "ref").open_collection("c"))


# ---- answers while catching up ------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_searches_while_catching_up_are_exact_over_the_waiting_rows(tmp_path, paused, metric):
    path, model = crashed(tmp_path, metric=metric)
    col = Engine(path).open_collection("c")
    idx = col._contents.index
    assert isinstance(idx, CatchUpIndex) and col.unindexed == idx.waiting > 0
    assert len(idx) == len(col) == len(model)
    assert col.describe()["memory"]["index"]["parts"]["unindexed"]["ram"] > 0
    col.verify()
    check_exact(col, model, metric)

    # Writes meanwhile: new ids, ids waiting, ids in the graph; deletes of both kinds.
    write_log(col, model, seed=5, n_ops=25)
    assert len(col) == len(model)
    check_exact(col, model, metric)

    # Catching up part-way, then all the way: the same answers at each step.
    idx.move(len(model) // 3)
    check_exact(col, model, metric)
    catchup.CatchUp(col, idx, "c")._run()
    assert col.unindexed == 0 and col._contents.index is idx.inner
    check_exact(col, model, metric)
    assert state(col)[1] == model_items(model)


def test_catch_up_thread_with_concurrent_searches_and_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(catchup, "_FIRST_ROWS", 16)
    monkeypatch.setattr(catchup, "_MAX_ROWS", 32)  # many small batches
    path, model = crashed(tmp_path)
    col = Engine(path).open_collection("c")
    q = vecs(4, 3)
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                res = col.search_batch(q, k=5)
                assert (res.ids != None).all()  # noqa: E711 - an object array
                assert len(set(res.ids[0].tolist())) == 5  # no id twice
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    write_log(col, model, seed=6, n_ops=20)
    assert col.wait_indexed(60)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert state(col)[1] == model_items(model)
    check_exact(col, model, "cosine")


def test_flush_and_close_during_catch_up_lose_nothing(tmp_path, paused):
    path, model = crashed(tmp_path)
    col = Engine(path).open_collection("c")
    assert col.unindexed > 0
    write_log(col, model, seed=7, n_ops=10)
    col.flush()  # finishes the catch-up in this thread, then checkpoints one whole graph
    assert col.unindexed == 0 and not isinstance(col._contents.index, CatchUpIndex)
    write_log(col, model, seed=8, n_ops=5)
    col.close()
    again = Engine(path).open_collection("c")
    assert state(again)[1] == model_items(model)
    check_exact(again, model, "cosine")


def test_close_during_catch_up_then_crash_replays_again(tmp_path, paused):
    path, model = crashed(tmp_path)
    col = Engine(path).open_collection("c")
    write_log(col, model, seed=9, n_ops=10)
    crash = copy(path, "crash2")  # killed while catching up: the log still holds everything
    col.close()
    for p in (path, crash):
        again = Engine(p).open_collection("c")
        assert state(again)[1] == model_items(model)


def test_read_only_open_catches_up_and_stops_at_close(tmp_path):
    path, model = crashed(tmp_path)
    col = Engine(path, read_only=True).open_collection("c")
    check_exact(col, model, "cosine")
    assert col.wait_indexed(60)
    check_exact(col, model, "cosine")
    col.close()
    assert state(col)[1] == model_items(model)


def test_automatic_checkpoint_waits_while_catching_up(tmp_path, paused):
    path, model = crashed(tmp_path)
    col = Engine(path).open_collection("c")
    assert col.unindexed and col._wal is not None
    limit = col.checkpoint_bytes = col._wal.bytes  # the replayed log is at the threshold
    gen = col._generation
    col.upsert(["new"], vecs(1, 1))  # past the threshold, under twice it: no checkpoint yet
    assert col._generation == gen and col.unindexed
    n = 0
    while col._generation == gen:
        assert col._wal.bytes < 2 * limit + 4096
        col.upsert([f"n{n}"], vecs(1, n))
        n += 1
    assert col._wal.bytes < 4096 and col.unindexed == 0  # the checkpoint caught up first


# ---- the pieces ---------------------------------------------------------------------------------
def test_merge_unique_keeps_each_label_once_at_its_best_score():
    a = (np.array([[0.9, 0.5, 0.1]], np.float32), np.array([[1, 2, 3]]))
    b = (np.array([[0.95, 0.6, -np.inf]], np.float32), np.array([[2, 4, -1]]))
    s, lab = merge_unique([a, b], 4)
    assert lab.tolist() == [[2, 1, 4, 3]]
    np.testing.assert_allclose(s, [[0.95, 0.9, 0.6, 0.1]])
    s, lab = merge_unique([a, b], 6)
    assert lab.tolist() == [[2, 1, 4, 3, -1, -1]] and np.isneginf(s[0, 4:]).all()


@pytest.mark.parametrize("metric", list(Metric))
def test_exact_topk_matches_brute_force_in_awkward_blocks(monkeypatch, metric):
    import index.catchup as mod

    monkeypatch.setattr(mod, "BLOCK_BYTES", 4 * 37 * 5)  # 5 queries per block of 37 rows
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 6)).astype(np.float32)
    q = rng.standard_normal((13, 6)).astype(np.float32)
    valid = rng.random(37) < 0.7
    sq = (x * x).sum(1)
    s, rows = exact_topk(q, x, 50, metric, valid, sq)
    if metric is Metric.L2:
        full = -((q[:, None, :] - x[None]) ** 2).sum(-1)
    else:
        full = q @ x.T
    full[:, ~valid] = -np.inf
    want = np.sort(full, axis=1)[:, ::-1][:, :50]
    np.testing.assert_allclose(s[:, : valid.sum()], want[:, : valid.sum()], rtol=1e-4, atol=1e-4)
    assert (rows[:, valid.sum() :] == -1).all() and valid[rows[:, : valid.sum()]].all()
