"""`make bench SECTIONS=hangs`: a hung request against a 10-minute answer that progresses,
at the request layer (issue 11, item 5: a request that stops making progress is given up
within 60 s, whatever the length of its answer; a long answer still progressing is never
cut off).

The LLM client (`llm/client.py`) with the settings of config.yaml's `openai` or `deepseek`
endpoint (transport, timeout_s), its base_url pointed at the embedded endpoint and
max_retries 0, sends one script request (max_tokens as the script stage sends it) in each
of three checks, side by side:

1. hung: a gpt-4o-like endpoint that stalls the answer for 30 minutes (fault `hang`):
   how long the client had heard nothing when it gave up (the endpoint's own count,
   `hangs.max_silence_s`) and how long after sending; target: at most 60 s of silence;
2. long answer: a gpt-4o-like endpoint writing a 4000-token answer at 4000/600 tokens/s
   (`min_completion_tokens`, `output_tokens_per_s`): 10 minutes of progress; target: it
   arrives whole (finish_reason stop and all 4000 completion tokens);
3. the same long answer from a deepseek-like endpoint, whose keep-alive lines (blank lines,
   or `: keep-alive` comments before a stream's first chunk) are all a waiting client hears.

`--quick` (what the test suite runs): time_scale 0.01 for the endpoint and the client's
timeout_s alike (the 10 minutes take 6 s, the 60 s target is 0.6 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from llm import Generation, LLMClient, RequestFailed
from pipeline.script import script_messages
from service.config import load_config
from simulator.process import sim_stats, simulator_process

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config.yaml"
QUICK_SCALE = 0.01
SILENCE_TARGET_S = 60.0
LONG_TOKENS, LONG_S = 4000, 600.0
PERSONA = "A lighthouse keeper who restores old foghorns."


@dataclass(frozen=True)
class Check:
    name: str
    endpoint: str  # the config.yaml endpoint whose client settings are used
    sim: dict[str, Any]
    hang: bool  # True: the endpoint stalls; False: a long answer must arrive whole


LONG = {"min_completion_tokens": LONG_TOKENS, "output_tokens_per_s": LONG_TOKENS / LONG_S}
CHECKS = [
    Check(
        "hung request",
        "openai",
        {"profile": "gpt-4o-like", "faults": {"p_hang": 1.0, "hang_s": 1800.0}},
        True,
    ),
    Check("10-minute answer", "openai", {"profile": "gpt-4o-like", **LONG}, False),
    Check("10-minute DeepSeek answer", "deepseek", {"profile": "deepseek-like", **LONG}, False),
]


@dataclass
class Outcome:
    took_s: float
    error: str | None
    finish_reason: str | None
    completion_tokens: int
    endpoint: dict[str, Any]  # the endpoint's counters afterwards
    timeout_s: float


async def run_check(check: Check, url: str, scale: float, folder: Path) -> Outcome:
    config = load_config(CONFIG, environ={})
    configured = config.endpoints[check.endpoint]
    endpoint = dataclasses.replace(
        configured,
        base_url=url,
        api_key_env=None,
        max_retries=0,
        timeout_s=configured.timeout_s * scale,
        limits=dataclasses.replace(configured.limits, rpm=0, tpm=0),  # learned from the headers
    )
    client = LLMClient(endpoint, url)
    generation = Generation(temperature=0.9, max_tokens=config.stages.script.max_tokens, seed=1)
    request = client.prepare(script_messages(PERSONA, None), generation, "script")
    started = time.monotonic()
    error, finish, tokens = None, None, 0
    try:
        completion = await client.complete(request, "script")
        finish, tokens = completion.finish_reason, completion.usage.completion
    except RequestFailed as exc:
        error = str(exc)
    finally:
        took = time.monotonic() - started
        await client.aclose()
    await asyncio.sleep(0.2)  # the endpoint notices the client's leaving
    return Outcome(took, error, finish, tokens, sim_stats(url, digests=False), endpoint.timeout_s)


def report(check: Check, outcome: Outcome, scale: float) -> str:
    client = f"endpoint {check.endpoint!r}, timeout_s {outcome.timeout_s:g}"
    if check.hang:
        silence = outcome.endpoint["hangs"]["max_silence_s"]
        target = SILENCE_TARGET_S * scale
        verdict = "met" if outcome.error and silence <= target else "missed"
        return (
            f"{check.name} ({client}): given up after {silence:.1f} s of silence, {outcome.took_s:.1f} s "
            f"after the call (target: at most {target:g} s of silence: {verdict})"
        )
    whole = (
        outcome.error is None and outcome.finish_reason == "stop" and outcome.completion_tokens == LONG_TOKENS
    )
    result = (
        f"arrived after {outcome.took_s:.1f} s with {outcome.completion_tokens} completion tokens, "
        f"finish_reason {outcome.finish_reason}"
        if outcome.error is None
        else f"failed after {outcome.took_s:.1f} s: {outcome.error}"
    )
    return (
        f"{check.name} ({LONG_TOKENS} tokens over {LONG_S * scale:g} s; {client}): {result} "
        f"(target: arrives whole: {'met' if whole else 'missed'})"
    )


async def run_all(scale: float) -> list[tuple[Check, Outcome]]:
    """The checks side by side, each against its own endpoint (all started first)."""
    models = {name: endpoint.model for name, endpoint in load_config(CONFIG, environ={}).endpoints.items()}
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as endpoints:
        urls = [
            endpoints.enter_context(
                simulator_process({**check.sim, "models": [models[check.endpoint]], "time_scale": scale})
            )
            for check in CHECKS
        ]
        outcomes = await asyncio.gather(
            *(run_check(check, url, scale, Path(folder)) for check, url in zip(CHECKS, urls, strict=True))
        )
    return list(zip(CHECKS, outcomes, strict=True))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hangs")
    parser.add_argument("--quick", action="store_true", help=f"time_scale {QUICK_SCALE}")
    scale = QUICK_SCALE if parser.parse_args(argv).quick else 1.0
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )  # no attempt lines
    print(f"The LLM client against a hung and a 10-minute answer, time_scale {scale}.", flush=True)
    for check, outcome in asyncio.run(run_all(scale)):
        print(report(check, outcome, scale), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
