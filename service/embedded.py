"""Starts and stops the embedded endpoint (`simulator/`) as a child process.

The service talks to it over HTTP like to any provider and never imports it: this module
only runs `python -m simulator` with the endpoint's `embedded:` settings and where each was
written, waits for its READY line to learn the port, and stops it at the end. The endpoint
builds and checks its own settings: a bad one ends it at once with one line naming the
config file's line, which becomes this run's `ConfigError`. The simulator is a development
tool, installed beside the service by `make` (not part of the service's wheel); without it
an embedded endpoint is refused in one line.

The child is told our pid and exits by itself if we are killed. It runs in its own session,
so a Ctrl-C at the terminal (sent to the whole foreground process group) reaches only the
service, which stops gracefully while the endpoint answers the requests in flight.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

from typedconfig import ConfigError, Node

READY_TIMEOUT_S = 30.0
MODULE = "simulator"
BAD_SETTINGS = "simulator: bad settings: "  # the first words of its one-line settings error


def launch_command(
    settings: dict[str, Any],
    parent_pid: int | None = None,
    where: dict[str, str] | None = None,
    key: str = "",
    state_dir: Path | None = None,
) -> list[str]:
    """The command line that runs the embedded endpoint on a free loopback port with `settings`;
        it prints `READY <base url>` once bound and, given `parent_pid`, exits when that process is
        gone. `where` (dotted setting -> file:line) and `key` (where the settings sit in a config)
        make its one-line errors name the place each setting was written; `state_dir` keeps its
    files and batches, so that a restarted endpoint still has the batches it was given."""
    command = [sys.executable, "-m", MODULE, "--host", "127.0.0.1", "--port", "0"]
    command += ["--settings-json", json.dumps(settings)]
    if where:
        command += ["--settings-where", json.dumps(where)]
    if key:
        command += ["--settings-key", key]
    if state_dir is not None:
        command += ["--state-dir", str(state_dir)]
    return command + (["--parent-pid", str(parent_pid)] if parent_pid is not None else [])


class EmbeddedEndpoint:
    def __init__(self, name: str, settings: Node, log_path: Path, state_dir: Path | None = None) -> None:
        self.name = name
        self._state_dir = state_dir
        self._settings = settings
        self._log_path = log_path
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        """Launch the endpoint (its own log goes to `log_path`); return its base URL."""
        if importlib.util.find_spec(MODULE) is None:
            raise ConfigError(
                f"{self._settings.where}: endpoints.{self.name}.embedded: the embedded endpoint is a "
                "development tool and is not installed here (`make run` installs it; or point the "
                "generator at a real endpoint)"
            )
        with self._log_path.open("ab") as log_file:
            self._process = await self._spawn(log_file)
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), READY_TIMEOUT_S)
        except TimeoutError:
            line = b""
        text = line.decode().strip()
        if not text.startswith("READY "):
            await self.stop()
            err = self._log_path.read_text(errors="replace").strip().splitlines()
            reason = err[-1] if err else "it did not report READY"
            if reason.startswith(BAD_SETTINGS):
                raise ConfigError(reason.removeprefix(BAD_SETTINGS))
            raise ConfigError(
                f"endpoints.{self.name}.embedded: the embedded endpoint did not start: {reason}"
            )
        return text.split(" ", 1)[1]

    async def _spawn(self, log_file: BinaryIO) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *launch_command(
                self._settings.plain(),
                parent_pid=os.getpid(),
                where=self._settings.locations(),
                key=f"endpoints.{self.name}.embedded",
                state_dir=self._state_dir,
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,  # Ctrl-C at the terminal is ours to handle: it keeps answering
        )

    async def stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        try:
            process.terminate()
        except ProcessLookupError:  # it already exited
            return
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
