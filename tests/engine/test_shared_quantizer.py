"""Collections that adopt one quantizer (``Collection.adopt_quantizer``): shards of one
collection, answering merged as one collection; durable at once, across a crash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import index
from engine import Engine, ReadOnlyError

DIM, K, NLIST = 16, 10, 8
SPECS = {"ivf": f"ivf:nlist={NLIST},nprobe=3", "pq": f"pq:M=4,nbits=4,nlist={NLIST},nprobe=3"}
# Fewer vectors than either index trains itself on (39 * 16 = 624): without the adopted
# quantizer a collection would still be untrained.
N = 400
ROOT = Path(__file__).resolve().parents[2]


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, DIM))
    return (centres[rng.integers(0, 20, n)] + 0.4 * rng.normal(size=(n, DIM))).astype(np.float32)


BASE = clustered(N, seed=0)
QUERIES = clustered(20, seed=1)
SAMPLE = clustered(700, seed=2)


def quantizer(kind: str) -> dict[str, np.ndarray]:
    return index.train_quantizer(SPECS[kind], DIM, "l2", SAMPLE)


def same(a: dict[str, np.ndarray] | None, b: dict[str, np.ndarray]) -> bool:
    return a is not None and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in b)


def ids_of(rows: np.ndarray) -> list[str]:
    return [f"v{i}" for i in rows]


@pytest.mark.parametrize("nprobe", [3, NLIST])
def test_shards_merge_to_one_collection(tmp_path, nprobe):
    """Two IVF-Flat collections that adopted one quantizer, each holding half the ids: their
    top-k merged by score is the top-k of one collection holding all of them."""
    q = quantizer("ivf")
    with Engine(tmp_path) as eng:
        shards = [
            eng.create_collection(f"s{i}", dim=DIM, metric="l2", index=SPECS["ivf"])
            for i in range(2)
        ]
        one = eng.create_collection("one", dim=DIM, metric="l2", index=SPECS["ivf"])
        for col in (*shards, one):
            assert col.quantizer() is None
            col.adopt_quantizer(q)
            assert same(col.quantizer(), q)
        for s, col in enumerate(shards):
            rows = np.arange(s, N, 2)
            col.add(ids_of(rows), BASE[rows])
        one.add(ids_of(np.arange(N)), BASE)
        parts = [col.search_batch(QUERIES, k=K, nprobe=nprobe) for col in shards]
        want = one.search_batch(QUERIES, k=K, nprobe=nprobe)
        scores = np.concatenate([p.scores for p in parts], axis=1)
        ids = np.concatenate([p.ids for p in parts], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :K]
        np.testing.assert_array_equal(np.take_along_axis(ids, order, 1), want.ids)
        np.testing.assert_allclose(np.take_along_axis(scores, order, 1), want.scores, rtol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "pq"])
def test_adopt_refuses(tmp_path, kind):
    q = quantizer(kind)
    with Engine(tmp_path) as eng:
        flat = eng.create_collection("flat", dim=DIM, metric="l2", index="flat")
        with pytest.raises(ValueError, match="'flat'.*no quantizer to adopt"):
            flat.adopt_quantizer(q)
        col = eng.create_collection("c", dim=DIM, metric="l2", index=SPECS[kind])
        bad = {**q, "centroids": q["centroids"][:, :-1]}
        with pytest.raises(ValueError, match=r"'centroids' has shape \(8, 15\)"):
            col.adopt_quantizer(bad)
        assert col.quantizer() is None
        col.add(["a"], BASE[:1])
        with pytest.raises(
            ValueError, match="'c' holds 1 items.*only be adopted while it is empty"
        ):
            col.adopt_quantizer(q)
        assert col.quantizer() is None
        # Emptied, it may adopt.
        col.delete(["a"])
        col.adopt_quantizer(q)
        assert same(col.quantizer(), q)
        col.close()
        with pytest.raises(ReadOnlyError):
            col.adopt_quantizer(q)


@pytest.mark.parametrize("kind", ["ivf", "pq"])
def test_reopen_keeps_the_quantizer(tmp_path, kind):
    q = quantizer(kind)
    with Engine(tmp_path) as eng:
        col = eng.create_collection("c", dim=DIM, metric="l2", index=SPECS[kind])
        col.adopt_quantizer(q)
        col.add(ids_of(np.arange(N)), BASE)
        want = col.search_batch(QUERIES, k=K)
    with Engine(tmp_path) as eng:
        col = eng.open_collection("c")
        assert same(col.quantizer(), q) and len(col) == N
        got = col.search_batch(QUERIES, k=K)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)


CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from engine import Engine
    path, qfile, bfile = sys.argv[1:4]
    q = dict(np.load(qfile))
    base = np.load(bfile)
    col = Engine(path).create_collection("c", dim={dim}, metric="l2", index={spec!r})
    col.adopt_quantizer(q)
    for start in range(0, len(base), 100):
        col.add([f"v{{i}}" for i in range(start, start + 100)], base[start : start + 100])
    print("done", flush=True)
    os._exit(0)  # no close, no checkpoint: the adds are only in the log
    """
)


@pytest.mark.parametrize("kind", ["ivf", "pq"])
def test_crash_after_adopt_replays_into_the_adopted_lists(tmp_path, kind):
    """Adopt, add (default durability), exit without closing: the reopened collection has the
    adopted quantizer, and the vectors replayed from the log are in its lists (with fewer than
    it trains on, a collection that lost the quantizer would be untrained)."""
    q = quantizer(kind)
    np.savez(tmp_path / "q.npz", **q)
    np.save(tmp_path / "base.npy", BASE)
    code = CHILD.format(dim=DIM, spec=SPECS[kind])
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(tmp_path / "db"),
            str(tmp_path / "q.npz"),
            str(tmp_path / "base.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-2000:]
    with Engine(tmp_path / "clean") as eng:
        clean = eng.create_collection("c", dim=DIM, metric="l2", index=SPECS[kind])
        clean.adopt_quantizer(q)
        clean.add(ids_of(np.arange(N)), BASE)
        want = clean.search_batch(QUERIES, k=K)
    with Engine(tmp_path / "db") as eng:
        col = eng.open_collection("c")
        assert len(col) == N and same(col.quantizer(), q)
        assert col._index.trained and len(col._index) == N
        got = col.search_batch(QUERIES, k=K)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)
