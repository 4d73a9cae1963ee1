"""TokenStore (index.tokens): a memory-mapped base of saved sets plus a RAM tail of sets appended
since, against a dict-of-arrays model on seeded random operation sequences."""

from __future__ import annotations

import numpy as np
import pytest

from index import memory
from index.tokens import TokenStore

DIM = 4


class Model:
    """What the store must answer: label -> tokens (and a per-token column), nothing else."""

    def __init__(self) -> None:
        self.sets: dict[int, np.ndarray] = {}
        self.cols: dict[int, np.ndarray] = {}


def random_sets(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [
        rng.standard_normal((int(rng.integers(1, 6)), DIM)).astype(np.float32) for _ in range(n)
    ]


def pack(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sets], out=offsets[1:])
    return np.concatenate(sets), offsets


def column_of(tokens: np.ndarray) -> np.ndarray:
    """A per-token column derived from the tokens (so it can be checked row for row)."""
    return np.rint(tokens[:, 0] * 100).astype(np.int32)


def check(store: TokenStore, model: Model, rng: np.random.Generator) -> None:
    assert len(store) == len(model.sets)
    assert sorted(store.live_labels().tolist()) == sorted(model.sets)
    probe = np.array([*model.sets, -1, 10**9, *rng.integers(0, 400, 20)], dtype=np.int64)
    want = np.array([int(x) in model.sets for x in probe])
    assert (store.contains(probe) == want).all()
    rows = store.row_of(probe)
    assert ((rows >= 0) == want).all()
    assert (store.lab[rows[want]] == probe[want]).all() and store.alive[rows[want]].all()
    for lab, tokens in model.sets.items():
        np.testing.assert_array_equal(store.get(lab), tokens.astype(np.float16).astype(np.float32))
    # Every reader of the two segments agrees with the model.
    live_t, live_o, live_l = store.live()
    assert live_l.tolist() == [int(x) for x in store.live_labels()]
    for i, lab in enumerate(live_l.tolist()):
        np.testing.assert_array_equal(live_t[live_o[i] : live_o[i + 1]], model.sets[lab])
    blocks, offsets = store.blocks(), store.offsets
    cols = store.blocks("col")
    for r in np.flatnonzero(store.alive):
        a, b = int(offsets[r]), int(offsets[r + 1])
        want_t = model.sets[int(store.lab[r])].astype(np.float16)
        np.testing.assert_array_equal(blocks.block(a, b), want_t)
        np.testing.assert_array_equal(blocks.rows(np.arange(a, b)), want_t)
        np.testing.assert_array_equal(cols.block(a, b), model.cols[int(store.lab[r])])
    sub, sub_off = store.subset(rows[want][::-1])
    for i, lab in enumerate(probe[want][::-1].tolist()):
        np.testing.assert_array_equal(sub[sub_off[i] : sub_off[i + 1]], model.sets[lab])


def program(seed: int, tmp_path) -> None:
    rng = np.random.default_rng(seed)
    store = TokenStore(DIM, columns={"col": (np.int32, ())})
    model = Model()
    next_label = 0
    saves = 0
    for step in range(60):
        op = rng.choice(["add", "remove", "save", "load", "compact"], p=[0.45, 0.3, 0.1, 0.05, 0.1])
        if op == "add":
            n = int(rng.integers(1, 12))
            sets = random_sets(rng, n)
            if rng.random() < 0.25:  # out of order: labels below the largest, or reused
                free = [x for x in range(next_label + 50) if x not in model.sets]
                labels = rng.choice(free, size=n, replace=False).astype(np.int64)
            else:
                labels = np.arange(next_label, next_label + n, dtype=np.int64)
            next_label = max(next_label, int(labels.max()) + 1)
            tokens, offsets = pack(sets)
            store.append(tokens, offsets, labels, {"col": column_of(tokens)})
            for lab, s in zip(labels.tolist(), sets, strict=True):
                model.sets[lab] = s.astype(np.float16).astype(np.float32)
                model.cols[lab] = column_of(s)
        elif op == "remove" and model.sets:
            keys = list(model.sets)
            gone = rng.choice(keys, size=int(rng.integers(1, len(keys) // 3 + 2)), replace=False)
            store.remove(gone)
            for lab in gone.tolist():
                del model.sets[lab], model.cols[lab]
        elif op == "compact":
            base = store.tokens
            store.compact()
            if memory.is_mapped(base) and base.shape[0]:
                assert store.tokens is base  # the mapped base is never rewritten in RAM
        elif op in ("save", "load"):
            directory = tmp_path / f"s{saves}"
            directory.mkdir()
            saves += 1
            names = store.save(directory)
            assert names == ["tokens.npy", "offsets.npy", "labels.npy", "col.npy"]
            assert store.n == len(model.sets) and store.dead_tokens == 0
            if model.sets:
                assert isinstance(store.tokens, np.memmap)
            if op == "load":
                store = TokenStore(DIM, columns={"col": (np.int32, ())})
                store.load(directory)
        check(store, model, rng)
        if store.n_base and memory.is_mapped(store.tokens):
            # RAM holds the tail only: appended tokens, offsets; the base is mapped.
            tail = store.n_tokens - store.offsets[store.n_base]
            ram, _ = store.ram_bytes()
            assert ram == tail * DIM * 2 + (store.n + 1) * 8, step


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_dict_model(seed, tmp_path):
    program(seed, tmp_path)


def test_appends_after_load_keep_the_base_mapped(tmp_path):
    rng = np.random.default_rng(1)
    store = TokenStore(DIM)
    sets = random_sets(rng, 500)
    store.append(*pack(sets), np.arange(500))
    store.save(tmp_path)
    again = TokenStore(DIM)
    again.load(tmp_path)
    base = again.tokens
    assert isinstance(base, np.memmap) and again.ram_bytes()[0] == 501 * 8
    more = random_sets(rng, 300)
    t, o = pack(more)
    again.append(t, o, np.arange(500, 800))
    assert again.tokens is base and again.n_base == 500
    assert again.ram_bytes()[0] == t.shape[0] * DIM * 2 + 801 * 8
    # Heavy removals in both segments: the tail compacts, the base stays mapped and whole.
    again.remove(np.arange(0, 800, 2))
    again.remove(np.arange(501, 800, 2)[:-10])
    again.compact()
    assert again.tokens is base and again.n_base == 500 and again.n < 800
    np.testing.assert_array_equal(again.get(799), more[-1].astype(np.float16).astype(np.float32))
    # A save writes the live sets and serves them from the new file.
    out = tmp_path / "next"
    out.mkdir()
    again.save(out)
    assert isinstance(again.tokens, np.memmap) and again.tokens is not base
    assert again.n == len(again) == 260 and again.ram_bytes()[0] == 261 * 8
    np.testing.assert_array_equal(again.get(1), sets[1].astype(np.float16).astype(np.float32))


def test_row_lookups_use_arrays(tmp_path):
    store = TokenStore(DIM)
    rng = np.random.default_rng(2)
    store.append(*pack(random_sets(rng, 50)), np.arange(0, 100, 2))
    # No per-label Python objects: the only dicts are the per-column segments.
    assert all(len(v) == 1 for v in vars(store._st).values() if isinstance(v, dict))
    assert store._st.skey is None  # rising labels: a binary search over the row labels
    store.append(*pack(random_sets(rng, 3)), np.array([7, 3, 5]))  # out of order
    assert store._st.skey is not None and store._st.skey.tolist() == sorted(store.live_labels())
    assert store.row_of(np.array([[3, 9], [98, 7]])).tolist() == [[51, -1], [49, 50]]
    store.remove(np.array([3, 98]))
    assert store.row_of(np.array([3, 98, 5])).tolist() == [-1, -1, 52]
    # A saved store is in row order again: labels rise only if they did in row order.
    store.save(tmp_path)
    assert store._st.skey is not None
    with pytest.raises(KeyError):
        store.get(3)


def test_write_then_remap_serves_the_same_sets(tmp_path):
    """The collection's checkpoint path: ``write`` leaves the store as it is (readers go on),
    ``remap`` switches to the file in one step."""
    rng = np.random.default_rng(3)
    store = TokenStore(DIM, dtype=np.float32)
    sets = random_sets(rng, 40)
    store.append(*pack(sets), np.arange(40))
    store.remove(np.arange(0, 40, 3))
    before = store._st
    labels = store.write(tmp_path / "t.npy", tmp_path / "o.npy")
    assert store._st is before and labels.tolist() == [i for i in range(40) if i % 3]
    store.remap(tmp_path / "t.npy", labels)
    assert isinstance(store.tokens, np.memmap) and store.n == len(labels)
    for lab in labels.tolist():
        np.testing.assert_array_equal(store.get(lab), sets[lab])
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), store.offsets)
    with pytest.raises(ValueError, match="live sets"):
        store.remap(tmp_path / "t.npy", labels[:-1])


def test_save_writes_in_bounded_chunks(tmp_path, monkeypatch):
    """The base is copied to the new file a chunk at a time, never as one array."""
    from index import tokenstore as tokens_mod

    monkeypatch.setattr(tokens_mod, "_CHUNK_BYTES", 64)
    rng = np.random.default_rng(4)
    store = TokenStore(DIM)
    sets = random_sets(rng, 200)
    store.append(*pack(sets), np.arange(200))
    store.save(tmp_path)
    store.remove(np.arange(0, 200, 5))
    seen: list[int] = []
    real = tokens_mod.storage.replace_npy_chunks

    def spy(path, shape, dtype, chunks):
        def counted():
            for c in chunks:
                seen.append(c.shape[0])
                yield c

        real(path, shape, dtype, counted())

    monkeypatch.setattr(tokens_mod.storage, "replace_npy_chunks", spy)
    (tmp_path / "b").mkdir()
    store.save(tmp_path / "b")
    assert len(seen) > 10 and max(seen) <= 64 // (2 * DIM) + 5  # whole sets of <= 5 tokens
    for lab in range(1, 200, 5):
        np.testing.assert_array_equal(
            store.get(lab), sets[lab].astype(np.float16).astype(np.float32)
        )
