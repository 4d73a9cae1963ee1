"""The serving half of `make demo` runs end to end: serve the sample, query it, shut down."""

from __future__ import annotations

from server.demo import run


def test_serve_demo(tmp_path):
    lines: list[str] = []
    assert run(str(tmp_path / "data"), out=lines.append)
    text = "\n".join(lines)
    assert "identical to the embedded engine: True" in text
    assert "exit code 0" in text
