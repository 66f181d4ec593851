"""Checks a run directory's exported samples against the data contract (SPEC §3–§5):
each script passes S1–S7, each trajectory T1–T8 (so at least 2 error-refine turns), the
messages are exactly the SPEC §5 conversion with erroneous assistant turns masked, and
ids and personas are unique. Used by `agentrefine validate OUT` and by the tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dedup.exact import text_hash
from service.export import FLAGS, to_messages
from workers.rules import check_script, check_trajectory


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
    trajectory = check_trajectory(orjson.dumps(record.get("trajectory")).decode(), script.actions)
    if not trajectory.ok:
        return [f"{sid}: trajectory fails {trajectory.failure.rule}: {trajectory.failure.message}"]
    problems = []
    if record.get("messages") != to_messages(record["script"], record["trajectory"]):
        problems.append(f"{sid}: messages are not the SPEC §5 conversion of the trajectory")
    for message, dm in zip(record["messages"][2::2], record["trajectory"][1::2], strict=False):
        if message.get("train") is any(dm[flag] for flag in FLAGS):
            problems.append(f"{sid}: train flag wrong on turn {dm['turn'] - 1}")
    return problems


def validate_run(out: str | Path) -> Report:
    report = Report()
    ids: Counter[str] = Counter()
    personas: Counter[str] = Counter()
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
                report.problems += validate_record(record)
                for message in record.get("messages", []):
                    if message["role"] == "assistant":
                        report.trained_turns += message["train"]
                        report.masked_turns += not message["train"]
    report.problems += [f"id {i} appears {n} times" for i, n in ids.items() if n > 1]
    report.problems += [f"{n - 1} duplicate persona(s)" for n in personas.values() if n > 1]
    return report
