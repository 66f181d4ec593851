"""Ray, imported only for a cluster run: join the cluster the run names (`cluster.address`,
else `$RAY_ADDRESS`), or start a local one on this machine for the run."""

from __future__ import annotations

import logging
import os
from types import ModuleType

from service.config import ConfigError

NAMESPACE = "agentrefine"


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
    ray = ray_module()
    address = address or os.environ.get("RAY_ADDRESS") or None
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
        ray.init(num_cpus=max(os.cpu_count() or 1, workers), **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local cluster"
        raise ConfigError(f"cluster: cannot reach the Ray cluster at {where}: {exc}") from None
    return True


def disconnect() -> None:
    """Leave the cluster (a local one of this run's stops)."""
    ray = ray_module()
    if ray.is_initialized():
        ray.shutdown()
