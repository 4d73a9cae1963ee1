"""``vecdex index``: four input formats, malformed rows, resume after SIGKILL and Ctrl-C."""

from __future__ import annotations

import _thread
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import Engine, cli
from engine.ingest import IngestInterrupted, MalformedInputError, ingest
from engine.sources import InputError, Source

ROOT = Path(__file__).resolve().parents[2]
DIM = 8


def docs(n: int = 60) -> list[dict]:
    words = ["protein", "cell", "gene", "virus", "drug", "trial", "mouse", "brain", "heart"]
    rng = np.random.default_rng(7)
    return [
        {
            "_id": f"doc{i}",
            "title": f"Title {i}",
            "text": " ".join(rng.choice(words, 12)) + f" number {i}",
            "year": 2000 + i % 20,
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def vec_table(n: int, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    table = pa.table(
        {
            "id": [f"v{i}" for i in range(n)],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM),
            "group": [i % 5 for i in range(n)],
        }
    )
    return table, x


def snapshot(col) -> dict:
    ids = sorted(col.ids())
    return {r.id: (r.vector.tobytes(), r.payload) for r in col.get(ids)}


def searches(col, queries) -> list:
    return [[(h.id, round(h.score, 5)) for h in col.search(q, k=5)] for q in queries]


# ---- formats ----------------------------------------------------------------------------------
def test_four_formats_index_the_same_corpus_to_the_same_collection(tmp_path, tiny_st_dir):
    rows = docs(40)
    beir = tmp_path / "beir"
    write_jsonl(beir / "corpus.jsonl", [{k: r[k] for k in ("_id", "title", "text")} for r in rows])
    write_jsonl(tmp_path / "c.jsonl", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet", row_group_size=7)
    with open(tmp_path / "c.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["_id", "title", "text", "year"])
        w.writeheader()
        w.writerows(rows)
    eng = Engine(tmp_path / "data")
    enc = str(tiny_st_dir)
    snaps, hits = [], []
    for name, src in [
        ("beir", beir),
        ("jsonl", tmp_path / "c.jsonl"),
        ("parquet", tmp_path / "c.parquet"),
        ("csv", tmp_path / "c.csv"),
    ]:
        report = ingest(eng, src, name, encoder=enc, index="flat", batch_size=16)
        assert report.format == name and report.added == 40 and report.skipped == 0
        col = eng.open_collection(name)
        assert col.encoder_spec == enc
        snaps.append(snapshot(col))
        hits.append([[h.id for h in col.search(r["text"], k=3)] for r in rows[:5]])
    assert all(s == snaps[0] for s in snaps[1:])  # same ids, vectors and payloads
    assert all(h == hits[0] for h in hits[1:])
    assert snaps[0]["doc3"][1] == {"title": "Title 3", "text": rows[3]["text"]}
    assert hits[0][0][0] == "doc0"


def test_vectors_from_parquet_jsonl_and_csv_agree(tmp_path):
    table, x = vec_table(50)
    pq.write_table(table, tmp_path / "v.parquet", row_group_size=9)
    write_jsonl(
        tmp_path / "v.jsonl",
        [{"id": f"v{i}", "vector": x[i].tolist(), "group": i % 5} for i in range(50)],
    )
    with open(tmp_path / "v.csv", "w") as f:
        f.write("id,vector,group\n")
        for i in range(50):
            f.write(f'v{i},"{json.dumps(x[i].tolist())}",{i % 5}\n')
    eng = Engine(tmp_path / "data")
    snaps = []
    for name in ("parquet", "jsonl", "csv"):
        report = ingest(eng, tmp_path / f"v.{name}", name, payload_columns=["group"], index="flat")
        assert report.added == 50
        snaps.append(snapshot(eng.open_collection(name)))
    assert snaps[0] == snaps[1] == snaps[2]
    col = eng.open_collection("parquet")
    assert col.dim == DIM and col.get(["v7"])[0].payload == {"group": 2}
    assert col.search(x[7], k=1, where={"group": 2})[0].id == "v7"


def test_a_directory_of_parquet_files_and_list_columns(tmp_path):
    table, x = vec_table(30)
    d = tmp_path / "parts"
    d.mkdir()
    # Variable-size list<double> column, split over three files read in name order.
    t = table.set_column(1, "vector", pa.array([row.tolist() for row in x.astype(np.float64)]))
    for k in range(3):
        pq.write_table(t.slice(10 * k, 10), d / f"part-{k}.parquet")
    eng = Engine(tmp_path / "data")
    report = ingest(eng, d, "c", index="flat", batch_size=4)
    assert report.added == 30 and report.total_rows == 30
    col = eng.open_collection("c")
    got = np.stack([r.vector for r in col.get([f"v{i}" for i in range(30)])])
    np.testing.assert_allclose(got, x, atol=1e-6)  # get returns vectors as given


def test_chunks_are_cut_at_the_same_rows_however_the_file_is_split(tmp_path):
    table, _ = vec_table(53)
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=5)
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=50)
    for name in ("a", "b"):
        src = Source(tmp_path / f"{name}.parquet")
        got = [(c.start, c.n) for c in src.chunks(["id"], 10)]
        assert got == [(0, 10), (10, 10), (20, 10), (30, 10), (40, 10), (50, 3)]
        assert [c.start for c in src.chunks(["id"], 10, skip=30)] == [30, 40, 50]
        ids = [v for c in src.chunks(["id"], 10, skip=20) for v in c.columns["id"].to_pylist()]
        assert ids == [f"v{i}" for i in range(20, 53)]


def test_input_errors_name_the_problem(tmp_path):
    eng = Engine(tmp_path / "data")
    with pytest.raises(InputError, match="no such file"):
        ingest(eng, tmp_path / "nope.parquet", "c")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="unknown file extension"):
        ingest(eng, tmp_path / "x.txt", "c")
    write_jsonl(tmp_path / "a.jsonl", [{"key": "a", "body": "t"}])
    with pytest.raises(InputError, match="no id column"):
        ingest(eng, tmp_path / "a.jsonl", "c")
    with pytest.raises(InputError, match="no text column"):
        ingest(eng, tmp_path / "a.jsonl", "c", id_column="key")
    with pytest.raises(InputError, match="no vector column 'vec'"):
        ingest(eng, tmp_path / "a.jsonl", "c", id_column="key", vector_column="vec")
    with pytest.raises(ValueError, match="on_error"):
        ingest(eng, tmp_path / "a.jsonl", "c", on_error="ignore")
    with pytest.raises(ValueError, match="batch_size"):
        ingest(eng, tmp_path / "a.jsonl", "c", batch_size=0)
    write_jsonl(tmp_path / "b.jsonl", [{"key": "a", "body": "t", "_meta": 1}])
    with pytest.raises(ValueError, match="reserved"):
        ingest(
            eng,
            tmp_path / "b.jsonl",
            "c",
            id_column="key",
            text_columns=["body"],
            payload_columns=["_meta"],
        )
    assert eng.list_collections() == []


# ---- malformed rows ---------------------------------------------------------------------------
def malformed_jsonl(path: Path) -> tuple[Path, np.ndarray, dict[str, str]]:
    """30 rows of vectors with one of each malformed case; returns the expected reasons by
    row label."""
    x = np.random.default_rng(3).standard_normal((30, DIM)).astype(np.float32)
    rows: list[dict | str] = [{"id": f"v{i}", "vector": x[i].tolist()} for i in range(30)]
    rows[2] = {"vector": x[2].tolist()}  # no id
    rows[4] = {"id": "", "vector": x[4].tolist()}  # empty id
    rows[6] = {"id": "v6", "vector": x[6][:3].tolist()}  # short vector
    rows[8] = {"id": "v8"}  # no vector
    rows[10] = {"id": "v10", "vector": [*x[10][:-1].tolist(), float("nan")]}
    rows[12] = {"id": "v1", "vector": x[12].tolist()}  # duplicate in the same chunk of 8
    rows[25] = {"id": "v3", "vector": x[25].tolist()}  # duplicate from an earlier chunk
    rows[14] = "{not json"
    rows[16] = "[1, 2]"  # JSON but not an object
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    expected = {
        "row 3": "missing id",
        "row 5": "missing id",
        "row 7": "vector has 3 values, not 8",
        "row 9": "missing vector",
        "row 11": "NaN",
        "row 13": "duplicate id",
        "row 15": "invalid JSON",
        "row 17": "not a JSON object",
        "row 26": "duplicate id",
    }
    return path, x, expected


def test_malformed_rows_fail_with_row_numbers_and_write_nothing(tmp_path):
    path, _, expected = malformed_jsonl(tmp_path / "bad.jsonl")
    eng = Engine(tmp_path / "data")
    with pytest.raises(MalformedInputError) as e:
        ingest(eng, path, "c", batch_size=8, index="flat")
    got = {b.where.split(" (")[0]: b.reason for b in e.value.bad}
    assert set(got) == set(expected) and e.value.total == 9
    for where, why in expected.items():
        assert why in got[where], (where, got[where])
    assert "row 13 (line 13) id 'v1': duplicate id (first at row 2" in str(e.value)
    assert "row 26 (line 26) id 'v3': duplicate id (first at row 4" in str(e.value)
    assert eng.list_collections() == []  # nothing half-written
    # An existing collection: ids already in it are malformed too, and it stays unchanged.
    col = eng.create_collection("c", dim=DIM, index="flat")
    col.add(["v20"], np.ones((1, DIM), np.float32))
    with pytest.raises(MalformedInputError, match="row 21 .*already in the collection"):
        ingest(eng, path, "c", batch_size=8)
    assert len(col) == 1 and col.marker is None


def test_malformed_rows_are_skipped_and_reported(tmp_path, capsys):
    path, x, expected = malformed_jsonl(tmp_path / "bad.jsonl")
    eng = Engine(tmp_path / "data")
    report = ingest(eng, path, "c", batch_size=8, index="flat", on_error="skip")
    got = {b.where.split(" (")[0]: b.reason for b in report.errors}
    assert set(got) == set(expected) and report.skipped == 9 and report.added == 21
    assert "already in the collection" in got["row 26"]
    col = eng.open_collection("c")
    assert len(col) == 21 and "v6" not in col and "v3" in col
    np.testing.assert_array_equal(col.get(["v1"])[0].vector, x[1])  # the first v1 won
    # The CLI prints them and exits 0; under fail it exits 2 naming the rows.
    args = ["index", str(path), "--data", str(tmp_path / "d2"), "--collection", "c"]
    assert cli.main([*args, "--batch-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "row 7 (line 7) id 'v6': vector has 3 values, not 8" in err
    assert "nothing was written" in err
    assert cli.main([*args, "--on-error", "skip", "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_csv_lines_with_the_wrong_number_of_fields(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,text\na,"first, with a comma"\nb,second,extra\nc,"multi\nline"\nd,\n')
    eng = Engine(tmp_path / "data")
    with pytest.raises(MalformedInputError) as e:  # before any model is loaded
        ingest(eng, path, "c", batch_size=2)
    reasons = [str(b) for b in e.value.bad]
    assert any("expected 2 columns, got 3" in r for r in reasons)
    assert any("missing text" in r and "id 'd'" in r for r in reasons)


def test_upsert_mode_lets_later_rows_replace_earlier_ones(tmp_path):
    x = np.eye(DIM, dtype=np.float32)
    rows = [{"id": f"v{i % 5}", "vector": x[i].tolist(), "n": i} for i in range(8)]
    path = write_jsonl(tmp_path / "u.jsonl", rows)
    eng = Engine(tmp_path / "data")
    report = ingest(eng, path, "c", upsert=True, batch_size=3, payload_columns=["n"])
    col = eng.open_collection("c")
    assert report.skipped == 0 and len(col) == 5
    assert {i: col.get([i])[0].payload["n"] for i in ("v0", "v1", "v2", "v3", "v4")} == {
        "v0": 5,
        "v1": 6,
        "v2": 7,
        "v3": 3,
        "v4": 4,
    }


# ---- resuming ---------------------------------------------------------------------------------
def test_a_finished_run_is_a_no_op_and_a_changed_input_is_refused(tmp_path):
    table, _ = vec_table(40)
    path = tmp_path / "v.parquet"
    pq.write_table(table, path)
    eng = Engine(tmp_path / "data")
    ingest(eng, path, "c", batch_size=16, index="flat")
    again = ingest(eng, path, "c", batch_size=16)
    assert again.already_done and again.count == 40 and "nothing to do" in again.summary()
    # Pretend the first run stopped half-way, then change the file.
    col = eng.open_collection("c")
    state = col.marker
    state["ingest"].update(done=False, rows=16)
    col.set_marker(state)
    pq.write_table(table.slice(0, 39), path)
    with pytest.raises(ValueError, match="unfinished run .* changed since"):
        ingest(eng, path, "c", batch_size=16)
    report = ingest(eng, path, "c", overwrite=True, index="flat")
    assert report.added == 39 and len(eng.open_collection("c")) == 39


@pytest.fixture
def sigint_handled():
    """Ctrl-C raises KeyboardInterrupt in the main thread, whatever this process inherited.

    ``_thread.interrupt_main()`` does nothing when SIGINT is ignored, and a shell starts its
    background jobs (``pytest &``) with SIGINT ignored.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_cleanly_and_the_same_call_resumes(tmp_path, sigint_handled):
    table, x = vec_table(200)
    path = tmp_path / "v.parquet"
    pq.write_table(table, path, row_group_size=33)
    ref_eng = Engine(tmp_path / "ref")
    ingest(ref_eng, path, "c", batch_size=10, index="flat", payload_columns=["group"])
    eng = Engine(tmp_path / "data")
    calls = []

    def interrupt(report):
        calls.append(report.rows)
        if len(calls) == 7:
            _thread.interrupt_main()  # what Ctrl-C does

    with pytest.raises(IngestInterrupted, match="run the same command again") as e:
        ingest(
            eng,
            path,
            "c",
            batch_size=10,
            index="flat",
            payload_columns=["group"],
            progress=interrupt,
        )
    done = e.value.report.rows
    assert 70 <= done < 200 and done % 10 == 0
    col = eng.open_collection("c")
    assert len(col) == done and col.marker["ingest"]["rows"] == done
    # Resumed with another batch size: the run keeps its own.
    report = ingest(eng, path, "c", batch_size=64, payload_columns=["group"])
    assert report.resumed_from == done and report.rows == 200 - done
    assert snapshot(eng.open_collection("c")) == snapshot(ref_eng.open_collection("c"))


def test_ctrl_c_on_the_last_commit_is_an_interruption_too(tmp_path, sigint_handled):
    # The last chunk's commit: the caller's thread has encoded everything and waits for the
    # writer (or is about to); the Ctrl-C still ends as IngestInterrupted, never as a bare
    # KeyboardInterrupt, and nothing is left running.
    table, _ = vec_table(200)
    path = tmp_path / "v.parquet"
    pq.write_table(table, path, row_group_size=33)
    ref_eng = Engine(tmp_path / "ref")
    ingest(ref_eng, path, "c", batch_size=10, index="flat", payload_columns=["group"])
    eng = Engine(tmp_path / "data")

    def interrupt(report):
        if report.rows == 200:
            _thread.interrupt_main()

    with pytest.raises(IngestInterrupted, match="after 200 input rows") as e:
        ingest(
            eng,
            path,
            "c",
            batch_size=10,
            index="flat",
            payload_columns=["group"],
            progress=interrupt,
        )
    assert e.value.report.rows == 200
    col = eng.open_collection("c")
    assert len(col) == 200 and col.marker["ingest"]["rows"] == 200
    assert col.marker["ingest"]["done"] is False and col.durability != "none"
    report = ingest(eng, path, "c", batch_size=10, payload_columns=["group"])
    assert report.resumed_from == 200 and report.rows == 0 and not report.already_done
    assert eng.open_collection("c").marker["ingest"]["done"] is True
    assert snapshot(eng.open_collection("c")) == snapshot(ref_eng.open_collection("c"))


def run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "-v", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def kill_after_commits(args: list[str], commits: int, delay: float) -> bool:
    """Runs the CLI and SIGKILLs it ``delay`` seconds after its ``commits``-th committed batch;
    False if it finished first."""
    proc = run_cli(args)
    assert proc.stderr is not None
    seen = 0
    for line in proc.stderr:
        if "committed rows" in line:
            seen += 1
            if seen == commits:
                if delay:
                    import time

                    time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait()
    return proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("seed,shards", [(0, None), (1, None), (2, 3)])
def test_sigkill_at_a_random_batch_then_resume_gives_the_same_collection(tmp_path, seed, shards):
    """Also sharded: a kill can leave some shards one write ahead; the resumed run re-sends it,
    the shards that hold it skip it, and its ids are not taken for duplicates."""
    rng = np.random.default_rng(seed)
    table, x = vec_table(600, seed=seed)
    path = tmp_path / "v.parquet"
    pq.write_table(table, path, row_group_size=70)
    base = [
        "--vector-column",
        "vector",
        "--index",
        "hnsw:M=8,ef_construction=64",
        "--batch-size",
        "25",
        "--payload-columns",
        "group",
        "--quiet",
    ]
    ref = Engine(tmp_path / "ref")
    ingest(
        ref,
        path,
        "c",
        vector_column="vector",
        index="hnsw:M=8,ef_construction=64",
        batch_size=25,
        payload_columns=["group"],
    )
    data = tmp_path / "data"
    args = ["index", str(path), "--data", str(data), "--collection", "c", *base]
    if shards:
        args += ["--shards", str(shards)]
    killed = 0
    for _ in range(2):  # killed twice, at seeded random batches and moments
        if kill_after_commits(args, int(rng.integers(1, 10)), float(rng.uniform(0, 0.05))):
            killed += 1
    assert killed >= 1
    proc = run_cli(args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    got, want = Engine(data, read_only=True).open_collection("c"), ref.open_collection("c")
    assert got.marker["ingest"]["done"] and got.marker["ingest"]["rows"] == 600
    assert getattr(got, "shards", None) == shards
    assert len(got) == 600 and snapshot(got) == snapshot(want)
    queries = x[rng.choice(600, 20, replace=False)] + 0.1
    assert [[h.id for h in got.search(q, k=5, ef=200)] for q in queries] == [
        [h.id for h in want.search(q, k=5, ef=200)] for q in queries
    ]


# ---- the CLI ----------------------------------------------------------------------------------
def test_cli_index_search_and_info(tmp_path, tiny_st_dir, capsys):
    beir = tmp_path / "beir"
    rows = docs(30)
    write_jsonl(beir / "corpus.jsonl", [{k: r[k] for k in ("_id", "title", "text")} for r in rows])
    data = str(tmp_path / "data")
    args = [
        "index",
        str(beir),
        "--data",
        data,
        "--collection",
        "sci",
        "--encoder",
        str(tiny_st_dir),
        "--index",
        "hnsw",
        "--report",
        str(tmp_path / "r.json"),
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "indexed 30 items from 30 rows" in out and "MB on disk" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["added"] == 30 and report["format"] == "beir" and report["docs_per_s"] > 0
    assert {"read", "encode", "write", "checkpoint"} <= set(report["stages"])
    assert cli.main(args) == 0 and "nothing to do" in capsys.readouterr().out

    q = rows[4]["text"]
    assert cli.main(["search", "--data", data, "--collection", "sci", q, "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == "doc4" and hits[0]["payload"]["title"] == "Title 4"
    assert cli.main(["search", "--data", data, "--collection", "sci", q, "-k", "2"]) == 0
    assert "doc4" in capsys.readouterr().out.splitlines()[0]
    assert cli.main(["search", "--data", data, "--collection", "sci", q, "--where", "{bad"]) == 2
    assert "--where is not JSON" in capsys.readouterr().err

    assert cli.main(["info", "--data", data]) == 0
    out = capsys.readouterr().out
    assert "sci: 30 items" in out and f"encoder {tiny_st_dir}" in out and "(complete)" in out
    assert cli.main(["info", "--data", data, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["count"] == 30 and info["dim"] == 32 and info["last_index_run"]["done"]


def test_cli_index_builds_the_lexical_index_and_searches_every_mode(tmp_path, tiny_st_dir, capsys):
    rows = docs(25)
    write_jsonl(tmp_path / "d.jsonl", rows)
    data = str(tmp_path / "data")
    base = ["index", str(tmp_path / "d.jsonl"), "--data", data, "--encoder", str(tiny_st_dir)]
    assert cli.main([*base, "--collection", "lex", "--quiet", "--batch-size", "7"]) == 0
    col = Engine(data, read_only=True).open_collection("lex")
    assert col.lexical and col.describe()["lexical_count"] == 25
    q = rows[6]["title"] + " " + rows[6]["text"]
    search = ["search", "--data", data, "--collection", "lex", q, "-k", "3", "--json"]
    for mode in ("lexical", "hybrid"):
        assert cli.main([*search, "--mode", mode]) == 0
        assert json.loads(capsys.readouterr().out)[0]["id"] == "doc6"
    assert cli.main([*search, "--mode", "hybrid", "--fusion", "rrf", "--rrf-k", "5"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "doc6"
    assert cli.main([*search, "--mode", "hybrid", "--weight", "1.5"]) == 2
    assert "weight must be in [0, 1]" in capsys.readouterr().err
    assert cli.main([*search, "--mode", "lexicon"]) == 2
    assert "unknown search mode 'lexicon'" in capsys.readouterr().err
    assert cli.main(["info", "--data", data, "--collection", "lex"]) == 0
    assert "lexical BM25 of texts: 25 documents" in capsys.readouterr().out

    assert cli.main([*base, "--collection", "dense", "--quiet", "--no-lexical"]) == 0
    search[4] = "dense"
    assert cli.main([*search, "--mode", "lexical"]) == 2
    assert "has no lexical index" in capsys.readouterr().err


def test_cli_search_a_vector_collection(tmp_path, capsys):
    table, x = vec_table(20)
    pq.write_table(table, tmp_path / "v.parquet")
    data = str(tmp_path / "data")
    assert (
        cli.main(
            ["index", str(tmp_path / "v.parquet"), "--data", data, "--collection", "v", "--quiet"]
        )
        == 0
    )
    base = ["search", "--data", data, "--collection", "v"]
    assert cli.main([*base, "some text"]) == 2
    assert "has no encoder" in capsys.readouterr().err
    assert cli.main([*base, "--vector", json.dumps(x[3].tolist()), "--json", "-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "v3"


def test_multi_vector_collections_from_texts_and_from_token_lists(tmp_path, tiny_bert_dir):
    from encoders import TokenEncoder

    enc_dir = tmp_path / "token-encoder"
    TokenEncoder(tiny_bert_dir, dim=16, doc_max_len=64, query_len=16).save(enc_dir)
    rows = docs(12)
    write_jsonl(tmp_path / "t.jsonl", rows)
    eng = Engine(tmp_path / "data")
    report = ingest(eng, tmp_path / "t.jsonl", "late", encoder=str(enc_dir), batch_size=5)
    col = eng.open_collection("late")
    assert report.added == 12 and col.multi_vector and col.index_spec.startswith("muvera")
    assert col.search(rows[3]["title"] + " " + rows[3]["text"], k=1)[0].id == "doc3"

    rng = np.random.default_rng(0)
    sets = [rng.standard_normal((int(rng.integers(1, 6)), 4)).round(4) for _ in range(20)]
    lines = [{"id": f"s{i}", "tokens": s.tolist()} for i, s in enumerate(sets)]
    lines[7]["tokens"] = [[1.0, 2.0, 3.0]]  # tokens of the wrong width
    write_jsonl(tmp_path / "s.jsonl", lines)
    args = dict(vector_column="tokens", index="muvera:inner=flat", batch_size=6)
    with pytest.raises(MalformedInputError, match=r"row 8 \(line 8\) id 's7': token set of shape"):
        ingest(eng, tmp_path / "s.jsonl", "sets", **args)
    report = ingest(eng, tmp_path / "s.jsonl", "sets", on_error="skip", **args)
    col = eng.open_collection("sets")
    assert report.added == 19 and col.multi_vector and col.dim == 4
    np.testing.assert_allclose(col.get(["s3"])[0].vector, sets[3], atol=1e-6)
    assert col.search(sets[3], k=1)[0].id == "s3"


def test_indexing_vectors_never_imports_torch(tmp_path):
    """torch (~220 MB resident) loads only for encoders and exact scoring: a vector-only ingest
    into HNSW / IVF, its checkpoint and its searches run without it."""
    table, _ = vec_table(400)
    pq.write_table(table, tmp_path / "v.parquet")
    code = f"""
import sys
import numpy as np
from engine import Engine
from engine.ingest import ingest
eng = Engine({str(tmp_path / "data")!r})
for name, spec in (("h", "hnsw"), ("i", "ivf:nlist=4")):
    ingest(eng, {str(tmp_path / "v.parquet")!r}, name, index=spec)
    eng.open_collection(name).search(np.ones({DIM}, dtype=np.float32), k=3)
eng.close()
print("torch" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr
