"""`make bench SECTIONS=cluster`: the run on Ray workers (`--workers K`, `service/cluster`).

1. Scale-out on the CPU-bound profile: the default config (embedded `local` endpoint, `fast`:
   ~50 ms answers, no limits that bind), one process, then 1 and 2 workers on a local cluster
   the run starts. Accepted/min and the CPU of every process of the run's tree (driver,
   workers, endpoint, Ray's own), both over the steady window between 25% and 85% of the target
   accepted. The speed-up of 2 workers over 1, and its bound on this machine: its cores divided
   by the cores the 1-worker run used (the endpoint and the driver share the machine).
2. One key shared by 2 workers: an endpoint limited to R requests per minute, enforced over one
   second, that a run learns from its `x-ratelimit-*` headers (and, in full mode, one told the
   limit in config). Requests the endpoint took on per minute over the run / R, and the share
   answered 429.
3. The store, the driver's single writer: CPU per answer stored the way the driver stores a
   worker's report (one transaction per report) against one transaction per answer, as a share
   of one core at 10,000 and 30,000 requests a minute; and the whole driver's cores per 10,000
   requests a minute, from the 2-worker run.

`--quick` runs it scaled down (the suite runs it).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.cpu import TICKS, _stat
from llm import Answer
from service.store import Store
from simulator.process import sim_stats, simulator_process

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.2
WINDOW = (0.25, 0.85)  # of the target accepted: the steady part of a run
KINDS = ("driver", "workers", "endpoint", "ray")


@dataclass(frozen=True)
class ScaleFigures:
    workers: int
    accepted_per_min: float
    cores: dict[str, float]  # by kind, over the window
    accepted: int
    requests_per_min: float

    @property
    def total_cores(self) -> float:
        return sum(self.cores.values())

    def ms_per_accepted(self, *kinds: str) -> float:
        return 1000 * sum(self.cores[k] for k in kinds) * 60 / max(self.accepted_per_min, 1e-9)


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds so far of every live process under `root` (itself included), by kind."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(f"/proc/{entry}/stat")
            if fields is not None:
                parent[int(entry)] = int(fields[1])
    members, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, p in parent.items() if p == pid and child not in members]
        members.update(children)
        frontier.extend(children)
    seconds: Counter[str] = Counter()
    for pid in members:
        fields = _stat(f"/proc/{pid}/stat")
        if fields is None:
            continue
        seconds[_kind(pid, root)] += (int(fields[11]) + int(fields[12])) / TICKS
    return {kind: seconds[kind] for kind in KINDS}


def _kind(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "ray"
    if "-m simulator" in command:
        return "endpoint"
    return "workers" if "SampleWorker" in command else "ray"


def accepted_so_far(out: Path) -> int:
    return _count(out, "SELECT COUNT(*) FROM samples WHERE state = 'accepted'")


def requests_so_far(out: Path) -> int:
    return _count(out, "SELECT COUNT(*) FROM responses")


def _count(out: Path, query: str) -> int:
    """A count from a running run's store (0 while it is being created)."""
    try:
        with sqlite3.connect(f"file:{out / 'state.sqlite'}?mode=ro", uri=True, timeout=1) as db:
            return db.execute(query).fetchone()[0]
    except sqlite3.Error:
        return 0


def scale_run(n: int, workers: int, out: Path) -> ScaleFigures:
    """`python -m service run` (default config) with `workers` Ray workers (0: one process)."""
    command = [sys.executable, "-m", "service", "run", "-n", str(n), "--out", str(out)]
    if workers:
        command += ["--workers", str(workers)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marks: list[tuple[float, int, int, dict[str, float]]] = []  # time, accepted, answers, cpu
    for fraction in WINDOW:
        while (accepted := accepted_so_far(out)) < fraction * n and proc.poll() is None:
            time.sleep(POLL_S)
        marks.append((time.monotonic(), accepted, requests_so_far(out), tree_cpu(proc.pid)))
    _, errors = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"service run exited {proc.returncode}: {errors.decode(errors='replace')[-2000:]}")
    (t0, a0, r0, c0), (t1, a1, r1, c1) = marks
    seconds = max(t1 - t0, 1e-9)
    cores = {kind: (c1[kind] - c0[kind]) / seconds for kind in KINDS}
    return ScaleFigures(workers, (a1 - a0) / seconds * 60, cores, a1 - a0, (r1 - r0) / seconds * 60)


def scale_out(n: int, work: Path, one_process: bool) -> tuple[list[ScaleFigures], float]:
    runs = [
        scale_run(n, workers, work / f"scale-{workers}") for workers in ((0,) if one_process else ()) + (1, 2)
    ]
    print(
        f"scale-out, default config (embedded endpoint `fast`: ~50 ms answers, no limit that binds), "
        f"N={n}, steady window {WINDOW[0]:.0%}-{WINDOW[1]:.0%} of the target accepted:"
    )
    print(
        "  workers        accepted/min  requests/min  cores: driver  workers  endpoint  ray   total"
        "  ms CPU/accepted"
    )
    for run in runs:
        label = "one process" if run.workers == 0 else f"{run.workers}"
        c = run.cores
        print(
            f"  {label:<14} {run.accepted_per_min:>12.0f}  {run.requests_per_min:>12.0f}  "
            f"{c['driver']:>13.2f}  {c['workers']:>7.2f}  {c['endpoint']:>8.2f}  {c['ray']:>4.2f}  "
            f"{run.total_cores:>5.2f}  {run.ms_per_accepted('driver', 'workers'):>6.1f} service, "
            f"{run.ms_per_accepted('endpoint'):.1f} endpoint"
        )
    one, two = runs[-2], runs[-1]
    speedup = two.accepted_per_min / max(one.accepted_per_min, 1e-9)
    cores = os.cpu_count() or 1
    print(
        f"  speed-up, 2 workers over 1: {speedup:.2f}x "
        f"(accepted/min {two.accepted_per_min:.0f} / {one.accepted_per_min:.0f})"
    )
    print(
        f"  bound on this machine: {cores} cores / {one.total_cores:.2f} cores used by the 1-worker run "
        f"= {cores / max(one.total_cores, 1e-9):.2f}x (of which the endpoint {one.cores['endpoint']:.2f}, "
        f"the driver {one.cores['driver']:.2f})"
    )
    return runs, speedup


def shared_limit(rpm: int, n: int, work: Path, told: bool) -> tuple[float, float]:
    """Two workers against one key of `rpm` (enforced over 1 s): requests per minute / rpm and
    the 429 share, learned from headers (or `told` in config)."""
    settings = {"profile": "fast", "rpm": rpm, "burst_s": 1.0, "faults": {"p_5xx": 0.0, "p_reset": 0.0}}
    out = work / f"limit-{'told' if told else 'learned'}"
    with simulator_process(settings) as url:
        config = yaml.safe_load((ROOT / "config.yaml").read_text())
        limits = {"rpm": rpm} if told else {}
        config["endpoints"] = {"key": {"base_url": url, "model": "sim-gpt-4o", "limits": limits}}
        config["generator"] = "key"
        path = work / f"config-{'told' if told else 'learned'}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        command = [
            sys.executable,
            "-m",
            "service",
            "run",
            "--config",
            str(path),
            "-n",
            str(n),
            "--out",
            str(out),
        ]
        admitted: list[tuple[float, int]] = []
        proc = subprocess.Popen(
            [*command, "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        while proc.poll() is None:
            admitted.append((time.monotonic(), sim_stats(url, digests=False)["admitted"]))
            time.sleep(0.5)
        _, errors = proc.communicate()
        stats = sim_stats(url, digests=False)
    if proc.returncode != 0:
        raise RuntimeError(f"service run exited {proc.returncode}: {errors.decode(errors='replace')[-2000:]}")
    ratio = steady_rate(admitted) / rpm
    refused = stats["by_status"].get("429", 0) / max(stats["requests"], 1)
    how = "told in config" if told else "learned from headers"
    print(
        f"shared key, 2 workers, {rpm} RPM enforced over 1 s ({how}), N={n}: "
        f"{ratio:.3f} of the RPM limit (steady rate), 429: {refused:.2%} of {stats['requests']} requests"
    )
    return ratio, refused


def steady_rate(counts: list[tuple[float, int]]) -> float:
    """Per minute, of a running count polled over time: its slope between 10% and 90% of the
    time it rose (the first wave of a run and its tail are not the rate it holds)."""
    rising = [(t, c) for t, c in counts if 0 < c < counts[-1][1]] or counts
    start, end = rising[0][0], rising[-1][0]
    inner = [(t, c) for t, c in rising if start + 0.1 * (end - start) <= t <= end - 0.1 * (end - start)]
    (t0, c0), (t1, c1) = (inner[0], inner[-1]) if len(inner) > 1 else (rising[0], rising[-1])
    return (c1 - c0) / max(t1 - t0, 1e-9) * 60


def store_cost(answers: int, work: Path) -> None:
    """CPU per answer of the driver's store: in reports (one transaction each), as the driver
    stores a worker's, against one transaction per answer; with a sample's lookup per 3.4."""
    content = "x" * 3000  # about a trajectory answer
    usage = {"prompt_tokens": 2500, "completion_tokens": 800, "total_tokens": 3300}
    report_size = 8  # a worker's answers per 50 ms report at ~10,000 requests/min over 2 workers
    figures = {}
    for way in ("report", "answer"):
        store = Store(work / f"store-{way}.sqlite")
        start = time.process_time()
        for first in range(0, answers, report_size):
            batch = [
                (
                    f"{way}-{i}",
                    Answer(content, "stop", usage, "m", "e", 0.01, stage="trajectory"),
                    f"s{i // 4}",
                )
                for i in range(first, min(first + report_size, answers))
            ]
            if way == "report":
                store.put_responses(batch)
            else:
                for key, answer, sample in batch:
                    store.put_response(key, answer, sample)
            for _, _, sample in batch[::4]:
                store.responses_of(sample)  # the driver's lookup when it hands a sample over
        figures[way] = (time.process_time() - start) / answers
        store.close()
    for way, seconds in figures.items():
        label = (
            f"in reports of {report_size} (one transaction each)"
            if way == "report"
            else "one transaction per answer"
        )
        print(
            f"store, {answers} answers of 3 KB {label}: {seconds * 1e6:.0f} µs CPU per answer, "
            f"{seconds * 10_000 / 60:.1%} of a core at 10,000 requests/min, "
            f"{seconds * 30_000 / 60:.1%} at 30,000"
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench cluster")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n = 200 if args.quick else 4000
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        runs, _ = scale_out(n, work, one_process=not args.quick)
        two = runs[-1]
        print(
            f"driver (store, admission, dedup index, recorder, metrics) in the 2-worker run: "
            f"{two.cores['driver']:.2f} cores at {two.requests_per_min:.0f} requests/min = "
            f"{two.cores['driver'] * 10_000 / max(two.requests_per_min, 1):.2f} cores per 10,000 requests/min"
        )
        shared_limit(1200 if args.quick else 3000, 40 if args.quick else 1500, work, told=False)
        if not args.quick:
            shared_limit(3000, 1500, work, told=True)
        store_cost(1000 if args.quick else 40_000, work)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
