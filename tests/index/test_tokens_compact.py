"""Compact token codes for the Chamfer rerank (``tokens=int8|res4|res2``, index.token_codes):
ranking and scores against the float16 rerank of the same candidates, the spec, memory
accounting, save/load with the full tokens memory-mapped and untouched by search, corruption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import index
from index import CorruptFileError, memory, storage
from index.tokens import check_token_sets

D = 64
CODECS = ["int8", "res4", "res2"]
# Floors on recall@10 of the compact rerank against the float16 rerank of the same 50 candidates,
# and on the relative score error of the same documents (observed on seed 0 in comments). The
# synthetic documents are hard: the median gap between the 10th and 11th score is 0.2%, so
# residual codes reorder near-ties (on SciFact they keep nDCG@10: see README).
RECALL_FLOOR = {"int8": 0.98, "res4": 0.65, "res2": 0.45}  # 0.987 / 0.728 / 0.500
SCORE_RTOL = {"int8": 0.005, "res4": 0.08, "res2": 0.2}  # 0.0028 / 0.063 / 0.144


def token_sets(clustered, n: int, seed: int, max_len: int = 40) -> list[np.ndarray]:
    """Documents of 5-40 tokens drawn from 200 clusters on 10-d latent subspaces (the index
    tests' ``clustered`` generator)."""
    x, _ = clustered(n * max_len, D, seed=seed, n_centres=200)
    lens = np.random.default_rng(seed + 1).integers(5, max_len + 1, n)
    off = np.concatenate([[0], np.cumsum(lens)])
    return [x[off[i] : off[i + 1]] for i in range(n)]


@pytest.fixture(scope="module")
def docs(make_clustered) -> list[np.ndarray]:
    return token_sets(make_clustered, 1500, 0)


@pytest.fixture(scope="module")
def queries(make_clustered) -> list[np.ndarray]:
    return [q[:16] for q in token_sets(make_clustered, 60, 1)]


def build(spec: str, docs: list[np.ndarray], batches: int = 3) -> index.MultiVectorIndex:
    idx = index.from_spec(spec, D)
    assert isinstance(idx, index.MultiVectorIndex)
    bounds = np.linspace(0, len(docs), batches + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        idx.add(docs[a:b], np.arange(a, b))
    return idx


@pytest.fixture(scope="module")
def built(docs) -> dict[str, index.MultiVectorIndex]:
    return {t: build(f"chamfer:tokens={t}", docs) for t in ["f16", *CODECS]}


def prepared(idx: index.MultiVectorIndex, queries: list[np.ndarray]):
    q, q_off = check_token_sets(queries, D, "queries")
    return idx._prepare(q), q_off


@pytest.mark.parametrize("codec", CODECS)
def test_rerank_keeps_the_float16_ranking(built, queries, codec):
    f16, compact = built["f16"], built[codec]
    q, q_off = prepared(f16, queries)
    _, cand = f16.search(queries, 50)
    want_s, want = f16.rerank(q, q_off, cand, 10)
    _, got = compact.rerank(q, q_off, cand, 10)
    assert index.recall_at_k(got, want) >= RECALL_FLOOR[codec]
    # The same documents score within a relative tolerance of their float16 scores.
    same_s, same = compact.rerank(q, q_off, want, 10)
    order = np.argsort(same, axis=1)
    ref = np.take_along_axis(want_s, np.argsort(want, axis=1), 1)
    np.testing.assert_allclose(np.take_along_axis(same_s, order, 1), ref, rtol=SCORE_RTOL[codec])
    # Exhaustive search scores the codes too: it agrees with the compact rerank of its own top 50.
    ex_s, ex = compact.search(queries, 10)
    _, ex_cand = compact.search(queries, 50)
    np.testing.assert_array_equal(compact.rerank(q, q_off, ex_cand, 10)[1], ex)
    assert np.isfinite(ex_s).all()


@pytest.mark.parametrize("codec", CODECS)
def test_muvera_and_token_ann_rerank_with_codes(docs, queries, codec):
    """Their rerank is the compact exhaustive index's, over their candidates (same docs and
    batches: the same codes, the codebook included)."""
    exact = build(f"chamfer:tokens={codec}", docs[:600], batches=2)
    q, q_off = prepared(exact, queries)
    for spec in (
        f"muvera:k_sim=3,d_proj=8,r_reps=8,inner=flat,candidates=40,tokens={codec}",
        f"token_ann:k_tokens=5,tokens={codec}",
    ):
        idx = build(spec, docs[:600], batches=2)
        want_s, want = exact.rerank(q, q_off, idx.candidate_labels(queries), 10)
        got_s, got = idx.search(queries, 10)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got_s, want_s, rtol=1e-6)


def test_spec_round_trips_and_default_is_left_out():
    assert index.from_spec("chamfer", D).spec == "chamfer"
    assert index.from_spec("chamfer:tokens=f16", D).spec == "chamfer"
    assert index.from_spec("chamfer:tokens=INT8", D).spec == "chamfer:tokens=int8"
    spec = "muvera:k_sim=2,d_proj=4,r_reps=2,inner=flat,tokens=res2"
    idx = index.from_spec(spec, D)
    assert idx.spec == (
        "muvera:k_sim=2,d_proj=4,r_reps=2,d_final=0,seed=0,inner=flat,candidates=100,tau=0,"
        "tokens=res2"
    )
    assert index.from_spec(idx.spec, D).spec == idx.spec and idx.get_config()["tokens"] == "res2"
    assert index.from_spec("token_ann:tokens=res4", D).spec.startswith("token_ann:k_tokens=10,")
    with pytest.raises(ValueError, match="tokens must be one of f16, int8, res4, res2, got 'int4'"):
        index.from_spec("chamfer:tokens=int4", D)


def test_memory_usage_reports_codes_apart(built, docs, tmp_path):
    n_tokens = sum(len(d) for d in docs)
    offsets = (len(docs) + 1) * 8
    f16 = built["f16"].memory_usage()
    assert "codes" not in f16 and f16["tokens"]["ram"] == n_tokens * D * 2 + offsets
    int8 = built["int8"].memory_usage()
    assert int8["codes"]["ram"] == n_tokens * D  # cosine: no scales, half of float16
    ip_int8 = index.from_spec("chamfer:tokens=int8", D, "ip")  # ip keeps a scale per token
    ip_int8.add(docs[:50], np.arange(50))
    assert ip_int8.memory_usage()["codes"]["ram"] == sum(len(d) for d in docs[:50]) * (D + 4)
    res2 = built["res2"]
    codec = res2._codec
    book = codec.centroids.nbytes + codec.cutoffs.nbytes + codec.buckets.nbytes
    assert res2.memory_usage()["codes"]["ram"] == n_tokens * (D // 4 + 2) + book
    # Saved and loaded: the full tokens are a memory map (0 RAM), the codes are read into RAM.
    for codec in CODECS:
        built[codec].save(tmp_path / codec)
        back = index.load(tmp_path / codec)
        mem = back.memory_usage(tmp_path / codec)
        assert mem["tokens"]["ram"] == offsets and mem["codes"]["ram"] > 0
        assert mem["codes"]["ram"] == built[codec].memory_usage()["codes"]["ram"]
        assert mem["codes"]["disk"] > 0 and mem["tokens"]["disk"] > n_tokens * D * 2
        assert isinstance(back._store.tokens, np.memmap)
        assert not memory.is_mapped(back._store._st.base["codes"])


class _Untouchable:
    """Stands in for the full tokens: any read fails the test."""

    shape = (0, D)
    dtype = np.dtype(np.float16)

    def __getitem__(self, key):
        raise AssertionError("the search path read the full tokens")


@pytest.mark.parametrize("codec", CODECS)
def test_reload_answers_the_same_without_reading_full_tokens(built, docs, queries, codec, tmp_path):
    spec = f"muvera:k_sim=3,d_proj=8,r_reps=8,inner=flat,candidates=60,tokens={codec}"
    idx = build(spec, docs[:400])
    idx.remove(np.arange(0, 400, 7))
    idx.save(tmp_path / "a")
    before = idx.search(queries, 10)
    back = index.load(tmp_path / "a")
    after = back.search(queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    back._store._st.base["tokens"] = _Untouchable()  # type: ignore[assignment]
    np.testing.assert_array_equal(back.search(queries, 10)[1], before[1])
    allowed = np.arange(1, 400, 3)
    filtered = back.search(queries, 5, allowed=allowed)[1]
    assert np.isin(filtered[filtered >= 0], allowed).all()


@pytest.mark.parametrize("codec", CODECS)
def test_adds_after_reload_extend_the_codes(docs, queries, codec, tmp_path):
    one = build(f"chamfer:tokens={codec}", docs[:300], batches=1)
    one.save(tmp_path)
    back = index.load(tmp_path)
    base = back._store.tokens
    back.add(docs[300:330], np.arange(300, 330))
    one.add(docs[300:330], np.arange(300, 330))
    assert back._store.tokens is base and back._store.n_base == 300
    s1, l1 = one.search(queries, 10)
    s2, l2 = back.search(queries, 10)
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_allclose(s1, s2, rtol=1e-6)


def test_residual_codebook_retrains_as_the_store_grows(docs):
    idx = index.from_spec("chamfer:tokens=res4", D)
    codec = idx._codec
    idx.add(docs[:10], np.arange(10))
    first = codec.trained_on
    assert first == sum(len(d) for d in docs[:10]) and codec.centroids is not None
    idx.add(docs[10:20], np.arange(10, 20))
    assert codec.trained_on == first  # grown less than fourfold
    idx.add(docs[20:200], np.arange(20, 200))
    n = idx._store.n_tokens
    assert codec.trained_on == n and codec.centroids.shape[0] > 16
    # After re-training, every stored code is what the final codebook gives the full tokens.
    full = idx._store.blocks("tokens").block(0, n).astype(np.float32)
    fresh = codec.encode(full)
    for col, want in fresh.items():
        np.testing.assert_array_equal(idx._store.blocks(col).block(0, n), want)


def test_int8_codes_round_trip_within_half_a_step():
    from index.token_codes import Int8Codec

    rng = np.random.default_rng(5)
    x = rng.standard_normal((100, D)).astype(np.float32)
    x[3] = 0.0  # an all-zero token (ip metric) keeps a positive scale
    codec = Int8Codec(D, normalize=False)
    cols = codec.encode(x)
    import torch

    back = codec.decode(cols, torch.device("cpu")).numpy()
    step = cols["scales"][:, None]
    assert (np.abs(back - x) <= 0.5 * step + 1e-7).all() and (cols["scales"] > 0).all()


# ---- corruption --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_dirs(built, docs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compact")
    out = {}
    for codec in CODECS:
        built[codec].save(root / codec)
        out[codec] = root / codec
    ip = index.from_spec("chamfer:tokens=int8", D, "ip")  # keeps a scale per token
    ip.add(docs[:100], np.arange(100))
    ip.save(root / "int8-ip")
    out["int8-ip"] = root / "int8-ip"
    return out


CODE_FILES = {
    "int8": ["codes.npy"],
    "int8-ip": ["codes.npy", "scales.npy"],
    "res4": ["codes.npy", "centroid_ids.npy", "centroids.npy", "cutoffs.npy", "buckets.npy"],
    "res2": ["codes.npy", "centroid_ids.npy", "centroids.npy", "cutoffs.npy", "buckets.npy"],
}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("codec", [*CODECS, "int8-ip"])
@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_code_files_are_named(saved_dirs, codec, how, tmp_path):
    names = json.loads((saved_dirs[codec] / "index.json").read_text())["files"]
    assert set(CODE_FILES[codec]) <= set(names)
    for i, name in enumerate(CODE_FILES[codec]):
        d = _copy(saved_dirs[codec], tmp_path / str(i))
        data = bytearray((d / name).read_bytes())
        if how == "flip":
            data[len(data) // 2 + 1] ^= 0x21
        else:
            data = data[: len(data) // 2]
        (d / name).write_bytes(bytes(data))
        with pytest.raises(CorruptFileError, match=name.replace(".", r"\.")):
            index.load(d)


@pytest.mark.parametrize(
    "codec, name, change",
    [
        ("int8", "codes.npy", lambda a: a[:, :-1]),
        ("int8", "codes.npy", lambda a: a[:-1]),
        ("int8", "codes.npy", lambda a: a.astype(np.int16)),
        ("int8-ip", "scales.npy", lambda a: -a),
        ("int8-ip", "scales.npy", lambda a: np.where(np.arange(a.size) == 3, np.nan, a)),
        ("int8-ip", "scales.npy", lambda a: a[:-1]),
        ("res4", "centroid_ids.npy", lambda a: np.full_like(a, 65535)),
        ("res4", "centroid_ids.npy", lambda a: a.astype(np.int64)),
        ("res4", "codes.npy", lambda a: a[:, :-1]),
        ("res4", "centroids.npy", lambda a: np.where(a > 0, np.inf, a).astype(a.dtype)),
        ("res4", "centroids.npy", lambda a: a[:, :-1]),
        ("res2", "cutoffs.npy", lambda a: a[:-1]),
        ("res2", "buckets.npy", lambda a: np.r_[a, a[:1]]),
    ],
)
def test_crafted_code_files_are_named(saved_dirs, codec, name, change, tmp_path, craft):
    d = _copy(saved_dirs[codec], tmp_path / "d")
    craft(d, name, change(np.load(d / name)))
    with pytest.raises(CorruptFileError, match=name.replace(".", r"\.")):
        index.load(d)


def test_manifest_codes_state_is_checked(saved_dirs, tmp_path):
    for codec, state in (("res4", {"name": "res2", "trained_on": 5}), ("int8", None)):
        d = _copy(saved_dirs[codec], tmp_path / codec)
        m = json.loads((d / "index.json").read_text())
        m["token_codes"] = state
        (d / "index.json").write_text(json.dumps(m))
        with pytest.raises(CorruptFileError, match=r"index\.json: .*token_codes"):
            index.load(d)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("dim", [10, 16])  # 10: the last code byte is part padding
def test_residual_decode_matches_a_reference(bits, dim):
    import torch

    from index.token_codes import ResidualCodec

    rng = np.random.default_rng(bits + dim)
    x = rng.standard_normal((3000, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    codec = ResidualCodec(dim, normalize=True, bits=bits)
    cols = codec.encode(x)
    assert cols["codes"].shape == (3000, -(-dim * bits // 8))
    got = codec.decode(cols, torch.device("cpu")).numpy()
    # Unpack the codes by hand: value j of a byte is in bits j*b .. j*b + b - 1.
    per = 8 // bits
    q = np.stack([(cols["codes"] >> (j * bits)) & ((1 << bits) - 1) for j in range(per)], -1)
    q = q.reshape(3000, -1)[:, :dim]
    want = codec.centroids[cols["centroid_ids"]] + codec.buckets[q, np.arange(dim)]
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # The buckets hold the residuals: decoding is closer to the tokens than the centroids are.
    err = np.linalg.norm(got - x, axis=1).mean()
    assert err < np.linalg.norm(codec.centroids[cols["centroid_ids"]] - x, axis=1).mean()


def test_quick_open_still_hashes_the_codes(saved_dirs, tmp_path):
    """A quick open skips the SHA-256 of the memory-mapped full tokens only: the codes that
    scoring reads are loaded into RAM and always hashed."""
    d = _copy(saved_dirs["int8"], tmp_path / "d")
    data = bytearray((d / "codes.npy").read_bytes())
    data[-5] ^= 0x10
    (d / "codes.npy").write_bytes(bytes(data))
    with storage.verification("quick"), pytest.raises(CorruptFileError, match=r"codes\.npy"):
        index.load(d)
    assert index.MultiVectorIndex.mapped_files == {"tokens.npy"}
