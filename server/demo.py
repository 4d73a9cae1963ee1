"""The end of ``make demo``: serve the collection that ``vecdex demo`` just built (the SciFact
sample, encoded with MiniLM) with ``vecdex serve``, and ask it the first half's text query through
``server.Client``. The server encodes the query with the collection's encoder, so the hits and
scores printed here are the first half's; the demo checks that every answer over gRPC is the
embedded engine's.

    vecdex demo --data DIR && python -m server.demo --data DIR   # what `make demo` runs
    python -m server.demo                  # builds the sample collection in a temporary directory
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Container, Sequence
from pathlib import Path

import numpy as np

from engine import Engine, Hit, SearchResult, beir
from engine.demo import SAMPLE

from .client import Client

COLLECTION = "sample"
WHERE = {"title": {"$gte": "M"}}  # vecdex demo's filtered query
SCORE_TOL = 1e-4  # the server encodes queries in its own batches: float32 rounding apart


def same_hits(a: Sequence[Hit], b: Sequence[Hit]) -> bool:
    return [h.id for h in a] == [h.id for h in b] and bool(
        np.allclose([h.score for h in a], [h.score for h in b], rtol=0, atol=SCORE_TOL)
    )


def same_result(a: SearchResult, b: SearchResult) -> bool:
    return bool((a.ids == b.ids).all()) and bool(
        np.allclose(a.scores, b.scores, rtol=0, atol=SCORE_TOL)
    )


def show(hits: Sequence[Hit], out: Callable[[str], None], relevant: Container[str] = ()) -> None:
    """One line per hit, as ``vecdex demo`` prints them (it marks the judged ones of its first
    query, not of the filtered one)."""
    for hit in hits:
        rel = "  <- relevant" if hit.id in relevant else ""
        out(f"  {hit.score:.3f}  {hit.id:>9}  {hit.payload['title'][:64]}{rel}")


def run(data: str | None = None, out: Callable[[str], None] = print) -> bool:
    """Serves ``data``'s sample collection (built first when absent) and queries it remotely;
    True if every answer over gRPC is the embedded engine's and the server exits cleanly."""
    tmp = tempfile.TemporaryDirectory(prefix="vecdex-serve-demo-") if data is None else None
    root = Path(tmp.name if tmp is not None else str(data))
    queries = beir.read_jsonl(SAMPLE / "queries.jsonl")
    qrels = beir.read_qrels(SAMPLE / "qrels.tsv")
    texts = [q["text"] for q in queries]
    query, relevant = texts[0], qrels.get(queries[0]["_id"], {})

    # The embedded engine's answers, over the collection the first half built.
    with Engine(root) as eng:
        names = eng.list_collections()
        if COLLECTION not in names or "encoder" not in eng.open_collection(COLLECTION).config():
            from engine.ingest import ingest

            out(f"(no text collection {COLLECTION!r} in {root}: indexing the sample first)")
            ingest(eng, SAMPLE, COLLECTION, encoder="default", index="hnsw", overwrite=True)
        col = eng.open_collection(COLLECTION)
        expected = col.search(query, k=3)
        expected_filtered = col.search(query, k=3, where=WHERE)
        expected_batch = col.search_batch(texts, k=10)

    token = secrets.token_urlsafe(16)
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--data", str(root), "--port", "0"]
    out(f"\n$ VECDEX_TOKEN=... vecdex serve --data {root} --port 0")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "VECDEX_TOKEN": token}
    )
    same = False
    try:
        if proc.stdout is None:  # pragma: no cover - stdout=PIPE above
            raise RuntimeError("no pipe to the server")
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline().strip() if ready else ""
        m = re.search(r"on (\S+:\d+)", line)
        if m is None:
            raise RuntimeError(f"the server did not start: {line!r}")
        out(line)
        with Client(m.group(1), token=token, timeout=60) as client:
            remote = client.open_collection(COLLECTION)
            out(f"client.list_collections() -> {client.list_collections()}; {remote!r}")
            out(f'remote.search("{query}", k=3)  # a text query: the server encodes it')
            hits = remote.search(query, k=3)
            show(hits, out, relevant)
            out(f"same query, where={WHERE}:")
            filtered = remote.search(query, k=3, where=WHERE)
            show(filtered, out)
            t0 = time.perf_counter()
            got = remote.search_batch(texts, k=10)
            ms = (time.perf_counter() - t0) * 1e3
            out(f"search_batch of {len(texts)} claims (texts) over gRPC: {ms:.0f} ms")
            same = (
                same_hits(hits, expected)
                and same_hits(filtered, expected_filtered)
                and same_result(got, expected_batch)
            )
            out(
                "the same hits and scores as the embedded engine (vecdex demo above), "
                f"to {SCORE_TOL:g}: {same}"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        out(f"SIGTERM: drained, checkpointed, exit code {rc}")
        if tmp is not None:
            tmp.cleanup()
    return same and rc == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="serve the demo's collection and query it remotely")
    p.add_argument(
        "--data", help="the data directory that `vecdex demo --data` built (default: a new one)"
    )
    args = p.parse_args(argv)
    return 0 if run(args.data) else 1


if __name__ == "__main__":
    sys.exit(main())
