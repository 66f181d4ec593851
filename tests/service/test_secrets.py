"""API keys echoed by a provider never land anywhere, and run files are the owner's alone.

A provider that echoes the key it was sent in its 400, 401 and 500 bodies (a loopback
server in front of the simulator): the key appears in no byte of the run directory, stdout
or stderr, while the echoed messages themselves are kept (redacted) where they belong. Every
file a run creates is created with `run.file_mode` (0600 by default, directories 0700),
the state database's -wal and -shm included.
"""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest
from aiohttp import web

from llm.redact import REDACTED, Redactor
from tests.conftest import FAST_SIM, cli, kill_when, read_jsonl, simulator, write_config
from tests.loopback import Loopback, error, loopback

KEY_ENV = "AGENTREFINE_TEST_ECHO_KEY"


def echoing(sim: str, statuses: dict[int, int]) -> object:
    """A provider that answers `status` with the key echoed to every `n`-th request
    (`statuses`: n -> status), and forwards the others to the simulator."""

    async def handle(server: Loopback, request: web.Request, body: bytes) -> web.Response:
        sent = request.headers.get("Authorization", "")
        for every, status in statuses.items():
            if len(server.arrivals) % every == 0:
                return error(
                    status, f"Incorrect API key provided: {sent}; the key {sent[7:]} is not valid here"
                )
        return await server.forward(request, body, sim)

    return handle


def files_of(out: Path) -> list[Path]:
    return [path for path in out.rglob("*") if path.is_file()]


def test_a_key_echoed_in_400_401_and_500_bodies_appears_in_no_byte_of_the_run(tmp_path: Path) -> None:
    key = "test-key-" + secrets.token_hex(16)  # not `sk-` shaped: only the configured key can find it
    out = tmp_path / "run"
    env = {KEY_ENV: key}
    with simulator(FAST_SIM) as sim:
        with loopback(echoing(sim, {4: 500, 7: 400})) as provider:
            endpoint = {"base_url": provider.url, "api_key_env": KEY_ENV, "max_retries": 0}
            config = write_config(tmp_path / "config.yaml", {"echo": endpoint}, "echo")
            args = ["run", "--config", str(config), "-n", "12", "--out", str(out)]
            faulty = cli(*args, env=env)
        assert faulty.returncode == 0, faulty.stderr
        with loopback(echoing(sim, {1: 401})) as provider:
            endpoint = {"base_url": provider.url, "api_key_env": KEY_ENV}
            write_config(tmp_path / "config.yaml", {"echo": endpoint}, "echo")
            refused = cli(*args, "-n", "20", env=env)

    assert refused.returncode == 2
    notice, line = refused.stderr.strip().splitlines()
    assert notice == "resume: changed since the last start, applied: run.n 12 -> 20"
    assert line.startswith(
        "error: endpoint echo (sim-gpt-4o) answered 401: Incorrect API key provided: Bearer "
    )
    assert REDACTED in line
    failed = [r for r in read_jsonl([out / "rejects.jsonl"]) if r["kind"] == "failed"]
    messages = " ".join(r["message"] for r in failed)
    assert "answered 400" in messages and "HTTP 5" in messages and REDACTED in messages
    files = files_of(out)
    assert {"state.sqlite", "rejects.jsonl", "run.log", "summary.json", "metrics.prom"} <= {
        p.name for p in files
    }
    for path in files:
        assert key.encode() not in path.read_bytes(), path
    for text in (faulty.stdout, faulty.stderr, refused.stdout, refused.stderr):
        assert key not in text


def test_run_files_are_created_for_the_owner_only(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "private"
    with simulator({**FAST_SIM, "latency_median_s": 0.05}) as url:
        config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": url}}, "sim")
        args = ["run", "--config", str(config), "-n", "40", "--out", str(out)]
        kill_when(lambda: (out / "samples-00000.jsonl").exists(), *args)  # the store's -wal and -shm stay
        live = {path.name: stat.S_IMODE(path.stat().st_mode) for path in files_of(out)}
        finished = cli(*args)
        shared = cli(*args[:-1], str(tmp_path / "shared"), "--set", "run.file_mode=0640")
    assert finished.returncode == 0 and shared.returncode == 0, finished.stderr + shared.stderr
    assert {"state.sqlite-wal", "state.sqlite-shm", "samples-00000.jsonl"} <= set(live)
    assert set(live.values()) == {0o600}, live
    modes = {path.relative_to(out).as_posix(): stat.S_IMODE(path.stat().st_mode) for path in out.rglob("*")}
    assert {"report.md", "report/throughput.png", "metrics.prom", "run.log"} <= set(modes)
    assert {mode for name, mode in modes.items() if name != "report"} == {0o600} and modes["report"] == 0o700
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "runs").stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in files_of(tmp_path / "shared")} == {0o640}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Incorrect API key provided: Bearer abc.DEF_123-xyz",
            "Incorrect API key provided: Bearer [redacted]",
        ),
        ("key sk-proj-AbCdEf0123456789xyz is wrong", "key [redacted] is wrong"),
        ("the configured key: my-own-vllm-token!", "the configured key: [redacted]!"),
        ("a task-list and sk-short stay", "a task-list and sk-short stay"),
    ],
)
def test_keys_and_credential_shapes_are_redacted(text: str, expected: str) -> None:
    redactor = Redactor(["my-own-vllm-token"])
    assert redactor.in_text(text) == expected
    assert redactor.in_bytes(text.encode()) == expected.encode()
