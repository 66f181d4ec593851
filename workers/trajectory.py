"""Trajectory stage: script -> trajectory (SPEC §4), checked by rules T1–T8.

The recovery policy of SPEC §4: when T1–T5 fail at turn k and the turns before k form a
verified prefix ending on a DM turn, the next attempt sends that prefix and the rule's
message and asks the model to continue; when T6/T7/T8 fail, or there is no usable prefix,
the trajectory is regenerated from scratch with the message. After the script's attempts
(default 3) the sample goes back to the script stage for a new script, or is dropped.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.config import Stage
from workers.fallback import EndpointChain
from workers.prompts import chat, render
from workers.rules import Failure, check_trajectory
from workers.sample import SampleJob


class TrajectoryStage:
    name = "trajectory"

    def __init__(self, llm: EndpointChain, settings: Stage, script_attempts: int) -> None:
        self._llm = llm
        self._settings = settings
        self._script_attempts = script_attempts

    async def __call__(self, job: SampleJob) -> str | None:
        """Run until a trajectory passes (None with job.trajectory set), or hand back / drop."""
        assert job.script is not None
        script_text = orjson.dumps(job.script, option=orjson.OPT_INDENT_2).decode()
        prefix: list[dict[str, Any]] = []
        previous: tuple[str, Failure] | None = None
        for attempt in range(1, self._settings.attempts + 1):
            if prefix:
                assert previous is not None
                messages = continue_messages(script_text, prefix, previous[1])
            else:
                messages = fresh_messages(script_text, previous)
            completion = await self._llm.complete(
                messages,
                temperature=self._settings.temperature,
                max_tokens=self._settings.max_tokens,
                seed=job.seed(f"{self.name}:{job.script_attempts}", attempt),
                stage=self.name,
                sample_id=job.id,
            )
            job.charge(self.name, completion)
            verdict = check_trajectory(completion.content, job.actions, prefix)
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
            previous = (completion.content, verdict.failure)
        return None


def fresh_messages(script_text: str, previous: tuple[str, Failure] | None) -> list[dict[str, str]]:
    """A whole trajectory; after a T6/T7/T8 failure, the failed answer and the rule's feedback."""
    system, user = render("trajectory_system"), render("trajectory_user", script=script_text)
    if previous is None:
        return chat(system, user)
    content, failure = previous
    return chat(
        system, user, content, render("trajectory_feedback", rule=failure.rule, message=failure.message)
    )


def continue_messages(
    script_text: str, prefix: list[dict[str, Any]], failure: Failure
) -> list[dict[str, str]]:
    """Continue from the verified prefix, telling the model which turn failed and why."""
    user = render(
        "trajectory_continue",
        script=script_text,
        prefix=orjson.dumps(prefix, option=orjson.OPT_INDENT_2).decode(),
        last_turn=len(prefix),
        next_turn=len(prefix) + 1,
        rule=failure.rule,
        message=failure.message,
    )
    return chat(render("trajectory_system"), user)
