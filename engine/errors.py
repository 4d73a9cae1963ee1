"""Exceptions the engine raises; the server maps them to gRPC status codes."""

from __future__ import annotations


class CollectionNotFoundError(LookupError):
    """No collection of that name exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"collection {name!r} does not exist")


class CollectionExistsError(ValueError):
    """A collection of that name already exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"collection {name!r} already exists")


class CollectionLockedError(RuntimeError):
    """Another process has the collection open for writing (one writing process at a time)."""

    def __init__(self, name: str, lock_file: str, pid: int | None = None) -> None:
        self.name = name
        self.lock_file = lock_file
        self.pid = pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(
            f"collection {name!r} is open for writing by {holder} (lock file {lock_file}); "
            "close it there first, or open it with read_only=True"
        )


class ReadOnlyError(RuntimeError):
    """A write to a collection that cannot take writes (read-only, closed or superseded)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"collection {name!r} does not accept writes: {reason}")


class ShardUnavailableError(RuntimeError):
    """A shard of a sharded collection did not answer (its process died or is restarting).

    Nothing is silently partial: a search raises this unless it asked for ``partial=True``.
    """

    def __init__(self, name: str, shards: list[int] | tuple[int, ...], what: str) -> None:
        self.name = name
        self.shards = tuple(shards)
        names = ", ".join(f"shard-{i:03d}" for i in self.shards)
        super().__init__(
            f"collection {name!r}: {names} unavailable for {what}; retry once it has restarted"
            + (", or search with partial=True" if "search" in what else "")
        )
