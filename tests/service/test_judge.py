"""The judge stage (`stages.judge`) against the embedded endpoint over real HTTP, with a real
store: it catches DM flags planted wrong, its agreement is stored, summarised, reported and
exported as a metric, its policies keep, re-mask or drop a sample it disagrees with, and with
the judge off nothing is asked or changed."""

from __future__ import annotations

import asyncio
import copy
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from llm import Endpoint, EndpointChain, LLMClient, MemoryCache
from pipeline.job import SampleJob
from pipeline.judge import JudgeStage, judge_messages, judged_positions, judgement_rows
from pipeline.judgement import FLAG_KINDS, Judgement, TurnJudgement
from pipeline.settings import JudgeSettings
from service.agreement import PAPER_AGREEMENT
from service.config import ConfigError, load_config
from service.export import training_record
from service.store import Store
from service.validate import validate_run
from simulator.content import generate
from simulator.settings import SimSettings
from tests.conftest import FAST_SIM, ROOT, cli, kill_when, read_jsonl, sim_stats, simulator, write_config

PRICE = {"input": 2.5, "output": 10.0}


def run(tmp: Path, name: str, n: int, sim: dict[str, Any] | None = None, *settings: str) -> Path:
    out = tmp / name
    config = write_config(
        tmp / f"{name}.yaml", {"local": {"embedded": {**FAST_SIM, **(sim or {})}, "price": PRICE}}, "local"
    )
    result = cli("run", "--config", str(config), "-n", str(n), "--out", str(out), *settings)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with the judge off (the default)."""
    return run(tmp_path_factory.mktemp("plain"), "plain", 16)


def samples(out: Path) -> list[dict[str, Any]]:
    return read_jsonl(sorted(out.glob("samples-*.jsonl")))


def judge_turns(
    judge_url: str, records: list[dict[str, Any]], share: float = 1.0, **endpoint: Any
) -> list[Judgement | None]:
    """Each record's trajectory judged by `JudgeStage` through the LLM layer over HTTP (None:
    not among the `share` judged, and nothing asked)."""
    client = LLMClient(
        Endpoint(model="sim-gpt-4o", name="judge", base_url=judge_url, timeout_s=10.0, **endpoint),
        cache=MemoryCache(),
    )
    settings = JudgeSettings(enabled=True, share=share)
    stage = JudgeStage(EndpointChain([client]), settings, lambda job, judgement: None)

    async def go() -> list[Judgement | None]:
        try:
            jobs = []
            for record in records:
                job = SampleJob(record["id"], 0, "test", record["persona"])
                job.script, job.trajectory = record["script"], record["trajectory"]
                await stage(job)
                assert job.trajectory is not None  # keep: never dropped
                answered = [t for t in job.judgement.turns if t.judge is not None] if job.judgement else []
                assert job.requests == len(answered)  # one paid answer per judged turn, none unjudged
                jobs.append(job.judgement)
            return jobs
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_the_judge_catches_flags_planted_wrong(plain_run: Path, tmp_path: Path) -> None:
    rng = random.Random(17)
    planted: dict[tuple[str, int], str] = {}  # (sample, DM turn) -> the flag kind planted wrong
    records = []
    for record in samples(plain_run):
        record = copy.deepcopy(record)
        turns = record["trajectory"]
        dm_turns = [turns[i] for i in judged_positions(turns)]
        clean = [t for t in dm_turns if not any(t[k] for k in FLAG_KINDS)]
        flagged = [t for t in dm_turns if any(t[k] for k in FLAG_KINDS)]
        target = rng.choice(clean)  # a false flag on a correct action
        kind = rng.choice(FLAG_KINDS)
        target[kind] = True
        planted[(record["id"], target["turn"])] = kind
        if flagged:  # a real place or logic error left unflagged
            target = rng.choice(flagged)
            kind = next(k for k in FLAG_KINDS if target[k])
            target[kind] = False
            planted[(record["id"], target["turn"])] = kind
        records.append(record)
    assert len(planted) > len(records)  # real place/logic errors were among them

    with simulator(FAST_SIM) as url:
        judgements = [j for j in judge_turns(url, records) if j is not None]

    caught = {
        (record["id"], turn.turn): turn.disputed
        for record, judgement in zip(records, judgements, strict=True)
        for turn in judgement.turns
        if turn.disputed
    }
    assert caught == {key: [kind] for key, kind in planted.items()}  # every one, and nothing else
    judged = sum(len(j.turns) for j in judgements)
    assert judged > 3 * len(planted)  # most turns were judged and agreed with


def test_a_share_of_the_samples_is_judged_and_only_they_cost(plain_run: Path, tmp_path: Path) -> None:
    records = samples(plain_run)
    with simulator(FAST_SIM) as url:
        judgements = judge_turns(url, records, share=0.5)
    judged = [j for j in judgements if j is not None]
    assert 0 < len(judged) < len(records)
    with simulator(FAST_SIM) as url:  # the same samples again: the choice is the sample's
        again = judge_turns(url, records, share=0.5)
    assert [j is None for j in again] == [j is None for j in judgements]


def test_a_judge_that_fails_leaves_turns_unjudged_and_keeps_the_sample(
    plain_run: Path, tmp_path: Path
) -> None:
    records = samples(plain_run)[:2]
    with simulator({**FAST_SIM, "faults": {"p_5xx": 1.0}}) as url:
        judgements = judge_turns(url, records, max_retries=0)
    for judgement in judgements:
        assert judgement is not None and judgement.turns
        assert all(t.judge is None and t.reason.startswith("request failed") for t in judgement.turns)
        assert not judgement.disagrees and judgement.as_meta()["unjudged"] == len(judgement.turns)


def test_a_judged_run_killed_and_resumed_replays_its_judge_answers(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with simulator(FAST_SIM) as url:
        endpoint = {"base_url": url, "limits": {"max_concurrency": 32}}
        config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim")
        args = [
            "run",
            "--config",
            str(config),
            "-n",
            "24",
            "--out",
            str(out),
            "--set",
            "stages.judge.enabled=true",
        ]
        kill_when(lambda: _judge_answers(out) >= 30, *args)
        assert _judge_answers(out) >= 30
        answered_before = sim_stats(url)["answered"]
        with sqlite3.connect(out / "state.sqlite") as db:
            stored = {key for (key,) in db.execute("SELECT key FROM responses WHERE stage = 'judge'")}
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        answered_after = sim_stats(url)["answered"]
    assert stored and all(answered_after[key] == answered_before[key] for key in stored)  # none asked again
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"]["samples"] == 24 and summary["this_process"]["answers_replayed_from_store"] > 0
    assert validate_run(out).ok


def test_the_budget_stops_a_judged_run_and_it_resumes(tmp_path: Path) -> None:
    """The judge's requests are cleared with the budget like any stage's: a run whose budget
    runs out while samples are being judged stops (exit 3), and resumes to its target."""
    config = write_config(
        tmp_path / "config.yaml", {"local": {"embedded": FAST_SIM, "price": PRICE}}, "local"
    )
    args = ["run", "--config", str(config), "-n", "12", "--out", str(tmp_path / "run")]
    args += ["--set", "stages.judge.enabled=true"]
    stopped = cli(*args, "--set", "run.max_cost_usd=0.3")
    assert stopped.returncode == 3, stopped.stderr
    with sqlite3.connect(tmp_path / "run" / "state.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM responses WHERE stage = 'judge'").fetchone()[0] > 0
    resumed = cli(*args, "--set", "run.max_cost_usd=1000")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["judge"]["samples"] == 12 and summary["accepted"] == 12
    assert validate_run(tmp_path / "run").ok


def _judge_answers(out: Path) -> int:
    try:
        with sqlite3.connect(out / "state.sqlite", timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM responses WHERE stage = 'judge'").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def test_the_simulated_judge_disagrees_at_its_configured_share() -> None:
    """`flaws.judge_disagree_rate`: the share of answers flipping one flag (from the prompt)."""
    script = {"Goal": "g", "Environment": {}, "Completion Conditions": ["c"], "Available Actions": {}}
    turns = [
        {"turn": 1, "role": "Player", "Thought": "t", "Action": "go to hall"},
        {"turn": 2, "role": "DM", "Thought": "Valid command, wrong place: the key is in the hall.",
         "Observation": "o", "parameter_error": False, "place_error": True, "logic_error": False},
    ]  # fmt: skip
    messages = judge_messages(json.dumps(script), turns, 1)
    settings = SimSettings.from_dict({"flaws": {"judge_disagree_rate": 0.3}})
    answers = [
        json.loads(
            generate(
                {
                    "model": "m",
                    "messages": messages,
                    "seed": seed,
                    "response_format": {"type": "json_object"},
                },
                settings,
            ).content
        )
        for seed in range(400)
    ]
    flipped = [a for a in answers if (a["place_error"], a["logic_error"]) != (True, False)]
    assert 0.22 < len(flipped) / len(answers) < 0.38
    assert all(a["reason"] for a in answers)


def test_judge_off_asks_nothing_and_changes_nothing(plain_run: Path) -> None:
    summary = json.loads((plain_run / "summary.json").read_text())
    assert "judge" not in summary
    assert "agentrefine_judge" not in (plain_run / "metrics.prom").read_text()
    assert "## Judge" not in (plain_run / "report.md").read_text()
    with sqlite3.connect(plain_run / "state.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM responses WHERE stage = 'judge'").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM judgements").fetchone()[0] == 0
    assert all("judge" not in s["meta"] and "judge" not in s["meta"]["models"] for s in samples(plain_run))


@pytest.fixture(scope="module")
def judged_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same run with the judge on under each policy; its endpoint disagrees on purpose."""
    tmp = tmp_path_factory.mktemp("judged")
    sim = {"flaws": {"judge_disagree_rate": 0.15}}
    return {
        policy: run(
            tmp,
            policy,
            16,
            sim,
            "--set",
            "stages.judge.enabled=true",
            "--set",
            f"stages.judge.policy={policy}",
        )
        for policy in ("keep", "remask", "drop")
    }


def test_keep_reports_agreement_and_changes_no_training_line(
    judged_runs: dict[str, Path], plain_run: Path
) -> None:
    out = judged_runs["keep"]
    summary = json.loads((out / "summary.json").read_text())
    judge = summary["judge"]
    assert judge["samples"] == 16 and judge["dropped_samples"] == 0 and judge["turns"] >= 16 * 3
    assert 0 < judge["disagreeing_samples"] < 16
    for kind in FLAG_KINDS:
        counts = judge["by_kind"][kind]
        assert counts["agree"] + counts.get("false_flag", 0) + counts.get("missed_flag", 0) == judge["turns"]
        assert 0.7 < counts["agreement"] < 1.0
    assert judge["paper_gpt4_human_agreement"] == PAPER_AGREEMENT

    records = samples(out)
    assert all(r["meta"]["models"]["judge"] == "sim-gpt-4o" for r in records)
    disputed = [r for r in records if r["meta"]["judge"]["disagreements"]]
    assert len(disputed) == judge["disagreeing_samples"]
    # keep: a training line is the one the run without the judge wrote for the same sample
    plain = {r["id"]: training_record(r) for r in samples(plain_run)}
    same = [r for r in records if r["id"] in plain]
    assert same and all(training_record(r) == plain[r["id"]] for r in same)
    assert validate_run(out).ok

    metrics = (out / "metrics.prom").read_text()
    for kind in FLAG_KINDS:
        agreed = _metric(metrics, f'agentrefine_judge_flags_total{{kind="{kind}",verdict="agree"}}')
        assert agreed == judge["by_kind"][kind]["agree"]
    report = (out / "report.md").read_text()
    assert "## Judge" in report and "88%" in report
    examples = report.split("Disagreements (")[1].split("\n\n")[1].splitlines()[2:]
    assert len(examples) == min(10, judge["disagreeing_samples"])
    # the judge's cost is a stage's cost: in the samples' cost, and beside the others in the report
    with sqlite3.connect(out / "state.sqlite") as db:
        judge_cost = db.execute("SELECT SUM(cost_usd) FROM responses WHERE stage = 'judge'").fetchone()[0]
    assert judge_cost > 0 and "| judge | local | sim-gpt-4o |" in report


def test_remask_masks_the_turns_the_judge_calls_errors(judged_runs: dict[str, Path]) -> None:
    out = judged_runs["remask"]
    records = samples(out)
    masked = [(r, turn) for r in records for turn in r["meta"]["judge"]["masked"]]
    assert masked
    for record, turn in masked:
        dm = next(t for t in record["trajectory"] if t["turn"] == turn)
        assert not any(dm[k] for k in ("parameter_error", *FLAG_KINDS))  # the DM called it fine
        assistant = [m for m in record["messages"] if m["role"] == "assistant"]
        assert assistant[turn // 2 - 1]["train"] is False
        line = training_record(record)["messages"]
        assert [m for m in line if m["role"] == "assistant"][turn // 2 - 1]["train"] is False
    assert validate_run(out).ok
    export = cli("export", str(out), "--format", "sharegpt")
    assert export.returncode == 0, export.stderr


def test_drop_drops_what_the_judge_disputes_and_draws_more(judged_runs: dict[str, Path]) -> None:
    out = judged_runs["drop"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accepted"] == 16
    assert summary["dropped_by_rule"].get("judge", 0) == summary["judge"]["dropped_samples"] > 0
    assert all(not r["meta"]["judge"]["disagreements"] for r in samples(out))
    rejects = [r for r in read_jsonl([out / "rejects.jsonl"]) if r["rule"] == "judge"]
    assert rejects and all(
        r["meta"]["judge"]["disagreements"] and "disagrees" in r["message"] for r in rejects
    )
    assert validate_run(out).ok


def test_judgements_are_stored_per_turn_and_replaced_on_a_second_judging(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    try:
        store.admit("s1", 0, "file", "p", {}, "h", b"\0" * 8)
        judgement = Judgement(
            "keep",
            (
                _turn(2, dm=(True, False), judge=(True, False)),
                _turn(4, dm=(False, False), judge=None),
                _turn(6, dm=(False, False), judge=(False, True)),
            ),
        )
        store.put_judgements("s1", judgement_rows(judgement))
        store.put_judgements("s1", judgement_rows(judgement))  # a resumed sample judged again
        assert list(store.judgement_rows()) == []  # still running: not counted
        store.accept("s1", {"id": "s1"}, [], 1)
        rows = list(store.judgement_rows())
        assert [row[2] for row in rows] == [2, 4, 6]
        assert rows[1][5:7] == (None, None)
    finally:
        store.close()


def _turn(number: int, dm: tuple[bool, bool], judge: tuple[bool, bool] | None) -> TurnJudgement:
    return TurnJudgement(
        number,
        "act",
        "obs",
        dict(zip(FLAG_KINDS, dm, strict=True)),
        None if judge is None else dict(zip(FLAG_KINDS, judge, strict=True)),
        "why",
    )


def _metric(text: str, series: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(series)))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages.judge.policy=mask", "stages.judge.policy: expected keep, remask, drop, got 'mask'"),
        ("stages.judge.share=0", "stages.judge.share: must be above 0"),
        ("stages.judge.endpoint=nowhere", "stages.judge.endpoint: unknown endpoint 'nowhere'"),
    ],
)
def test_judge_settings_are_checked_with_their_place(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(ROOT / "config.yaml", [override])
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_the_judge_is_off_by_default_and_on_joins_the_stages_in_use() -> None:
    config = load_config(ROOT / "config.yaml")
    assert not config.stages.judge.enabled and "judge" not in config.stages_in_use()
    on = load_config(ROOT / "config.yaml", ["stages.judge.enabled=true", "stages.judge.endpoint=local_b"])
    assert on.stages_in_use()["judge"].temperature == 0.0
    assert "local_b" in on.endpoints_in_use()
