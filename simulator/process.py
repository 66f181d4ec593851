"""The simulator as a separate process, for tests and benchmarks: start it on loopback,
yield its base URL, stop it; and read its counters (`/_sim/stats`)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def simulator_process(settings: dict[str, Any]) -> Iterator[str]:
    """A simulator process; yields its base URL (http://127.0.0.1:PORT/v1)."""
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulator",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--settings-json",
                json.dumps(settings),
            ],
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


def sim_stats(base_url: str) -> dict[str, Any]:
    """The simulator's counters: requests, by_status, received and answered per body digest."""
    root = base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_sim/stats", timeout=10) as response:
        return json.load(response)
