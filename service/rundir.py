"""The run directory as a place to write: one writer at a time, proven writable before any
work, small files replaced atomically, files readable by the owner only (`run.file_mode`:
they hold prompts and answers), and one error type, naming the file, for every write that
fails (disk full, file too large, permissions, a broken state database).

Nothing here loses data: the store commits before the output files are appended, so
after any of these errors the same command resumes the run once the cause is fixed.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RESUME_HINT = "nothing written so far is lost; fix this, then run the same command to resume"
# what a run directory holds (run files made by an earlier version are brought to the mode too)
RUN_FILES = (
    "state.sqlite*",
    "samples-*.jsonl",
    "rejects.jsonl",
    "run.log",
    "summary.json",
    "metrics.prom",
    "report.md",
    "report/*.png",
    "endpoint-*.log",
    ".lock",
)


class RunDirectoryBusy(Exception):
    """Another process is writing this run directory."""


class RunDirectoryError(Exception):
    """A file of the run directory cannot be written (or the state database cannot be used)."""


def storage_error(path: Path, exc: OSError | sqlite3.Error) -> RunDirectoryError:
    """One line naming the file and the cause."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    else:  # e.g. "disk I/O error [SQLITE_IOERR_WRITE]": a write refused, disk full or file too large
        reason = f"{exc} [{getattr(exc, 'sqlite_errorname', type(exc).__name__)}]"
    return RunDirectoryError(f"{path}: {reason} ({RESUME_HINT})")


def directory_mode(file_mode: int) -> int:
    """The mode of directories beside files of `file_mode`: searchable where readable."""
    return file_mode | (file_mode & 0o444) >> 2


@contextmanager
def file_mode(mode: int) -> Iterator[None]:
    """While inside, every file this process creates gets `mode` and every directory
    `directory_mode(mode)` (the process umask, restored on the way out)."""
    previous = os.umask(0o777 & ~directory_mode(mode))
    try:
        yield
    finally:
        os.umask(previous)


def prepare(out: Path, mode: int) -> None:
    """Create the run directory and prove it is writable, before any work is done. A run
    directory of ours (new, or holding a store) and its files are given `mode`."""
    probe = out / f".write-probe-{os.getpid()}"
    try:
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
        if created or (out / "state.sqlite").exists():
            out.chmod(directory_mode(mode))
            for pattern in RUN_FILES:
                for path in out.glob(pattern):
                    path.chmod(mode)
            if (out / "report").is_dir():
                (out / "report").chmod(directory_mode(mode))
    except OSError as exc:
        where = exc.filename if exc.filename and Path(exc.filename) != probe else out
        raise RunDirectoryError(f"{where}: run directory is not writable: {exc.strerror}") from None


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader (or a crash) sees the old or the new file."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise storage_error(path, exc) from None


class exclusive:
    """An exclusive, non-blocking lock on the run directory (one writer per run)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> None:
        try:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask
        except OSError as exc:
            raise storage_error(self._path, exc) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise RunDirectoryBusy(
                f"{self._path.parent}: another process is already running this run directory"
            ) from None

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
