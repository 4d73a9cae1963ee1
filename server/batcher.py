"""The micro-batcher: concurrent Search calls merged into one ``search_batch`` call.

Calls that can share a batch (same collection, query kind, k, ``where``, params, search mode and
fusion settings, and either all or none with a lexical query text beside the query) queue together;
hybrid text queries batch like dense ones (one encoder call per batch). Each queue has at most one
batch in flight, and at most ``concurrency`` batches run across all queues. The next batch of a
queue leaves when its previous one is done, a slot is free and either the queue holds ``max_batch``
queries, or its oldest query has waited ``max_wait_ms``, or no other batch is running (an idle
server answers a lone caller at once). What arrives while a batch runs waits for the next one, so
batches grow with the load: with ``max_wait_ms=0`` this is continuous batching, the right default on
a CPU, where encoding or scoring a batch costs about the sum of its queries and waiting for company
only adds latency (and caps a queue at one batch per window). One batch is one
``Collection.search_batch`` call, i.e. one encoder call for text queries and one index/scoring call,
run on the server's thread pool; each caller gets its row.

Deadlines and cancellation: a caller that went away (its future is cancelled) or whose deadline
has passed before its batch starts is dropped from the batch and counted. If a batch fails, its
queries are retried one by one, so that one caller's bad query cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine import CollectionLike, FilterError, Hit, SearchResult

log = logging.getLogger(__name__)

Runner = Callable[..., Awaitable[Any]]  # runner(fn, *args, **kwargs): fn on the thread pool


class DeadlineExpired(Exception):
    """A queued query's deadline passed before its batch started."""


@dataclass
class BatcherStats:
    requests: int = 0  # queries submitted
    batches: int = 0  # search_batch calls made
    batched: int = 0  # queries answered through batches
    max_seen: int = 0
    cancelled: int = 0
    expired: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.batched / self.batches if self.batches else 0.0


@dataclass
class _Item:
    query: Any
    future: asyncio.Future[list[Hit]]
    deadline: float | None  # loop time
    queued_at: float
    text: str | None = None  # the lexical side's query text beside a vector query


@dataclass
class _Queue:
    col: CollectionLike
    k: int
    where: dict[str, Any] | None
    params: dict[str, Any]
    # search_batch keywords the batch shares (mode, fusion, weight, rrf_k, depth), and whether
    # every item carries a text (passed as texts=); both are part of the queue's key.
    options: dict[str, Any] = field(default_factory=dict)
    with_text: bool = False
    items: list[_Item] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)


class MicroBatcher:
    """Merges concurrent single-query searches into batched ones.

    Args:
        runner: ``await runner(fn, *args, **kwargs)`` runs a blocking engine call off the loop.
        max_batch: most queries per batch.
        max_wait_ms: how long the oldest queued query may wait for others.
        concurrency: batches running at once (across all collections).
    """

    def __init__(
        self, runner: Runner, *, max_batch: int, max_wait_ms: float, concurrency: int
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatcherStats()
        self._runner = runner
        self._slots = asyncio.Semaphore(concurrency)
        self._queues: dict[tuple[Any, ...], _Queue] = {}
        self._running = 0  # batches in flight
        self._tasks: set[asyncio.Task[None]] = set()

    async def search(
        self,
        key: tuple[Any, ...],
        col: CollectionLike,
        query: Any,
        k: int,
        where: dict[str, Any] | None,
        params: dict[str, Any],
        timeout: float | None = None,
        *,
        text: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """The hits for one query, answered from a batch with others of the same ``key``.

        ``key`` must identify the collection, the query kind, k, where and params; the batcher
        adds ``options`` (``search_batch`` keywords the batch shares: ``mode`` and the fusion
        settings; hashable values) and whether ``text`` is given (the lexical query text beside
        a vector query; a batch passes its items' texts as ``texts=``). ``timeout`` (seconds)
        is the caller's remaining deadline.

        Raises:
            DeadlineExpired: the deadline passed while the query was queued.
            Whatever ``search_batch`` raises for this query.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = None if timeout is None else now + timeout
        item = _Item(query, loop.create_future(), deadline, now, text)
        self.stats.requests += 1
        options = dict(options or {})
        key = (*key, tuple(sorted(options.items())), text is not None)
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = _Queue(col, k, where, params, options, text is not None)
            self._spawn(self._drain(key, q))
        q.items.append(item)
        if len(q.items) >= self.max_batch:
            q.full.set()
        # Cancelling the caller's task cancels this future, which the batch then skips.
        return await item.future

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch running: a new query would have no company."""
        return not self._queues and self._running == 0

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: tuple[Any, ...], q: _Queue) -> None:
        loop = asyncio.get_running_loop()
        try:
            while q.items:
                wait = q.items[0].queued_at + self.max_wait - loop.time()
                if len(q.items) < self.max_batch and wait > 0 and self._running > 0:
                    q.full.clear()
                    try:
                        await asyncio.wait_for(q.full.wait(), wait)
                    except asyncio.TimeoutError:
                        pass
                await self._slots.acquire()
                batch, q.items = q.items[: self.max_batch], q.items[self.max_batch :]
                live = self._prune(batch, loop.time())
                if not live:
                    self._slots.release()
                    continue
                self._running += 1
                # One batch in flight per queue: what arrives meanwhile forms the next batch,
                # so a busy queue sends few, full batches (other queues may run beside it).
                await self._run(q, live)
        finally:
            # No await since the loop test: nothing can have queued in between.
            if self._queues.get(key) is q:
                del self._queues[key]
            for item in q.items:  # only when cancelled (shutdown)
                if not item.future.done():
                    item.future.cancel()

    def _prune(self, batch: list[_Item], now: float) -> list[_Item]:
        live = []
        for item in batch:
            if item.future.done():  # cancelled by its caller
                self.stats.cancelled += 1
            elif item.deadline is not None and item.deadline <= now:
                self.stats.expired += 1
                item.future.set_exception(DeadlineExpired())
            else:
                live.append(item)
        return live

    async def _run(self, q: _Queue, live: list[_Item]) -> None:
        try:
            self.stats.batches += 1
            self.stats.batched += len(live)
            self.stats.max_seen = max(self.stats.max_seen, len(live))
            try:
                result = await self._search(live, q)
            except Exception as e:  # noqa: BLE001 - handed to the callers below
                if len(live) == 1 or isinstance(e, FilterError):
                    for it in live:
                        _fail(it, e)
                    return
                log.debug("batch of %d failed (%r); retrying one by one", len(live), e)
                for it in live:
                    if it.future.done():
                        continue
                    try:
                        _answer(it, (await self._search([it], q))[0])
                    except Exception as e1:  # noqa: BLE001 - this caller's own error
                        _fail(it, e1)
                return
            for i, it in enumerate(live):
                _answer(it, result[i])
        except asyncio.CancelledError:
            for it in live:
                if not it.future.done():
                    it.future.cancel()
            raise
        finally:
            self._running -= 1
            self._slots.release()

    async def _search(self, items: list[_Item], q: _Queue) -> SearchResult:
        kwargs = dict(q.options)
        if q.with_text:
            kwargs["texts"] = [it.text for it in items]
        res: SearchResult = await self._runner(
            q.col.search_batch, [it.query for it in items], q.k, where=q.where, **kwargs, **q.params
        )
        return res

    async def close(self) -> None:
        """Cancels queued queries and waits for running batches (call after the server stops)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _answer(item: _Item, hits: list[Hit]) -> None:
    if not item.future.done():
        item.future.set_result(hits)


def _fail(item: _Item, e: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(e)
