"""structlog set-up: JSON lines into the run directory's `run.log`; warnings and errors
also on stderr in a readable form (the terminal otherwise shows the progress line).

Every line carries the run id; lines caused by a sample's stage work carry `sample_id` and
`stage` (bound by the run), LLM lines their `endpoint`. API keys never reach a log: every
string is passed through `llm.redact` (the run's keys and credential shapes), and fields
named like a credential (authorization, api_key) are dropped, in our lines and in libraries'.
Text on the terminal also has its control characters escaped (`printable`): a persona path
or a provider's message cannot move the cursor, ring the bell or retitle the terminal.
A log line that cannot be written (disk full) is dropped without a traceback: the run's
data lives in the store, and the failure that matters is reported once, by the CLI.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import structlog

from llm.redact import REDACTED, redact

CREDENTIAL_FIELDS = frozenset(("authorization", "api_key", "api-key", "x-api-key"))


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MULTILINE_FIELDS = frozenset(("exception", "stack"))  # tracebacks keep their lines


def printable(text: str) -> str:
    """`text` as one line for a terminal: control characters (ESC, BEL, newline, ...) shown
    escaped, as `\\x1b`."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def configure(log_path: Path, run_id: str) -> None:
    """Log to `log_path` (JSON lines) and warnings to stderr, every line with `run_id`; the
    keys are those given to `llm.redact.configure`."""
    credentials = _Redactor()
    file_handler = logging.FileHandler(log_path, encoding="utf-8")
    file_handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                credentials,
                structlog.processors.JSONRenderer(),
            ]
        )
    )
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                credentials,
                _printable_values,
                structlog.dev.ConsoleRenderer(colors=False),
            ]
        )
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


class _Redactor:
    """A structlog processor that keeps credentials out of log lines."""

    def __call__(self, _logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        return {
            key: REDACTED if key.lower() in CREDENTIAL_FIELDS else self._clean(value)
            for key, value in event.items()
        }

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return self(None, "", value)
        if isinstance(value, list | tuple):
            return [self._clean(item) for item in value]
        return value


def _printable_values(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor for the terminal: control characters in strings escaped."""
    return {
        key: printable(value) if isinstance(value, str) and key not in _MULTILINE_FIELDS else value
        for key, value in event.items()
    }
