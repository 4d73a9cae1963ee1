"""Opening with verify="full" (every file hashed) or "quick" (memory-mapped arrays by size and
shape only), Collection.verify() and `vecdex verify`."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Engine, cli
from index import CorruptFileError

DIM = 8


def build(tmp_path, spec):
    eng = Engine(tmp_path)
    col = eng.create_collection("c", dim=DIM, index=spec)
    x = np.random.default_rng(0).standard_normal((300, DIM)).astype(np.float32)
    col.add([f"d{i}" for i in range(300)], x)
    eng.close()
    return x


def flip(path, offset=-5):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def answers(eng, x):
    res = eng.open_collection("c").search_batch(x[:20], k=5)
    return res.ids.tolist(), res.scores


@pytest.mark.parametrize("spec", ["flat", "hnsw"])
def test_quick_open_answers_as_a_full_one(tmp_path, spec):
    x = build(tmp_path, spec)
    full_ids, full_scores = answers(Engine(tmp_path, read_only=True), x)
    quick_ids, quick_scores = answers(Engine(tmp_path, read_only=True, verify="quick"), x)
    assert quick_ids == full_ids
    np.testing.assert_array_equal(quick_scores, full_scores)


@pytest.mark.parametrize(
    "spec, name",
    [("flat", "vectors.2.npy"), ("flat", "index.2/vectors.npy"), ("sq8", "index.2/vectors.npy")],
)
def test_a_flipped_byte_in_a_mapped_array(tmp_path, capsys, spec, name):
    build(tmp_path, spec)
    path = tmp_path / "c" / name
    flip(path)
    with pytest.raises(CorruptFileError, match=name.split("/")[-1]) as e:
        Engine(tmp_path).open_collection("c")  # full (the default): found at open
    assert str(path) in str(e.value)
    col = Engine(tmp_path, verify="quick").open_collection("c")  # quick: opens...
    assert len(col) == 300
    with pytest.raises(CorruptFileError, match="SHA-256") as e:  # ...verify() finds it
        col.verify()
    assert str(path) in str(e.value)
    col.close()
    assert cli.main(["verify", "--data", str(tmp_path)]) == 1
    assert str(path) in capsys.readouterr().out


def test_files_a_native_library_parses_are_hashed_even_when_quick(tmp_path):
    build(tmp_path, "hnsw")
    graph = tmp_path / "c" / "index.2" / "graph.bin"
    flip(graph, 200)
    with pytest.raises(CorruptFileError, match="graph.bin"):
        Engine(tmp_path, verify="quick").open_collection("c")


def test_a_truncated_mapped_array_fails_a_quick_open(tmp_path):
    build(tmp_path, "flat")
    path = tmp_path / "c" / "vectors.2.npy"
    path.write_bytes(path.read_bytes()[: -DIM * 4])
    with pytest.raises(CorruptFileError, match="vectors.2.npy.*size"):
        Engine(tmp_path, verify="quick").open_collection("c")


def test_verify_on_a_clean_collection(tmp_path, capsys):
    build(tmp_path, "hnsw")
    col = Engine(tmp_path, verify="quick").open_collection("c")
    assert col.verify() > 300 * DIM * 4  # vectors, rows, graph, labels
    col.close()
    assert cli.main(["verify", "--data", str(tmp_path), "--collection", "c"]) == 0
    assert "c: ok" in capsys.readouterr().out
    assert cli.main(["verify", "--data", str(tmp_path), "--collection", "nope"]) == 2


def test_bad_verify_mode(tmp_path):
    with pytest.raises(ValueError, match="verify must be one of full, quick"):
        Engine(tmp_path, verify="lazy")


def test_a_rows_table_holding_an_id_twice_is_corrupt(tmp_path):
    """A crafted rows table (manifest checksums updated) with one id under two labels."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from index import storage

    build(tmp_path, "flat")
    d = tmp_path / "c"
    rows = d / "rows.2.parquet"
    table = pq.read_table(rows)
    ids = table.column("_id").to_pylist()
    ids[7] = ids[3]
    pq.write_table(table.set_column(1, "_id", pa.array(ids, pa.string())), rows)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["files"]["rows.2.parquet"] = storage.file_entry(rows)
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptFileError, match=r"rows.2.parquet: id 'd3' is held twice"):
        Engine(tmp_path).open_collection("c")
