"""Sharded collections in this process: the same answers as one collection, routed writes,
positions that make a resumed job exact, and bad input refused before any shard is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import CorruptFileError, Engine, shards
from engine.ingest import ingest
from engine.sharded import ShardedCollection
from index.recall import recall_at_k

DIM = 16
N = 600


def data(n: int = N, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    ids = [f"doc{i}" for i in range(n)]
    payloads = [{"group": i % 4, "year": 2000 + i % 25} for i in range(n)]
    return ids, x, payloads


def queries(m: int = 12, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((m, DIM)).astype(np.float32)


def same(a, b) -> None:
    """Two search_batch results hold the same ids, scores and payloads."""
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6, atol=1e-6)
    assert a.payloads == b.payloads


@pytest.fixture
def eng(tmp_path):
    with Engine(tmp_path / "data") as e:
        yield e


@pytest.mark.parametrize("n_shards", [1, 2, 3])
def test_sharded_flat_answers_exactly_as_one_collection(eng, n_shards):
    ids, x, payloads = data()
    one = eng.create_collection("one", dim=DIM, index="flat")
    sh = eng.create_collection("sh", dim=DIM, index="flat", shards=n_shards)
    assert isinstance(sh, ShardedCollection) and sh.shards == n_shards
    for col in (one, sh):
        col.add(ids[:400], x[:400], payloads[:400])
        col.add(ids[400:], x[400:], payloads[400:])
    q = queries()
    for where in (None, {"group": 2}, {"year": {"$gte": 2020}}):
        same(sh.search_batch(q, 10, where=where), one.search_batch(q, 10, where=where))
        assert sh.search(q[0], 7, where=where) == one.search(q[0], 7, where=where)
    # Deletes and upserts route to the right shard.
    gone = ids[::7]
    assert sh.delete(gone + ["absent"]) == one.delete(gone) == len(gone)
    moved = np.random.default_rng(5).standard_normal((30, DIM)).astype(np.float32)
    for col in (one, sh):
        col.upsert(ids[1:31], moved, [{"group": 9}] * 30)
    same(sh.search_batch(q, 10), one.search_batch(q, 10))
    same(sh.search_batch(q, 5, where={"group": 9}), one.search_batch(q, 5, where={"group": 9}))
    assert len(sh) == len(one) and sorted(sh.ids()) == sorted(one.ids())
    assert ids[0] not in sh and ids[1] in sh and "absent" not in sh
    got, want = sh.get(ids[:40] + ["absent"]), one.get(ids[:40] + ["absent"])
    assert [r and (r.id, r.vector.tolist(), r.payload) for r in got] == [
        r and (r.id, r.vector.tolist(), r.payload) for r in want
    ]
    # k larger than the collection: padded exactly as one collection pads.
    same(
        sh.search_batch(q[:2], 5, where={"group": 9, "year": 2001}),
        one.search_batch(q[:2], 5, where={"group": 9, "year": 2001}),
    )


def test_ids_spread_over_the_shards_by_a_stable_hash(eng):
    ids, x, payloads = data()
    sh = eng.create_collection("sh", dim=DIM, index="flat", shards=3)
    sh.add(ids, x, payloads)
    counts = [p["count"] for p in sh.describe()["per_shard"]]
    assert sum(counts) == N and min(counts) > N / 3 * 0.8
    # The routing is blake2b-64 of the UTF-8 id mod N: fixed values, the same in every process.
    assert shards.shard_of(["doc0", "doc1", "doc2", "é"], 3).tolist() == [
        int.from_bytes(__import__("hashlib").blake2b(k.encode(), digest_size=8).digest(), "little")
        % 3
        for k in ["doc0", "doc1", "doc2", "é"]
    ]
    for i in range(3):
        part = eng.path / "sh" / shards.shard_name(i)
        assert (part / "manifest.json").is_file()


def test_sharded_hnsw_recall_is_at_least_one_hnsw_collections(eng):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    ids = [str(i) for i in range(3000)]
    q = rng.standard_normal((100, 32)).astype(np.float32)
    spec = "hnsw:M=6,ef_construction=24,ef=12"
    exact = eng.create_collection("exact", dim=32, index="flat")
    one = eng.create_collection("one", dim=32, index=spec)
    sh = eng.create_collection("sh", dim=32, index=spec, shards=3)
    for col in (exact, one, sh):
        col.add(ids, x)
    truth = exact.search_batch(q, 10).ids
    r_one = recall_at_k(one.search_batch(q, 10).ids, truth)
    r_sh = recall_at_k(sh.search_batch(q, 10).ids, truth)
    assert r_one < 0.99  # a setting where approximation shows
    assert r_sh >= r_one, (r_sh, r_one)


def test_close_reopen_and_drop(tmp_path):
    ids, x, payloads = data()
    q = queries()
    with Engine(tmp_path) as eng:
        sh = eng.create_collection("sh", dim=DIM, index="flat", shards=2)
        sh.add(ids, x, payloads)
        before = sh.search_batch(q, 10)
    with Engine(tmp_path) as eng:
        assert eng.list_collections() == ["sh"]
        sh = eng.open_collection("sh")
        assert isinstance(sh, ShardedCollection) and len(sh) == N
        same(sh.search_batch(q, 10), before)
        assert sh.verify() > 0
    ro = Engine(tmp_path, read_only=True).open_collection("sh")
    same(ro.search_batch(q, 10), before)
    ro.close()
    with Engine(tmp_path) as eng:
        eng.drop_collection("sh")
        assert eng.list_collections() == [] and not (tmp_path / "sh").exists()


def test_bad_input_is_refused_before_any_shard_is_written(eng):
    ids, x, payloads = data(50)
    sh = eng.create_collection("sh", dim=DIM, index="flat", shards=3)
    sh.add(ids[:10], x[:10])
    with pytest.raises(ValueError, match="already exists"):
        sh.add(ids[5:20], x[5:20])  # doc5..doc9 exist: nothing of the batch is written
    assert len(sh) == 10
    with pytest.raises(ValueError, match="duplicate id"):
        sh.add(["a", "b", "a"], x[:3])
    bad = x[10:20].copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        sh.upsert(ids[10:20], bad)
    with pytest.raises(ValueError, match="dimension|dim"):
        sh.upsert(ids[10:20], x[10:20, :8])
    with pytest.raises(ValueError, match="payloads"):
        sh.upsert(ids[10:20], x[10:20], payloads[:3])
    assert len(sh) == 10
    for n in (0, -1, 2000, True, "2"):
        with pytest.raises(ValueError, match="shards"):
            eng.create_collection(f"bad{abs(hash(str(n))) % 1000}", dim=DIM, shards=n)


def test_a_damaged_sharded_manifest_or_a_missing_shard_is_named(tmp_path):
    with Engine(tmp_path) as eng:
        eng.create_collection("sh", dim=DIM, index="flat", shards=2).add(["a"], data(1)[1])
    manifest = tmp_path / "sh" / shards.SHARDED_MANIFEST
    body = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**body, "version": 99}))
    with pytest.raises(CorruptFileError, match="sharded.json"):
        Engine(tmp_path).open_collection("sh")
    manifest.write_text(json.dumps(body))
    (tmp_path / "sh" / "shard-001").rename(tmp_path / "sh" / "elsewhere")
    with pytest.raises(CorruptFileError, match="shard-001"):
        Engine(tmp_path).open_collection("sh")


def test_a_shard_ahead_skips_a_write_it_holds_and_the_marker_is_the_least_advanced(eng):
    ids, x, _ = data(30)
    sh = eng.create_collection("sh", dim=DIM, index="flat", shards=2)
    sh.upsert(ids[:10], x[:10], marker={"step": 1}, position=10)
    # Shard 0 alone takes its part of the next write (as when a crash stops a write halfway).
    mine = [j for j in range(10, 20) if shards.shard_of([ids[j]], 2)[0] == 0]
    assert 0 < len(mine) < 10
    part = ([ids[j] for j in mine], x[mine], [{} for _ in mine], None, {"step": 2}, 20)
    sh._shards.hosts[0].write(True, *part)
    sh._positions[0] = 20
    assert sh.marker == {"step": 1} and sh.position == 20
    # Resumed, the same write at the same position: shard 1 takes it, shard 0 skips it.
    sh.upsert(ids[10:20], x[10:20], marker={"step": 2}, position=20)
    assert sh.marker == {"step": 2} and len(sh) == 20
    # A position already passed everywhere changes nothing.
    sh.upsert(ids[20:30], x[20:30], marker={"step": 1}, position=10)
    assert len(sh) == 20 and sh.marker == {"step": 2}
    with pytest.raises(ValueError, match="position"):
        sh.upsert(ids[:1], x[:1], marker={"step": 3}, position="30")


def test_an_ingest_stopped_between_shards_resumes_exactly(tmp_path, monkeypatch):
    """A run killed after one shard took a chunk and before the other did: the resumed run
    writes that chunk to the shard that lacks it, takes no id for a duplicate, and ends with
    the collection an uninterrupted run builds."""
    ids, x, payloads = data(300)
    path = tmp_path / "in.jsonl"
    with open(path, "w") as f:
        for k, v, p in zip(ids, x, payloads, strict=True):
            f.write(json.dumps({"id": k, "vector": v.tolist(), **p}) + "\n")
    opts = {"vector_column": "vector", "index": "flat", "payload_columns": ["group"]}
    ref = Engine(tmp_path / "ref")
    ingest(ref, path, "c", batch_size=50, **opts)

    class Crash(Exception):
        pass

    real = shards.LocalShards.gather

    def crash_at_chunk_4(self, method, args=(), *, shards=None, partial=False):
        if method == "write" and callable(args) and args(0)[6] == 200:
            self.hosts[0].write(*args(0))  # shard 0 commits chunk 4, then the process "dies"
            raise Crash
        return real(self, method, args, shards=shards, partial=partial)

    monkeypatch.setattr(shards.LocalShards, "gather", crash_at_chunk_4)
    with Engine(tmp_path / "data") as eng, pytest.raises(Crash):
        ingest(eng, path, "c", batch_size=50, shards=2, **opts)
    monkeypatch.setattr(shards.LocalShards, "gather", real)
    with Engine(tmp_path / "data") as eng:
        col = eng.open_collection("c")
        assert col.marker["ingest"]["rows"] == 150
        report = ingest(eng, path, "c", batch_size=50, shards=2, **opts)
        assert report.resumed_from == 150 and report.skipped == 0, report.errors
        want = ref.open_collection("c")
        assert sorted(col.ids()) == sorted(want.ids())
        got = {r.id: (r.vector.tolist(), r.payload) for r in col.get(ids)}
        assert got == {r.id: (r.vector.tolist(), r.payload) for r in want.get(ids)}
        same(col.search_batch(queries(), 10), want.search_batch(queries(), 10))
        with pytest.raises(ValueError, match="2 shard"):
            ingest(eng, path, "c", batch_size=50, shards=3, **opts)


def test_texts_are_encoded_once_here_and_lexical_and_hybrid_search_work(tmp_path, tiny_st_dir):
    words = ["protein", "cell", "gene", "virus", "drug", "trial", "mouse", "brain", "heart"]
    rng = np.random.default_rng(2)
    texts = [" ".join(rng.choice(words, 8)) + f" marker{i}" for i in range(80)]
    ids = [f"t{i}" for i in range(80)]
    with Engine(tmp_path) as eng:
        one = eng.create_collection("one", encoder=str(tiny_st_dir), index="flat")
        sh = eng.create_collection("sh", encoder=str(tiny_st_dir), index="flat", shards=1)
        sh3 = eng.create_collection("sh3", encoder=str(tiny_st_dir), index="flat", shards=3)
        for col in (one, sh, sh3):
            col.add(ids, texts=texts, payloads=[{"i": i} for i in range(80)])
        for mode in ("dense", "lexical", "hybrid"):
            # One shard: bit-equal to one collection in every mode.
            same(
                sh.search_batch(["gene virus", "marker7 heart"], 8, mode=mode),
                one.search_batch(["gene virus", "marker7 heart"], 8, mode=mode),
            )
        same(sh3.search_batch(["gene virus"], 8), one.search_batch(["gene virus"], 8))
        # Three shards: BM25 statistics are per shard, but a term only one document holds finds it.
        assert sh3.search("marker42", 1, mode="lexical")[0].id == "t42"
        assert sh3.search("marker42 protein", 1, mode="hybrid")[0].id == "t42"
        hits = sh3.search("marker42", 3, mode="hybrid", fusion="rrf", where={"i": {"$lt": 40}})
        assert all(h.payload["i"] < 40 for h in hits) and "t42" not in [h.id for h in hits]
        assert sh3.set_fusion("rrf", weight=0.3).method == "rrf"
    with Engine(tmp_path) as eng:
        assert eng.open_collection("sh3").fusion.weight == 0.3


def test_ivf_shards_share_one_quantizer_and_answer_as_one_ivf_collection(eng):
    ids, x, payloads = data(1200)
    spec = "ivf:nlist=16,nprobe=3"
    one = eng.create_collection("one", dim=DIM, index=spec)
    sh = eng.create_collection("sh", dim=DIM, index=spec, shards=3)
    assert sh.needs_quantizer and sh.train_size == 39 * 16
    for col in (one, sh):
        col.add(ids, x, payloads)  # one write of >= train_size vectors trains it
    assert not sh.needs_quantizer
    quantizers = [h.quantizer() for h in sh._shards.hosts]
    np.testing.assert_array_equal(quantizers[0]["centroids"], one.quantizer()["centroids"])
    assert all(np.array_equal(q["centroids"], quantizers[0]["centroids"]) for q in quantizers)
    q = queries()
    same(sh.search_batch(q, 10), one.search_batch(q, 10))
    same(sh.search_batch(q, 10, where={"group": 1}), one.search_batch(q, 10, where={"group": 1}))
    with pytest.raises(ValueError, match="not empty"):
        sh.train_quantizer(x)
    flat = eng.create_collection("flat", dim=DIM, index="flat", shards=2)
    with pytest.raises(ValueError, match="no quantizer"):
        flat.train_quantizer(x)


def test_an_ivf_ingest_trains_the_shared_quantizer_on_its_first_chunks(tmp_path):
    ids, x, payloads = data(900)
    path = tmp_path / "in.jsonl"
    with open(path, "w") as f:
        for k, v in zip(ids, x, strict=True):
            f.write(json.dumps({"id": k, "vector": v.tolist()}) + "\n")
    with Engine(tmp_path / "data") as eng:
        ingest(
            eng, path, "c", vector_column="vector", index="ivf:nlist=8", batch_size=100, shards=2
        )
        col = eng.open_collection("c")
        assert len(col) == 900 and not col.needs_quantizer
        a, b = (h.quantizer()["centroids"] for h in col._shards.hosts)
        np.testing.assert_array_equal(a, b)


def test_the_cli_indexes_describes_verifies_and_searches_a_sharded_collection(tmp_path, capsys):
    from engine import cli

    ids, x, payloads = data(120)
    path = tmp_path / "in.jsonl"
    with open(path, "w") as f:
        for k, v, p in zip(ids, x, payloads, strict=True):
            f.write(json.dumps({"id": k, "vector": v.tolist(), **p}) + "\n")
    data_dir = str(tmp_path / "data")
    common = ["--data", data_dir]
    assert (
        cli.main(
            [
                "index",
                str(path),
                *common,
                "--collection",
                "c",
                "--vector-column",
                "vector",
                "--index",
                "flat",
                "--shards",
                "2",
                "--payload-columns",
                "group",
                "--quiet",
            ]
        )
        == 0
    )
    assert cli.main(["info", *common]) == 0
    assert "2 shards by id hash, in-process" in capsys.readouterr().out
    assert cli.main(["verify", *common]) == 0
    (tmp_path / "data" / "c" / "shard-001" / "manifest.json").write_text("{}")
    assert cli.main(["verify", *common]) == 1
    assert "CORRUPT" in capsys.readouterr().out
    assert (
        cli.main(
            [
                "index",
                str(path),
                *common,
                "--collection",
                "d",
                "--vector-column",
                "vector",
                "--encoders",
                "2",
                "--quiet",
            ]
        )
        == 2
    )
    assert "need --ray" in capsys.readouterr().err


def test_sharded_token_sets_answer_as_one_multi_vector_collection(eng):
    rng = np.random.default_rng(8)
    sets = [
        rng.standard_normal((int(rng.integers(2, 7)), DIM)).astype(np.float32) for _ in range(80)
    ]
    ids = [f"m{i}" for i in range(80)]
    one = eng.create_collection("one", dim=DIM, index="chamfer")
    sh = eng.create_collection("sh", dim=DIM, index="chamfer", shards=3)
    for col in (one, sh):
        col.add(ids, sets, [{"i": i} for i in range(80)])
    q = [rng.standard_normal((3, DIM)).astype(np.float32) for _ in range(5)]
    same(sh.search_batch(q, 6), one.search_batch(q, 6))
    assert sh.search(q[0], 4, where={"i": {"$gte": 40}}) == one.search(
        q[0], 4, where={"i": {"$gte": 40}}
    )
    np.testing.assert_array_equal(sh.get(["m7"])[0].vector, sets[7])
