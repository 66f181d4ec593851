"""Every Prometheus metric of a run, defined in one place, and the calls that feed them.

One `RunMetrics` per run, with its own `CollectorRegistry` (never the global one), so
several runs in one process (tests) do not mix. Callers report events:

- the LLM clients: `request(RequestEvent)` is a sink of their events, once per HTTP attempt
  with its outcome, latency, time to first token, usage, max_tokens sent and cost, and once
  per answer replayed from the store (outcome `cached`);
- the run: `sample_admitted()`, `sample_finished(outcome, rule=, kind=)`,
  `sample_rejected(record)` and `check_failed(stage, rule)`;
- the judge stage, when it is on (`add_judge(...)` creates its series at zero):
  `judged(kind, verdict)` per flag it checked.

State that already lives elsewhere (the run's sample counts, the spend in the `Budget`,
samples per stage, limiter state) is read at scrape time by a collector, so it is never
stale and costs nothing between scrapes. Counters count this process (they restart with
it, Prometheus' model); the run gauges (`agentrefine_run_*`) cover the whole run including
earlier processes.

Label values are bounded: endpoint and model names from config.yaml, stage names, the
outcomes listed below, rule ids, dedup kinds. No sample or persona id is ever a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    write_to_textfile,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llm import Budget, LimiterState, RequestEvent
from llm.events import ANSWERED, CACHED

# `_created` series would double the series count for no use on a dashboard.
disable_created_metrics()

REQUEST_OUTCOMES = (
    "ok",
    "cut_below_cap",
    "429",
    "5xx",
    "timeout",
    "reset",
    "bad_content",
    "4xx",
    "batch_error",
)
SAMPLE_OUTCOMES = ("accepted", "surplus", "dropped", "failed", "duplicate", "malformed")
DEDUP_KINDS = ("persona", "script")
TOKEN_KINDS = ("prompt", "cached_prompt", "completion", "reasoning")
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


class RunProgress(Protocol):
    """The run's target and its accepted samples so far (all processes)."""

    @property
    def target(self) -> int: ...

    @property
    def accepted(self) -> int: ...

    def projected_cost_usd(self, spent_usd: float) -> float | None: ...


def outcome_label(outcome: str) -> str:
    """The bounded `outcome` label of a request outcome."""
    if outcome in REQUEST_OUTCOMES:
        return outcome
    if outcome == "bad_response":
        return "bad_content"
    return "5xx" if outcome.startswith("5") else "4xx"


class RunMetrics:
    """The metrics of one run in their own registry."""

    def __init__(
        self, progress: RunProgress, budget: Budget, rules_by_stage: Mapping[str, Sequence[str]]
    ) -> None:
        """`rules_by_stage`: the rule ids of each stage (the stage registry), whose series are
        created at zero."""
        self.registry = CollectorRegistry()
        self._live = _LiveState(progress, budget)
        self.registry.register(self._live)
        llm = ["endpoint", "model", "stage"]
        self._series: dict[tuple[str, str, str], _RequestSeries] = {}
        self._samples = Counter(
            "agentrefine_samples",
            "Samples finished by outcome; rule: the last failed rule of a dropped sample; "
            "kind: the dedup kind of a duplicate (persona, script).",
            ["outcome", "rule", "kind"],
            registry=self.registry,
        )
        self._admitted = Counter(
            "agentrefine_samples_admitted", "Samples taken into the pipeline.", registry=self.registry
        )
        self._checks = Counter(
            "agentrefine_check_failures",
            "Failed rule checks (every attempt, not only the last) by stage and rule id.",
            ["stage", "rule"],
            registry=self.registry,
        )
        self._requests = Counter(
            "agentrefine_llm_requests",
            "LLM HTTP attempts by outcome.",
            [*llm, "outcome"],
            registry=self.registry,
        )
        self._cache_hits = Counter(
            "agentrefine_llm_cache_hits",
            "LLM answers replayed from the run's store instead of being requested.",
            llm,
            registry=self.registry,
        )
        self._tokens = Counter(
            "agentrefine_llm_tokens",
            "Tokens paid by kind (cached_prompt is part of prompt, reasoning part of completion).",
            [*llm, "kind"],
            registry=self.registry,
        )
        self._cost = Counter(
            "agentrefine_llm_cost_usd", "Cost of the paid LLM answers in USD.", llm, registry=self.registry
        )
        self._saved = Counter(
            "agentrefine_llm_batch_saved_usd",
            "Batch mode: the online list price of the batch answers less what they cost.",
            llm,
            registry=self.registry,
        )
        self._charged = Counter(
            "agentrefine_llm_tokens_charged",
            "Tokens a TPM limit is charged with for the paid answers: prompt + the max_tokens sent "
            "(OpenAI's count at admission); divide by prompt + completion tokens for the overcharge.",
            llm,
            registry=self.registry,
        )
        self._latency = Histogram(
            "agentrefine_llm_request_duration_seconds",
            "Latency of answered LLM requests (sent to answer, limiter wait excluded).",
            llm,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._first_token = Histogram(
            "agentrefine_llm_time_to_first_token_seconds",
            "Time from sending a streamed LLM request to its first token (queueing and prefill).",
            llm,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        for outcome in ("accepted", "surplus", "failed", "malformed"):
            self._samples.labels(outcome, "", "")
        for kind in DEDUP_KINDS:
            self._samples.labels("duplicate", "", kind)
        for stage, rules in rules_by_stage.items():
            for rule in rules:
                self._checks.labels(stage, rule)
                self._samples.labels("dropped", rule, "")
        self._judge: Counter | None = None  # add_judge()

    # -- wiring -------------------------------------------------------------------------

    def add_judge(self, kinds: Sequence[str], verdicts: Sequence[str]) -> None:
        """Create the judge stage's series at zero (only runs with the judge have them)."""
        self._judge = Counter(
            "agentrefine_judge_flags",
            "DM place_error / logic_error flags checked by the judge stage, by verdict: agree, "
            "false_flag (the DM set it, the judge would not), missed_flag (the judge would set it, "
            "the DM did not), unjudged (no readable answer); agreement = agree / all but unjudged, "
            "per kind.",
            ["kind", "verdict"],
            registry=self.registry,
        )
        for kind in kinds:
            for verdict in verdicts:
                self._judge.labels(kind, verdict)

    def add_endpoint(
        self, endpoint: str, model: str, stages: Iterable[str], limiter: Callable[[], LimiterState]
    ) -> None:
        """Create the series of an endpoint's stages at zero and watch its limiter."""
        for stage in stages:
            self._new_series((endpoint, model, stage))
        self._live.limiters[(endpoint, model)] = limiter

    def watch_queue(self, in_stages: Callable[[], Mapping[str, int]], in_flight: Callable[[], int]) -> None:
        """Read the job queue's samples per stage and samples in flight at scrape time."""
        self._live.samples_in_stages, self._live.samples_in_flight = in_stages, in_flight

    def watch_workers(self, workers: Callable[[], Sequence[WorkerFigures]]) -> None:
        """Read the cluster's workers at scrape time (`agentrefine_worker_*{worker}`)."""
        self._live.workers = workers

    def write(self, path: Path) -> None:
        """Write the final values in the text format (atomically), e.g. for a textfile collector."""
        write_to_textfile(str(path), self.registry)

    # -- events -------------------------------------------------------------------------

    def request(self, event: RequestEvent) -> None:
        labels = (event.endpoint, event.model, event.stage)
        series = self._series_of(labels)
        if event.outcome == CACHED:
            series.cache_hits.inc()
            return
        outcome = outcome_label(event.outcome)
        series.requests[outcome].inc()
        if outcome not in ANSWERED:
            return
        series.latency.observe(event.latency_s)
        if event.first_token_s is not None:
            series.first_token.observe(event.first_token_s)
        usage = event.usage
        series.charged.inc(usage.prompt + event.max_tokens)
        for counter, count in zip(
            series.tokens, (usage.prompt, usage.cached_prompt, usage.completion, usage.reasoning), strict=True
        ):
            counter.inc(count)
        series.cost.inc(event.cost_usd)
        if event.saved_usd:
            series.saved.inc(event.saved_usd)

    def _series_of(self, labels: tuple[str, str, str]) -> _RequestSeries:
        return self._series.get(labels) or self._new_series(labels)

    def _new_series(self, labels: tuple[str, str, str]) -> _RequestSeries:
        """The children of one (endpoint, model, stage), looked up once: `labels()` costs
        more than the increment, and this runs for every HTTP attempt."""
        series = _RequestSeries(
            requests={outcome: self._requests.labels(*labels, outcome) for outcome in REQUEST_OUTCOMES},
            latency=self._latency.labels(*labels),
            first_token=self._first_token.labels(*labels),
            charged=self._charged.labels(*labels),
            tokens=tuple(self._tokens.labels(*labels, kind) for kind in TOKEN_KINDS),
            cost=self._cost.labels(*labels),
            saved=self._saved.labels(*labels),
            cache_hits=self._cache_hits.labels(*labels),
        )
        self._series[labels] = series
        return series

    def sample_admitted(self) -> None:
        self._admitted.inc()

    def sample_finished(self, outcome: str, rule: str = "", kind: str = "") -> None:
        """One sample's end: accepted, surplus, dropped (with its rule), failed, duplicate
        (with its dedup kind) or malformed."""
        if outcome not in SAMPLE_OUTCOMES:
            raise ValueError(f"unknown sample outcome {outcome!r}")
        self._samples.labels(outcome, rule, kind).inc()

    def sample_rejected(self, record: Mapping[str, object]) -> None:
        """Count a reject record (rejects.jsonl shape); a duplicate's rule names its dedup kind
        ("persona_duplicate", "script_duplicate")."""
        outcome = str(record["kind"])
        rule = str(record["rule"]) if outcome == "dropped" else ""
        kind = str(record["rule"]).removesuffix("_duplicate") if outcome == "duplicate" else ""
        self.sample_finished(outcome, rule, kind)

    def check_failed(self, stage: str, rule: str) -> None:
        self._checks.labels(stage, rule).inc()

    def judged(self, kind: str, verdict: str) -> None:
        """One DM flag the judge checked, and its verdict."""
        assert self._judge is not None, "add_judge() first"
        self._judge.labels(kind, verdict).inc()


@dataclass(frozen=True)
class _RequestSeries:
    """The request series of one (endpoint, model, stage)."""

    requests: dict[str, Counter]
    latency: Histogram
    first_token: Histogram
    charged: Counter
    tokens: tuple[Counter, ...]  # in TOKEN_KINDS order
    cost: Counter
    saved: Counter
    cache_hits: Counter


@dataclass(frozen=True)
class WorkerFigures:
    """One cluster worker as the driver sees it (`service/cluster`): the run's own series sum
    over the workers; these show them one by one."""

    worker: str
    up: bool
    samples_in_flight: int
    requests_in_flight: int
    cpu_seconds: float  # CPU time of the worker's processes so far (replacements included)
    answers: int
    samples_finished: int
    restarts: int


WORKER_GAUGES = {
    "up": "1 while the worker runs, 0 while it is being replaced.",
    "samples_in_flight": "Samples the driver has handed this worker and not had back.",
    "requests_in_flight": "This worker's requests at the endpoints.",
}
WORKER_COUNTERS = {
    "cpu_seconds": "CPU time of the worker's processes (replacements included).",
    "answers": "Answers this worker received and the driver stored.",
    "samples_finished": "Samples this worker finished (accepted, dropped or failed).",
    "restarts": "Times this worker was lost and replaced.",
}


class _LiveState(Collector):
    """Gauges read at scrape time from the objects that own the state."""

    def __init__(self, progress: RunProgress, budget: Budget) -> None:
        self._progress = progress
        self._budget = budget
        self.limiters: dict[tuple[str, str], Callable[[], LimiterState]] = {}
        self.samples_in_stages: Callable[[], Mapping[str, int]] | None = None
        self.samples_in_flight: Callable[[], int] | None = None
        self.workers: Callable[[], Sequence[WorkerFigures]] | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._run()
        yield from self._queue()
        yield from self._limiters()
        yield from self._workers()

    def _workers(self) -> Iterator[Metric]:
        if self.workers is None:
            return
        workers = self.workers()
        for name, documentation in WORKER_GAUGES.items():
            family = GaugeMetricFamily(f"agentrefine_worker_{name}", documentation, labels=["worker"])
            for figures in workers:
                family.add_metric([figures.worker], float(getattr(figures, name)))
            yield family
        for name, documentation in WORKER_COUNTERS.items():
            family = CounterMetricFamily(f"agentrefine_worker_{name}", documentation, labels=["worker"])
            for figures in workers:
                family.add_metric([figures.worker], float(getattr(figures, name)))
            yield family

    def _run(self) -> Iterator[Metric]:
        stats = self._progress
        spent = self._budget.spent_usd
        yield _gauge("agentrefine_run_target_samples", "Accepted samples the run is asked for.", stats.target)
        yield _gauge(
            "agentrefine_run_accepted_samples",
            "Accepted samples of the whole run (all processes).",
            stats.accepted,
        )
        yield _gauge(
            "agentrefine_run_progress_ratio",
            "Accepted / target for the whole run.",
            stats.accepted / stats.target,
        )
        yield _gauge("agentrefine_run_spend_usd", "USD spent by the whole run (all processes).", spent)
        if self._budget.limit_usd is not None:
            yield _gauge(
                "agentrefine_run_budget_usd", "run.max_cost_usd: the run stops there.", self._budget.limit_usd
            )
        if stats.accepted:
            yield _gauge(
                "agentrefine_run_cost_per_accepted_sample_usd",
                "Whole-run spend divided by accepted samples.",
                spent / stats.accepted,
            )
        projected = stats.projected_cost_usd(spent)
        if projected is not None:
            yield _gauge(
                "agentrefine_run_projected_cost_usd",
                "Projected spend of the whole run at the target, at the run's cost per accepted sample.",
                projected,
            )

    def _queue(self) -> Iterator[Metric]:
        if self.samples_in_flight is not None:
            yield _gauge(
                "agentrefine_samples_in_flight",
                "Samples admitted and not finished.",
                self.samples_in_flight(),
            )
        if self.samples_in_stages is not None:
            in_stage = GaugeMetricFamily(
                "agentrefine_stage_samples",
                "Samples in a stage now (at its endpoint, waiting for it, or in our checks).",
                labels=["stage"],
            )
            for stage, count in self.samples_in_stages().items():
                in_stage.add_metric([stage], count)
            yield in_stage

    def _limiters(self) -> Iterator[Metric]:
        if not self.limiters:
            return
        labels = ["endpoint", "model"]
        families = {
            "in_flight": GaugeMetricFamily(
                "agentrefine_llm_requests_in_flight", "LLM requests sent and not answered.", labels=labels
            ),
            "waiting": GaugeMetricFamily(
                "agentrefine_llm_requests_waiting",
                "LLM requests waiting for a concurrency slot, the RPM/TPM buckets or a 429 cooldown.",
                labels=labels,
            ),
            "concurrency": GaugeMetricFamily(
                "agentrefine_limiter_concurrency_limit",
                "Requests the limiter lets run at once.",
                labels=labels,
            ),
            "cap": GaugeMetricFamily(
                "agentrefine_limiter_concurrency_cap",
                "The endpoint's concurrency cap, learned from its 429s without rate-limit headers.",
                labels=labels,
            ),
            "remaining_requests": GaugeMetricFamily(
                "agentrefine_limiter_remaining_requests",
                "Requests left in the client-side requests-per-minute bucket.",
                labels=labels,
            ),
            "remaining_tokens": GaugeMetricFamily(
                "agentrefine_limiter_remaining_tokens",
                "Tokens left in the client-side tokens-per-minute bucket.",
                labels=labels,
            ),
            "rpm": GaugeMetricFamily(
                "agentrefine_limiter_requests_per_minute",
                "Requests-per-minute limit the limiter enforces (configured, or learned from headers).",
                labels=labels,
            ),
            "tpm": GaugeMetricFamily(
                "agentrefine_limiter_tokens_per_minute",
                "Tokens-per-minute limit the limiter enforces (configured, or learned from headers).",
                labels=labels,
            ),
            "cooldown_s": GaugeMetricFamily(
                "agentrefine_limiter_cooldown_seconds",
                "Seconds until the endpoint's 429 cooldown ends (0: none).",
                labels=labels,
            ),
        }
        for key, read in self.limiters.items():
            state = read()
            for name, family in families.items():
                value = getattr(state, name)
                if value is not None:
                    family.add_metric(list(key), value)
        yield from families.values()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
