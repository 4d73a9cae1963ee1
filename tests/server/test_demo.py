"""`make demo`'s two halves agree: `vecdex demo --data DIR` indexes the sample with MiniLM and
searches it; `python -m server.demo --data DIR` serves that collection and asks the same text query
over gRPC, and must print the same hits with the same scores."""

from __future__ import annotations

from engine import cli
from server.demo import run


def hit_lines(lines: list[str], marker: str) -> list[str]:
    """The three hit lines printed after the first line that contains ``marker``."""
    start = next(i for i, line in enumerate(lines) if marker in line) + 1
    hits = lines[start : start + 3]
    assert len(hits) == 3 and all(h.startswith("  0.") for h in hits), hits
    return hits


def test_demo_halves_agree(tmp_path, capsys):
    data = str(tmp_path / "data")
    assert cli.main(["demo", "--data", data]) == 0
    first = capsys.readouterr().out.splitlines()
    served: list[str] = []
    assert run(data, out=served.append)
    text = "\n".join(served)
    assert "no text collection" not in text  # it served the collection the first half built
    # The same text query, embedded and over gRPC: the same hits, scores and titles.
    assert hit_lines(served, "remote.search(") == hit_lines(first, "$ vecdex search")
    assert hit_lines(served, "same query, where=") == hit_lines(first, "same query, where=")
    assert "the same hits and scores as the embedded engine (vecdex demo above)" in text
    assert text.count(": True") == 1 and "exit code 0" in text
