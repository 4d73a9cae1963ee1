"""The end of ``make demo``: serve the sample collection with ``vecdex serve`` and query it
through ``server.Client``, checking that the answers are the embedded engine's.

    python -m server.demo [--data DIR]
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
from collections.abc import Callable
from pathlib import Path

from engine import Engine, beir
from engine.demo import SAMPLE, hashed_tfidf

from .client import Client


def run(data: str | None = None, out: Callable[[str], None] = print) -> bool:
    """Builds the sample collection, serves it, queries it remotely; True if all answers agree."""
    tmp = tempfile.TemporaryDirectory(prefix="vecdex-serve-demo-") if data is None else None
    root = Path(tmp.name if tmp is not None else str(data))
    corpus = beir.read_jsonl(SAMPLE / "corpus.jsonl")
    queries = beir.read_jsonl(SAMPLE / "queries.jsonl")
    docs, idf = hashed_tfidf([beir.document_text(d) for d in corpus])
    qv, _ = hashed_tfidf([q["text"] for q in queries], idf=idf)
    with Engine(root) as eng:
        if "sample" in eng.list_collections():
            eng.drop_collection("sample")
        col = eng.create_collection("sample", dim=docs.shape[1], index="hnsw")
        col.add(
            [d["_id"] for d in corpus],
            docs,
            [{"title": d["title"], "words": len(d["text"].split())} for d in corpus],
        )
        expected = col.search_batch(qv, k=5)
        expected_filtered = col.search(qv[0], k=3, where={"words": {"$gte": 250}})

    token = secrets.token_urlsafe(16)
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--data", str(root), "--port", "0"]
    out(f"\n$ VECDEX_TOKEN=... vecdex serve --data {root} --port 0")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "VECDEX_TOKEN": token}
    )
    try:
        if proc.stdout is None:  # pragma: no cover - stdout=PIPE above
            raise RuntimeError("no pipe to the server")
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline().strip() if ready else ""
        m = re.search(r"on (\S+:\d+)", line)
        if m is None:
            raise RuntimeError(f"the server did not start: {line!r}")
        out(line)
        with Client(m.group(1), token=token, timeout=30) as client:
            remote = client.open_collection("sample")
            out(f"client.list_collections() -> {client.list_collections()}; {remote!r}")
            q = queries[0]["text"]
            out(f"query: {q}")
            for hit in remote.search(qv[0], k=3):
                out(f"  {hit.score:.3f}  {hit.id:>9}  {hit.payload['title'][:64]}")
            filtered = remote.search(qv[0], k=3, where={"words": {"$gte": 250}})
            t0 = time.perf_counter()
            got = remote.search_batch(qv, k=5)
            ms = (time.perf_counter() - t0) * 1e3
            same = bool((got.ids == expected.ids).all()) and [h.id for h in filtered] == [
                h.id for h in expected_filtered
            ]
            out(
                f"search_batch of {len(qv)} queries over gRPC: {ms:.1f} ms; "
                f"identical to the embedded engine: {same}"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        out(f"SIGTERM: drained, checkpointed, exit code {rc}")
        if tmp is not None:
            tmp.cleanup()
    return same and rc == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="serve the sample collection and query it remotely")
    p.add_argument("--data", help="data directory (default: a temporary one)")
    args = p.parse_args(argv)
    return 0 if run(args.data) else 1


if __name__ == "__main__":
    sys.exit(main())
