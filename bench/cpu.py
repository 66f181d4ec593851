"""`make bench SECTIONS=cpu`: CPU per accepted sample of the service process, and CPU per
request of the embedded endpoint beside it, on a default run (`config.yaml`, embedded `local`
endpoint, local embedders, exact index).

The service runs as `make run` runs it, in a child process; the kernel's accounting of that
process is read from /proc while it runs. The embedded endpoint is the service's child: its CPU
reaches the service's `cutime`/`cstime` when the service reaps it, so the service's own CPU is
its reaped total minus its children's. The breakdown splits the service's CPU between its main
thread (the event loop: requests, rules, store, metrics, logs) and its other threads (the
embedders and index searches), as last seen before the process exits.

`--quick` runs a small N (the suite runs it); `--n` picks another; `--keep DIR` keeps the run
directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
POLL_S = 0.2


def _stat(path: str) -> list[str] | None:
    """The fields of a /proc stat file after the command name (None once it is gone)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


@dataclass
class ProcessWatch:
    """The last figures /proc showed for the service process and its threads."""

    pid: int
    main_thread_s: float = 0.0
    threads_s: dict[int, float] = field(default_factory=dict)
    children_s: float = 0.0
    peak_rss_mib: float = 0.0
    endpoint_rss_mib: float = 0.0

    def poll(self) -> None:
        fields = _stat(f"/proc/{self.pid}/stat")
        if fields is None:
            return
        self.children_s = max(self.children_s, (int(fields[13]) + int(fields[14])) / TICKS)
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.pid}/task")]
        except OSError:
            return
        for tid in tids:
            task = _stat(f"/proc/{self.pid}/task/{tid}/stat")
            if task is None:
                continue
            seconds = (int(task[11]) + int(task[12])) / TICKS
            if tid == self.pid:
                self.main_thread_s = seconds
            else:
                self.threads_s[tid] = seconds
        self.peak_rss_mib = max(self.peak_rss_mib, _hwm_mib(self.pid))
        for child in _children(self.pid):
            self.endpoint_rss_mib = max(self.endpoint_rss_mib, _hwm_mib(child))


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _hwm_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class CpuFigures:
    accepted: int
    requests: int
    wall_s: float
    service_cpu_s: float
    main_thread_s: float
    other_threads_s: float
    endpoint_cpu_s: float
    peak_rss_mib: float
    endpoint_rss_mib: float

    @property
    def ms_per_accepted(self) -> float:
        return 1000 * self.service_cpu_s / max(self.accepted, 1)

    @property
    def endpoint_ms_per_request(self) -> float:
        return 1000 * self.endpoint_cpu_s / max(self.requests, 1)


def measure(n: int, out: Path, extra: list[str] | None = None) -> CpuFigures:
    """Run `python -m service run -n N --out OUT` (default config) and account its CPU."""
    command = [sys.executable, "-m", "service", "run", "-n", str(n), "--out", str(out), *(extra or [])]
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = ProcessWatch(proc.pid)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(POLL_S):
            watch.poll()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    stop.set()
    poller.join()
    if proc.returncode != 0:
        raise RuntimeError(f"service run exited {proc.returncode}: {errors.decode(errors='replace')[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    requests = sum(summary["this_process"]["requests"].values())
    total = usage.ru_utime + usage.ru_stime  # the service and the endpoint it reaped
    service = total - watch.children_s
    return CpuFigures(
        accepted=summary["this_process"]["accepted"],
        requests=requests,
        wall_s=wall,
        service_cpu_s=service,
        main_thread_s=watch.main_thread_s,
        other_threads_s=max(0.0, service - watch.main_thread_s),
        endpoint_cpu_s=watch.children_s,
        peak_rss_mib=max(watch.peak_rss_mib, summary["this_process"]["peak_rss_mib"]),
        endpoint_rss_mib=watch.endpoint_rss_mib,
    )


def report(figures: CpuFigures, n: int) -> None:
    f = figures
    print(f"default run, N={n}: {f.accepted} accepted, {f.requests} requests, {f.wall_s:.1f} s wall")
    print(
        f"  service CPU per accepted sample: {f.ms_per_accepted:.1f} ms "
        f"({f.service_cpu_s:.1f} s: main thread {f.main_thread_s:.1f} s, "
        f"other threads (embedders, search) {f.other_threads_s:.1f} s)"
    )
    print(
        f"  embedded endpoint CPU per request: {f.endpoint_ms_per_request:.2f} ms "
        f"({f.endpoint_cpu_s:.1f} s; {f.requests / max(f.accepted, 1):.2f} requests per accepted sample)"
    )
    print(f"  peak RSS: service {f.peak_rss_mib:.0f} MiB, endpoint {f.endpoint_rss_mib:.0f} MiB")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1500, help="accepted samples (default 1500)")
    parser.add_argument("--quick", action="store_true", help="a small run (N=60), for the test suite")
    parser.add_argument("--keep", type=Path, help="run directory to keep (default: a temporary one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)
    n = 60 if args.quick else args.n
    extra = [arg for item in args.set for arg in ("--set", item)]
    if args.keep is not None:
        report(measure(n, args.keep, extra), n)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        report(measure(n, Path(tmp) / "run", extra), n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
