"""The ``vecdex`` command line: demo and info, run in-process and as a console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from engine import Engine, cli


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
    assert hybrid >= max(ndcg, lexical)  # dbsf fusion: 0.878 observed (weighted: 0.885)
    assert cli.main(["info", "--data", str(tmp_path), "--collection", "sample", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info[0]["count"] == 300 and info[0]["index"].startswith("hnsw:")


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert cli.main(["info", "--data", str(tmp_path), "--collection", "nope"]) == 2
    assert "collection 'nope' does not exist" in capsys.readouterr().err
    assert cli.main(["info", "--data", str(tmp_path), "--collection", "../x"]) == 2


def installed_vecdex() -> str:
    """The ``vecdex`` console script of this environment (``pip install -e .`` makes it)."""
    beside = Path(sys.executable).parent / "vecdex"
    found = str(beside) if beside.is_file() else shutil.which("vecdex")
    assert found, f"no vecdex console script beside {sys.executable} or on PATH: pip install -e ."
    return found


def test_console_script_runs(tmp_path):
    """The installed entry point (pyproject's [project.scripts]), not ``python -m engine.cli``."""
    vecdex = installed_vecdex()
    proc = subprocess.run([vecdex, "--help"], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("usage: vecdex ")
    assert "demo" in proc.stdout and "info" in proc.stdout and "serve" in proc.stdout
    # Its exit status is main()'s: 2 and a message on a user error.
    proc = subprocess.run(
        [vecdex, "info", "--data", str(tmp_path / "none")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no such data directory" in proc.stderr and str(tmp_path / "none") in proc.stderr
    # And it works on a real data directory.
    with Engine(tmp_path / "data") as eng:
        eng.create_collection("c", dim=4, index="flat").add(["a", "b"], np.eye(4)[:2])
    proc = subprocess.run(
        [vecdex, "info", "--data", str(tmp_path / "data"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(proc.stdout)
    assert [(c["name"], c["count"], c["dim"]) for c in info] == [("c", 2, 4)]
