"""Fixtures for the server tests: a real server on a loopback port, in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from server import Server, ServerConfig


class ServerThread:
    """Runs ``Server`` on its own event loop in a daemon thread (the test stays synchronous)."""

    def __init__(self, config: ServerConfig, engine: Any = None) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

        async def start() -> tuple[Server, int]:
            srv = Server(config, engine)
            return srv, await srv.start()

        self.server, self.port = self.call(start())
        self.address = f"127.0.0.1:{self.port}"

    def call(self, coro: Any, timeout: float = 30) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self, grace: float = 1.0) -> None:
        if self.loop.is_closed():
            return
        try:
            self.call(self.server.stop(grace))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@pytest.fixture
def start_server(tmp_path) -> Iterator[Any]:
    """``start_server(**config) -> ServerThread`` on a free loopback port; stopped afterwards."""
    started: list[ServerThread] = []

    def start(engine: Any = None, **kwargs: Any) -> ServerThread:
        kwargs.setdefault("data", str(tmp_path / f"server-{len(started)}"))
        kwargs.setdefault("port", 0)
        st = ServerThread(ServerConfig(**kwargs), engine)
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()
