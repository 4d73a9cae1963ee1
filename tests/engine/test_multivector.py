"""Multi-vector collections: token sets (raw or from a TokenEncoder) behind the Collection API,
checked against the index-level MuveraIndex / exhaustive ChamferIndex; durability and bad input.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import index as ix
from engine import Engine, cli, wal
from engine.collection import MANIFEST, WAL_DIR
from engine.evaluate import evaluate_beir
from index import CorruptFileError

DIM = 8
# Small FDEs and an exact inner index: fast, and deterministic across reopen and replay.
SPEC = "muvera:k_sim=2,d_proj=4,r_reps=4,inner=flat,candidates=20"


def token_sets(n: int, seed: int, dim: int = DIM) -> list[np.ndarray]:
    """Clustered token sets of 1-7 tokens (some documents share topics)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, dim))
    out = []
    for _ in range(n):
        topic = centres[rng.integers(0, 6, size=int(rng.integers(1, 8)))]
        out.append((topic + 0.4 * rng.standard_normal(topic.shape)).astype(np.float32))
    return out


def ids_of(n: int) -> list[str]:
    return [f"doc-{i}" for i in range(n)]


def payloads_of(n: int) -> list[dict]:
    return [{"year": 2000 + i % 5, "lang": "en" if i % 3 else "de"} for i in range(n)]


def index_level(spec: str, docs: list[np.ndarray], metric: str = "cosine"):
    idx = ix.from_spec(spec, docs[0].shape[1], metric)
    idx.add(docs, np.arange(len(docs)))
    return idx


def as_ids(labels: np.ndarray, names: list[str]) -> list[list[str | None]]:
    return [[names[lab] if lab >= 0 else None for lab in row] for row in labels.tolist()]


def snapshot(col) -> dict[str, tuple[bytes, tuple, dict]]:
    recs = col.get(sorted(col.ids())) if len(col) else []
    return {r.id: (r.vector.tobytes(), r.vector.shape, r.payload) for r in recs}


@pytest.fixture
def eng(tmp_path):
    e = Engine(tmp_path / "data")
    yield e
    e.close()


@pytest.fixture(scope="module")
def token_dir(tiny_bert_dir, tmp_path_factory):
    from encoders import TokenEncoder

    path = tmp_path_factory.mktemp("token-encoder")
    TokenEncoder(tiny_bert_dir, dim=16, doc_max_len=64, query_len=16).save(path)
    return path


TEXTS = [
    "the cat sat on the mat",
    "proteins fold inside living cells",
    "stock markets fell sharply today",
    "the rocket launched into orbit",
    "a dog chased the cat around the garden",
    "enzymes are proteins that speed up reactions",
]


# ---- raw token sets --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec",
    [SPEC, "chamfer", "token_ann:k_tokens=4", SPEC + ",tokens=int8", "chamfer:tokens=res2"],
)
def test_results_equal_the_index_level_index(eng, spec):
    docs, names = token_sets(60, 0), ids_of(60)
    col = eng.create_collection("mv", dim=DIM, index=spec)
    assert col.multi_vector and col.index_spec == ix.from_spec(spec, DIM).spec
    col.add(names, docs, payloads_of(60))
    queries = [d[:3] + 0.05 for d in token_sets(12, 1)]
    res = col.search_batch(queries, k=5)
    scores, labels = index_level(spec, docs).search(queries, 5)
    assert [list(r) for r in res.ids] == as_ids(labels, names)
    assert np.array_equal(res.scores, scores)
    # One query through search(): the same hits, payloads attached.
    hits = col.search(queries[0], k=5)
    assert [h.id for h in hits] == list(res.ids[0])
    assert [h.score for h in hits] == pytest.approx(res.scores[0].tolist())
    assert hits[0].payload == payloads_of(60)[int(hits[0].id.split("-")[1])]


def test_muvera_with_every_candidate_is_exhaustive_chamfer(eng):
    docs, names = token_sets(50, 2), ids_of(50)
    col = eng.create_collection("mv", dim=DIM, index=SPEC)
    col.add(names, docs)
    queries = token_sets(8, 3)
    res = col.search_batch(queries, k=10, candidates=50)  # per-call parameter
    exact_s, exact_l = index_level("chamfer", docs).search(queries, 10)
    assert [list(r) for r in res.ids] == as_ids(exact_l, names)
    np.testing.assert_allclose(res.scores, exact_s, rtol=1e-5, atol=1e-5)


def test_per_call_parameters_reach_the_index(eng):
    docs, names = token_sets(40, 4), ids_of(40)
    col = eng.create_collection("mv", dim=DIM, index="muvera:k_sim=2,d_proj=4,r_reps=4")
    col.add(names, docs)
    idx = index_level(col.index_spec, docs)
    q = token_sets(4, 5)
    for params in ({"candidates": 3}, {"tau": 70}, {"inner_ef": 64, "candidates": 10}):
        res = col.search_batch(q, k=3, **params)
        scores, labels = idx.search(q, 3, **params)
        assert [list(r) for r in res.ids] == as_ids(labels, names), params
    with pytest.raises(ValueError, match=r"unknown muvera search parameter\(s\) \['nprobe'\]"):
        col.search(q[0], k=1, nprobe=3)


@pytest.mark.parametrize(
    ("where", "keep"),
    [
        ({"year": 2001}, lambda p: p["year"] == 2001),
        ({"lang": "de"}, lambda p: p["lang"] == "de"),
        ({"year": {"$gte": 2003}, "lang": "en"}, lambda p: p["year"] >= 2003 and p["lang"] == "en"),
    ],
)
def test_filters_return_only_allowed_ids(eng, where, keep):
    docs, names, payloads = token_sets(80, 6), ids_of(80), payloads_of(80)
    col = eng.create_collection("mv", dim=DIM, index=SPEC)
    col.add(names, docs, payloads)
    allowed = [i for i, p in enumerate(payloads) if keep(p)]
    queries = token_sets(6, 7)
    res = col.search_batch(queries, k=8, where=where)
    # A selective filter is scored exactly: exhaustive Chamfer over the allowed documents.
    exact_s, exact_l = index_level("chamfer", docs).search(queries, 8, allowed=allowed)
    assert [list(r) for r in res.ids] == as_ids(exact_l, names)
    np.testing.assert_allclose(res.scores, exact_s, rtol=1e-5, atol=1e-5)
    for row, row_payloads in zip(res.ids, res.payloads, strict=True):
        assert all(int(d.split("-")[1]) in allowed for d in row if d is not None)
        assert all(keep(p) for p in row_payloads)
    hits = col.search(queries[0], k=8, where=where)
    assert [h.id for h in hits] == [d for d in res.ids[0] if d is not None]


def test_get_delete_upsert(eng):
    docs, names = token_sets(30, 8), ids_of(30)
    col = eng.create_collection("mv", dim=DIM, index=SPEC)
    col.add(names, docs, payloads_of(30))
    got = col.get(["doc-3", "nope", "doc-4"])
    assert got[1] is None and got[0].id == "doc-3"
    assert got[0].vector.dtype == np.float32 and np.array_equal(got[0].vector, docs[3])
    assert np.array_equal(got[2].vector, docs[4]) and got[2].payload == payloads_of(30)[4]
    assert col.delete(["doc-3", "doc-5", "nope"]) == 2 and len(col) == 28 and "doc-3" not in col
    hits = col.search_batch(docs[:6], k=30)
    assert not {"doc-3", "doc-5"} & {d for row in hits.ids for d in row}
    new = token_sets(1, 9)[0]
    col.upsert(["doc-4", "doc-99"], [new, docs[0]], [{"year": 1}, {}])
    assert np.array_equal(col.get(["doc-4"])[0].vector, new)
    assert col.get(["doc-4"])[0].payload == {"year": 1} and len(col) == 29
    assert col.search(new, k=1)[0].id == "doc-4"
    assert {h.id for h in col.search(docs[0], k=2)} == {"doc-0", "doc-99"}
    with pytest.raises(ValueError, match="'doc-4' already exists"):
        col.add(["doc-4"], [new])


# ---- text in, hits out -----------------------------------------------------------------------
def test_token_encoder_collection_text_in_hits_out(tmp_path, token_dir):
    from encoders import TokenEncoder

    eng = Engine(tmp_path)
    col = eng.create_collection("docs", encoder=str(token_dir))  # default index: muvera
    assert col.multi_vector and col.index_spec.startswith("muvera:")
    assert col.dim == 16 and col.encoder_spec == str(token_dir.resolve())
    names = ids_of(len(TEXTS))
    col.add(names, texts=TEXTS, payloads=[{"n": i} for i in range(len(TEXTS))])
    enc = TokenEncoder.load(token_dir)
    docs = enc.encode_documents(TEXTS)
    rec = col.get(["doc-2"])[0]
    assert rec.vector.shape == docs[2].shape and np.allclose(rec.vector, docs[2], atol=1e-5)
    # The same results as the index-level MuveraIndex over the encoder's own vectors.
    queries = ["where is the cat", "protein folding", "launch to orbit"]
    scores, labels = index_level(col.index_spec, docs).search(enc.encode_queries(queries), 4)
    res = col.search_batch(queries, k=4)
    assert [list(r) for r in res.ids] == as_ids(labels, names)
    np.testing.assert_allclose(res.scores, scores, rtol=1e-5, atol=1e-5)
    hits = col.search("where is the cat", k=2, where={"n": {"$gte": 1}})
    assert len(hits) == 2 and all(h.id != "doc-0" for h in hits) and hits[0].payload["n"] >= 1
    col.upsert(["doc-0"], texts=["orbit"])
    before = col.search_batch(queries, k=4)
    eng.close()
    again = Engine(tmp_path).open_collection("docs")
    after = again.search_batch(queries, k=4)
    assert (after.ids == before.ids).all() and np.array_equal(after.scores, before.scores)


def test_encoder_and_index_kinds_must_match(eng, token_dir, tiny_st_dir):
    with pytest.raises(ValueError, match=r"multi-vector \(one vector per token\).*'hnsw'"):
        eng.create_collection("a", encoder=str(token_dir), index="hnsw")
    with pytest.raises(ValueError, match="'muvera' is multi-vector but encoder"):
        eng.create_collection("b", encoder=str(tiny_st_dir), index="muvera")
    with pytest.raises(ValueError, match="cosine or ip"):
        eng.create_collection("c", dim=DIM, index="muvera", metric="l2")
    assert eng.list_collections() == []
    single = eng.create_collection("d", encoder=str(tiny_st_dir))  # default: hnsw
    assert not single.multi_vector and single.index_spec.startswith("hnsw")


# ---- durability ------------------------------------------------------------------------------
def write_ops(col, seed: int, n_ops: int) -> None:
    """Seeded upserts (ids repeating within runs) and deletes."""
    rng = np.random.default_rng(seed)
    for k in range(n_ops):
        if rng.random() < 0.75 or len(col) == 0:
            n = int(rng.integers(1, 4))
            ids = [f"id-{int(i)}" for i in rng.choice(25, n, replace=False)]
            col.upsert(ids, token_sets(n, seed * 1000 + k), [{"k": k, "t": "é"}] * n)
        else:
            present = sorted(col.ids())
            col.delete(list(rng.choice(present, min(2, len(present)), replace=False)))


def test_reopen_gives_identical_results(tmp_path):
    queries = token_sets(10, 11)
    with Engine(tmp_path) as eng:
        col = eng.create_collection("mv", dim=DIM, index="muvera:k_sim=2,d_proj=4,r_reps=4")
        write_ops(col, seed=3, n_ops=30)
        before, state = col.search_batch(queries, k=6), snapshot(col)
    manifest = json.loads((col.path / MANIFEST).read_text())
    assert manifest["format_version"] == 3
    assert {n.split(".")[0] for n in manifest["files"]} == {"tokens", "offsets", "rows"}
    for read_only in (False, True):
        again = Engine(tmp_path).open_collection("mv", read_only=read_only)
        after = again.search_batch(queries, k=6)
        assert (after.ids == before.ids).all() and np.array_equal(after.scores, before.scores)
        assert snapshot(again) == state
    # Writes after reopening go on from the loaded (memory-mapped) tokens.
    col = Engine(tmp_path).open_collection("mv")
    col.add(["fresh"], [queries[0]])
    assert col.search(queries[0], k=1)[0].id == "fresh" and len(col) == len(state) + 1


def test_log_replay_without_checkpoint_gives_identical_results(tmp_path):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("mv", dim=DIM, index=SPEC)
    write_ops(col, seed=5, n_ops=40)
    assert col._generation == 1  # nothing checkpointed since creation: all in the log
    queries = token_sets(10, 12)
    before, state = col.search_batch(queries, k=5, where={"t": "é"}), snapshot(col)
    # What a kill -9 leaves: the files as they are now.
    copy = shutil.copytree(tmp_path / "data", tmp_path / "crashed")
    again = Engine(copy).open_collection("mv")
    assert snapshot(again) == state
    after = again.search_batch(queries, k=5, where={"t": "é"})
    assert (after.ids == before.ids).all() and np.array_equal(after.scores, before.scores)
    again.flush()  # a checkpoint of the replayed state reopens the same
    third = Engine(tmp_path / "third")
    shutil.copytree(copy / "mv", third.path / "mv")
    assert snapshot(third.open_collection("mv")) == state


def test_automatic_checkpoints_and_compaction(tmp_path):
    eng = Engine(tmp_path, checkpoint_bytes=2000)  # a checkpoint every few writes
    col = eng.create_collection("mv", dim=DIM, index=SPEC)
    col.add(ids_of(2000), token_sets(2000, 13))
    col.delete(ids_of(2000)[:1800])  # enough dead tokens to compact the collection's store
    assert col._tokens.n == len(col) == 200
    write_ops(col, seed=7, n_ops=15)
    assert col._generation > 2
    state, q = snapshot(col), token_sets(5, 14)
    before = col.search_batch(q, k=4)
    eng.close()
    again = Engine(tmp_path).open_collection("mv")
    assert snapshot(again) == state
    assert (again.search_batch(q, k=4).ids == before.ids).all()


def test_wal_record_round_trip_with_lengths(tmp_path):
    sets = token_sets(3, 15)
    x, lengths = np.concatenate(sets), np.array([len(s) for s in sets])
    w = wal.WalWriter(tmp_path, wal.LogState(next_seq=1), sync=False)
    w.append(wal.UPSERT, wal.encode_upsert(["a", "b", "c"], x, [{}, {"p": 1}, {}], lengths))
    w.close()
    got: list[wal.Entry] = []
    wal.replay(tmp_path, 0, DIM, got.append)
    assert np.array_equal(got[0].vectors, x) and got[0].lengths.tolist() == lengths.tolist()
    assert got[0].payloads == [{}, {"p": 1}, {}]


def test_log_records_of_the_wrong_kind_name_the_segment(tmp_path):
    eng = Engine(tmp_path)
    col = eng.create_collection("mv", dim=DIM, index=SPEC)
    col.add(["a"], token_sets(1, 16))
    # A single-vector record (no token counts) in a multi-vector collection's log.
    col._wal.append(wal.UPSERT, wal.encode_upsert(["b"], np.ones((1, DIM), np.float32), [{}]))
    col._wal.wait(col._wal.last_seq)
    copy = shutil.copytree(tmp_path, tmp_path.parent / "copy")
    with pytest.raises(CorruptFileError, match=r"wal/\d+\.log: offset \d+: record 2"):
        Engine(copy).open_collection("mv")
    # Bad token counts in a record.
    body = bytearray(wal.encode_upsert(["c"], np.ones((2, DIM), np.float32), [{}], [3]))
    col._wal.append(wal.UPSERT, bytes(body))
    col._wal.wait(col._wal.last_seq)
    shutil.rmtree(copy)
    copy = shutil.copytree(tmp_path, tmp_path.parent / "copy")
    with pytest.raises(CorruptFileError, match=r"bytes of vectors for 3 tokens"):
        Engine(copy).open_collection("mv")


def test_corrupted_token_files_are_named(tmp_path):
    eng = Engine(tmp_path)
    col = eng.create_collection("mv", dim=DIM, index=SPEC)
    col.add(ids_of(20), token_sets(20, 17))
    eng.close()
    for pattern in ("tokens.*.npy", "offsets.*.npy"):
        path = next(col.path.glob(pattern))
        good = path.read_bytes()
        raw = bytearray(good)
        raw[-3] ^= 0xFF
        path.write_bytes(bytes(raw))
        with pytest.raises(CorruptFileError, match=path.name):
            Engine(tmp_path).open_collection("mv")
        path.write_bytes(good)
    # Offsets that pass the checksum (a crafted manifest) but do not fit the tokens.
    opath = next(col.path.glob("offsets.*.npy"))
    offsets = np.load(opath)
    offsets[1] = offsets[2]
    np.save(opath, offsets)
    mpath = col.path / MANIFEST
    manifest = json.loads(mpath.read_text())
    from index import storage

    manifest["files"][opath.name] = storage.file_entry(opath)
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(CorruptFileError, match=f"{opath.name}: offsets must rise strictly"):
        Engine(tmp_path).open_collection("mv")
    assert (col.path / WAL_DIR).is_dir()


# ---- bad input -------------------------------------------------------------------------------
def test_bad_writes_change_nothing(eng):
    col = eng.create_collection("mv", dim=DIM, index=SPEC)
    docs = token_sets(5, 18)
    col.add(ids_of(5), docs)
    log_size = sum(p.stat().st_size for p in (col.path / WAL_DIR).iterdir())
    ok = np.ones((2, DIM), np.float32)
    cases = [
        (lambda: col.add(["n"], [[[1.0] * DIM, [1.0] * 3]]), TypeError, r"vectors\[0\]"),
        (lambda: col.add(["n"], [np.empty((0, DIM))]), ValueError, r"vectors\[0\] has no tokens"),
        (lambda: col.add(["n"], [np.ones((2, 3))]), ValueError, "dimension 3, expected 8"),
        (lambda: col.add(["n"], [np.full((2, DIM), np.nan)]), ValueError, "token 0 .*NaN"),
        (lambda: col.add(["n"], np.ones(DIM)), ValueError, "list of"),
        (lambda: col.add(["n"], ok), ValueError, "wrap a single token set in a list"),
        (lambda: col.add(["n", "m"], [ok]), ValueError, "1 token sets for 2 ids"),
        (lambda: col.add(["n"], []), ValueError, "empty batch"),
        (lambda: col.add(["doc-1"], [ok]), ValueError, "'doc-1' already exists"),
        (lambda: col.add(["n"], [ok], [{"_label": 1}]), ValueError, "reserved"),
        (lambda: col.add(["n"], texts=["x"]), ValueError, "no encoder"),
        (lambda: col.upsert(["doc-1"], [np.ones((1, DIM + 1))]), ValueError, "dimension 9"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
    assert len(col) == 5 and col.get(["n"]) == [None]
    assert np.array_equal(col.get(["doc-1"])[0].vector, docs[1])
    assert sum(p.stat().st_size for p in (col.path / WAL_DIR).iterdir()) == log_size


def test_bad_searches(eng):
    col = eng.create_collection("mv", dim=DIM, index=SPEC)
    docs = token_sets(5, 19)
    col.add(ids_of(5), docs)
    cases = [
        (lambda: col.search(np.ones(DIM), k=1), ValueError, r"one query token set of shape"),
        (lambda: col.search(np.ones((2, 2, DIM)), k=1), ValueError, "use search_batch"),
        (lambda: col.search(np.ones((2, 3)), k=1), ValueError, "dimension 3, expected 8"),
        (lambda: col.search(np.full((2, DIM), np.inf), k=1), ValueError, "NaN or inf"),
        (lambda: col.search(np.empty((0, DIM)), k=1), ValueError, "no tokens"),
        (lambda: col.search([[1.0] * DIM, [1.0]], k=1), TypeError, r"\(m, 8\) array"),
        (lambda: col.search(docs[0], k=0), ValueError, "k must be positive"),
        (lambda: col.search("text", k=1), ValueError, "has no encoder"),
        (lambda: col.search_batch(docs[0], k=1), ValueError, "wrap a single token set"),
        (lambda: col.search_batch([], k=1), ValueError, "empty batch"),
        (lambda: col.search(docs[0], k=1, where=[1]), TypeError, "where must be a dict"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
    three_d = col.search_batch(np.stack([docs[0][:1], docs[1][:1]]), k=1)  # (n, L, dim) works
    assert len(three_d) == 2


# ---- evaluation ------------------------------------------------------------------------------
@pytest.fixture
def tiny_beir(tmp_path):
    d = tmp_path / "beir"
    (d / "qrels").mkdir(parents=True)
    with open(d / "corpus.jsonl", "w") as f:
        for i, text in enumerate(TEXTS):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    with open(d / "queries.jsonl", "w") as f:
        for i, text in enumerate(["where is the cat", "protein folding", "orbit"]):
            f.write(json.dumps({"_id": f"q{i}", "text": text}) + "\n")
    (d / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\nq2\td3\t1\n"
    )
    return d


def test_evaluate_beir_with_a_token_encoder(tiny_beir, token_dir, tiny_st_dir):
    rows = evaluate_beir(
        tiny_beir, encoders_=[str(tiny_st_dir), str(token_dir)], indexes=["flat", "muvera"]
    )
    assert [(r["encoder"], r["index"].split(":")[0]) for r in rows] == [
        (str(tiny_st_dir), "flat"),
        (str(token_dir), "chamfer"),  # flat means exhaustive exact MaxSim for token sets
        (str(token_dir), "muvera"),
    ]
    assert all(r["queries"] == 3 and 0 <= r["ndcg@10"] <= 1 for r in rows)
    # Six documents, 100 candidates: MUVERA reranks all of them exactly.
    assert rows[1]["ndcg@10"] == pytest.approx(rows[2]["ndcg@10"])
    with pytest.raises(ValueError, match="needs a multi-vector"):
        evaluate_beir(tiny_beir, encoders_=[str(token_dir)], indexes=["hnsw"])


def test_eval_cli_with_a_token_encoder(tiny_beir, token_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = ["eval", str(tiny_beir), "--encoder", str(token_dir), "--index", "chamfer"]
    assert cli.main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["index"] for r in rows] == ["chamfer"] and rows[0]["queries"] == 3
    assert "nDCG@10" in capsys.readouterr().out
