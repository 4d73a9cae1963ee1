"""The server process: gRPC server, health, reflection, auth, TLS, graceful shutdown."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from engine import Engine

from .auth import TokenAuth, check_bind, server_credentials
from .batcher import MicroBatcher
from .config import ServerConfig
from .pb import vecdex_pb2_grpc as pb_grpc
from .servicer import SERVICE_NAME, VecDexServicer, run_blocking

log = logging.getLogger(__name__)


class Server:
    """A running vecdex gRPC server over one data directory.

    Args:
        config: settings (see ``ServerConfig``).
        engine: serve this engine instead of opening ``config.data``; the server closes it on
            ``stop`` either way.
        ray: where the engine it opens hosts the shards of sharded collections (``Engine``'s
            ``ray``: None in this process, ``"local"`` or a Ray address); with ``engine``, unused.

    Example:
        >>> srv = Server(ServerConfig(data="./vecdex-data", port=0))
        >>> port = await srv.start()
        >>> await srv.stop()
    """

    def __init__(
        self, config: ServerConfig, engine: Engine | None = None, ray: str | None = None
    ) -> None:
        check_bind(config.host, config.token, config.insecure)
        self.config = config
        self.engine = engine if engine is not None else Engine(config.data, ray=ray)
        self.port: int | None = None
        self._executor = ThreadPoolExecutor(config.workers, thread_name_prefix="vecdex-rpc")
        # Searches and encoders get threads of their own, few and always the same: every new
        # thread that calls into torch brings its own OpenMP team, and teams from many threads
        # oversubscribe the cores (measured: 1.5-2x the CPU per text query).
        self._search_executor = ThreadPoolExecutor(
            config.search_concurrency, thread_name_prefix="vecdex-search"
        )
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._stopped = False
        batcher = None
        if config.max_batch > 1:
            batcher = MicroBatcher(
                functools.partial(run_blocking, self._search_executor),
                max_batch=config.max_batch,
                max_wait_ms=config.max_wait_ms,
                concurrency=config.search_concurrency,
            )
        self.servicer = VecDexServicer(
            self.engine,
            self._executor,
            config.limits,
            batcher,
            self._search_executor,
            config.inline_max_ms,
        )

    async def start(self) -> int:
        """Binds and starts serving; returns the port (useful with ``port=0``).

        Raises:
            ValueError: a bad TLS file.
            OSError: the address could not be bound (in use, or not this machine's).
        """
        cfg = self.config
        interceptors = []
        if cfg.token:
            counters = self.servicer.counters

            def rejected() -> None:
                counters.errors["UNAUTHENTICATED"] += 1

            interceptors.append(TokenAuth(cfg.token, on_reject=rejected))
        n = cfg.limits.max_message_bytes
        server = grpc.aio.server(
            interceptors=interceptors,
            maximum_concurrent_rpcs=cfg.limits.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", n),
                ("grpc.max_send_message_length", n),
                ("grpc.so_reuseport", 0),  # a second server on the port must fail, not share it
            ],
        )
        pb_grpc.add_VecDexServicer_to_server(self.servicer, server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        try:
            if cfg.tls_cert and cfg.tls_key:
                creds = server_credentials(cfg.tls_cert, cfg.tls_key)
                port = server.add_secure_port(cfg.address, creds)
            else:
                port = server.add_insecure_port(cfg.address)
        except RuntimeError as e:  # grpc's "failed to bind"
            raise OSError(f"could not listen on {cfg.address}: {e}") from None
        if not port:
            raise OSError(f"could not listen on {cfg.address}")
        await server.start()
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._server, self.port = server, port
        log.info("serving %s on %s", self.config.data, cfg.address)
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: health turns NOT_SERVING, new calls are refused, calls in flight get
        ``grace`` seconds (``config.grace_s`` by default) to finish, then the engine checkpoints
        every collection and closes."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.grace_s if grace is None else grace
        try:
            if self._health is not None:
                await self._health.enter_graceful_shutdown()
            if self._server is not None:
                await self._server.stop(grace)
            if self.servicer.batcher is not None:
                await self.servicer.batcher.close()
        finally:
            # Engine calls already running in threads finish before the checkpoint.
            await asyncio.to_thread(self._executor.shutdown, True)
            await asyncio.to_thread(self._search_executor.shutdown, True)
            await asyncio.to_thread(self.engine.close)
            log.info("stopped; collections checkpointed")


async def serve(
    config: ServerConfig,
    on_ready: Callable[[int], None] | None = None,
    ray: str | None = None,
) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down gracefully (``ray``: see ``Server``)."""
    srv = Server(config, ray=ray)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        port = await srv.start()
        if on_ready is not None:
            on_ready(port)
        # Not wait_for_termination(): cancelling it breaks the server's later shutdown.
        await stop.wait()
        log.info("shutting down (grace %.1fs)", config.grace_s)
    finally:
        await srv.stop()


def run(
    config: ServerConfig,
    on_ready: Callable[[int], None] | None = None,
    ray: str | None = None,
) -> None:
    """Blocking ``serve`` for the CLI (``ray``: see ``Server``, e.g. ``vecdex serve --ray``)."""
    asyncio.run(serve(config, on_ready, ray))
