"""MuveraIndex and the multi-vector baselines (exhaustive Chamfer, token-level ANN heuristic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import index
from index import ChamferIndex, CorruptFileError, MuveraIndex, TokenANNIndex, scoring
from index.spec import parse_spec

D = 64


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(
    seed: int, n_docs: int, n_queries: int, topics: int = 40, words: int = 25
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token sets around topic centres: each topic has ``words`` word vectors near its centre, a
    document draws 8-32 noisy tokens from the words of one or two topics, and a query draws 4-16
    noisier tokens from one document. Many documents share topics: not trivially separable."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((topics, D)))
    vocab = unit(centres[:, None, :] + 0.9 * unit(rng.standard_normal((topics, words, D))))
    docs = []
    for _ in range(n_docs):
        chosen = rng.choice(topics, int(rng.integers(1, 3)), replace=False)
        n = int(rng.integers(8, 33))
        w = vocab[rng.choice(chosen, n), rng.integers(0, words, n)]
        docs.append(unit(w + 0.35 * unit(rng.standard_normal((n, D)))))
    queries = []
    for _ in range(n_queries):
        src = docs[int(rng.integers(n_docs))]
        n = int(rng.integers(4, 17))
        queries.append(
            unit(src[rng.integers(0, len(src), n)] + 0.5 * unit(rng.standard_normal((n, D))))
        )
    return docs, queries


def pack(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in sets], out=offsets[1:])
    return np.concatenate(sets).astype(np.float32), offsets


# ---- a 2,000-document set: recall ---------------------------------------------------------------
@pytest.fixture(scope="module")
def big() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    docs, queries = clustered(0, 2000, 100)
    return docs, queries, 10 * np.arange(len(docs), dtype=np.int64) + 7  # labels are not rows


@pytest.fixture(scope="module")
def big_exact(big) -> ChamferIndex:
    docs, _, labels = big
    ex = ChamferIndex(D)
    ex.add(docs, labels)
    return ex


@pytest.fixture(scope="module")
def big_muvera(big) -> MuveraIndex:
    docs, _, labels = big
    mv = MuveraIndex(D, k_sim=5, d_proj=16, r_reps=20, inner="flat")
    mv.add(docs, labels)
    return mv


def test_exhaustive_matches_reference_kernel(big, big_exact):
    docs, queries, labels = big
    qt, qo = pack(queries[:10])
    dt, do = pack(docs)
    ref = scoring.chamfer_matrix(qt, qo, dt.astype(np.float16), do)
    scores, got = big_exact.search(queries[:10], 10)
    np.testing.assert_allclose(scores, -np.sort(-ref, axis=1)[:, :10], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(ref, (got - 7) // 10, 1), scores, atol=1e-4)


def test_muvera_recall_against_exhaustive_chamfer(big, big_exact, big_muvera):
    """(r_reps, k_sim, d_proj) = (20, 5, 16), exact FDE search (inner=flat)."""
    _, queries, _ = big
    want_s, want = big_exact.search(queries, 10)
    floors = {20: 0.66, 50: 0.93, 100: 0.98}
    # Observed on seed 0: 0.718 / 0.962 / 0.998 at 20 / 50 / 100 candidates.
    for cand, floor in floors.items():
        scores, got = big_muvera.search(queries, 10, candidates=cand)
        assert index.recall_at_k(got, want) >= floor, cand
        # The rerank is exact: a returned document's score is its Chamfer similarity, and
        # where MUVERA finds the true top-10, scores agree with the exhaustive ones.
        same = (got == want).all(axis=1)
        np.testing.assert_allclose(scores[same], want_s[same], rtol=1e-5, atol=1e-4)
    cand = big_muvera.candidate_labels(queries, candidates=50)
    assert cand.shape == (len(queries), 50) and (cand >= 0).all()


def test_ball_carving_keeps_recall(big, big_exact, big_muvera):
    _, queries, _ = big
    _, want = big_exact.search(queries, 10)
    _, got = big_muvera.search(queries, 10, candidates=100, tau=70)
    # Observed on seed 0: 0.979 (exact rerank: 0.998).
    assert index.recall_at_k(got, want) >= 0.95


def test_heuristic_baseline_recall_grows_with_k_tokens(big, big_exact):
    docs, queries, labels = big
    heur = TokenANNIndex(D, inner="flat")
    heur.add(docs, labels)
    _, want = big_exact.search(queries, 10)
    recalls, sizes = [], []
    for kt in (4, 16):
        cand = heur.candidate_labels(queries, k_tokens=kt)
        sizes.append(float((cand >= 0).sum(1).mean()))
        recalls.append(index.recall_at_k(heur.search(queries, 10, k_tokens=kt)[1], want))
    # Observed on seed 0: 24.9 / 66.9 candidates -> recall 0.600 / 0.966 (k_tokens 2 and 8:
    # 10.6 / 44.6 candidates -> 0.338 / 0.844); MUVERA above: 0.962 at 50 candidates.
    assert recalls == sorted(recalls) and sizes == sorted(sizes)
    assert recalls[-1] >= 0.93


def test_filtered_search_on_a_large_allowed_set(big, big_exact, big_muvera):
    """More allowed labels than ``exact_filter_max``: FDE search with the filter, then rerank."""
    _, queries, labels = big
    allowed = labels[np.random.default_rng(1).permutation(len(labels))[:1500]]
    assert allowed.size > big_muvera.exact_filter_max
    _, want = big_exact.search(queries, 10, allowed=allowed)
    _, got = big_muvera.search(queries, 10, candidates=100, allowed=allowed)
    assert np.isin(got[got >= 0], allowed).all()
    assert index.recall_at_k(got, want) >= 0.95


# ---- small indexes: protocol, persistence, failure paths -----------------------------------------
SMALL = "muvera:k_sim=3,d_proj=8,r_reps=4,d_final=0,seed=3,inner={inner},candidates=40"
INNERS = {
    "flat": "flat",
    "hnsw": "hnsw,inner_M=8,inner_ef_construction=64,inner_ef=64",
    "ivf": "ivf,inner_nlist=4,inner_nprobe=4",
    "ivf-pq": "ivf,inner_nlist=2,inner_nprobe=2,inner_pq=8,inner_nbits=4",
}


@pytest.fixture(scope="module")
def small() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    docs, queries = clustered(1, 300, 12, topics=10)
    return docs, queries, np.arange(300, dtype=np.int64) * 3 + 1


def build(spec: str, small, n: int | None = None) -> index.MultiVectorIndex:
    docs, _, labels = small
    idx = index.from_spec(spec, D, "cosine")
    assert isinstance(idx, index.MultiVectorIndex)
    n = n or len(docs)
    for a in range(0, n, 128):  # several add batches
        idx.add(docs[a : min(n, a + 128)], labels[a : min(n, a + 128)])
    return idx


def exact_top(small, k: int, allowed=None, removed=()) -> tuple[np.ndarray, np.ndarray]:
    docs, queries, labels = small
    keep = ~np.isin(labels, list(removed))
    if allowed is not None:
        keep &= np.isin(labels, allowed)
    dt, do = pack([d for d, ok in zip(docs, keep, strict=True) if ok])
    qt, qo = pack(queries)
    ref = scoring.chamfer_matrix(qt, qo, dt.astype(np.float16), do)
    order = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ref, order, 1), labels[keep][order]


@pytest.mark.parametrize("inner", list(INNERS))
def test_every_inner_kind_finds_the_exact_top_k(small, inner):
    """With candidates >= the collection, the rerank sees every document: exact results."""
    idx = build(SMALL.format(inner=INNERS[inner]), small)
    _, queries, _ = small
    want_s, want = exact_top(small, 5)
    scores, got = idx.search(queries, 5, candidates=400)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-4)
    _, few = idx.search(queries, 5, candidates=60)
    assert index.recall_at_k(few, want) >= 0.8  # observed 0.95-1.0 across inner kinds


def test_spec_round_trips():
    spec = "muvera:k_sim=3,d_proj=8,r_reps=4,inner=hnsw,inner_M=8,candidates=50,tau=70"
    idx = index.from_spec(spec, D, "ip")
    assert idx.spec == (
        "muvera:k_sim=3,d_proj=8,r_reps=4,d_final=0,seed=0,inner=hnsw,candidates=50,tau=70,"
        "inner_M=8,inner_ef_construction=200,inner_ef=64"
    )
    again = index.from_spec(idx.spec, D, "ip")
    assert again.spec == idx.spec and again.get_config() == idx.get_config()
    assert parse_spec(idx.spec)[1]["inner"] == "hnsw"
    default = index.from_spec("muvera", D)
    assert default.spec.startswith("muvera:k_sim=5,d_proj=16,r_reps=20,d_final=0,seed=0,inner=hnsw")
    assert isinstance(default, MuveraIndex) and default.fde.out_dim == 20 * 32 * 16
    assert index.from_spec("token_ann:k_tokens=4", D).spec.startswith(
        "token_ann:k_tokens=4,inner=flat"
    )
    assert index.from_spec("chamfer", D).spec == "chamfer"


def test_final_projection_and_identity(small):
    idx = build("muvera:k_sim=2,d_proj=0,r_reps=3,d_final=96,inner=flat", small, 50)
    assert idx.fde.d_proj == D and idx.fde.out_dim == 96 and idx.inner.dim == 96
    _, queries, _ = small
    assert idx.encode_queries(queries).shape == (len(queries), 96)


def test_deletes_are_never_returned_and_readds_work(small):
    idx = build(SMALL.format(inner=INNERS["hnsw"]), small)
    docs, queries, labels = small
    gone = labels[::3]
    assert idx.remove(np.r_[gone, 999_999]) == gone.size
    assert idx.remove(gone) == 0
    assert len(idx) == len(labels) - gone.size and not idx.contains(gone).any()
    _, got = idx.search(queries, 10, candidates=400)
    assert not np.isin(got, gone).any()
    np.testing.assert_array_equal(got, exact_top(small, 10, removed=gone)[1])
    idx.add([docs[0]], [labels[0]])  # a removed label comes back
    assert idx.contains(labels[:1]).all()
    _, got = idx.search([docs[0]], 1, candidates=400)
    assert got[0, 0] == labels[0]


@pytest.mark.parametrize("tokens", ["f16", "int8", "res4"])
def test_heavy_deletes_compact_the_token_store(tokens):
    docs, queries = clustered(2, 600, 8, topics=10)
    labels = np.arange(600, dtype=np.int64)
    idx = MuveraIndex(D, k_sim=3, d_proj=8, r_reps=4, inner="flat", candidates=600, tokens=tokens)
    idx.add(docs, labels)
    ex = ChamferIndex(D, tokens=tokens)  # the same codes: compaction must keep them aligned
    ex.add(docs, labels)
    tokens_before = idx._store.n_tokens
    gone = labels[labels % 2 == 0]
    idx.remove(gone)
    ex.remove(gone)
    assert idx._store.n_tokens < tokens_before  # compacted: dead tokens passed a quarter
    assert idx.num_tokens == sum(len(d) for d in docs[1::2])
    np.testing.assert_array_equal(idx.search(queries, 10)[1], ex.search(queries, 10)[1])


def test_filters(small):
    idx = build(SMALL.format(inner=INNERS["hnsw"]), small)
    _, queries, labels = small
    rng = np.random.default_rng(4)
    allowed = rng.choice(labels, 25, replace=False)
    scores, got = idx.search(queries, 10, allowed=set(allowed.tolist()))
    assert np.isin(got, allowed).all()
    want_s, want = exact_top(small, 10, allowed=allowed)  # selective: exact over the subset
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-4)
    # Fewer allowed than k: padded; unknown labels ignored; nothing allowed: all padding.
    s, g = idx.search(queries[:2], 5, allowed=[labels[3], labels[7], 123_456_789])
    assert (np.sort(g[:, :2], axis=1) == np.sort([labels[3], labels[7]])).all()
    assert (g[:, 2:] == -1).all() and np.isneginf(s[:, 2:]).all()
    s, g = idx.search(queries[:2], 5, allowed=[])
    assert (g == -1).all() and np.isneginf(s).all()


def test_empty_index_and_k_beyond_size(small):
    _, queries, _ = small
    idx = MuveraIndex(D, k_sim=2, d_proj=8, r_reps=2, inner="hnsw")
    s, g = idx.search(queries[:3], 4)
    assert g.shape == (3, 4) and (g == -1).all() and np.isneginf(s).all()
    idx = build(SMALL.format(inner="flat"), small, 6)
    s, g = idx.search(queries[:3], 10)
    assert (g[:, :6] >= 0).all() and (g[:, 6:] == -1).all() and np.isneginf(s[:, 6:]).all()


def test_save_load_gives_identical_results(small, tmp_path):
    idx = build("muvera:k_sim=3,d_proj=8,r_reps=4,d_final=48,inner=hnsw,inner_M=8,tau=70", small)
    docs, queries, labels = small
    idx.remove(labels[:10])
    before = idx.search(queries, 10)
    qf = idx.encode_queries(queries)
    idx.save(tmp_path / "mv")
    back = index.load(tmp_path / "mv")
    assert isinstance(back, MuveraIndex) and back.spec == idx.spec and len(back) == len(idx)
    assert isinstance(back._store.tokens, np.memmap)  # memory-mapped, not read into memory
    np.testing.assert_array_equal(back.encode_queries(queries), qf)  # same random matrices
    after = back.search(queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    assert not back.contains(labels[:10]).any()
    # A reopened index grows, and saves over its own (memory-mapped) files.
    back.add(docs[:10], labels[:10])
    back.save(tmp_path / "mv")
    again = MuveraIndex.load(tmp_path / "mv")
    assert len(again) == len(labels)
    np.testing.assert_array_equal(again.search(queries, 10)[1], back.search(queries, 10)[1])
    manifest = json.loads((tmp_path / "mv" / "index.json").read_text())
    assert manifest["type"] == "MuveraIndex" and manifest["config"]["kind"] == "muvera"


@pytest.mark.parametrize(
    "kind",
    [
        "chamfer",
        "token_ann:k_tokens=6,inner=hnsw,inner_M=8",
        "chamfer:tokens=int8",
        "chamfer:tokens=res2",
        "token_ann:k_tokens=6,inner=hnsw,inner_M=8,tokens=res4",
    ],
)
def test_baselines_save_load_delete_filter(small, tmp_path, kind):
    idx = build(kind, small)
    docs, queries, labels = small
    idx.remove(labels[::4])
    allowed = labels[1::2][:20]
    before = idx.search(queries, 10)
    filtered = idx.search(queries, 5, allowed=allowed)
    assert np.isin(filtered[1][filtered[1] >= 0], allowed).all()
    assert not np.isin(before[1], labels[::4]).any()
    idx.save(tmp_path / "b")
    back = index.load(tmp_path / "b")
    assert type(back) is type(idx) and back.spec == idx.spec
    np.testing.assert_array_equal(back.search(queries, 10)[1], before[1])
    np.testing.assert_array_equal(back.search(queries, 5, allowed=allowed)[1], filtered[1])
    back.add([docs[0]], [labels[0]])
    assert back.search([docs[0]], 1)[1][0, 0] == labels[0]


def test_token_ann_with_every_token_is_exact(small):
    idx = build("token_ann:k_tokens=10000,inner=flat", small)
    _, queries, _ = small
    np.testing.assert_array_equal(idx.search(queries, 10)[1], exact_top(small, 10)[1])


# ---- corruption ---------------------------------------------------------------------------------
@pytest.fixture()
def saved(small, tmp_path) -> Path:
    idx = build("muvera:k_sim=2,d_proj=8,r_reps=2,d_final=16,inner=flat", small, 40)
    idx.save(tmp_path / "idx")
    return tmp_path / "idx"


FILES = [
    "tokens.npy",
    "offsets.npy",
    "labels.npy",
    "fde_hyperplanes.npy",
    "fde_projections.npy",
    "fde_final.npy",
    "inner/index.json",
    "inner/vectors.npy",
    "inner/labels.npy",
]


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupted_or_truncated_files_are_named(saved, name, how):
    path = saved / name
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2 + 3] ^= 0x5A
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=name.replace(".", r"\.")):
        index.load(saved)


@pytest.mark.parametrize(
    "name, change",
    [
        ("offsets.npy", lambda a: a[::-1].copy()),
        ("offsets.npy", lambda a: np.r_[a[:2], a[1], a[3:]]),  # an empty document
        ("labels.npy", lambda a: np.r_[a[:-1], a[0]]),
        ("labels.npy", lambda a: a[:-1]),
        (
            "tokens.npy",
            lambda a: np.where(np.arange(a.shape[0])[:, None] == 5, np.nan, a).astype(a.dtype),
        ),
        ("tokens.npy", lambda a: a[:, :-1]),
        ("tokens.npy", lambda a: a.astype(np.float32)),
        ("fde_hyperplanes.npy", lambda a: np.full_like(a, np.inf)),
        ("fde_projections.npy", lambda a: a * 3),
        ("fde_final.npy", lambda a: a[:, :-1]),
    ],
)
def test_crafted_files_are_named(saved, name, change, craft):
    craft(saved, name, change(np.load(saved / name)))
    with pytest.raises(CorruptFileError, match=name.replace(".", r"\.")):
        index.load(saved)


def test_corrupt_manifest_is_named(saved):
    (saved / "index.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match=r"index\.json"):
        index.load(saved)


def test_inner_manifest_swapped_is_named(saved, small, tmp_path):
    other = build("muvera:k_sim=2,d_proj=8,r_reps=2,d_final=16,inner=flat", small, 30)
    other.save(tmp_path / "other")
    for name in ("index.json", "vectors.npy", "labels.npy"):
        (saved / "inner" / name).write_bytes((tmp_path / "other" / "inner" / name).read_bytes())
    with pytest.raises(CorruptFileError, match=r"inner/index\.json"):
        index.load(saved)


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_input_names_the_problem(small):
    docs, queries, labels = small
    idx = build(SMALL.format(inner="flat"), small, 20)
    good = docs[0]
    cases = [
        (lambda: idx.add([np.ones((3, D + 1))], [999]), "dimension 65, expected 64"),
        (lambda: idx.add([np.full((2, D), np.nan)], [999]), "NaN"),
        (lambda: idx.add([good, np.zeros((0, D))], [998, 999]), r"documents\[1\] has no tokens"),
        (lambda: idx.add([], []), "empty batch"),
        (lambda: idx.add([good], [labels[0]]), "already in the index"),
        (lambda: idx.add([good, good], [5000]), r"labels must have shape \(2,\)"),
        (lambda: idx.add([good], [-4]), "non-negative"),
        (lambda: idx.search(queries, 0), "k must be positive"),
        (lambda: idx.search(queries, -3), "k must be positive"),
        (lambda: idx.search([np.ones((2, 3))], 5), r"queries\[0\] has dimension 3"),
        (lambda: idx.search([np.zeros((0, D))], 5), r"queries\[0\] has no tokens"),
        (lambda: idx.search([np.full((1, D), np.inf)], 5), r"queries\[0\] token 0 contains NaN"),
        (lambda: idx.search(queries[0], 5), "wrap a single token set in a list"),
        (lambda: idx.search(queries, 5, ef=10), "unknown muvera search parameter"),
        (lambda: idx.search(queries, 5, candidates=0), "candidates must be >= 1"),
        (lambda: idx.search(queries, 5, tau=150), "tau is a percentage"),
        (lambda: index.from_spec("muvera:bogus=1", D), "unknown muvera parameter"),
        (lambda: index.from_spec("muvera:inner=nope", D), "inner index kind must be one of"),
        (lambda: index.from_spec("muvera:inner=flat,inner_M=8", D), "unknown flat parameter"),
        (lambda: index.from_spec("muvera:k_sim=13", D), "k_sim must be <= 12"),
        (lambda: index.from_spec("muvera:tau=101", D), "percentage"),
        (lambda: index.from_spec("muvera:k_sim=-1", D), "non-negative int"),
        (lambda: index.from_spec("muvera", D, "l2"), "metric must be cosine or ip"),
        (lambda: index.from_spec("token_ann:k_tokens=0", D), "k_tokens must be >= 1"),
        (lambda: MuveraIndex(0), "dim must be a positive integer"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(TypeError):
        idx.search(queries, 2.5)
    assert len(idx) == 20  # nothing half-added
