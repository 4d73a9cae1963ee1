"""IdMap: ids <-> labels in flat arrays, checked against a dict model."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.idmap import IdMap

# An op: upsert or delete of ids drawn from a small pool (so ids come back), or a compaction.
keys = st.sampled_from(["a", "b", "é", "long-" + "x" * 40, "", "0", "00", "d\x00e", "日本"])
ops = st.lists(
    st.tuples(st.sampled_from(["upsert", "delete", "compact"]), st.lists(keys, max_size=5)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(program=ops)
def test_idmap_matches_a_dict_model(program):
    ids, model, nxt = IdMap(), {}, 0  # model: id -> label
    for kind, batch in program:
        batch = list(dict.fromkeys(batch))  # a call names an id once
        if kind == "compact":
            ids.compact()
            continue
        old = ids.labels(batch)
        assert sorted(old) == sorted(model[k] for k in batch if k in model)
        ids.remove(np.array(old, dtype=np.int64))
        for k in batch:
            model.pop(k, None)
        if kind == "upsert" and batch:
            labels = np.arange(nxt, nxt + len(batch), dtype=np.int64)
            ids.assign(batch, labels)
            model.update(zip(batch, labels.tolist(), strict=True))
            nxt += len(batch)
    assert len(ids) == len(model)
    assert list(ids) == sorted(model, key=model.get)  # label order
    for k in ["a", "b", "é", "zz", "", "日本"]:
        assert ids.label(k) == model.get(k) and (k in ids) == (k in model)
    labels = np.array(sorted(model.values()), dtype=np.int64)
    inverse = {v: k for k, v in model.items()}
    assert ids.ids(labels) == [inverse[x] for x in labels.tolist()]
    # A reopen: install from the live ids, as a checkpoint would.
    fresh = IdMap()
    fresh.install([inverse[x] for x in labels.tolist()][::-1], labels[::-1].copy(), nxt)
    assert list(fresh) == list(ids) and all(fresh.label(k) == v for k, v in model.items())


def test_many_ids_merge_into_the_sorted_base_and_stay_small():
    ids = IdMap()
    n = 200_000
    names = [f"doc-{i:07d}" for i in range(n)]
    for a in range(0, n, 10_000):
        ids.assign(names[a : a + 10_000], np.arange(a, a + 10_000))
    assert len(ids._recent) < n and ids._hashes.size > 0  # merged at least once
    assert ids.label("doc-0123456") == 123456 and ids.label("doc-9999999") is None
    ids.remove(np.arange(0, n, 2))
    assert len(ids) == n // 2 and ids.label("doc-0000002") is None
    assert ids.label("doc-0000003") == 3
    ids.compact()  # as at a checkpoint: recent ids merged, dead ones dropped
    assert not ids._recent and ids._hashes.size == len(ids)
    assert ids.id(3) == "doc-0000003" and ids.ids(np.array([199_999])) == ["doc-0199999"]
    # Bookkeeping per live id beyond its 11 UTF-8 bytes: offsets and flags by label (9 bytes a
    # label, dead ones included: 18 here) and the sorted hashes with their labels (16 bytes).
    per_id = (ids.ram_bytes() - 11 * len(ids)) / len(ids)
    assert per_id <= 64, per_id


def test_hash_collisions_are_resolved_by_the_stored_bytes(monkeypatch):
    ids = IdMap()
    ids.assign(["x", "y"], np.arange(2))
    ids._merge()  # both in the base
    ids._hashes[:] = 7  # pretend they collide
    monkeypatch.setattr("engine.idmap.hash", lambda _k: 7, raising=False)
    assert ids.label("x") == 0 and ids.label("y") == 1 and ids.label("z") is None
    assert ids.label("\ud800") is None and "\ud800" not in ids  # never stored, never an error


def test_labels_of_many_keys_equal_one_key_lookups():
    ids = IdMap()
    names = [f"k{i}" for i in range(20_000)]
    ids.assign(names[:15_000], np.arange(15_000))  # merged into the sorted base
    ids.remove(np.arange(0, 15_000, 3))
    ids.assign(names[15_000:], np.arange(15_000, 20_000))  # partly in the recent dict
    keys = [f"k{i}" for i in np.random.default_rng(0).permutation(25_000).tolist()]
    assert ids.labels(keys) == [lab for k in keys if (lab := ids.label(k)) is not None]
    assert ids.labels(keys[:10]) == [lab for k in keys[:10] if (lab := ids.label(k)) is not None]
    assert IdMap().labels(keys) == []


def test_id_array_equals_one_id_at_a_time_in_both_paths():
    ids = IdMap()
    rng = np.random.default_rng(3)
    pool = ["a", "é", "", "日本", "d\x00e", "long-" + "x" * 40, "🙂"]
    names = [f"{pool[i % len(pool)]}{i}" for i in range(5_000)]
    ids.assign(names[:3_000], np.arange(3_000))
    ids.remove(np.arange(0, 3_000, 2))
    ids.compact()  # dead ids' bytes dropped: offsets move
    ids.assign(names[3_000:], np.arange(3_000, 5_000))
    live = np.flatnonzero(ids._alive[:5_000])
    for shape in [(3,), (4, 10), (300,), (60, 10)]:  # below and above the Arrow threshold
        labels = rng.choice(live, size=shape)
        got = ids.id_array(labels)
        assert got.shape == shape and got.dtype == object
        assert got.reshape(-1).tolist() == [ids.id(x) for x in labels.reshape(-1).tolist()]
        assert ids.ids(labels.reshape(-1)) == got.reshape(-1).tolist()
    assert ids.id_array(np.empty((0, 10), dtype=np.int64)).shape == (0, 10)
