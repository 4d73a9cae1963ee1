"""vecdex's front door: ``Engine`` (a directory of collections) and ``Collection``.

Also here: ``CollectionLike``, the protocol that ``Collection`` and the gRPC client's
``server.RemoteCollection`` both implement; the errors a caller may catch (a corrupt file comes
from ``index`` and is re-exported here, so that front ends such as ``server`` need only
``engine``); and the result types.
"""

from __future__ import annotations

from encoders import check_texts as check_texts
from index import CorruptFileError as CorruptFileError

from .collection import Collection as Collection
from .engine import Engine as Engine
from .errors import CollectionExistsError as CollectionExistsError
from .errors import CollectionLockedError as CollectionLockedError
from .errors import CollectionNotFoundError as CollectionNotFoundError
from .errors import ReadOnlyError as ReadOnlyError
from .filters import FilterError as FilterError
from .fusion import Fusion as Fusion
from .protocol import CollectionLike as CollectionLike
from .results import Hit as Hit
from .results import Record as Record
from .results import SearchResult as SearchResult

__all__ = [
    "Collection",
    "CollectionExistsError",
    "CollectionLike",
    "CollectionLockedError",
    "CollectionNotFoundError",
    "CorruptFileError",
    "Engine",
    "FilterError",
    "Fusion",
    "Hit",
    "ReadOnlyError",
    "Record",
    "SearchResult",
    "check_texts",
]
