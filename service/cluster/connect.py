"""Ray, imported only for a cluster run: join the cluster the run names (`cluster.address`,
else `$RAY_ADDRESS`), or start a local one on this machine for the run."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from types import ModuleType

from service.config import ConfigError

NAMESPACE = "agentrefine"
REACH_TIMEOUT_S = 5.0


def ray_module() -> ModuleType:
    """Ray, or one line saying how to get it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "cluster.workers: running on Ray workers needs Ray, the optional extra `cluster`: "
            "`make run WORKERS=K` installs it (or pip install 'agentrefine-synth[cluster]')"
        ) from None
    return ray


def connect(address: str | None, workers: int) -> bool:
    """Join the cluster at `address` (or `$RAY_ADDRESS`), else start a local cluster with a CPU
    for each worker at least; True when the local cluster is this run's (it stops with it)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
        _token_auth_if_held()  # read when Ray is imported
    ray = ray_module()
    options = {
        "include_dashboard": False,
        "logging_level": logging.ERROR,  # Ray's own start-up lines would cut across the progress line
        "log_to_driver": False,  # each worker logs to OUT/workers/worker-K.log
        "namespace": NAMESPACE,
    }
    try:
        if address:
            ray.init(address=address, **options)
            return False
        # "local": a new cluster, never the one a `ray start` on this machine left behind
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, workers), **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        raise ConfigError(f"cluster: cannot reach the Ray cluster at {where}: {exc}") from None
    return True


def _check_reachable(address: str) -> None:
    """One line at once for a cluster address nothing answers at (Ray itself retries for many
    minutes): a `host:port` (or `ray://host:port`) must accept a connection within
    `REACH_TIMEOUT_S`. "auto" and other forms are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(
            f"cluster: nothing answers at the Ray cluster address {address} ({exc.strerror or exc}); "
            "check $RAY_ADDRESS or cluster.address (the head's `ray start --head` prints it)"
        ) from None


def _token_auth_if_held() -> None:
    """Ray clusters started by `ray start` ask for a token by default, and a driver that joins
    one sends it only in token mode: take that mode when a token is at hand and no mode is set
    (Ray's variables: RAY_AUTH_MODE, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)."""
    held = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if "RAY_AUTH_MODE" not in os.environ and (held or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def disconnect() -> None:
    """Leave the cluster (a local one of this run's stops)."""
    ray = ray_module()
    if ray.is_initialized():
        ray.shutdown()
