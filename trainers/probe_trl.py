"""TRL's own SFTTrainer data path on `agentrefine export --format trl` rows.

Usage (inside a venv with trl): python probe_trl.py EXPORT_DIR SHARDS_DIR WORK_DIR
Prints one JSON line: rows, samples, problems (mask mismatches, drops), warnings logged.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from expect import decode_spans, report, warnings_logged
from tokenizer import build, tiny_model


def main(export: Path, shards: Path, work: Path) -> dict:
    import datasets
    import trl
    from trl import SFTConfig, SFTTrainer

    tokenizer = build(shards, work / "tokenizer")
    model = tiny_model(tokenizer)
    rows = datasets.load_dataset("json", data_files=sorted(str(p) for p in export.glob("train-*.jsonl")))[
        "train"
    ]
    with warnings_logged("trl", "transformers", "datasets") as warned:
        args = SFTConfig(
            output_dir=str(work / "out"), max_length=None, report_to=[], use_cpu=True, bf16=False
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    prepared = trainer.train_dataset
    got: dict[str, list[str]] = defaultdict(list)
    for row_id, labels in zip(rows["id"], prepared["labels"], strict=True):
        got[row_id.split(":")[0]] += decode_spans(tokenizer, labels)
    return report(
        f"trl {trl.__version__}", tokenizer, shards, len(rows), len(prepared), got, "<|im_end|>\n", warned
    )


if __name__ == "__main__":
    print(json.dumps(main(*(Path(a) for a in sys.argv[1:4]))))
