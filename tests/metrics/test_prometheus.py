"""The shipped monitoring files against the real Prometheus tools (Debian's `prometheus`
package: `.ci/run` installs it; locally the tests skip, with the reason, where it is missing).

- `promtool check rules` / `test rules` / `check config` on metrics/monitoring/;
- `promtool check metrics` on a scrape of a live run;
- a real Prometheus server (free port, temporary storage, 1 s scrape and rule interval)
  scrapes a real run with the shipped rules loaded, once in one process and once on 2 Ray
  workers (a local cluster, the driver serving every worker's metrics); then every PromQL
  expression of the Grafana dashboard and of the rules is evaluated through the HTTP API and
  must return data (the per-worker ones only on the cluster run, and nothing in one process).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from metrics.prometheus import WORKER_COUNTERS, WORKER_GAUGES
from tests.conftest import FAST_SIM, ROOT, write_config

MONITORING = ROOT / "metrics" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "agentrefine-dashboard.json"
RULES = MONITORING / "rules.yml"
# Grafana's own variables, as Grafana would expand them for a short range; `$instance` is "All"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}
COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")
METRIC_NAME = re.compile(r"\bagentrefine_[a-z0-9_]+\b")
# the series of a cluster run's workers, one by one (served by the driver)
WORKER_SERIES = {f"agentrefine_worker_{name}" for name in WORKER_GAUGES} | {
    f"agentrefine_worker_{name}_total" for name in WORKER_COUNTERS
}
WORKERS_ROW = "Cluster workers"
WAIT_S = 180.0


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian: apt-get install -y prometheus; .ci/run does this)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def dashboard_panels() -> list[tuple[str | None, dict[str, Any]]]:
    """Every panel with a query, with the title of the row it is in (a collapsed row holds its
    panels; an open one is followed by them)."""
    found, row = [], None
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            found += [(row, inner) for inner in panel.get("panels", [])]
        else:
            found.append((row, panel))
    return found


def dashboard_expressions() -> list[tuple[str, str]]:
    found = []
    for _, panel in dashboard_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((f"panel {panel['title']!r} {target['refId']}", expr))
    return found


def rule_expressions() -> list[tuple[str, str]]:
    """Recording rules as they are; alerts with every comparison made a `bool` one, so that
    the expression returns its inputs' joined value whether or not the alert would fire."""
    found = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                found.append((f"record {rule['record']}", rule["expr"]))
            else:
                found.append((f"alert {rule['alert']}", as_bool(rule["expr"])))
    return found


def as_bool(expr: str) -> str:
    """`a > b` -> `a > bool b` outside label matchers (where `!=` is a matcher)."""
    out, depth, i = [], 0, 0
    while i < len(expr):
        char = expr[i]
        depth += {"{": 1, "}": -1}.get(char, 0)
        match = COMPARISON.match(expr, i) if depth == 0 else None
        if match:
            out.append(f"{match.group(1)} bool")
            i = match.end()
            continue
        out.append(char)
        i += 1
    return "".join(out)


def test_as_bool_rewrites_comparisons_only() -> None:
    assert as_bool('a{x!="1"} > on (job) b and c == 0') == 'a{x!="1"} > bool on (job) b and c == bool 0'


def test_shipped_rules_and_prometheus_config_pass_promtool() -> None:
    promtool = tool("promtool")
    for args in (
        ["check", "rules", "rules.yml"],
        ["test", "rules", "rules.test.yml"],
        ["check", "config", "prometheus.yml"],
    ):
        result = subprocess.run([promtool, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(args)}: {result.stdout}{result.stderr}"
        assert "SUCCESS" in result.stdout + result.stderr


def of_workers(expr: str) -> bool:
    """Whether the expression reads only the workers' own series (present on a cluster run)."""
    names = set(METRIC_NAME.findall(expr))
    return bool(names) and names <= WORKER_SERIES


def test_dashboard_is_importable_with_the_datasource_as_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36 and "id" not in dashboard
    panels = [panel for _, panel in dashboard_panels()]
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    ids = [panel["id"] for panel in panels + rows]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    titles = " | ".join(panel["title"].lower() for panel in panels)
    for wanted in (
        "throughput",
        "accepted per minute",
        "cost per hour",
        "cost per accepted sample",
        "projected cost",
        "tokens per second by model",
        "latency quantiles",
        "429",
        "errors",
        "rejects by rule",
        "dedup rate",
        "work in flight",
        "answers per minute by worker",
        "samples in flight by worker",
        "requests in flight by worker",
        "cpu use by worker",
        "workers up and replaced",
    ):
        assert wanted in titles, wanted


def test_the_workers_row_shows_every_worker_series_and_the_run_wide_panels_read_none() -> None:
    """The run-wide panels are the driver's series, already summed over the workers: a worker
    series summed into them would count the work twice. The workers' row shows each of them."""
    shown = set()
    for row, panel in dashboard_panels():
        for target in panel["targets"]:
            names = set(METRIC_NAME.findall(target["expr"]))
            if row == WORKERS_ROW:
                assert of_workers(target["expr"]), (panel["title"], target["expr"])
                shown |= names
            else:
                assert not any(name.startswith("agentrefine_worker_") for name in names), panel["title"]
    assert shown == WORKER_SERIES


@dataclass
class LiveRun:
    metrics_url: str
    prometheus_url: str
    process: subprocess.Popen[bytes]
    workers: int  # 0: one process


def needs_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        reason = "Ray is not installed (the extra `cluster`: make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def query(prometheus: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
    body = get_json(f"{prometheus}/api/v1/query?{urllib.parse.urlencode(params)}")
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(what: str, condition: Any, live: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert live.poll() is None, (
            f"the run exited ({live.returncode}) before {what}: {log.read_text()[-2000:]}"
        )
        try:
            found = condition()
        except (OSError, ValueError):
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {WAIT_S:.0f} s waiting for {what}")


def persona_file(path: Path, count: int) -> Path:
    lines = []
    for i in range(count):
        lines.append(
            lines[i - 5] if i % 7 == 6 else f"A {['baker', 'pilot', 'nurse', 'judge'][i % 4]} number {i}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module", params=[0, 2], ids=["one-process", "2-workers"])
def live_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    """A real run (far from done: it runs until the tests end) scraped by a real Prometheus: in
    one process, then on 2 Ray workers (a local cluster for the run)."""
    workers: int = request.param
    prometheus = tool("prometheus")
    if workers:
        needs_ray()
    tmp = tmp_path_factory.mktemp("prometheus")
    simulator = {**FAST_SIM, "rpm": 1500, "faults": {**FAST_SIM["faults"], "p_5xx": 0.02, "p_reset": 0.01}}
    endpoint = {
        "embedded": simulator,
        "limits": {"rpm": 6000, "tpm": 50_000_000, "max_concurrency": 16},
        "price": {"input": 2.5, "cached_input": 1.25, "output": 10.0},
    }
    config = write_config(tmp / "config.yaml", {"sim": endpoint}, "sim", run={"max_cost_usd": 10000.0})
    out, personas = tmp / "run", persona_file(tmp / "personas.txt", 6000)
    command = f"run --config {config} -n 100000 --out {out} --personas {personas}".split()
    command += ["--set", "stages.judge.enabled=true"]  # the judge's series feed a panel too
    command += ["--workers", str(workers)] if workers else []
    run = subprocess.Popen(
        [sys.executable, "-m", "service", *command],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server: subprocess.Popen[bytes] | None = None
    try:
        log = out / "run.log"

        def metrics_url() -> str | None:
            for line in log.read_text().splitlines():
                event = json.loads(line)
                if event["event"] == "metrics_listening":
                    return event["url"]
            return None

        url = wait_for("the metrics URL in run.log", metrics_url, run, log)
        target = urllib.parse.urlsplit(url).netloc
        port = free_port()
        (tmp / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": "agentrefine", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        with (tmp / "prometheus.log").open("wb") as server_log:
            server = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=server_log,
                stderr=server_log,
            )
        api = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert server is not None and server.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            return query(api, "up") != []

        wait_for("Prometheus to scrape the run", ready, run, log)
        for what, expr in (
            ("ten scrapes", "count_over_time(agentrefine_run_target_samples[5m]) >= 10"),
            ("accepted samples", "agentrefine_run_accepted_samples > 0"),
            ("duplicate personas", 'sum(agentrefine_samples_total{outcome="duplicate"}) > 0'),
            ("judged flags", 'sum(agentrefine_judge_flags_total{verdict!="unjudged"}) > 0'),
            ("the recorded budget-pace projection", "agentrefine:projected_cost_usd:pace15m"),
            *([("the workers' answers", "sum(agentrefine_worker_answers_total) > 100")] if workers else []),
        ):
            wait_for(what, lambda expr=expr: query(api, expr), run, log)
        yield LiveRun(url, api, run, workers)
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
        if server is not None:
            server.terminate()
            server.wait(30)


def test_promtool_check_metrics_on_a_live_scrape(live_run: LiveRun) -> None:
    promtool = tool("promtool")
    with urllib.request.urlopen(live_run.metrics_url, timeout=10) as response:
        scrape = response.read()
    assert b"agentrefine_llm_requests_total" in scrape
    result = subprocess.run([promtool, "check", "metrics"], input=scrape, capture_output=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


def test_every_dashboard_and_rule_expression_returns_data(live_run: LiveRun) -> None:
    """On a cluster run every expression has data; in one process, all but the workers' ones,
    which have none (no worker series exist without workers)."""
    api = live_run.prometheus_url
    at = time.time()
    problems = []
    expressions = dashboard_expressions() + rule_expressions()
    assert any(of_workers(expr) for _, expr in expressions)
    for where, expr in expressions:
        result = query(api, expr, at)
        values = [float(series["value"][1]) for series in result]
        if not live_run.workers and of_workers(expr):
            if values:
                problems.append(f"{where}: worker series in a one-process run: {expr}")
        elif not values:
            problems.append(f"{where}: no data: {expr}")
        elif not any(math.isfinite(v) for v in values):
            problems.append(f"{where}: only {values}: {expr}")
    assert not problems, "\n".join(problems)
    assert len(expressions) >= 40

    instances = get_json(f"{api}/api/v1/label/instance/values?match[]=agentrefine_run_target_samples")["data"]
    assert urllib.parse.urlsplit(live_run.metrics_url).netloc in instances  # the $instance variable's query
    rules = get_json(f"{api}/api/v1/rules")["data"]["groups"]
    evaluated = [rule for group in rules for rule in group["rules"]]
    assert len(evaluated) == 7 and all(rule["health"] == "ok" for rule in evaluated), evaluated


def test_the_run_wide_answers_are_the_sum_of_the_workers_answers(live_run: LiveRun) -> None:
    """The driver applies every worker's request events to its own series once: at any scrape,
    the answered requests of the run-wide series (the dashboard's throughput, cost and token
    panels) equal the sum of the per-worker answers: none counted twice, none lost."""
    api = live_run.prometheus_url
    if not live_run.workers:
        assert query(api, '{__name__=~"agentrefine_worker_.+"}') == []
        return
    up = query(api, "agentrefine_worker_up")
    assert sorted(series["metric"]["worker"] for series in up) == [str(i) for i in range(live_run.workers)]
    by_workers = "sum(agentrefine_worker_answers_total)"
    run_wide = 'sum(agentrefine_llm_requests_total{outcome=~"ok|cut_below_cap"})'
    both = query(  # one query: both sums from the same scrapes
        api,
        f'label_replace({by_workers}, "sum", "of workers", "", "") '
        f'or label_replace({run_wide}, "sum", "run-wide", "", "")',
    )
    answers = {series["metric"]["sum"]: float(series["value"][1]) for series in both}
    assert answers["of workers"] == answers["run-wide"] > 100, answers
