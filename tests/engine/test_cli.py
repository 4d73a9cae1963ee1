"""The ``vecdex`` command line: demo and info, run in-process and as a console script."""

from __future__ import annotations

import json
import subprocess
import sys

from engine import cli


def test_demo_indexes_searches_and_reopens(tmp_path, capsys):
    assert cli.main(["demo", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "indexed 300 items from 300 rows" in out
    assert "identical results: True" in out
    recall = float(out.split("recall@10 vs exact ")[1].split(";")[0])
    assert recall >= 0.95  # 1.000 observed
    ndcg = float(out.split("nDCG@10 ")[1].split()[0])
    assert ndcg >= 0.75  # MiniLM on the 300-document sample: 0.817 observed
    line = out.split("--mode lexical | hybrid: ")[1].splitlines()[0]
    lexical = float(line.split("lexical (BM25) ")[1].split(",")[0])
    hybrid = float(line.split(") ")[-1])
    assert lexical >= 0.8  # bm25s on the sample: 0.844 observed
    assert hybrid >= max(ndcg, lexical)  # weighted fusion: 0.885 observed
    assert cli.main(["info", "--data", str(tmp_path), "--collection", "sample", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info[0]["count"] == 300 and info[0]["index"].startswith("hnsw:")


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert cli.main(["info", "--data", str(tmp_path), "--collection", "nope"]) == 2
    assert "collection 'nope' does not exist" in capsys.readouterr().err
    assert cli.main(["info", "--data", str(tmp_path), "--collection", "../x"]) == 2


def test_console_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in proc.stdout and "info" in proc.stdout
