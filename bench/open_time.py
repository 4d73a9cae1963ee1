"""Open time against collection size: ``verify="full"`` (every file's SHA-256 at open) vs
``"quick"`` (memory-mapped arrays checked by size and shape; ``Collection.verify()`` hashes them
on demand).

Flat collections of seeded random 128-d vectors (the collection's vectors and flat's own copy
are both memory-mapped, so a quick open skips hashing both). Each open runs in a fresh
subprocess and is timed to the first answer; the page cache is warm (the files were just
written), so the figures are the hashing cost, not the disk's.

    python -m bench.open_time [--sizes 125000,500000,2000000] [--out bench/results/open_time.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import RESULTS, dir_bytes, json_default, log, machine_info, positive_ints

DIM = 128
BATCH = 50_000

_OPEN = """
import sys, time
import numpy as np
from engine import Engine
t0 = time.perf_counter()
col = Engine(sys.argv[1], read_only=True, verify=sys.argv[2]).open_collection("c")
t1 = time.perf_counter()
col.search(np.ones(int(sys.argv[3]), dtype=np.float32), k=10)
t2 = time.perf_counter()
if sys.argv[2] == "quick":
    col.verify()
t3 = time.perf_counter()
print(t1 - t0, t2 - t0, t3 - t2)
"""


def build(path: Path, n: int) -> float:
    from engine import Engine

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    eng = Engine(path)
    col = eng.create_collection("c", dim=DIM, index="flat")
    for a in range(0, n, BATCH):
        b = min(n, a + BATCH)
        col.add([f"d{i}" for i in range(a, b)], rng.standard_normal((b - a, DIM), np.float32))
    eng.close()
    return time.perf_counter() - start


def open_once(path: Path, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _OPEN, str(path), mode, str(DIM)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    opened, answered, verified = map(float, out)
    row = {"open_s": opened, "first_answer_s": answered}
    if mode == "quick":
        row["verify_s"] = verified
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=positive_ints, default=(125_000, 500_000, 2_000_000))
    p.add_argument("--out", type=Path, default=RESULTS / "open_time.json")
    args = p.parse_args(argv)
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="vecdex-open-") as tmp:
            path = Path(tmp)
            log(f"building {n:,} x {DIM} flat")
            build_s = build(path, n)
            size = dir_bytes(path / "c")
            row: dict[str, object] = {"n": n, "bytes_on_disk": size, "build_s": build_s}
            for mode in ("full", "quick"):
                open_once(path, mode)  # warm the page cache and the imports
                row[mode] = min(
                    (open_once(path, mode) for _ in range(3)), key=lambda r: r["open_s"]
                )
            full, quick = row["full"], row["quick"]
            assert isinstance(full, dict) and isinstance(quick, dict)
            row["full_hash_gb_per_s"] = size / 1e9 / max(full["open_s"] - quick["open_s"], 1e-9)
            log(
                f"{n:,}: {size / 1e9:.2f} GB; open full {full['open_s']:.2f} s, "
                f"quick {quick['open_s']:.2f} s, verify() {quick['verify_s']:.2f} s"
            )
            rows.append(row)
    result = {"machine": machine_info(), "dim": DIM, "index": "flat", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=json_default) + "\n")
    print("| vectors | on disk | open (full) | open (quick) | first answer (quick) | verify() |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        f, q = r["full"], r["quick"]
        assert isinstance(f, dict) and isinstance(q, dict)
        print(
            f"| {r['n']:,} | {int(r['bytes_on_disk']) / 1e9:.2f} GB | {f['open_s']:.2f} s | "  # type: ignore[call-overload]
            f"{q['open_s']:.2f} s | {q['first_answer_s']:.2f} s | {q['verify_s']:.2f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
