"""`make bench SECTIONS=concurrency`: the concurrency controller and the work in flight.

Two parts:

- **models**: the real limiter against the in-process endpoint models of
  `bench/endpoint_models.py` (compressed time: an hour of 30-60 s answers in seconds of CPU).
  For each: the concurrency it settled at (mean requests in flight over the second half)
  against what the endpoint allows (rate x latency, the cap, the knee of the batch), the
  throughput there against the best, the share of requests answered 429, and the time until
  the requests in flight first reached 90% of the settled level.
- **memory**: a whole run (`python -m service run`) against the embedded endpoint with slow
  answers and a high RPM, so that thousands of samples are in flight; the summary's peaks and
  memory per sample in flight (the process's RSS growth up to the peak / the peak).

`python -m bench.concurrency --quick` runs shorter models and a smaller run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.endpoint_models import STAGES, Batch, Capped, Figures, Model, RateLimited, run_model
from llm.concurrency import CAP_PROBE_EVERY, MAX_ELASTICITY

ROOT = Path(__file__).resolve().parents[1]
NO_FAULTS = {"p_5xx": 0.0, "p_reset": 0.0, "p_truncated_body": 0.0, "p_hang": 0.0}


@dataclass(frozen=True)
class ModelCase:
    name: str
    make: Callable[[], Model]
    stream: bool
    target: Callable[[Model, Figures], float]  # the concurrency the endpoint allows or needs
    best: Callable[[Model, Figures], str]  # throughput there against the best, as text


def _little(model: Model, figures: Figures) -> float:
    """Requests in flight the RPM limit needs: its rate x the mean latency of the mix."""
    assert isinstance(model, RateLimited)
    mean_tokens = (STAGES[0].completion_median + 1.3 * STAGES[1].completion_median) / 2.3
    return model.rpm / 60 * (model.ttft_median_s + mean_tokens / model.tokens_per_s)


def _rate(model: Model, figures: Figures) -> str:
    assert isinstance(model, RateLimited)
    return f"{figures.settled_requests_per_s * 60 / model.rpm:.3f} of the RPM limit"


def _knee(model: Model, figures: Figures) -> float:
    assert isinstance(model, Batch)
    return model.knee


def _batch_throughput(model: Model, figures: Figures) -> str:
    assert isinstance(model, Batch)
    ratio = model.throughput(int(figures.settled_in_flight)) / model.throughput(model.knee)
    return f"{ratio:.3f} of the knee's tokens/s"


def _cap(model: Model, figures: Figures) -> float:
    assert isinstance(model, Capped)
    return model.cap


def _none(model: Model, figures: Figures) -> str:
    return "-"


QUADRATIC = 0.02 / 160**2  # a batch whose decode slows so fast that throughput peaks near 160
CASES = [
    ModelCase(
        "gpt-4o-like: 5000 RPM, 50M TPM, 80 tokens/s (answers 12-40 s)",
        lambda: RateLimited(5000, 50_000_000, tokens_per_s=80.0),
        True,
        _little,
        _rate,
    ),
    ModelCase(
        "slow key: 1200 RPM, 50 tokens/s (answers 20-60 s)",
        lambda: RateLimited(1200, 50_000_000, tokens_per_s=50.0),
        False,
        _little,
        _rate,
    ),
    ModelCase("deepseek-like: 35 tokens/s, cap 50, bare 429s", lambda: Capped(50), False, _cap, _none),
    ModelCase("deepseek-like: cap 300", lambda: Capped(300), True, _cap, _none),
    ModelCase("vllm-like: 256 seqs, streamed", lambda: Batch(256), True, _knee, _batch_throughput),
    ModelCase("vllm-like: 256 seqs, not streamed", lambda: Batch(256), False, _knee, _batch_throughput),
    ModelCase("vllm-like: 100 seqs, not streamed", lambda: Batch(100), False, _knee, _batch_throughput),
    ModelCase(
        "vllm-like: 512 seqs, throughput peaks early, streamed",
        lambda: Batch(512, per_seq_s=0.0, per_seq2_s=QUADRATIC),
        True,
        _knee,
        _batch_throughput,
    ),
]


def models(duration_s: float) -> None:
    print(
        f"\nmodels ({duration_s / 60:.0f} min of compressed time each; MAX_ELASTICITY {MAX_ELASTICITY}, "
        f"CAP_PROBE_EVERY {CAP_PROBE_EVERY})"
    )
    print(
        f"  {'endpoint':<56} {'settled':>8} {'allows':>7} {'ratio':>6} {'429s':>6} {'ramp s':>7}  throughput"
    )
    for case in CASES:
        started = time.process_time()
        figures = run_model(case.make, duration_s, stream=case.stream)
        model = case.make()
        target = case.target(model, figures)
        ramp = f"{figures.ramp_s:.0f}" if figures.ramp_s is not None else "-"
        print(
            f"  {case.name:<56} {figures.settled_in_flight:>8.0f} {target:>7.0f} "
            f"{figures.settled_in_flight / target:>6.2f} {figures.share_429:>6.2%} {ramp:>7}  "
            f"{case.best(model, figures)}  ({time.process_time() - started:.1f} s CPU)",
            flush=True,
        )


def personas(count: int) -> list[str]:
    """`count` personas distinct enough for dedup at 0.99 (names, places and pastimes)."""
    first = (
        "Ada",
        "Bram",
        "Chiara",
        "Dmitri",
        "Esi",
        "Farid",
        "Greta",
        "Hiro",
        "Ines",
        "Jomo",
        "Kai",
        "Lena",
    )
    trades = ("baker", "nurse", "pilot", "chemist", "ranger", "welder", "judge", "farmer", "tailor", "potter")
    towns = ("Porto", "Oslo", "Lima", "Kyoto", "Banff", "Ghent", "Accra", "Hanoi", "Quito", "Perth", "Cork")
    pastimes = ("keeps bees", "restores motorcycles", "sings in a choir", "maps footpaths", "brews cider")
    out = [
        f"{name}, a {trade} in {town} who {pastime}."
        for name in first
        for trade in trades
        for town in towns
        for pastime in pastimes
    ]
    return out[:count]


def memory(n: int, latency_s: float) -> None:
    """A whole run with slow answers and a high RPM: its peaks and memory per sample in flight."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "personas.txt").write_text("\n".join(personas(n + n // 5)) + "\n")
        # 12,000 RPM learned from the headers: the Little's-law floor takes the concurrency to
        # thousands after the first answers, so the run holds thousands of samples at once
        slow = {"latency_median_s": latency_s, "latency_sigma": 0.3, "rpm": 12000, "faults": NO_FAULTS}
        config = {
            "generator": "slow",
            "endpoints": {
                "slow": {"model": "sim-gpt-4o", "embedded": slow, "timeout_s": 600},
                "embeddings": {"model": "sim-gpt-4o", "embedded": {"latency_median_s": 0.0}},
            },
            "dedup": {
                "embedder": "embeddings",
                "persona": {"threshold": 0.99},
                "script": {"threshold": 0.99},
            },
            "run": {"report": False},
        }
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "service", "run", "--config", str(work / "config.yaml")]
        command += ["-n", str(n), "--out", str(work / "run"), "--personas", str(work / "personas.txt")]
        started = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            print(f"  memory run failed ({result.returncode}): {result.stderr[-500:]}")
            return
        summary = json.loads((work / "run" / "summary.json").read_text())
        proc = summary["this_process"]
        print(
            f"\nmemory: N={n}, answers {latency_s:g} s (median), 12,000 RPM: "
            f"{summary['accepted']} accepted in {time.monotonic() - started:.0f} s; at the peak "
            f"{proc['peak_samples_in_flight']} samples and {proc['peak_requests_in_flight']} requests "
            "in flight; "
            f"peak RSS {proc['peak_rss_mib']} MiB; "
            + (
                f"memory per sample in flight {per_sample} KiB (RSS growth to the peak / the peak: "
                "an upper bound)"
                if (per_sample := proc["memory_per_sample_in_flight_kib"]) is not None
                else "no memory figure (fewer than 1,000 samples in flight)"
            ),
            flush=True,
        )


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    models(1200 if quick else 3600)
    memory(300, 3.0) if quick else memory(3000, 20.0)


if __name__ == "__main__":
    main(sys.argv[1:])
