"""Export (SPEC §5): turn an accepted sample into its training record, and write the
output files of a run directory.

Conversion: the system message holds the ReAct instruction, the Environment (without
hidden information), the Goal and the action templates with their descriptions (no
patterns); the user message states the task; each Player turn becomes an assistant
message "Thought: ...\\nAction: ..." and each DM observation a user message
"Observation: ...". An assistant message whose DM reply carries any error flag gets
`"train": false` (erroneous loss masking); every other assistant message `"train": true`.

Files (all derived from the store, so they can always be repaired or rebuilt):
- `samples-00000.jsonl`, ... accepted records in acceptance order, `shard_size` per file;
- `rejects.jsonl`: dropped samples and rejected personas with their rule id / reason.
On start, `OutputWriter.sync()` drops a torn last line (from a kill mid-write) and
appends whatever the store holds that the files do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from service.store import Store
from workers.prompts import render
from workers.sample import SampleJob

FLAGS = ("parameter_error", "place_error", "logic_error")


def to_messages(script: dict[str, Any], turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SPEC §5 chat messages with per-assistant-message `train` flags."""
    environment = {k: v for k, v in script["Environment"].items() if "hidden" not in k.lower()}
    actions = "\n".join(
        f"- {template}: {spec.get('description', '')}"
        for template, spec in script["Available Actions"].items()
    )
    messages: list[dict[str, Any]] = [
        {
            "role": "system",
            "content": render(
                "sample_system",
                environment=orjson.dumps(environment, option=orjson.OPT_INDENT_2).decode(),
                goal=script["Goal"],
                actions=actions,
            ),
        },
        {"role": "user", "content": render("sample_user", goal=script["Goal"])},
    ]
    for player, dm in zip(turns[0::2], turns[1::2], strict=True):
        erroneous = any(dm[flag] for flag in FLAGS)
        messages.append(
            {
                "role": "assistant",
                "content": f"Thought: {player['Thought']}\nAction: {player['Action']}",
                "train": not erroneous,
            }
        )
        messages.append({"role": "user", "content": f"Observation: {dm['Observation']}"})
    return messages


def to_sharegpt(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ShareGPT variant: from/value/loss."""
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return [
        {"from": names[m["role"]], "value": m["content"], "loss": m.get("train", False)} for m in messages
    ]


def accepted_record(job: SampleJob, sharegpt: bool) -> dict[str, Any]:
    assert job.script is not None and job.trajectory is not None
    messages = to_messages(job.script, job.trajectory)
    record: dict[str, Any] = {
        "id": job.id,
        "persona": job.persona,
        "script": job.script,
        "trajectory": job.trajectory,
        "messages": messages,
    }
    if sharegpt:
        record["conversations"] = to_sharegpt(messages)
    record["meta"] = {**_meta(job), "error_refine_turns": job.error_refine_turns}
    return record


def rejected_record(job: SampleJob, kind: str) -> dict[str, Any]:
    failure = job.last_failure
    record = {
        "id": job.id,
        "kind": kind,
        "rule": failure.rule if kind == "dropped" and failure else kind,
        "message": job.error if kind == "failed" else (failure.message if failure else None),
        "persona": job.persona,
        "source": job.source,
    }
    if job.duplicate is not None:
        record |= {
            "rule": "script_duplicate",
            "message": f"the script repeats the script of sample {job.duplicate.duplicate_of}",
            "duplicate_of": job.duplicate.duplicate_of,
            "similarity": round(job.duplicate.similarity, 4),
        }
    return record | {"meta": _meta(job)}


def _meta(job: SampleJob) -> dict[str, Any]:
    return {
        "source": job.source,
        **({"persona_meta": job.persona_meta} if job.persona_meta else {}),
        "models": job.models,
        "usage": job.usage.as_dict(),
        "cost_usd": round(job.cost_usd, 6),
        "requests": job.requests,
        "attempts": {
            "script": job.script_attempts,
            "trajectory": sum(1 for h in job.history if h["stage"] == "trajectory"),
            "history": job.history,
        },
    }


class _JsonlStream:
    """An append-only JSONL stream, in store order: one file, or shards of `shard_size` lines."""

    def __init__(self, out: Path, stem: str, shard_size: int | None = None) -> None:
        self._out = out
        self._stem = stem
        self._shard_size = shard_size
        self.count = 0
        self._handle: Any = None
        self._handle_path: Path | None = None

    def paths(self) -> list[Path]:
        if self._shard_size is None:
            return [self._out / f"{self._stem}.jsonl"]
        return sorted(self._out.glob(f"{self._stem}-[0-9][0-9][0-9][0-9][0-9].jsonl"))

    def recover(self) -> int:
        """Drop a torn last line (a kill mid-write), count the complete ones (read in chunks)."""
        self.count = 0
        for path in self.paths():
            if not path.exists():
                continue
            keep = 0  # bytes up to and including the last newline
            with path.open("r+b") as handle:
                offset = 0
                while chunk := handle.read(1 << 20):
                    newlines = chunk.count(b"\n")
                    if newlines:
                        self.count += newlines
                        keep = offset + chunk.rfind(b"\n") + 1
                    offset += len(chunk)
                if keep < offset:
                    handle.truncate(keep)
        return self.count

    def append(self, line: bytes) -> None:
        path = self._current_path()
        if path != self._handle_path:
            self.close()
            self._handle, self._handle_path = path.open("ab"), path
        self._handle.write(line + b"\n")
        self.count += 1

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle, self._handle_path = None, None

    def _current_path(self) -> Path:
        if self._shard_size is None:
            return self._out / f"{self._stem}.jsonl"
        return self._out / f"{self._stem}-{self.count // self._shard_size:05d}.jsonl"


class OutputWriter:
    """Keeps the run directory's JSONL files in step with the store."""

    def __init__(self, out: Path, shard_size: int) -> None:
        self.samples = _JsonlStream(out, "samples", shard_size)
        self.rejects = _JsonlStream(out, "rejects")

    def sync(self, store: Store) -> None:
        """Repair the files after a crash and append what the store has and they lack."""
        for stream, records in ((self.samples, store.accepted_records), (self.rejects, store.reject_records)):
            for blob in records(skip=stream.recover()):
                stream.append(blob)
            stream.flush()
        if not self.rejects.paths()[0].exists():
            self.rejects.paths()[0].touch()

    def flush(self) -> None:
        self.samples.flush()
        self.rejects.flush()

    def close(self) -> None:
        self.samples.close()
        self.rejects.close()
