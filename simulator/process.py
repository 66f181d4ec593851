"""The simulator as a separate process, for tests and benchmarks: start it on loopback,
yield its base URL, stop it; and read its counters (`/_sim/stats`)."""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.embedded import launch_command

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def simulator_process(settings: dict[str, Any]) -> Iterator[str]:
    """A simulator process; yields its base URL (http://127.0.0.1:PORT/v1)."""
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(
            launch_command(settings),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if not line.startswith("READY "):
                errors.seek(0)
                raise RuntimeError(f"simulator did not start: {line!r} {errors.read()}")
            yield line.split(" ", 1)[1]
        finally:
            proc.terminate()
            proc.wait(10)


def sim_stats(base_url: str, digests: bool = True) -> dict[str, Any]:
    """The simulator's counters (`simulator.server`); without `digests`, no received and
    answered per body digest (cheap to poll)."""
    root = base_url.removesuffix("/v1")
    query = "" if digests else "?digests=0"
    with urllib.request.urlopen(f"{root}/_sim/stats{query}", timeout=10) as response:
        return json.load(response)
