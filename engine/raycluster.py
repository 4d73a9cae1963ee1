"""Connecting this process to Ray: a private local instance, or an existing cluster.

``connect("local")`` starts a Ray instance on this machine for this process, locked down: every
Ray process listens on 127.0.0.1 only, there is no dashboard (and so no job-submission API, which
runs arbitrary commands for whoever reaches it), and Ray's token authentication stays on (its
default since 2.5x). Any other address is handed to ``ray.init(address=...)``: a cluster someone
runs, whose network exposure is theirs to set.

Imports ray: only ``engine.rayshards`` (and distributed indexing) import this module, lazily.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

LOCAL = "local"
LOOPBACK = "127.0.0.1"


def connect(address: str, *, num_cpus: int | None = None) -> None:
    """Connects this process to Ray, once (later calls reuse the connection).

    Args:
        address: ``"local"`` (start a Ray instance on this machine: one CPU per core, listening
            on 127.0.0.1 only, no dashboard, workers' output not echoed here) or a Ray address
            (``"auto"``, ``"host:port"``, ``"ray://host:port"``) given to ``ray.init``.
        num_cpus: CPUs of a local instance (default: ``os.cpu_count()``); ignored otherwise.

    Raises:
        ValueError: ``address`` is empty or not a string.
        ImportError: ray is not installed (``pip install vecdex[ray]``).

    Example:
        >>> connect("local")
    """
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"ray address must be 'local' or a Ray address, got {address!r}")
    try:
        import ray
    except ImportError as e:
        raise ImportError("Ray-hosted shards need ray: pip install 'vecdex[ray]'") from e
    if ray.is_initialized():
        return
    if address == LOCAL:
        _start_local(ray, num_cpus or os.cpu_count() or 1)
    else:
        ray.init(address=address, log_to_driver=False)
        log.info("connected to the Ray cluster at %s", address)


def _start_local(ray: Any, num_cpus: int) -> None:
    from ray._private import ray_constants

    # On Linux Ray turns a node address of 127.0.0.1 into the machine's routable address unless
    # clusters are "disabled" (as on macOS/Windows); with the address left at 127.0.0.1, the GCS,
    # raylet, workers and agents bind their servers to loopback. Only while this node starts.
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            log_to_driver=False,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
    log.info("started a local Ray instance (127.0.0.1 only, no dashboard)")
