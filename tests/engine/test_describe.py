"""``Collection.describe()["memory"]``: bytes in RAM and on disk per component, and the table
``vecdex info`` prints of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine import Engine, cli

DIM = 8


def data(n: int, seed: int = 1338) -> tuple[list[str], np.ndarray, list[dict], list[str]]:
    """Clustered vectors with payloads and short texts."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, DIM))
    x = (centres[rng.integers(0, 4, n)] + 0.3 * rng.normal(size=(n, DIM))).astype(np.float32)
    ids = [f"doc-{seed}-{i}" for i in range(n)]
    payloads = [{"year": 2000 + i % 20, "tag": "abc"[i % 3]} for i in range(n)]
    texts = [f"{'cat dog bird fish'.split()[i % 4]} number {i} sat on the mat" for i in range(n)]
    return ids, x, payloads, texts


def tokens(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(2 + i % 3, DIM)).astype(np.float32) for i in range(n)]


def files_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_disk(col, d: dict) -> None:
    """Every disk figure is the size of that component's files; together they are the directory."""
    mem, path, gen = d["memory"], col.path, col._generation
    assert sum(c["disk"] for c in mem.values()) == d["bytes_on_disk"] == files_size(path)
    items = ["vectors"] if "vectors" in mem else ["tokens", "offsets"]
    assert mem["vectors" if "vectors" in mem else "tokens"]["disk"] == sum(
        files_size(path / f"{name}.{gen}.npy") for name in items
    )
    assert mem["index"]["disk"] == files_size(path / f"index.{gen}")
    assert mem["ids"]["disk"] + mem["payloads"]["disk"] == files_size(path / f"rows.{gen}.parquet")
    assert mem["log"]["disk"] == files_size(path / "wal")
    assert mem["other"]["disk"] == files_size(path / "manifest.json") + files_size(path / ".lock")
    if "lexical" in mem:
        assert mem["lexical"]["disk"] == files_size(path / f"lexical.{gen}")
    for name in ("index", "lexical"):
        if name in mem:
            parts = mem[name]["parts"]
            assert sum(p["ram"] for p in parts.values()) == mem[name]["ram"]
            assert sum(p["disk"] for p in parts.values()) == mem[name]["disk"]


def test_flat_collection_components(tmp_path):
    eng = Engine(tmp_path)
    col = eng.create_collection("c", dim=DIM, index="flat", metric="cosine")
    ids, x, payloads, _ = data(300)
    col.add(ids[:200], x[:200], payloads[:200])
    d = col.describe()
    mem = d["memory"]
    assert list(mem) == ["vectors", "index", "ids", "payloads", "log", "other"]
    assert "tokens" not in mem and "lexical" not in mem
    assert mem["vectors"]["ram"] == 200 * DIM * 4  # float32 rows, nothing else
    assert mem["index"]["parts"]["vectors"]["ram"] == 200 * DIM * 4  # flat's own copy
    for name in ("index", "ids", "payloads"):
        assert mem[name]["ram"] > 0, name
    assert mem["log"]["disk"] > 0  # the adds are in the log, not yet in a checkpoint
    check_disk(col, d)

    col.add(ids[200:], x[200:], payloads[200:])
    grown = col.describe()["memory"]
    assert grown["vectors"]["ram"] == 300 * DIM * 4
    for name in ("index", "ids", "payloads"):
        assert grown[name]["ram"] > mem[name]["ram"], name
    assert grown["log"]["disk"] > mem["log"]["disk"]

    col.flush()  # a checkpoint: the items move from the log into files
    d = col.describe()
    for name in ("vectors", "index", "ids", "payloads"):
        assert d["memory"][name]["disk"] > 0, name
    # Checkpointed rows are memory-mapped: the store's and flat's own copy leave RAM...
    assert d["memory"]["vectors"]["ram"] == 0
    assert d["memory"]["index"]["parts"]["vectors"]["ram"] == 0
    assert d["memory"]["log"]["disk"] == 0
    check_disk(col, d)
    json.dumps(d)  # plain ints and strings all the way down
    col.add(["new"], x[:1])  # ...and only writes since the checkpoint come back into it
    d = col.describe()
    assert d["memory"]["vectors"]["ram"] == DIM * 4
    assert d["memory"]["index"]["parts"]["vectors"]["ram"] == DIM * 4
    eng.close()


@pytest.mark.parametrize(
    "spec, parts",
    [
        ("hnsw:M=8,ef_construction=40", {"graph", "labels", "manifest"}),
        ("ivf:nlist=4,pq=2,nbits=4", {"centroids", "codes", "lists", "codebooks", "labels"}),
        ("ivf:nlist=64", {"buffer", "labels", "manifest"}),  # not trained yet: exact rows
    ],
)
def test_index_parts(tmp_path, spec, parts):
    eng = Engine(tmp_path)
    col = eng.create_collection("c", dim=DIM, index=spec, metric="l2")
    ids, x, payloads, _ = data(700)  # past IVF-PQ's training size (39 * 2**4), not nlist=64's
    col.add(ids, x, payloads)
    col.flush()
    d = col.describe()
    got = d["memory"]["index"]["parts"]
    assert parts <= set(got), got
    for p in parts - {"manifest"}:
        assert got[p]["ram"] > 0, p
    if spec.startswith("hnsw"):
        # hnswlib's documented floor: the vector and 2*M level-0 links per element.
        assert got["graph"]["ram"] >= 700 * (DIM * 4 + 2 * 8 * 4)
        assert got["graph"]["disk"] == files_size(col.path / f"index.{col._generation}/graph.bin")
    if "codes" in parts:
        assert got["codes"]["ram"] == 700  # pq=2 sub-quantizers of 4 bits: a byte a vector
    check_disk(col, d)
    eng.close()


def test_lexical_component_only_with_a_lexical_index(tmp_path):
    eng = Engine(tmp_path)
    ids, x, payloads, texts = data(120)
    plain = eng.create_collection("plain", dim=DIM, index="flat")
    plain.add(ids, x, payloads)
    assert "lexical" not in plain.describe()["memory"]
    col = eng.create_collection("lex", dim=DIM, index="hnsw", lexical=True)
    col.add(ids, x, payloads, texts=texts)
    before = col.describe()["memory"]["lexical"]
    assert before["ram"] > 0  # the documents are in the log; disk holds the empty index
    col.flush()
    d = col.describe()
    lex = d["memory"]["lexical"]
    assert lex["disk"] > before["disk"]
    assert set(lex["parts"]) == {"documents", "scores", "vocabulary", "manifest"}
    for p in ("documents", "scores", "vocabulary"):
        assert lex["parts"][p]["ram"] > 0 and lex["parts"][p]["disk"] > 0, p
    check_disk(col, d)
    eng.close()


def test_multi_vector_collection_reports_tokens(tmp_path):
    eng = Engine(tmp_path)
    col = eng.create_collection("mv", dim=DIM, index="muvera:k_sim=2,d_proj=4,r_reps=2,inner=flat")
    sets = tokens(50)
    n_tokens = sum(t.shape[0] for t in sets)
    col.add([f"d{i}" for i in range(50)], sets)
    mem = col.describe()["memory"]
    assert "vectors" not in mem
    assert mem["tokens"]["ram"] == n_tokens * DIM * 4 + 51 * 8  # float32 tokens and offsets
    parts = mem["index"]["parts"]
    assert parts["tokens"]["ram"] == n_tokens * DIM * 2 + 51 * 8  # the index's float16 copy
    assert {"fde", "inner_vectors", "inner_labels"} <= set(parts)
    eng.close()

    # Reopened, the tokens are memory-mapped: disk-backed, so RAM holds only their offsets.
    ro = Engine(tmp_path, read_only=True).open_collection("mv")
    d = ro.describe()
    assert d["memory"]["tokens"]["ram"] == 51 * 8
    assert d["memory"]["index"]["parts"]["tokens"]["ram"] == 51 * 8
    assert d["memory"]["tokens"]["disk"] > n_tokens * DIM * 4
    check_disk(ro, d)


def test_info_prints_the_table(tmp_path, capsys):
    eng = Engine(tmp_path)
    col = eng.create_collection("docs", dim=DIM, index="hnsw", lexical=True)
    ids, x, payloads, texts = data(60)
    col.add(ids, x, payloads, texts=texts)
    eng.close()
    assert cli.main(["info", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["component", "RAM", "disk"])
    rows = [line.split()[0] for line in lines[header + 1 :]]
    assert rows[:3] == ["vectors", "index", "graph"]
    for name in ("ids", "payloads", "lexical", "scores", "vocabulary", "log", "other", "total"):
        assert name in rows, name
    assert cli.main(["info", "--data", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    mem = info[0]["memory"]
    assert mem["vectors"]["ram"] == 0  # opened from a checkpoint: memory-mapped
    assert mem["vectors"]["disk"] == 60 * DIM * 4 + 128  # and on disk (a .npy header)
    assert sum(c["disk"] for c in mem.values()) == info[0]["bytes_on_disk"]
