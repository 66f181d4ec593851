"""`make bench` section "throughput": our request layer against a naive client at a rate limit.

Each scenario runs our request layer (the first one also with answers not streamed,
`ours-whole`), then the naive baseline (AsyncOpenAI, the SDK's default transport and
retries, 64 requests at once), on the same workload, each in its own
process (`bench/throughput_client.py`, so the CPU time is the client's alone) against a
fresh embedded endpoint (its own process) with the same settings: lognormal latency with a
median of 1 s, and rate buckets that start empty, as for a key another job has just used,
so that no client gets a free initial burst and the rates below cannot exceed the limit.
Printed for each client:

- goodput: successful requests per minute divided by the binding limit, in steady state:
  over the middle 80% of the successes (the first 10% hold the start-up, the last 10% the
  drain);
  tokens-bound: tokens per minute over the same window divided by the TPM limit;
  queueing: requests per second divided by what the endpoint can serve (knee / mean latency);
- 429s: share of the requests the endpoint received that it answered 429 (its own count);
- client CPU per request: the client process's CPU time / the workload's requests;
- wall time, and failures: every request ends in a success or a counted failure.

`--quick` (the test suite runs it): the first scenario only, 150 requests, ours and naive.
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from service.embedded import EmbeddedEndpoint
from typedconfig import from_plain

LATENCY = {"latency_median_s": 1.0, "latency_sigma": 0.5}
NO_FAULTS = {"p_5xx": 0.0, "p_reset": 0.0, "p_truncated_body": 0.0, "p_hang": 0.0}
CLIENTS = ("ours", "naive")


@dataclass(frozen=True)
class Scenario:
    name: str
    count: int
    sim: dict[str, Any]
    limits: dict[str, int]  # our client's configured limits
    timeout_s: float = 60.0
    binding: str = "rpm"  # rpm | tpm | knee
    clients: tuple[str, ...] = CLIENTS
    notes: list[str] = field(default_factory=list)

    def limit_per_s(self) -> float:
        """The binding limit, per second (requests, or tokens for tpm)."""
        if self.binding == "knee":
            mean_latency = self.sim["latency_median_s"] * math.exp(self.sim["latency_sigma"] ** 2 / 2)
            return self.sim["max_num_seqs"] / mean_latency
        return self.sim[self.binding] / 60.0


SCENARIOS = [
    Scenario(
        "requests-bound: 2400 RPM enforced per second",
        1800,
        {**LATENCY, "rpm": 2400, "burst_s": 1.0, "start_full": False, "faults": NO_FAULTS},
        {"rpm": 2400, "max_concurrency": 128},
        clients=("ours", "ours-whole", "naive"),  # once: what streaming costs
    ),
    Scenario(
        "tokens-bound: 3M TPM (3 s bucket), max_tokens 4096",
        1500,
        {**LATENCY, "tpm": 3_000_000, "burst_s": 3.0, "start_full": False, "faults": NO_FAULTS},
        {"tpm": 3_000_000, "max_concurrency": 128},
        binding="tpm",
    ),
    Scenario(
        "faults: 2400 RPM + 2% 5xx, 1% resets, 0.5% hangs (timeout 10 s)",
        1800,
        {
            **LATENCY,
            "rpm": 2400,
            "burst_s": 1.0,
            "start_full": False,
            "faults": {**NO_FAULTS, "p_5xx": 0.02, "p_reset": 0.01, "p_hang": 0.005, "hang_s": 30.0},
        },
        {"rpm": 2400, "max_concurrency": 128},
        timeout_s=10.0,
    ),
    Scenario(
        "queueing: no 429s, 16 served at once, the rest queue",
        500,
        {**LATENCY, "max_num_seqs": 16, "faults": NO_FAULTS},
        {"max_concurrency": 128},
        binding="knee",
    ),
]


async def run_client(scenario: Scenario, client: str, workdir: Path) -> dict[str, Any]:
    settings = from_plain(scenario.sim, f"bench scenario {scenario.name}")
    endpoint = EmbeddedEndpoint(client, settings, workdir / f"endpoint-{client}.log")
    url = await endpoint.start()
    try:
        spec = {
            "client": client,
            "url": url,
            "count": scenario.count,
            "limits": scenario.limits,
            "timeout_s": scenario.timeout_s,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.throughput_client",
            orjson.dumps(spec).decode(),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{client} client exited with {process.returncode}")
        result = orjson.loads(out.splitlines()[-1])
        async with (
            aiohttp.ClientSession() as session,
            session.get(url.removesuffix("/v1") + "/_sim/stats") as response,
        ):
            result["endpoint"] = await response.json()
        return result
    finally:
        await endpoint.stop()


def figures(scenario: Scenario, result: dict[str, Any]) -> dict[str, Any]:
    done = result["done"]
    ok = len(done)
    first, last = int(ok * 0.1), max(int(ok * 0.9) - 1, 0)
    span = done[last][0] - done[first][0] if ok > 10 else 0.0
    if scenario.binding == "tpm":
        rate = sum(tokens for _, tokens in done[first:last]) / span if span else 0.0
    else:
        rate = (last - first) / span if span else 0.0
    by_status = result["endpoint"]["by_status"]
    received = result["endpoint"]["requests"]
    failed = sum(result["failed"].values())
    return {
        "goodput": rate / scenario.limit_per_s(),
        "share_429": by_status.get("429", 0) / received if received else 0.0,
        "cpu_ms": 1000 * result["cpu_s"] / scenario.count,
        "wall_s": result["wall_s"],
        "ok": ok,
        "failed": failed,
        "failed_by": result["failed"],
        "accounted": ok + failed == scenario.count,
        "concurrency": result["settled_concurrency"],
        "latency_s": result["latency_s"],
    }


def report(scenario: Scenario, rows: dict[str, dict[str, Any]]) -> str:
    lines = [f"\n{scenario.name}  ({scenario.count} requests)"]
    lines.append(f"  {'client':<12} {'goodput':>8} {'429s':>7} {'CPU ms/req':>11} {'wall s':>7}  outcome")
    for client, f in rows.items():
        outcome = f"{f['ok']} ok, {f['failed']} failed" + (f" {f['failed_by']}" if f["failed"] else "")
        if not f["accounted"]:
            outcome += f"  (UNACCOUNTED: {scenario.count - f['ok'] - f['failed']})"
        lines.append(
            f"  {client:<12} {f['goodput']:>8.3f} {f['share_429']:>7.2%} {f['cpu_ms']:>11.2f} "
            f"{f['wall_s']:>7.1f}  {outcome}"
        )
    if scenario.binding == "knee":
        for client, f in rows.items():
            lines.append(
                f"  {client}: concurrency {f['concurrency']:.1f} of max "
                f"{scenario.limits['max_concurrency'] if client == 'ours' else f['concurrency']:.0f}, "
                f"median latency {f['latency_s']:.2f} s; knee {scenario.sim['max_num_seqs']}"
            )
    return "\n".join(lines)


async def run_all(chosen: list[Scenario]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in chosen:
            rows = {c: figures(scenario, await run_client(scenario, c, Path(tmp))) for c in scenario.clients}
            print(report(scenario, rows), flush=True)


def main(argv: list[str]) -> None:
    """Run every scenario (or those whose name contains one of `argv`) and print the table;
    `--quick`: the first scenario, scaled down."""
    names = [arg for arg in argv if arg != "--quick"]
    chosen = [s for s in SCENARIOS if not names or any(n in s.name for n in names)]
    if "--quick" in argv:
        chosen = [replace(SCENARIOS[0], count=150, clients=CLIENTS)]
    print(
        "ours = LLMClient + SQLite store + adaptive limiter on aiohttp, answers streamed (ours-whole: "
        "the same, not streamed); naive = AsyncOpenAI, SDK defaults, "
        f"semaphore 64. Endpoint latency lognormal, median {LATENCY['latency_median_s']} s, "
        f"sigma {LATENCY['latency_sigma']}; rate buckets start empty.",
        flush=True,
    )
    asyncio.run(run_all(chosen))


if __name__ == "__main__":
    main(sys.argv[1:])
