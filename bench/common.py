"""What the benchmarks share: the machine a run was measured on, caches under ``bench/.cache``,
timing and the JSON they write. Nothing here imports another benchmark module, so any of them may
import it (no cycles)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CACHE_ROOT = ROOT / "bench" / ".cache"
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"  # the data README's SciFact (BEIR)
BASE_DISTS = ("vecdex", "numpy", "torch")  # every machine record lists these versions


# ---- the machine ---------------------------------------------------------------------------------
def dist_version(dist: str) -> str:
    """The installed version of a distribution, or ``"not installed"``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def git_head(short: bool = False) -> str:
    """The commit checked out ("" outside a git checkout)."""
    return _git("rev-parse", *(["--short"] if short else []), "HEAD").strip()


def git_changes(*paths: str) -> list[str]:
    """Files that differ from HEAD (under ``paths``, or anywhere): a shared tree may hold other
    sessions' uncommitted work, which the timings then include."""
    out = _git("status", "--porcelain=v1", *(["--", *paths] if paths else []))
    return [line[3:] for line in out.splitlines() if line.strip()]


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def memory_gib() -> float:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def machine_info(dists: Sequence[str] = ()) -> dict[str, Any]:
    """The machine, its load, the checkout and library versions (``BASE_DISTS`` + ``dists``):
    one record shape for every benchmark's ``"machine"`` entry."""
    import faiss
    import torch

    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # psutil is in the [bench] extra
        physical = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": physical,
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": memory_gib(),
        "load_average_at_end": load_average(),
        "gpu": gpu_name(),
        "vecdex_git": {
            "commit": git_head(),
            "uncommitted_outside_bench": [f for f in git_changes() if not f.startswith("bench/")],
        },
        "threads": {"torch": torch.get_num_threads(), "faiss_omp": faiss.omp_get_max_threads()},
        "versions": {d: dist_version(d) for d in dict.fromkeys([*BASE_DISTS, *dists])},
    }


class LoadSampler:
    """Samples the 1-minute load average every few seconds in a daemon thread (a shared machine's
    load explains slow runs)."""

    def __init__(self, every: float = 10.0) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, Any]:
        self._stop.set()
        s = sorted(self.samples)
        return {
            "samples": len(s),
            "median_1min": round(statistics.median(s), 2),
            "min_1min": round(s[0], 2),
            "max_1min": round(s[-1], 2),
            "cores": os.cpu_count(),
        }


# ---- caches --------------------------------------------------------------------------------------
def cache_dir(name: str) -> Path:
    """``bench/.cache/NAME`` (created)."""
    path = CACHE_ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_digest(*paths: Path, length: int = 16) -> str:
    """SHA-256 of the files' contents, streamed: a cache key that follows the data."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:length]


def _save_npy(path: Path, arr: np.ndarray) -> None:
    """Atomic: a killed run never leaves a truncated cache entry behind."""
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr, allow_pickle=False)
    os.replace(tmp, path)


def cached_array(path: Path, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, float | None]:
    """``path`` (a ``.npy``) if it exists, else ``compute()`` saved there; also the seconds
    ``compute`` took (None when read from the cache). Never pickle."""
    if path.exists():
        return np.load(path, allow_pickle=False), None
    path.parent.mkdir(parents=True, exist_ok=True)
    x, seconds = timed(compute)
    x = np.asarray(x)
    _save_npy(path, x)
    return x, seconds


def pack(sets: Sequence[np.ndarray], dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Token sets -> (all tokens (N, d), int64 offsets (n + 1,))."""
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sets], out=offsets[1:])
    return np.concatenate(sets).astype(dtype), offsets


def split(tokens: np.ndarray, offsets: np.ndarray, n: int | None = None) -> list[np.ndarray]:
    """Views of the first ``n`` token sets (float16 stays float16; the indexes convert)."""
    n = offsets.shape[0] - 1 if n is None else n
    return [tokens[offsets[i] : offsets[i + 1]] for i in range(n)]


def cached_token_sets(
    directory: Path, key: str, compute: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Packed token sets cached as ``KEY.tokens.npy`` (float16: as stored, so a cached rerun
    scores identically) + ``KEY.offsets.npy`` (int64) + ``KEY.json`` (how long ``compute`` took;
    ``"cached": True`` when read back; an entry written without it reads back as ``{}``)."""
    directory.mkdir(parents=True, exist_ok=True)
    tpath, opath, mpath = (directory / f"{key}.{s}" for s in ("tokens.npy", "offsets.npy", "json"))
    if tpath.exists() and opath.exists():
        meta = json.loads(mpath.read_text()) if mpath.exists() else {}
        tokens = np.load(tpath, allow_pickle=False)
        offsets = np.load(opath, allow_pickle=False)
        return tokens, offsets, {**meta, "cached": True}
    (tokens, offsets), seconds = timed(compute)
    tokens = np.ascontiguousarray(tokens, dtype=np.float16)
    _save_npy(tpath, tokens)
    _save_npy(opath, offsets)
    meta = {
        "compute_s": round(seconds, 2),
        "sets": int(offsets.shape[0] - 1),
        "tokens": int(tokens.shape[0]),
        "load_average_when_computed": load_average(),
    }
    mpath.write_text(json.dumps(meta))
    return tokens, offsets, {**meta, "cached": False}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---- timing --------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def percentile(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


def summary_ms(ns: Sequence[int]) -> dict[str, float]:
    """Median, p95 and mean in milliseconds of per-call nanoseconds."""
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    return {
        "median_ms": round(float(np.median(ms)), 4),
        "p95_ms": round(percentile(ms, 95), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "n": int(ms.size),
    }


def log(msg: str) -> None:
    """A progress line stamped with the time and the load average."""
    load = ",".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"[{time.strftime('%H:%M:%S')} load {load}] {msg}", flush=True)


# ---- command line and output ---------------------------------------------------------------------
def positive_ints(text: str) -> tuple[int, ...]:
    """An argparse type: ``"1,2,4"`` -> ``(1, 2, 4)``, each at least 1."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays, paths and tuples."""
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def write_choice_report(path: Path, report: dict[str, Any], started: float) -> None:
    """Writes a benchmark that chose a setting on train queries (``report["chosen_on_train"]``,
    ``report["chosen_test"]``), with the machine and the wall time, and logs the choice."""
    report = {**report, "machine": machine_info(), "wall_s": round(time.time() - started, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=json_default))
    log(f"chosen on train: {report['chosen_on_train']}; test {report['chosen_test']}; wrote {path}")


def write_load_report(
    name: str,
    argv: Sequence[str] | None,
    args: Any,
    info: dict[str, Any],
    summary: dict[str, Any],
    rows: Sequence[Any],
    drop: Sequence[str] = (),
) -> None:
    """``args.out`` <- one server benchmark's JSON: its command, machine, parameters (paths as
    text, ``drop`` left out), summary and rows (dataclasses)."""
    import dataclasses
    import sys

    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    for key in drop:
        params.pop(key, None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": name,
        "command": f"python -m bench.{name} " + " ".join(argv or sys.argv[1:]),
        "machine": info,
        "params": params,
        "summary": summary,
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


def start_serve(data: Path, *options: str, timeout: float = 300) -> tuple[Any, str]:
    """``vecdex serve --data DATA --port 0 OPTIONS`` in a child process, without a token; waits
    for its "serving ... on ADDRESS" line. Returns (process, address)."""
    import os
    import re
    import select
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "engine.cli", "serve", "--data", str(data), "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "VECDEX_TOKEN": ""},
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    m = re.search(r"on (127\.0\.0\.1:\d+)", line)
    if m is None:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, m.group(1)


def work_dir(given: Path | None, prefix: str) -> tuple[Path, Any]:
    """A benchmark's working directory: ``given`` (created if missing, kept), or a new temporary
    one. Returns (directory, the temporary directory to ``cleanup()``, or None)."""
    import tempfile

    if given is None:
        tmp = tempfile.TemporaryDirectory(prefix=prefix)
        return Path(tmp.name), tmp
    given.mkdir(parents=True, exist_ok=True)
    return given, None
