"""fast-plaid's side of ``bench.plaid``: runs in the benchmark's own virtual environment
(``bench/.venv-plaid``, torch==2.11.0 as fast-plaid pins it), so it imports numpy, torch and
fast_plaid only, never vecdex.

Reads the token sets ``bench.plaid`` exported (``docs.tokens.npy`` float16 + ``docs.offsets.npy``
int64; the same for queries), builds a fast-plaid index on the CPU, then for each setting
(n_ivf_probe, n_full_scores) searches every query in one call (batched) and one query per call
(latency), and writes the top-10 document numbers and the timings as JSON.

Usage (by bench.plaid): bench/.venv-plaid/bin/python bench/plaid_worker.py DIR OUT.json
    --settings 1:256,2:512 [--threads 2] [--nbits 4] [--single N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from fast_plaid import search


def token_sets(directory: Path, name: str) -> list[torch.Tensor]:
    tokens = np.load(directory / f"{name}.tokens.npy", allow_pickle=False)
    offsets = np.load(directory / f"{name}.offsets.npy", allow_pickle=False)
    x = torch.from_numpy(tokens.astype(np.float32))
    return [x[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def top(results: list[list[tuple[int, float]]], k: int) -> list[list[int]]:
    return [[int(doc) for doc, _ in r[:k]] for r in results]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--settings", default="1:256,2:512,4:1024,8:4096")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nbits", type=int, default=4)
    p.add_argument("--single", type=int, default=0, help="queries timed one per call (0: all)")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    docs = token_sets(args.dir, "docs")
    queries = token_sets(args.dir, "queries")
    index_dir = args.dir / "plaid-index"
    shutil.rmtree(index_dir, ignore_errors=True)
    t0 = time.perf_counter()
    index = search.FastPlaid(index=str(index_dir), device="cpu")
    index.create(documents_embeddings=docs, nbits=args.nbits, seed=42)
    build_s = time.perf_counter() - t0
    out: dict = {
        "fast_plaid": getattr(search, "__version__", None) or os.environ.get("PLAID_VERSION"),
        "torch": torch.__version__,
        "threads": args.threads,
        "nbits": args.nbits,
        "documents": len(docs),
        "queries": len(queries),
        "build_s": round(build_s, 2),
        "index_bytes": dir_bytes(index_dir),
        "settings": [],
    }
    single = queries[: args.single or len(queries)]
    for text in args.settings.split(","):
        probe, full = (int(v) for v in text.split(":"))
        opts = {"top_k": args.k, "n_ivf_probe": probe, "n_full_scores": full}
        index.search(queries[:2], show_progress=False, **opts)  # warm-up
        t0 = time.perf_counter()
        batched = index.search(queries, show_progress=False, **opts)
        batch_s = time.perf_counter() - t0
        times = []
        one_by_one = []
        for q in single:
            t0 = time.perf_counter()
            r = index.search([q], show_progress=False, **opts)
            times.append(time.perf_counter() - t0)
            one_by_one.append(r[0])
        out["settings"].append(
            {
                "n_ivf_probe": probe,
                "n_full_scores": full,
                "batch_ms_per_query": round(1000 * batch_s / len(queries), 3),
                "single_p50_ms": round(1000 * statistics.median(times), 3),
                "single_p99_ms": round(1000 * float(np.percentile(times, 99)), 3),
                "top": top(batched, args.k),
                "single_equals_batched": top(one_by_one, args.k)
                == top(batched, args.k)[: len(single)],
            }
        )
        print(f"plaid probe={probe} full={full}: {out['settings'][-1]['single_p50_ms']} ms")
    args.out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
