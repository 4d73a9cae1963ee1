"""What every rpc of the servicer shares: its counters, errors mapped to statuses, and the
thread hop for blocking engine calls."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from engine import (
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    CorruptFileError,
    FilterError,
    ReadOnlyError,
)
from engine.errors import ShardUnavailableError

from .batcher import DeadlineExpired
from .convert import BadRequest

log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S")


@dataclass
class Counters:
    rpcs: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    stream_queries: int = 0  # queries answered on SearchStream streams
    inline_searches: int = 0  # searches answered on the event loop
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


def rpc(
    fn: Callable[[S, Any, grpc.aio.ServicerContext], Awaitable[T]],
) -> Callable[[S, Any, grpc.aio.ServicerContext], Awaitable[T]]:
    """Counts the call and turns exceptions into statuses (abort raises, so nothing returns)."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
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
