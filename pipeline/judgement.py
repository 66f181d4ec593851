"""What the judge stage (`pipeline/judge.py`) found in one sample: for each DM turn it judged,
the DM's place_error / logic_error flags beside the judge's, and what the policy makes of a
disagreement. Kept on the `SampleJob`, in the sample's record (`meta.judge`) and, per turn,
in the store (`judgements`, for the summary and the report)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FLAG_KINDS = ("place_error", "logic_error")  # the DM's judgements no rule can check
# a judged flag: the judge agrees; the DM set it and the judge would not (false_flag); the
# judge would set it and the DM did not (missed_flag); no readable answer came (unjudged)
VERDICTS = ("agree", "false_flag", "missed_flag", "unjudged")


def verdict(dm: bool, judge: bool | None) -> str:
    """The verdict on one flag (VERDICTS), from the DM's value and the judge's (None: unjudged)."""
    if judge is None:
        return "unjudged"
    if judge == dm:
        return "agree"
    return "false_flag" if dm else "missed_flag"


@dataclass(frozen=True)
class TurnJudgement:
    """One judged DM turn. `judge` is None when no readable answer came (unreadable after every
    attempt, or the request failed)."""

    turn: int
    action: str  # the Player action the DM turn answers
    observation: str
    dm: dict[str, bool]
    judge: dict[str, bool] | None
    reason: str

    def disagrees(self, kind: str) -> bool:
        return self.judge is not None and self.judge[kind] != self.dm[kind]

    @property
    def disputed(self) -> list[str]:
        return [kind for kind in FLAG_KINDS if self.disagrees(kind)]


@dataclass(frozen=True)
class Judgement:
    """The judged turns of one sample and the policy applied to them."""

    policy: str
    turns: tuple[TurnJudgement, ...]

    @property
    def disagrees(self) -> bool:
        return any(turn.disputed for turn in self.turns)

    @property
    def masked(self) -> tuple[int, ...]:
        """Under `remask`: the DM turns the judge calls errors and the DM does not (their
        Player turns are masked as well: a disputed turn is not trained on)."""
        if self.policy != "remask":
            return ()
        return tuple(
            t.turn
            for t in self.turns
            if t.judge is not None and any(t.judge.values()) and not any(t.dm.values())
        )

    def as_meta(self) -> dict[str, Any]:
        """The record's `meta.judge`: what was judged and every disagreement."""
        return {
            "policy": self.policy,
            "turns_judged": sum(t.judge is not None for t in self.turns),
            "unjudged": sum(t.judge is None for t in self.turns),
            "disagreements": [
                {"turn": t.turn, "kind": kind, "dm": t.dm[kind], "judge": not t.dm[kind], "reason": t.reason}
                for t in self.turns
                for kind in t.disputed
            ],
            **({"masked": list(self.masked)} if self.policy == "remask" else {}),
        }
