"""vecdex over gRPC: the ``vecdex.v1.VecDex`` server and its Python client.

``Client`` mirrors ``engine.Engine`` and hands out ``RemoteCollection`` objects with
``engine.Collection``'s methods and result types; ``Server`` (or ``vecdex serve``) serves a data
directory. Stubs generated from ``proto/vecdex/v1/*.proto`` live in ``server.pb`` (``make proto``).
"""

from __future__ import annotations

from .app import Server as Server
from .app import serve as serve
from .client import Client as Client
from .client import RemoteCollection as RemoteCollection
from .client import RequestError as RequestError
from .config import Limits as Limits
from .config import ServerConfig as ServerConfig

__all__ = [
    "Client",
    "Limits",
    "RemoteCollection",
    "RequestError",
    "Server",
    "ServerConfig",
    "serve",
]
