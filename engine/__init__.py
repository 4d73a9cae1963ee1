"""vecdex's front door: ``Engine`` (a directory of collections) and ``Collection``."""

from __future__ import annotations

from .collection import Collection as Collection
from .engine import Engine as Engine
from .errors import CollectionExistsError as CollectionExistsError
from .errors import CollectionLockedError as CollectionLockedError
from .errors import CollectionNotFoundError as CollectionNotFoundError
from .errors import ReadOnlyError as ReadOnlyError
from .results import Hit as Hit
from .results import Record as Record
from .results import SearchResult as SearchResult

__all__ = [
    "Collection",
    "CollectionExistsError",
    "CollectionLockedError",
    "CollectionNotFoundError",
    "Engine",
    "Hit",
    "ReadOnlyError",
    "Record",
    "SearchResult",
]
