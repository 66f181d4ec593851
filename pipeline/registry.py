"""The stage registry: every stage of the pipeline, registered once.

A stage is its name, its role (`source`: it feeds admission with personas; `sample`: a step
of a sample's walk), its prompt files, the rule ids its checks report, the stages a sample
may go to next, its default settings, and for a sample stage how its handler is built.
Whatever iterates over stages does so here: the config (`stages:` and its checks), the run's
wiring of the job queue, the metric labels (rules by stage) and the export (attempts by
stage). Adding a stage is its own module and one entry below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from dedup.near import Verdict
from llm import EndpointChain
from pipeline.job import SampleJob
from pipeline.judge import JudgeStage, routed_to_judge
from pipeline.judgement import Judgement
from pipeline.rules import SCRIPT_RULES, TRAJECTORY_RULES
from pipeline.script import ScriptStage
from pipeline.settings import JudgeSettings, StageSettings
from pipeline.trajectory import TrajectoryStage

Handler = Callable[[SampleJob], Awaitable[str | None]]  # the job's next stage, or None: finished


@dataclass(frozen=True)
class StageContext:
    """What the run gives the stages it builds."""

    settings: Mapping[str, StageSettings]  # every stage's settings, by name
    llm: Callable[[str], EndpointChain]  # a stage's endpoints: the primary, then its fallbacks
    refinement: bool  # false: the paper's "w/o refinement data" ablation
    duplicate_script: Callable[[SampleJob], Awaitable[Verdict | None]]  # the script dedup check
    judged: Callable[[SampleJob, Judgement], None]  # stores and counts the judge's verdicts


@dataclass(frozen=True)
class Stage:
    name: str
    role: str  # "source" or "sample"
    prompts: tuple[str, ...]  # pipeline/prompts/<name>.md
    rules: tuple[str, ...]  # the rule ids its checks report (pipeline/rules.py)
    next: tuple[str, ...]  # where a sample may go from here (none: it finishes here)
    defaults: StageSettings
    build: Callable[[StageContext], Handler] | None = None  # a sample stage's handler
    # off unless its settings enable it (`enabled: true`); off, it is not built, asked, counted
    # or recorded anywhere: the run is the one it would be without the stage
    optional: bool = False


def _script(context: StageContext) -> Handler:
    return ScriptStage(context.llm("script"), context.settings["script"], context.duplicate_script)


def _trajectory(context: StageContext) -> Handler:
    settings = context.settings
    stage = TrajectoryStage(
        context.llm("trajectory"), settings["trajectory"], settings["script"].attempts, context.refinement
    )
    return routed_to_judge(stage) if enabled("judge", settings) else stage


def _judge(context: StageContext) -> Handler:
    settings = context.settings["judge"]
    assert isinstance(settings, JudgeSettings)
    return JudgeStage(context.llm("judge"), settings, context.judged)


STAGES: tuple[Stage, ...] = (
    Stage(
        "personas",
        "source",
        prompts=("persona_system", "persona_user"),
        rules=(),
        next=(),
        defaults=StageSettings(temperature=1.0, max_tokens=1024),
    ),
    Stage(
        "script",
        "sample",
        prompts=("script_system", "script_user", "script_feedback"),
        rules=SCRIPT_RULES,
        next=("trajectory",),
        defaults=StageSettings(temperature=0.9, max_tokens=12288, attempts=2),
        build=_script,
    ),
    Stage(
        "trajectory",
        "sample",
        prompts=(
            "trajectory_system",
            "trajectory_mistakes",
            "trajectory_no_mistakes",
            "trajectory_user",
            "trajectory_continue",
            "trajectory_feedback",
        ),
        rules=TRAJECTORY_RULES,
        # a new script once this one's trajectory attempts are used up; the judge, when it is on
        next=("script", "judge"),
        defaults=StageSettings(temperature=0.7, max_tokens=12288, attempts=3),
        build=_trajectory,
    ),
    Stage(
        "judge",
        "sample",
        prompts=("judge/system", "judge/user"),
        rules=(),  # its one rule, `judge` (the drop policy), is counted when it is used
        next=(),
        defaults=JudgeSettings(),
        build=_judge,
        optional=True,
    ),
)
FIRST_STAGE = "script"  # where an admitted sample starts


def sample_stages(settings: Mapping[str, StageSettings] | None = None) -> tuple[Stage, ...]:
    """The stages a sample walks through, in registration order; given the run's settings,
    without the optional stages they leave off."""
    return tuple(
        stage
        for stage in STAGES
        if stage.role == "sample" and (settings is None or enabled(stage.name, settings))
    )


def enabled(name: str, settings: Mapping[str, StageSettings]) -> bool:
    """Whether a stage runs: every stage but an optional one its settings leave off."""
    stage = next(stage for stage in STAGES if stage.name == name)
    return not stage.optional or bool(getattr(settings[name], "enabled", False))


def rules_by_stage() -> dict[str, tuple[str, ...]]:
    """The rule ids each stage's checks report."""
    return {stage.name: stage.rules for stage in STAGES if stage.rules}
