"""Cost, budget, report and secrets end to end through the CLI against real simulators.

Costs are checked against a hand computation from the raw usage blocks the endpoint sent
(kept in the store's responses table), in OpenAI's and DeepSeek's shapes; the budget stops
a run within the cost of the requests in flight and a larger one resumes it; an API key set
in the environment appears nowhere in the run directory or the metrics.
"""

from __future__ import annotations

import json
import secrets
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.config import ConfigError, load_config
from service.store import Store
from tests.conftest import FAST_SIM, cli, read_jsonl, sim_stats, simulator, write_config

GPT_PRICE = {"input": 2.5, "cached_input": 1.25, "output": 10.0}
DEEPSEEK_PRICE = {"input": 0.27, "cached_input": 0.07, "output": 1.10}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def metric_values(path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of a text-format metrics file by sample name."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def total(values: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for sample_labels, v in values[name] if labels.items() <= sample_labels.items())


def raw_responses(out: Path) -> list[tuple[str | None, dict[str, Any]]]:
    with sqlite3.connect(out / "state.sqlite") as db:
        rows = db.execute("SELECT sample_id, usage FROM responses ORDER BY created").fetchall()
    return [(sample_id, json.loads(usage)) for sample_id, usage in rows]


def hand_cost(usage: dict[str, Any], style: str, price: dict[str, float]) -> tuple[float, int, int, int]:
    """Cost of one usage block computed from the provider's own fields: (usd, prompt, cached, completion)."""
    if style == "openai":
        assert "prompt_cache_hit_tokens" not in usage
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        uncached = usage["prompt_tokens"] - cached
    else:
        assert "prompt_tokens_details" not in usage
        cached, uncached = usage["prompt_cache_hit_tokens"], usage["prompt_cache_miss_tokens"]
    usd = (
        uncached * price["input"]
        + cached * price["cached_input"]
        + usage["completion_tokens"] * price["output"]
    ) / 1e6
    return usd, uncached + cached, cached, usage["completion_tokens"]


@pytest.mark.parametrize(("style", "price"), [("openai", GPT_PRICE), ("deepseek", DEEPSEEK_PRICE)])
def test_cost_agrees_with_a_hand_computation_from_the_reported_usage(
    tmp_path: Path, style: str, price: dict[str, float]
) -> None:
    out = tmp_path / "run"
    endpoint = {
        "model": "sim-m",
        "embedded": {**FAST_SIM, "models": ["sim-m"], "usage_style": style},
        "price": price,
    }
    config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim")
    result = cli("run", "--config", str(config), "-n", "12", "--out", str(out))
    assert result.returncode == 0, result.stderr

    rows = [(sample_id, hand_cost(usage, style, price)) for sample_id, usage in raw_responses(out)]
    usd = sum(cost for _, (cost, *_) in rows)
    prompt, cached, completion = (sum(row[1][i] for row in rows) for i in (1, 2, 3))
    assert cached > 0, "the run must exercise the cached-input price"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["cost_usd"] == pytest.approx(usd, abs=1e-6)  # summary.json rounds to 6 decimals
    assert summary["tokens"]["prompt_tokens"] == prompt
    assert summary["tokens"]["cached_prompt_tokens"] == cached

    metrics = metric_values(out / "metrics.prom")
    assert total(metrics, "agentrefine_llm_cost_usd_total") == pytest.approx(usd, rel=1e-9)
    assert total(metrics, "agentrefine_llm_tokens_total", kind="prompt") == prompt
    assert total(metrics, "agentrefine_llm_tokens_total", kind="cached_prompt") == cached
    assert total(metrics, "agentrefine_llm_tokens_total", kind="completion") == completion
    assert total(metrics, "agentrefine_run_spend_usd") == pytest.approx(usd, rel=1e-9)

    samples = read_jsonl(sorted(out.glob("samples-*.jsonl")))
    assert len(samples) == 12
    for sample in samples:
        own = [costs for sample_id, costs in rows if sample_id == sample["id"]]
        assert len(own) == sample["meta"]["requests"]
        assert sample["meta"]["cost_usd"] == pytest.approx(sum(c[0] for c in own), abs=1e-9)
        assert sample["meta"]["usage"]["prompt_tokens"] == sum(c[1] for c in own)
        assert sample["meta"]["usage"]["cached_prompt_tokens"] == sum(c[2] for c in own)
        assert sample["meta"]["usage"]["completion_tokens"] == sum(c[3] for c in own)


def test_tokens_charged_agree_everywhere_and_sizing_lowers_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with simulator(FAST_SIM) as url:  # under a TPM limit max_tokens is sized once a stage has answers
        endpoint = {"base_url": url, "limits": {"tpm": 100_000_000, "max_concurrency": 32}}
        config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim")
        result = cli("run", "--config", str(config), "-n", "60", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(out / "state.sqlite") as db:
        rows = db.execute("SELECT usage, finish_reason, max_tokens, max_tokens_cap FROM responses").fetchall()
    prompts = [json.loads(usage)["prompt_tokens"] for usage, *_ in rows]
    used = sum(json.loads(usage)["total_tokens"] for usage, *_ in rows)
    charged = sum(p + sent for p, (_, _, sent, _) in zip(prompts, rows, strict=True))
    at_cap = sum(p + cap for p, (_, _, _, cap) in zip(prompts, rows, strict=True))
    reasked = sum(reason == "length" and sent < cap for _, reason, sent, cap in rows)
    assert charged < at_cap  # sizing spent less of the limit than the caps would have

    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens"]["charged_tokens"] == charged
    assert summary["tokens"]["charged_per_used"] == round(charged / used, 3)
    assert summary["answers_reasked"] == reasked
    assert f"tokens charged against TPM (prompt + max_tokens): {charged}" in result.stdout
    metrics = metric_values(out / "metrics.prom")
    assert total(metrics, "agentrefine_llm_tokens_charged_total") == charged
    assert total(metrics, "agentrefine_llm_requests_total", outcome="cut_below_cap") == reasked
    assert "| charged ÷ used | re-asked at cap |" in (out / "report.md").read_text()
    samples = read_jsonl(sorted(out.glob("samples-*.jsonl")))
    assert sum(sample["meta"]["requests"] for sample in samples) <= len(rows)


def test_budget_stops_the_run_and_a_larger_one_resumes_it(tmp_path: Path) -> None:
    out, n, budget, concurrency = tmp_path / "run", 40, 0.3, 4
    with simulator(FAST_SIM) as url:
        endpoint = {"base_url": url, "price": GPT_PRICE, "limits": {"max_concurrency": concurrency}}
        config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim")
        args = ["run", "--config", str(config), "-n", str(n), "--out", str(out)]
        stopped = cli(*args, "--set", f"run.max_cost_usd={budget}")
        assert stopped.returncode == 3, stopped.stderr
        assert "result: budget reached" in stopped.stdout and "larger run.max_cost_usd" in stopped.stdout
        first = json.loads((out / "summary.json").read_text())
        assert 0 < first["accepted"] < n

        with sqlite3.connect(out / "state.sqlite") as db:
            costs = [cost for (cost,) in db.execute("SELECT cost_usd FROM responses ORDER BY created")]
            stored_before = {key for (key,) in db.execute("SELECT key FROM responses")}
        spent = sum(costs)
        assert spent >= budget and first["cost_usd"] == pytest.approx(spent, abs=1e-6)
        running, crossed = 0.0, 0
        while running < budget:
            running += costs[crossed]
            crossed += 1
        after = costs[crossed:]  # answered after the budget was reached: sent before it
        assert len(after) <= concurrency, "no request may be sent once the budget is reached"
        assert spent <= budget + max(costs) * concurrency

        answered_before = sim_stats(url)["answered"]
        resume_started = time.time()
        resumed = cli(*args, "--set", "run.max_cost_usd=100")
        assert resumed.returncode == 0, resumed.stderr
        answered_after = sim_stats(url)["answered"]

    assert [k for k in stored_before if answered_after[k] != answered_before[k]] == []
    final = json.loads((out / "summary.json").read_text())
    assert final["result"] == "target reached" and final["accepted"] == n
    assert len(read_jsonl(sorted(out.glob("samples-*.jsonl")))) == n
    assert final["cost_usd"] > spent

    metrics = metric_values(out / "metrics.prom")
    this_process = total(metrics, "agentrefine_llm_cost_usd_total")
    assert this_process == pytest.approx(final["cost_usd"] - spent, abs=1e-6)  # counters: this process
    run_spend = total(metrics, "agentrefine_run_spend_usd")  # gauge: the whole run
    assert run_spend == pytest.approx(final["cost_usd"], abs=1e-6)
    assert total(metrics, "agentrefine_run_accepted_samples") == n
    assert total(metrics, "agentrefine_samples_total", outcome="accepted") == n - first["accepted"]

    store = Store(out / "state.sqlite")
    try:
        accepted_at = store.accepted_times()
    finally:
        store.close()
    assert len(accepted_at) == n
    assert accepted_at[0] < resume_started < accepted_at[-1]
    (out / "report.md").unlink()
    report = cli("report", str(out))
    assert report.returncode == 0, report.stderr
    text = (out / "report.md").read_text()
    assert f"Accepted **{n} / {n}**" in text
    assert f"${final['cost_usd']:.4f}" in text
    for stage in ("script", "trajectory"):
        assert f"| {stage} | sim | sim-gpt-4o |" in text
    pngs = sorted((out / "report").glob("*.png"))
    assert {p.stem for p in pngs} == {"throughput", "cost", "tokens", "rejects", "latency", "diversity"}
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in pngs)


def test_a_budget_reached_by_the_first_answer_pauses_every_sample(tmp_path: Path) -> None:
    out = tmp_path / "run"
    endpoint = {"embedded": FAST_SIM, "price": GPT_PRICE}
    config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim", run={"max_cost_usd": 1e-9})
    stopped = cli("run", "--config", str(config), "-n", "5", "--out", str(out))
    assert stopped.returncode == 3, stopped.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accepted"] == 0 and summary["failed_requests"] == 0
    with sqlite3.connect(out / "state.sqlite") as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM samples GROUP BY state").fetchall())
    assert set(states) == {"running"}  # paused, resumable; none recorded as failed
    again = cli("run", "--config", str(config), "-n", "5", "--out", str(out))
    assert again.returncode == 3 and "budget reached" in again.stdout  # nothing more is spent


def test_an_api_key_from_the_environment_appears_nowhere(tmp_path: Path) -> None:
    key = "sk-test-" + secrets.token_hex(20)
    out = tmp_path / "run"
    settings = {**FAST_SIM, "api_key": key, "faults": {**FAST_SIM["faults"], "p_5xx": 0.4}}
    with simulator(settings) as url:
        endpoint = {"base_url": url, "api_key_env": "AGENTREFINE_TEST_API_KEY", "price": GPT_PRICE}
        config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim")
        args = ["run", "--config", str(config), "-n", "10", "--out", str(out)]
        result = cli(*args, env={"AGENTREFINE_TEST_API_KEY": key})
        assert result.returncode == 0, result.stderr  # the key was sent: the endpoint accepted it
        refused = cli(*args, "-n", "40", env={"AGENTREFINE_TEST_API_KEY": key[:-4] + "wxyz"})
        assert refused.returncode == 2 and "401" in refused.stderr

    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"run.log", "state.sqlite", "metrics.prom", "summary.json", "report.md"} <= {p.name for p in files}
    for path in files:
        assert key.encode() not in path.read_bytes(), path
    for text in (result.stdout, result.stderr, refused.stdout, refused.stderr):
        assert key not in text and key[:-4] not in text
    log_lines = [json.loads(line) for line in (out / "run.log").read_text().splitlines()]
    assert all(line["run_id"] for line in log_lines)
    retried = [line for line in log_lines if line["event"] == "llm_attempt_failed" and "sample_id" in line]
    assert retried, "5xx answers must be logged with their sample"
    assert {"sample_id", "stage", "endpoint", "outcome"} <= set(retried[0])


def test_metrics_port_in_use_is_one_line_and_metrics_and_report_can_be_turned_off(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", {"sim": {"embedded": FAST_SIM}}, "sim")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["run", "--config", str(config), "-n", "3", "--out", str(tmp_path / "run"), "--set"]
        refused = cli(*args, f"metrics.port={port}")
        assert refused.returncode == 2
        assert refused.stderr.startswith(f"error: metrics: cannot listen on 127.0.0.1:{port}")
        assert len(refused.stderr.strip().splitlines()) == 1
        off = cli(
            *args, f"metrics.port={port}", "--set", "metrics.enabled=false", "--set", "run.report=false"
        )
    assert off.returncode == 0, off.stderr
    assert "metrics_listening" not in (tmp_path / "run" / "run.log").read_text()
    assert not (tmp_path / "run" / "report.md").exists()


def test_metrics_open_to_other_machines_are_warned_about(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", {"sim": {"embedded": FAST_SIM}}, "sim")
    args = [
        "run",
        "--config",
        str(config),
        "-n",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--set",
        "run.report=false",
    ]
    exposed = cli(*args, "--set", "metrics.host=0.0.0.0")
    assert exposed.returncode == 0, exposed.stderr
    [warning] = [line for line in exposed.stderr.splitlines() if "metrics_exposed" in line]
    assert (
        "/metrics listens on 0.0.0.0: any machine that can reach this one can read the run's metrics"
        in warning
    )
    assert "metrics.host: 127.0.0.1 keeps them on this machine" in warning
    local = cli(*args[:-2], "--out", str(tmp_path / "local"))
    assert local.returncode == 0 and "metrics_exposed" not in local.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("run.max_cost_usd=0", "run.max_cost_usd: must be above 0"),
        ("run.max_cost_usd=cheap", "run.max_cost_usd: expected a number"),
        ("metrics.port=70000", r"metrics.port: must be at least 0 and at most 65535 \(0: a free port\)"),
        ("metrics.bind=x", "metrics.bind: unknown key"),
    ],
)
def test_observability_settings_are_checked(tmp_path: Path, override: str, message: str) -> None:
    config = write_config(tmp_path / "config.yaml", {"sim": {"embedded": FAST_SIM}}, "sim")
    with pytest.raises(ConfigError, match=message):
        load_config(config, [override])
