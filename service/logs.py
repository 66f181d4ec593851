"""structlog set-up: JSON lines into the run directory's `run.log`; warnings and errors
also on stderr in a readable form (the terminal otherwise shows the progress line).
A log line that cannot be written (disk full) is dropped without a traceback: the run's
data lives in the store, and the failure that matters is reported once, by the CLI."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import structlog


def configure(log_path: Path, run_id: str) -> None:
    file_handler = logging.FileHandler(log_path, encoding="utf-8")
    file_handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=structlog.processors.JSONRenderer())
    )
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=structlog.dev.ConsoleRenderer(colors=False))
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    logging.raiseExceptions = False
    for noisy in ("httpx", "httpx2", "openai", "aiohttp", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(run_id=run_id)
