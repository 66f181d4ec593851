"""`agentrefine export`: the accepted samples of a run directory in the form each trainer
honours, under a chosen loss mask (SPEC §5), written from the store without any request.

Formats (one flag each; see README "Training on the data" for the trainer configs):
- `axolotl`: the training shards' form, `messages` with a `train` flag on every message
  (axolotl `type: chat_template`, `message_field_training: train`). The last message is the
  final assistant turn, so axolotl never meets an untrainable last turn.
- `trl`: conversational prompt/completion rows, one per trained assistant turn: the prompt is
  the conversation before that turn (erroneous turns and their observations included), the
  completion is the turn. TRL's SFTTrainer trains the completion only (`completion_only_loss`,
  its default for this format) with any chat template; its `assistant_only_loss` would train
  every assistant turn, the erroneous ones too, because it reads no per-message flag.
- `llamafactory`: ShareGPT rows (`conversations` with from/value), one per trained assistant
  turn and ending on it, plus `dataset_info.json`; train with `mask_history: true` (LLaMA-Factory
  then trains the last turn of each row only). Its formats have no per-turn loss flag.
- `sharegpt`: one row per sample, `conversations` with from/value/loss.
- `parquet`: the `axolotl` form as Parquet (what the Hugging Face Hub serves).

The per-turn forms (`trl`, `llamafactory`) re-encode each trained turn's history: the export
prints how many times the characters of the one-row form that is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from service.export import MASKS, record_messages, to_sharegpt, training_record
from service.store import Store

FORMATS = ("axolotl", "trl", "llamafactory", "sharegpt", "parquet")
ROWS_PER_FILE = 10_000
LLAMAFACTORY_DATASET = "agentrefine"


@dataclass
class ExportResult:
    directory: Path
    samples: int = 0
    rows: int = 0
    characters: int = 0  # characters of message content written (history repeats included)
    sample_characters: int = 0  # characters of message content in the one-row form

    def describe(self) -> str:
        ratio = self.characters / self.sample_characters if self.sample_characters else 0.0
        return (
            f"{self.samples} samples, {self.rows} rows written to {self.directory} "
            f"(message text {ratio:.2f}x the one-row form)"
        )


def rows(record: dict[str, Any], fmt: str, mask: str = "paper") -> list[dict[str, Any]]:
    """The rows of one accepted (audit) record in `fmt` under `mask`."""
    if fmt in ("axolotl", "parquet"):
        return [training_record(record, mask)]
    messages = record_messages(record, mask)
    if fmt == "sharegpt":
        return [{"id": record["id"], "persona": record["persona"], "conversations": to_sharegpt(messages)}]
    trained = [i for i, m in enumerate(messages) if m["train"]]
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    if fmt == "trl":
        return [
            {"id": f"{record['id']}:{i}", "prompt": plain[:i], "completion": plain[i : i + 1]}
            for i in trained
        ]
    if fmt == "llamafactory":
        names = {"system": "system", "user": "human", "assistant": "gpt"}
        conversation = [{"from": names[m["role"]], "value": m["content"]} for m in plain]
        return [{"id": f"{record['id']}:{i}", "conversations": conversation[: i + 1]} for i in trained]
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def export_run(
    out: str | Path, fmt: str, mask: str = "paper", dest: str | Path | None = None
) -> ExportResult:
    """Write every accepted sample of the run directory `out` in `fmt` under `mask`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; one of {', '.join(MASKS)}")
    out = Path(out)
    directory = Path(dest) if dest else out / "export" / (fmt if mask == "paper" else f"{fmt}-{mask}")
    data = directory / "data" if fmt == "llamafactory" else directory
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob("train-[0-9]*.*"):
        old.unlink()
    result = ExportResult(directory)
    store = Store(out / "state.sqlite")
    try:
        batches = _batches(store, fmt, mask, result)
        if fmt == "parquet":
            _write_parquet(data, batches)
        else:
            for number, batch in enumerate(batches):
                lines = b"".join(orjson.dumps(row) + b"\n" for row in batch)
                (data / f"train-{number:05d}.jsonl").write_bytes(lines)
    finally:
        store.close()
    if fmt == "llamafactory":
        info = {
            LLAMAFACTORY_DATASET: {
                "file_name": "data",
                "formatting": "sharegpt",
                "columns": {"messages": "conversations"},
            }
        }
        (directory / "dataset_info.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
    return result


def _batches(store: Store, fmt: str, mask: str, result: ExportResult) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for blob in store.accepted_records(skip=0):
        record = orjson.loads(blob)
        made = rows(record, fmt, mask)
        result.samples += 1
        result.rows += len(made)
        result.sample_characters += sum(len(m["content"]) for m in training_record(record)["messages"])
        result.characters += sum(_characters(row) for row in made)
        batch += made
        if len(batch) >= ROWS_PER_FILE:
            yield batch
            batch = []
    if batch or not result.rows:
        yield batch


def _characters(row: dict[str, Any]) -> int:
    turns = (
        row.get("messages")
        or row.get("conversations")
        or [*row.get("prompt", []), *row.get("completion", [])]
    )
    return sum(len(t.get("content", t.get("value", ""))) for t in turns)


def _write_parquet(data: Path, batches: Iterator[list[dict[str, Any]]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("persona", pa.string()),
            (
                "messages",
                pa.list_(pa.struct([("role", pa.string()), ("content", pa.string()), ("train", pa.bool_())])),
            ),
        ]
    )
    for number, batch in enumerate(batches):
        pq.write_table(pa.Table.from_pylist(batch, schema=schema), data / f"train-{number:05d}.parquet")


def main_export(out: str, fmt: str, mask: str) -> int:
    """The CLI's `export` command: one line of result, or one line of error."""
    if not (Path(out) / "state.sqlite").is_file():
        print(f"error: {out}: not a run directory (no state.sqlite)", file=sys.stderr)
        return 2
    result = export_run(out, fmt, mask)
    print(f"{fmt} ({mask} mask): {result.describe()}")
    return 0
