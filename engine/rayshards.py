"""Shards hosted by Ray actors: one actor per shard, each a ``ShardHost`` in its own process.

The same shard-set interface as ``engine.shards.LocalShards`` (``call``, ``gather``, ``close``),
so a ``ShardedCollection`` does not know where its shards run. Ray restarts an actor that dies
(``max_restarts=-1``); the new actor reopens its shard, which replays the shard's log, so it
serves every write the shard acknowledged. Tasks are never retried by Ray
(``max_task_retries=0``): a write in flight when its actor died is reported, not silently
repeated. A shard whose actor is dead or restarting is *missing*: ``gather`` reports it (or
raises ``ShardUnavailableError``). An error raised by the shard itself (a bad filter, a
corrupt file) comes back as the same exception type with the same message.

Arguments and results cross process boundaries through Ray's own serialization (Ray's
internal transport between its processes), never to disk or to vecdex's wire protocol.

Imports ray: only ``engine.engine`` imports this module, lazily, for ``Engine(ray=...)``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import ray
import ray.exceptions as rex

from . import raycluster
from .errors import CollectionLockedError, ShardUnavailableError
from .shards import ShardHost

log = logging.getLogger(__name__)

# A shard that cannot answer: its process died, is restarting, or its node is unreachable.
_DOWN: tuple[type[BaseException], ...] = (
    rex.ActorDiedError,
    rex.ActorUnavailableError,
    rex.RayActorError,
    rex.GetTimeoutError,
)
SHARD_CONCURRENCY = 8  # calls one shard actor runs at once
# How long a new actor waits for its shard's lock, held by a previous actor that is exiting.
LOCK_WAIT_S = 10.0


class _ShardActor:
    """The body of one shard's actor: a ``ShardHost``, or the error opening it raised.

    Opening errors are kept, not raised: an exception in an actor's ``__init__`` reaches the
    caller only as Ray's ``ActorDiedError`` text, while one raised by a method comes back as
    itself (a ``CorruptFileError`` stays one).
    """

    def __init__(self, path: str, name: str, options: dict[str, Any]) -> None:
        self.host: ShardHost | None = None
        self.error: Exception | None = None
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                self.host = ShardHost(path, name, **options)
                return
            except CollectionLockedError as e:
                # The shard's previous process may still be exiting (its lock goes with it).
                if time.monotonic() >= deadline:
                    self.error = e
                    return
                time.sleep(0.1)
            except Exception as e:  # noqa: BLE001 - raised by every call, see the docstring
                self.error = e
                return

    def run(self, method: str, *args: Any) -> Any:
        try:
            if self.host is None:
                assert self.error is not None
                raise self.error
            return getattr(self.host, method)(*args)
        except Exception as e:
            raise _carried(e) from None


class _Carried(Exception):
    """An exception a shard's method raised, as plain data: its class, message and plain
    attributes, rebuilt in the caller by ``_cause``. Every error travels this way, so the
    caller never depends on an exception class being rebuildable by Ray's serializer (one whose
    ``__init__`` takes more than its message, as ``CorruptFileError``'s, is not)."""

    def __init__(self, module: str, qualname: str, message: str, state: dict[str, Any]) -> None:
        super().__init__(module, qualname, message, state)
        self.module, self.qualname, self.message, self.state = module, qualname, message, state


_PLAIN = (str, int, float, bool, type(None), tuple, list)


def _carried(e: Exception) -> _Carried:
    cls = type(e)
    state = {k: v for k, v in vars(e).items() if isinstance(v, _PLAIN)}
    return _Carried(cls.__module__, cls.__qualname__, str(e), state)


def _rebuild(c: _Carried) -> BaseException:
    """The exception a ``_Carried`` describes: its own class, message and attributes."""
    try:
        cls = getattr(importlib.import_module(c.module), c.qualname)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(c.qualname)
        out = cls.__new__(cls)
        BaseException.__init__(out, c.message)
        out.__dict__.update(c.state)
        return out
    except Exception:  # noqa: BLE001 - a class this process cannot rebuild
        return RuntimeError(f"{c.module}.{c.qualname}: {c.message}")


class RayShards:
    """N shards, each hosted by a Ray actor (see the module docstring).

    Args:
        parts: (shard directory, shard collection name such as ``"docs/shard-000"``) per shard.
        options: ``ShardHost`` keywords (read_only, durability, verify, settings).
        address: ``"local"`` or a Ray address (``engine.raycluster.connect``).
        num_cpus: CPUs each actor reserves (0: shards never wait for a free CPU).
        timeout_s: how long a call waits for a shard before counting it missing (None: as long
            as it takes; a shard that is restarting answers once it has reopened).
        ready_timeout_s: how long construction waits for every shard to open.

    Raises:
        ShardUnavailableError: a shard's actor did not start within ``ready_timeout_s``.
        Exception: what opening a shard raised (``CorruptFileError``, ``CollectionLockedError``).
    """

    where = "ray"

    def __init__(
        self,
        parts: list[tuple[str, str]],
        options: dict[str, Any],
        address: str,
        *,
        num_cpus: float = 0,
        timeout_s: float | None = None,
        ready_timeout_s: float = 120.0,
    ) -> None:
        raycluster.connect(address)
        self.n = len(parts)
        self.name = parts[0][1].rsplit("/", 1)[0] if parts else ""
        self.timeout_s = timeout_s
        self._parts = list(parts)
        self._options = dict(options)
        self._actor_cls: Any = ray.remote(_ShardActor).options(
            # Threads: concurrent searches on a shard run together (the collection's own
            # read-write lock orders them against writes, which the sharded collection sends
            # one at a time).
            max_concurrency=SHARD_CONCURRENCY,
            max_restarts=-1,
            max_task_retries=0,
            num_cpus=num_cpus,
            scheduling_strategy="SPREAD",
        )
        self._actors: list[Any] = [
            self._actor_cls.remote(path, name, options) for path, name in parts
        ]
        try:
            self.wait_ready(ready_timeout_s)
        except BaseException:
            self._kill_all()
            raise
        log.info("%d shards of %r hosted by Ray actors", self.n, self.name)

    def actor(self, i: int) -> Any:
        """Shard ``i``'s actor handle (for operations and tests: ``ray.kill(shards.actor(i))``)."""
        return self._actors[i]

    def wait_ready(self, timeout: float = 120.0) -> list[int]:
        """Waits until every shard answers (a restarted actor has reopened its shard); returns
        each actor's process id.

        Raises:
            ShardUnavailableError: a shard did not answer within ``timeout`` seconds.
            Exception: what opening a shard raised, as itself.
        """
        return self._wait(range(self.n), timeout)

    def restart(self, i: int, timeout: float = 120.0) -> int:
        """Replaces shard ``i``'s actor with a new one, which reopens the shard (replaying its
        log); returns its process id. For a shard whose actor was ended for good (Ray restarts
        the others by itself).

        Raises:
            ShardUnavailableError: the new actor did not answer within ``timeout`` seconds.
        """
        try:
            ray.kill(self._actors[i], no_restart=True)
        except Exception as e:  # noqa: BLE001 - an actor already gone
            log.debug("killing shard %d's actor: %s", i, e)
        path, name = self._parts[i]
        self._actors[i] = self._actor_cls.remote(path, name, self._options)
        return self._wait([i], timeout)[0]

    def _wait(self, shards: Sequence[int], timeout: float) -> list[int]:
        """Pings ``shards`` until each answers; their process ids."""
        deadline = time.monotonic() + timeout
        pids: dict[int, int | None] = dict.fromkeys(shards)
        while True:
            left = [i for i, p in pids.items() if p is None]
            refs = [self._actors[i].run.remote("ping") for i in left]
            for i, ref in zip(left, refs, strict=True):
                try:
                    pids[i] = self._get(ref, max(0.0, deadline - time.monotonic()))
                except _DOWN:
                    pass
            missing = [i for i, p in pids.items() if p is None]
            if not missing:
                return [int(p) for p in pids.values() if p is not None]
            if time.monotonic() >= deadline:
                raise ShardUnavailableError(self.name, missing, "opening")
            time.sleep(0.1)

    def call(self, i: int, method: str, *args: Any) -> Future[Any]:
        """``ShardHost.<method>(*args)`` on shard ``i``; the future raises
        ``ShardUnavailableError`` if the shard is down, or the shard's own error."""
        ref = self._actors[i].run.remote(method, *args)
        out: Future[Any] = Future()

        def done(raw: Future[Any]) -> None:
            try:
                out.set_result(self._unwrap(raw))
            except _DOWN:
                out.set_exception(ShardUnavailableError(self.name, [i], method))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                out.set_exception(e)

        ref.future().add_done_callback(done)
        return out

    def gather(
        self,
        method: str,
        args: Callable[[int], tuple[Any, ...]] | tuple[Any, ...] = (),
        *,
        shards: Sequence[int] | None = None,
        partial: bool = False,
    ) -> tuple[list[Any], list[int]]:
        """Calls ``method`` on each shard in ``shards`` (default all), concurrently.

        Returns:
            (results aligned with the shards asked, None for one that could not answer;
            the indices of the shards that could not answer).

        Raises:
            ShardUnavailableError: a shard could not answer and ``partial`` is False.
            Exception: the first error a shard itself raised, as itself.
        """
        which = list(range(self.n)) if shards is None else list(shards)
        refs = [
            self._actors[i].run.remote(method, *(args(i) if callable(args) else args))
            for i in which
        ]
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        results: list[Any] = []
        missing: list[int] = []
        raised: BaseException | None = None
        for i, ref in zip(which, refs, strict=True):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                results.append(self._get(ref, left))
            except _DOWN as e:
                log.warning("shard %d of %r did not answer %s: %s", i, self.name, method, e)
                results.append(None)
                missing.append(i)
            except Exception as e:  # noqa: BLE001 - raised below, after every shard answered
                results.append(None)
                raised = raised or e
        if raised is not None:
            raise raised
        if missing and not partial:
            raise ShardUnavailableError(self.name, missing, method)
        return results, missing

    def close(self) -> None:
        """Ends the actors (their shards were closed by ``gather("close")``)."""
        self._kill_all()

    def _kill_all(self) -> None:
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as e:  # noqa: BLE001 - an actor already gone
                log.debug("killing a shard actor: %s", e)
        self._actors = []

    @staticmethod
    def _get(ref: Any, timeout: float | None) -> Any:
        try:
            return ray.get(ref, timeout=timeout)
        except rex.RayTaskError as e:
            raise _cause(e) from None

    @staticmethod
    def _unwrap(raw: Future[Any]) -> Any:
        try:
            return raw.result()
        except rex.RayTaskError as e:
            raise _cause(e) from None


def _cause(e: rex.RayTaskError) -> BaseException:
    """The exception the shard's method raised (Ray wraps it in a RayTaskError)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, _Carried):
        return _rebuild(cause)
    if isinstance(cause, BaseException):
        return cause
    return RuntimeError(str(e))
