"""RowStore: label -> row lookups by binary search while labels increase, by dict after."""

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
        st.sampled_from(["add", "add_next", "remove"]),
        st.lists(st.integers(0, 60), min_size=1, max_size=8, unique=True),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_row_store_matches_a_dict_model(program):
    store, model = RowStore(DIM), {}  # model: label -> vector
    nxt = 100
    for kind, labels in program:
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
        np.testing.assert_array_equal(
            store.x[store.row_of(keys)], np.stack([model[k] for k in keys])
        )
    x, lab = store.live()
    assert not store.has_dead() and sorted(lab.tolist()) == sorted(model)


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
