"""Durability: the write-ahead log, checkpoints, recovery, torn tails, corruption, locks.

Crash tests with real processes killed by SIGKILL live in ``test_durability_crash.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine import CollectionLockedError, Engine, ReadOnlyError, wal
from engine.collection import MANIFEST, WAL_DIR
from engine.locking import RWLock
from index import CorruptFileError

DIM = 4


def vecs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def snapshot(col) -> dict[str, tuple[bytes, dict]]:
    """id -> (vector bytes, payload) for every live item."""
    ids = col.ids()
    recs = col.get(ids) if ids else []
    return {r.id: (r.vector.tobytes(), r.payload) for r in recs if r is not None}


def write_ops(col, model: dict, seed: int, n_ops: int) -> list[dict]:
    """Applies n_ops seeded upserts/deletes to ``col`` and ``model``; returns the model after
    each op (index 0: before any)."""
    rng = np.random.default_rng(seed)
    states = [dict(model)]
    for k in range(n_ops):
        if rng.random() < 0.7 or not model:
            n = int(rng.integers(1, 4))
            ids = [f"id-{int(i)}" for i in rng.choice(30, n, replace=False)]
            x = vecs(n, seed * 1000 + k)
            payloads = [
                {"k": k, "tag": "é€" if j % 2 else "x", "nest": {"a": [j]}} for j in range(n)
            ]
            col.upsert(ids, x, payloads)
            for i, v, p in zip(ids, x, payloads, strict=True):
                model[i] = (v.tobytes(), p)
        else:
            ids = list(rng.choice(sorted(model), min(2, len(model)), replace=False))
            col.delete(ids)
            for i in ids:
                model.pop(i, None)
        states.append(dict(model))
    return states


def segments(col_path: Path) -> list[Path]:
    return [s.path for s in wal.list_segments(col_path / WAL_DIR)]


def record_offsets(path: Path) -> list[int]:
    """Start offset of every record in a segment (plus the end of the file)."""
    data = path.read_bytes()
    out, off = [], 0
    while off < len(data):
        out.append(off)
        length = int.from_bytes(data[off + 16 : off + 24], "little")
        off += wal.HEADER_SIZE + length
    return [*out, len(data)]


def crash_copy(src: Path, dst: Path) -> Path:
    """What a kill -9 leaves: the files as they are now (the page cache survives the process)."""
    shutil.copytree(src, dst)
    return dst


# ---- the log format --------------------------------------------------------------------------
def test_record_round_trip(tmp_path):
    ids = ["a", "é-🙂", "x" * 300]
    x = vecs(3, 0)
    payloads = [{}, {"s": "ü", "n": [1, 2.5, None], "d": {"b": True}}, {"big": 2**62}]
    w = wal.WalWriter(tmp_path, wal.LogState(next_seq=1), sync=True)
    assert w.append(wal.UPSERT, wal.encode_upsert(ids, x, payloads)) == 1
    assert w.append(wal.DELETE, wal.encode_delete(["a"])) == 2
    w.wait(2)
    w.close()
    got: list[wal.Entry] = []
    state = wal.replay(tmp_path, 0, DIM, got.append)
    assert [e.seq for e in got] == [1, 2] and state.next_seq == 3 and state.torn is None
    assert got[0].ids == ids and np.array_equal(got[0].vectors, x)
    assert got[0].payloads == payloads and got[1].ids == ["a"] and got[1].vectors is None
    # Replay after a checkpoint holding record 1 skips it.
    got.clear()
    wal.replay(tmp_path, 1, DIM, got.append)
    assert [e.seq for e in got] == [2]


def test_writes_are_logged_and_replayed_without_checkpoint(tmp_path):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("c", dim=DIM, index="hnsw")
    model: dict = {}
    write_ops(col, model, seed=1, n_ops=40)
    assert col._generation == 1  # no checkpoint since creation: everything is in the log
    copy = crash_copy(tmp_path / "data", tmp_path / "crashed")
    again = Engine(copy).open_collection("c")
    assert snapshot(again) == model and len(again) == len(model)
    hits = again.search(np.frombuffer(next(iter(model.values()))[0], np.float32), k=1)
    assert hits[0].id == next(iter(model))


def test_add_is_validated_before_it_is_logged(tmp_path):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("c", dim=DIM, index="flat")
    col.add(["a"], vecs(1, 0), [{"year": 2020}])
    before = [p.stat().st_size for p in segments(col.path)]
    for call in (
        lambda: col.add(["a"], vecs(1, 1)),  # exists
        lambda: col.add(["b"], vecs(1, 1), [{"year": "x"}]),  # payload type conflict
        lambda: col.upsert(["b"], np.ones((1, DIM + 1))),
    ):
        with pytest.raises(ValueError):
            call()
    assert col.delete(["nope"]) == 0
    assert [p.stat().st_size for p in segments(col.path)] == before  # nothing logged


def test_marker_commits_with_its_write_and_survives_crash_and_checkpoint(tmp_path):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("c", dim=DIM, index="flat")
    assert col.marker is None
    col.upsert(["a"], vecs(1, 0), marker={"rows": 1, "input": "x.parquet"})
    col.add(["b"], vecs(1, 1))  # no marker: the last one stays
    col.set_marker({"rows": 5, "done": True})
    got = col.marker
    got["rows"] = 99  # a copy
    assert col.marker == {"rows": 5, "done": True}
    # Replayed from the log alone (no checkpoint), then from a checkpoint.
    crashed = Engine(crash_copy(tmp_path / "data", tmp_path / "crashed")).open_collection("c")
    assert crashed.marker == {"rows": 5, "done": True} and len(crashed) == 2
    col.flush()
    assert json.loads((col.path / MANIFEST).read_text())["marker"] == {"rows": 5, "done": True}
    col.upsert(["c"], vecs(1, 2), marker={"rows": 6})
    eng.close()
    again = Engine(tmp_path / "data").open_collection("c")
    assert again.marker == {"rows": 6} and len(again) == 3


def test_marker_is_checked_and_a_bad_write_commits_no_marker(tmp_path):
    col = Engine(tmp_path / "data").create_collection("c", dim=DIM, index="flat")
    col.set_marker({"rows": 1})
    for bad, err in (
        ([1], TypeError),
        ({"x": float("nan")}, ValueError),
        ({"x": object()}, ValueError),
        ({"x": "y" * 70000}, ValueError),
    ):
        with pytest.raises(err, match="marker"):
            col.set_marker(bad)
    with pytest.raises(ValueError, match="dimension"):
        col.upsert(["a"], np.ones((1, DIM + 1)), marker={"rows": 2})
    col.add(["a"], vecs(1, 0))
    with pytest.raises(ValueError, match="already exists"):
        col.add(["a"], vecs(1, 0), marker={"rows": 3})
    assert col.marker == {"rows": 1}


def test_mark_record_round_trip(tmp_path):
    w = wal.WalWriter(tmp_path, wal.LogState(next_seq=1), sync=True)
    w.append(wal.MARK, wal.encode_mark({"rows": 3}))
    w.append(wal.UPSERT, wal.encode_upsert(["a"], vecs(1, 0), [{}], marker={"rows": 4}))
    w.wait(2)
    w.close()
    got: list[wal.Entry] = []
    wal.replay(tmp_path, 0, DIM, got.append)
    assert [(e.kind, e.ids, e.marker) for e in got] == [
        (wal.MARK, [], {"rows": 3}),
        (wal.UPSERT, ["a"], {"rows": 4}),
    ]


# ---- checkpoints -----------------------------------------------------------------------------
def test_checkpoint_rotates_the_log_and_records_its_position(tmp_path):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("c", dim=DIM, index="hnsw")
    model: dict = {}
    write_ops(col, model, seed=2, n_ops=10)
    col.flush()
    manifest = json.loads((col.path / MANIFEST).read_text())
    assert manifest["wal_seq"] == col._wal.last_seq == 10
    assert [p.name for p in segments(col.path)] == [wal.segment_name(11)]
    assert segments(col.path)[0].stat().st_size == 0
    write_ops(col, model, seed=3, n_ops=5)
    copy = crash_copy(tmp_path / "data", tmp_path / "crashed")
    assert snapshot(Engine(copy).open_collection("c")) == model


def test_automatic_checkpoint_by_size_and_by_time(tmp_path):
    eng = Engine(tmp_path / "data", checkpoint_bytes=1000)
    col = eng.create_collection("c", dim=DIM, index="flat")
    model: dict = {}
    write_ops(col, model, seed=4, n_ops=30)
    assert col._generation > 3  # each checkpoint starts a new generation
    assert col._wal.bytes < 1000 + 1000
    col.checkpoint_bytes = 1 << 30
    col.checkpoint_seconds = 0.05
    write_ops(col, model, seed=5, n_ops=1)
    gen = col._generation
    time.sleep(0.06)
    write_ops(col, model, seed=6, n_ops=1)
    assert col._generation == gen + 1
    assert snapshot(Engine(crash_copy(tmp_path / "data", tmp_path / "x")).open_collection("c")) == (
        model
    )


def test_crash_between_manifest_switch_and_log_rotation(tmp_path, monkeypatch):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("c", dim=DIM, index="hnsw")
    model: dict = {}
    write_ops(col, model, seed=7, n_ops=12)

    def crash(self, seq):
        raise RuntimeError("killed after the manifest switch")

    monkeypatch.setattr(wal.WalWriter, "checkpointed", crash)
    with pytest.raises(RuntimeError, match="killed"):
        col.flush()
    monkeypatch.undo()
    assert json.loads((col.path / MANIFEST).read_text())["wal_seq"] == 12
    copy = crash_copy(tmp_path / "data", tmp_path / "crashed")
    replayed: list[int] = []
    state = wal.replay(copy / "c" / WAL_DIR, 12, DIM, lambda e: replayed.append(e.seq))
    assert replayed == [] and state.next_seq == 13  # the checkpoint holds every record
    col2 = Engine(copy).open_collection("c")
    assert snapshot(col2) == model
    write_ops(col2, model, seed=8, n_ops=3)
    col2.close()
    assert snapshot(Engine(copy, read_only=True).open_collection("c")) == model


def test_unflushed_next_generation_and_old_format_manifest(tmp_path):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("c", dim=DIM, index="flat")
    col.upsert(["a"], vecs(1, 0))
    eng.close()
    mpath = col.path / MANIFEST
    manifest = json.loads(mpath.read_text())
    manifest["format_version"] = 1  # written before the log existed: no wal_seq
    del manifest["wal_seq"]
    mpath.write_text(json.dumps(manifest))
    shutil.rmtree(col.path / WAL_DIR)
    col = Engine(tmp_path / "data").open_collection("c")
    assert len(col) == 1
    col.upsert(["b"], vecs(1, 1))
    col.close()
    assert json.loads(mpath.read_text())["format_version"] == 2
    assert len(Engine(tmp_path / "data").open_collection("c")) == 2


# ---- torn tails and corruption ---------------------------------------------------------------
def _logged_collection(tmp_path: Path, n_ops: int = 8) -> tuple[Path, list[dict]]:
    src = tmp_path / "src"
    col = Engine(src).create_collection("c", dim=DIM, index="flat")
    states = write_ops(col, {}, seed=9, n_ops=n_ops)
    return src, states


def test_torn_tail_at_every_offset_recovers_the_previous_record(tmp_path):
    src, states = _logged_collection(tmp_path)
    seg = segments(src / "c")[0]
    data = seg.read_bytes()
    offsets = record_offsets(seg)
    last_start = offsets[-2]
    assert len(data) - last_start > wal.HEADER_SIZE + 20
    work = crash_copy(src, tmp_path / "work")
    wseg = work / "c" / WAL_DIR / seg.name
    for cut in range(last_start, len(data) + 1):
        wseg.write_bytes(data[:cut])
        col = Engine(work, read_only=True).open_collection("c")
        want = states[-1] if cut == len(data) else states[-2]
        assert snapshot(col) == want, f"cut at {cut}"
    # A writer cuts the torn record away before appending, so the log stays valid.
    for cut in (last_start + 1, last_start + wal.HEADER_SIZE + 3, len(data) - 1):
        wseg.write_bytes(data[:cut])
        eng = Engine(work)
        col = eng.open_collection("c")
        assert wseg.stat().st_size == last_start
        col.upsert(["new"], vecs(1, 99))
        eng_states = {**states[-2], "new": (vecs(1, 99)[0].tobytes(), {})}
        assert snapshot(Engine(work, read_only=True).open_collection("c")) == eng_states
        eng.close()
        shutil.rmtree(work)
        crash_copy(src, work)


def test_damaged_last_record_is_dropped_like_a_torn_one(tmp_path):
    src, states = _logged_collection(tmp_path)
    seg = segments(src / "c")[0]
    data = bytearray(seg.read_bytes())
    data[record_offsets(seg)[-2] + wal.HEADER_SIZE + 2] ^= 0x10
    seg.write_bytes(bytes(data))
    assert snapshot(Engine(src, read_only=True).open_collection("c")) == states[-2]


def test_bit_flip_in_a_middle_record_names_the_file_and_offset(tmp_path):
    src, states = _logged_collection(tmp_path)
    seg = segments(src / "c")[0]
    data = seg.read_bytes()
    offsets = record_offsets(seg)
    assert len(offsets) == len(states)  # one record per op (8), plus the end of the file
    start, end = offsets[3], offsets[4]
    for pos in range(start, end):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[pos] ^= bit
            seg.write_bytes(bytes(bad))
            with pytest.raises(CorruptFileError) as err:
                Engine(src, read_only=True).open_collection("c")
            msg = str(err.value)
            assert seg.name in msg and f"offset {start}:" in msg, (pos, msg)
            # The writer refuses too, and leaves the log as it was.
            if pos in (start, start + 20, end - 1) and bit == 0x80:
                with pytest.raises(CorruptFileError, match=re.escape(seg.name)):
                    Engine(src).open_collection("c")
                assert seg.read_bytes() == bytes(bad)
    # Restored, the log replays every record: exactly the items of the last write survive.
    seg.write_bytes(data)
    col = Engine(src).open_collection("c")
    assert snapshot(col) == states[-1] and len(col) == len(states[-1]) == 7  # 7 on seed 9


def test_missing_log_segment_is_an_error(tmp_path):
    src, _ = _logged_collection(tmp_path)
    seg = segments(src / "c")[0]
    seg.rename(seg.with_name(wal.segment_name(5)))  # records 1-4 gone
    with pytest.raises(CorruptFileError, match="log segments are missing"):
        Engine(src, read_only=True).open_collection("c")


@pytest.mark.parametrize("spec", ["flat", "hnsw", "ivf:nlist=2,nprobe=2"])
def test_bit_flip_in_a_data_file_names_the_file(tmp_path, spec):
    eng = Engine(tmp_path / "src")
    col = eng.create_collection("c", dim=16, index=spec)
    col.add([f"d{i}" for i in range(200)], np.random.default_rng(0).standard_normal((200, 16)))
    eng.close()
    files = [
        p
        for p in sorted(col.path.rglob("*"))
        if p.is_file() and p.suffix in (".npy", ".parquet", ".bin") and p.stat().st_size > 64
    ]
    assert len(files) >= 3
    for f in files:
        work = crash_copy(tmp_path / "src", tmp_path / "work")
        target = work / f.relative_to(tmp_path / "src")
        raw = bytearray(target.read_bytes())
        raw[len(raw) // 2] ^= 0x04
        target.write_bytes(bytes(raw))
        with pytest.raises(CorruptFileError, match=re.escape(target.name)):
            Engine(work).open_collection("c")
        shutil.rmtree(work)


# ---- group commit and durability modes -------------------------------------------------------
@pytest.fixture
def slow_fsync(monkeypatch):
    """fdatasync that takes 5 ms (like a disk) and counts its calls."""
    calls = []
    real = wal._fdatasync

    def fsync(fd):
        calls.append(fd)
        time.sleep(0.005)
        real(fd)

    monkeypatch.setattr(wal, "_fdatasync", fsync)
    return calls


def test_group_commit_shares_fsyncs_between_writers(tmp_path, slow_fsync):
    col = Engine(tmp_path / "data").create_collection("c", dim=DIM, index="flat")
    slow_fsync.clear()
    for i in range(20):
        col.upsert([f"s{i}"], vecs(1, i))
    assert len(slow_fsync) == 20  # a lone writer syncs once per call

    slow_fsync.clear()
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(25):
                col.upsert([f"t{t}-{i}", f"u{t}-{i}"], vecs(2, i), [{"t": t}, {"i": i}])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(slow_fsync) <= 200 // 3  # 200 calls; 8 writers share most fsyncs
    assert len(col) == 20 + 400
    copy = crash_copy(tmp_path / "data", tmp_path / "crashed")
    assert len(Engine(copy).open_collection("c")) == 420


def test_durability_none_skips_fsync_but_still_logs(tmp_path, slow_fsync):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("c", dim=DIM, index="flat", durability="none")
    slow_fsync.clear()
    model: dict = {}
    write_ops(col, model, seed=10, n_ops=30)
    assert slow_fsync == []
    assert snapshot(Engine(crash_copy(tmp_path / "data", tmp_path / "x")).open_collection("c")) == (
        model
    )
    col.durability = "fsync"  # makes what is logged durable at once
    assert len(slow_fsync) == 1
    col.upsert(["z"], vecs(1, 0))
    assert len(slow_fsync) == 2
    with pytest.raises(ValueError, match="durability must be"):
        eng.create_collection("d", dim=DIM, durability="sometimes")


# ---- locks, read-only, takeover --------------------------------------------------------------
def test_rwlock_readers_share_writers_exclude():
    lock = RWLock()
    inside = []
    barrier = threading.Barrier(3)

    def reader() -> None:
        with lock.read():
            barrier.wait(timeout=5)  # all three readers inside at once
            inside.append(1)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(inside) == 3
    with lock:
        with lock.read(), lock:  # the writer may re-enter and read
            pass
    with lock.read(), pytest.raises(RuntimeError, match="cannot take the write lock"):
        lock.write().__enter__()
    order = []

    def write() -> None:
        with lock:
            order.append("w")

    with lock.quiesce():
        t = threading.Thread(target=write)
        t.start()
        time.sleep(0.05)
        with lock.read():  # readers still enter while a checkpoint holds writers off
            order.append("r")
        assert order == ["r"]
    t.join(5)
    assert order == ["r", "w"]


def test_read_only_engine_changes_nothing_and_refuses_writes(tmp_path):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("c", dim=DIM, index="hnsw")
    model: dict = {}
    write_ops(col, model, seed=11, n_ops=15)

    def listing() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(tmp_path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in tmp_path.rglob("*")
            if p.is_file()
        }

    before = listing()
    ro_eng = Engine(tmp_path / "data", read_only=True)
    ro = ro_eng.open_collection("c")  # while the writer holds the lock
    assert snapshot(ro) == model and not ro.writable
    with pytest.raises(ReadOnlyError, match="read_only=True"):
        ro.upsert(["x"], vecs(1, 0))
    with pytest.raises(ReadOnlyError):
        ro.delete(["id-1"])
    with pytest.raises(ReadOnlyError):
        ro_eng.create_collection("d", dim=DIM)
    with pytest.raises(ReadOnlyError):
        ro_eng.drop_collection("c")
    with pytest.raises(ReadOnlyError):
        ro_eng.open_collection("c", read_only=False)
    ro.flush()
    ro_eng.close()
    assert listing() == before
    with pytest.raises(FileNotFoundError):
        Engine(tmp_path / "absent", read_only=True)

    write_ops(col, model, seed=12, n_ops=5)
    col.flush()
    write_ops(col, model, seed=13, n_ops=5)
    ro2 = eng.open_collection("c", read_only=True)
    assert ro2 is not col and ro2 is eng.open_collection("c", read_only=True)
    assert snapshot(ro2) == model
    write_ops(col, model, seed=14, n_ops=5)
    ro2.refresh()
    assert snapshot(ro2) == model


def test_reopening_in_the_same_process_hands_writing_over(tmp_path):
    eng = Engine(tmp_path / "data")
    old = eng.create_collection("c", dim=DIM, index="flat")
    model: dict = {}
    write_ops(old, model, seed=15, n_ops=10)
    new = Engine(tmp_path / "data").open_collection("c")
    assert new is not old and snapshot(new) == model
    with pytest.raises(ReadOnlyError, match="opened again for writing"):
        old.upsert(["x"], vecs(1, 0))
    assert snapshot(old) == model  # reads keep working
    old.close()  # neither checkpoints nor releases what it no longer owns
    write_ops(new, model, seed=16, n_ops=5)
    assert eng.open_collection("c") is not old  # the cache does not hand out a dead object
    new2 = eng.open_collection("c")
    assert snapshot(new2) == model


def test_close_and_drop_release_the_lock(tmp_path):
    eng = Engine(tmp_path / "data")
    col = eng.create_collection("c", dim=DIM, index="flat")
    col.upsert(["a"], vecs(1, 0))
    eng.close()
    with pytest.raises(ReadOnlyError, match="closed"):
        col.upsert(["b"], vecs(1, 1))
    assert col.search(vecs(1, 0)[0], k=1)[0].id == "a"
    eng2 = Engine(tmp_path / "data")
    col2 = eng2.open_collection("c")
    assert col2._generation == 2  # close() checkpointed
    eng2.drop_collection("c")
    with pytest.raises(ReadOnlyError, match="dropped"):
        col2.upsert(["b"], vecs(1, 1))
    col3 = eng2.create_collection("c", dim=DIM, index="flat")
    assert len(col3) == 0
    col3.close()
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]


def test_lock_error_names_the_collection_and_holder(tmp_path):
    exc = CollectionLockedError("c", str(tmp_path / "c" / ".lock"), 4242)
    assert "process 4242" in str(exc) and "read_only=True" in str(exc)
