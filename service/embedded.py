"""Starts and stops the embedded endpoint (`simulator/`) as a child process.

The service talks to it over HTTP like to any provider; this module only launches it
with the endpoint's `embedded:` settings, waits for its READY line to learn the port, and
stops it at the end. The child is told our pid and exits by itself if we are killed. It
runs in its own session, so a Ctrl-C at the terminal (sent to the whole foreground process
group) reaches only the service, which stops gracefully while the endpoint answers the
requests in flight.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, BinaryIO

from service.config import ConfigError
from simulator.process import launch_command

READY_TIMEOUT_S = 30.0


class EmbeddedEndpoint:
    def __init__(self, name: str, settings: dict[str, Any], log_path: Path) -> None:
        self.name = name
        self._settings = settings
        self._log_path = log_path
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        """Launch the endpoint (its own log goes to `log_path`); return its base URL."""
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
            raise ConfigError(
                f"endpoints.{self.name}.embedded: the embedded endpoint did not start: {reason}"
            )
        return text.split(" ", 1)[1]

    async def _spawn(self, log_file: BinaryIO) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *launch_command(self._settings, parent_pid=os.getpid()),
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
