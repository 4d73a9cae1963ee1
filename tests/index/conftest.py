"""Shared fixtures for the index tests: seeded synthetic data and a numpy brute-force oracle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import index


def clustered(
    n: int,
    dim: int,
    *,
    seed: int,
    n_queries: int = 0,
    n_centres: int = 100,
    latent: int = 10,
    noise: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered data "not completely random but still challenging" (after FAISS
    ``SyntheticDataset``): ``n_centres`` gaussian centres; around each, points on its own
    ``latent``-dimensional random subspace (FAISS uses a 10-d latent too) plus isotropic noise.
    Centres are N(0, I) and the within-cluster spread is about 1 per coordinate, so clusters
    overlap. Queries come from the same distribution but are held out of the base.

    Returns:
        ``(base (n, dim), queries (n_queries, dim))``, float32.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_centres, dim))
    maps = rng.normal(size=(n_centres, latent, dim)) / np.sqrt(latent)

    def draw(m: int) -> np.ndarray:
        c = rng.integers(0, n_centres, m)
        z = rng.normal(size=(m, 1, latent))
        x = centres[c] + (z @ maps[c])[:, 0] + noise * rng.normal(size=(m, dim))
        return x.astype(np.float32)

    return draw(n), draw(n_queries)


def brute_force(
    base: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The numpy oracle (float64, one big matmul): ``(scores (m, k), labels (m, k))``, padded."""
    b = np.asarray(base, dtype=np.float64)
    q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    if metric == "cosine":
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-30)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
    s = q @ b.T
    if metric == "l2":
        s = 2 * s - (q * q).sum(1)[:, None] - (b * b).sum(1)[None, :]
    out_s = np.full((q.shape[0], k), -np.inf)
    out_l = np.full((q.shape[0], k), -1, dtype=np.int64)
    kk = min(k, b.shape[0])
    if kk:
        order = np.argsort(-s, axis=1, kind="stable")[:, :kk]
        out_s[:, :kk] = np.take_along_axis(s, order, axis=1)
        out_l[:, :kk] = np.asarray(labels, dtype=np.int64)[order]
    return out_s, out_l


@pytest.fixture(scope="session")
def make_clustered() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    return clustered


@pytest.fixture(scope="session")
def oracle() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    return brute_force


@pytest.fixture(scope="session")
def recall_of() -> Callable[[np.ndarray, np.ndarray], float]:
    """The library's recall@k against the oracle (true labels found, -1 padding not counted)."""
    return index.recall_at_k


@pytest.fixture
def build() -> Callable[..., index.Index]:
    """``build(spec, vectors, labels, metric=...)``: an index of ``spec`` holding the vectors."""

    def make(spec: str, vectors: np.ndarray, labels: np.ndarray, metric: str = "l2") -> index.Index:
        idx = index.from_spec(spec, dim=vectors.shape[1], metric=metric)
        idx.add(vectors, labels)
        return idx

    return make


# Per job ``[name, directory]``: load the index, search it plainly and filtered to its first
# ``allowed`` labels, add to it; print ``{"name", "error", "message"}`` as one JSON line.
_LOAD_AND_USE = r"""
import json, sys
import numpy as np
import index
allowed = int(sys.argv[1])
for name, path in json.load(sys.stdin):
    try:
        idx = index.load(path)
        q = np.random.default_rng(0).normal(size=(5, idx.dim))
        idx.search(q, 10)
        idx.search(q, 3, allowed=idx.labels()[:allowed])
        idx.add(np.random.default_rng(1).normal(size=(20, idx.dim)), np.arange(10**6, 10**6 + 20))
        out = {"name": name, "error": None, "message": ""}
    except Exception as e:
        out = {"name": name, "error": type(e).__name__, "message": str(e)}
    print(json.dumps(out), flush=True)
"""


def _run_in_child(jobs: list[list[str]], allowed: int) -> dict[str, dict]:
    """Loads and uses each job's saved index (``_LOAD_AND_USE``) in a child process. A native
    crash is recorded against the job it hit (``error: "CRASH"``) and the child restarts after
    it, so a crafted file that crashes a library fails its case instead of killing pytest."""
    env = {**os.environ, "PYTHONPATH": str(Path(index.__file__).parent.parent)}
    results: dict[str, dict] = {}
    while jobs:
        proc = subprocess.run(
            [sys.executable, "-c", _LOAD_AND_USE, str(allowed)],
            input=json.dumps(jobs),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        results.update((r["name"], r) for r in map(json.loads, proc.stdout.splitlines()))
        jobs = [job for job in jobs if job[0] not in results]
        if proc.returncode != 0 and jobs:
            crash = f"the child process died (rc={proc.returncode}): {proc.stderr[-500:]}"
            results[jobs[0][0]] = {"name": jobs[0][0], "error": "CRASH", "message": crash}
            jobs = jobs[1:]
        elif jobs:
            pytest.fail(f"the child skipped {jobs}: rc={proc.returncode} {proc.stderr[-2000:]}")
    return results


@pytest.fixture(scope="session")
def run_in_child() -> Callable[[list[list[str]], int], dict[str, dict]]:
    return _run_in_child


def _craft(directory: Path, name: str, array: np.ndarray) -> None:
    """Rewrites ``name`` in a saved index directory with valid .npy bytes and a matching checksum
    in its ``index.json``: only the index's own validation can stop it."""
    from index import storage

    np.save(directory / name, array)
    manifest = json.loads((directory / "index.json").read_text())
    manifest["files"][name] = storage.file_entry(directory / name)
    (directory / "index.json").write_text(json.dumps(manifest))


@pytest.fixture()
def craft() -> Callable[[Path, str, np.ndarray], None]:
    return _craft
