"""The search rpcs: Search, SearchStream (many Search calls on one stream) and SearchBatch.

Where a call's time goes (notes and README: server, measured over loopback on 2 cores): a unary
call costs Python grpc.aio about 0.25 ms of server CPU outside the handler, a message on an open
stream about a fifth of that, so streams are the fast transport for many small queries. Within
the handler, a lone graph search (HNSW) of a few tens of microseconds costs less than the thread
hop it would take to run it off the event loop, so it runs inline (see ``Inline``); under load,
and for everything else (encoders, exact scoring, filters, IVF, sharded fan-outs), searches go to
the micro-batcher or the search threads.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np

from engine import CollectionLike, Fusion, Hit
from engine.fusion import check_mode
from engine.sharded import ShardedCollection

from .batcher import MicroBatcher
from .config import Limits
from .convert import (
    MULTI,
    TEXT,
    VECTOR,
    fusion_args,
    hits_message,
    invalid,
    optional_struct,
    parse_query,
    too_big,
)
from .pb import vecdex_pb2 as pb
from .rpc import Counters, rpc, run_blocking, status_of

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
T = TypeVar("T")
# Index kinds whose single queries are cheap graph walks (tens of microseconds).
WALKS_ALONE = frozenset({"hnsw"})
REMEASURE = 64  # see Inline.measure
MAX_KEYS = 1024  # cost keys kept (collection x params); past it the averages start afresh
STREAM_WINDOW = 256  # a stream's queries running at once; the stream reads no further meanwhile


class Inline:
    """Which searches run on the event loop instead of a search thread.

    A dense vector search with no filter, no text and no mode of a collection whose index walks a
    graph (``WALKS_ALONE``) runs inline when the server has nothing else in flight (no other call,
    nothing batching) and its recent engine time (an exponential average per collection and
    parameter set, measured wherever it ran) is under ``max_ms``: alone, the thread hop costs
    more than the search. Under load such searches go to the micro-batcher (or the search
    threads) as before: measured, merging them (one engine call amortises its per-call Python
    work) and running the graph walk on a thread beside the loop's Python pay more than the hop.
    The first search of a key and every ``REMEASURE``-th after it go to a search thread, timed
    (the average stays current, and the hop lets calls queued meanwhile start: under load an
    all-inline server would never see a second call in flight); when other calls did start
    meanwhile, the server counts as crowded and nothing runs inline until the next timing. A
    search while a write of this server runs (a writer holds the collection's lock) or whose
    average has grown (a large ``ef``, a busy machine) is never inline.

    Args:
        max_ms: the engine time under which a search may run inline; 0 turns inlining off.
    """

    def __init__(self, max_ms: float) -> None:
        if max_ms < 0:
            raise ValueError(f"inline_max_ms must be >= 0, got {max_ms}")
        self.max_s = max_ms / 1000.0
        self.writes = 0  # writes of this server running now
        self._cost: dict[tuple[int, str], float] = {}
        self._untimed: dict[tuple[int, str], int] = {}
        self.crowded = False  # the last timed search saw other calls start meanwhile

    def key(self, col: CollectionLike, params: dict[str, Any]) -> tuple[int, str] | None:
        """The cost key of a plain dense search of ``col``, or None when it never runs inline."""
        if self.max_s <= 0 or isinstance(col, ShardedCollection):
            return None
        if col.index_spec.split(":", 1)[0] not in WALKS_ALONE:
            return None
        return id(col), json.dumps(params, sort_keys=True) if params else ""

    def measure(self, key: tuple[int, str]) -> bool:
        """Whether this search should be timed on a search thread: its cost is unknown, or it
        is the ``REMEASURE``-th since the last timing."""
        if key not in self._cost:
            return True
        n = self._untimed[key] = self._untimed.get(key, 0) + 1
        return n % REMEASURE == 0

    def ok(self, key: tuple[int, str]) -> bool:
        cost = self._cost.get(key)
        return cost is not None and cost <= self.max_s and self.writes == 0

    def timed(self, key: tuple[int, str], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` (a search), its time folded into the key's average."""
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            took = time.perf_counter() - t0
            if len(self._cost) >= MAX_KEYS and key not in self._cost:  # e.g. many ef values
                self._cost.clear()
                self._untimed.clear()
            old = self._cost.get(key)
            self._cost[key] = took if old is None else 0.8 * old + 0.2 * took


class SearchRpcs:
    """Search, SearchStream and SearchBatch, and the request checks they share (a part of
    ``VecDexServicer``)."""

    if TYPE_CHECKING:  # provided by VecDexServicer
        limits: Limits
        batcher: MicroBatcher | None
        counters: Counters
        inline: Inline
        _search_executor: Executor

        async def _collection(self, name: str, field: str = "collection") -> CollectionLike: ...

    def _alone(self) -> bool:
        """No other call in flight (a stream counts as one) and nothing batching."""
        return self.counters.in_flight <= 1 and (self.batcher is None or self.batcher.idle)

    def _k(self, k: int) -> int:
        if k <= 0:
            raise invalid(f"k must be positive, got {k}")
        if k > self.limits.max_k:
            raise invalid(f"k={k} is over the server limit of {self.limits.max_k}")
        return k

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

    @rpc
    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        return await self._search(request, context.time_remaining())

    @rpc
    async def SearchStream(
        self,
        request_iterator: AsyncIterator[pb.StreamSearchRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        slots = asyncio.Semaphore(STREAM_WINDOW)
        writing = asyncio.Lock()  # one write at a time on a stream
        tasks: set[asyncio.Task[None]] = set()

        async def answer(msg: pb.StreamSearchRequest) -> None:
            out = pb.StreamSearchResponse(tag=msg.tag)
            try:
                try:
                    await self._search(msg.search, context.time_remaining(), out.result)
                    self.counters.stream_queries += 1
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - this query's own status
                    code, message = status_of(e)
                    self.counters.errors[code.name] += 1
                    out.ClearField("result")
                    out.code, out.message = code.value[0], message
                async with writing:
                    await context.write(out)
            finally:
                slots.release()

        try:
            async for msg in request_iterator:
                await slots.acquire()
                task = asyncio.ensure_future(answer(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:  # the stream ended early (cancelled, or a write failed): drop what runs
            for task in list(tasks):
                task.cancel()

    async def _search(
        self,
        request: pb.SearchRequest,
        timeout: float | None,
        out: pb.SearchResponse | None = None,
    ) -> pb.SearchResponse:
        """Answers one SearchRequest into ``out`` (or a new SearchResponse)."""
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
        hits: list[Hit]
        plain = kind == VECTOR and not options and text is None and where is None and not partial
        cost_key = self.inline.key(col, params) if plain else None
        # Every REMEASURE-th graph search goes to a thread, timed: that keeps the cost current,
        # and its await lets calls that queued meanwhile start, so a busy server is seen busy.
        probe = cost_key is not None and self.inline.measure(cost_key)
        if (
            cost_key is not None
            and not probe
            and not self.inline.crowded
            and self.inline.ok(cost_key)
            and self._alone()
        ):
            # Cheap, and nothing to merge it with: on the loop, no thread hop, no queue.
            self.counters.inline_searches += 1
            hits = self.inline.timed(cost_key, col.search, value, k, **params)
        elif cost_key is not None and (probe or self.batcher is None):
            hits = await run_blocking(
                self._search_executor, self.inline.timed, cost_key, col.search, value, k, **params
            )
            if probe:  # did other calls start while this one was away?
                self.inline.crowded = not self._alone()
        # A partial search reports its own missing shards: it is answered on its own.
        elif self.batcher is not None and kind is not None and not partial:
            # The batcher adds the mode, the fusion settings and whether a text is given.
            key = (
                id(col),
                kind,
                k,
                json.dumps(where, sort_keys=True) if where else "",
                json.dumps(params, sort_keys=True) if params else "",
            )
            hits = await self.batcher.search(
                key, col, value, k, where, params, timeout=timeout, text=text, options=options
            )
        else:  # no batcher, or no query beside the text (refused by the engine in its words)
            if text is not None:
                options["text"] = text
            options.update(partial)
            hits = await run_blocking(
                self._search_executor, col.search, value, k, where=where, **options, **params
            )
        out = hits_message(
            hits, pb.SearchResponse() if out is None else out, not request.omit_payloads
        )
        missing = getattr(hits, "missing_shards", ())
        if missing:
            out.missing_shards.extend(missing)
        return out

    @rpc
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
        payloads = not request.omit_payloads
        for i in range(len(result)):
            hits_message(result[i], out.results.add(), payloads)
        return out
