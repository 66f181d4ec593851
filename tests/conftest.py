"""Shared test helpers: real simulator processes on 127.0.0.1, config files, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dedup.minilm import MODEL_FOR_KIND, MiniLMEmbedder
from simulator.process import sim_stats
from simulator.process import simulator_process as simulator

__all__ = ["sim_stats", "simulator"]  # re-exported: real simulator processes on 127.0.0.1

ROOT = Path(__file__).resolve().parents[1]
LABELLED_PERSONAS = ROOT / "tests" / "data" / "dedup_personas.jsonl"
LABELLED_SCRIPTS = ROOT / "tests" / "data" / "dedup_scripts.jsonl"

FAST_SIM: dict[str, Any] = {
    "latency_median_s": 0.01,
    "latency_sigma": 0.3,
    "faults": {"p_5xx": 0.0, "p_reset": 0.0, "p_truncated_body": 0.0, "p_hang": 0.0},
}


@pytest.fixture(scope="session")
def local_embedders() -> Iterator[dict[str, MiniLMEmbedder]]:
    """The local embedding model of each dedup kind, loaded once for the whole session."""
    embedders = {kind: MiniLMEmbedder(model) for kind, model in MODEL_FOR_KIND.items()}
    yield embedders
    for embedder in embedders.values():
        embedder.close()


def write_config(
    path: Path,
    endpoints: dict[str, dict[str, Any]],
    generator: str,
    run: dict[str, Any] | None = None,
    stages: dict[str, Any] | None = None,
) -> Path:
    config = {
        "generator": generator,
        "endpoints": {
            name: {"model": "sim-gpt-4o", "limits": {"max_concurrency": 32}, "timeout_s": 10, **spec}
            for name, spec in endpoints.items()
        },
        "stages": stages
        or {
            "script": {"concurrency": 8},
            "trajectory": {"concurrency": 16},
            "personas": {"concurrency": 2},
        },
        "run": {"max_in_flight": 24, **(run or {})},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def spawn(module: str, *args: str, output: int = subprocess.PIPE) -> subprocess.Popen[str]:
    """`python -m module args` from the project root, in the background (text output)."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=ROOT, stdout=output, stderr=output, text=True
    )


def kill_when(ready: Callable[[], bool], *args: str, timeout: float = 120) -> None:
    """Run the CLI in the background and SIGKILL it as soon as `ready()` holds (or it exits,
    or `timeout` passes)."""
    proc = spawn("service", *args, output=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def read_jsonl(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


JOBS = ("baker", "nurse", "pilot", "chemist", "ranger", "archivist", "welder", "violinist", "farmer", "judge")
CITIES = ("Porto", "Oslo", "Lima", "Kyoto", "Banff", "Ghent", "Accra", "Hanoi", "Quito", "Perth")


def write_personas(path: Path, count: int, extra: tuple[str, ...] = ()) -> Path:
    """A plain-text persona file: `count` distinct personas, then the `extra` lines."""
    personas = [f"A {job} who works in {city}." for city in CITIES for job in JOBS][:count]
    path.write_text("\n".join([*personas, *extra]) + "\n")
    return path


def output_files(out: Path) -> dict[str, bytes]:
    """The exported files of a run directory, by name (to prove they were not touched)."""
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.jsonl"))}


def assert_intact(before: dict[str, bytes], out: Path) -> None:
    """Every file exported earlier is still there and still starts with what it held (new
    lines may follow: e.g. surplus samples promoted when a larger N is asked for)."""
    after = output_files(out)
    for name, content in before.items():
        assert after[name][: len(content)] == content, f"{name} was changed"
