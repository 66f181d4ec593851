"""`SampleJob`: everything one persona's sample carries through the stages.

A job is created when a persona is admitted, moves script -> trajectory (and back to
script when a script's trajectory attempts are used up; on to the judge when it is on), and
ends accepted, dropped
(attempts exhausted; `last_failure` says why) or failed (the endpoint kept failing).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dedup.near import Verdict
from llm import Completion, Usage
from pipeline.judgement import Judgement
from pipeline.rules import Action, Failure


@dataclass
class SampleJob:
    id: str
    position: int
    source: str
    persona: str
    persona_meta: dict[str, Any] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)  # answers asked for, by stage
    script: dict[str, Any] | None = None
    actions: tuple[Action, ...] = ()
    trajectory: list[dict[str, Any]] | None = None
    error_refine_turns: int = 0
    last_failure: Failure | None = None
    error: str | None = None
    duplicate: Verdict | None = None  # the script repeats another sample's
    judgement: Judgement | None = None  # the judge stage's, when it is on
    history: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    models: dict[str, str] = field(default_factory=dict)
    requests: int = 0

    def seed(self, stage: str, attempt: int) -> int:
        """A per-request seed: a re-ask (new attempt) is a new request, a replay is the same one."""
        digest = hashlib.sha256(f"{self.id}:{stage}:{attempt}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def charge(self, stage: str, completion: Completion) -> None:
        """Add one LLM answer's tokens, cost and paid answers (two after a re-ask at the cap)."""
        self.usage += completion.usage
        self.cost_usd += completion.cost_usd
        self.models[stage] = completion.model
        self.requests += completion.answers

    def note(self, stage: str, attempt: int, failure: Failure | None, action: str) -> None:
        """Record one checked attempt: its rule failure (if any) and what the policy did next."""
        if failure is not None:
            self.last_failure = failure
        self.history.append(
            {
                "stage": stage,
                "attempt": attempt,
                "rule": failure.rule if failure else None,
                "message": failure.message if failure else None,
                "next": action,
            }
        )

    @property
    def script_attempts(self) -> int:
        """Scripts asked for so far (a persona gets `stages.script.attempts` of them)."""
        return self.attempts["script"]

    @property
    def failed_checks(self) -> list[str]:
        """Each failed check as "rule>next" (e.g. "T4>continue"), for the store and the summary."""
        return [f"{h['rule']}>{h['next']}" for h in self.history if h["rule"]]
