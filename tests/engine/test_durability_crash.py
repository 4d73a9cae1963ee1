"""Crash tests: writer processes killed with SIGKILL lose no acknowledged write; readers in
threads never see half a batch; a second writing process is refused.

Child processes fork from a "zygote" subprocess that imported the engine once (importing torch
takes seconds), so each kill-and-recover iteration costs milliseconds to start. A child runs the
real engine on a real directory and reports on its stdout pipe, one unbuffered line per event:
``B k`` before call k, ``A k`` once call k returned (acknowledged). The parent kills it at a
seeded random moment, reopens the collection and compares it with a model of the acknowledged
calls: the only allowed difference is the single call in flight, applied entirely or not at all.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import CollectionLockedError, Engine

DIM = 8
POOL = [f"id-{i}" for i in range(48)]
SPEC = "hnsw:M=8,ef_construction=32"
CKPT_POOL = [f"p-{i}" for i in range(3000)]
CKPT_DIM = 32

Op = tuple[str, list[str], Any, Any]  # kind, ids, vectors, payloads


# ---- the workloads (run by the children, replayed by the parent's model) ----------------------
def make_op(seed: int, it: int, k: int) -> Op:
    rng = np.random.default_rng([seed, it, k])
    r = rng.random()
    if r < 0.06:
        return ("flush", [], None, None)
    if r < 0.33:
        n = int(rng.integers(1, 6))
        return ("delete", [POOL[i] for i in rng.choice(len(POOL), n, replace=False)], None, None)
    n = int(rng.integers(1, 11))
    ids = [POOL[i] for i in rng.choice(len(POOL), n, replace=False)]
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    payloads = [{"it": it, "k": k, "j": j, "s": "ü" * int(rng.integers(0, 4))} for j in range(n)]
    return ("upsert", ids, x, payloads)


def make_ckpt_op(seed: int, it: int, k: int) -> Op:
    rng = np.random.default_rng([seed, it, k, 1])
    if k % 2:
        ids = [CKPT_POOL[i] for i in rng.choice(len(CKPT_POOL), 4, replace=False)]
        return ("delete", ids, None, None)
    ids = [CKPT_POOL[i] for i in rng.choice(len(CKPT_POOL), 16, replace=False)]
    x = rng.standard_normal((16, CKPT_DIM)).astype(np.float32)
    return ("upsert", ids, x, [{"it": it, "k": k} for _ in ids])


def run_op(col: Any, op: Op) -> None:
    kind, ids, x, payloads = op
    if kind == "upsert":
        col.upsert(ids, x, payloads)
    elif kind == "delete":
        col.delete(ids)
    else:
        col.flush()


def apply_op(model: dict, op: Op) -> dict:
    kind, ids, x, payloads = op
    model = dict(model)
    if kind == "upsert":
        for i, v, p in zip(ids, x, payloads, strict=True):
            model[i] = (v.tobytes(), p)
    elif kind == "delete":
        for i in ids:
            model.pop(i, None)
    return model


def state_of(col: Any, pool: list[str]) -> dict:
    got = {r.id: (r.vector.tobytes(), r.payload) for r in col.get(pool) if r is not None}
    assert len(col) == len(got), "items outside the id pool"
    return got


# ---- the zygote and its children --------------------------------------------------------------
def _job_writer(job: dict, emit: Callable[[str], None]) -> None:
    eng = Engine(job["path"], checkpoint_bytes=job["checkpoint_bytes"])
    col = eng.open_collection("c")
    emit("R")
    for k in itertools.count():
        op = make_op(job["seed"], job["it"], k)
        emit(f"B {k}")
        run_op(col, op)
        emit(f"A {k}")


def _job_checkpointer(job: dict, emit: Callable[[str], None]) -> None:
    col = Engine(job["path"]).open_collection("c")
    emit("R")
    for k in itertools.count():
        emit(f"B {k}")
        run_op(col, make_ckpt_op(job["seed"], job["it"], k))
        emit(f"A {k}")
        emit(f"C0 {k}")
        t = time.perf_counter()
        col.flush()
        emit(f"C1 {k} {time.perf_counter() - t:.6f}")


def _job_open(job: dict, emit: Callable[[str], None]) -> None:
    try:
        held = Engine(job["path"]).open_collection("c")  # noqa: F841 - held until exit
        emit("OPENED")
    except CollectionLockedError as e:
        emit(f"LOCKED {e}")
    emit(f"RO {len(Engine(job['path'], read_only=True).open_collection('c'))}")
    if job.get("hold"):
        time.sleep(600)


def _job_recover(job: dict, emit: Callable[[str], None]) -> None:
    """Opens (replay), waits for the graph to catch up, closes (a checkpoint)."""
    col = Engine(job["path"]).open_collection("c")
    emit("O")
    assert col.wait_indexed(120)
    emit("I")
    col.close()
    emit("C")


JOBS = {
    "writer": _job_writer,
    "checkpointer": _job_checkpointer,
    "open": _job_open,
    "recover": _job_recover,
}


def zygote_main() -> None:
    """Runs in the zygote: import once, then fork one child per job line read from stdin."""
    import engine  # noqa: F401 - the expensive import, done once before any fork

    os.write(1, b"Z\n")
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:

            def emit(text: str) -> None:
                os.write(1, (text + "\n").encode())

            code = 0
            try:
                emit(f"P {os.getpid()}")
                JOBS[job["job"]](job, emit)
            except BaseException:  # noqa: BLE001 - reported to the parent
                emit("E " + traceback.format_exc().replace("\n", " | "))
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        os.write(1, f"X {pid} {status}\n".encode())


BOOT = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('durability_crash', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(mod)\n"
    "mod.zygote_main()\n"
)


class Zygote:
    def __init__(self, log: Path) -> None:
        self._log = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=Path(__file__).resolve().parents[2],
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._back: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.line(120) == "Z"

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode().rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = 60) -> str:
        if self._back:
            return self._back.pop()
        item = self.lines.get(timeout=timeout)
        if item is None:
            raise RuntimeError("the zygote died")
        return item

    def start(self, **job: Any) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()
        first = self.line()
        assert first.startswith("P "), first
        self.current: int | None = int(first[2:])
        return self.current

    def wait_for(self, pid: int, want: Callable[[str], bool], seen: list[str]) -> bool:
        """Reads the child's lines into ``seen`` until one satisfies ``want`` (True) or the
        child exits (False; its exit line is pushed back for ``finish``)."""
        while True:
            line = self.line()
            if line.startswith(f"X {pid} "):
                self._back.append(line)
                return False
            seen.append(line)
            if line.startswith("E "):
                raise AssertionError(f"child failed: {line}")
            if want(line):
                return True

    def kill_and_finish(self, pid: int, seen: list[str]) -> int:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            line = self.line()
            if line.startswith(f"X {pid} "):
                self.current = None
                return int(line.split()[2])
            seen.append(line)

    def close(self) -> None:
        if getattr(self, "current", None) is not None:
            self.kill_and_finish(self.current, [])  # a test failed with a child running
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)
        self._log.close()


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote") / "stderr.log")
    yield z
    z.close()


def acknowledged(seen: list[str]) -> tuple[list[int], int | None]:
    """(acknowledged calls in order, the call in flight or None) from a child's lines."""
    begun = [int(s.split()[1]) for s in seen if s.startswith("B ")]
    acked = [int(s.split()[1]) for s in seen if s.startswith("A ")]
    assert acked == list(range(len(acked))), "acknowledgements out of order"
    assert begun[: len(acked)] == acked and len(begun) - len(acked) <= 1
    return acked, begun[-1] if len(begun) > len(acked) else None


def check_recovered(
    path: Path, pool: list[str], model: dict, inflight: dict | None, writable: bool
):
    """Opens the collection and returns the model it matches (in-flight call applied or not)."""
    eng = Engine(path, read_only=not writable)
    col = eng.open_collection("c")
    got = state_of(col, pool)
    if writable:
        eng.close()  # checkpoints what it replayed and releases the lock
    if got == model:
        return model
    if inflight is not None and got == inflight:
        return inflight
    missing = sorted(set(model) - set(got))
    extra = sorted(set(got) - set(model))
    changed = sorted(i for i in set(got) & set(model) if got[i] != model[i])
    raise AssertionError(f"recovered state differs: missing {missing} extra {extra} {changed}")


# ---- crash tests -------------------------------------------------------------------------------
def crash_iterations(zygote: Zygote, path: Path, iterations: int, seed: int) -> dict:
    Engine(path).create_collection("c", dim=DIM, index=SPEC).close()
    rng = np.random.default_rng(seed)
    model: dict = {}
    stats = {"inflight_applied": 0, "inflight_dropped": 0, "killed_opening": 0, "acked": 0}
    for it in range(iterations):
        pid = zygote.start(
            job="writer", path=str(path), seed=seed, it=it, checkpoint_bytes=16 << 10
        )
        seen: list[str] = []
        target = int(rng.integers(-3, 40))
        if target < 0:  # kill during open and replay
            time.sleep(rng.uniform(0, 0.1))
        else:
            assert zygote.wait_for(pid, lambda s, t=target: s == f"A {t}", seen)
            time.sleep(rng.uniform(0, 0.004))
        status = zygote.kill_and_finish(pid, seen)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, seen
        stats["killed_opening"] += "R" not in seen
        acked, inflight = acknowledged(seen)
        stats["acked"] += len(acked)
        for k in acked:
            model = apply_op(model, make_op(seed, it, k))
        with_inflight = (
            apply_op(model, make_op(seed, it, inflight)) if inflight is not None else None
        )
        got = check_recovered(path, POOL, model, with_inflight, writable=it % 3 == 2)
        if inflight is not None and with_inflight != model:
            stats["inflight_applied" if got is with_inflight else "inflight_dropped"] += 1
        model = got
    return stats


def test_kill_9_loses_no_acknowledged_write(tmp_path, zygote):
    stats = crash_iterations(zygote, tmp_path / "data", iterations=5, seed=0)
    assert stats["acked"] > 0


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_write_many(tmp_path, zygote):
    stats = crash_iterations(zygote, tmp_path / "data", iterations=200, seed=1)
    # Both outcomes of the call in flight occur over many kills.
    assert stats["inflight_applied"] > 0 and stats["inflight_dropped"] > 0, stats


def checkpoint_kills(zygote: Zygote, path: Path, iterations: int, seed: int) -> int:
    eng = Engine(path)
    col = eng.create_collection("c", dim=CKPT_DIM, index=SPEC)
    x = np.random.default_rng(seed).standard_normal((len(CKPT_POOL), CKPT_DIM)).astype(np.float32)
    col.upsert(CKPT_POOL, x, [{"it": -1, "k": 0} for _ in CKPT_POOL])
    model = {i: (v.tobytes(), {"it": -1, "k": 0}) for i, v in zip(CKPT_POOL, x, strict=True)}
    eng.close()
    rng = np.random.default_rng(seed)
    inside = 0
    for it in range(iterations):
        pid = zygote.start(job="checkpointer", path=str(path), seed=seed, it=it)
        seen: list[str] = []
        assert zygote.wait_for(pid, lambda s: s.startswith("C1 0 "), seen)
        duration = float(seen[-1].split()[2])
        target = int(rng.integers(1, 6))
        assert zygote.wait_for(pid, lambda s, t=target: s == f"C0 {t}", seen)
        time.sleep(rng.uniform(0.05, 0.8) * duration)
        status = zygote.kill_and_finish(pid, seen)
        assert os.WIFSIGNALED(status), seen
        inside += seen[-1].startswith("C0 ")  # killed inside flush()
        acked, inflight = acknowledged(seen)
        for k in acked:
            model = apply_op(model, make_ckpt_op(seed, it, k))
        with_inflight = (
            apply_op(model, make_ckpt_op(seed, it, inflight)) if inflight is not None else None
        )
        model = check_recovered(path, CKPT_POOL, model, with_inflight, writable=it % 2 == 1)
    return inside


def test_kill_9_during_checkpoint_keeps_acknowledged_data(tmp_path, zygote):
    inside = checkpoint_kills(zygote, tmp_path / "data", iterations=4, seed=2)
    assert inside >= 1  # the kills land inside flush() (timed from its measured duration)


@pytest.mark.slow
def test_kill_9_during_checkpoint_many(tmp_path, zygote):
    inside = checkpoint_kills(zygote, tmp_path / "data", iterations=50, seed=3)
    assert inside >= 25


# ---- one writing process; readers may open read-only ---------------------------------------
def test_second_writer_process_gets_a_clear_error(tmp_path, zygote):
    path = tmp_path / "data"
    eng = Engine(path)
    col = eng.create_collection("c", dim=DIM, index="flat")
    col.upsert(POOL[:5], np.ones((5, DIM)))  # in the log only: no checkpoint yet
    seen: list[str] = []
    pid = zygote.start(job="open", path=str(path))
    assert zygote.wait_for(pid, lambda s: s.startswith("RO "), seen)
    zygote.kill_and_finish(pid, seen)
    locked = [s for s in seen if s.startswith("LOCKED")]
    assert locked, seen
    assert f"open for writing by process {os.getpid()}" in locked[0]
    assert "read_only=True" in locked[0] and ".lock" in locked[0]

    eng.close()  # releases the lock
    seen = []
    pid = zygote.start(job="open", path=str(path), hold=True)
    assert zygote.wait_for(pid, lambda s: s.startswith("RO "), seen)
    assert seen == ["OPENED", "RO 5"]
    with pytest.raises(CollectionLockedError):
        Engine(path).open_collection("c")
    with pytest.raises(CollectionLockedError):
        Engine(path).drop_collection("c")  # not under a writer's feet
    assert len(Engine(path, read_only=True).open_collection("c")) == 5
    zygote.kill_and_finish(pid, seen)  # the kernel drops a dead process's lock
    Engine(path).drop_collection("c")
    assert Engine(path).list_collections() == []


def test_reader_process_sees_the_replayed_log(tmp_path, zygote):
    path = tmp_path / "data"
    col = Engine(path).create_collection("c", dim=DIM, index="hnsw")
    col.upsert(POOL[:7], np.ones((7, DIM)))
    col.delete(POOL[:2])
    seen: list[str] = []
    pid = zygote.start(job="open", path=str(path))
    assert zygote.wait_for(pid, lambda s: s.startswith("RO "), seen)
    zygote.kill_and_finish(pid, seen)
    assert seen[-1] == "RO 5" and seen[0].startswith("LOCKED")


def _recovery_state(path: Path) -> tuple[list[str], dict, Any]:
    col = Engine(path, read_only=True).open_collection("c")
    ids = col.ids()
    got = (ids, {r.id: (r.vector.tobytes(), r.payload) for r in col.get(ids)}, col.marker)
    assert col.wait_indexed(120)
    idx = col._contents.index
    assert sorted(col._contents.ids.ids(np.sort(idx.labels()))) == sorted(ids)
    col.close()
    return got


def test_kill_9_during_replay_catch_up_and_its_checkpoint(tmp_path, zygote, monkeypatch):
    """A collection killed while it replays its log, while its graph catches up, or while
    close() checkpoints, reopens identical to a replay one record at a time."""
    from engine import catchup
    from engine.replay import Replayer

    src = tmp_path / "src"
    col = Engine(src).create_collection("c", dim=CKPT_DIM, index=SPEC)
    rng = np.random.default_rng(4)
    col.upsert([f"p-{i}" for i in range(500)], rng.standard_normal((500, CKPT_DIM)))
    col.flush()
    for b in range(60):
        ids = [f"p-{i}" for i in rng.choice(4000, 80, replace=False)]
        x = rng.standard_normal((80, CKPT_DIM)).astype(np.float32)
        col.upsert(ids, x, [{"b": b} for _ in ids], marker={"b": b})
        if b % 6 == 5:
            col.delete([f"p-{i}" for i in rng.choice(4000, 30, replace=False)])
    crashed = tmp_path / "crashed"
    shutil.copytree(src, tmp_path / "pristine")
    shutil.copytree(src, crashed)
    shutil.copytree(src, tmp_path / "ref")
    with monkeypatch.context() as m:
        m.setattr(Replayer, "batch", 1)
        m.setattr(catchup, "ENABLED", False)
        want = _recovery_state(tmp_path / "ref")
    stages = {"replay": 0, "catch-up": 0, "checkpoint": 0, "done": 0}
    for it in range(8):
        if it % 4 == 0:  # otherwise the next kill hits what the last one left
            shutil.rmtree(crashed)
            shutil.copytree(tmp_path / "pristine", crashed)
        pid = zygote.start(job="recover", path=str(crashed))
        seen: list[str] = []
        stage = ["replay", "catch-up", "checkpoint"][it % 3]
        if stage != "replay":
            zygote.wait_for(pid, lambda s, w="O" if stage == "catch-up" else "I": s == w, seen)
        time.sleep(float(rng.uniform(0, 0.05)))
        zygote.kill_and_finish(pid, seen)
        marks = [s for s in seen if s in ("O", "I", "C")]
        stages[["replay", "catch-up", "checkpoint", "done"][len(marks)]] += 1
        assert _recovery_state(crashed) == want, (it, seen)
    assert stages["replay"] and stages["catch-up"] + stages["checkpoint"], stages


# ---- readers during writes ---------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["flat", SPEC])
def test_readers_see_whole_batches_and_a_prefix_of_the_writes(tmp_path, spec):
    batch, n_batches, n_readers = 6, 40, 3
    ops: list[tuple[str, int]] = []
    for b in range(n_batches):
        ops.append(("up", b))
        if b % 4 == 3:
            ops.append(("del", b - 3))

    def batch_ids(b: int) -> list[str]:
        return [f"b{b}-{j}" for j in range(batch)]

    states = [frozenset()]
    for kind, b in ops:
        ids = set(batch_ids(b))
        states.append(states[-1] | ids if kind == "up" else states[-1] - ids)
    index_of = {s: t for t, s in enumerate(states)}  # the states are all distinct

    col = Engine(tmp_path / "data").create_collection("c", dim=DIM, index=spec)
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((n_batches, DIM)).astype(np.float32)
    progress = {"started": 0, "acked": 0}
    done = threading.Event()
    errors: list[str] = []
    checks = [0]

    def writer() -> None:
        try:
            for t, (kind, b) in enumerate(ops):
                progress["started"] = t + 1
                if kind == "up":
                    noise = rng.standard_normal((batch, DIM)).astype(np.float32) * 0.01
                    payloads = [{"batch": b, "j": j} for j in range(batch)]
                    col.upsert(batch_ids(b), directions[b] + noise, payloads)
                else:
                    col.delete(batch_ids(b))
                progress["acked"] = t + 1
        except BaseException as e:  # noqa: BLE001
            errors.append(f"writer: {e!r}")
        finally:
            done.set()

    def checkpointer() -> None:
        while not done.wait(0.1):
            try:
                col.flush()
            except BaseException as e:  # noqa: BLE001
                errors.append(f"checkpoint: {e!r}")

    def reader(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            while not done.is_set():
                lo = progress["acked"]
                if spec == "flat":  # exact: one search returns every live item
                    res = col.search_batch(directions[:1], k=batch * n_batches)
                    seen = frozenset(i for i in res.ids[0] if i is not None)
                    for i, p in zip(res.ids[0], res.payloads[0], strict=False):
                        if i is not None and p["batch"] != int(i[1:].split("-")[0]):
                            errors.append(f"payload {p} on {i}")
                    hi = progress["started"]
                    t = index_of.get(seen)
                    if t is None or not lo <= t <= hi:
                        errors.append(f"saw a state that is no prefix in [{lo}, {hi}]: {t}")
                b = int(r.integers(0, max(1, int(progress["started"] / 1.25))))
                hits = col.search(directions[b], k=batch, where={"batch": b})
                if len(hits) not in (0, batch):
                    errors.append(f"half a batch in a search: {len(hits)} of batch {b}")
                got = [g is not None for g in col.get(batch_ids(b))]
                if any(got) and not all(got):
                    errors.append(f"half a batch in a get: {got}")
                col.search(directions[b], k=10)
                checks[0] += 1
        except BaseException as e:  # noqa: BLE001
            errors.append(f"reader: {e!r}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(n_readers)]
    threads += [threading.Thread(target=writer), threading.Thread(target=checkpointer)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors[:5]
    assert checks[0] > 50
    assert frozenset(col.ids()) == states[-1]
