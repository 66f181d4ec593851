"""Bad input through the CLI: each gives one line on stderr naming the place (file, line,
key or variable), exit status 2, and leaves the output already produced intact; over-long
persona lines are read past in bounded memory; an unwritable or full disk stops the run
with one line and the same command resumes it cleanly afterwards."""

from __future__ import annotations

import ctypes
import gzip
import os
import resource
import shutil
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.personas import MAX_LINE_BYTES, Malformed, Persona, read_persona_file
from service.validate import validate_run
from tests.conftest import (
    FAST_SIM,
    ROOT,
    assert_intact,
    cli,
    output_files,
    read_jsonl,
    simulator,
    write_config,
    write_personas,
)

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


@pytest.fixture(scope="module")
def endpoint_url() -> Iterator[str]:
    with simulator(FAST_SIM) as url:
        yield url


@pytest.fixture(scope="module")
def finished(endpoint_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with 5 accepted samples, made once for the module."""
    base = tmp_path_factory.mktemp("finished")
    config = write_config(base / "config.yaml", {"sim": {"base_url": endpoint_url}}, "sim")
    result = cli("run", "--config", str(config), "-n", "5", "--out", str(base / "run"))
    assert result.returncode == 0, result.stderr
    return base


def first_run(tmp_path: Path, finished: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """A copy of the finished run: (its config, its run directory, its exported files)."""
    config, out = tmp_path / "config.yaml", tmp_path / "run"
    shutil.copyfile(finished / "config.yaml", config)
    shutil.copytree(finished / "run", out)
    return config, out, output_files(out)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line.removeprefix("error: ")


# --- persona files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "persona file is empty"),
        (b"\n  \n\t\n", "persona file is empty"),
        (b"A baker\n\x00\x01\x02\x03 binary", "binary data (NUL byte at offset 8)"),
        (gzip.compress(b'{"persona": "A baker"}\n'), "gzip-compressed"),
        ("A baker\n".encode("utf-16"), "UTF-16 text"),
    ],
    ids=["empty", "blank", "binary", "gzip", "utf16"],
)
def test_unusable_persona_file_is_refused_before_any_work(
    tmp_path: Path, finished: Path, content: bytes, reason: str
) -> None:
    config, out, before = first_run(tmp_path, finished)
    personas = tmp_path / "personas.jsonl"
    personas.write_bytes(content)
    result = cli("run", "--config", str(config), "-n", "9", "--out", str(out), "--personas", str(personas))
    assert one_error_line(result).startswith(f"{personas}: {reason}")
    assert output_files(out) == before


def test_a_10_mb_line_is_rejected_with_its_line_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "personas.txt"
    with path.open("wb") as handle:
        handle.write(b"A baker in Porto.\n" + b"x" * 10_000_000 + b"\nA nurse in Oslo.\n")
    tracemalloc.start()
    try:
        items = list(read_persona_file(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [type(i) for i in items] == [Persona, Malformed, Persona]
    assert (
        items[1].source == f"{path}:2"
        and items[1].reason == f"line is 10000001 bytes (limit {MAX_LINE_BYTES})"
    )
    assert peak < 1_000_000  # the 10 MB line is never held whole


def test_bad_lines_are_skipped_by_line_and_the_run_completes(tmp_path: Path, endpoint_url: str) -> None:
    bad = (b"x" * 200_000, b"caf\xe9 owner in Lyon", b'{"persona": "json in a text file"')
    personas = write_personas(tmp_path / "personas.txt", 8)
    personas.write_bytes(b"\n".join([*bad, personas.read_bytes()]))
    config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": endpoint_url}}, "sim")
    out = tmp_path / "run"
    result = cli("run", "--config", str(config), "-n", "6", "--out", str(out), "--personas", str(personas))
    assert result.returncode == 0, result.stderr
    malformed = [r for r in read_jsonl([out / "rejects.jsonl"]) if r["kind"] == "malformed"]
    assert [r["source"] for r in malformed] == [f"{personas}:1", f"{personas}:2"]
    assert "200001 bytes" in malformed[0]["message"] and "UTF-8" in malformed[1]["message"]
    assert f"{personas}:1" in result.stderr and f"{personas}:2" in result.stderr
    assert len(read_jsonl(sorted(out.glob("samples-*.jsonl")))) == 6 and validate_run(out).ok


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda text: text.replace("  sim:\n", "  sim:\n    rmp: 100\n"),
            ":{line}: endpoints.sim.rmp: unknown key",
        ),
        (lambda text: text.replace("max_in_flight: 24", "max_in_flight: lots"), ":{line}: run.max_in_flight"),
        (
            lambda text: text.replace("  sim:\n", "  sim:\n    api_key_env: AGENTREFINE_UNSET_KEY\n"),
            ":{line}: endpoints.sim.api_key_env: environment variable AGENTREFINE_UNSET_KEY is not set",
        ),
    ],
    ids=["unknown-key", "wrong-type", "missing-api-key"],
)
def test_invalid_config_is_one_line_before_any_work(
    tmp_path: Path, finished: Path, edit: Callable[[str], str], expected: str
) -> None:
    config, out, before = first_run(tmp_path, finished)
    text = edit(config.read_text())
    config.write_text(text)
    changed = next(
        i for i, line in enumerate(text.splitlines(), 1) if "rmp" in line or "lots" in line or "UNSET" in line
    )
    env = {"AGENTREFINE_UNSET_KEY": ""}
    result = cli("run", "--config", str(config), "-n", "9", "--out", str(out), env=env)
    assert one_error_line(result).startswith(f"{config}" + expected.format(line=changed))
    assert output_files(out) == before
    fresh = cli("run", "--config", str(config), "-n", "9", "--out", str(tmp_path / "fresh"), env=env)
    assert fresh.returncode == 2 and not (tmp_path / "fresh").exists()  # nothing was started


# --- the run directory ----------------------------------------------------------------------


def unprivileged() -> None:
    """Even root gets 'permission denied': drop the capabilities that bypass file modes."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_limited(args: list[str], preexec: Callable[[], None]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=preexec,
    )


def test_unwritable_run_directory_is_one_line_and_resumes_once_writable(
    tmp_path: Path, finished: Path
) -> None:
    config, out, before = first_run(tmp_path, finished)
    args = ["run", "--config", str(config), "-n", "9", "--out", str(out)]
    out.chmod(0o555)
    try:
        result = run_limited(args, unprivileged)
    finally:
        out.chmod(0o755)
    assert one_error_line(result) == f"{out}: run directory is not writable: Permission denied"
    assert output_files(out) == before
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "accepted: 9 / 9" in resumed.stdout and validate_run(out).ok


def test_disk_full_while_writing_is_one_line_and_the_run_resumes_cleanly(
    tmp_path: Path, finished: Path
) -> None:
    config, out, before = first_run(tmp_path, finished)
    # every file the run appends to may grow only 64 KiB past the largest exported file
    limit = max(len(content) for content in before.values()) + 64 * 1024

    def disk_full() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    args = ["run", "--config", str(config), "-n", "40", "--out", str(out)]
    line = one_error_line(run_limited(args, disk_full))
    assert line.startswith(f"{out}{os.sep}") and line.endswith("then run the same command to resume)")
    assert_intact(before, out)

    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    samples = read_jsonl(sorted(out.glob("samples-*.jsonl")))
    assert len(samples) == 40 and len({s["id"] for s in samples}) == 40
    assert validate_run(out).ok
