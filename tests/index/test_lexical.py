"""The BM25 index against bm25s built from scratch: after writes and a rebuild, equal scores;
deleted documents never returned; save / load round trips; corrupted files named."""

from __future__ import annotations

import json

import bm25s
import numpy as np
import pytest
import Stemmer
from bm25s.tokenization import Tokenizer

from index import storage
from index.lexical import BM25Index, check_config

WORDS = (
    "cat cats dog dogs running runs ran protein proteins folding fold cell cells market "
    "markets rocket orbit launch the a of and in on with quick brown fox jumps lazy gene "
    "genes expression tumour tumours growth immune response vaccine virus viral"
).split()


def random_texts(rng: np.random.Generator, n: int) -> list[str]:
    out = []
    for _ in range(n):
        length = int(rng.integers(1, 30))
        out.append(" ".join(rng.choice(WORDS, length)))
    return out


def fresh_scores(texts: list[str], queries: list[str], **cfg: object) -> np.ndarray:
    """(m, n) BM25 scores of a bm25s index built from scratch over ``texts``."""
    tok = Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
    ids = tok.tokenize(texts, update_vocab=True, show_progress=False, allow_empty=False)
    model = bm25s.BM25(**cfg)
    model.index((ids, tok.get_vocab_dict()), show_progress=False)
    out = np.zeros((len(queries), len(texts)), dtype=np.float32)
    for i, q in enumerate(queries):
        (qids,) = tok.tokenize([q], update_vocab=False, show_progress=False, allow_empty=False)
        if qids:
            out[i] = model.get_scores(list(qids))
    return out


def check_equal(idx: BM25Index, live: dict[int, str], queries: list[str], k: int) -> None:
    labels = np.array(sorted(live), dtype=np.int64)
    ref = fresh_scores([live[int(x)] for x in labels], queries)
    scores, got = idx.search(queries, k)
    for i in range(len(queries)):
        want = ref[i]
        n = int(min(k, (want > 0).sum()))
        assert (got[i, :n] >= 0).all() and (got[i, n:] == -1).all()
        # Each returned document carries exactly its from-scratch score ...
        rows = np.searchsorted(labels, got[i, :n])
        np.testing.assert_allclose(scores[i, :n], want[rows], rtol=1e-6)
        # ... and they are the k best (equal up to ties at the boundary).
        best = np.sort(want[want > 0])[::-1][:n]
        np.testing.assert_allclose(np.sort(scores[i, :n])[::-1], best, rtol=1e-6)


def test_fresh_index_scores_like_bm25s():
    rng = np.random.default_rng(0)
    texts = random_texts(rng, 200)
    idx = BM25Index()
    idx.add(texts, np.arange(200))
    queries = random_texts(rng, 20)
    check_equal(idx, dict(enumerate(texts)), queries, 10)  # all in the tail: exact statistics
    idx.rebuild()
    check_equal(idx, dict(enumerate(texts)), queries, 10)
    check_equal(idx, dict(enumerate(texts)), queries, 500)  # k beyond the matches


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_writes_then_rebuild_equal_a_fresh_index(seed):
    """A seeded sequence of adds, upserts (remove + add) and deletes with rebuilds between:
    deleted labels never come back, and after rebuild() scores equal bm25s from scratch."""
    rng = np.random.default_rng(seed)
    idx = BM25Index()
    live: dict[int, str] = {}
    dead: set[int] = set()
    next_label = 0
    queries = random_texts(rng, 12)
    for step in range(40):
        r = rng.random()
        if r < 0.5 or not live:
            n = int(rng.integers(1, 20))
            texts = random_texts(rng, n)
            labels = np.arange(next_label, next_label + n)
            next_label += n
            idx.add(texts, labels)
            live.update(zip(labels.tolist(), texts, strict=True))
        else:
            gone = rng.choice(sorted(live), size=min(len(live), int(rng.integers(1, 6))))
            idx.remove(np.asarray(gone))
            for g in gone.tolist():
                live.pop(g, None)
                dead.add(g)
        if step % 9 == 8:
            idx.rebuild()
        _, got = idx.search(queries, 50)
        assert not dead.intersection(got.ravel().tolist())
        assert len(idx) == len(live)
    idx.rebuild()
    check_equal(idx, live, queries, 25)


def test_allowed_restricts_exactly():
    rng = np.random.default_rng(4)
    texts = random_texts(rng, 100)
    idx = BM25Index()
    idx.add(texts, np.arange(100))
    idx.rebuild()
    idx.add(random_texts(rng, 20), np.arange(100, 120))  # some in the tail too
    allowed = np.arange(0, 120, 3)
    queries = random_texts(rng, 8)
    s_all, l_all = idx.search(queries, 120)
    s, lab = idx.search(queries, 10, allowed=allowed)
    for i in range(len(queries)):
        keep = np.isin(l_all[i], allowed) & (l_all[i] >= 0)
        want = s_all[i][keep][:10]
        got = s[i][lab[i] >= 0]
        assert set(lab[i][lab[i] >= 0].tolist()) <= set(allowed.tolist())
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_no_match_and_empty_query():
    idx = BM25Index()
    idx.add(["the cat sat"], np.array([0]))
    s, lab = idx.search(["zebra", "the and of", ""], 3)
    assert (lab == -1).all() and np.isneginf(s).all()


def test_tie_break_by_label():
    idx = BM25Index()
    idx.add(["cat dog", "cat dog", "cat dog"], np.array([5, 6, 9]))
    idx.rebuild()
    assert idx.search(["cat"], 3)[1].tolist() == [[5, 6, 9]]


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    texts = random_texts(rng, 80)
    idx = BM25Index(language="none", stopwords="none", k1=1.2, b=0.5, method="robertson")
    idx.add(texts, np.arange(80))
    idx.remove(np.arange(0, 80, 7))
    idx.save(tmp_path / "lex")
    back = BM25Index.load(tmp_path / "lex")
    assert back.config == idx.config and len(back) == len(idx)
    queries = random_texts(rng, 10)
    for a, b in zip(idx.search(queries, 15), back.search(queries, 15), strict=True):
        np.testing.assert_array_equal(a, b)
    # Writes after loading extend the same vocabulary.
    back.add(["quick brown fox"], np.array([500]))
    assert 500 in back.search(["fox"], 100)[1]


def test_empty_index_saves_and_loads(tmp_path):
    idx = BM25Index()
    idx.save(tmp_path / "e")
    back = BM25Index.load(tmp_path / "e")
    assert len(back) == 0 and (back.search(["cat"], 2)[1] == -1).all()


@pytest.mark.parametrize("name", ["terms.npy", "scores.data.npy", "vocab.json", "labels.npy"])
def test_flipped_byte_names_the_file(tmp_path, name):
    idx = BM25Index()
    idx.add(random_texts(np.random.default_rng(6), 30), np.arange(30))
    idx.save(tmp_path / "lex")
    path = tmp_path / "lex" / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(storage.CorruptFileError, match=name):
        BM25Index.load(tmp_path / "lex")


def test_crafted_arrays_are_refused_before_use(tmp_path):
    """Files that pass their checksums (the manifest rewritten to match) but are inconsistent:
    term ids outside the vocabulary, decreasing labels."""
    idx = BM25Index()
    idx.add(["cat dog", "dog fox"], np.array([0, 1]))
    idx.save(tmp_path / "lex")
    d = tmp_path / "lex"

    def rewrite(name: str, arr: np.ndarray) -> None:
        storage.save_npy(d / name, arr)
        m = json.loads((d / "lexical.json").read_bytes())
        m["files"][name] = storage.file_entry(d / name)
        storage.write_manifest(d, "lexical.json", m)

    terms = np.load(d / "terms.npy")
    rewrite("terms.npy", np.full_like(terms, 999))
    with pytest.raises(storage.CorruptFileError, match=r"terms\.npy.*vocabulary"):
        BM25Index.load(d)
    rewrite("terms.npy", terms)
    rewrite("labels.npy", np.array([1, 0], dtype=np.int64))
    with pytest.raises(storage.CorruptFileError, match=r"labels\.npy"):
        BM25Index.load(d)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"language": "klingon"}, "stemmer language"),
        ({"stopwords": "xx"}, "stopword list"),
        ({"k1": -1}, "k1"),
        ({"b": 1.5}, "b must be"),
        ({"method": "bm25+"}, "BM25 method"),
        ({"colour": 1}, "unknown lexical option"),
    ],
)
def test_config_errors_name_the_option(bad, match):
    with pytest.raises(ValueError, match=match):
        check_config(bad)


def test_labels_must_increase():
    idx = BM25Index()
    idx.add(["a cat"], np.array([3]))
    with pytest.raises(ValueError, match="increase"):
        idx.add(["a dog"], np.array([2]))
