"""Every `make bench` section runs in its quick mode and prints its figures, so no section
can rot unnoticed (no thresholds: the figures of a shared machine are not asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import SECTIONS
from tests.conftest import ROOT

NUMBER = r"[\d.]+"
# the figures each section must print: a section added to bench/__main__.py needs an entry
FIGURES: dict[str, list[str]] = {
    "throughput": [
        rf"ours +{NUMBER} +{NUMBER}% +{NUMBER} +{NUMBER} +150 ok, 0 failed",
        rf"naive +{NUMBER} +{NUMBER}% +{NUMBER} +{NUMBER} +\d+ ok",
    ],
    "dedup": [
        rf"embed persona \(~35 words\): +{NUMBER} texts/s wall, +{NUMBER} texts per CPU-second",
        rf"labelled persona \(\d+\): threshold 0.88: recall {NUMBER}",
        rf"event loop, requests \+ embedding: lag p50 +{NUMBER} ms, p99 +{NUMBER} ms",
        rf"4k stream, exact \(flat\): +{NUMBER} us/item search\+add",
        rf"16k fill, ivf nlist \d+ nprobe \d+: +{NUMBER} us/item",
    ],
    "metrics": [
        rf"request event: {NUMBER} µs CPU",
        rf"scrape: {NUMBER} ms CPU, \d+ series",
        rf"report of 100 samples / 300 answers: {NUMBER} s CPU",
    ],
    "concurrency": [
        rf"gpt-4o-like: .* +\d+ +\d+ +{NUMBER} +{NUMBER}% +\d+ +{NUMBER} of the RPM limit",
        rf"deepseek-like: .*cap 50.* +\d+ +50 +{NUMBER} +{NUMBER}%",
        rf"vllm-like: .* +\d+ +\d+ +{NUMBER} +{NUMBER}% +\d+ +{NUMBER} of the knee's tokens/s",
        r"memory: N=300, .*: 300 accepted in",
    ],
    "cluster": [
        rf"  1 +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} service",
        rf"  2 +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} service",
        rf"speed-up, 2 workers over 1: {NUMBER}x",
        rf"bound on this machine: \d+ cores / {NUMBER} cores used by the 1-worker run",
        rf"{NUMBER} cores per 10,000 requests/min",
        rf"shared key, 2 workers, 1200 RPM .*: {NUMBER} of the RPM limit \(steady rate\), 429: {NUMBER}%",
        rf"in reports of 8 \(one transaction each\): {NUMBER} µs CPU per answer",
    ],
    "chaos": [
        r"crash loop: N=20, 2 SIGKILLs, then resumed each time",
        r"requests sent twice \(same body\): \d+; in flight at the kills: \d+ in all",
        r"result: 20 accepted, 20 lines, 0 duplicate ids, 0 duplicate personas; "
        r"validate: 20 samples, 0 problems",
        r"fault storm \(.*\): target reached, 10 accepted",
    ],
}


# sections whose quick mode a test file of its own runs and reads more closely
OWN_TEST = {
    "providers": "test_bench_providers.py",
    "hangs": "test_bench_providers.py",
    "cpu": "test_bench_cpu.py",
}


@pytest.mark.parametrize("section", [section for section in SECTIONS if section not in OWN_TEST])
def test_the_bench_section_runs_quickly_and_prints_its_figures(section: str) -> None:
    assert section in FIGURES, f"bench section {section!r} has no figures to look for in {__file__}"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", section],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"== {section} (quick) ==" in result.stdout
    for figure in FIGURES[section]:
        assert re.search(figure, result.stdout), f"{figure!r} not in:\n{result.stdout}"


def test_every_section_is_run_quickly_by_some_test() -> None:
    here = Path(__file__).parent
    for section, test_file in OWN_TEST.items():
        assert section in SECTIONS and f"bench.{section}" in (here / test_file).read_text()


def test_an_unknown_section_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "nope"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == f"bench: unknown section 'nope'; known: {', '.join(SECTIONS)}\n"
