"""Metrics, cost and logs in-process: usage parsing per provider shape, the per-run registry
and its scrape-time gauges, the real /metrics server, the store's cost columns on an old
store, and the log redaction of API keys."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import urllib.request
from pathlib import Path

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from llm import (
    Budget,
    BudgetExhausted,
    LimiterState,
    Price,
    RequestEvent,
    RequestTally,
    Usage,
    cost_usd,
    parse_usage,
    redact,
)
from metrics.prometheus import RunMetrics, outcome_label
from metrics.server import MetricsServer
from pipeline.registry import rules_by_stage
from service import logs
from service.progress import progress_line
from service.recorder import SampleCounts
from service.store import Store
from workers.flight import InFlight

RULES = rules_by_stage()
PRICE = Price(input=2.5, cached_input=1.25, output=10.0)


def samples(metrics: RunMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry as {(name, sorted labels): value}."""
    out = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: RunMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_openai_usage_with_cached_and_reasoning_tokens_is_priced_per_kind() -> None:
    block = {
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "prompt_tokens_details": {"cached_tokens": 400},
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    usage = parse_usage(block)
    assert usage == Usage(prompt=1000, cached_prompt=400, completion=500, reasoning=200)
    # 600 uncached at 2.5, 400 cached at 1.25, 500 completion (reasoning included) at 10
    assert cost_usd(usage, PRICE) == pytest.approx((600 * 2.5 + 400 * 1.25 + 500 * 10.0) / 1e6)


def test_deepseek_usage_prices_cache_hits_at_the_cached_rate() -> None:
    block = {"prompt_tokens": 900, "completion_tokens": 100, "prompt_cache_hit_tokens": 640}
    block["prompt_cache_miss_tokens"] = 260
    usage = parse_usage(block)
    assert (usage.prompt, usage.cached_prompt, usage.completion) == (900, 640, 100)
    price = Price(input=0.27, cached_input=0.07, output=1.10)
    assert cost_usd(usage, price) == pytest.approx((260 * 0.27 + 640 * 0.07 + 100 * 1.10) / 1e6)
    # without prompt_tokens the prompt is hit + miss
    assert parse_usage({"prompt_cache_hit_tokens": 5, "prompt_cache_miss_tokens": 7}).prompt == 12


def test_request_outcomes_map_to_bounded_labels() -> None:
    assert [
        outcome_label(o) for o in ("ok", "cut_below_cap", "429", "bad_response", "503", "401", "timeout")
    ] == [
        "ok",
        "cut_below_cap",
        "429",
        "bad_content",
        "5xx",
        "4xx",
        "timeout",
    ]


def test_request_events_feed_counters_tokens_cost_and_latency() -> None:
    metrics = RunMetrics(SampleCounts(target=10), Budget(), RULES)
    state = LimiterState(
        in_flight=3,
        concurrency=8,
        remaining_requests=42.0,
        remaining_tokens=None,
        cooldown_s=0.0,
        rpm=500,
        waiting=5,
    )
    metrics.add_endpoint("openai", "gpt-4o", ["script"], lambda: state)
    usage = Usage(prompt=1000, cached_prompt=400, completion=500, reasoning=200)
    metrics.request(
        RequestEvent(
            "openai", "gpt-4o", "script", "ok", 0.3, usage, 0.0065, max_tokens=800, first_token_s=0.1
        )
    )
    cut = Usage(prompt=1000, completion=300)
    metrics.request(
        RequestEvent("openai", "gpt-4o", "script", "cut_below_cap", 0.2, cut, 0.0055, max_tokens=300)
    )
    metrics.request(RequestEvent("openai", "gpt-4o", "script", "429", 0.01, max_tokens=800))
    metrics.request(RequestEvent("openai", "gpt-4o", "script", "bad_response", 0.02))
    llm = {"endpoint": "openai", "model": "gpt-4o", "stage": "script"}
    assert value(metrics, "agentrefine_llm_requests_total", **llm, outcome="ok") == 1
    assert value(metrics, "agentrefine_llm_requests_total", **llm, outcome="429") == 1
    assert value(metrics, "agentrefine_llm_requests_total", **llm, outcome="bad_content") == 1
    assert value(metrics, "agentrefine_llm_requests_total", **llm, outcome="timeout") == 0  # created at zero
    assert value(metrics, "agentrefine_llm_requests_total", **llm, outcome="cut_below_cap") == 1
    assert value(metrics, "agentrefine_llm_tokens_total", **llm, kind="cached_prompt") == 400
    assert value(metrics, "agentrefine_llm_tokens_total", **llm, kind="reasoning") == 200
    assert (
        value(metrics, "agentrefine_llm_tokens_total", **llm, kind="prompt") == 2000
    )  # the cut one was paid
    assert value(metrics, "agentrefine_llm_cost_usd_total", **llm) == pytest.approx(0.012)
    assert value(metrics, "agentrefine_llm_tokens_charged_total", **llm) == (1000 + 800) + (1000 + 300)
    assert value(metrics, "agentrefine_llm_request_duration_seconds_count", **llm) == 2  # answered only
    assert value(metrics, "agentrefine_llm_time_to_first_token_seconds_count", **llm) == 1  # streamed only
    assert value(metrics, "agentrefine_llm_time_to_first_token_seconds_sum", **llm) == pytest.approx(0.1)
    limiter = {"endpoint": "openai", "model": "gpt-4o"}
    assert value(metrics, "agentrefine_llm_requests_in_flight", **limiter) == 3
    assert value(metrics, "agentrefine_llm_requests_waiting", **limiter) == 5
    assert value(metrics, "agentrefine_limiter_concurrency_cap", **limiter) is None  # none learned
    assert value(metrics, "agentrefine_limiter_remaining_requests", **limiter) == 42
    assert value(metrics, "agentrefine_limiter_remaining_tokens", **limiter) is None  # no TPM bucket
    assert value(metrics, "agentrefine_limiter_requests_per_minute", **limiter) == 500
    assert value(metrics, "agentrefine_limiter_tokens_per_minute", **limiter) is None


def test_sample_outcomes_and_whole_run_gauges() -> None:
    budget = Budget(20.0, spent_usd=3.0)  # spent by earlier processes
    budget(RequestEvent("e", "m", "script", "ok", cost_usd=1.0))
    metrics = RunMetrics(SampleCounts(target=100, accepted=40), budget, RULES)
    metrics.sample_rejected({"kind": "dropped", "rule": "T6"})
    metrics.sample_rejected({"kind": "duplicate", "rule": "persona_duplicate"})
    metrics.sample_rejected({"kind": "duplicate", "rule": "script_duplicate"})
    metrics.sample_finished("accepted")
    with pytest.raises(ValueError, match="unknown sample outcome"):
        metrics.sample_finished("lost")
    assert value(metrics, "agentrefine_samples_total", outcome="dropped", rule="T6", kind="") == 1
    assert value(metrics, "agentrefine_samples_total", outcome="dropped", rule="S3", kind="") == 0
    assert value(metrics, "agentrefine_samples_total", outcome="duplicate", rule="", kind="persona") == 1
    assert value(metrics, "agentrefine_samples_total", outcome="duplicate", rule="", kind="script") == 1
    assert value(metrics, "agentrefine_run_spend_usd") == pytest.approx(4.0)  # earlier processes + this one
    assert value(metrics, "agentrefine_run_cost_per_accepted_sample_usd") == pytest.approx(0.1)
    assert value(metrics, "agentrefine_run_projected_cost_usd") == pytest.approx(10.0)
    assert value(metrics, "agentrefine_run_budget_usd") == 20.0
    assert value(metrics, "agentrefine_run_progress_ratio") == pytest.approx(0.4)


def test_no_projection_and_no_budget_series_before_they_mean_something() -> None:
    metrics = RunMetrics(SampleCounts(target=5), Budget(), RULES)
    names = {name for name, _ in samples(metrics)}
    assert "agentrefine_run_projected_cost_usd" not in names
    assert "agentrefine_run_budget_usd" not in names
    assert "agentrefine_run_spend_usd" in names


def test_two_runs_in_one_process_keep_separate_registries() -> None:
    first, second = RunMetrics(SampleCounts(1), Budget(), RULES), RunMetrics(SampleCounts(1), Budget(), RULES)
    first.sample_finished("accepted")
    assert value(first, "agentrefine_samples_total", outcome="accepted", rule="", kind="") == 1
    assert value(second, "agentrefine_samples_total", outcome="accepted", rule="", kind="") == 0


def test_budget_refuses_new_requests_once_the_whole_run_spent_it() -> None:
    budget = Budget(1.0, spent_usd=0.6)
    budget.check()
    budget(RequestEvent("e", "m", "script", "ok", cost_usd=0.4))
    with pytest.raises(BudgetExhausted, match=r"budget reached: \$1.0000 spent of run.max_cost_usd \$1.0000"):
        budget.check()
    Budget(None, spent_usd=10**6).check()  # no limit


def test_metrics_server_serves_the_registry_on_a_free_loopback_port() -> None:
    metrics = RunMetrics(SampleCounts(target=7), Budget(), RULES)

    async def scrape() -> tuple[str, str, str]:
        server = MetricsServer(metrics.registry, "127.0.0.1", 0)
        url = await server.start()
        try:
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
            request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"})
            kind = await asyncio.to_thread(
                lambda: urllib.request.urlopen(request, timeout=10).headers["Content-Type"]
            )
        finally:
            await server.stop()
        return url, text, kind

    url, text, content_type = asyncio.run(scrape())
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["agentrefine_run_target_samples"].samples[0].value == 7
    assert content_type.startswith("application/openmetrics-text")


def test_an_old_store_gets_the_cost_columns_and_its_answers_priced(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.sqlite")
    db.executescript(
        "CREATE TABLE responses (key TEXT PRIMARY KEY, endpoint TEXT NOT NULL, model TEXT NOT NULL,"
        " content TEXT NOT NULL, finish_reason TEXT, usage BLOB NOT NULL, created REAL NOT NULL);"
        "INSERT INTO responses VALUES ('k', 'openai', 'gpt-4o', 'x', 'stop',"
        ' \'{"prompt_tokens": 1000, "completion_tokens": 100}\', 1.0);'
    )
    db.commit()
    db.close()
    store = Store(tmp_path / "state.sqlite")
    try:
        assert store.spend() == 0
        assert store.price_unpriced(lambda endpoint, usage: cost_usd(parse_usage(usage), PRICE)) == 1
        assert store.spend() == pytest.approx((1000 * 2.5 + 100 * 10.0) / 1e6)
        assert store.price_unpriced(lambda endpoint, usage: 1.0) == 0  # priced once
        [row] = store.response_rows()
        assert (row.stage, row.sample_id, row.latency_s) == ("", None, None)
    finally:
        store.close()


def test_logs_never_show_an_api_key(tmp_path: Path) -> None:
    key = "sk-test-0123456789abcdef"
    redact.configure([key])
    logs.configure(tmp_path / "run.log", "run1")
    log = structlog.get_logger()
    log.info("request", error=f"Incorrect API key provided: {key}", authorization=f"Bearer {key}")
    log.info("nested", headers={"Authorization": f"Bearer {key}", "x": [key]})
    logging.getLogger("openai").warning("library says %s", key)
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = (tmp_path / "run.log").read_text()
    assert key not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["authorization"] == logs.REDACTED
    assert lines[0]["error"] == f"Incorrect API key provided: {logs.REDACTED}"
    assert lines[1]["headers"] == {"Authorization": logs.REDACTED, "x": [logs.REDACTED]}
    assert lines[2]["event"] == f"library says {logs.REDACTED}"
    assert all(line["run_id"] == "run1" for line in lines[:2])


def test_progress_line_shows_spend_budget_and_projection() -> None:
    stats, requests = SampleCounts(target=100, accepted=25), RequestTally()
    line = progress_line(stats, requests, Budget(20.0, spent_usd=2.5), InFlight(1200, 1150, 32))
    assert "accepted 25/100" in line
    assert "spent $2.50 of $20.00 (projected $10.00 at 100)" in line
    assert "in flight 1200 samples, 1150 requests (+32 waiting)" in line
    nothing = progress_line(SampleCounts(target=5), RequestTally(), Budget(), InFlight(0, 0, 0))
    assert "spent $0.00 |" in nothing and "tokens 0 |" in nothing  # no ratio before an answer
    paid = Usage(prompt=1500, completion=500)
    requests(RequestEvent("e", "m", "script", "ok", usage=paid, max_tokens=1000))
    assert "tokens 2.0k (charged 1.25x) |" in progress_line(stats, requests, Budget(), InFlight(3, 3, 0))
