"""Export (SPEC §5): turn an accepted sample into its training record, and write the
output files of a run directory.

Conversion: the system message holds the ReAct instruction, the Environment (without
hidden information), the Goal and the action templates with their descriptions (no
patterns); the user message states the task; each Player turn becomes an assistant
message "Thought: ...\\nAction: ..." and each DM observation a user message
"Observation: ...". An assistant message whose DM reply carries any error flag gets
`"train": false` (erroneous loss masking), and so does one whose DM reply the judge called an
error under its `remask` policy (`meta.judge.masked`, `pipeline/judge.py`); every other
assistant message `"train": true`,
and system and user messages `"train": false`. The messages end on the final assistant
message (the successful action), so no trainer sees an untrainable last turn.

Files (all derived from the store, so they can always be repaired or rebuilt):
- `samples-00000.jsonl`, ... the accepted (audit) records in acceptance order, `shard_size`
  per file: persona, script, trajectory, messages and meta (usage, cost, every attempt);
- `train-00000.jsonl`, ... the training shards, line for line the same samples in one fixed
  schema (`id`, `persona`, `messages` with `train` flags) that every `datasets` version from
  2.21 on loads; the trainer-specific forms and the ablation masks are written on demand by
  `agentrefine export` (`service/formats.py`);
- `rejects.jsonl`: dropped samples and rejected personas with their rule id / reason.
The store commits first and the files are appended second, so on start
`OutputWriter.sync()` reconciles both directions: it drops a torn last line (a kill
mid-write) and any line the store does not hold (a store that lost its last commits, e.g.
to a power cut), then appends whatever the store holds that the files do not. A failed
write raises `RunDirectoryError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import orjson

from pipeline import registry
from pipeline.job import SampleJob
from pipeline.prompts import agent_view, render
from pipeline.rules import FLAGS
from service.rundir import storage_error
from service.store import Store

MASKS = ("paper", "no-refinement-loss", "erroneous-loss")
"""Loss masks (SPEC §5, paper Table 2): `paper` masks the erroneous assistant turns;
`no-refinement-loss` also masks the refinement turns (the correction right after an error);
`erroneous-loss` trains every assistant turn."""


def train_flags(turns: list[dict[str, Any]], mask: str = "paper", masked: Collection[int] = ()) -> list[bool]:
    """The `train` flag of each Player turn's assistant message under `mask`; `masked`: DM turn
    numbers that count as erroneous whatever their flags (the judge's, under `remask`)."""
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; one of {', '.join(MASKS)}")
    erroneous = [any(dm[flag] for flag in FLAGS) or dm["turn"] in masked for dm in turns[1::2]]
    if mask == "erroneous-loss":
        return [True] * len(erroneous)
    flags = [not wrong for wrong in erroneous]
    if mask == "no-refinement-loss":
        for i in range(1, len(flags)):
            if erroneous[i - 1]:
                flags[i] = False
    return flags


def to_messages(
    script: dict[str, Any], turns: list[dict[str, Any]], mask: str = "paper", masked: Collection[int] = ()
) -> list[dict[str, Any]]:
    """SPEC §5 chat messages, every one with its `train` flag (true only on trained assistant
    messages). They end on the final assistant message (the successful action): the final
    observation is in the trajectory of the audit record, not in the training messages."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": agent_view(script), "train": False},
        {"role": "user", "content": render("sample_user", goal=script["Goal"]), "train": False},
    ]
    for player, dm, train in zip(turns[0::2], turns[1::2], train_flags(turns, mask, masked), strict=True):
        messages.append(
            {
                "role": "assistant",
                "content": f"Thought: {player['Thought']}\nAction: {player['Action']}",
                "train": train,
            }
        )
        messages.append({"role": "user", "content": f"Observation: {dm['Observation']}", "train": False})
    messages.pop()  # the final observation: kept in the audit record's trajectory
    return messages


def training_record(record: dict[str, Any], mask: str = "paper") -> dict[str, Any]:
    """The fixed-schema training line of an accepted (audit) record: `id`, `persona` and the
    `messages` with their `train` flags. Everything whose keys vary per sample (script,
    trajectory, meta) stays in the audit record, so every shard loads in any `datasets`."""
    return {
        "id": record["id"],
        "persona": record["persona"],
        "messages": record_messages(record, mask),
    }


def record_messages(record: dict[str, Any], mask: str = "paper") -> list[dict[str, Any]]:
    """The messages of an accepted (audit) record under `mask`, with the judge's masks."""
    return to_messages(record["script"], record["trajectory"], mask, judge_masked(record))


def judge_masked(record: dict[str, Any]) -> frozenset[int]:
    """The DM turns the judge called errors and the `remask` policy masks (none otherwise)."""
    return frozenset(record.get("meta", {}).get("judge", {}).get("masked", ()))


def to_sharegpt(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ShareGPT variant: from/value/loss."""
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return [{"from": names[m["role"]], "value": m["content"], "loss": m["train"]} for m in messages]


def accepted_record(job: SampleJob, sharegpt: bool, refinement_data: bool = True) -> dict[str, Any]:
    assert job.script is not None and job.trajectory is not None
    masked = job.judgement.masked if job.judgement is not None else ()
    messages = to_messages(job.script, job.trajectory, masked=masked)
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
    if not refinement_data:
        record["meta"]["refinement_data"] = False  # the "w/o refinement data" ablation
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
    judged = {"judge": job.judgement.as_meta()} if job.judgement is not None else {}
    return {
        "source": job.source,
        **({"persona_meta": job.persona_meta} if job.persona_meta else {}),
        "models": job.models,
        "usage": job.usage.as_dict(),
        "cost_usd": round(job.cost_usd, 10),
        "requests": job.requests,
        "attempts": {
            **{
                stage.name: job.attempts[stage.name]
                for stage in registry.sample_stages()
                if not stage.optional or stage.name in job.attempts  # an optional stage when it ran
            },
            "history": job.history,
        },
    } | judged


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

    def recover(self, limit: int) -> int:
        """Keep at most `limit` complete lines: drop a torn last line (a kill mid-write) and
        every line past `limit`; return how many remain. Reads in chunks (bounded memory)."""
        self.count = 0
        for path in self.paths():
            if not path.exists():
                continue
            if self.count == limit and self._shard_size is not None:
                path.unlink()  # a whole shard the store does not hold
                continue
            with path.open("r+b") as handle:
                keep = offset = 0  # keep: bytes up to and including the last kept newline
                while self.count < limit and (chunk := handle.read(1 << 20)):
                    end = _nth_newline_end(chunk, limit - self.count)
                    self.count += chunk.count(b"\n", 0, end)
                    if end:
                        keep = offset + end
                    offset += len(chunk)
                handle.seek(0, 2)
                if keep < handle.tell():
                    handle.truncate(keep)
        return self.count

    def append(self, line: bytes) -> None:
        path = self._current_path()
        try:
            if path != self._handle_path:
                self.close()
                self._handle, self._handle_path = path.open("ab"), path
            self._handle.write(line + b"\n")
        except OSError as exc:
            raise storage_error(path, exc) from None
        self.count += 1

    def flush(self) -> None:
        if self._handle is not None:
            try:
                self._handle.flush()
            except OSError as exc:
                raise storage_error(self._handle_path, exc) from None

    def close(self) -> None:
        """Flush and close; the handle is released even when the flush fails."""
        handle, path = self._handle, self._handle_path
        self._handle, self._handle_path = None, None
        if handle is not None:
            try:
                handle.close()
            except OSError as exc:
                raise storage_error(path, exc) from None

    def _current_path(self) -> Path:
        if self._shard_size is None:
            return self._out / f"{self._stem}.jsonl"
        return self._out / f"{self._stem}-{self.count // self._shard_size:05d}.jsonl"


class OutputWriter:
    """Keeps the run directory's JSONL files in step with the store: the audit records
    (`samples-*`), the training shards derived from them (`train-*`) and the rejects."""

    def __init__(self, out: Path, shard_size: int) -> None:
        self.samples = _JsonlStream(out, "samples", shard_size)
        self.train = _JsonlStream(out, "train", shard_size)
        self.rejects = _JsonlStream(out, "rejects")

    def append(self, record: dict[str, Any]) -> None:
        """One accepted sample: its audit record, then its training line."""
        self.samples.append(orjson.dumps(record))
        self.train.append(orjson.dumps(training_record(record)))

    def sync(self, store: Store) -> None:
        """Repair the files after a crash: keep what the store holds, append what they lack."""
        accepted = store.accepted_count()
        for stream, held, records in (
            (self.samples, accepted, store.accepted_records),
            (self.train, accepted, _training_lines(store)),
            (self.rejects, store.reject_count(), store.reject_records),
        ):
            for blob in records(skip=stream.recover(limit=held)):
                stream.append(blob)
            stream.flush()
        if not self.rejects.paths()[0].exists():
            self.rejects.paths()[0].touch()

    def flush(self) -> None:
        for stream in (self.samples, self.train, self.rejects):
            stream.flush()

    def close(self) -> None:
        try:
            self.samples.close()
            self.train.close()
        finally:
            self.rejects.close()


def _training_lines(store: Store) -> Callable[..., Iterator[bytes]]:
    def lines(skip: int) -> Iterator[bytes]:
        for blob in store.accepted_records(skip=skip):
            yield orjson.dumps(training_record(orjson.loads(blob)))

    return lines


def _nth_newline_end(chunk: bytes, n: int) -> int:
    """The offset just past the n-th newline of `chunk`, or past its last one if it has
    fewer (0 if it has none)."""
    if chunk.count(b"\n") <= n:
        return chunk.rfind(b"\n") + 1
    end = 0
    for _ in range(n):
        end = chunk.index(b"\n", end) + 1
    return end
