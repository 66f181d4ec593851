"""Batch mode end to end over real HTTP (the embedded endpoint's files and batches API) and a
real SQLite store: valid samples at batch prices, a SIGKILL while batches run then a resume
that creates no batch twice, failed / expired batches and per-request errors sent to the next
round, the `batches` command, and an endpoint without a batch API refused in one line."""

from __future__ import annotations

import asyncio
import contextvars
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from llm import Budget, BudgetExhausted, Endpoint
from llm.batch import BatchCollector, _Asked
from llm.config import BatchSettings, Price
from llm.sizing import LEARN_FROM, MARGIN
from service.batch_plan import expected_rounds
from simulator.batches import BatchApi
from simulator.settings import SimSettings
from simulator.state import SimState
from tests.conftest import cli, kill_when, write_config, write_personas

FAST_BATCHES = {"validating_s": 0.1, "in_progress_s": 0.6, "finalizing_s": 0.1}
BATCH = {"gather_s": 0.3, "poll_s": 0.2, "poll_max_s": 0.5}


def _config(tmp_path: Path, n: int, batches: dict[str, Any] | None = None, **embedded: Any) -> Path:
    path = write_config(
        tmp_path / "config.yaml",
        {
            "sim": {
                "embedded": {
                    "seed": 3,
                    "latency_median_s": 0.01,
                    "batches": {**FAST_BATCHES, **(batches or {})},
                    **embedded,
                },
                "price": {"input": 2.5, "output": 10.0},
            }
        },
        "sim",
        run={"n": n, "mode": "batch", "report": False, "max_in_flight": 1000},
        stages={"script": {}, "trajectory": {}, "personas": {}},
    )
    config = path.read_text() + "batch: " + json.dumps(BATCH) + "\n"
    path.write_text(config)
    return path


def _endpoint_stats(out: Path) -> dict[str, Any]:
    """The embedded endpoint's own batch counters, read from its state directory."""
    return BatchApi(SimState(SimSettings()), str(out / "endpoint-sim-batches")).stats()


def _run(config: Path, out: Path, personas: Path, *extra: str) -> Any:
    return cli("run", "--config", str(config), "--out", str(out), "--personas", str(personas), *extra)


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def _assert_valid(out: Path, n: int) -> None:
    check = cli("validate", str(out))
    assert check.returncode == 0, check.stdout
    assert check.stdout.splitlines()[-1].startswith(f"{n} samples, 0 problems")


def test_batch_run_gives_valid_samples_at_half_price(tmp_path: Path) -> None:
    out, personas = tmp_path / "out", write_personas(tmp_path / "p.txt", 80)
    result = _run(_config(tmp_path, 30), out, personas)
    assert result.returncode == 0, result.stderr
    assert "batch mode: 30 samples to accept" in result.stderr and "rounds expected" in result.stderr
    _assert_valid(out, 30)
    batch = _summary(out)["batch"]
    assert batch["rounds"] >= 2  # a script round, then a trajectory round at least
    # none left running: a batch still running at the target is cancelled, not paid in full
    assert set(batch["by_status"]) <= {"completed", "cancelled", "cancelling"}
    assert sum(batch["by_status"].values()) == batch["batches"]
    assert batch["saved_usd"] == pytest.approx(batch["online_cost_usd"] / 2, rel=1e-6)
    assert "saved $" in result.stdout
    stats = _endpoint_stats(out)
    assert stats["created"] == batch["batches"]
    assert stats["answered"] == batch["answers"]  # every answer paid for is one the run stored
    assert stats["answered_twice"] == 0 and stats["inputs_batched_twice"] == 0
    listing = cli("batches", str(out))
    assert listing.returncode == 0 and f"{batch['batches']} batches, 0 not finished" in listing.stdout


def test_sigkill_while_batches_run_then_resume_creates_no_batch_twice(tmp_path: Path) -> None:
    out, personas = tmp_path / "out", write_personas(tmp_path / "p.txt", 80)
    config = _config(tmp_path, 20, {"in_progress_s": 2.0})
    db = out / "state.sqlite"

    def batch_in_progress() -> bool:
        if not db.exists():
            return False
        try:
            with sqlite3.connect(db) as conn:
                row = conn.execute(
                    "SELECT COUNT(*) FROM batches WHERE round >= 2 AND batch_id IS NOT NULL"
                ).fetchone()
        except sqlite3.Error:
            return False
        return row[0] > 0

    kill_when(
        batch_in_progress, "run", "--config", str(config), "--out", str(out), "--personas", str(personas)
    )
    before = _endpoint_stats(out)["created"]
    assert before >= 2
    result = _run(config, out, personas)
    assert result.returncode == 0, result.stderr
    assert "batches of an earlier process resumed" in result.stderr
    _assert_valid(out, 20)
    assert _summary(out)["accepted"] == 20
    stats = _endpoint_stats(out)
    assert stats["answered_twice"] == 0 and stats["inputs_batched_twice"] == 0
    with sqlite3.connect(db) as conn:
        ids = [row[0] for row in conn.execute("SELECT batch_id FROM batches WHERE batch_id IS NOT NULL")]
        keys = conn.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM responses").fetchone()
    assert len(ids) == len(set(ids)) == stats["created"]
    assert keys[0] == keys[1]


def test_failed_expired_batches_and_request_errors_go_to_the_next_round(tmp_path: Path) -> None:
    out, personas = tmp_path / "out", write_personas(tmp_path / "p.txt", 60)
    config = _config(tmp_path, 10, {"fail_first": 1, "expire_first": 1, "p_request_error": 0.1})
    result = _run(config, out, personas)
    assert result.returncode == 0, result.stderr
    _assert_valid(out, 10)
    summary = _summary(out)
    assert summary["batch"]["by_status"]["failed"] == 1 and summary["batch"]["by_status"]["expired"] == 1
    assert summary["this_process"]["requests"]["batch_error"] > 0
    assert _endpoint_stats(out)["answered_twice"] == 0


def test_batches_cancel_then_resume(tmp_path: Path) -> None:
    out, personas = tmp_path / "out", write_personas(tmp_path / "p.txt", 40)
    config = _config(tmp_path, 5, {"in_progress_s": 600.0})
    db = out / "state.sqlite"

    def created() -> bool:
        try:
            with sqlite3.connect(db) as conn:
                return (
                    conn.execute("SELECT COUNT(*) FROM batches WHERE batch_id IS NOT NULL").fetchone()[0] > 0
                )
        except sqlite3.Error:
            return False

    kill_when(created, "run", "--config", str(config), "--out", str(out), "--personas", str(personas))
    listing = cli("batches", str(out))
    assert "1 not finished" in listing.stdout
    cancelled = cli("batches", str(out), "--cancel", "--config", str(config))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelling" in cancelled.stdout
    faster = _config(tmp_path, 5)
    result = _run(faster, out, personas)
    assert result.returncode == 0, result.stderr
    _assert_valid(out, 5)
    assert _summary(out)["batch"]["by_status"]["cancelled"] == 1


def test_an_endpoint_without_a_batch_api_is_refused_in_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path, 5, {"enabled": False})
    result = _run(config, tmp_path / "out", write_personas(tmp_path / "p.txt", 10))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: run.mode=batch: endpoint sim (sim-gpt-4o) has no batch API (DeepSeek and vLLM have none): "
        "use run.mode=online for it"
    ]


def test_expected_rounds_and_committed_money() -> None:
    assert expected_rounds(10, 12, 2, 3, 1.0, 1.0) == 2  # every check passes: script, trajectory
    assert expected_rounds(10, 12, 2, 3, 0.8, 0.65) > 2
    assert expected_rounds(10, 12, 2, 3, 0.0, 0.5) is None
    budget = Budget(1.0, spent_usd=0.5)
    budget.commit("file-1", 0.6)
    with pytest.raises(BudgetExhausted, match="committed by batches"):
        budget.check()
    budget.release("file-1")
    budget.check()


def test_a_batch_commits_what_its_stage_answers_cost_once_they_are_known() -> None:
    # until the batches have answered LEARN_FROM requests of a stage, a request commits its
    # prompt and the stage's cap; then its prompt and a long answer of the stage (>= p90)
    endpoint = Endpoint(model="m", name="e", base_url="http://127.0.0.1:9/v1", price=Price(2.0, None, 8.0))
    collector = BatchCollector(endpoint, "http://127.0.0.1:9/v1", "k", BatchSettings(), None, None, [].append)  # type: ignore[arg-type]
    item = _Asked("k", {}, "script", 12_288, 12_288, 1000 + 12_288, contextvars.Context())
    at_cap = collector._commitment(item)
    assert at_cap == pytest.approx((1000 * 1.0 + 12_288 * 4.0) / 1e6)  # half the list price
    body = {
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 1000},
    }
    for _ in range(LEARN_FROM):
        collector._answer(item, body)
    assert collector._commitment(item) == pytest.approx((1000 * 1.0 + math.ceil(1000 * MARGIN) * 4.0) / 1e6)
    asyncio.run(collector.aclose())
