"""Searching a collection: dense (the vector index), lexical (BM25) and hybrid (both, fused)
queries, with exact payload filters in every mode (``SearchMixin``, part of ``Collection``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import encoders
from index.validate import check_k

from . import locking
from .contents import Contents
from .fusion import Fusion, check_mode, fusion_for
from .results import Hit, SearchResult


class SearchMixin:
    """``search`` and ``search_batch`` over ``_contents``, under the collection's read lock."""

    if TYPE_CHECKING:  # provided by Collection
        name: str
        _contents: Contents
        _lock: locking.RWLock
        _fusion: Fusion

        @property
        def encoder(self) -> encoders.Encoder | None: ...

    def _query_vectors(self, queries: Any, batch: bool) -> Any:
        """Query text(s) -> vectors through the encoder; vectors pass through unchanged."""
        if not _are_texts(queries, batch):
            return queries
        enc = self.encoder
        if enc is None:
            raise ValueError(f"collection {self.name!r} has no encoder: search it with vectors")
        texts = encoders.check_texts([queries] if not batch else queries, "queries")
        out = enc.encode_queries(texts)
        return out[0] if not batch else out

    def search(
        self,
        vector: Any = None,
        k: int = 10,
        *,
        where: dict[str, Any] | None = None,
        mode: str = "dense",
        text: str | None = None,
        fusion: str | None = None,
        weight: float | None = None,
        rrf_k: float | None = None,
        depth: int | None = None,
        **params: Any,
    ) -> list[Hit]:
        """The k best matches for one query: a vector, or a text for a collection with an encoder.

        Args:
            vector: (dim,) floats (a multi-vector collection: one (m, dim) token set), or a
                query string.
            k: how many hits, > 0.
            where: optional payload filter, e.g. ``{"year": {"$gte": 2021}}``; applies exactly
                in every mode.
            mode: ``"dense"`` (default: the vector index), ``"lexical"`` (BM25 over the items'
                texts) or ``"hybrid"`` (both, fused). Lexical and hybrid need a collection with
                a lexical index, and a query text: ``vector`` itself, or ``text=`` beside a
                query vector.
            text: the query text for the lexical side when ``vector`` is a vector.
            fusion: hybrid only: ``"rrf"`` or ``"weighted"`` (default: the collection's,
                see ``set_fusion``; ``engine.fusion`` documents both).
            weight: hybrid only: the dense side's weight in [0, 1].
            rrf_k: hybrid ``rrf`` only: the rank offset (default 60).
            depth: hybrid only: how many results each side contributes (at least k).
            **params: index search parameters (``ef`` for hnsw, ``nprobe`` for ivf;
                ``candidates``, ``tau``, ``inner_ef``... for muvera).

        Returns:
            Up to k ``Hit(id, score, payload)``, best first. Scores are the index's similarity
            (dense), BM25 (lexical) or the fused score (hybrid).

        Raises:
            ValueError: an unknown mode or fusion, a weight outside [0, 1], an empty query
                text, or a lexical / hybrid query on a collection without a lexical index.

        Example:
            >>> col.search("protein folding", k=5, mode="hybrid", fusion="rrf")
        """
        if mode != "dense":
            mode = check_mode(mode)  # "DENSE", " dense" are dense too
        # Anything beyond a plain dense query takes the modes path (which refuses what is wrong).
        if (
            mode != "dense"
            or text is not None
            or fusion is not None
            or weight is not None
            or rrf_k is not None
            or depth is not None
        ):
            res = self._search_modes(
                vector,
                [text] if text is not None else None,
                k,
                where,
                mode,
                batch=False,
                fusion=self._fusion_for(mode, fusion, weight, rrf_k, depth),
                params=params,
            )
            return res[0]
        # The lean path: the query is checked once here (the index skips its own check), no
        # payload is copied until a hit's payload is read, and the read lock is shared.
        q = self._contents.items.query(self._query_vectors(vector, batch=False))
        k = check_k(k)
        with self._lock.read():
            contents = self._contents
            scores, labels = contents.search(q, k, where, params)
            return contents.hits(scores[0], labels[0])

    def search_batch(
        self,
        vectors: Any = None,
        k: int = 10,
        *,
        where: dict[str, Any] | None = None,
        mode: str = "dense",
        texts: Sequence[str] | None = None,
        fusion: str | None = None,
        weight: float | None = None,
        rrf_k: float | None = None,
        depth: int | None = None,
        **params: Any,
    ) -> SearchResult:
        """The k best matches for each of m queries (vectors, or texts with an encoder):
        ``.ids`` and ``.scores`` (m, k). A multi-vector collection takes a list of (m_j, dim)
        token sets (or texts). ``mode``, ``texts`` (the lexical side's query texts beside
        query vectors) and the fusion arguments are those of ``search``."""
        if mode != "dense":
            mode = check_mode(mode)
        if mode != "dense" or texts is not None or _given(fusion, weight, rrf_k, depth):
            return self._search_modes(
                vectors,
                texts,
                k,
                where,
                mode,
                batch=True,
                fusion=self._fusion_for(mode, fusion, weight, rrf_k, depth),
                params=params,
            )
        q = self._contents.items.queries(self._query_vectors(vectors, batch=True))
        k = check_k(k)
        with self._lock.read():
            contents = self._contents
            scores, labels = contents.search(q, k, where, params)
            return contents.result(scores, labels)

    def _search_modes(
        self,
        queries: Any,
        texts: Sequence[str] | None,
        k: int,
        where: dict[str, Any] | None,
        mode: str,
        *,
        batch: bool,
        fusion: Fusion | None,
        params: dict[str, Any],
    ) -> SearchResult:
        """Lexical and hybrid search (and dense search given ``text=``, which is refused)."""
        mode = check_mode(mode)
        if mode == "dense":
            raise ValueError(
                "a query text beside the query (text= / texts=) is the lexical side's query: "
                "it needs mode='lexical' or 'hybrid'"
            )
        if self._contents.lexical is None:
            raise ValueError(
                f"collection {self.name!r} has no lexical index, so it cannot run a {mode} "
                "search: create it with lexical=True (the default for collections with an "
                "encoder) or text_field=, and add texts"
            )
        k = check_k(k)
        is_text = _are_texts(queries, batch)
        if texts is not None:
            if is_text:
                raise ValueError(
                    "give the query text once: as the query itself or as text(s)=, not both"
                )
            texts = encoders.check_texts(texts, "query texts")
        elif is_text:
            texts = encoders.check_texts([queries] if not batch else queries, "query texts")
        else:
            raise ValueError(
                f"a {mode} search needs a query text: search with a string, or give "
                "text= (texts= for search_batch) beside the query vector"
            )
        if mode == "lexical" and queries is not None and not is_text:
            raise ValueError("a lexical search takes a query text, not a vector")
        q: Any = None
        if mode == "hybrid":
            if queries is None:
                raise ValueError("a hybrid search needs a query vector or a text to encode")
            q = self._query_vectors(queries, batch=batch)
            items = self._contents.items
            q = items.queries(q) if batch else items.query(q, hybrid=True)
            n = len(q) if items.multi_vector else q.shape[0]
            if n != len(texts):
                raise ValueError(f"{n} query vectors for {len(texts)} query texts")
        with self._lock.read():
            contents = self._contents
            lexical = contents.lexical
            assert lexical is not None  # the collection's kind never changes
            allowed = contents.allowed(where)
            if mode == "lexical":
                scores, labels = lexical.search(list(texts), k, allowed=allowed)
            else:
                assert fusion is not None
                depth = max(k, fusion.depth)
                dense = contents.index.search(q, depth, allowed=allowed, **params)
                lex = lexical.search(list(texts), depth, allowed=allowed)
                scores, labels = fusion.fuse(dense, lex, k)
            return contents.result(scores, labels)

    def _fusion_for(
        self, mode: str, fusion: Any, weight: Any, rrf_k: Any, depth: Any
    ) -> Fusion | None:
        return fusion_for(mode, fusion, weight, rrf_k, depth, base=self._fusion)


def _are_texts(queries: Any, batch: bool) -> bool:
    if not batch:
        return isinstance(queries, str)
    return isinstance(queries, (list, tuple)) and bool(queries) and isinstance(queries[0], str)


def _given(*args: Any) -> bool:
    return any(a is not None for a in args)
