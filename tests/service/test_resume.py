"""Crash and resume: SIGKILL mid-run, the same command finishes with exactly N unique
valid samples, and no request whose answer was stored before the kill is sent again, though
the killed run sent max_tokens sized to its answers and the resumed one starts from the cap."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.validate import validate_run
from tests.conftest import (
    FAST_SIM,
    ROOT,
    cli,
    kill_when,
    output_files,
    read_jsonl,
    sim_stats,
    simulator,
    write_config,
    write_personas,
)

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


# --- resuming with other settings or inputs -----------------------------------------------


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A run of 6 from a 30-line persona file, made once; and the simulator it used."""
    base = tmp_path_factory.mktemp("started")
    with simulator({**FAST_SIM, "models": ["sim-gpt-4o", "sim-b"]}) as url:
        write_personas(base / "personas.txt", 30)
        endpoints = {"sim": {"base_url": url}, "other": {"base_url": url, "model": "sim-b"}}
        write_config(base / "config.yaml", endpoints, "sim")
        result = cli(*resume_args(base, 6))
        assert result.returncode == 0, result.stderr
        yield base, url


def resume_args(base: Path, n: int, *more: str) -> list[str]:
    return [
        "run",
        "--config",
        str(base / "config.yaml"),
        "-n",
        str(n),
        "--out",
        str(base / "run"),
        "--personas",
        str(base / "personas.txt"),
        *more,
    ]


def copy_of(started: tuple[Path, str], tmp_path: Path) -> Path:
    base, _ = started
    for name in ("config.yaml", "personas.txt"):
        shutil.copyfile(base / name, tmp_path / name)
    shutil.copytree(base / "run", tmp_path / "run")
    return tmp_path


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "accepted:" not in result.stdout
    return line


@pytest.mark.parametrize(
    ("change", "key", "shown"),
    [
        (["--personas", "OTHER"], "personas.source", " -> OTHER"),
        (["--generator", "other"], "stages.script.model", 'stages.script.model: ["sim-gpt-4o"] -> ["sim-b"]'),
        (
            ["--set", "dedup.persona.threshold=0.5"],
            "dedup.persona.threshold",
            "dedup.persona.threshold: 0.88 -> 0.5",
        ),
        (["--set", "run.seed=7"], "run.seed", "run.seed: 0 -> 7"),
    ],
    ids=["persona-file", "generator", "dedup-threshold", "seed"],
)
def test_a_change_that_would_corrupt_the_dataset_is_refused_in_one_line(
    started: tuple[Path, str], tmp_path: Path, change: list[str], key: str, shown: str
) -> None:
    base = copy_of(started, tmp_path)
    other = tmp_path / "other.txt"
    other.write_text("".join(f"A clerk number {i} in Oslo.\n" for i in range(30)))
    change = [str(other) if part == "OTHER" else part for part in change]
    before = output_files(base / "run")
    line = refusal(cli(*resume_args(base, 9), *change))
    assert line.startswith(f"error: {base / 'run'} was started with other data-shaping settings ({key}: ")
    assert shown.replace("OTHER", str(other)) in line
    keys = [key, "stages.trajectory.model"] if key == "stages.script.model" else [key]
    allow = [part for key in keys for part in ("--allow-change", key)]
    assert line.endswith(f"use a new --out, or resume with {' '.join(allow)} to take the change on")
    assert output_files(base / "run") == before
    allowed = cli(*resume_args(base, 9), *change, *allow)
    assert allowed.returncode == 0, allowed.stderr
    assert "accepted: 9 / 9" in allowed.stdout
    assert cli(*resume_args(base, 9), *change).returncode == 0  # the change is now the record


def test_harmless_changes_are_applied_and_said(started: tuple[Path, str], tmp_path: Path) -> None:
    base = copy_of(started, tmp_path)
    with (base / "personas.txt").open("a") as grown:
        grown.write("A glassblower who works in Murano.\n")
    result = cli(
        *resume_args(base, 8), "--set", "stages.trajectory.concurrency=4", "--set", "run.max_cost_usd=50"
    )
    assert result.returncode == 0, result.stderr
    [said] = [line for line in result.stderr.splitlines() if line.startswith("resume:")]
    assert said.startswith("resume: changed since the last start, applied: ")
    for change in ("run.max_cost_usd None -> 50.0", "run.n 6 -> 8", "stages.trajectory.concurrency 16 -> 4"):
        assert change in said
    assert "accepted: 8 / 8" in result.stdout


def test_a_judge_turned_on_is_applied_and_says_what_it_leaves_unjudged(
    started: tuple[Path, str], tmp_path: Path
) -> None:
    base = copy_of(started, tmp_path)
    with (base / "personas.txt").open("a") as grown:
        grown.write("A glassblower who works in Murano.\n")
    result = cli(*resume_args(base, 7), "--set", "stages.judge.enabled=true")
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("resume:")]
    assert "stages.judge.enabled False -> True" in said[0]
    assert said[1] == "resume: the judge is on from now: the 6 samples accepted before are not judged"
    assert "accepted: 7 / 7" in result.stdout


def test_a_smaller_n_than_accepted_is_refused(started: tuple[Path, str], tmp_path: Path) -> None:
    base = copy_of(started, tmp_path)
    line = refusal(cli(*resume_args(base, 4)))
    assert line == (
        f"error: run.n (-n) is 4, but {base / 'run'} already holds 6 accepted samples: ask for at least 6 "
        "(the first 4 are the first lines of samples-00000.jsonl), or use a new --out"
    )
