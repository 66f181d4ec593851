"""Calibrate a dedup threshold: `python -m dedup.calibrate persona|script FILE.jsonl [THRESHOLD ...]`.

FILE holds one item per line, in arrival order: `{"id", "text", "duplicate_of": id or null}`
(planted duplicates name the item they repeat). The items go through the real decision path
(`DedupSet` with exact search, in batches) with the kind's local embedder; for each threshold
the table shows recall (planted duplicates caught, naming the right item), the share of
distinct items kept, and precision (flags that are right).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from dedup.exact import text_hash
from dedup.index import FlatIndex
from dedup.near import Candidate, DedupSet, Verdict

BATCH = 64


@dataclass(frozen=True)
class Scores:
    threshold: float
    planted: int
    caught: int
    distinct: int
    kept: int
    flagged: int

    @property
    def recall(self) -> float:
        return self.caught / self.planted if self.planted else 1.0

    @property
    def distinct_kept(self) -> float:
        return self.kept / self.distinct if self.distinct else 1.0

    @property
    def precision(self) -> float:
        return self.caught / self.flagged if self.flagged else 1.0

    def line(self) -> str:
        return (
            f"threshold {self.threshold:.2f}: recall {self.recall:.3f} ({self.caught}/{self.planted}), "
            f"distinct kept {self.distinct_kept:.3f} ({self.kept}/{self.distinct}), "
            f"precision {self.precision:.3f}"
        )


def load_labelled(path: str | Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines() if line.strip()]


def decide(ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray, threshold: float) -> list[Verdict]:
    """Stream items (with their `vectors`, one row each) through a fresh persona-style set, in
    batches, keeping every new one: the decisions admission makes on the same input."""
    dedup_set = DedupSet("labelled", FlatIndex(), threshold)
    verdicts: list[Verdict] = []
    for start in range(0, len(ids), BATCH):
        candidates = [
            Candidate(ids[i], text_hash(texts[i]), texts[i])
            for i in range(start, min(len(ids), start + BATCH))
        ]
        needed = dedup_set.needs_vector(candidates)
        batch_verdicts = dedup_set.screen(candidates, vectors[[start + i for i in needed]])
        for candidate, verdict in zip(candidates, batch_verdicts, strict=True):
            if verdict.duplicate_of is None:
                dedup_set.add(candidate.id, candidate.digest, verdict.vector)
        verdicts.extend(batch_verdicts)
    return verdicts


def score(items: Sequence[dict[str, Any]], vectors: np.ndarray, threshold: float) -> Scores:
    """Recall, distinct kept and precision of `decide` on labelled items."""
    verdicts = decide([i["id"] for i in items], [i["text"] for i in items], vectors, threshold)
    caught = kept = flagged = 0
    for item, verdict in zip(items, verdicts, strict=True):
        if verdict.duplicate_of is None:
            kept += item["duplicate_of"] is None
        else:
            flagged += 1
            caught += verdict.duplicate_of == item["duplicate_of"]
    planted = sum(item["duplicate_of"] is not None for item in items)
    return Scores(threshold, planted, caught, len(items) - planted, kept, flagged)


def main(argv: list[str]) -> int:
    from dedup.minilm import MODEL_FOR_KIND, MiniLMEmbedder

    if len(argv) < 2 or argv[0] not in MODEL_FOR_KIND:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    items = load_labelled(argv[1])
    thresholds = [float(t) for t in argv[2:]] or [0.8, 0.85, 0.88, 0.9, 0.92, 0.95]
    vectors = MiniLMEmbedder(MODEL_FOR_KIND[argv[0]]).embed_now([item["text"] for item in items])
    print(f"{len(items)} labelled items")
    for threshold in thresholds:
        print(score(items, vectors, threshold).line())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
