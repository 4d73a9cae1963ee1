"""The Python client: ``Client`` mirrors ``Engine``, ``RemoteCollection`` mirrors ``Collection``.

Code moves between embedded and remote by changing one line::

    eng = Engine("./vecdex-data")                        # embedded
    eng = server.Client("127.0.0.1:50051", token="...")  # remote, same calls below
    col = eng.open_collection("docs")
    hits = col.search("query text", k=10, where={"year": {"$gte": 2021}})

Errors are the engine's where it has one (``CollectionNotFoundError``, ``CollectionExistsError``,
``ReadOnlyError``); a refused request raises ``RequestError`` (a ``ValueError``) carrying the
status code; anything else (UNAUTHENTICATED, UNAVAILABLE, DEADLINE_EXCEEDED) is the
``grpc.RpcError`` itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from engine import (
    CollectionExistsError,
    CollectionLike,
    CollectionNotFoundError,
    Fusion,
    ReadOnlyError,
    Record,
    SearchResult,
    check_texts,
)
from engine.collection import check_ids
from engine.engine import lexical_config
from engine.fusion import check_mode, fusion_for
from engine.results import Hits
from engine.shards import check_shards

from .convert import (
    dict_to_struct,
    fusion_from,
    hits_from,
    lexical_options,
    memory_from,
    record_from,
    result_from,
    set_lexical_options,
    set_query,
    to_multi,
)
from .pb import vecdex_pb2 as pb
from .pb import vecdex_pb2_grpc as pb_grpc

# Collection.search's words for fusion arguments outside hybrid mode (tests compare the two).


class RequestError(ValueError):
    """The server refused a request (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ALREADY_EXISTS)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


_STATUS = {c.value[0]: c for c in grpc.StatusCode}  # a stream answer's code -> its status


def _translate(e: grpc.RpcError, collection: str | None) -> Exception:
    code = e.code() if isinstance(e, grpc.Call) else None
    details = (e.details() if isinstance(e, grpc.Call) else None) or str(e)
    if code == grpc.StatusCode.NOT_FOUND and collection is not None:
        return CollectionNotFoundError(collection)
    if code == grpc.StatusCode.FAILED_PRECONDITION and collection is not None:
        return ReadOnlyError(collection, details)
    if code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ALREADY_EXISTS,
    ):
        return RequestError(code, details)
    return e


def _is_texts(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(t, str) for t in x)


class Client:
    """A connection to a vecdex server, with ``Engine``'s collection-level methods.

    Args:
        address: ``host:port``.
        token: the server's bearer token, if it has one.
        tls_ca: PEM file (or bytes) of the CA that signed the server's certificate: connect over
            TLS. None: plaintext.
        timeout: per-call deadline in seconds (None: no deadline).
        tls_server_name: the name to verify the certificate against, when it differs from the
            host in ``address``.

    Example:
        >>> client = Client("127.0.0.1:50051", token="s3cret")
        >>> col = client.create_collection("docs", dim=384, index="hnsw")
        >>> client.list_collections()
        ['docs']
    """

    def __init__(
        self,
        address: str,
        token: str | None = None,
        tls_ca: str | Path | bytes | None = None,
        *,
        timeout: float | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", -1),  # the server's limit is the one that counts
            ("grpc.max_receive_message_length", -1),
        ]
        if tls_ca is not None:
            ca = tls_ca if isinstance(tls_ca, bytes) else Path(tls_ca).read_bytes()
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override", tls_server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=ca)
            self._channel = grpc.secure_channel(address, creds, options)
        else:
            self._channel = grpc.insecure_channel(address, options)
        self.address = address
        self.timeout = timeout
        self._stub = pb_grpc.VecDexStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )

    def __repr__(self) -> str:
        return f"Client({self.address!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def call(self, method: str, request: Any, collection: str | None = None) -> Any:
        """Calls one rpc by name; errors translated (see the module docstring)."""
        try:
            return getattr(self._stub, method)(
                request, metadata=self._metadata, timeout=self.timeout
            )
        except grpc.RpcError as e:
            raise _translate(e, collection) from None

    def create_collection(
        self,
        name: str,
        *,
        dim: int | None = None,
        encoder: str | None = None,
        metric: str = "cosine",
        index: str = "hnsw",
        exist_ok: bool = False,
        lexical: bool | dict[str, Any] | None = None,
        text_field: str | None = None,
        shards: int | None = None,
    ) -> RemoteCollection:
        """Creates a collection on the server (see ``Engine.create_collection``; ``shards``:
        a sharded collection, served as one).

        ``encoder`` is a spec the server resolves: ``default``, ``token[:...]`` or a model
        directory on the server's machine. ``lexical`` (True, False, a dict of BM25 options, or
        None: on for collections with an encoder or a ``text_field``) and ``text_field`` are the
        engine's, checked here as the engine checks them.

        Raises:
            CollectionExistsError: the name is taken (unless ``exist_ok``).
            RequestError: invalid name, dim, metric, encoder or index spec.
            ValueError, TypeError: invalid ``lexical`` or ``text_field`` (the engine's messages).
        """
        checked = lexical_config(lexical, text_field, encoder is not None)  # the engine's checks
        req = pb.CreateCollectionRequest(
            name=name,
            dim=dim or 0,
            encoder=encoder or "",
            metric=metric,
            index=index,
            exist_ok=exist_ok,
            text_field=text_field or "",
            shards=check_shards(shards) if shards is not None else 0,
        )
        if isinstance(lexical, dict):
            set_lexical_options(req.lexical_options, checked["lexical"])
        elif lexical is not None:
            req.lexical = bool(lexical)
        try:
            info = self.call("CreateCollection", req, name)
        except RequestError as e:
            if e.code == grpc.StatusCode.ALREADY_EXISTS:
                raise CollectionExistsError(name) from None
            raise
        return RemoteCollection(self, info)

    def get_or_create_collection(self, name: str, **kwargs: Any) -> RemoteCollection:
        return self.create_collection(name, exist_ok=True, **kwargs)

    def open_collection(self, name: str) -> RemoteCollection:
        """A handle on an existing collection. Raises CollectionNotFoundError if absent."""
        return RemoteCollection(self, self._describe(name))

    def _describe(self, name: str) -> pb.CollectionInfo:
        return self.call("DescribeCollection", pb.DescribeCollectionRequest(name=name), name)

    def list_collections(self) -> list[str]:
        return list(self.call("ListCollections", pb.ListCollectionsRequest()).names)

    def drop_collection(self, name: str) -> None:
        """Deletes a collection on the server. Raises CollectionNotFoundError if absent."""
        self.call("DropCollection", pb.DropCollectionRequest(name=name), name)

    def stats(self) -> dict[str, Any]:
        """The server's counters (``Stats`` rpc) as a dict."""
        s = self.call("Stats", pb.StatsRequest())
        return {
            "search_requests": s.search_requests,
            "search_batches": s.search_batches,
            "mean_batch_size": s.mean_batch_size,
            "max_batch_size_seen": s.max_batch_size_seen,
            "cancelled": s.cancelled,
            "deadline_exceeded": s.deadline_exceeded,
            "rpcs": dict(s.rpcs),
            "errors": dict(s.errors),
            "max_batch": s.max_batch,
            "max_wait_ms": s.max_wait_ms,
            "uptime_seconds": s.uptime_seconds,
            "in_flight": s.in_flight,
            "cpu_seconds": s.cpu_seconds,
            "stream_queries": s.stream_queries,
            "inline_searches": s.inline_searches,
        }


class RemoteCollection:
    """A collection on a server, with ``Collection``'s methods and result types (both implement
    ``engine.CollectionLike``)."""

    def __init__(self, client: Client, info: pb.CollectionInfo) -> None:
        self._client = client
        self.name = info.name
        self.dim = int(info.dim)
        self.metric = info.metric
        self.index_spec = info.index
        self.encoder_spec: str | None = info.encoder or None
        self.text_field: str | None = info.text_field or None
        self._lexical = bool(info.lexical)
        # Whether items are token sets (a multi-vector index) rather than one vector each.
        self.multi_vector = bool(info.multi_vector)
        self.shards: int | None = int(info.shards) or None  # None: not sharded

    def __repr__(self) -> str:
        return (
            f"RemoteCollection({self.name!r}, dim={self.dim}, metric={self.metric}, "
            f"index={self.index_spec!r}, server={self._client.address!r})"
        )

    def _call(self, method: str, request: Any) -> Any:
        return self._client.call(method, request, self.name)

    # ---- description -----------------------------------------------------------------------
    @property
    def lexical(self) -> bool:
        """Whether the collection keeps a BM25 index (lexical and hybrid search)."""
        return self._lexical

    @property
    def fusion(self) -> Fusion:
        """The collection's default hybrid fusion, as the server holds it now."""
        return fusion_from(self._client._describe(self.name).fusion)

    def config(self) -> dict[str, Any]:
        """The collection's config, as ``Collection.config`` gives it (asks the server: the
        default fusion may have changed)."""
        return _config(self._client._describe(self.name))

    def describe(self) -> dict[str, Any]:
        """Name, config, count, bytes on disk and bytes per component in the server's RAM and
        on its disk (see ``Collection.describe``)."""
        info = self._client._describe(self.name)
        out = {
            "name": info.name,
            **_config(info),
            "multi_vector": info.multi_vector,
            "count": info.count,
        }
        if info.lexical:
            out.update(lexical_count=info.lexical_count, fusion=fusion_from(info.fusion).to_dict())
        out["bytes_on_disk"] = info.bytes_on_disk
        out["memory"] = memory_from(info)
        if info.shards:
            out["shards"] = info.shards
        return out

    def set_fusion(
        self,
        fusion: str | None = None,
        weight: float | None = None,
        rrf_k: float | None = None,
        depth: int | None = None,
    ) -> Fusion:
        """Sets the collection's default hybrid fusion (see ``Collection.set_fusion``).

        Returns:
            The new default ``Fusion``.
        """
        Fusion.make(fusion, weight, rrf_k, depth)  # the engine's checks, before the wire
        req = pb.SetFusionRequest(collection=self.name)
        _set_fusion_args(req, fusion, weight, rrf_k, depth)
        return fusion_from(self._call("SetFusion", req))

    def __len__(self) -> int:
        return int(self._client._describe(self.name).count)

    def __contains__(self, id: object) -> bool:
        return self.get([str(id)])[0] is not None

    # ---- writes ----------------------------------------------------------------------------
    def add(
        self,
        ids: Any,
        vectors: Any = None,
        payloads: Sequence[Any] | None = None,
        *,
        texts: Sequence[str] | None = None,
    ) -> None:
        """Adds new items; fails (changing nothing) if any id exists (see ``Collection.add``)."""
        self._write(ids, vectors, payloads, texts, add_only=True)

    def upsert(
        self,
        ids: Any,
        vectors: Any = None,
        payloads: Sequence[Any] | None = None,
        *,
        texts: Sequence[str] | None = None,
    ) -> None:
        """Adds items, replacing the vector and payload of ids that already exist."""
        self._write(ids, vectors, payloads, texts, add_only=False)

    def _write(
        self,
        ids: Any,
        vectors: Any,
        payloads: Sequence[Any] | None,
        texts: Sequence[str] | None,
        add_only: bool,
    ) -> None:
        what = "add" if add_only else "upsert"
        if vectors is None and texts is None:
            raise ValueError(f"give exactly one of vectors= or texts= to {what}")
        req = pb.UpsertRequest(collection=self.name, ids=check_ids(ids), add_only=add_only)
        if texts is not None:
            # Beside vectors, the texts are only indexed lexically (the server checks that the
            # collection keeps such an index).
            if isinstance(texts, str):
                raise TypeError("texts must be a list of strings, not one string")
            req.texts.extend(texts)
        if vectors is not None:
            _set_vectors(req, vectors)
        if payloads is not None:
            if isinstance(payloads, (str, bytes, dict)):
                raise TypeError("payloads must be a list of dicts, one per id")
            for p in payloads:
                dict_to_struct(p, req.payloads.add())
        self._call("Upsert", req)

    def delete(self, ids: Any) -> int:
        """Deletes the given ids; absent ones are ignored. Returns how many were deleted."""
        return int(
            self._call("Delete", pb.DeleteRequest(collection=self.name, ids=check_ids(ids))).deleted
        )

    # ---- reads -----------------------------------------------------------------------------
    def get(self, ids: Any) -> list[Record | None]:
        """Stored items for ``ids``, aligned with them; None where an id is absent."""
        res = self._call("Get", pb.GetRequest(collection=self.name, ids=check_ids(ids)))
        return [record_from(r) for r in res.records]

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
        partial: bool = False,
        **params: Any,
    ) -> Hits:
        """The k best matches for one query: a text, a (dim,) vector or an (n, dim) token set.

        ``mode`` (``dense``, ``lexical``, ``hybrid``), ``text`` (the lexical query text beside a
        query vector) and the hybrid fusion arguments are ``Collection.search``'s; what the wire
        cannot carry is refused here with the engine's message, the rest by the server.
        ``partial`` (sharded collections only): when a shard is down, the hits of the others,
        with ``missing_shards`` naming it, instead of an UNAVAILABLE error.
        """
        req = pb.SearchRequest(collection=self.name, k=_k(k), partial=bool(partial))
        _set_mode(req, mode, fusion, weight, rrf_k, depth)
        if text is not None:
            req.text = _check_text(text)
        if vector is not None:
            set_query(req.query, vector)
        _filters(req, where, params)
        msg = self._call("Search", req)
        return Hits(hits_from(msg), missing_shards=tuple(msg.missing_shards))

    def search_stream(
        self,
        queries: Iterable[Any],
        k: int = 10,
        *,
        where: dict[str, Any] | None = None,
        omit_payloads: bool = False,
        **params: Any,
    ) -> list[Hits]:
        """``search`` for many queries (texts, vectors or token sets) over one ``SearchStream``:
        every query is its own Search (merged by the server's batcher like concurrent calls), at
        a fraction of a unary call's cost. Answers come back in the order of ``queries``.
        ``omit_payloads``: hits carry ids and scores only.

        Raises:
            RequestError: the first query the server refused, its index in the message (the
                other queries were answered; nothing is written by a search).
        """
        k = _k(k)
        reqs: list[pb.StreamSearchRequest] = []
        for q in queries:
            req = pb.SearchRequest(collection=self.name, k=k, omit_payloads=bool(omit_payloads))
            set_query(req.query, q)
            _filters(req, where, params)
            reqs.append(pb.StreamSearchRequest(tag=len(reqs), search=req))
        out: list[Hits | None] = [None] * len(reqs)
        failed: dict[int, pb.StreamSearchResponse] = {}
        c = self._client
        try:
            for msg in c._stub.SearchStream(iter(reqs), metadata=c._metadata, timeout=c.timeout):
                if msg.code:
                    failed[msg.tag] = msg
                else:
                    hits = hits_from(msg.result)
                    out[msg.tag] = Hits(hits, missing_shards=tuple(msg.result.missing_shards))
        except grpc.RpcError as e:
            raise _translate(e, self.name) from None
        if failed:
            i = min(failed)
            code = _STATUS.get(failed[i].code, grpc.StatusCode.UNKNOWN)
            if code == grpc.StatusCode.NOT_FOUND:
                raise CollectionNotFoundError(self.name)
            raise RequestError(code, f"queries[{i}]: {failed[i].message}")
        if any(h is None for h in out):
            raise RequestError(grpc.StatusCode.INTERNAL, "the stream ended before every answer")
        return [h for h in out if h is not None]

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
        partial: bool = False,
        **params: Any,
    ) -> SearchResult:
        """The k best matches for each of m queries (texts, an (m, dim) array, or token sets);
        ``mode``, ``texts``, the fusion arguments and ``partial`` are ``search_batch``'s."""
        req = pb.SearchBatchRequest(collection=self.name, k=_k(k), partial=bool(partial))
        _set_mode(req, mode, fusion, weight, rrf_k, depth)
        if texts is not None:
            if isinstance(texts, str) or not hasattr(texts, "__iter__"):
                check_texts(texts, "query texts")  # raises, in the engine's words
            items = list(texts)
            if not items:
                check_texts(items, "query texts")  # raises: an empty batch
            req.texts.extend(_check_text(t, f"query texts[{i}]") for i, t in enumerate(items))
        if vectors is not None:  # None: the texts alone (a lexical search)
            _set_queries(req, vectors)
        _filters(req, where, params)
        return result_from(self._call("SearchBatch", req), req.k)


def _set_vectors(req: pb.UpsertRequest, vectors: Any) -> None:
    """An upsert's vectors: an (n, dim) array, or n token sets of (n_i, dim)."""
    if isinstance(vectors, (list, tuple)) and vectors and np.ndim(vectors[0]) == 2:
        for x in vectors:  # token sets: one (n_i, d) array per id
            to_multi(x, req.multi_vectors.add())
        return
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 3:
        for t in x:
            to_multi(t, req.multi_vectors.add())
    else:
        for row in x.reshape(len(x), -1) if x.ndim else x.reshape(1, -1):
            req.vectors.add().values.extend(row.tolist())


def _set_queries(req: pb.SearchBatchRequest, queries: Any) -> None:
    """A batch's queries: texts, an (m, dim) array, or token sets."""
    if _is_texts(queries):
        for t in queries:
            req.queries.add().text = t
    elif isinstance(queries, (list, tuple)) and queries and np.ndim(queries[0]) == 2:
        for x in queries:
            set_query(req.queries.add(), np.asarray(x, dtype=np.float32))
    else:
        x = np.asarray(queries, dtype=np.float32)
        for q in x.reshape(1, -1) if x.ndim == 1 else x:
            set_query(req.queries.add(), q)


def _k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if not 0 < k < 2**31:
        raise ValueError(f"k must be positive, got {k}")
    return int(k)


def _config(info: pb.CollectionInfo) -> dict[str, Any]:
    """``Collection.config()`` from a CollectionInfo (entries left out where the engine does)."""
    config: dict[str, Any] = {"dim": info.dim, "metric": info.metric, "index": info.index}
    if info.encoder:
        config["encoder"] = info.encoder
    if info.lexical:
        config["lexical"] = lexical_options(info.lexical_options)
    if info.text_field:
        config["text_field"] = info.text_field
    fusion = fusion_from(info.fusion)
    if fusion != Fusion():
        config["fusion"] = fusion.to_dict()
    return config


def _set_fusion_args(req: Any, fusion: Any, weight: Any, rrf_k: Any, depth: Any) -> None:
    """Fills a request's fusion fields from values the engine's checks have passed."""
    if fusion is not None:
        req.fusion = fusion
    if weight is not None:
        req.weight = float(weight)
    if rrf_k is not None:
        req.rrf_k = float(rrf_k)
    if depth is not None:
        req.depth = int(depth)


def _set_mode(req: Any, mode: Any, fusion: Any, weight: Any, rrf_k: Any, depth: Any) -> None:
    """The mode and fusion fields of a search request, checked in the engine's order and words."""
    mode = check_mode(mode)
    fusion_for(mode, fusion, weight, rrf_k, depth)  # the engine's checks, before the wire
    if mode != "dense":
        req.mode = mode
    _set_fusion_args(req, fusion, weight, rrf_k, depth)


def _check_text(text: Any, name: str = "query texts[0]") -> str:
    """A query text the wire can carry (blank ones go on: the server refuses them)."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    return text


def _filters(req: Any, where: dict[str, Any] | None, params: dict[str, Any]) -> None:
    if where is not None:
        if not isinstance(where, dict):
            raise TypeError(f"where must be a dict, got {type(where).__name__}")
        dict_to_struct(where, req.where)
    if params:
        dict_to_struct(params, req.params)


if TYPE_CHECKING:

    def _conforms(col: RemoteCollection) -> CollectionLike:
        return col  # mypy: the remote collection implements the protocol, as Collection does
