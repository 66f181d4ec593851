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
