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
from aiohttp import web

from pipeline.sources import MAX_LINE_BYTES, Malformed, Persona, read_persona_file
from service.report import write_report
from service.rundir import RunDirectoryError
from service.store import Store
from service.validate import validate_run
from tests.conftest import (
    FAST_SIM,
    JOBS,
    ROOT,
    assert_intact,
    cli,
    output_files,
    read_jsonl,
    simulator,
    write_config,
    write_personas,
)
from tests.loopback import Loopback, completion, loopback

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
    """The one error line of a run refused with status 2 (after the settings a resume applied,
    if it got that far)."""
    assert result.returncode == 2, result.stdout + result.stderr
    *said, line = result.stderr.strip().splitlines()
    assert all(notice.startswith("resume: ") for notice in said), result.stderr
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


# --- runs that stop short of N, and what a persona file is --------------------------------


def run_personas(tmp_path: Path, url: str, personas: Path, n: int) -> subprocess.CompletedProcess[str]:
    """A run of `n` from `personas` against the endpoint at `url`, into tmp_path/run."""
    config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": url}}, "sim")
    args = ["--config", str(config), "--personas", str(personas), "--out", str(tmp_path / "run")]
    return cli("run", "-n", str(n), *args)


def stopped_short(result: subprocess.CompletedProcess[str]) -> str:
    """The result line of a run that ended before its target (exit status 4)."""
    assert result.returncode == 4, result.stdout + result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("result: ")]
    return line.removeprefix("result: ")


def test_a_persona_file_of_bad_lines_stops_short_with_status_4(tmp_path: Path, endpoint_url: str) -> None:
    personas = tmp_path / "personas.jsonl"
    personas.write_text("".join(f'{{"persona": "line {i}"\n' for i in range(5)))  # no closing brace
    assert stopped_short(run_personas(tmp_path, endpoint_url, personas, 5)) == (
        "stopped short: the persona source ran out, at 0 / 5 accepted (5 personas read: 5 malformed lines); "
        "give more personas (--personas FILE) or ask for fewer (-n); then run the same command to continue"
    )


def test_fifty_copies_of_one_persona_stop_short(tmp_path: Path, endpoint_url: str) -> None:
    personas = tmp_path / "personas.txt"
    personas.write_text("A baker who works in Porto.\n" * 50)
    line = stopped_short(run_personas(tmp_path, endpoint_url, personas, 5))
    assert line.startswith("stopped short: the persona source ran out, at ")
    assert "/ 5 accepted (50 personas read: " in line and "49 persona duplicates" in line


def test_an_endpoint_that_never_answers_json_stops_short(tmp_path: Path) -> None:
    async def refuse(server: Loopback, request: web.Request, body: bytes) -> web.Response:
        return completion("I'm sorry, but I can't help with that.")

    personas = write_personas(tmp_path / "personas.txt", 3)
    with loopback(refuse) as provider:
        line = stopped_short(run_personas(tmp_path, provider.url, personas, 3))
    assert line.startswith(
        "stopped short: the persona source ran out, at 0 / 3 accepted (3 personas read: "
        "3 dropped (last rule S1 3)); give more personas"
    )


def test_the_format_comes_from_the_content_and_a_bom_is_dropped(tmp_path: Path, endpoint_url: str) -> None:
    text = write_personas(tmp_path / "text.jsonl", 5)  # plain text, named .jsonl
    bom = tmp_path / "bom.txt"  # JSONL with a byte order mark, named .txt
    bom.write_bytes(b"\xef\xbb\xbf" + b"".join(b'{"persona": "A %s in Porto."}\n' % j.encode() for j in JOBS))
    assert [(p.position, p.text) for p in read_persona_file(text)][:1] == [(1, "A baker who works in Porto.")]
    assert all(isinstance(p, Persona) for p in read_persona_file(bom))
    assert next(iter(read_persona_file(bom))).text == "A baker in Porto."
    result = run_personas(tmp_path, endpoint_url, text, 4)
    assert result.returncode == 0, result.stderr
    assert "malformed persona lines skipped: 0" in result.stdout


def test_disk_full_while_the_report_is_written_names_the_file_and_leaves_no_torn_plot(
    tmp_path: Path, finished: Path
) -> None:
    _, out, _ = first_run(tmp_path, finished)
    plots = {path.name: path.read_bytes() for path in (out / "report").glob("*.png")}
    store = Store(out / "state.sqlite")
    limit = 4096  # each plot is larger: the first one written fails, as on a full disk (no file name)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(RunDirectoryError) as failed:
            write_report(store, out)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
        store.close()
    assert str(failed.value) == (
        f"{out / 'report' / 'throughput.png'}: File too large (nothing written so far is lost; fix this, "
        "then run the same command to resume)"
    )
    assert {path.name: path.read_bytes() for path in (out / "report").iterdir()} == plots
    assert cli("report", str(out)).returncode == 0


def test_control_characters_reach_neither_the_training_data_nor_the_terminal(
    tmp_path: Path, endpoint_url: str
) -> None:
    personas = tmp_path / "personas.txt"
    personas.write_text("".join(f"\x1b[31mA {job}\x07 who works\x1b]0;pwned\x07 in Lyon.\n" for job in JOBS))
    out = tmp_path / "run"
    result = run_personas(tmp_path, endpoint_url, personas, 3)
    assert result.returncode == 0, result.stderr
    exported = b"".join(path.read_bytes() for path in out.glob("samples-*.jsonl"))
    samples = read_jsonl(sorted(out.glob("samples-*.jsonl")))
    assert samples[0]["persona"].startswith("[31mA ") and samples[0]["persona"].endswith(
        "who works]0;pwned in Lyon."
    )
    assert b"\\u001b" not in exported and b"\\u0007" not in exported and b"\x1b" not in exported
    hostile = tmp_path / "\x1b[2J\x1b]0;owned\x07personas.txt"
    missing = run_personas(tmp_path, endpoint_url, hostile, 3)
    line = one_error_line(missing)
    assert "\x1b" not in missing.stderr and "\x07" not in missing.stderr
    escaped = f"{tmp_path}/\\x1b[2J\\x1b]0;owned\\x07personas.txt"
    assert line == f"{escaped}: cannot open persona file: No such file or directory"
