"""The ``vecdex.v1.VecDex`` servicer: every rpc over the engine, with errors mapped to statuses.

Engine calls block (fsync, encoders, index search), so they run on a thread pool and the event
loop stays free to accept, batch and cancel calls. Requests are checked here first, so that the
status message names the proto field (``queries[3].vector``); what only the engine can judge (a
malformed ``where``, an unknown index parameter) comes back with the engine's message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc
import numpy as np

from engine import CollectionLike, Engine, Fusion

from .batcher import MicroBatcher
from .config import Limits
from .convert import (
    BadRequest,
    fusion_args,
    fusion_message,
    invalid,
    lexical_options,
    multi_array,
    record_message,
    set_lexical_options,
    set_memory,
    struct_to_dict,
    too_big,
)
from .pb import vecdex_pb2 as pb
from .pb import vecdex_pb2_grpc as pb_grpc
from .rpc import Counters, rpc, run_blocking
from .rpc import status_of as status_of
from .search import SEARCH_FIELDS as SEARCH_FIELDS
from .search import Inline, SearchRpcs

T = TypeVar("T")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VecDex"].full_name


class VecDexServicer(SearchRpcs, pb_grpc.VecDexServicer):
    """Serves one ``Engine``.

    Args:
        engine: the engine (the server owns it: it closes it on shutdown).
        executor: where blocking engine calls run.
        limits: request limits.
        batcher: merges concurrent Search calls; None answers each on its own.
        search_executor: where searches run (its size bounds how many run at once); by default
            ``executor``.
        inline_max_ms: cheap graph searches run on the event loop (see ``search.Inline``);
            0 (the default) never.
    """

    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        limits: Limits,
        batcher: MicroBatcher | None,
        search_executor: Executor | None = None,
        inline_max_ms: float = 0.0,
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.batcher = batcher
        self.counters = Counters()
        self._executor = executor
        self._search_executor = search_executor or executor
        self.inline = Inline(inline_max_ms)
        # Saves a thread hop per call; the engine caches too.
        self._cols: dict[str, CollectionLike] = {}

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the thread pool."""
        return await run_blocking(self._executor, fn, *args, **kwargs)

    async def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A write on the thread pool; meanwhile no search runs inline (the writer holds the
        collection's lock, and an inline search waiting for it would stall the event loop)."""
        self.inline.writes += 1
        try:
            return await self.run(fn, *args, **kwargs)
        finally:
            self.inline.writes -= 1

    async def _collection(self, name: str, field: str = "collection") -> CollectionLike:
        if not name:
            raise invalid(f"{field} is empty: name a collection")
        col = self._cols.get(name)
        # The engine's own rule for handing out its cached object (closed or superseded: reopen).
        if col is None or getattr(col, "closed", False) or not getattr(col, "writable", True):
            col = self._cols[name] = await self.run(self.engine.open_collection, name)
        return col

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
    @rpc
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

    @rpc
    async def DropCollection(
        self, request: pb.DropCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DropCollectionResponse:
        if not request.name:
            raise invalid("name is empty")
        self._cols.pop(request.name, None)
        await self.run(self.engine.drop_collection, request.name)
        return pb.DropCollectionResponse()

    @rpc
    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        return pb.ListCollectionsResponse(names=await self.run(self.engine.list_collections))

    @rpc
    async def DescribeCollection(
        self, request: pb.DescribeCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        col = await self._collection(request.name, "name")
        return self._info(await self.run(col.describe))

    # ---- writes ----------------------------------------------------------------------------
    @rpc
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
            texts = [self._text(t, f"texts[{i}]") for i, t in enumerate(request.texts)]
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
        await self._write(write, ids, vectors, payloads, texts=texts)
        return pb.UpsertResponse(count=n)

    @rpc
    async def Delete(
        self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteResponse:
        ids = self._ids(request.ids)
        col = await self._collection(request.collection)
        return pb.DeleteResponse(deleted=await self._write(col.delete, ids))

    # ---- reads -----------------------------------------------------------------------------
    @rpc
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

    @rpc
    async def SetFusion(
        self, request: pb.SetFusionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Fusion:
        col = await self._collection(request.collection)
        return fusion_message(await self.run(col.set_fusion, **fusion_args(request)))

    @rpc
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
            stream_queries=c.stream_queries,
            inline_searches=c.inline_searches,
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
