"""The settings of one LLM stage (`stages.NAME` in config.yaml): which endpoints, how to
sample, how many attempts. Each stage's defaults are in the stage registry."""

from __future__ import annotations

from dataclasses import dataclass

from typedconfig import bounded


@dataclass(frozen=True)
class StageSettings:
    """Generation settings for one LLM stage. `endpoint`: one endpoint name, or a list (the
    primary first, then the fallbacks tried in order when it gives up); null: `generator`."""

    endpoint: str | list[str] | None = None
    temperature: float = bounded(0.7, 0, 2)
    max_tokens: int = bounded(4096, 1, 10**7)
    # a cap on samples in this stage at once (null: the limiters pace)
    concurrency: int | None = bounded(None, 1, 1_000_000, note="null: no cap")
    attempts: int = bounded(2, 1, 100)


JUDGE_POLICIES = ("keep", "remask", "drop")


@dataclass(frozen=True)
class JudgeSettings(StageSettings):
    """The optional judge stage (`pipeline/judge.py`, off by default): a model checks the DM's
    place_error / logic_error flags of every accepted sample. `policy` for a sample it disagrees
    with: keep (and report it), remask (also mask the turns it calls errors) or drop. `share`:
    the share of samples judged (chosen by sample id), an audit for a fraction of the cost.
    `attempts`: asks per turn while the answer is unreadable."""

    enabled: bool = False
    policy: str = "keep"
    share: float = bounded(1.0, 0, 1, above=True)
    temperature: float = bounded(0.0, 0, 2)
    max_tokens: int = bounded(512, 1, 10**7)
