"""The embedded endpoint's lifecycle as the service manages it: bad settings are one line,
and a SIGKILLed service leaves no endpoint process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import FAST_SIM, ROOT, cli, write_config


def endpoint_processes(marker: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_bad_embedded_settings_are_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {"local": {"embedded": {"latency_median": 1}}}, "local")
    result = cli("run", "--config", str(config), "-n", "1", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    # checked by the endpoint as it starts, before any request: the file, the line and the key
    assert lines[0].startswith(f"error: {config}:9: endpoints.local.embedded.latency_median: unknown key")


def test_killed_service_leaves_no_endpoint_behind(tmp_path: Path) -> None:
    marker = "987654321"  # a seed no other test uses, to find this endpoint's process
    settings = {**FAST_SIM, "seed": int(marker), "latency_median_s": 0.2}
    config = write_config(tmp_path / "c.yaml", {"local": {"embedded": settings}}, "local")
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "run",
            "--config",
            str(config),
            "-n",
            "500",
            "--out",
            str(tmp_path / "r"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not endpoint_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert endpoint_processes(marker), "the service did not start its endpoint"
    os.kill(service.pid, signal.SIGKILL)
    service.wait()
    deadline = time.monotonic() + 10
    while endpoint_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert endpoint_processes(marker) == []
