"""`make bench SECTIONS=providers`: the whole service against the embedded endpoint shaped
like real providers (`simulator/profiles.py`), one scenario per profile.

Each scenario runs `python -m service run` as a user would: the shipped config.yaml, its
real-provider endpoint (`openai`, `deepseek` or `vllm`, with that endpoint's own settings:
transport, timeout, concurrency, price) as the generator, `base_url` pointed at the embedded
endpoint and the API key in the environment variable that endpoint names. Dedup, metrics
and the report are on, as shipped. For gpt-4o-like and the short answers the service is
given no `limits.rpm/tpm` (learned from the `x-ratelimit-*` headers, as for a real key),
and the endpoint's rate buckets start empty (a key another job has just used), so no run
gets a free minute of burst. The endpoint runs as its own process (the same one the service
would start from `embedded:`), so that its counters (`/_sim/stats`) outlive the run and the
service process's CPU time is its own.

Printed for each scenario:
- accepted samples/min in steady state: between the 10% and the 90% accepted sample (the
  first 10% hold the ramp-up, the last 10% the tail), from the acceptance times in run.log;
- the ideal: gpt-4o-like and short answers: what the RPM and TPM limits allow if each
  request were charged 1.3x the tokens it uses, from this run's own requests and tokens per
  accepted sample (RPM / requests per sample, TPM / (1.3 x tokens used per sample), the
  lower); deepseek-like: the concurrency cap / the mean latency of its answers (Little's
  law); vllm-like: the knee (max_num_seqs) / the latency of an answer in a full batch
  (the latency model at this run's mean prompt and completion tokens); and the ratio;
- over the window: requests/min / RPM, tokens charged (prompt + max_tokens at admission) /
  tokens used (prompt + completion; the whole run's figure would also count the requests
  cancelled when the target is reached, charged and never used), and the time-weighted mean
  of the requests in flight at the endpoint; the most in flight, and the share of requests
  answered 429, over the whole run;
- the service process's own CPU time per accepted sample, over the window (steady) and over
  the whole process (start-up, model loading and the report included); its peak RSS;
- deepseek-like: mean in flight / the cap; vllm-like: the knee, the concurrency the service
  settled at (mean in flight over the window) and the latency it saw (the mean latency of
  the answers completed in the window);
- the run's outcome: accepted of N, failed samples, `agentrefine validate` problems.

`--quick` (what the test suite runs): every duration of the endpoint and the service's
`timeout_s` compressed 20x (time_scale 0.05, limits 20x higher), N=20: it checks the harness
and prints the same figures, which mean little at that size.
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from service.config import load_config
from service.validate import validate_run
from simulator.latency import knee, mean_answer_s
from simulator.process import sim_stats, simulator_process
from simulator.settings import SimSettings

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config.yaml"
CHARGE_MARGIN = 1.3  # the ideal charges each request this many times the tokens it uses
STEADY = (0.1, 0.9)  # the steady-state window, as shares of the accepted samples
QUICK_SCALE, QUICK_N = 0.05, 20
LEARN_LIMITS = ("limits.rpm=0", "limits.tpm=0")  # none configured: learned from the headers
FAULTS = {"p_5xx": 0.02, "p_reset": 0.01, "p_hang": 0.005}


@dataclass(frozen=True)
class Scenario:
    name: str
    endpoint: str  # the config.yaml endpoint the service generates with
    sim: dict[str, Any]  # the embedded endpoint's settings
    n: int
    bound: str  # what the ideal is computed from: "limits", "cap" or "knee"
    service: tuple[str, ...] = ()  # --set overrides below endpoints.<endpoint>.
    notes: list[str] = field(default_factory=list)


SCENARIOS = [
    Scenario(
        "gpt-4o-like", "openai", {"profile": "gpt-4o-like", "start_full": False}, 1000, "limits", LEARN_LIMITS
    ),
    Scenario(
        "gpt-4o-like + faults (2% 5xx, 1% resets, 0.5% hangs)",
        "openai",
        {"profile": "gpt-4o-like", "start_full": False, "faults": FAULTS},
        1000,
        "limits",
        LEARN_LIMITS,
    ),
    # N=2000: at ~28 s per answer the limit's doublings (32 to the 256 cap) take ~3.5 minutes,
    # which at N=600 was half the steady window (mean in flight 0.77 of the cap)
    Scenario("deepseek-like", "deepseek", {"profile": "deepseek-like"}, 2000, "cap"),
    Scenario("vllm-like", "vllm", {"profile": "vllm-like"}, 600, "knee"),
    Scenario(
        "short answers: 3000 RPM, whole answer after a lognormal 0.8 s median",
        "openai",
        {"profile": "fast", "latency_median_s": 0.8, "latency_sigma": 0.5, "rpm": 3000, "start_full": False},
        2000,
        "limits",
        LEARN_LIMITS,
    ),
]


@dataclass
class Poll:
    """One reading during the run: wall time, the service's CPU seconds, the endpoint's counters."""

    at: float
    cpu_s: float
    stats: dict[str, Any]


@dataclass
class RunData:
    """What one scenario's run left: the readings, the acceptance times, the totals."""

    n: int
    wall_s: float
    returncode: int
    polls: list[Poll]
    accepted_at: list[float]
    final: dict[str, Any]
    summary: dict[str, Any]
    cpu_s: float  # the service process's CPU time over its whole life
    peak_rss_mib: float
    problems: int
    console: str
    settings: SimSettings


def own_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` itself, not of its children."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def acceptance_times(run_log: Path) -> list[float]:
    """Wall-clock times of the `sample_accepted` events, in order."""
    times = []
    with run_log.open("rb") as lines:
        for line in lines:
            if b'"sample_accepted"' in line:
                times.append(datetime.fromisoformat(orjson.loads(line)["timestamp"]).timestamp())
    return sorted(times)


def run_scenario(scenario: Scenario, scale: float, n: int, workdir: Path, poll_s: float) -> RunData:
    """Run the service for `n` samples against the scenario's endpoint, reading both as it goes."""
    endpoint = load_config(CONFIG, environ={}).endpoints[scenario.endpoint]
    key = "sk-bench-" + secrets.token_hex(12) if endpoint.api_key_env else None  # vLLM: no key
    sim = {**scenario.sim, "models": [endpoint.model], "api_key": key, "time_scale": scale}
    out = workdir / scenario.endpoint
    sets = [*scenario.service]
    if scale != 1.0:
        sets.append(f"timeout_s={endpoint.timeout_s * scale}")
    env = {**os.environ, **({endpoint.api_key_env: key} if endpoint.api_key_env and key else {})}
    with simulator_process(sim) as url:
        command = [sys.executable, "-m", "service", "run", "--config", str(CONFIG), "-n", str(n)]
        command += ["--out", str(out), "--generator", scenario.endpoint]
        for item in (f"base_url={url}", *sets):
            command += ["--set", f"endpoints.{scenario.endpoint}.{item}"]
        console_path = workdir / f"{scenario.endpoint}.console"
        started = time.time()
        with console_path.open("wb") as console:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT)
        polls = []
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)  # our wait: its rusage is the service's
            if pid:
                break
            polls.append(Poll(time.time(), own_cpu_s(process.pid), sim_stats(url, digests=False)))
            time.sleep(poll_s)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.time() - started
        final = sim_stats(url, digests=False)
    polls.append(Poll(time.time(), usage.ru_utime + usage.ru_stime, final))
    summary_path = out / "summary.json"
    return RunData(
        n=n,
        wall_s=wall,
        returncode=process.returncode,
        polls=polls,
        accepted_at=acceptance_times(out / "run.log") if (out / "run.log").exists() else [],
        final=final,
        summary=orjson.loads(summary_path.read_bytes()) if summary_path.exists() else {},
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,
        problems=len(validate_run(out).problems),
        console=console_path.read_text(errors="replace"),
        settings=SimSettings.from_dict(sim),
    )


def interpolate(polls: list[Poll], at: float, value: Callable[[Poll], float]) -> float:
    """A cumulative reading at time `at`, linear between the polls around it."""
    if at <= polls[0].at:
        return value(polls[0])
    for before, after in itertools.pairwise(polls):
        if before.at <= at <= after.at:
            share = (at - before.at) / (after.at - before.at) if after.at > before.at else 1.0
            return value(before) + share * (value(after) - value(before))
    return value(polls[-1])


def safe_ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def ideal_per_min(scenario: Scenario, data: RunData) -> tuple[float, str]:
    """Accepted samples/min the provider's limits allow, and how it was computed."""
    final = data.final
    limits, answers, tokens = final["limits"], final["answers"], final["tokens"]
    accepted = data.summary["accepted"]
    requests = final["admitted"] / accepted  # per accepted sample
    per = f"/ {requests:.2f} requests per sample"
    if scenario.bound == "cap":
        latency = answers["latency_s"] / answers["complete"]
        return limits["max_concurrent"] / latency * 60 / requests, (
            f"cap {limits['max_concurrent']} / {latency:.1f} s mean latency {per}"
        )
    if scenario.bound == "knee":
        prompt, completion = (
            tokens["prompt"] / answers["generated"],
            tokens["completion"] / answers["generated"],
        )
        at_knee = mean_answer_s(data.settings, prompt, completion, limits["knee"])
        return limits["knee"] / at_knee * 60 / requests, (
            f"knee {limits['knee']} / {at_knee:.1f} s, a {prompt:.0f}+{completion:.0f}-token answer "
            f"in a full batch, {per}"
        )
    bounds = []
    if limits["rpm"]:
        bounds.append((limits["rpm"] / requests, f"RPM {limits['rpm']} {per}"))
    if limits["tpm"]:
        used = tokens["used"] / accepted
        margin = f"{CHARGE_MARGIN} x {used:.0f} tokens used per sample"
        bounds.append((limits["tpm"] / (CHARGE_MARGIN * used), f"TPM {limits['tpm']} / ({margin})"))
    return min(bounds)


@dataclass
class Figures:
    """What `report` prints for one run (see the module docstring)."""

    n: int
    accepted: int
    window: tuple[int, int]  # the steady window: accepted samples, 1-based
    span_s: float
    per_min: float
    ideal: float
    ideal_from: str
    rpm_share: float | None
    charged_per_used: float
    in_flight_mean: float
    in_flight_max: int
    share_429: float
    requests: int
    cpu_ms_steady: float
    cpu_ms_whole: float
    peak_mib: float
    latency_s: float  # mean latency of the answers completed in the window
    cap: int
    knee: int | None
    failed: int
    problems: int
    wall_s: float

    @property
    def ratio(self) -> float:
        return safe_ratio(self.per_min, self.ideal)


def figures(scenario: Scenario, data: RunData) -> Figures:
    final, accepted, times = data.final, data.summary["accepted"], data.accepted_at
    first, last = int(len(times) * STEADY[0]), max(int(len(times) * STEADY[1]) - 1, 0)
    start, end = times[first], times[last]
    span = end - start

    def over_window(value: Callable[[Poll], float]) -> float:
        return interpolate(data.polls, end, value) - interpolate(data.polls, start, value)

    ideal, ideal_from = ideal_per_min(scenario, data)
    rpm = final["limits"]["rpm"]
    window_answers = over_window(lambda p: p.stats["answers"]["complete"])
    return Figures(
        n=data.n,
        accepted=accepted,
        window=(first + 1, last + 1),
        span_s=span,
        per_min=safe_ratio(last - first, span) * 60,
        ideal=ideal,
        ideal_from=ideal_from,
        rpm_share=safe_ratio(over_window(lambda p: p.stats["admitted"]), span) * 60 / rpm if rpm else None,
        charged_per_used=safe_ratio(
            over_window(lambda p: p.stats["tokens"]["charged"]),
            over_window(lambda p: p.stats["tokens"]["used"]),
        ),
        in_flight_mean=safe_ratio(over_window(lambda p: p.stats["in_flight"]["request_seconds"]), span),
        in_flight_max=final["in_flight"]["max"],
        share_429=safe_ratio(final["by_status"].get("429", 0), final["requests"]),
        requests=final["requests"],
        cpu_ms_steady=safe_ratio(over_window(lambda p: p.cpu_s), last - first) * 1000,
        cpu_ms_whole=safe_ratio(data.cpu_s, accepted) * 1000,
        peak_mib=data.peak_rss_mib,
        latency_s=safe_ratio(over_window(lambda p: p.stats["answers"]["latency_s"]), window_answers),
        cap=final["limits"]["max_concurrent"],
        knee=knee(data.settings),
        failed=data.summary.get("failed_requests", 0),
        problems=data.problems,
        wall_s=data.wall_s,
    )


def report(scenario: Scenario, f: Figures) -> str:
    rpm = "-" if f.rpm_share is None else f"{f.rpm_share:.3f}"
    lines = [
        f"  accepted/min {f.per_min:.1f} (steady: samples {f.window[0]}-{f.window[1]} of {f.n}, "
        f"{f.span_s:.0f} s); ideal {f.ideal:.1f} ({f.ideal_from}); ratio {f.ratio:.3f}",
        f"  requests/min / RPM {rpm}; tokens charged / used {f.charged_per_used:.2f}; in flight mean "
        f"{f.in_flight_mean:.1f}, max {f.in_flight_max}; 429s {f.share_429:.2%} of {f.requests} requests",
        f"  service CPU per accepted sample {f.cpu_ms_steady:.1f} ms steady ({f.cpu_ms_whole:.1f} ms over "
        f"the whole process); peak memory {f.peak_mib:.0f} MiB",
    ]
    if scenario.bound == "cap":
        lines.append(f"  mean in flight / cap {f.in_flight_mean / f.cap:.3f} (cap {f.cap})")
    if scenario.bound == "knee":
        lines.append(
            f"  knee {f.knee}; the service settled at {f.in_flight_mean:.1f} in flight, "
            f"latency {f.latency_s:.1f} s"
        )
    lines.append(
        f"  outcome: {f.accepted} of {f.n} accepted, {f.failed} failed, validate: {f.problems} problems; "
        f"wall {f.wall_s:.0f} s"
    )
    return "\n".join(lines)


def table_row(scenario: Scenario, f: Figures) -> str:
    """One markdown row for the README's table."""
    rpm = "-" if f.rpm_share is None else f"{f.rpm_share:.2f}"
    extra = ""
    if scenario.bound == "cap":
        extra = f"in flight / cap {f.in_flight_mean / f.cap:.2f}"
    elif scenario.bound == "knee":
        extra = f"knee {f.knee}, settled at {f.in_flight_mean:.0f}, latency {f.latency_s:.0f} s"
    return (
        f"| {scenario.name} (N={f.n}) | {f.per_min:.1f} | {f.ideal:.1f} | {f.ratio:.2f} | {rpm} | "
        f"{f.charged_per_used:.2f} | {f.in_flight_mean:.0f} / {f.in_flight_max} | {f.share_429:.1%} | "
        f"{f.cpu_ms_steady:.0f} ({f.cpu_ms_whole:.0f}) | {f.peak_mib:.0f} | {extra} |"
    )


TABLE_HEAD = (
    "| scenario | accepted/min | ideal | ratio | req/min ÷ RPM | charged ÷ used | in flight mean / max "
    "| 429s | CPU ms/accepted steady (whole) | peak MiB | |\n" + "|---" * 11 + "|"
)


def main(argv: list[str]) -> None:
    """Run every scenario (or those whose name contains one of the names given)."""
    parser = argparse.ArgumentParser(prog="python -m bench.providers")
    parser.add_argument("--quick", action="store_true", help=f"time_scale {QUICK_SCALE}, N={QUICK_N}")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    scale = QUICK_SCALE if args.quick else 1.0
    chosen = [s for s in SCENARIOS if not args.names or any(name in s.name for name in args.names)]
    print(
        "The whole service (config.yaml) against the embedded endpoint's provider profiles, "
        f"time_scale {scale}; steady state: from the {STEADY[0]:.0%} to the {STEADY[1]:.0%} accepted sample.",
        flush=True,
    )
    rows = []
    for scenario in chosen:
        n = QUICK_N if args.quick else scenario.n
        print(f"\n{scenario.name}: endpoint {scenario.endpoint!r}, N={n}", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            data = run_scenario(scenario, scale, n, Path(folder), poll_s=0.25 if args.quick else 1.0)
        if data.returncode != 0 or len(data.accepted_at) < 3 or not data.summary:
            print(f"  FAILED: the service exited with {data.returncode}:\n{data.console[-2000:]}", flush=True)
            continue
        f = figures(scenario, data)
        print(report(scenario, f), flush=True)
        rows.append(table_row(scenario, f))
    print("\n" + TABLE_HEAD + "\n" + "\n".join(rows), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
