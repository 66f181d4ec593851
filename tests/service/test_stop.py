"""Graceful stop: the first SIGINT/SIGTERM stops admitting and sending, lets the requests in
flight finish (their answers are stored, none is paid for twice), flushes the output and
exits 128+signal with a clear line; a second signal stops at once; the grace period bounds
the wait; the same command resumes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from service.validate import validate_run
from tests.conftest import (
    FAST_SIM,
    ROOT,
    cli,
    read_jsonl,
    sim_stats,
    simulator,
    spawn,
    write_config,
    write_personas,
)

N = 30
HANG = {**FAST_SIM, "faults": {"p_hang": 1.0, "hang_s": 300.0}}


def start(args: list[str]) -> subprocess.Popen[str]:
    return spawn("service", *args)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert proc.poll() is None, "the run ended before the signal"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def stored_keys(out: Path) -> set[str]:
    with sqlite3.connect(out / "state.sqlite") as db:
        return {key for (key,) in db.execute("SELECT key FROM responses")}


def answers_stored(out: Path) -> int:
    """Answers in the store of a running run (0 while it is being created)."""
    try:
        with sqlite3.connect(f"file:{out / 'state.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigterm_finishes_requests_in_flight_and_resumes_without_paying_twice(tmp_path: Path) -> None:
    out = tmp_path / "run"
    personas = write_personas(tmp_path / "personas.txt", 60)
    with simulator({**FAST_SIM, "latency_median_s": 0.4}) as url:
        config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": url}}, "sim")
        args = ["run", "--config", str(config), "-n", str(N), "--out", str(out), "--personas", str(personas)]
        proc = start(args)
        wait_until(lambda: len(sim_stats(url)["answered"]) >= 10, proc)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
        stopped = sim_stats(url)

        assert proc.returncode == 128 + signal.SIGTERM
        assert "SIGTERM: stopping; no new requests" in stderr
        assert "result: interrupted (run the same command to resume)" in stdout
        assert stopped["received"] == stopped["answered"]  # no request was cut off ...
        assert set(stopped["answered"]) == stored_keys(out)  # ... and every answer was stored
        accepted = len(read_jsonl(sorted(out.glob("samples-*.jsonl"))))  # flushed on the way out
        assert 0 < accepted < N

        resumed = cli(*args)
        final = sim_stats(url)
    assert resumed.returncode == 0, resumed.stderr
    assert "accepted: 30 / 30" in resumed.stdout and validate_run(out).ok
    assert max(final["received"].values()) == 1  # no request was ever sent twice


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    personas = write_personas(tmp_path / "personas.txt", 20)
    with simulator(HANG) as url:  # every request hangs: the grace period would be all used up
        endpoint = {"base_url": url, "timeout_s": 300}
        config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim", run={"stop_grace_s": 300})
        proc = start(
            ["run", "--config", str(config), "-n", "5", "--out", str(out), "--personas", str(personas)]
        )
        wait_until(lambda: sim_stats(url)["requests"] > 0, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr.readline().startswith("SIGTERM: stopping")
        assert proc.poll() is None  # waiting for the requests in flight
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)  # far below the 300 s grace period
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGINT again: stopping now" in stderr
    assert "result: interrupted" in stdout


def test_the_grace_period_bounds_the_wait_and_the_run_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    personas = write_personas(tmp_path / "personas.txt", 20)
    args = ["run", "-n", "5", "--out", str(out), "--personas", str(personas)]
    with simulator(HANG) as url:
        endpoint = {"base_url": url, "timeout_s": 300}
        config = write_config(tmp_path / "hang.yaml", {"sim": endpoint}, "sim", run={"stop_grace_s": 1})
        proc = start([*args, "--config", str(config)])
        wait_until(lambda: sim_stats(url)["requests"] > 0, proc)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=60)  # no second signal: the grace period ends it
    assert proc.returncode == 128 + signal.SIGINT and "result: interrupted" in stdout

    with simulator(FAST_SIM) as url:
        config = write_config(tmp_path / "ok.yaml", {"sim": {"base_url": url}}, "sim")
        resumed = cli(*args, "--config", str(config))
    assert resumed.returncode == 0, resumed.stderr
    assert "accepted: 5 / 5" in resumed.stdout and validate_run(out).ok


def test_ctrl_c_at_a_terminal_leaves_the_embedded_endpoint_answering(tmp_path: Path) -> None:
    """A terminal sends SIGINT to the whole foreground process group; the embedded endpoint
    must keep answering the requests in flight while the service stops gracefully."""
    out = tmp_path / "run"
    personas = write_personas(tmp_path / "personas.txt", 60)
    embedded = {**FAST_SIM, "latency_median_s": 0.4}
    config = write_config(tmp_path / "config.yaml", {"local": {"embedded": embedded}}, "local")
    args = ["run", "--config", str(config), "-n", str(N), "--out", str(out), "--personas", str(personas)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell's foreground job
    )
    wait_until(lambda: answers_stored(out) >= 10, proc)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT and "result: interrupted" in stdout
    requests = next(line for line in stdout.splitlines() if line.startswith("this process:"))
    assert "requests ok" in requests and "reset" not in requests and "timeout" not in requests
