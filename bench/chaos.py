"""`make chaos` (`python -m bench.chaos [--n 500] [--kills 10] [--seed 0]`): the crash loop
and the fault storm of the reliability issue, with their figures.

Crash loop: `agentrefine run` with the shipped config.yaml is killed with SIGKILL at
`--kills` moments drawn from `--seed` (one in each equal slice of the run, after a random
extra delay, so kills land mid-request, mid-commit and mid-write) and started again each
time, until it finishes. The endpoint is the simulator with the embedded endpoint's
settings from config.yaml (faults off, so every request is counted once), run as one
standalone process (`base_url`) so that one process counts every request of every
attempt; an embedded one would restart, and forget, with each attempt. Requests in flight
at a kill = requests the endpoint received during that attempt minus answers the store
kept. Then an uninterrupted run of the same seed against a fresh endpoint, for comparison.

Fault storm: the shipped config, its embedded endpoint started by the service itself,
with 3% 5xx, 2% resets, 1% hangs and 2% truncated bodies at once (timeout 10 s, hang 60 s).

`--quick` (the `chaos` section of `python -m bench --quick`, run by the test suite): N=20,
2 kills, and a fault storm of N=10 with every fault three times as likely and a 2 s timeout.

Exit status 0 when every check holds (exactly N accepted, no duplicate id or persona,
`agentrefine validate` clean, no stored answer sent again, requests sent twice no more than
were in flight at the kills), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from dedup.exact import text_hash
from llm import Limits
from simulator.process import sim_stats, simulator_process

ROOT = Path(__file__).resolve().parents[1]
ENDPOINT = "local"  # the config.yaml endpoint whose embedded settings the crash loop uses
STORM_FAULTS = {"p_5xx": 0.03, "p_reset": 0.02, "p_hang": 0.01, "p_truncated_body": 0.02, "hang_s": 60}
QUICK_STORM = {"p_5xx": 0.09, "p_reset": 0.06, "p_hang": 0.03, "p_truncated_body": 0.06, "hang_s": 30}
POLL_S = 0.02


@dataclass(frozen=True)
class Attempt:
    """One start of the run: how far it got and what it sent."""

    killed_at: int | None  # accepted samples when killed; None: it finished by itself
    sent: int  # requests the endpoint received during this attempt
    stored: int  # answers the store kept from this attempt

    @property
    def in_flight(self) -> int:
        """Requests sent whose answer was not stored: in flight at the kill."""
        return self.sent - self.stored


@dataclass
class CrashReport:
    n: int
    max_concurrency: int
    attempts: list[Attempt] = field(default_factory=list)
    sent_total: int = 0
    sent_twice: int = 0  # requests whose body the endpoint had received before
    stored_then_resent: int = 0  # answers stored before a kill whose request was sent again
    sent_uninterrupted: int = 0
    distinct_uninterrupted: int = 0  # request bodies the uninterrupted run sent
    accepted: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    validate_output: str = ""
    validate_ok: bool = False

    @property
    def kills(self) -> list[Attempt]:
        return [a for a in self.attempts if a.killed_at is not None]

    @property
    def in_flight_at_kills(self) -> int:
        return sum(a.in_flight for a in self.kills)

    def problems(self) -> list[str]:
        ids = Counter(s["id"] for s in self.samples)
        personas = Counter(text_hash(s["persona"]) for s in self.samples)
        checks = {
            f"accepted {self.accepted} != {self.n}": self.accepted != self.n,
            f"{len(self.samples)} sample lines != {self.n}": len(self.samples) != self.n,
            "duplicate ids": any(n > 1 for n in ids.values()),
            "duplicate personas": any(n > 1 for n in personas.values()),
            f"validate failed: {self.validate_output}": not self.validate_ok,
            f"{self.stored_then_resent} stored answers sent again": self.stored_then_resent > 0,
            "more requests sent twice than were in flight at the kills": (
                self.sent_twice > self.in_flight_at_kills
            ),
            "in flight above max_concurrency": any(a.in_flight > self.max_concurrency for a in self.kills),
        }
        return [problem for problem, failed in checks.items() if failed]


def crash_loop(work: Path, n: int, kills: int, seed: int, max_delay_s: float = 0.3) -> CrashReport:
    """Kill and resume a run of `n` until it finishes; then an uninterrupted run to compare."""
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text())
    sim = {**shipped["endpoints"][ENDPOINT]["embedded"], "faults": {}, "rpm": 0, "tpm": 0}
    ceiling = shipped["endpoints"][ENDPOINT]["limits"].get("max_concurrency", Limits().max_concurrency)
    report = CrashReport(n, ceiling)
    rng = random.Random(seed)
    # one kill in each of `kills` equal slices of the first kills/(kills+1) of the run
    thresholds = [int((i + rng.random()) * n / (kills + 1)) for i in range(kills)]
    out = work / "crash"
    with simulator_process(sim) as url:
        args = _run_args(_standalone_config(work / "crash.yaml", shipped, url), out, n)
        stored_before: dict[str, int] = {}  # stored key -> times received when it was stored
        for threshold in [*thresholds, None]:
            before, kept_before = sim_stats(url)["requests"], _stored(out)
            killed_at = _attempt(args, out, threshold, rng.uniform(0, max_delay_s))
            stats, kept = sim_stats(url), _stored(out)
            sent, stored = stats["requests"] - before, len(kept) - len(kept_before)
            report.attempts.append(Attempt(killed_at, sent, stored))
            received = stats["received"]
            stored_before.update({key: received[key] for key in kept.difference(stored_before)})
            if killed_at is None:
                break
        final = sim_stats(url)
    report.sent_total = final["requests"]
    report.sent_twice = sum(count - 1 for count in final["received"].values())
    report.stored_then_resent = sum(final["received"][key] != seen for key, seen in stored_before.items())
    report.accepted = _accepted(out)
    shards = sorted(out.glob("samples-*.jsonl"))
    report.samples = [orjson.loads(line) for shard in shards for line in shard.read_bytes().splitlines()]
    check = _cli("validate", str(out))
    report.validate_ok, report.validate_output = check.returncode == 0, check.stdout.strip().splitlines()[-1]
    with simulator_process(sim) as url:
        clean = _run_args(_standalone_config(work / "clean.yaml", shipped, url), work / "clean", n)
        _cli(*clean, check=True)
        clean_stats = sim_stats(url)
        report.sent_uninterrupted = clean_stats["requests"]
        report.distinct_uninterrupted = len(clean_stats["received"])
    return report


def fault_storm(
    work: Path, n: int, faults: dict[str, float] = STORM_FAULTS, timeout_s: float = 10.0
) -> tuple[dict[str, Any], str]:
    """A run of `n` on the shipped config's embedded endpoint with `faults` injected (and a
    client timeout of `timeout_s`); returns its summary and `agentrefine validate`'s last
    line (raises if the run fails)."""
    out = work / "storm"
    overrides = [
        f"endpoints.{ENDPOINT}.embedded.faults={orjson.dumps(faults).decode()}",
        f"endpoints.{ENDPOINT}.timeout_s={timeout_s}",
    ]
    _cli(*_run_args(ROOT / "config.yaml", out, n), *(f"--set={o}" for o in overrides), check=True)
    summary = orjson.loads((out / "summary.json").read_bytes())
    check = _cli("validate", str(out))
    return summary, check.stdout.strip().splitlines()[-1] + ("" if check.returncode == 0 else " (FAILED)")


def _attempt(args: list[str], out: Path, threshold: int | None, delay_s: float) -> int | None:
    """Start the run; SIGKILL it `delay_s` after `threshold` samples are accepted. Returns the
    accepted count at the kill, or None when it finished first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if threshold is None:
        proc.wait()
        return None
    while proc.poll() is None and _accepted(out) < threshold:
        time.sleep(POLL_S)
    time.sleep(delay_s)
    if proc.poll() is not None:
        return None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return _accepted(out)


def _accepted(out: Path) -> int:
    try:
        with sqlite3.connect(f"file:{out / 'state.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COALESCE(MAX(accepted_seq), 0) FROM samples").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _stored(out: Path) -> set[str]:
    if not (out / "state.sqlite").exists():
        return set()
    with sqlite3.connect(out / "state.sqlite") as db:
        return {key for (key,) in db.execute("SELECT key FROM responses")}


def _standalone_config(path: Path, shipped: dict[str, Any], url: str) -> Path:
    """The shipped config with its embedded endpoint replaced by the standalone one at `url`."""
    endpoint = {k: v for k, v in shipped["endpoints"][ENDPOINT].items() if k != "embedded"}
    config = {**shipped, "generator": ENDPOINT, "endpoints": {ENDPOINT: {**endpoint, "base_url": url}}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run_args(config: Path, out: Path, n: int) -> list[str]:
    return ["run", "--config", str(config), "-n", str(n), "--out", str(out)]


def _cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "service", *args], cwd=ROOT, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"agentrefine {args[0]} failed: {result.stderr.strip()}")
    return result


def print_crash_report(report: CrashReport) -> None:
    print(f"crash loop: N={report.n}, {len(report.kills)} SIGKILLs, then resumed each time")
    print("  attempt  killed at accepted  requests sent  answers stored  in flight at the kill")
    for number, a in enumerate(report.attempts, 1):
        at = "finished" if a.killed_at is None else str(a.killed_at)
        flight = "-" if a.killed_at is None else str(a.in_flight)
        print(f"  {number:>7}  {at:>18}  {a.sent:>13}  {a.stored:>14}  {flight:>21}")
    difference = report.sent_total - report.sent_uninterrupted
    tail = report.sent_total - report.sent_twice - report.distinct_uninterrupted
    print(
        f"requests sent: crash loop {report.sent_total}, uninterrupted run of the same seed "
        f"{report.sent_uninterrupted}, difference {difference:+d} = {report.sent_twice} sent twice "
        f"{tail:+d} distinct bodies (which samples were in flight when the target was reached)"
    )
    print(
        f"requests sent twice (same body): {report.sent_twice}; in flight at the kills: "
        f"{report.in_flight_at_kills} in all, at most {max((a.in_flight for a in report.kills), default=0)} "
        f"at one (max_concurrency {report.max_concurrency}); stored answers sent again: "
        f"{report.stored_then_resent}"
    )
    ids = len({s["id"] for s in report.samples})
    personas = len({text_hash(s["persona"]) for s in report.samples})
    print(
        f"result: {report.accepted} accepted, {len(report.samples)} lines, "
        f"{len(report.samples) - ids} duplicate ids, {len(report.samples) - personas} duplicate personas; "
        f"validate: {report.validate_output}"
    )


def print_storm(summary: dict[str, Any], validation: str, faults: dict[str, float]) -> None:
    shown = ", ".join(f"{k} {v:g}" for k, v in faults.items())
    process = summary["this_process"]
    print(f"fault storm ({shown}): {summary['result']}, {summary['accepted']} accepted")
    print(f"  requests by outcome: {dict(sorted(process['requests'].items()))}")
    print(f"  samples failed (endpoint gave up): {summary['failed_requests']}; wall {process['wall_s']} s")
    print(f"  validate: {validation}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="N=20, 2 kills, a storm of 10: seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.kills = 20, 2
    storm_n, faults, timeout_s = (10, QUICK_STORM, 2.0) if args.quick else (args.n, STORM_FAULTS, 10.0)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        started = time.monotonic()
        report = crash_loop(Path(tmp), args.n, args.kills, args.seed, max_delay_s=0.1 if args.quick else 0.3)
        print_crash_report(report)
        print(f"  ({time.monotonic() - started:.0f} s)\n")
        summary, validation = fault_storm(Path(tmp), storm_n, faults, timeout_s)
        print_storm(summary, validation, faults)
    problems = report.problems()
    if summary["accepted"] != storm_n or "(FAILED)" in validation:
        problems.append("fault storm did not end with N valid samples")
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
