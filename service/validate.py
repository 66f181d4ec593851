"""Checks a run directory's exported samples against the data contract (SPEC §3–§5):
each script passes S1–S7, each trajectory T1–T8 (so at least 2 error-refine turns), the
messages are exactly the SPEC §5 conversion with erroneous assistant turns masked and the
final assistant turn last, the training shards hold, line for line, the same samples in
the fixed training schema, and ids and personas are unique. Used by `agentrefine validate
OUT` and by the tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dedup.exact import text_hash
from pipeline.rules import FLAGS, check_script, check_trajectory
from service.export import judge_masked, record_messages, training_record


@dataclass
class Report:
    samples: int = 0
    problems: list[str] = field(default_factory=list)
    masked_turns: int = 0
    trained_turns: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_record(record: dict[str, Any]) -> list[str]:
    """Problems of one exported record (empty when it meets the contract)."""
    sid = record.get("id", "?")
    script = check_script(orjson.dumps(record.get("script")).decode())
    if not script.ok:
        return [f"{sid}: script fails {script.failure.rule}: {script.failure.message}"]
    refinement = record.get("meta", {}).get("refinement_data", True)
    trajectory = check_trajectory(
        orjson.dumps(record.get("trajectory")).decode(), script.actions, refinement=refinement
    )
    if not trajectory.ok:
        return [f"{sid}: trajectory fails {trajectory.failure.rule}: {trajectory.failure.message}"]
    problems = []
    if record.get("messages") != record_messages(record):
        problems.append(f"{sid}: messages are not the SPEC §5 conversion of the trajectory")
    assistant = [m for m in record["messages"] if m.get("role") == "assistant"]
    masked = judge_masked(record)
    for message, dm in zip(assistant, record["trajectory"][1::2], strict=False):
        if message.get("train") is (any(dm[flag] for flag in FLAGS) or dm["turn"] in masked):
            problems.append(f"{sid}: train flag wrong on turn {dm['turn'] - 1}")
    if record["messages"][-1] != {**assistant[-1], "train": record["trajectory"][-1]["turn"] not in masked}:
        problems.append(f"{sid}: the last message is not the final, trained assistant turn")
    return problems


TRAINING_KEYS = {"id": str, "persona": str, "messages": list}
MESSAGE_KEYS = {"role": str, "content": str, "train": bool}


def schema_problems(line: dict[str, Any]) -> list[str]:
    """Problems of one training-shard line against the fixed training schema."""
    where = f"training line {line.get('id', '?')}"
    if set(line) != set(TRAINING_KEYS) or not all(isinstance(line[k], t) for k, t in TRAINING_KEYS.items()):
        return [f"{where}: keys and types must be exactly {list(TRAINING_KEYS)}"]
    for message in line["messages"]:
        if not (
            isinstance(message, dict)
            and set(message) == set(MESSAGE_KEYS)
            and all(isinstance(message[k], t) for k, t in MESSAGE_KEYS.items())
        ):
            return [f"{where}: every message has exactly role (str), content (str), train (bool)"]
    return []


def validate_run(out: str | Path) -> Report:
    report = Report()
    ids: Counter[str] = Counter()
    personas: Counter[str] = Counter()
    training = _training_lines(Path(out), report)
    for path in sorted(Path(out).glob("samples-[0-9]*.jsonl")):
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    report.problems.append(f"{path}:{number}: not valid JSON")
                    continue
                report.samples += 1
                ids[record.get("id")] += 1
                personas[text_hash(str(record.get("persona")))] += 1
                problems = validate_record(record)
                report.problems += problems
                train = next(training, None)
                if not problems and train != training_record(record):
                    report.problems.append(
                        f"{path}:{number}: the training shard's line differs from the sample"
                    )
                report.problems += schema_problems(train or {})
                for message in record.get("messages", []):
                    if message["role"] == "assistant":
                        report.trained_turns += message["train"]
                        report.masked_turns += not message["train"]
    if next(training, None) is not None:
        report.problems.append("the training shards hold more lines than the samples")
    report.problems += [f"id {i} appears {n} times" for i, n in ids.items() if n > 1]
    report.problems += [f"{n - 1} duplicate persona(s)" for n in personas.values() if n > 1]
    return report


def _training_lines(out: Path, report: Report) -> Iterator[dict[str, Any]]:
    for path in sorted(out.glob("train-[0-9]*.jsonl")):
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    report.problems.append(f"{path}:{number}: not valid JSON")
