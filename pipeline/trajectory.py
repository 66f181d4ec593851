"""Trajectory stage: script -> trajectory (SPEC §4), checked by rules T1–T8.

The recovery policy of SPEC §4: when T1–T5 fail at turn k and the turns before k form a
verified prefix ending on a DM turn, the next attempt sends that prefix and every problem
found and asks the model to continue; when T6/T7/T8 fail, or there is no usable prefix,
the trajectory is regenerated from scratch with the message. After the script's attempts
(default 3) the sample goes back to the script stage for a new script, or is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from llm import EndpointChain
from pipeline.job import SampleJob
from pipeline.prompts import agent_view, chat, example, render
from pipeline.rules import Failure, check_trajectory, feedback
from pipeline.settings import StageSettings


class TrajectoryStage:
    name = "trajectory"

    def __init__(
        self, llm: EndpointChain, settings: StageSettings, script_attempts: int, refinement: bool = True
    ) -> None:
        self._llm = llm
        self._settings = settings
        self._script_attempts = script_attempts
        self._refinement = refinement  # False: the "w/o refinement data" ablation (no mistakes)

    async def __call__(self, job: SampleJob) -> str | None:
        """Run until a trajectory passes (None with job.trajectory set), or hand back / drop."""
        assert job.script is not None
        game = Game(job.script, self._refinement)
        prefix: list[dict[str, Any]] = []
        previous: tuple[str, Sequence[Failure]] | None = None
        for attempt in range(1, self._settings.attempts + 1):
            job.attempts[self.name] += 1
            if prefix:
                assert previous is not None
                messages = continue_messages(game, prefix, previous[1])
            else:
                messages = fresh_messages(game, previous)
            completion = await self._llm.complete(
                messages,
                temperature=self._settings.temperature,
                max_tokens=self._settings.max_tokens,
                seed=job.seed(f"{self.name}:{job.script_attempts}", attempt),
                stage=self.name,
            )
            job.charge(self.name, completion)
            verdict = check_trajectory(completion.content, job.actions, prefix, refinement=self._refinement)
            if verdict.ok:
                job.trajectory, job.error_refine_turns = verdict.turns, verdict.error_refine_turns
                job.note(self.name, attempt, None, "accept")
                return None
            assert verdict.failure is not None
            if attempt == self._settings.attempts:
                more_scripts = job.script_attempts < self._script_attempts
                job.note(self.name, attempt, verdict.failure, "new_script" if more_scripts else "drop")
                if more_scripts:
                    job.script, job.actions = None, ()
                    return "script"
                return None
            if verdict.continuable:
                prefix = verdict.verified_prefix
                job.note(self.name, attempt, verdict.failure, "continue")
            else:
                prefix = []
                job.note(self.name, attempt, verdict.failure, "regenerate")
            previous = (completion.content, verdict.failures)
        return None


class Game:
    """What every trajectory request of one script shows: the system prompt of the mode, the
    player view (all the Player may know) and the whole script (for the DM)."""

    def __init__(self, script: dict[str, Any], refinement: bool) -> None:
        policy = "trajectory_mistakes" if refinement else "trajectory_no_mistakes"
        self.system = render(
            "trajectory_system",
            mistakes_policy=render(policy),
            example_script=example("script"),
            example_trajectory=example("trajectory" if refinement else "trajectory_clean"),
        )
        self.player_view = agent_view(script)
        self.script = orjson.dumps(script, option=orjson.OPT_INDENT_2).decode()


def fresh_messages(game: Game, previous: tuple[str, Sequence[Failure]] | None) -> list[dict[str, str]]:
    """A whole trajectory; after a T6/T7/T8 failure, the failed answer and every problem found."""
    user = render("trajectory_user", player_view=game.player_view, script=game.script)
    if previous is None:
        return chat(game.system, user)
    content, failures = previous
    return chat(game.system, user, content, render("trajectory_feedback", problems=feedback(failures)))


def continue_messages(
    game: Game, prefix: list[dict[str, Any]], failures: Sequence[Failure]
) -> list[dict[str, str]]:
    """Continue from the verified prefix, naming every problem of the failed answer."""
    user = render(
        "trajectory_continue",
        player_view=game.player_view,
        script=game.script,
        prefix=orjson.dumps(prefix, option=orjson.OPT_INDENT_2).decode(),
        last_turn=len(prefix),
        next_turn=len(prefix) + 1,
        problems=feedback(failures),
    )
    return chat(game.system, user)
