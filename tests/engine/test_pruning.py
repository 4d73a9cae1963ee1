"""Token pruning in multi-vector collections (``prune=`` in the index spec): ratio 0 is no
pruning, pruned documents keep ids, payloads and filters and are found by their own tokens,
kept counts, the log holds the pruned tokens (a crash replays the same collection), bad specs."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from engine import Engine

DIM = 16
N = 60
MUVERA = "muvera:k_sim=2,d_proj=4,r_reps=4,inner=flat,candidates=30"


def token_sets(n: int, seed: int) -> list[np.ndarray]:
    """Documents of 1-30 tokens around 1-4 of 20 topics, each with its own offset (so that
    two documents on the same topics still differ)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIM))
    out = []
    for _ in range(n):
        topics = rng.choice(20, size=int(rng.integers(1, 5)), replace=False)
        own = 0.5 * rng.standard_normal(DIM)
        pick = centres[topics[rng.integers(0, len(topics), size=int(rng.integers(1, 31)))]]
        out.append((pick + own + 0.2 * rng.standard_normal(pick.shape)).astype(np.float32))
    return out


DOCS = token_sets(N, seed=7)
IDS = [f"doc-{i}" for i in range(N)]
PAYLOADS = [{"year": 2000 + i % 4, "lang": "en" if i % 3 else "de"} for i in range(N)]


def fill(col) -> None:
    col.add(IDS[:40], DOCS[:40], PAYLOADS[:40])
    col.upsert(IDS[30:], DOCS[30:], PAYLOADS[30:])  # 30-39 replaced by the same items
    col.delete(["doc-5"])


def snapshot(col) -> dict[str, tuple[bytes, tuple, dict]]:
    return {
        r.id: (r.vector.tobytes(), r.vector.shape, r.payload) for r in col.get(sorted(col.ids()))
    }


def results(col, queries):
    r = col.search_batch(queries, k=5)
    return r.ids.tolist(), r.scores


@pytest.mark.parametrize("kind", ["chamfer", MUVERA])
def test_ratio_zero_equals_no_pruning(tmp_path, kind):
    sep = "," if ":" in kind else ":"
    with Engine(tmp_path) as eng:
        plain = eng.create_collection("plain", dim=DIM, index=kind)
        zero = eng.create_collection("zero", dim=DIM, index=f"{kind}{sep}prune=0")
        assert zero.index_spec == plain.index_spec  # prune=0 is the default, left out
        for col in (plain, zero):
            fill(col)
        assert snapshot(zero) == snapshot(plain)
        assert "pruning" not in zero.describe()
        ids_a, s_a = results(plain, DOCS[:10])
        ids_b, s_b = results(zero, DOCS[:10])
        assert ids_a == ids_b and s_a.tobytes() == s_b.tobytes()


@pytest.mark.parametrize("kind", ["chamfer", MUVERA])
def test_pruned_documents_keep_ids_payloads_filters_and_are_found(tmp_path, kind):
    sep = "," if ":" in kind else ":"
    ratio = 0.5
    with Engine(tmp_path) as eng:
        col = eng.create_collection("c", dim=DIM, index=f"{kind}{sep}prune={ratio}")
        fill(col)
        live = [i for i in range(N) if i != 5]
        assert sorted(col.ids()) == sorted(IDS[i] for i in live)
        stored = 0
        for i in live:
            rec = col.get([IDS[i]])[0]
            n = DOCS[i].shape[0]
            assert rec.vector.shape == (max(1, math.ceil((1 - ratio) * n)), DIM)
            assert rec.payload == PAYLOADS[i]
            stored += rec.vector.shape[0]
        # Each document's own (unpruned) tokens as the query find it first.
        r = col.search_batch([DOCS[i] for i in live], k=3)
        hits = sum(r.ids[j][0] == IDS[i] for j, i in enumerate(live))
        assert hits == len(live)
        # Filters still apply to the pruned documents.
        for i in live[:10]:
            where = {"year": PAYLOADS[i]["year"], "lang": PAYLOADS[i]["lang"]}
            res = col.search(DOCS[i], k=5, where=where)
            assert res[0].id == IDS[i]
            assert all(h.payload["year"] == where["year"] for h in res)
            assert all(h.payload["lang"] == where["lang"] for h in res)
        p = col.describe()["pruning"]
        given = sum(d.shape[0] for d in DOCS[:40]) + sum(d.shape[0] for d in DOCS[30:])
        assert p["ratio"] == ratio and p["tokens_in"] == given
        assert p["tokens_kept"] < given and p["tokens_stored"] == stored
    with Engine(tmp_path) as eng:
        col = eng.open_collection("c")
        assert f"prune={ratio}" in col.index_spec
        p = col.describe()["pruning"]
        assert p["tokens_stored"] == stored and p["tokens_in"] == 0  # counters: since open
        col.add(["new"], [DOCS[0]])  # writes after a reopen are pruned too
        assert col.get(["new"])[0].vector.shape[0] == math.ceil(0.5 * DOCS[0].shape[0])


def test_queries_are_never_pruned(tmp_path):
    with Engine(tmp_path) as eng:
        col = eng.create_collection("c", dim=DIM, index="chamfer:prune=0.5")
        col.add(["a"], [DOCS[0]])
        q = DOCS[1]
        want = np.linalg.norm(q, axis=1, keepdims=True)
        got = col.get(["a"])[0].vector
        # Chamfer of the full query: one max per query token.
        score = float(
            ((q / want) @ (got / np.linalg.norm(got, axis=1, keepdims=True)).T).max(1).sum()
        )
        assert col.search(q, k=1)[0].score == pytest.approx(score, rel=1e-3)


CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_pruning import fill
    from engine import Engine
    col = Engine(sys.argv[1]).create_collection("c", dim={dim}, index={spec!r})
    fill(col)
    print("done", flush=True)
    os._exit(0)  # no close, no checkpoint: the writes are only in the log
    """
)


def test_crash_replays_the_same_pruned_collection(tmp_path):
    """Written then killed without close, reopened by log replay: equal (stored bytes, search
    results, scores) to the same writes closed cleanly."""
    import pathlib

    spec = "chamfer:prune=0.4"
    tests = str(pathlib.Path(__file__).parent)
    code = CHILD.format(tests=tests, dim=DIM, spec=spec)
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "crashed")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "done" in out.stdout, out.stderr
    with Engine(tmp_path / "clean") as eng:
        fill(eng.create_collection("c", dim=DIM, index=spec))
    with Engine(tmp_path / "clean") as a, Engine(tmp_path / "crashed") as b:
        clean, crashed = a.open_collection("c"), b.open_collection("c")
        assert crashed.index_spec == clean.index_spec
        assert snapshot(crashed) == snapshot(clean)
        ids_a, s_a = results(clean, DOCS[:10])
        ids_b, s_b = results(crashed, DOCS[:10])
        assert ids_a == ids_b and s_a.tobytes() == s_b.tobytes()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("chamfer:prune=1", "prune"),
        ("chamfer:prune=-0.2", "prune"),
        ("muvera:prune=2", "prune"),
        ("flat:prune=0.3", "prune"),
        ("hnsw:prune=0.3", "prune"),
    ],
)
def test_bad_pruning_specs_are_refused(tmp_path, spec, match):
    with Engine(tmp_path) as eng:
        with pytest.raises(ValueError, match=match):
            eng.create_collection("c", dim=DIM, index=spec)
        assert eng.list_collections() == []


def test_sharded_collection_prunes_like_one(tmp_path):
    """Pruning is per document: two shards store the same tokens as one collection."""
    with Engine(tmp_path) as eng:
        one = eng.create_collection("one", dim=DIM, index="chamfer:prune=0.4")
        two = eng.create_collection("two", dim=DIM, index="chamfer:prune=0.4", shards=2)
        for col in (one, two):
            fill(col)
        assert snapshot(two) == snapshot(one)
        assert two.describe()["pruning"] == one.describe()["pruning"]
        ids_a, s_a = results(one, DOCS[:10])
        ids_b, s_b = results(two, DOCS[:10])
        assert ids_a == ids_b
        np.testing.assert_allclose(s_a, s_b, rtol=1e-5)
