"""One local Ray cluster for every cluster test (`ray start --head --block`, a child of the
test session, stopped with it): the runs under test join it by address, as on a real
cluster, and Ray's start-up is paid once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

RAY = Path(sys.executable).parent / "ray"
HEAD_OPTIONS = ("--include-dashboard=false", "--disable-usage-stats")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a running local Ray cluster (4 CPUs: two runs' workers at most)."""
    port = free_port()
    log = tmp_path_factory.mktemp("ray") / "head.log"
    with log.open("wb") as output:
        head = subprocess.Popen(
            [str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=4", *HEAD_OPTIONS],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while b"--block" not in log.read_bytes():  # printed once the head is up
        assert head.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    try:
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
