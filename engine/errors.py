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
