"""BM25 over texts (bm25s), kept up to date under writes: the lexical half of hybrid search.

bm25s scores a query as a sum of rows of a precomputed (document x term) sparse matrix, which is
what makes it fast, but a precomputed matrix cannot take writes: every insert changes the
statistics (document count, document frequencies, average length) that each entry depends on.
So the index has two parts:

- the *base*: the bm25s matrix built over the live documents at the last ``rebuild()`` (a
  collection rebuilds at every checkpoint), scored by bm25s itself;
- the *tail*: documents added since, scored on the fly from their term counts with the current
  statistics (the same bm25s term-frequency and IDF functions, vectorised over the tail).

Deletes mask base documents out at once; nothing deleted is ever returned. Between rebuilds the
base keeps the statistics it was built with (they lag the writes); after ``rebuild()`` every
score equals that of a bm25s index built from scratch over the live documents. Only documents
with a positive score (at least one query term) are returned.

Tokenisation is bm25s's ``Tokenizer``: lower-case, ``\\w\\w+`` words, stopwords, and a Snowball
stemmer (PyStemmer); its vocabulary only grows, so term ids stay stable across writes.

No pickle: ``save`` writes the vocabulary as JSON and every array as ``.npy``, each listed with
its SHA-256 in ``lexical.json`` and verified (and checked for shape and range) before use.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import memory, storage

FORMAT_VERSION = 1
MANIFEST = "lexical.json"
METHODS = ("lucene", "robertson", "atire")  # bm25s variants without a non-occurrence term
_ARRAYS = {  # file -> (dtype, ndim)
    "terms.npy": (np.int32, 1),
    "offsets.npy": (np.int64, 1),
    "labels.npy": (np.int64, 1),
    "scores.data.npy": (np.float32, 1),
    "scores.indices.npy": (np.int32, 1),
    "scores.indptr.npy": (np.int64, 1),
}


# Saved files -> the part of ``memory_usage`` they belong to.
_FILE_PARTS = {
    "vocab.json": "vocabulary",
    "terms.npy": "documents",
    "offsets.npy": "documents",
    "labels.npy": "documents",
    "scores.data.npy": "scores",
    "scores.indices.npy": "scores",
    "scores.indptr.npy": "scores",
    MANIFEST: "manifest",
}


def _stopword_languages() -> list[str]:
    return (
        "en english en_plus english_plus de german nl dutch fr french es spanish pt portuguese "
        "it italian ru russian sv swedish no norwegian zh chinese tr turkish ko korean da danish"
    ).split()


class BM25Index:
    """Incremental BM25 (bm25s) over texts with int64 labels.

    Args:
        language: Snowball stemmer language (``english``, ``french``, ...; PyStemmer's
            ``Stemmer.algorithms()``), or ``none`` for no stemming.
        stopwords: a stopword list name of bm25s (``en``, ``de``, ``fr``, ...) or ``none``.
        k1, b: the BM25 parameters (k1 >= 0, 0 <= b <= 1).
        method: bm25s scoring variant: ``lucene`` (default), ``robertson`` or ``atire``.

    Example:
        >>> idx = BM25Index()
        >>> idx.add(["the cat sat", "a dog barked"], np.array([0, 1]))
        >>> idx.search(["cats"], k=1)[1].tolist()
        [[0]]
    """

    config_keys: ClassVar[dict[str, Any]] = {
        "language": "english",
        "stopwords": "en",
        "k1": 1.5,
        "b": 0.75,
        "method": "lucene",
    }

    def __init__(self, **config: Any) -> None:
        self.config = check_config(config)
        self._tokenizer = _tokenizer(self.config)
        self._lock = threading.Lock()  # the tokenizer's caches are not thread-safe
        # Documents, row-major: row r holds terms[start[r]:start[r] + length[r]].
        self._terms = np.empty(0, dtype=np.int32)
        self._n_terms = 0
        self._start = np.empty(0, dtype=np.int64)
        self._length = np.empty(0, dtype=np.int64)
        self._labels = np.empty(0, dtype=np.int64)  # increasing
        self._alive = np.empty(0, dtype=bool)
        self._n = 0  # rows used; rows [0, _n_base) are the base, [_n_base, _n) the tail
        self._n_base = 0
        self._bm25: Any = None  # bm25s.BM25 over the base rows
        # Live statistics (what a fresh build would use).
        self._df = np.zeros(0, dtype=np.int64)
        self._live = 0
        self._live_tokens = 0
        self.dirty = False  # changed since the last rebuild

    # ---- description -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._live

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer.get_vocab_dict())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"BM25Index({args}, n={len(self)})"

    def memory_usage(self, directory: str | Path | None = None) -> memory.Parts:
        """Bytes per part in RAM and on disk: ``{part: {"ram": B, "disk": B}}``.

        documents: every row's term ids, start, length, label and tombstone, and the live
        document frequencies; scores: the bm25s score matrix (CSC data, indices, pointers);
        vocabulary: the tokenizer's dicts (word -> id; with a stemmer also word -> stem and
        stem -> id), estimated from a sample of their keys (see ``index.memory``). Disk: the
        files in ``directory`` (a saved index) by part.
        """
        rows = self._n * (8 + 8 + 8 + 1)
        ram = {
            "documents": self._n_terms * self._terms.itemsize + rows + int(self._df.nbytes),
            "vocabulary": self._vocabulary_ram(),
        }
        if self._bm25 is not None:
            s = self._bm25.scores
            ram["scores"] = sum(int(s[k].nbytes) for k in ("data", "indices", "indptr"))
        where = Path(directory) if directory is not None else None
        disk = memory.disk_parts(where, lambda name: _FILE_PARTS.get(name, "other"))
        return memory.combine(ram, disk)

    def _vocabulary_ram(self) -> int:
        tok = self._tokenizer
        total = 0
        # word -> stem values are the stem -> id keys: counted once, there.
        for name, value in (("word_to_id", None), ("stem_to_sid", None), ("word_to_stem", 0)):
            d = getattr(tok, name, None)
            if isinstance(d, dict) and d:
                total += memory.str_key_ram(d) if value is None else memory.str_key_ram(d, value)
        return total

    # ---- writes ------------------------------------------------------------------------------
    def tokenize_documents(self, texts: list[str]) -> list[list[int]]:
        """Term ids of each text, growing the vocabulary (a write: callers hold the lock)."""
        with self._lock:
            ids = self._tokenizer.tokenize(
                list(texts), update_vocab=True, show_progress=False, allow_empty=False
            )
        return ids  # type: ignore[no-any-return]

    def add(self, texts: list[str], labels: np.ndarray) -> None:
        """Indexes ``texts`` under ``labels`` (int64, increasing, above every label held)."""
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(texts) != labels.size:
            raise ValueError(f"{len(texts)} texts for {labels.size} labels")
        if not labels.size:
            return
        if (np.diff(labels) <= 0).any() or (self._n and labels[0] <= self._labels[self._n - 1]):
            raise ValueError("labels must increase, above every label already indexed")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} must be a string, got {type(t).__name__}")
        self._append(self.tokenize_documents(texts), labels)

    def _append(self, docs: list[list[int]], labels: np.ndarray) -> None:
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        flat = np.fromiter(
            itertools.chain.from_iterable(docs), dtype=np.int32, count=int(lengths.sum())
        )
        self._grow(self._n + len(docs), self._n_terms + flat.size)
        a, b = self._n, self._n + len(docs)
        self._start[a:b] = self._n_terms + np.concatenate(([0], np.cumsum(lengths)[:-1]))
        self._length[a:b] = lengths
        self._labels[a:b] = labels
        self._alive[a:b] = True
        self._terms[self._n_terms : self._n_terms + flat.size] = flat
        self._n, self._n_terms = b, self._n_terms + flat.size
        self._count(flat, lengths, +1)
        self.dirty = True

    def _grow(self, rows: int, terms: int) -> None:
        if rows > self._labels.size:
            cap = max(rows, 2 * self._labels.size, 1024)
            for name in ("_start", "_length", "_labels", "_alive"):
                old = getattr(self, name)
                new = np.empty(cap, dtype=old.dtype)
                new[: self._n] = old[: self._n]
                setattr(self, name, new)
        if terms > self._terms.size:
            new_t = np.empty(max(terms, 2 * self._terms.size, 65536), dtype=np.int32)
            new_t[: self._n_terms] = self._terms[: self._n_terms]
            self._terms = new_t

    def _count(self, flat: np.ndarray, lengths: np.ndarray, sign: int) -> None:
        """Updates document frequencies and totals for documents coming (+1) or going (-1)."""
        vocab = max(self.vocab_size, int(flat.max(initial=-1)) + 1)
        if vocab > self._df.size:
            df = np.zeros(max(vocab, 2 * self._df.size), dtype=np.int64)
            df[: self._df.size] = self._df
            self._df = df
        if flat.size:
            doc = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
            pairs = _distinct(doc * self._df.size + flat)  # each (document, term) once
            np.add.at(self._df, pairs % self._df.size, sign)
        self._live += sign * lengths.size
        self._live_tokens += sign * int(lengths.sum())

    def remove(self, labels: np.ndarray) -> None:
        """Removes the given labels; absent ones are ignored."""
        rows = np.unique(self._rows_of(np.asarray(labels, dtype=np.int64).reshape(-1)))
        rows = rows[self._alive[rows]]
        if not rows.size:
            return
        self._alive[rows] = False
        lengths = self._length[rows]
        parts = [self._terms[s : s + n] for s, n in zip(self._start[rows], lengths, strict=True)]
        self._count(np.concatenate(parts), lengths, -1)
        self.dirty = True

    def _rows_of(self, labels: np.ndarray) -> np.ndarray:
        """Rows holding ``labels`` (those not held are left out)."""
        if not self._n or not labels.size:
            return np.empty(0, dtype=np.int64)
        held = self._labels[: self._n]
        idx = np.minimum(np.searchsorted(held, labels), self._n - 1)
        return idx[held[idx] == labels]

    def contains(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        out = np.zeros(labels.size, dtype=bool)
        if self._n and labels.size:
            held = self._labels[: self._n]
            idx = np.minimum(np.searchsorted(held, labels), self._n - 1)
            out = (held[idx] == labels) & self._alive[idx]
        return out

    def live_labels(self) -> np.ndarray:
        return self._labels[: self._n][self._alive[: self._n]]

    def rebuild(self) -> None:
        """Rebuilds the bm25s matrix over the live documents (compacting deleted ones away):
        afterwards every score equals that of a fresh bm25s index over them."""
        keep = np.flatnonzero(self._alive[: self._n])
        lengths = self._length[keep]
        if keep.size == self._n:
            flat = self._terms[: self._n_terms].copy()
        elif keep.size:
            flat = np.concatenate(
                [self._terms[s : s + n] for s, n in zip(self._start[keep], lengths, strict=True)]
            )
        else:
            flat = np.empty(0, dtype=np.int32)
        self._bm25 = _build(flat, lengths, self.vocab_size, self.config) if keep.size else None
        self._install(flat, lengths, self._labels[keep].copy(), self._base_df())
        self._n_base = keep.size
        self.dirty = False

    def _base_df(self) -> np.ndarray | None:
        """Document frequencies of the base matrix (a term's column length), if there is one."""
        return None if self._bm25 is None else np.diff(self._bm25.scores["indptr"])

    def _install(
        self, flat: np.ndarray, lengths: np.ndarray, labels: np.ndarray, df: np.ndarray | None
    ) -> None:
        """Makes the given documents the whole row space (all alive), with their document
        frequencies ``df`` when the caller has them (else they are recounted)."""
        n = labels.size
        self._terms = np.ascontiguousarray(flat, dtype=np.int32)
        self._n_terms = flat.size
        self._length = np.asarray(lengths, dtype=np.int64).copy()
        self._start = np.concatenate(([0], np.cumsum(self._length)[:-1])).astype(np.int64)
        if not n:
            self._start = np.empty(0, dtype=np.int64)
        self._labels = labels
        self._alive = np.ones(n, dtype=bool)
        self._n = n
        if df is not None:
            self._df = df.astype(np.int64)
            self._live, self._live_tokens = n, int(self._length.sum())
            return
        self._df = np.zeros(0, dtype=np.int64)
        self._live = self._live_tokens = 0
        self._count(self._terms, self._length, +1)

    # ---- search ------------------------------------------------------------------------------
    def query_terms(self, texts: list[str]) -> list[list[int]]:
        """Term ids of each query, in order (unknown words and stopwords dropped)."""
        with self._lock:
            ids = self._tokenizer.tokenize(
                list(texts), update_vocab=False, show_progress=False, allow_empty=False
            )
        return ids  # type: ignore[no-any-return]

    def search(
        self, texts: list[str], k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best documents per query text: ``(scores (m, k), labels (m, k))``, BM25 scores,
        best first (ties by label), -1 / -inf padded; only documents matching a query term."""
        m = len(texts)
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        labels = np.full((m, k), -1, dtype=np.int64)
        if not self._n or not m:
            return scores, labels
        mask = self._alive[: self._n].copy()
        if allowed is not None:
            mask &= np.isin(self._labels[: self._n], np.asarray(allowed, dtype=np.int64))
        for i, terms in enumerate(self.query_terms(texts)):
            s = self.score_terms(terms)
            rows = np.flatnonzero((s > 0) & mask)
            if rows.size > k:
                rows = rows[np.argpartition(-s[rows], k - 1)[:k]]
            order = np.lexsort((self._labels[rows], -s[rows]))[:k]
            rows = rows[order]
            scores[i, : rows.size] = s[rows]
            labels[i, : rows.size] = self._labels[rows]
        return scores, labels

    def score_terms(self, terms: list[int]) -> np.ndarray:
        """The BM25 score of every row (dead rows included) for a query's term ids."""
        s = np.zeros(self._n, dtype=np.float32)
        if not terms:
            return s
        if self._bm25 is not None and self._n_base:
            base = np.asarray([t for t in terms if t < len(self._bm25.scores["indptr"]) - 1])
            if base.size:
                s[: self._n_base] = self._bm25.get_scores_from_ids(base.astype(np.int32))
        if self._n > self._n_base:
            s[self._n_base :] = self._score_tail(terms)
        return s

    def _score_tail(self, terms: list[int]) -> np.ndarray:
        """BM25 of the rows after the base, from their term counts and the live statistics."""
        from bm25s import scoring

        a, n_tail = self._n_base, self._n - self._n_base
        out = np.zeros(n_tail, dtype=np.float32)
        q, mult = np.unique(np.asarray(terms, dtype=np.int64), return_counts=True)
        lo = int(self._start[a])
        flat = self._terms[lo : self._n_terms]
        hit = np.isin(flat, q)
        if not hit.any() or self._live == 0:
            return out
        row = np.repeat(np.arange(n_tail, dtype=np.int64), self._length[a : self._n])[hit]
        term = flat[hit].astype(np.int64)
        pair, tf = np.unique(row * self._df.size + term, return_counts=True)
        row, term = pair // self._df.size, pair % self._df.size
        cfg = self.config
        idf_of = scoring._select_idf_scorer(cfg["method"])
        idf = {int(t): idf_of(int(self._df[t]), N=self._live) for t in q if self._df[t] > 0}
        weight = np.array(
            [idf.get(int(t), 0.0) * c for t, c in zip(q, mult, strict=True)], dtype=np.float32
        )
        tfc = scoring._select_tfc_scorer(cfg["method"])(
            tf_array=tf.astype(np.float32),
            l_d=self._length[a : self._n][row],
            l_avg=np.float64(self._live_tokens / self._live),
            k1=cfg["k1"],
            b=cfg["b"],
        )
        np.add.at(out, row, weight[np.searchsorted(q, term)] * tfc)
        return out

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Writes the index (rebuilt first if it changed) as verified files in ``directory``."""
        if self.dirty or self._n_base != self._n:
            self.rebuild()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        vocab = self._tokenizer.get_vocab_dict()
        terms = [""] * len(vocab)
        for term, i in vocab.items():
            terms[i] = term
        storage.atomic_write_bytes(d / "vocab.json", json.dumps(terms).encode())
        s = self._bm25.scores if self._bm25 is not None else None
        arrays = {
            "terms.npy": self._terms[: self._n_terms],
            "offsets.npy": np.concatenate(([0], np.cumsum(self._length[: self._n]))),
            "labels.npy": self._labels[: self._n],
            "scores.data.npy": s["data"] if s else np.empty(0, np.float32),
            "scores.indices.npy": s["indices"] if s else np.empty(0, np.int32),
            "scores.indptr.npy": s["indptr"] if s else np.zeros(1, np.int64),
        }
        for name, arr in arrays.items():
            storage.save_npy(d / name, np.asarray(arr, dtype=_ARRAYS[name][0]))
        files = {n: storage.file_entry(d / n) for n in ("vocab.json", *arrays)}
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": "bm25",
            "config": self.config,
            "count": self._n,
            "vocab": len(terms),
            "files": files,
        }
        storage.write_manifest(d, MANIFEST, manifest)

    @classmethod
    def load(cls, directory: str | Path) -> BM25Index:
        """Opens a saved index; every file is verified and checked before it is used.

        Raises:
            CorruptFileError: a file is missing, fails its checksum or is inconsistent.
        """
        d = Path(directory)
        mpath = d / MANIFEST
        manifest = storage.read_manifest(mpath)
        try:
            if manifest.get("format_version") != FORMAT_VERSION or manifest["kind"] != "bm25":
                raise ValueError(f"unsupported format {manifest.get('format_version')!r}")
            idx = cls(**manifest["config"])
            count, n_vocab = int(manifest["count"]), int(manifest["vocab"])
            files = manifest["files"]
            if set(files) != {"vocab.json", *_ARRAYS}:
                raise ValueError(f"files {sorted(files)} are not those of a BM25 index")
        except (KeyError, TypeError, ValueError) as e:
            raise storage.CorruptFileError(mpath, f"invalid lexical manifest: {e}") from None
        storage.verify_files(d, files)
        try:
            terms = json.loads((d / "vocab.json").read_bytes())
            if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
                raise ValueError("not a list of strings")
            if len(terms) != n_vocab or len(set(terms)) != n_vocab:
                raise ValueError(f"{len(terms)} terms (distinct?), manifest says {n_vocab}")
        except (ValueError, UnicodeDecodeError) as e:
            raise storage.CorruptFileError(d / "vocab.json", f"invalid vocabulary: {e}") from None
        a = {n: np.array(storage.load_npy(d / n, *spec)) for n, spec in _ARRAYS.items()}
        _check_arrays(d, a, count, n_vocab)
        idx._set_vocab(terms)
        lengths = np.diff(a["offsets.npy"])
        idx._install(a["terms.npy"], lengths, a["labels.npy"], None)  # recounted: no trust in files
        if count:
            import bm25s

            cfg = idx.config
            bm25 = bm25s.BM25(k1=cfg["k1"], b=cfg["b"], method=cfg["method"])
            bm25.scores = {
                "data": a["scores.data.npy"],
                "indices": a["scores.indices.npy"],
                "indptr": a["scores.indptr.npy"],
                "num_docs": count,
            }
            bm25.nonoccurrence_array = None
            idx._bm25 = bm25
        idx._n_base = count
        idx.dirty = False
        return idx

    def _set_vocab(self, terms: list[str]) -> None:
        tok = self._tokenizer
        tok.reset_vocab()
        ids = {t: i for i, t in enumerate(terms)}
        if tok.stemmer is None:
            tok.word_to_id = ids
        else:
            tok.stem_to_sid = ids


def _distinct(keys: np.ndarray) -> np.ndarray:
    """The distinct values of ``keys``, sorted (a plain sort: numpy's hash-based ``unique`` is
    several times slower on the ~10^6 keys of a batch)."""
    a = np.sort(keys)
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


def _build(flat: np.ndarray, lengths: np.ndarray, n_vocab: int, cfg: dict[str, Any]) -> Any:
    """A bm25s.BM25 whose score matrix holds exactly what ``BM25.index`` computes for these
    documents: bm25s's own IDF and term-frequency functions over the same dtypes.

    Written here rather than calling ``build_index_from_ids`` because that walks the documents
    one by one in Python (a Counter each); a checkpoint rebuilds the whole index, so the
    per-(document, term) work is done with array operations instead (several times faster)."""
    import bm25s
    from bm25s import scoring

    n_docs = lengths.size
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    # Term-major (term, document) pairs with their counts: the CSC layout bm25s scores from.
    pairs, tf = np.unique(flat.astype(np.int64) * n_docs + doc, return_counts=True)
    term, doc = pairs // n_docs, pairs % n_docs
    df = np.bincount(term, minlength=n_vocab)
    idf_of = scoring._select_idf_scorer(cfg["method"])
    idf = np.zeros(n_vocab, dtype=np.float32)
    for t in np.flatnonzero(df).tolist():
        idf[t] = idf_of(int(df[t]), N=n_docs)
    tfc = scoring._select_tfc_scorer(cfg["method"])(
        tf_array=tf.astype(np.float32),
        l_d=lengths[doc],
        l_avg=np.array(lengths).mean(),
        k1=cfg["k1"],
        b=cfg["b"],
    )
    bm25 = bm25s.BM25(k1=cfg["k1"], b=cfg["b"], method=cfg["method"])
    bm25.scores = {
        "data": (idf[term] * tfc).astype(np.float32),
        "indices": doc.astype(np.int32),
        "indptr": np.concatenate(([0], np.cumsum(df))).astype(np.int64),
        "num_docs": n_docs,
    }
    bm25.nonoccurrence_array = None
    return bm25


def _check_arrays(d: Path, a: dict[str, np.ndarray], count: int, n_vocab: int) -> None:
    def bad(name: str, problem: str) -> storage.CorruptFileError:
        return storage.CorruptFileError(d / name, problem)

    terms, offsets, labels = a["terms.npy"], a["offsets.npy"], a["labels.npy"]
    if labels.size != count or (np.diff(labels) <= 0).any() or (labels < 0).any():
        raise bad("labels.npy", f"{labels.size} labels (manifest: {count}), not increasing >= 0")
    if offsets.size != count + 1 or offsets[0] != 0 or offsets[-1] != terms.size:
        raise bad("offsets.npy", f"offsets must run from 0 to {terms.size} over {count} documents")
    if (np.diff(offsets) < 0).any():
        raise bad("offsets.npy", "offsets decrease")
    if terms.size and (terms.min() < 0 or terms.max() >= n_vocab):
        raise bad("terms.npy", f"term ids outside the vocabulary of {n_vocab}")
    data, indices, indptr = (a[f"scores.{n}.npy"] for n in ("data", "indices", "indptr"))
    if not count:
        return
    if indptr.size != n_vocab + 1 or indptr[0] != 0 or indptr[-1] != data.size:
        raise bad("scores.indptr.npy", f"must run from 0 to {data.size} over {n_vocab} terms")
    if (np.diff(indptr) < 0).any():
        raise bad("scores.indptr.npy", "pointers decrease")
    if indices.size != data.size or (
        indices.size and (indices.min() < 0 or indices.max() >= count)
    ):
        raise bad("scores.indices.npy", f"document numbers outside 0..{count - 1}")
    if not np.isfinite(data).all():
        raise bad("scores.data.npy", "scores are not finite")


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """The lexical configuration with defaults filled in; ValueError names a bad value."""
    if not isinstance(config, dict):
        raise TypeError(f"the lexical configuration must be a dict, got {type(config).__name__}")
    unknown = set(config) - set(BM25Index.config_keys)
    if unknown:
        known = ", ".join(BM25Index.config_keys)
        raise ValueError(f"unknown lexical option(s) {sorted(unknown)}; known: {known}")
    out = {**BM25Index.config_keys, **config}
    for key in ("language", "stopwords", "method"):
        value = out[key]
        if value is None or value is False:
            value = "none"
        if not isinstance(value, str):
            raise ValueError(f"lexical option {key} must be a string, got {value!r}")
        out[key] = value.strip().lower()
    import Stemmer

    if out["language"] != "none" and out["language"] not in Stemmer.algorithms():
        raise ValueError(
            f"unknown stemmer language {out['language']!r}; known: none, "
            + ", ".join(Stemmer.algorithms())
        )
    if out["stopwords"] != "none" and out["stopwords"] not in _stopword_languages():
        raise ValueError(
            f"unknown stopword list {out['stopwords']!r}; known: none, "
            + ", ".join(_stopword_languages())
        )
    if out["method"] not in METHODS:
        raise ValueError(f"unknown BM25 method {out['method']!r}; known: {', '.join(METHODS)}")
    for key, lo, hi in (("k1", 0.0, math.inf), ("b", 0.0, 1.0)):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"lexical option {key} must be a number, got {value!r}")
        if not lo <= float(value) <= hi or not math.isfinite(float(value)):
            raise ValueError(f"lexical option {key} must be in [{lo}, {hi}], got {value!r}")
        out[key] = float(value)
    return out


def _tokenizer(config: dict[str, Any]) -> Any:
    from bm25s.tokenization import Tokenizer

    stemmer = None
    if config["language"] != "none":
        import Stemmer

        stemmer = Stemmer.Stemmer(config["language"])
    stopwords = None if config["stopwords"] == "none" else config["stopwords"]
    return Tokenizer(stopwords=stopwords, stemmer=stemmer)
