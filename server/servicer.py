"""The ``vecdex.v1.VecDex`` servicer: every rpc over the engine, with errors mapped to statuses.

Engine calls block (fsync, encoders, index search), so they run on a thread pool and the event
loop stays free to accept, batch and cancel calls. Requests are checked here first, so that the
status message names the proto field (``queries[3].vector``); what only the engine can judge (a
malformed ``where``, an unknown index parameter) comes back with the engine's message.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np

from engine import (
    CollectionExistsError,
    CollectionLike,
    CollectionLockedError,
    CollectionNotFoundError,
    CorruptFileError,
    Engine,
    FilterError,
    Fusion,
    ReadOnlyError,
)
from engine.errors import ShardUnavailableError
from engine.fusion import check_mode
from engine.sharded import ShardedCollection

from .batcher import DeadlineExpired, MicroBatcher
from .config import Limits
from .convert import (
    MULTI,
    TEXT,
    VECTOR,
    BadRequest,
    fusion_args,
    fusion_message,
    hits_message,
    invalid,
    lexical_options,
    multi_array,
    optional_struct,
    parse_query,
    record_message,
    set_lexical_options,
    set_memory,
    struct_to_dict,
    too_big,
)
from .pb import vecdex_pb2 as pb
from .pb import vecdex_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VecDex"].full_name
# Search keywords that have their own request fields: never index parameters.
SEARCH_FIELDS = frozenset(
    {
        "k",
        "where",
        "mode",
        "text",
        "texts",
        "fusion",
        "weight",
        "rrf_k",
        "depth",
        "vector",
        "vectors",
    }
)


@dataclass
class Counters:
    rpcs: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    started: float = field(default_factory=time.monotonic)


def status_of(e: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a failed call answers with."""
    if isinstance(e, BadRequest):
        return grpc.StatusCode[e.code], e.message
    if isinstance(e, DeadlineExpired):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed while the query was queued"
    if isinstance(e, CollectionNotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(e)
    if isinstance(e, CollectionExistsError):
        return grpc.StatusCode.ALREADY_EXISTS, str(e)
    if isinstance(e, FilterError):
        return grpc.StatusCode.INVALID_ARGUMENT, f"where: {e}"
    if isinstance(e, ShardUnavailableError):
        return grpc.StatusCode.UNAVAILABLE, str(e)
    if isinstance(e, CorruptFileError):
        return grpc.StatusCode.DATA_LOSS, str(e)
    if isinstance(e, (ReadOnlyError, CollectionLockedError)):
        return grpc.StatusCode.FAILED_PRECONDITION, str(e)
    if isinstance(e, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED, str(e) or "not implemented by this engine"
    if isinstance(e, (ValueError, TypeError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(e)
    log.error("internal error", exc_info=e)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(e).__name__}); see the server log"


def _rpc(
    fn: Callable[[VecDexServicer, Any, grpc.aio.ServicerContext], Awaitable[T]],
) -> Callable[[VecDexServicer, Any, grpc.aio.ServicerContext], Awaitable[T]]:
    """Counts the call and turns exceptions into statuses (abort raises, so nothing returns)."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: VecDexServicer, request: Any, context: grpc.aio.ServicerContext) -> T:
        self.counters.rpcs[name] += 1
        self.counters.in_flight += 1
        try:
            return await fn(self, request, context)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes a status
            code, message = status_of(e)
        finally:
            self.counters.in_flight -= 1
        self.counters.errors[code.name] += 1
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    return wrapper


async def run_blocking(executor: Executor, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs a blocking engine call on ``executor`` without blocking the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))


class VecDexServicer(pb_grpc.VecDexServicer):
    """Serves one ``Engine``.

    Args:
        engine: the engine (the server owns it: it closes it on shutdown).
        executor: where blocking engine calls run.
        limits: request limits.
        batcher: merges concurrent Search calls; None answers each on its own.
        search_executor: where searches run (its size bounds how many run at once); by default
            ``executor``.
    """

    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        limits: Limits,
        batcher: MicroBatcher | None,
        search_executor: Executor | None = None,
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.batcher = batcher
        self.counters = Counters()
        self._executor = executor
        self._search_executor = search_executor or executor
        # Saves a thread hop per call; the engine caches too.
        self._cols: dict[str, CollectionLike] = {}

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the thread pool."""
        return await run_blocking(self._executor, fn, *args, **kwargs)

    async def _collection(self, name: str, field: str = "collection") -> CollectionLike:
        if not name:
            raise invalid(f"{field} is empty: name a collection")
        col = self._cols.get(name)
        # The engine's own rule for handing out its cached object (closed or superseded: reopen).
        if col is None or getattr(col, "closed", False) or not getattr(col, "writable", True):
            col = self._cols[name] = await self.run(self.engine.open_collection, name)
        return col

    def _k(self, k: int) -> int:
        if k <= 0:
            raise invalid(f"k must be positive, got {k}")
        if k > self.limits.max_k:
            raise invalid(f"k={k} is over the server limit of {self.limits.max_k}")
        return k

    def _ids(self, ids: Any, field: str = "ids") -> list[str]:
        n = len(ids)
        if n == 0:
            raise invalid(f"{field} is empty")
        if n > self.limits.max_items:
            raise too_big(
                f"{field} has {n} entries, over the server limit of {self.limits.max_items}; "
                "split the call"
            )
        out = list(ids)
        for i, s in enumerate(out):
            if not s:
                raise invalid(f"{field}[{i}] is empty")
        return out

    def _check_query(
        self, col: CollectionLike, kind: str, value: Any, field: str, mode: str
    ) -> Any:
        multi = col.multi_vector
        if kind == TEXT:
            # A lexical search uses the text as it is; dense and hybrid ones encode it.
            if mode != "lexical" and col.encoder_spec is None:
                hint = (
                    "send a vector query with the text in text"
                    if mode == "hybrid"
                    else "search it with vectors"
                )
                raise invalid(f"{field}.text: collection {col.name!r} has no encoder; {hint}")
            return value
        if kind == VECTOR and multi:
            raise invalid(
                f"{field}.vector: collection {col.name!r} holds multi-vectors; "
                "send multi_vector (or text)"
            )
        if kind == MULTI and not multi:
            raise invalid(
                f"{field}.multi_vector: collection {col.name!r} holds one vector per item; "
                "send vector (or text)"
            )
        d = value.shape[-1]
        if d != col.dim:
            raise invalid(
                f"{field}.{kind} has dimension {d}, collection {col.name!r} has {col.dim}"
            )
        return value

    def _text(self, text: str, field: str) -> str:
        """A lexical query text: not blank, within the size limit."""
        if not text.strip():
            raise invalid(f"{field} is empty")
        if len(text) > self.limits.max_text_chars:
            raise too_big(
                f"{field} has {len(text)} characters, over the limit of "
                f"{self.limits.max_text_chars}"
            )
        return text

    @staticmethod
    def _search_options(request: Any) -> tuple[str, dict[str, Any]]:
        """The search mode and the ``search``/``search_batch`` keywords it takes besides the query.

        Mode and (hybrid) fusion settings are checked here with the engine's own checks, so a
        bad one is refused with the engine's message before it reaches the micro-batcher; fusion
        settings in another mode go to the engine, which refuses them.
        """
        mode = check_mode(request.mode or "dense")
        options = fusion_args(request)
        if mode == "hybrid":
            Fusion.make(
                options.get("fusion"),
                options.get("weight"),
                options.get("rrf_k"),
                options.get("depth"),
            )
        if mode != "dense":  # dense searches call the engine exactly as before modes existed
            options["mode"] = mode
        return mode, options

    @staticmethod
    def _partial(col: CollectionLike, request: Any) -> dict[str, Any]:
        """``{"partial": True}`` for a partial search of a sharded collection (refused on
        another), else nothing: a plain collection's search takes no ``partial``."""
        if not request.partial:
            return {}
        if not isinstance(col, ShardedCollection):
            raise invalid(f"partial: collection {col.name!r} is not sharded")
        return {"partial": True}

    @staticmethod
    def _params(request: Any) -> dict[str, Any]:
        params = optional_struct(request, "params") or {}
        clash = sorted(SEARCH_FIELDS & params.keys())
        if clash:
            raise invalid(f"params.{clash[0]} is not an index parameter: use the request's field")
        return params

    @staticmethod
    def _info(d: dict[str, Any]) -> pb.CollectionInfo:
        info = pb.CollectionInfo(
            name=d["name"],
            dim=int(d["dim"]),
            metric=str(d["metric"]),
            index=str(d["index"]),
            encoder=str(d.get("encoder") or ""),
            count=int(d["count"]),
            bytes_on_disk=int(d.get("bytes_on_disk", 0)),
            lexical=d.get("lexical") is not None,
            text_field=str(d.get("text_field") or ""),
            lexical_count=int(d.get("lexical_count") or 0),
            multi_vector=bool(d.get("multi_vector")),
            shards=int(d.get("shards") or 0),
        )
        if d.get("lexical") is not None:
            set_lexical_options(info.lexical_options, d["lexical"])
        fusion = Fusion.from_dict(d["fusion"]) if d.get("fusion") else Fusion()
        fusion_message(fusion, info.fusion)
        set_memory(info, d.get("memory") or {})
        return info

    # ---- collections -----------------------------------------------------------------------
    @_rpc
    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        if not request.name:
            raise invalid("name is empty")
        lexical: Any = request.lexical if request.HasField("lexical") else None
        if request.HasField("lexical_options"):
            if lexical is False:
                raise invalid("lexical_options is set but lexical is false")
            lexical = lexical_options(request.lexical_options)
        col = await self.run(
            self.engine.create_collection,
            request.name,
            dim=request.dim or None,
            encoder=request.encoder or None,
            metric=request.metric or "cosine",
            index=request.index or "hnsw",
            exist_ok=request.exist_ok,
            lexical=lexical,
            text_field=request.text_field or None,
            shards=request.shards or None,
        )
        return self._info(await self.run(col.describe))

    @_rpc
    async def DropCollection(
        self, request: pb.DropCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DropCollectionResponse:
        if not request.name:
            raise invalid("name is empty")
        self._cols.pop(request.name, None)
        await self.run(self.engine.drop_collection, request.name)
        return pb.DropCollectionResponse()

    @_rpc
    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        return pb.ListCollectionsResponse(names=await self.run(self.engine.list_collections))

    @_rpc
    async def DescribeCollection(
        self, request: pb.DescribeCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        col = await self._collection(request.name, "name")
        return self._info(await self.run(col.describe))

    # ---- writes ----------------------------------------------------------------------------
    @_rpc
    async def Upsert(
        self, request: pb.UpsertRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertResponse:
        ids = self._ids(request.ids)
        n = len(ids)
        given = [f for f in ("vectors", "multi_vectors", "texts") if len(getattr(request, f))]
        if not given or given[:2] == ["vectors", "multi_vectors"]:
            raise invalid(
                "set one of vectors, multi_vectors or texts (one per id), or texts beside "
                f"vectors (lexical indexing only); got {', '.join(given) or 'none'}"
            )
        for f in given:
            if len(getattr(request, f)) != n:
                raise invalid(f"{f} has {len(getattr(request, f))} entries for {n} ids")
        if len(request.payloads) not in (0, n):
            raise invalid(f"payloads has {len(request.payloads)} entries for {n} ids")
        source = given[0]  # what the vectors come from: texts only when nothing else is given
        col = await self._collection(request.collection)
        multi = col.multi_vector
        vectors: Any = None
        texts: list[str] | None = None
        if "texts" in given:
            texts = list(request.texts)
            for i, t in enumerate(texts):
                if not t.strip():
                    raise invalid(f"texts[{i}] is empty")
                if len(t) > self.limits.max_text_chars:
                    raise too_big(
                        f"texts[{i}] has {len(t)} characters, over the limit of "
                        f"{self.limits.max_text_chars}"
                    )
        if source == "texts":
            if col.encoder_spec is None:
                raise invalid(f"texts: collection {col.name!r} has no encoder; send vectors")
        elif source == "vectors":
            if multi:
                raise invalid(f"vectors: collection {col.name!r} holds multi-vectors")
            for i, v in enumerate(request.vectors):
                if len(v.values) != col.dim:
                    raise invalid(
                        f"vectors[{i}] has dimension {len(v.values)}, "
                        f"collection {col.name!r} has {col.dim}"
                    )
            vectors = np.array([v.values for v in request.vectors], dtype=np.float32)
            bad = ~np.isfinite(vectors)
            if bad.any():
                raise invalid(f"vectors[{int(np.argwhere(bad)[0][0])}] contains NaN or inf")
        else:
            if not multi:
                raise invalid(f"multi_vectors: collection {col.name!r} holds one vector per item")
            vectors = [
                multi_array(mv, f"multi_vectors[{i}]", self.limits.max_query_vectors)
                for i, mv in enumerate(request.multi_vectors)
            ]
            for i, x in enumerate(vectors):
                if x.shape[1] != col.dim:
                    raise invalid(
                        f"multi_vectors[{i}] has dimension {x.shape[1]}, "
                        f"collection {col.name!r} has {col.dim}"
                    )
        payloads = [struct_to_dict(p) for p in request.payloads] if request.payloads else None
        if request.add_only:
            for i, k in enumerate(ids):
                if k in col:
                    raise BadRequest(
                        "ALREADY_EXISTS", f"ids[{i}] {k!r} already exists (add_only is set)"
                    )
        write = col.add if request.add_only else col.upsert
        await self.run(write, ids, vectors, payloads, texts=texts)
        return pb.UpsertResponse(count=n)

    @_rpc
    async def Delete(
        self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteResponse:
        ids = self._ids(request.ids)
        col = await self._collection(request.collection)
        return pb.DeleteResponse(deleted=await self.run(col.delete, ids))

    # ---- reads -----------------------------------------------------------------------------
    @_rpc
    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        ids = self._ids(request.ids)
        col = await self._collection(request.collection)
        records = await self.run(col.get, ids)
        out = pb.GetResponse()
        for key, rec in zip(ids, records, strict=True):
            record_message(rec, key, out.records.add())
        return out

    @_rpc
    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        k = self._k(request.k)
        mode, options = self._search_options(request)
        text = self._text(request.text, "text") if request.HasField("text") else None
        kind: str | None = None
        value: Any = None
        if request.HasField("query"):
            kind, value = parse_query(
                request.query, "query", self.limits.max_text_chars, self.limits.max_query_vectors
            )
        elif text is None:
            raise invalid("query is missing")
        col = await self._collection(request.collection)
        if kind is not None:
            value = self._check_query(col, kind, value, "query", mode)
        elif mode == "lexical":  # the text alone: the same search as a text query, batchable
            kind, value, text = TEXT, text, None
        where = optional_struct(request, "where")
        params = self._params(request)
        partial = self._partial(col, request)
        # A partial search reports its own missing shards: it is answered on its own.
        if self.batcher is not None and kind is not None and not partial:
            # The batcher adds the mode, the fusion settings and whether a text is given.
            key = (
                id(col),
                kind,
                k,
                json.dumps(where, sort_keys=True),
                json.dumps(params, sort_keys=True),
            )
            hits = await self.batcher.search(
                key,
                col,
                value,
                k,
                where,
                params,
                timeout=context.time_remaining(),
                text=text,
                options=options,
            )
        else:  # no batcher, or no query beside the text (refused by the engine in its words)
            if text is not None:
                options["text"] = text
            options.update(partial)
            hits = await run_blocking(
                self._search_executor, col.search, value, k, where=where, **options, **params
            )
        out = hits_message(hits, pb.SearchResponse())
        out.missing_shards.extend(getattr(hits, "missing_shards", ()))
        return out

    @_rpc
    async def SearchBatch(
        self, request: pb.SearchBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchBatchResponse:
        k = self._k(request.k)
        mode, options = self._search_options(request)
        lim = self.limits
        m = len(request.queries)
        if m == 0 and not request.texts:
            raise invalid("queries is empty")
        for name, n in (("queries", m), ("texts", len(request.texts))):
            if n > lim.max_batch_queries:
                raise too_big(
                    f"{name} has {n} entries, over the server limit of "
                    f"{lim.max_batch_queries}; split the call"
                )
        if request.texts:
            options["texts"] = [self._text(t, f"texts[{i}]") for i, t in enumerate(request.texts)]
        parsed = [
            parse_query(q, f"queries[{i}]", lim.max_text_chars, lim.max_query_vectors)
            for i, q in enumerate(request.queries)
        ]
        kind = parsed[0][0] if parsed else None
        for i, (kind_i, _) in enumerate(parsed):
            if kind_i != kind:
                raise invalid(f"queries[{i}] is a {kind_i} query, queries[0] a {kind} query")
        col = await self._collection(request.collection)
        values = [
            self._check_query(col, kind_i, v, f"queries[{i}]", mode)
            for i, (kind_i, v) in enumerate(parsed)
        ]
        # No queries (texts alone): the engine runs a lexical search, or says what is missing.
        queries: Any = None if not values else np.stack(values) if kind == VECTOR else values
        where = optional_struct(request, "where")
        params = self._params(request)
        options.update(self._partial(col, request))
        result = await run_blocking(
            self._search_executor, col.search_batch, queries, k, where=where, **options, **params
        )
        out = pb.SearchBatchResponse(missing_shards=result.missing_shards)
        for i in range(len(result)):
            hits_message(result[i], out.results.add())
        return out

    @_rpc
    async def SetFusion(
        self, request: pb.SetFusionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Fusion:
        col = await self._collection(request.collection)
        return fusion_message(await self.run(col.set_fusion, **fusion_args(request)))

    @_rpc
    async def Stats(
        self, request: pb.StatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatsResponse:
        c = self.counters
        out = pb.StatsResponse(
            rpcs=dict(c.rpcs),
            errors=dict(c.errors),
            uptime_seconds=time.monotonic() - c.started,
            cpu_seconds=time.process_time(),
            in_flight=max(0, c.in_flight - 1),  # not counting this call
        )
        b = self.batcher
        if b is not None:
            s = b.stats
            out.search_requests = s.requests
            out.search_batches = s.batches
            out.mean_batch_size = s.mean_batch_size
            out.max_batch_size_seen = s.max_seen
            out.cancelled = s.cancelled
            out.deadline_exceeded = s.expired
            out.max_batch = b.max_batch
            out.max_wait_ms = b.max_wait * 1000.0
        else:
            out.max_batch = 1
        return out
