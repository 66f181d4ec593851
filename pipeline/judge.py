"""Judge stage (optional, `stages.judge`): a model audits the DM's place_error and logic_error
flags of each sample that passed every rule.

The rules check formats, patterns and allowed values (parameter_error, T5), but not whether a
well-formed action really was out of place or out of order, and those two flags decide which
Player turns are trained on and whether the sample has its two error-refine turns (T6). The
paper had GPT-4's judgements checked by people (88 of 100 agreed). Here, for every DM turn of a
trajectory that answers a valid action, the judge is shown what an annotator had: the script
(hidden information included), the interaction before the turn, the Player action and the DM
turn itself (`pipeline/prompts/judge/`), and answers with the two flags it should carry. The
turns of a sample are asked at once; an unreadable answer is asked again with another seed
(`attempts` in all), then the turn counts as unjudged; so does a turn whose request the
endpoints gave up on (`RequestFailed`): an audit must not cost the run a sample.

The requests go through the same endpoint chain, store, limiters and budget as every stage,
and are charged to the sample (`SampleJob.charge`). What the judge found is the job's
`judgement`. With `share` below 1 only that share of the samples is judged (chosen by sample
id): enough for the agreement figures at a fraction of the cost. `policy` says what a
disagreement does: `keep` (the sample is accepted as it is and the disagreement reported),
`remask` (also mask the Player turns whose DM turn the judge calls an error: a disputed turn
is not trained on; `service.export`) or `drop` (the sample is dropped with rule `judge`, and
the run draws another persona).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog

from llm import EndpointChain, RequestFailed
from pipeline.job import SampleJob
from pipeline.jsontext import loads, strip_fence
from pipeline.judgement import FLAG_KINDS, Judgement, TurnJudgement
from pipeline.prompts import chat, render
from pipeline.rules import Failure
from pipeline.settings import JudgeSettings

JUDGE_RULE = "judge"

log = structlog.get_logger()


class JudgeStage:
    name = "judge"

    def __init__(
        self,
        llm: EndpointChain,
        settings: JudgeSettings,
        record: Callable[[SampleJob, Judgement], None],
    ) -> None:
        self._llm = llm
        self._settings = settings
        self._record = record  # stores the judgement and counts it (the run's recorder)

    async def __call__(self, job: SampleJob) -> str | None:
        """Judge the sample's DM turns, then apply the policy; the sample is finished after."""
        assert job.script is not None and job.trajectory is not None
        if not chosen(job.id, self._settings.share):
            return None
        script = orjson.dumps(job.script, option=orjson.OPT_INDENT_2).decode()
        positions = judged_positions(job.trajectory)
        asks = [asyncio.ensure_future(self._judge(job, script, i)) for i in positions]
        try:
            turns = await asyncio.gather(*asks)
        except BaseException:  # the budget, a stop, a fatal refusal: the sibling asks end too
            for ask in asks:
                ask.cancel()
            await asyncio.gather(*asks, return_exceptions=True)
            raise
        judgement = job.judgement = Judgement(self._settings.policy, tuple(turns))
        self._record(job, judgement)
        if judgement.disagrees and self._settings.policy == "drop":
            disputed = [f"turn {t.turn} {'/'.join(t.disputed)}" for t in judgement.turns if t.disputed]
            job.note(
                self.name,
                1,
                Failure(JUDGE_RULE, f"the judge disagrees with the DM's flags: {', '.join(disputed)}"),
                "drop",
            )
            job.trajectory = None
        return None

    async def _judge(self, job: SampleJob, script: str, index: int) -> TurnJudgement:
        trajectory = job.trajectory
        assert trajectory is not None
        dm, player = trajectory[index], trajectory[index - 1]
        messages = judge_messages(script, trajectory, index)
        verdict: tuple[dict[str, bool], str] | None = None
        reason = "no readable answer"
        for attempt in range(1, self._settings.attempts + 1):
            job.attempts[self.name] += 1
            try:
                completion = await self._llm.complete(
                    messages,
                    temperature=self._settings.temperature,
                    max_tokens=self._settings.max_tokens,
                    seed=job.seed(f"{self.name}:{dm['turn']}", attempt),
                    stage=self.name,
                )
            except RequestFailed as exc:  # an audit must not cost the run a sample it accepted
                log.warning("judge_request_failed", turn=dm["turn"], error=str(exc))
                reason = f"request failed: {exc}"
                break
            job.charge(self.name, completion)
            verdict = read_verdict(completion.content)
            if verdict is not None:
                break
        return TurnJudgement(
            turn=dm["turn"],
            action=player["Action"],
            observation=dm["Observation"],
            dm={kind: bool(dm[kind]) for kind in FLAG_KINDS},
            judge=verdict[0] if verdict else None,
            reason=verdict[1] if verdict else reason,
        )


def chosen(sample_id: str, share: float) -> bool:
    """Whether a sample is among the `share` judged: the same samples in every process."""
    digest = hashlib.sha256(f"judge:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


def judged_positions(trajectory: list[dict[str, Any]]) -> list[int]:
    """The DM turns to judge: every one that answers a valid action (after an invalid one,
    parameter_error is what the rules check, and place or order do not arise)."""
    return [i for i in range(1, len(trajectory), 2) if not trajectory[i]["parameter_error"]]


def judge_messages(script: str, trajectory: list[dict[str, Any]], index: int) -> list[dict[str, str]]:
    """The request for the DM turn at `index`: the script, the turns before its Player
    action, that action and the DM turn."""
    history = trajectory[: index - 1]
    user = render(
        "judge/user",
        script=script,
        history=orjson.dumps(history, option=orjson.OPT_INDENT_2).decode() if history else "(none)",
        action=orjson.dumps(trajectory[index - 1]).decode(),
        turn=orjson.dumps(trajectory[index]).decode(),
        number=trajectory[index]["turn"],
    )
    return chat(render("judge/system"), user)


def read_verdict(content: str) -> tuple[dict[str, bool], str] | None:
    """The flags and reason of a judge answer; None when it is not the JSON object asked for."""
    try:
        answer = loads(strip_fence(content))
    except ValueError:
        return None
    if not isinstance(answer, Mapping) or not all(isinstance(answer.get(k), bool) for k in FLAG_KINDS):
        return None
    reason = answer.get("reason")
    return {kind: answer[kind] for kind in FLAG_KINDS}, reason if isinstance(reason, str) else ""


def judgement_rows(judgement: Judgement) -> list[tuple[Any, ...]]:
    """The store's rows of a sample's judged turns (`Store.put_judgements`)."""
    return [
        (
            t.turn,
            t.dm["place_error"],
            t.dm["logic_error"],
            None if t.judge is None else t.judge["place_error"],
            None if t.judge is None else t.judge["logic_error"],
            t.reason,
            t.action,
            t.observation,
        )
        for t in judgement.turns
    ]


def routed_to_judge(handler: Callable[[SampleJob], Any]) -> Callable[[SampleJob], Any]:
    """The trajectory stage's handler, sending a sample whose trajectory passed to the judge."""

    async def handle(job: SampleJob) -> str | None:
        after = await handler(job)
        if after is None and job.trajectory is not None:
            return JudgeStage.name
        return after

    return handle
