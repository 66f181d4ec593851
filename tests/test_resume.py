"""Crash and resume: SIGKILL mid-run, the same command finishes with exactly N unique
valid samples, and no request whose answer was stored before the kill is sent again, though
the killed run sent max_tokens sized to its answers and the resumed one starts from the cap."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from service.validate import validate_run
from tests.conftest import FAST_SIM, ROOT, cli, kill_when, read_jsonl, sim_stats, simulator, write_config

N = 80


def accepted_lines(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in out.glob("samples-*.jsonl"))


def sized_answers(out: Path) -> int:
    """Stored answers that were sent with max_tokens sized below the stage's cap."""
    try:
        with sqlite3.connect(out / "state.sqlite") as db:
            return db.execute("SELECT COUNT(*) FROM responses WHERE max_tokens < max_tokens_cap").fetchone()[
                0
            ]
    except sqlite3.Error:  # not created yet
        return 0


def test_sigkill_mid_run_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    settings = {**FAST_SIM, "latency_median_s": 0.05}
    with simulator(settings) as url:
        # under a TPM limit max_tokens is sized, once a stage has seen enough answers
        endpoint = {"base_url": url, "limits": {"tpm": 100_000_000, "max_concurrency": 32}}
        config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim")
        args = ["run", "--config", str(config), "-n", str(N), "--out", str(out)]
        kill_when(lambda: sized_answers(out) >= 5, *args)
        assert 0 < accepted_lines(out) < N, "the kill must land mid-run"

        answered_before = sim_stats(url)["answered"]
        with sqlite3.connect(out / "state.sqlite") as db:
            stored_before = {key for (key,) in db.execute("SELECT key FROM responses")}
        assert stored_before and stored_before <= set(answered_before)

        result = cli(*args)
        assert result.returncode == 0, result.stderr
        answered_after = sim_stats(url)["answered"]

    resent = [key for key in stored_before if answered_after[key] != answered_before[key]]
    assert resent == [], f"{len(resent)} stored answers were requested again"
    paid_twice = sum(n - 1 for n in answered_after.values() if n > 1)
    assert paid_twice <= 32, "only requests in flight at the kill (max_concurrency 32) may be paid twice"
    assert "answers replayed from store" in result.stdout
    samples = read_jsonl(sorted(out.glob("samples-*.jsonl")))
    assert len(samples) == N
    assert len({s["id"] for s in samples}) == N and len({s["persona"] for s in samples}) == N
    assert validate_run(out).ok


def test_second_process_on_the_same_run_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with simulator({**FAST_SIM, "latency_median_s": 0.2}) as url:
        config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": url}}, "sim")
        args = ["run", "--config", str(config), "-n", "200", "--out", str(out)]
        first = subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not (out / "state.sqlite").exists():
                time.sleep(0.05)
            second = cli(*args, timeout=60)
        finally:
            first.send_signal(signal.SIGINT)
            first.wait(60)
    assert second.returncode == 2
    assert second.stderr.strip() == f"error: {out}: another process is already running this run directory"
    assert first.returncode == 130
