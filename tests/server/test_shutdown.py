"""SIGTERM under load: in-flight calls finish or fail cleanly, acknowledged upserts survive.

The server runs as a real subprocess (``python -m engine.cli serve``) so that the signal, the
drain and the checkpoint on exit are the ones a deployment gets.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import grpc
import numpy as np

from engine import Engine
from server import Client

ROOT = Path(__file__).resolve().parents[2]
DIM = 8
CLEAN = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}  # refused while shutting down


def start(data: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "--data", str(data), "--port", "0",
         "--grace", "5", "--max-wait-ms", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "VECDEX_TOKEN": ""},
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            break
        if proc.poll() is not None:
            break
    m = re.search(r"on (127\.0\.0\.1:\d+)", line)
    if m is None:
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.communicate()[1][-2000:]}")
    return proc, m.group(1)


def vector(name: str) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(name.encode())).normal(size=DIM).astype(np.float32)


def test_sigterm_under_load_loses_no_acknowledged_write(tmp_path):
    data = tmp_path / "data"
    proc, address = start(data)
    try:
        with Client(address, timeout=20) as client:
            col = client.create_collection("docs", dim=DIM, index="hnsw")
            col.add(["seed"], [vector("seed")])

            acked: list[str] = []
            unexpected: list[str] = []
            searches = [0]
            stop = threading.Event()

            def writer(t: int) -> None:
                for n in range(10_000):
                    if stop.is_set():
                        return
                    key = f"w{t}-{n}"
                    try:
                        col.upsert([key], [vector(key)], [{"t": t, "n": n}])
                    except grpc.RpcError as e:
                        if e.code() not in CLEAN:
                            unexpected.append(f"upsert {key}: {e.code()} {e.details()}")
                        return
                    acked.append(key)

            def reader() -> None:
                while not stop.is_set():
                    try:
                        col.search(vector("seed"), k=5)
                    except grpc.RpcError as e:
                        if e.code() not in CLEAN:
                            unexpected.append(f"search: {e.code()} {e.details()}")
                        return
                    searches[0] += 1

            threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
            threads += [threading.Thread(target=reader) for _ in range(4)]
            for th in threads:
                th.start()
            deadline = time.monotonic() + 30
            while (len(acked) < 40 or searches[0] < 40) and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
            stop.set()
            for th in threads:
                th.join(30)
        err = proc.stderr.read() if proc.stderr else ""
        assert rc == 0, err[-3000:]
        assert not unexpected, unexpected[:5]
        assert len(acked) >= 40 and searches[0] >= 40
        assert "Traceback" not in err, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    # Restart: every acknowledged upsert is there, with its vector and payload.
    with Engine(data) as eng:
        col = eng.open_collection("docs")
        records = col.get(["seed", *acked])
        missing = [k for k, r in zip(["seed", *acked], records, strict=True) if r is None]
        assert not missing, f"{len(missing)} acknowledged upserts lost: {missing[:5]}"
        for key, rec in zip(acked, records[1:], strict=True):
            assert rec is not None
            np.testing.assert_array_equal(rec.vector, vector(key))
            t, n = key[1:].split("-")
            assert rec.payload == {"t": int(t), "n": int(n)}
