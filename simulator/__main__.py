"""Run the simulator: ``python -m simulator --host 127.0.0.1 --port 0 [--settings-json '{...}'
[--settings-where '{...}' --settings-key KEY] | --settings FILE.json] [--parent-pid PID]``.

Prints exactly one line ``READY http://HOST:PORT/v1`` once bound. Bad settings print one line
``simulator: bad settings: PLACE: KEY: problem`` on stderr and exit with status 2; the place is
the file:line of each setting when ``--settings-where`` gives them (dotted key -> place, as the
service passes them from config.yaml) and ``--settings-key`` the key the settings sit at. SIGTERM/SIGINT
stop it cleanly; with ``--parent-pid`` it also exits when that process is gone
(polled every 0.5 s), so a SIGKILLed parent never leaves it running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys

import uvloop

from service.embedded import BAD_SETTINGS
from simulator.server import start
from simulator.settings import SimSettings
from typedconfig import ConfigError, located

POLL_S = 0.5


class _Budget(logging.Filter):
    """Lets the first `n` records through: a parent that pipes our stderr but never reads it
    must not see us block on a full pipe."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def filter(self, record: logging.LogRecord) -> bool:
        self.left -= 1
        return self.left >= 0


def quiet_logging(budget: int = 20) -> None:
    """Warnings and errors to stderr, at most `budget` records in all."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.addFilter(_Budget(budget))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m simulator", description="Embedded OpenAI-compatible simulator."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--settings-json", help="settings as a JSON object")
    group.add_argument("--settings", help="path of a JSON file with the settings")
    p.add_argument("--settings-where", help="JSON object: dotted setting -> where it was written")
    p.add_argument("--settings-key", default="", help="the key the settings sit at, for messages")
    p.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    p.add_argument("--state-dir", help="where files and batches are kept (survives a restart)")
    return p.parse_args(argv)


def load_settings(args: argparse.Namespace) -> SimSettings:
    """Settings from --settings-json or --settings (defaults otherwise), located by
    --settings-where."""
    source = "--settings-json"
    if args.settings_json:
        data = json.loads(args.settings_json)
    elif args.settings:
        source = args.settings
        with open(args.settings, encoding="utf-8") as f:
            data = json.load(f)
    else:
        data = {}
    places = json.loads(args.settings_where) if args.settings_where else {}
    return SimSettings.build(located(data, places, places.get("", source)), args.settings_key)


def parent_alive(pid: int, original_ppid: int) -> bool:
    """Whether the watched process still exists (and is not a zombie)."""
    if pid == original_ppid and os.getppid() != original_ppid:
        return False  # we were re-parented: the parent died
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


async def serve(args: argparse.Namespace, settings: SimSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner, port = await start(settings, args.host, args.port, state_dir=args.state_dir)
    host = f"[{args.host}]" if ":" in args.host else args.host
    sys.stdout.write(f"READY http://{host}:{port}/v1\n")
    sys.stdout.flush()
    original_ppid = os.getppid()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
            if args.parent_pid and not parent_alive(args.parent_pid, original_ppid):
                break
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args)
    except (ConfigError, ValueError, OSError) as e:  # json's errors are ValueErrors
        print(f"{BAD_SETTINGS}{e}", file=sys.stderr)
        return 2
    quiet_logging()
    uvloop.run(serve(args, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
