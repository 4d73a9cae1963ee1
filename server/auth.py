"""Safety: the bearer-token interceptor, the loopback check, TLS credentials."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

# Load balancers probe health without credentials; everything else (reflection too) needs them.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (unknown names count as not)."""
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, insecure: bool) -> None:
    """Refuses a non-loopback bind without a token unless ``insecure``.

    Raises:
        ValueError: naming the host and the ways out.
    """
    if not token and not is_loopback(host) and not insecure:
        raise ValueError(
            f"refusing to listen on {host} without a token: anyone who can reach it could read "
            "and change every collection. Set --token (or VECDEX_TOKEN), bind 127.0.0.1, or "
            "pass --insecure"
        )


def server_credentials(cert: str | Path, key: str | Path) -> grpc.ServerCredentials:
    """TLS credentials from PEM files; raises ValueError naming a missing or unreadable file."""
    pems = []
    for what, path in (("--tls-key", key), ("--tls-cert", cert)):
        try:
            pems.append(Path(path).read_bytes())
        except OSError as e:
            raise ValueError(f"{what} {path}: {e.strerror or e}") from None
    return grpc.ssl_server_credentials([(pems[0], pems[1])])


class TokenAuth(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` metadata on every rpc but health checks.

    Args:
        token: the secret.
        on_reject: called once per rejected call (for the error counters).
    """

    def __init__(self, token: str, on_reject: Callable[[], None] | None = None) -> None:
        if not token:
            raise ValueError("token must be a non-empty string")
        self._expected = f"Bearer {token}".encode()
        self._on_reject = on_reject

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return await continuation(handler_call_details)
        got = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                got = value if isinstance(value, bytes) else value.encode()
                break
        if got and hmac.compare_digest(got, self._expected):
            return await continuation(handler_call_details)
        if self._on_reject is not None:
            self._on_reject()
        message = (
            "missing 'authorization: Bearer <token>' metadata"
            if not got
            else "invalid token in 'authorization' metadata"
        )
        # Same handler kind as the real one (reflection streams), so the client gets a status.
        handler = await continuation(handler_call_details)
        return _denying(handler, message)


def _denying(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    code = grpc.StatusCode.UNAUTHENTICATED

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield None  # pragma: no cover - abort raises

    if handler is None or handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary)
    return grpc.stream_stream_rpc_method_handler(streaming)
