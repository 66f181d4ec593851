"""One client of the throughput bench, in its own process so its CPU time is its own.

`python -m bench.throughput_client SPEC_JSON` sends the bench workload (`count` distinct
script requests) to `url` with one of two clients and prints one JSON line of results:

- `ours`: the service's request layer (LLMClient behind an EndpointChain, a real SQLite
  store in a temporary directory, the endpoint's limits from the spec) as configured by
  default: aiohttp, answers streamed;
- `ours-whole`: the same with `stream: false` (each answer one JSON body), to show what
  streaming costs;
- `naive`: AsyncOpenAI with the SDK's default transport and retries, 64 requests at once.

CPU is the process's CPU time over the workload only (imports and start-up excluded).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import openai
import orjson
import uvloop

from llm import Endpoint, EndpointChain, Limits, LLMClient, RequestEvent, RequestFailed
from pipeline.script import script_messages

NAIVE_CONCURRENCY = 64
OUR_STREAMING = {"ours": True, "ours-whole": False}
MAX_TOKENS = 4096


def workload(count: int) -> list[list[dict[str, str]]]:
    """`count` distinct script requests (one per persona), as the service sends them."""
    return [script_messages(f"A beekeeper with {i} hives on a windy hill.", None) for i in range(count)]


class Recorder:
    """Completion times and token counts of the successes, failures by kind."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.done: list[tuple[float, int]] = []
        self.latencies: list[float] = []
        self.failed: dict[str, int] = {}

    def success(self, tokens: int) -> None:
        self.done.append((time.monotonic() - self.started, tokens))

    def failure(self, kind: str) -> None:
        self.failed[kind] = self.failed.get(kind, 0) + 1


async def run_ours(
    spec: dict[str, Any], messages: list[list[dict[str, str]]], rec: Recorder
) -> dict[str, Any]:
    limits = Limits(**spec["limits"])
    endpoint = Endpoint(
        model="sim-gpt-4o",
        name="bench",
        base_url=spec["url"],
        timeout_s=spec["timeout_s"],
        limits=limits,
        stream=OUR_STREAMING[spec["client"]],
    )
    events: list[RequestEvent] = []
    client = LLMClient(endpoint, spec["url"], sinks=[events.append])
    chain = EndpointChain([client])
    control = client.limiter.concurrency
    limits_seen: list[float] = []

    async def one(i: int) -> None:
        try:
            completion = await chain.complete(
                messages[i], temperature=0.7, max_tokens=MAX_TOKENS, seed=i, stage="bench"
            )
        except RequestFailed:
            rec.failure("gave up")
            return
        rec.success(completion.usage.total)
        limits_seen.append(control.limit)

    await asyncio.gather(*(one(i) for i in range(len(messages))))
    await client.aclose()
    latencies = [event.latency_s for event in events if event.answered]
    tail = limits_seen[len(limits_seen) // 2 :] or [control.limit]
    settled = sorted(latencies[len(latencies) // 2 :]) or [0.0]
    return {"settled_concurrency": sum(tail) / len(tail), "latency_s": settled[len(settled) // 2]}


async def run_naive(
    spec: dict[str, Any], messages: list[list[dict[str, str]]], rec: Recorder
) -> dict[str, Any]:
    client = openai.AsyncOpenAI(base_url=spec["url"], api_key="not-needed", timeout=spec["timeout_s"])
    slots = asyncio.Semaphore(NAIVE_CONCURRENCY)

    async def one(i: int) -> None:
        async with slots:
            sent = time.monotonic()
            try:
                response = await client.chat.completions.create(
                    model="sim-gpt-4o",
                    messages=messages[i],  # type: ignore[arg-type]
                    temperature=0.7,
                    max_tokens=MAX_TOKENS,
                    seed=i,
                    response_format={"type": "json_object"},
                )
            except openai.APIError as exc:
                rec.failure(type(exc).__name__)
                return
            rec.latencies.append(time.monotonic() - sent)
        rec.success(response.usage.total_tokens if response.usage else 0)

    await asyncio.gather(*(one(i) for i in range(len(messages))))
    await client.close()
    tail = sorted(rec.latencies[len(rec.latencies) // 2 :]) or [0.0]
    return {"settled_concurrency": NAIVE_CONCURRENCY, "latency_s": tail[len(tail) // 2]}


async def measure(spec: dict[str, Any]) -> dict[str, Any]:
    messages = workload(spec["count"])
    rec = Recorder()
    run = run_naive if spec["client"] == "naive" else run_ours
    cpu = time.process_time()
    extra = await run(spec, messages, rec)
    return {
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.monotonic() - rec.started,
        "done": rec.done,
        "failed": rec.failed,
        **extra,
    }


def main(argv: list[str]) -> int:
    spec = orjson.loads(argv[0])
    result = uvloop.run(measure(spec))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
