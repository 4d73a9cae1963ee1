"""Multi-vector collections whose index keeps compact token codes (``tokens=int8|res4|res2``):
the option reaches the index and its manifest, reopening and log replay answer the same, the
codes are reported apart, and checkpointed token sets stay memory-mapped."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine import Engine
from engine.collection import MANIFEST

DIM = 16
SPEC = "muvera:k_sim=2,d_proj=4,r_reps=4,inner=flat,candidates=30,tokens={}"


def token_sets(n: int, seed: int) -> list[np.ndarray]:
    """Clustered token sets of 2-12 tokens."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, DIM))
    out = []
    for _ in range(n):
        topic = centres[rng.integers(0, 8, size=int(rng.integers(2, 13)))]
        out.append((topic + 0.4 * rng.standard_normal(topic.shape)).astype(np.float32))
    return out


def write_ops(col, seed: int, n_ops: int) -> None:
    rng = np.random.default_rng(seed)
    next_id = 0
    for k in range(n_ops):
        if k % 4 == 3 and len(col):
            present = sorted(col.ids())
            col.delete(list(rng.choice(present, min(3, len(present)), replace=False)))
        else:
            n = int(rng.integers(5, 30))
            ids = [f"s{seed}-{next_id + i}" for i in range(n)]
            next_id += n
            col.add(ids, token_sets(n, seed * 100 + k), [{"k": k}] * n)


@pytest.mark.parametrize("codec", ["int8", "res4", "res2"])
def test_reopen_and_replay_answer_the_same(tmp_path, codec):
    queries = token_sets(12, 99)
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("mv", dim=DIM, index=SPEC.format(codec))
    assert col.index_spec.endswith(f"tokens={codec}")
    write_ops(col, seed=1, n_ops=10)
    col.flush()
    write_ops(col, seed=2, n_ops=6)  # after the checkpoint: in the log only
    before = col.search_batch(queries, k=5)
    filtered = col.search_batch(queries, k=5, where={"k": {"$gte": 3}})
    # A kill -9 now: the checkpoint plus the log.
    crashed = shutil.copytree(tmp_path / "data", tmp_path / "crashed")
    eng.close()
    manifest = json.loads((col.path / MANIFEST).read_text())
    assert manifest["config"]["index"].endswith(f"tokens={codec}")
    index_manifest = json.loads((col.path / manifest["index_dir"] / "index.json").read_text())
    assert index_manifest["config"]["tokens"] == codec
    assert index_manifest["token_codes"]["name"] == codec
    for path in (tmp_path / "data", crashed):
        again = Engine(path).open_collection("mv")
        after = again.search_batch(queries, k=5)
        assert (after.ids == before.ids).all()
        np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)
        again_f = again.search_batch(queries, k=5, where={"k": {"$gte": 3}})
        assert (again_f.ids == filtered.ids).all()
    # Reopened after a clean close: every set is checkpointed and memory-mapped, in the
    # collection's store and in the index; the index's codes are in RAM and reported apart.
    again = Engine(tmp_path / "data").open_collection("mv", read_only=True)
    assert isinstance(again._tokens.tokens, np.memmap)
    assert isinstance(again._contents.index._store.tokens, np.memmap)
    mem = again.describe()["memory"]
    parts = mem["index"]["parts"]
    n = len(again)
    assert mem["tokens"]["ram"] == (n + 1) * 8 and parts["tokens"]["ram"] == (n + 1) * 8
    assert parts["codes"]["ram"] > 0 and parts["codes"]["disk"] > 0


def test_checkpoint_maps_the_sets_and_writes_after_it_stay_in_ram(tmp_path):
    eng = Engine(tmp_path)
    col = eng.create_collection("mv", dim=DIM, index=SPEC.format("int8"))
    sets = token_sets(60, 5)
    col.add([f"a{i}" for i in range(60)], sets)
    col.flush()
    store, index_store = col._tokens, col._contents.index._store
    assert isinstance(store.tokens, np.memmap) and isinstance(index_store.tokens, np.memmap)
    assert store.ram_bytes()[0] == 61 * 8
    more = token_sets(10, 6)
    col.add([f"b{i}" for i in range(10)], more)
    t = sum(len(s) for s in more)
    assert store.ram_bytes()[0] == t * DIM * 4 + 71 * 8  # the float32 tail only
    assert index_store.ram_bytes()[0] == t * DIM * 2 + 71 * 8  # the float16 tail only
    np.testing.assert_array_equal(col.get(["a3"])[0].vector, sets[3])
    np.testing.assert_array_equal(col.get(["b9"])[0].vector, more[9])
    col.delete([f"a{i}" for i in range(0, 60, 2)])
    col.flush()
    assert store.n == len(col) == 40 and isinstance(store.tokens, np.memmap)
    np.testing.assert_array_equal(col.get(["a5"])[0].vector, sets[5])
    eng.close()
