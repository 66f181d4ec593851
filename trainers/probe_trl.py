"""TRL's own SFTTrainer data path on `agentrefine export --format trl` rows.

Usage (inside a venv with trl): python probe_trl.py EXPORT_DIR SHARDS_DIR WORK_DIR
Prints one JSON line: rows, samples, problems (mask mismatches, drops), warnings logged.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from expect import compare, decode_spans, trained_turns
from tokenizer import build, tiny_model


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()[:300]}")


def main(export: Path, shards: Path, work: Path) -> dict:
    import datasets
    import trl
    from trl import SFTConfig, SFTTrainer

    tokenizer = build(shards, work / "tokenizer")
    model = tiny_model(tokenizer)
    rows = datasets.load_dataset("json", data_files=sorted(str(p) for p in export.glob("train-*.jsonl")))[
        "train"
    ]
    collect = Collect()
    logging.getLogger().addHandler(collect)
    for name in ("trl", "transformers", "datasets"):
        logging.getLogger(name).addHandler(collect)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = SFTConfig(
            output_dir=str(work / "out"), max_length=None, report_to=[], use_cpu=True, bf16=False
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    prepared = trainer.train_dataset
    got: dict[str, list[str]] = defaultdict(list)
    for row_id, labels in zip(rows["id"], prepared["labels"], strict=True):
        got[row_id.split(":")[0]] += decode_spans(tokenizer, labels)
    want = trained_turns(shards)
    return {
        "trainer": f"trl {trl.__version__}",
        "datasets": datasets.__version__,
        "rows_in": len(rows),
        "rows_out": len(prepared),
        "samples": len(got),
        "problems": compare(tokenizer, got, want, suffix="<|im_end|>\n"),
        "warnings": collect.messages + [str(w.message)[:300] for w in caught],
    }


if __name__ == "__main__":
    print(json.dumps(main(*(Path(a) for a in sys.argv[1:4]))))
