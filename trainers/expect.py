"""What a trainer must train: the tokens of the assistant messages with `"train": true` and
nothing else. Compares the label spans a trainer produced with the training shards."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

IGNORE = -100


def trained_turns(shards: Path) -> dict[str, list[str]]:
    """Per sample id, the contents of its trained assistant messages, in order."""
    out: dict[str, list[str]] = {}
    for path in sorted(shards.glob("train-*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            out[row["id"]] = [
                m["content"] for m in row["messages"] if m["role"] == "assistant" and m["train"]
            ]
    return out


def spans(labels: list[int]) -> list[list[int]]:
    """The maximal runs of trained (not ignored) label positions."""
    runs: list[list[int]] = []
    previous = False
    for token in labels:
        if token != IGNORE:
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = token != IGNORE
    return runs


def compare(tokenizer, got: dict[str, list[str]], want: dict[str, list[str]], suffix: str) -> list[str]:
    """Problems: a sample missing, or a trained span that is not exactly `content + suffix`."""
    problems = []
    for sample_id, contents in want.items():
        if sample_id not in got:
            problems.append(f"{sample_id}: dropped")
            continue
        expected = [c + suffix for c in contents]
        if got[sample_id] != expected:
            problems.append(f"{sample_id}: trained {got[sample_id][:3]!r}... expected {expected[:3]!r}...")
    problems += [f"{sample_id}: not in the export" for sample_id in got.keys() - want.keys()]
    return problems


def decode_spans(tokenizer, labels: list[int]) -> list[str]:
    return [tokenizer.decode(span) for span in spans(labels)]


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(f"{record.name}: {record.getMessage()[:300]}")


@contextmanager
def warnings_logged(*loggers: str) -> Iterator[list[str]]:
    """Every warning logged (root and `loggers`) or raised with `warnings` inside the block."""
    messages: list[str] = []
    handler = _Collect(messages)
    for name in ("", *loggers):
        logging.getLogger(name).addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    messages += [str(w.message)[:300] for w in caught]


def report(
    trainer: str, tokenizer, shards: Path, rows_in: int, rows_out: int, got: dict, suffix: str, warned: list
) -> dict:
    """The probe's one-line result: rows, samples, mask problems and warnings."""
    import datasets

    return {
        "trainer": trainer,
        "datasets": datasets.__version__,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "samples": len(got),
        "problems": compare(tokenizer, got, trained_turns(shards), suffix),
        "warnings": warned,
    }
