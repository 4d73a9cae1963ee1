"""The Count-Sketch final projection of FDEs (index.fde_sketch, ``muvera:...,final=sketch``):
unbiased inner products, seeded and persisted arrays, failure paths, old dense indexes, and PQ
codes for the FDEs through the inner index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import index
from index import ChamferIndex, CorruptFileError, MuveraIndex, fde_sketch
from index.fde import FDE

D = 16
SKETCH = "muvera:k_sim=3,d_proj=8,r_reps=4,d_final=64,final=sketch,seed=5,inner=flat"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def token_sets(seed: int, n: int, low: int = 3, high: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [unit(rng.standard_normal((int(rng.integers(low, high)), D))) for _ in range(n)]


def pack(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sets], out=offsets[1:])
    return np.concatenate(sets).astype(np.float32), offsets


@pytest.fixture(scope="module")
def docs() -> list[np.ndarray]:
    return token_sets(1, 120)


@pytest.fixture(scope="module")
def queries() -> list[np.ndarray]:
    return token_sets(2, 8, 2, 6)


# ---- the estimator ------------------------------------------------------------------------------
@pytest.mark.parametrize("final", ["sketch", "dense"])
def test_sketched_inner_products_are_unbiased(final):
    """Fixed unsketched FDEs q, d (d_FDE = 256); 200 final projections to d_final = 32, each
    drawn from its own seed and applied by the real encoding path. For one draw the estimate
    <Sq, Sd> has mean <q, d> and variance V = (|q|^2 |d|^2 + <q, d>^2 - 2 sum_i q_i^2 d_i^2)
    / d_final, for the Count-Sketch (colliding pairs, probability 1 / d_final, add s_i s_j q_i d_j
    of mean 0) and the scaled dense +-1 matrix alike. The mean of 200 independent draws then has
    standard error sqrt(V / 200), and by the central limit theorem it lies within 4 standard
    errors of <q, d> with probability 1 - 6e-5 per pair (12 pairs; the draws are seeded, so the
    outcome is fixed: the largest deviation observed is 2.0 standard errors for the sketch, 2.6
    for the dense matrix). A wrong scale fails it: the standard error is 0.22 against inner
    products of 1.7 on average. The sample variance must also match V within a factor 2 (its
    own relative spread is about 0.1-0.2; observed 0.78-1.13): the estimator is as noisy as the
    analysis says, neither exact nor broken."""
    d_final, draws = 32, 200
    base = FDE(D, k_sim=3, d_proj=8, r_reps=4, seed=0)
    qt, qo = pack(token_sets(3, 3, 2, 6))
    dt, do = pack(token_sets(4, 4))
    q = base.encode_queries(qt, qo).astype(np.float64)
    d = base.encode_documents(dt, do).astype(np.float64)
    exact = q @ d.T
    variance = (np.outer((q**2).sum(1), (d**2).sum(1)) + exact**2 - 2 * (q**2) @ (d**2).T) / d_final
    shared = {k: v for k, v in base.matrices.items()}
    estimates = np.empty((draws, *exact.shape))
    for s in range(draws):
        drawn = FDE(D, k_sim=3, d_proj=8, r_reps=4, d_final=d_final, seed=s + 1, final=final)
        fde = FDE(
            D,
            k_sim=3,
            d_proj=8,
            r_reps=4,
            d_final=d_final,
            final=final,
            matrices={**drawn.matrices, **shared},
        )
        sq = fde.encode_queries(qt, qo).astype(np.float64)
        sd = fde.encode_documents(dt, do).astype(np.float64)
        estimates[s] = sq @ sd.T
    z = (estimates.mean(0) - exact) / np.sqrt(variance / draws)
    assert np.abs(z).max() <= 4.0, z
    ratio = estimates.var(0, ddof=1) / variance
    assert (ratio > 0.5).all() and (ratio < 2.0).all(), ratio


def test_count_sketch_equals_its_sparse_matrix(monkeypatch):
    """Applied in awkward gather chunks (3 rows), the sketch equals x @ M with M[i, h(i)] =
    s(i): every coordinate lands once, signed, and buckets nobody maps to stay zero."""
    rng = np.random.default_rng(7)
    d_in, d_final = 300, 500  # more buckets than coordinates: many stay empty
    arrays = fde_sketch.draw_sketch(rng, d_in, d_final)
    m = np.zeros((d_in, d_final))
    m[np.arange(d_in), arrays[fde_sketch.BUCKETS]] = arrays[fde_sketch.SIGNS]
    x = rng.standard_normal((10, d_in)).astype(np.float32)
    monkeypatch.setattr(fde_sketch, "_GATHER_BYTES", 3 * 4 * d_in)
    out = np.zeros((10, d_final), dtype=np.float32)
    fde_sketch.CountSketch(arrays[fde_sketch.BUCKETS], arrays[fde_sketch.SIGNS], d_final).apply(
        x, out
    )
    np.testing.assert_allclose(out, x @ m, rtol=1e-5, atol=1e-5)


# ---- seeds, spec, persistence -------------------------------------------------------------------
def test_same_seed_same_sketch_other_seed_another():
    a, b, c = (
        FDE(D, k_sim=3, d_proj=8, r_reps=4, d_final=64, final="sketch", seed=s) for s in (5, 5, 6)
    )
    names = (fde_sketch.BUCKETS, fde_sketch.SIGNS)
    assert set(a.matrices) == {"hyperplanes", "projections", *names}
    for name in names:
        np.testing.assert_array_equal(a.matrices[name], b.matrices[name])
        assert not np.array_equal(a.matrices[name], c.matrices[name])
    assert a.matrices[names[0]].dtype == np.int32 and a.matrices[names[1]].dtype == np.int8
    # The final projection is drawn last: both kinds share a seed's hyperplanes and projections.
    dense = FDE(D, k_sim=3, d_proj=8, r_reps=4, d_final=64, seed=5)
    for name in ("hyperplanes", "projections"):
        np.testing.assert_array_equal(a.matrices[name], dense.matrices[name])


def test_spec_names_the_sketch_and_leaves_dense_out():
    idx = index.from_spec(SKETCH, D)
    assert isinstance(idx, MuveraIndex) and idx.fde.final == "sketch"
    assert idx.spec == (
        "muvera:k_sim=3,d_proj=8,r_reps=4,d_final=64,final=sketch,seed=5,inner=flat,"
        "candidates=100,tau=0"
    )
    assert index.from_spec(idx.spec, D).spec == idx.spec
    dense = index.from_spec("muvera:k_sim=3,d_proj=8,r_reps=4,d_final=64,final=DENSE", D)
    assert dense.spec == index.from_spec("muvera:k_sim=3,d_proj=8,r_reps=4,d_final=64", D).spec
    assert ",final=" not in dense.spec and dense.get_config()["final"] == "dense"
    with pytest.raises(ValueError, match="final must be one of"):
        index.from_spec("muvera:d_final=8,final=sparse", D)


def test_the_papers_configuration_needs_the_sketch():
    """r_reps=40, k_sim=6, d_proj=128 at d=128: d_FDE = 327,680, sketched to 10,240."""
    spec = "muvera:r_reps=40,k_sim=6,d_proj=128,d_final=10240,final=sketch,inner=flat"
    idx = index.from_spec(spec, 128)
    assert isinstance(idx, MuveraIndex)
    assert idx.fde.d_fde == 327_680 and idx.fde.out_dim == 10_240
    assert idx.memory_usage()["fde"]["ram"] < 2 << 20  # hyperplanes and sketch: ~1.7 MB
    with pytest.raises(ValueError, match="final=sketch"):
        index.from_spec(spec.replace(",final=sketch", ""), 128)


def test_save_reopen_is_bit_equal(docs, queries, tmp_path):
    idx = index.from_spec(SKETCH, D)
    labels = np.arange(len(docs), dtype=np.int64) * 2
    idx.add(docs, labels)
    idx.remove(labels[:5])
    before = idx.search(queries, 10)
    qf, df = idx.encode_queries(queries), idx.encode_documents(docs)
    idx.save(tmp_path / "s")
    for name in ("fde_sketch_buckets.npy", "fde_sketch_signs.npy"):
        assert (tmp_path / "s" / name).is_file()
    assert not (tmp_path / "s" / "fde_final.npy").exists()
    back = index.load(tmp_path / "s")
    assert isinstance(back, MuveraIndex) and back.spec == idx.spec
    for name, arr in idx.fde.matrices.items():
        np.testing.assert_array_equal(back.fde.matrices[name], arr)
        assert back.fde.matrices[name].dtype == arr.dtype
    np.testing.assert_array_equal(back.encode_queries(queries), qf)
    np.testing.assert_array_equal(back.encode_documents(docs), df)
    after = back.search(queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])


# ---- failure paths ------------------------------------------------------------------------------
@pytest.fixture()
def saved(docs, tmp_path) -> Path:
    idx = index.from_spec(SKETCH, D)
    idx.add(docs[:30], np.arange(30))
    idx.save(tmp_path / "idx")
    return tmp_path / "idx"


@pytest.mark.parametrize(
    "name, change",
    [
        ("fde_sketch_buckets.npy", lambda a: a[:-1]),
        ("fde_sketch_buckets.npy", lambda a: a + 1),  # bucket 64 of 64
        ("fde_sketch_buckets.npy", lambda a: a - 1),  # bucket -1
        ("fde_sketch_buckets.npy", lambda a: a.astype(np.int64)),
        ("fde_sketch_buckets.npy", lambda a: a.reshape(2, -1)),
        ("fde_sketch_signs.npy", lambda a: a * 2),
        ("fde_sketch_signs.npy", lambda a: np.r_[a, a]),
        ("fde_sketch_signs.npy", lambda a: a.astype(np.float32)),
    ],
)
def test_wrong_sketch_arrays_are_named(saved, name, change, craft):
    craft(saved, name, change(np.load(saved / name)))
    with pytest.raises(CorruptFileError, match=name.replace(".", r"\.")):
        index.load(saved)


@pytest.mark.parametrize("name", ["fde_sketch_buckets.npy", "fde_sketch_signs.npy"])
@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_corrupted_sketch_files_are_named(saved, name, how):
    path = saved / name
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) - 5] ^= 0x5A
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        path.unlink()
    with pytest.raises(CorruptFileError, match=name.replace(".", r"\.")):
        index.load(saved)


# ---- indexes from before the option -------------------------------------------------------------
def test_an_old_dense_index_loads_and_answers_identically(docs, queries, tmp_path):
    """An index saved before ``final`` existed: its manifest's config and spec lack the key.
    It reopens with the dense matrix it was built with and answers as before."""
    spec = "muvera:k_sim=3,d_proj=8,r_reps=4,d_final=48,seed=2,inner=flat"
    idx = index.from_spec(spec, D)
    idx.add(docs, np.arange(len(docs)))
    before = idx.search(queries, 10)
    idx.save(tmp_path / "old")
    mpath = tmp_path / "old" / "index.json"
    manifest = json.loads(mpath.read_text())
    assert manifest["config"].pop("final") == "dense"
    assert ",final=" not in manifest["spec"]  # the spec string reads as it did before
    mpath.write_text(json.dumps(manifest))
    back = index.load(tmp_path / "old")
    assert isinstance(back, MuveraIndex) and back.fde.final == "dense"
    assert back.spec == idx.spec == manifest["spec"]
    np.testing.assert_array_equal(back.fde.matrices["final"], idx.fde.matrices["final"])
    after = back.search(queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])


# ---- PQ codes for the FDEs ----------------------------------------------------------------------
def test_ivf_pq_inner_index_holds_the_sketched_fdes_as_codes(tmp_path):
    """IVF-PQ (``inner=ivf,inner_pq=16,inner_nbits=4``: 8 bytes a document) over sketched
    64-dimensional FDEs (256 bytes as float32): 32x smaller. It trains itself once it holds
    39 * 2**4 = 624 documents. With candidates covering the collection the rerank is exact."""
    sets = token_sets(9, 700, 2, 6)
    qs = token_sets(10, 6, 2, 5)
    spec = SKETCH.replace("inner=flat", "inner=ivf,inner_nlist=2,inner_nprobe=2,inner_pq=16")
    idx = index.from_spec(spec + ",inner_nbits=4", D)
    labels = np.arange(700, dtype=np.int64)
    idx.add(sets, labels)
    assert idx.inner.trained
    ram = {k: v["ram"] for k, v in idx.memory_usage().items()}
    assert ram["inner_codes"] == 700 * 8
    assert ram["inner_codes"] * 30 < 700 * idx.fde.out_dim * 4
    exact = ChamferIndex(D)
    exact.add(sets, labels)
    want = exact.search(qs, 5)[1]
    np.testing.assert_array_equal(idx.search(qs, 5, candidates=700)[1], want)
    few = idx.search(qs, 5, candidates=100)
    idx.save(tmp_path / "pq")
    back = index.load(tmp_path / "pq")
    assert back.spec == idx.spec
    assert back.memory_usage()["inner_codes"]["ram"] == ram["inner_codes"]
    again = back.search(qs, 5, candidates=100)
    np.testing.assert_array_equal(again[1], few[1])
    np.testing.assert_array_equal(again[0], few[0])


def test_pq_kind_as_inner_index_keeps_codes_in_ram_and_rows_on_disk(tmp_path):
    """``inner=pq`` searches PQ codes and rescores from float32 rows, which a reopened index
    memory-maps: in RAM the FDEs then cost their codes (plus faiss' lists), on disk both."""
    sets = token_sets(11, 650, 2, 5)
    spec = SKETCH.replace("inner=flat", "inner=pq,inner_M=16,inner_nbits=4,inner_nlist=2")
    idx = index.from_spec(spec, D)
    idx.add(sets, np.arange(650))
    before = idx.search(sets[:4], 5)
    assert (before[1][:, 0] == np.arange(4)).all()  # a document is its own best match
    idx.save(tmp_path / "pq")
    back = index.load(tmp_path / "pq")
    usage = back.memory_usage(tmp_path / "pq")
    float32_fdes = 650 * idx.fde.out_dim * 4
    assert usage["inner_vectors"]["ram"] == 0 and usage["inner_vectors"]["disk"] >= float32_fdes
    assert usage["inner_codes"]["ram"] * 8 < float32_fdes
    after = back.search(sets[:4], 5)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
