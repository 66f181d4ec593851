"""The sample stages as the job queue walks them, the same in one process and on a cluster
worker: each stage's handler from the registry, with the sample id and stage bound to every
log line it causes and the sample noted with every answer it stores (`working_on`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from pipeline import registry
from pipeline.job import SampleJob
from pipeline.registry import Handler, StageContext, StageSettings
from service.config import Config
from service.store import working_on
from workers.queue import StageSpec


def stage_settings(config: Config) -> dict[str, StageSettings]:
    """Each stage's settings by name (what the registry decides which stages are on from)."""
    return {stage.name: getattr(config.stages, stage.name) for stage in registry.STAGES}


def sample_stage_specs(config: Config, context: StageContext) -> list[StageSpec[SampleJob]]:
    """The job queue's stages: the sample stages that are on, each with its cap if set (the
    endpoints' limiters are the gates)."""
    return [
        StageSpec(
            stage.name,
            _in_sample_context(stage.name, stage.build(context)),
            getattr(config.stages, stage.name).concurrency,
        )
        for stage in registry.sample_stages(context.settings)
        if stage.build is not None
    ]


def _in_sample_context(stage: str, handler: Handler) -> Callable[[SampleJob], Awaitable[str | None]]:
    async def handle(job: SampleJob) -> str | None:
        with structlog.contextvars.bound_contextvars(sample_id=job.id, stage=stage):
            token = working_on.set(job.id)
            try:
                return await handler(job)
            finally:
                working_on.reset(token)

    return handle
