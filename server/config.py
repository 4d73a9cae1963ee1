"""Server settings and request limits."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """Request limits; past them a call gets RESOURCE_EXHAUSTED (k: INVALID_ARGUMENT)."""

    max_message_bytes: int = 64 << 20  # one request or response message
    max_k: int = 1000
    max_batch_queries: int = 1024  # queries in one SearchBatch
    max_items: int = 10_000  # ids in one Upsert, Delete or Get
    max_text_chars: int = 16_384  # one query or document text
    max_query_vectors: int = 1024  # rows of one multi-vector query or document
    max_concurrent_rpcs: int | None = 4096  # calls past this are refused (RESOURCE_EXHAUSTED)


@dataclass(frozen=True)
class ServerConfig:
    """How ``vecdex serve`` runs.

    Args:
        data: the engine's data directory.
        host: address to bind; 127.0.0.1 by default. A non-loopback address needs ``token``
            (or ``insecure``).
        port: TCP port; 0 picks a free one.
        token: bearer token every rpc but health needs; defaults to ``$VECDEX_TOKEN``.
        tls_cert: PEM certificate chain (with ``tls_key``) to serve TLS.
        tls_key: PEM private key.
        insecure: allow a non-loopback bind without a token.
        max_batch: most Search calls merged into one batch; 1 turns the micro-batcher off.
        max_wait_ms: while another batch runs, how long a Search call may wait for others to
            share its batch. 0 (the default) is continuous batching: a batch leaves as soon as
            a search slot is free, with whatever queued while the slots were busy; a window
            pays only where a bigger batch costs about the same (GPU), not on a CPU.
        search_concurrency: batches (or unbatched searches) running at once.
        inline_max_ms: a plain dense search of an HNSW collection whose recent engine time is
            under this runs on the event loop, without the thread hop and the batcher (each
            query walks the graph alone: merging buys nothing); 0 (the default) sends every
            search to the search threads: in two quiet runs of bench/server_load on 2 cores,
            whichever variant ran second won, by up to 30%, so no gain is shown.
        workers: threads running blocking engine calls.
        grace_s: how long shutdown waits for in-flight calls before cancelling them.
        limits: request limits.
    """

    data: str
    host: str = "127.0.0.1"
    port: int = 50051
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False
    max_batch: int = 64
    max_wait_ms: float = 0.0
    search_concurrency: int = 2
    inline_max_ms: float = 0.0
    workers: int = 8
    grace_s: float = 10.0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.workers < 1 or self.search_concurrency < 1:
            raise ValueError("workers and search_concurrency must be >= 1")
        if self.inline_max_ms < 0:
            raise ValueError(f"inline_max_ms must be >= 0, got {self.inline_max_ms}")
        if self.grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {self.grace_s}")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"
