"""axolotl's own data path (`load_cfg` + `load_datasets`, what `axolotl preprocess` runs) on the
training shards (`agentrefine export --format axolotl`, the same lines as the run's train-*).

Usage (inside a venv with axolotl): python probe_axolotl.py EXPORT_DIR SHARDS_DIR WORK_DIR
Prints one JSON line: rows, samples, problems (mask mismatches, drops), warnings logged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from expect import decode_spans, report, warnings_logged
from tokenizer import build, tiny_model

DATASET = {
    "type": "chat_template",
    "field_messages": "messages",
    "message_field_training": "train",
    "roles_to_train": ["assistant"],
    "train_on_eos": "turn",
}


def main(export: Path, shards: Path, work: Path) -> dict:
    import axolotl
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets

    tokenizer = build(shards, work / "tokenizer")
    tiny_model(tokenizer, work / "model")
    tokenizer.save_pretrained(work / "model")
    files = sorted(str(p) for p in export.glob("train-*.jsonl"))
    config = {
        "base_model": str(work / "model"),
        "tokenizer_config": str(work / "tokenizer"),
        "datasets": [
            {"path": str(export), "ds_type": "json", "data_files": files, "split": "train", **DATASET}
        ],
        "chat_template": "tokenizer_default",
        "sequence_len": 65536,
        "sample_packing": False,
        "shuffle_merged_datasets": False,
        "dataset_prepared_path": str(work / "prepared"),
        "output_dir": str(work / "out"),
        "micro_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "learning_rate": 1e-4,
        "val_set_size": 0,
        "bf16": False,
        "fp16": False,
        "dataset_num_proc": 1,
    }
    path = work / "axolotl.yml"
    path.write_text(yaml.safe_dump(config))
    with warnings_logged("axolotl", "transformers", "datasets") as warned:
        cfg = load_cfg(str(path))
        prepared = load_datasets(cfg=cfg).train_dataset
    ids = [json.loads(line)["id"] for f in files for line in Path(f).read_text().splitlines()]
    got = {sid: decode_spans(tokenizer, labels) for sid, labels in zip(ids, prepared["labels"], strict=False)}
    return report(
        f"axolotl {axolotl.__version__}",
        tokenizer,
        shards,
        len(ids),
        len(prepared),
        got,
        "<|im_end|>",
        warned,
    )


if __name__ == "__main__":
    print(json.dumps(main(*(Path(a) for a in sys.argv[1:4]))))
