"""`make bench SECTIONS="providers hangs"` in quick mode (time compressed, N=20): every
scenario runs the whole service to its N samples and prints figures that are numbers in
their range; the hang checks print their outcome. No performance thresholds: the figures
themselves belong to `make bench`."""

from __future__ import annotations

import math
import re
import subprocess
import sys

from bench.hangs import CHECKS
from bench.providers import QUICK_N, SCENARIOS
from tests.conftest import ROOT

NUMBER = r"(\d+(?:\.\d+)?)"


def test_providers_and_hangs_quick_modes_print_sane_figures() -> None:
    runs = {
        section: subprocess.Popen(
            [sys.executable, "-m", f"bench.{section}", "--quick"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for section in ("providers", "hangs")
    }
    out = {section: run.communicate(timeout=600)[0] for section, run in runs.items()}
    assert all(run.returncode == 0 for run in runs.values()), out

    providers = out["providers"]
    assert "FAILED" not in providers
    blocks = providers.split("\n\n")
    for scenario in SCENARIOS:
        block = next(b for b in blocks if b.startswith(f"{scenario.name}:"))
        assert f"outcome: {QUICK_N} of {QUICK_N} accepted, 0 failed, validate: 0 problems" in block
        per_min, ideal, ratio = map(
            float, re.search(rf"accepted/min {NUMBER} .*ideal {NUMBER} .*ratio {NUMBER}", block).groups()
        )
        assert per_min > 0 and ideal > 0 and math.isclose(ratio, per_min / ideal, rel_tol=0.01, abs_tol=0.001)
        charged = float(re.search(rf"tokens charged / used {NUMBER}", block)[1])
        # a number: over the quick mode's window of a second or two, requests admitted before it
        # and answered in it (used, not charged) make the ratio noise; at real time it is >= 1
        assert charged > 0
        mean, most = map(float, re.search(rf"in flight mean {NUMBER}, max {NUMBER}", block).groups())
        assert 0 < mean <= most
        assert 0 <= float(re.search(rf"429s {NUMBER}%", block)[1]) <= 100
        steady, whole = map(float, re.search(rf"sample {NUMBER} ms steady \({NUMBER} ms", block).groups())
        assert steady > 0 and whole > 0 and float(re.search(rf"peak memory {NUMBER} MiB", block)[1]) > 0
        rpm = re.search(r"requests/min / RPM (\S+);", block)[1]
        assert (rpm == "-") == (scenario.bound != "limits") and (rpm == "-" or float(rpm) > 0)
        if scenario.bound == "cap":
            assert 0 < float(re.search(rf"mean in flight / cap {NUMBER}", block)[1]) <= 1
        if scenario.bound == "knee":
            assert re.search(
                rf"knee 256; the service settled at {NUMBER} in flight, latency {NUMBER} s", block
            )
    assert providers.count("\n| ") == len(SCENARIOS) + 1  # the markdown table: head and one row each

    lines = out["hangs"].splitlines()
    for check in CHECKS:
        line = next(line for line in lines if line.startswith(f"{check.name} ("))
        if check.hang:
            assert re.search(rf"given up after {NUMBER} s of silence", line), line
        else:
            assert re.search(r"(arrived after .* with \d+ completion tokens|failed after)", line), line
        assert re.search(r"\(target: .*: (met|missed)\)$", line), line
