"""The judge stage's agreement with the DM, from the store (`judgements`): per flag kind, how
many judged flags agree, how many the DM set and the judge would not (false flags), how many
the judge would set and the DM did not (missed flags); and examples of disagreements. Read by
the summary and the report, beside the paper's figure: GPT-4's judgements agreed with human
annotators on 47 + 41 of 100 turns (88%)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline.judgement import FLAG_KINDS, verdict
from service.store import Store

PAPER_AGREEMENT = 0.88
EXAMPLES = 10


@dataclass(frozen=True)
class Disagreement:
    sample_id: str
    turn: int
    kind: str
    dm: bool
    action: str
    observation: str
    reason: str


@dataclass
class Agreement:
    samples: int = 0
    disagreeing_samples: int = 0
    dropped_samples: int = 0  # dropped by the `drop` policy
    turns: int = 0
    turns_agreeing: int = 0  # both flags agree
    verdicts: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in FLAG_KINDS})
    examples: list[Disagreement] = field(default_factory=list)

    def rate(self, kind: str | None = None) -> float | None:
        """Agreed judged flags of `kind` (None: turns with both flags agreed) per judged one."""
        if kind is None:
            judged, agreed = self.turns - self.unjudged, self.turns_agreeing
        else:
            counts = self.verdicts[kind]
            judged, agreed = counts.total() - counts["unjudged"], counts["agree"]
        return agreed / judged if judged else None

    @property
    def unjudged(self) -> int:
        return self.verdicts[FLAG_KINDS[0]]["unjudged"]

    def as_dict(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "samples": self.samples,
            "disagreeing_samples": self.disagreeing_samples,
            "dropped_samples": self.dropped_samples,
            "turns": self.turns,
            "unjudged_turns": self.unjudged,
            "turn_agreement": rounded(self.rate()),
            "by_kind": {
                kind: {"agreement": rounded(self.rate(kind)), **dict(self.verdicts[kind])}
                for kind in FLAG_KINDS
            },
            "paper_gpt4_human_agreement": PAPER_AGREEMENT,
        }


def collect(store: Store) -> Agreement | None:
    """The agreement over the judged turns of finished samples; None when nothing was judged."""
    agreement = Agreement()
    samples: dict[str, bool] = {}  # sample -> any disagreement
    dropped: set[str] = set()
    for sample_id, state, turn, *flags, reason, action, observation in store.judgement_rows():
        dm = dict(zip(FLAG_KINDS, map(bool, flags[:2]), strict=True))
        judge = dict(zip(FLAG_KINDS, (None if f is None else bool(f) for f in flags[2:]), strict=True))
        verdicts = {kind: verdict(dm[kind], judge[kind]) for kind in FLAG_KINDS}
        agreement.turns += 1
        agreement.turns_agreeing += all(v == "agree" for v in verdicts.values())
        disputed = [kind for kind, v in verdicts.items() if v in ("false_flag", "missed_flag")]
        samples[sample_id] = samples.get(sample_id, False) or bool(disputed)
        if state == "dropped":
            dropped.add(sample_id)
        for kind, v in verdicts.items():
            agreement.verdicts[kind][v] += 1
        if (
            disputed
            and len(agreement.examples) < EXAMPLES
            and not any(e.sample_id == sample_id for e in agreement.examples)
        ):  # one example per sample: ten samples, not ten turns of one
            kind = disputed[0]
            agreement.examples.append(
                Disagreement(sample_id, turn, kind, dm[kind], action, observation, reason)
            )
    if not samples:
        return None
    agreement.samples = len(samples)
    agreement.disagreeing_samples = sum(samples.values())
    agreement.dropped_samples = len(dropped)
    return agreement
