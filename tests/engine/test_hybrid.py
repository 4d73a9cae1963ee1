"""Lexical and hybrid search through a collection: BM25 follows every write, the log and the
checkpoints; fusion against a reference implementation; filters exact in every mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Engine
from engine.fusion import Fusion
from index.storage import CorruptFileError

from ..index.test_lexical import WORDS, fresh_scores, random_texts

DIM = 8


def lexical_ids(col, queries, k=20, where=None):
    res = col.search_batch(None, k, mode="lexical", texts=queries, where=where)
    return [[d for d in row if d is not None] for row in res.ids], res.scores


def fresh_ids(live: dict[str, str], queries: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Per query, the (id, score) pairs with positive from-scratch BM25 score, best first."""
    keys = sorted(live)
    ref = fresh_scores([live[i] for i in keys], queries)
    out = []
    for row in ref:
        order = np.argsort(-row, kind="stable")
        out.append([(keys[j], float(row[j])) for j in order[:k] if row[j] > 0])
    return out


def assert_matches_fresh(col, live: dict[str, str], queries: list[str], k: int = 20) -> None:
    ids, scores = lexical_ids(col, queries, k)
    for i, want in enumerate(fresh_ids(live, queries, k)):
        assert len(ids[i]) == len(want)
        got = dict(zip(ids[i], scores[i].tolist(), strict=False))
        ref = dict(want)
        # Same scores for the same documents; the sets agree except across a tie at the cut.
        np.testing.assert_allclose(sorted(got.values()), sorted(ref.values()), rtol=1e-6)
        for doc in set(got) & set(ref):
            assert got[doc] == pytest.approx(ref[doc], rel=1e-6)


def write_sequence(col, seed: int, steps: int = 30, flush_at: int | None = None) -> dict[str, str]:
    """Seeded adds / upserts / deletes with texts (vectors beside them); returns the live texts."""
    rng = np.random.default_rng(seed)
    live: dict[str, str] = {}
    pool = [f"doc-{i}" for i in range(120)]
    for step in range(steps):
        r = rng.random()
        if r < 0.7 or not live:
            ids = [pool[i] for i in rng.choice(len(pool), int(rng.integers(1, 12)), replace=False)]
            texts = random_texts(rng, len(ids))
            x = rng.standard_normal((len(ids), DIM)).astype(np.float32)
            col.upsert(ids, x, texts=texts)
            live.update(zip(ids, texts, strict=True))
        else:
            gone = [str(i) for i in rng.choice(sorted(live), int(rng.integers(1, 5)))]
            col.delete(list(dict.fromkeys(gone)))
            for g in gone:
                live.pop(g, None)
        if flush_at is not None and step == flush_at:
            col.flush()
    return live


@pytest.fixture
def eng(tmp_path):
    with Engine(tmp_path / "data") as e:
        yield e


def test_lexical_follows_writes_and_equals_fresh_after_flush(eng):
    col = eng.create_collection("c", dim=DIM, index="flat", lexical=True)
    queries = random_texts(np.random.default_rng(99), 10)
    rng = np.random.default_rng(7)
    live: dict[str, str] = {}
    deleted: set[str] = set()
    for step in range(40):
        if rng.random() < 0.7 or not live:
            ids = [f"d{int(i)}" for i in rng.choice(80, int(rng.integers(1, 10)), replace=False)]
            texts = random_texts(rng, len(ids))
            col.upsert(ids, rng.standard_normal((len(ids), DIM)), texts=texts)
            live.update(zip(ids, texts, strict=True))
            deleted -= set(ids)
        else:
            gone = list(dict.fromkeys(str(g) for g in rng.choice(sorted(live), 3)))
            col.delete(gone)
            for g in gone:
                live.pop(g)
            deleted |= set(gone)
        if step % 13 == 12:
            col.flush()
        # At every point: nothing deleted comes back, and an upserted id's old text is gone.
        ids, _ = lexical_ids(col, queries, 100)
        assert not deleted.intersection(i for row in ids for i in row)
        assert set(i for row in ids for i in row) <= set(live)
    col.flush()
    assert_matches_fresh(col, live, queries)


def test_reopen_gives_identical_results(tmp_path):
    """A read-only open (last checkpoint + the log replayed) answers exactly as the writer
    does; after close (a checkpoint) a reopened collection answers as the writer did after
    its last flush."""
    queries = random_texts(np.random.default_rng(98), 8)
    with Engine(tmp_path) as e:
        col = e.create_collection("c", dim=DIM, index="flat", lexical=True)
        write_sequence(col, seed=3, flush_at=12)
        before = lexical_ids(col, queries)
        reader = Engine(tmp_path, read_only=True).open_collection("c")
        replayed = lexical_ids(reader, queries)
        assert replayed[0] == before[0]
        np.testing.assert_array_equal(replayed[1], before[1])
        col.flush()
        flushed = lexical_ids(col, queries)
        hybrid = col.search_batch(np.ones((8, DIM)), 10, mode="hybrid", texts=queries).ids
    with Engine(tmp_path) as e:
        col = e.open_collection("c")
        after = lexical_ids(col, queries)
        assert after[0] == flushed[0]
        np.testing.assert_array_equal(after[1], flushed[1])
        again = col.search_batch(np.ones((8, DIM)), 10, mode="hybrid", texts=queries)
        np.testing.assert_array_equal(again.ids, hybrid)


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from engine import Engine
    from tests.engine.test_hybrid import write_sequence
    col = Engine({data!r}).create_collection("c", dim=8, index="flat", lexical=True)
    write_sequence(col, seed=5, steps=40, flush_at=15)
    print("done", flush=True)
    time.sleep(60)
    """
)


def test_sigkill_recovery_gives_identical_results(tmp_path):
    """Every write acknowledged, some after a checkpoint and only in the log; kill -9; the
    reopened collection answers exactly as one that saw the same writes without a crash."""
    root = str(Path(__file__).resolve().parents[2])
    code = CHILD.format(root=root, data=str(tmp_path / "crashed"))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "done"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    queries = random_texts(np.random.default_rng(97), 10)
    with Engine(tmp_path / "clean", checkpoint_bytes=1 << 40) as e:
        clean = e.create_collection("c", dim=DIM, index="flat", lexical=True)
        live = write_sequence(clean, seed=5, steps=40, flush_at=15)
        want = lexical_ids(clean, queries)
    with Engine(tmp_path / "crashed") as e:
        col = e.open_collection("c")
        assert len(col) == len(live)
        got = lexical_ids(col, queries)
        assert got[0] == want[0]
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
        col.flush()
        assert_matches_fresh(col, live, queries)


def test_text_field_indexes_a_payload_field(eng):
    col = eng.create_collection("c", dim=DIM, index="flat", text_field="body")
    assert col.lexical and col.text_field == "body"
    x = np.eye(3, DIM)
    col.add(["a", "b", "c"], x, [{"body": "cats on mats"}, {"body": "dogs"}, {"other": "cats"}])
    assert [h.id for h in col.search(text="cat", mode="lexical")] == ["a"]
    col.upsert(["a"], x[:1], [{"body": "rockets"}])
    assert col.search(text="cat", mode="lexical") == []
    with pytest.raises(ValueError, match="'body'.*must be a string"):
        col.add(["d"], x[:1], [{"body": 3}])
    with pytest.raises(ValueError, match="exactly one of vectors= or texts="):
        col.add(["d"], x[:1], texts=["cats"])


# ---- fusion ----------------------------------------------------------------------------------
def reference_fuse(dense, lexical, k, method, w, rrf_k):
    """Fusion written the plain way, one document at a time."""
    (ds, dl), (ls, ll) = dense, lexical
    d = [(int(lab), float(s)) for s, lab in zip(ds, dl, strict=True) if lab >= 0]
    lx = [(int(lab), float(s)) for s, lab in zip(ls, ll, strict=True) if lab >= 0]
    fused: dict[int, float] = {}
    for part, weight in ((d, w), (lx, 1 - w)):
        if not part:
            continue
        lo, hi = min(s for _, s in part), max(s for _, s in part)
        mean = sum(s for _, s in part) / len(part)
        sd = (sum((s - mean) ** 2 for _, s in part) / len(part)) ** 0.5
        for rank, (lab, s) in enumerate(part, start=1):
            if method == "rrf":
                v = 2 * weight / (rrf_k + rank)
            elif method == "weighted":
                v = weight * (1.0 if hi == lo else (s - lo) / (hi - lo))
            else:
                v = weight * (1.0 if sd == 0 else (s - (mean - 3 * sd)) / (6 * sd))
            fused[lab] = fused.get(lab, 0.0) + v
    ranked = sorted(fused.items(), key=lambda t: (-t[1], t[0]))[:k]
    return [lab for lab, _ in ranked], [s for _, s in ranked]


ranking = st.lists(
    st.tuples(st.integers(0, 12), st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, -3.0])),
    max_size=8,
    unique_by=lambda t: t[0],
)


def as_arrays(items, width):
    items = sorted(items, key=lambda t: -t[1])
    s = np.full(width, -np.inf, dtype=np.float32)
    lab = np.full(width, -1, dtype=np.int64)
    for j, (label, score) in enumerate(items):
        s[j], lab[j] = score, label
    return s, lab


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    dense=ranking,
    lexical=ranking,
    k=st.integers(1, 20),
    method=st.sampled_from(["rrf", "weighted", "dbsf"]),
    w=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    rrf_k=st.sampled_from([1.0, 60.0]),
)
def test_fusion_equals_reference(dense, lexical, k, method, w, rrf_k):
    """Ties, documents found by one side only, empty sides, k beyond both lists."""
    d, lx = as_arrays(dense, 8), as_arrays(lexical, 8)
    fusion = Fusion.make(method, w, rrf_k, 100)
    scores, labels = fusion.fuse((d[0][None], d[1][None]), (lx[0][None], lx[1][None]), k)
    want_labels, want_scores = reference_fuse(d, lx, k, method, w, rrf_k)
    n = len(want_labels)
    assert labels[0, :n].tolist() == want_labels
    assert (labels[0, n:] == -1).all()
    np.testing.assert_allclose(scores[0, :n], want_scores, rtol=1e-6, atol=1e-7)


def test_filtered_hybrid_equals_brute_force(eng):
    """Flat dense scores and BM25 scores of every document, restricted to the filter, cut to
    the depth, fused by the reference: the same ranking as the filtered hybrid search."""
    rng = np.random.default_rng(11)
    n = 150
    col = eng.create_collection("c", dim=DIM, index="flat", metric="ip", lexical=True)
    texts = random_texts(rng, n)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    ids = [f"d{i}" for i in range(n)]
    col.add(ids, x, [{"g": i % 4} for i in range(n)], texts=texts)
    col.flush()
    where = {"g": {"$in": [1, 3]}}
    subset = np.array([i for i in range(n) if i % 4 in (1, 3)])
    queries = random_texts(rng, 6)
    qv = rng.standard_normal((6, DIM)).astype(np.float32)
    bm25 = fresh_scores(texts, queries)
    depth, k = 12, 8
    for method, w in (("rrf", 0.5), ("weighted", 0.5), ("weighted", 0.8), ("dbsf", 0.4)):
        res = col.search_batch(
            qv, k, mode="hybrid", texts=queries, where=where, fusion=method, weight=w, depth=depth
        )
        for i in range(len(queries)):
            dense_all = x[subset] @ qv[i]
            top = subset[np.argsort(-dense_all, kind="stable")[:depth]]
            lex_all = bm25[i][subset]
            order = np.argsort(-lex_all, kind="stable")
            ltop = subset[order[:depth]][lex_all[order[:depth]] > 0]
            want, _ = reference_fuse(
                (x[top] @ qv[i], top), (bm25[i][ltop], ltop), k, method, w, 60.0
            )
            got = [int(d[1:]) for d in res.ids[i] if d is not None]
            assert got == want


# ---- modes through the collection --------------------------------------------------------------
def test_modes_and_fusion_defaults(eng):
    col = eng.create_collection("c", dim=DIM, index="flat", lexical=True)
    rng = np.random.default_rng(2)
    texts = random_texts(rng, 40)
    col.add([f"d{i}" for i in range(40)], rng.standard_normal((40, DIM)), texts=texts)
    q = rng.standard_normal(DIM)
    dense = col.search(q, k=5)
    assert [h.id for h in col.search(q, k=5, mode="dense")] == [h.id for h in dense]
    lex = col.search(text=texts[3], k=5, mode="lexical")
    assert lex[0].id == "d3"
    hyb = col.search(q, k=5, mode="hybrid", text=texts[3])
    assert len(hyb) == 5 and hyb[0].score > hyb[-1].score
    batch = col.search_batch(q[None], 5, mode="hybrid", texts=[texts[3]])
    assert [h.id for h in batch[0]] == [h.id for h in hyb]
    assert col.fusion == Fusion()
    col.set_fusion("rrf", rrf_k=10)
    assert col.fusion.method == "rrf" and col.fusion.rrf_k == 10
    rrf = col.search(q, k=5, mode="hybrid", text=texts[3])
    explicit = col.search(q, k=5, mode="hybrid", text=texts[3], fusion="rrf", rrf_k=10)
    assert [h.id for h in rrf] == [h.id for h in explicit]
    eng.close()
    back = Engine(eng.path).open_collection("c")
    assert back.fusion == col.fusion
    assert back.describe()["fusion"]["method"] == "rrf"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "sparse"}, "unknown search mode 'sparse'"),
        ({"mode": "hybrid", "fusion": "max"}, "unknown fusion 'max'"),
        ({"mode": "hybrid", "weight": 1.5}, r"weight must be in \[0, 1\]"),
        ({"mode": "hybrid", "weight": -0.1}, r"weight must be in \[0, 1\]"),
        ({"mode": "hybrid", "rrf_k": 0}, "rrf_k must be a positive"),
        ({"mode": "hybrid", "depth": 0}, "depth must be in"),
        ({"mode": "lexical", "text": "   "}, "empty"),
        ({"mode": "lexical", "text": ""}, "empty"),
        ({"mode": "dense", "fusion": "rrf"}, "apply to mode='hybrid' only"),
        ({"mode": "lexical", "weight": 0.5}, "apply to mode='hybrid' only"),
        ({"mode": "hybrid"}, "needs a query text"),
        ({"mode": "dense", "text": "cats"}, "needs mode='lexical' or 'hybrid'"),
    ],
)
def test_bad_queries_get_named_errors(eng, kwargs, match):
    col = eng.create_collection("c", dim=DIM, index="flat", lexical=True)
    col.add(["a"], np.ones((1, DIM)), texts=["cats"])
    query = None if kwargs.get("mode") == "lexical" else np.ones(DIM)
    with pytest.raises(ValueError, match=match):
        col.search(query, **kwargs)


def test_no_lexical_index_is_named(eng):
    col = eng.create_collection("c", dim=DIM, index="flat")
    assert not col.lexical
    col.add(["a"], np.ones((1, DIM)))
    for mode in ("lexical", "hybrid"):
        with pytest.raises(ValueError, match="has no lexical index"):
            col.search(np.ones(DIM), mode=mode, text="cats")
    with pytest.raises(ValueError, match="exactly one of vectors= or texts="):
        col.add(["b"], np.ones((1, DIM)), texts=["cats"])


def test_multi_vector_collection_fuses_maxsim_with_bm25(eng):
    col = eng.create_collection("mv", dim=4, index="chamfer", lexical=True)
    rng = np.random.default_rng(3)
    sets = [rng.standard_normal((int(rng.integers(1, 5)), 4)) for _ in range(30)]
    texts = random_texts(rng, 30)
    col.add([f"d{i}" for i in range(30)], sets, texts=texts)
    q = rng.standard_normal((3, 4))
    hyb = col.search(q, k=5, mode="hybrid", text=texts[0], fusion="rrf")
    dense = [h.id for h in col.search(q, k=100)]
    lex = [h.id for h in col.search(text=texts[0], k=100, mode="lexical")]
    # RRF's best document is ranked well by at least one side.
    assert hyb and min(dense.index(hyb[0].id), lex.index(hyb[0].id)) < 5
    col.flush()
    assert [h.id for h in col.search(q, k=5, mode="hybrid", text=texts[0], fusion="rrf")] == [
        h.id for h in hyb
    ]


def test_corrupted_lexical_file_is_named(tmp_path):
    with Engine(tmp_path) as e:
        col = e.create_collection("c", dim=DIM, index="flat", lexical=True)
        col.add(["a", "b"], np.ones((2, DIM)), texts=["cats", "dogs"])
    (lex_dir,) = (tmp_path / "c").glob("lexical.*")
    path = lex_dir / "scores.data.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with Engine(tmp_path) as e, pytest.raises(CorruptFileError, match="scores.data.npy"):
        e.open_collection("c")


def test_words_fixture_is_non_trivial():
    assert len(set(WORDS)) > 30


def test_lexical_collections_have_their_own_format_version(tmp_path):
    """Format 4 marks a lexical index, so an older reader refuses the collection instead of
    dropping the index at its next checkpoint; a manifest that contradicts its config is named."""
    import json

    with Engine(tmp_path) as e:
        e.create_collection("lex", dim=DIM, index="flat", lexical=True)
        e.create_collection("plain", dim=DIM, index="flat")
    mlex, mplain = (tmp_path / n / "manifest.json" for n in ("lex", "plain"))
    assert json.loads(mlex.read_text())["format_version"] == 4
    assert json.loads(mplain.read_text())["format_version"] == 2
    m = json.loads(mlex.read_text())
    mlex.write_text(json.dumps({**m, "format_version": 2}))
    with Engine(tmp_path) as e, pytest.raises(CorruptFileError, match="a lexical index"):
        e.open_collection("lex")
