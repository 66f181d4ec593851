"""LLaMA-Factory's own data path (`get_train_args`, `load_tokenizer`, `get_dataset`, what
`llamafactory-cli train` runs before training) on `agentrefine export --format llamafactory`
rows, with `mask_history: true` (the last turn of each row trained, the history masked).

Usage (inside a venv with llamafactory): python probe_llamafactory.py EXPORT_DIR SHARDS_DIR WORK_DIR
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
    import llamafactory
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    tokenizer = build(shards, work / "model")
    tiny_model(tokenizer, work / "model")
    with warnings_logged("llamafactory", "transformers", "datasets") as warned:
        model_args, data_args, training_args, _, _ = get_train_args(
            {
                "stage": "sft",
                "do_train": True,
                "model_name_or_path": str(work / "model"),
                "dataset": "agentrefine",
                "dataset_dir": str(export),
                "template": "chatml",
                "cutoff_len": 65536,
                "mask_history": True,
                "output_dir": str(work / "out"),
                "overwrite_cache": True,
                "report_to": "none",
                "use_cpu": True,
            }
        )
        module = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
        prepared = get_dataset(template, model_args, data_args, training_args, stage="sft", **module)[
            "train_dataset"
        ]
    ids = [
        json.loads(line)["id"]
        for p in sorted((export / "data").glob("train-*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    got: dict[str, list[str]] = defaultdict(list)
    for row_id, labels in zip(ids, prepared["labels"], strict=False):
        got[row_id.split(":")[0]] += decode_spans(tokenizer, labels)
    version = f"llamafactory {llamafactory.__version__}"
    return report(version, tokenizer, shards, len(ids), len(prepared), got, "<|im_end|>\n", warned)


if __name__ == "__main__":
    print(json.dumps(main(*(Path(a) for a in sys.argv[1:4]))))
