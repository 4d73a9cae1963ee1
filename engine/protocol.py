"""``CollectionLike``: the collection-level API that code may rely on, embedded or remote.

``engine.Collection`` (in-process), ``engine.sharded.ShardedCollection`` and
``server.RemoteCollection`` (over gRPC) implement it, and mypy checks that they do
(``_conforms`` below, and its twin in ``server/client.py``), so a
method added to one and not the other fails ``make check``. Code written against
``CollectionLike`` moves between the two by changing the line that opens the collection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .fusion import Fusion
from .results import Hit, Record, SearchResult

if TYPE_CHECKING:
    from .collection import Collection
    from .sharded import ShardedCollection


@runtime_checkable
class CollectionLike(Protocol):
    """A collection of items (an id, a vector or token set, a payload, optionally a text).

    Attributes are read-only here: each implementation decides how it keeps them.
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def metric(self) -> str:
        """``cosine``, ``ip`` or ``l2`` (the embedded collection's is an ``index.Metric``,
        a ``str`` enum)."""
        ...

    @property
    def index_spec(self) -> str: ...

    @property
    def encoder_spec(self) -> str | None:
        """The encoder's spec, or None for a raw-vector collection."""
        ...

    @property
    def text_field(self) -> str | None: ...

    @property
    def multi_vector(self) -> bool:
        """Whether items are token sets (a multi-vector index) rather than one vector each."""
        ...

    @property
    def lexical(self) -> bool:
        """Whether the collection keeps a BM25 index (lexical and hybrid search)."""
        ...

    @property
    def fusion(self) -> Fusion:
        """The default hybrid fusion (see ``set_fusion``)."""
        ...

    def config(self) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]:
        """Name, config, ``multi_vector``, count (and lexical count, fusion), bytes on disk."""
        ...

    def set_fusion(
        self,
        fusion: str | None = None,
        weight: float | None = None,
        rrf_k: float | None = None,
        depth: int | None = None,
    ) -> Fusion: ...

    def __len__(self) -> int: ...

    def __contains__(self, id: object) -> bool: ...

    def add(
        self,
        ids: Any,
        vectors: Any = None,
        payloads: Sequence[Any] | None = None,
        *,
        texts: Sequence[str] | None = None,
    ) -> None: ...

    def upsert(
        self,
        ids: Any,
        vectors: Any = None,
        payloads: Sequence[Any] | None = None,
        *,
        texts: Sequence[str] | None = None,
    ) -> None: ...

    def delete(self, ids: Any) -> int: ...

    def get(self, ids: Any) -> list[Record | None]: ...

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
    ) -> list[Hit]: ...

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
    ) -> SearchResult: ...


if TYPE_CHECKING:

    def _conforms(col: Collection) -> CollectionLike:
        return col  # mypy: the embedded Collection implements the protocol

    def _sharded_conforms(col: ShardedCollection) -> CollectionLike:
        return col  # and so does a sharded one
