"""RowStore: label -> row lookups by binary search while labels increase, by dict after; a
memory-mapped base after save/load with appends in RAM."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index.labelmap import RowStore

DIM = 3

# An op: ("add", labels) or ("remove", labels); labels drawn from a small pool so that removed
# labels come back (out of order) and removals hit absent labels too.
ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "add_next", "remove", "save"]),
        st.lists(st.integers(0, 60), min_size=1, max_size=8, unique=True),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(program=ops)
def test_row_store_matches_a_dict_model(program, tmp_path_factory):
    store, model = RowStore(DIM), {}  # model: label -> vector
    nxt = 100
    where = tmp_path_factory.mktemp("rows")
    for step, (kind, labels) in enumerate(program):
        if kind == "save":  # rows go to a file and are served from a map of it
            saved = store.save(where / f"rows.{step}.npy")
            assert sorted(saved.tolist()) == sorted(model)
            assert store.mapped() == bool(model) and store.ram_bytes()[0] == 0
            continue
        if kind == "add_next":  # increasing labels, as a collection assigns them
            labels = list(range(nxt, nxt + len(labels)))
            nxt += len(labels)
        if kind == "remove":
            present = [x for x in labels if x in model]
            if present:
                store.remove(np.array(present))
                for x in present:
                    del model[x]
            continue
        fresh = [x for x in labels if x not in model]
        if not fresh:
            continue
        x = np.random.default_rng(len(model)).standard_normal((len(fresh), DIM))
        store.append(x.astype(np.float32), np.array(fresh))
        model.update(zip(fresh, x.astype(np.float32), strict=True))
        assert len(store) == len(model)
    probe = np.arange(0, 200)
    assert store.contains(probe).tolist() == [int(p) in model for p in probe]
    assert sorted(store.live_labels().tolist()) == sorted(model)
    if model:
        keys = np.array(sorted(model))
        np.testing.assert_array_equal(store.get(keys), np.stack([model[k] for k in keys]))
        rows = store.row_of(keys)
        got = {
            int(store.lab[r])
            for start, seg in store.segments()
            for r in range(start, start + len(seg))
            if store.alive[r]
        }
        assert got == set(model) and store.take(rows).shape == (len(keys), DIM)
    x, lab = store.live()
    assert sorted(lab.tolist()) == sorted(model) and x.shape == (len(model), DIM)
    if model:
        np.testing.assert_array_equal(x, np.stack([model[k] for k in lab.tolist()]))


def test_increasing_labels_keep_no_dict_and_out_of_order_switches():
    store = RowStore(DIM)
    for start in range(0, 5000, 500):
        store.append(np.zeros((500, DIM), np.float32), np.arange(start, start + 500))
    assert store.rows is None and len(store) == 5000
    store.remove(np.arange(0, 2000))  # compacts (dead > a quarter), stays sorted
    assert (
        store.rows is None
        and store.n == 3000
        and store.contains(np.array([1999, 2000])).tolist() == [False, True]
    )
    store.append(np.ones((1, DIM), np.float32), np.array([7]))  # a removed label comes back
    assert store.rows is not None and store.row_of(np.array([7])).tolist() == [3000]
    with pytest.raises(KeyError, match="8"):
        store.row_of(np.array([2000, 8]))


def test_appends_after_save_stay_in_ram_and_the_base_stays_mapped(tmp_path):
    store = RowStore(DIM)
    x = np.arange(3000 * DIM, dtype=np.float32).reshape(3000, DIM)
    store.append(x, np.arange(3000))
    labels = store.save(tmp_path / "v.npy")
    assert labels.tolist() == list(range(3000)) and store.mapped()
    assert store.ram_bytes()[0] == 0
    store.append(np.ones((10, DIM), np.float32), np.arange(3000, 3010))
    assert store.mapped() and store.ram_bytes()[0] == 10 * DIM * 4
    store.remove(np.arange(0, 2500))  # most of the base dead: tombstones, base still mapped
    store.compact()
    assert store.mapped() and len(store) == 510
    np.testing.assert_array_equal(store.get(np.array([2999])), x[2999:3000])
    np.testing.assert_array_equal(store.get(np.array([3005])), np.ones((1, DIM)))
    x2, lab2 = store.live()
    assert lab2.tolist() == [*range(2500, 3010)] and x2.shape == (510, DIM)
    store.save(tmp_path / "v2.npy")  # the rewrite drops the dead rows
    assert store.n == 510 and store.mapped() and store.ram_bytes()[0] == 0
    np.testing.assert_array_equal(store.get(np.array([2500])), x[2500:2501])


def test_take_reads_a_mapped_base_with_pread_in_any_order(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5000, DIM)).astype(np.float32)
    store = RowStore(DIM)
    store.append(x, np.arange(5000))
    store.save(tmp_path / "v.npy")
    assert store._file is not None  # a mapped base is read through its file
    tail = rng.standard_normal((7, DIM)).astype(np.float32)
    store.append(tail, np.arange(5000, 5007))
    both = np.concatenate([x, tail])
    for rows in (
        rng.integers(0, 5007, 50),  # unsorted, duplicates, both segments
        np.arange(100, 140),  # one run: one read
        np.array([4999, 5000, 0, 0, 5006]),
    ):
        np.testing.assert_array_equal(store.take(rows), both[rows])
    big = rng.integers(0, 5000, 5000)  # many rows: through the map
    np.testing.assert_array_equal(store.take(big), x[big])
