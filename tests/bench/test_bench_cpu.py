"""`make bench SECTIONS=cpu` in its quick mode: a real default run whose CPU is accounted from
/proc and printed (figures only; the suite asserts no threshold on them)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_quick_cpu_section_prints_the_service_and_endpoint_figures() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.cpu", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    accepted = re.search(r"N=(\d+): (\d+) accepted, (\d+) requests", out)
    assert accepted is not None, out
    assert int(accepted.group(2)) == int(accepted.group(1))  # the run reached its target
    per_sample = re.search(
        r"service CPU per accepted sample: ([\d.]+) ms \(([\d.]+) s: main thread ([\d.]+) s", out
    )
    per_request = re.search(r"embedded endpoint CPU per request: ([\d.]+) ms", out)
    assert per_sample is not None and per_request is not None, out
    assert float(per_sample.group(1)) > 0 and float(per_request.group(1)) > 0
    assert float(per_sample.group(3)) <= float(per_sample.group(2))  # the main thread is part of the whole
    assert re.search(r"peak RSS: service \d+ MiB, endpoint \d+ MiB", out), out
