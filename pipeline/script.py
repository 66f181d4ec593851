"""Script stage: persona -> script (SPEC §3), checked by rules S1–S7.

A script that fails a rule is asked for again in the same conversation, with every problem
found as feedback (so one regeneration can fix them all), while the persona has script
attempts left (SPEC §4: 2 scripts per persona, shared with the scripts whose trajectories
all failed). A script that passes is checked against the scripts of other samples before any
trajectory token is spent on it: a duplicate ends the sample (`job.duplicate` names the
sample it repeats).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from dedup.near import Verdict
from llm import EndpointChain
from pipeline.job import SampleJob
from pipeline.prompts import chat, example, render
from pipeline.rules import Failure, check_script, feedback
from pipeline.settings import StageSettings


class ScriptStage:
    name = "script"

    def __init__(
        self,
        llm: EndpointChain,
        settings: StageSettings,
        duplicate_of: Callable[[SampleJob], Awaitable[Verdict | None]],
    ) -> None:
        self._llm = llm
        self._settings = settings
        self._duplicate_of = duplicate_of

    async def __call__(self, job: SampleJob) -> str | None:
        """Run until a script passes (next stage: trajectory) or attempts run out (None: dropped)."""
        previous: tuple[str, Sequence[Failure]] | None = None
        while job.script_attempts < self._settings.attempts:
            job.attempts[self.name] += 1
            attempt = job.script_attempts
            completion = await self._llm.complete(
                script_messages(job.persona, previous),
                temperature=self._settings.temperature,
                max_tokens=self._settings.max_tokens,
                seed=job.seed(self.name, attempt),
                stage=self.name,
            )
            job.charge(self.name, completion)
            verdict = check_script(completion.content)
            if verdict.ok:
                job.script, job.actions = verdict.script, verdict.actions
                job.duplicate = await self._duplicate_of(job)
                if job.duplicate is not None:
                    job.note(self.name, attempt, None, "duplicate")
                    return None
                job.note(self.name, attempt, None, "trajectory")
                return "trajectory"
            assert verdict.failure is not None
            more = job.script_attempts < self._settings.attempts
            job.note(self.name, attempt, verdict.failure, "regenerate_script" if more else "drop")
            previous = (completion.content, verdict.failures)
        return None


def script_messages(persona: str, previous: tuple[str, Sequence[Failure]] | None) -> list[dict[str, str]]:
    """The script request; after a failed check, the failed answer and every problem found."""
    system = render("script_system", example_script=example("script"))
    user = render("script_user", persona=persona)
    if previous is None:
        return chat(system, user)
    content, failures = previous
    return chat(system, user, content, render("script_feedback", problems=feedback(failures)))
