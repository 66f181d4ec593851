"""`make bench SECTIONS=metrics`: what observability costs, in CPU time (process_time).

- one `RunMetrics.request` call (every LLM attempt makes one);
- one scrape of a run's registry (default config: one endpoint, three stages);
- the report (report.md + 6 PNGs, matplotlib import included, the diversity figures among
  them) of a store holding 1000 accepted samples (each with the worked example's script and
  a persona and a script vector) and 3000 answers.

`--quick`: a tenth of the events, scrapes and samples (the test suite runs it).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from prometheus_client import generate_latest

from llm import Answer, Budget, LimiterState, RequestEvent, Usage
from metrics.prometheus import RunMetrics
from pipeline.prompts import example
from pipeline.registry import rules_by_stage
from service.recorder import SampleCounts
from service.report import write_report
from service.store import Store

EVENTS = 100_000
SCRAPES = 200
SAMPLES = 1000


def main(argv: list[str]) -> None:
    scale = 10 if "--quick" in argv else 1
    events, scrapes, samples = EVENTS // scale, SCRAPES // scale, SAMPLES // scale
    metrics = RunMetrics(SampleCounts(target=samples), Budget(100.0), rules_by_stage())
    state = LimiterState(
        in_flight=4, concurrency=96, remaining_requests=100.0, remaining_tokens=1e6, cooldown_s=0
    )
    metrics.add_endpoint("local", "sim-gpt-4o", ["personas", "script", "trajectory"], lambda: state)
    event = RequestEvent("local", "sim-gpt-4o", "trajectory", "ok", 0.3, Usage(2000, 1024, 900, 0), 0.0125)
    started = time.process_time()
    for _ in range(events):
        metrics.request(event)
    print(f"request event: {(time.process_time() - started) / events * 1e6:.1f} µs CPU")
    started = time.process_time()
    for _ in range(scrapes):
        body = generate_latest(metrics.registry)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    print(f"scrape: {(time.process_time() - started) / scrapes * 1e3:.2f} ms CPU, {series} series")
    with tempfile.TemporaryDirectory() as folder:
        store = _filled_store(Path(folder), samples)
        started = time.process_time()
        write_report(store, Path(folder))
        store.close()
        print(
            f"report of {samples} samples / {3 * samples} answers: {time.process_time() - started:.2f} s CPU"
        )


def _filled_store(folder: Path, samples: int) -> Store:
    store = Store(folder / "state.sqlite")
    script = orjson.loads(example("script"))
    vectors = np.random.default_rng(0).normal(size=(2 * samples, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in range(samples):
        sample = f"s{i}"
        # the persona's and the script's embeddings, as admission and the script dedup store them
        store.admit(sample, i, "bench", f"persona {i}", {}, f"h{i}", vectors[2 * i].tobytes())
        store.keep_for_dedup("script", sample, f"k{i}", vectors[2 * i + 1].tobytes())
        for n, stage in enumerate(("script", "trajectory", "trajectory")):
            usage = {
                "prompt_tokens": 1500,
                "completion_tokens": 800,
                "prompt_tokens_details": {"cached_tokens": 512},
            }
            answer = Answer("{}", "stop", usage, "sim-gpt-4o", "local", 0.011, stage, 0.3)
            store.put_response(f"{sample}:{n}", answer, sample)
        store.accept(sample, {"id": sample, "script": script}, ["T4>continue"] if i % 3 else [], samples)
    return store
