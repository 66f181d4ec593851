"""End to end through the CLI: the service starts the embedded endpoint itself, generates
N samples that meet the contract, exercises every rule and both recovery paths; switching
the generator is one line of config."""

from __future__ import annotations

import json
from pathlib import Path

from service.validate import validate_run
from tests.conftest import FAST_SIM, cli, read_jsonl, sim_stats, simulator, write_config

ALL_FLAWED = {"script_rate": 1.0, "trajectory_rate": 1.0, "retry_rate_factor": 0.4}


def test_run_n50_on_the_embedded_endpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "config.yaml",
        {"local": {"embedded": {**FAST_SIM, "flaws": ALL_FLAWED}, "price": {"input": 2.5, "output": 10.0}}},
        "local",
    )
    result = cli("run", "--config", str(config), "-n", "50", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "accepted: 50 / 50" in result.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["result"] == "target reached"
    assert set(summary["check_failures_by_rule"]) >= {f"S{i}" for i in range(1, 8)} | {
        f"T{i}" for i in range(1, 8)
    }
    assert summary["recovery"]["continued_from_prefix"] > 0
    assert summary["recovery"]["regenerated_trajectory"] > 0
    assert summary["tokens"]["total_tokens"] > 0 and summary["cost_usd"] > 0

    samples = read_jsonl(sorted(out.glob("samples-*.jsonl")))
    assert len(samples) == 50
    assert len({s["id"] for s in samples}) == 50
    assert len({s["persona"] for s in samples}) == 50
    report = validate_run(out)
    assert report.ok, report.problems[:5]
    assert report.samples == 50 and report.masked_turns >= 100  # >= 2 masked error turns each
    for sample in samples:
        assert sample["meta"]["usage"]["completion_tokens"] > 0
        assert sample["meta"]["cost_usd"] > 0

    rejects = read_jsonl([out / "rejects.jsonl"])
    dropped = [r for r in rejects if r["kind"] == "dropped"]
    assert all(r["rule"][0] in "ST" and r["message"] for r in dropped)
    assert sum(summary["dropped_by_rule"].values()) == len(dropped)


def test_switching_the_generator_is_one_line(tmp_path: Path) -> None:
    with (
        simulator({**FAST_SIM, "models": ["sim-a"]}) as url_a,
        simulator({**FAST_SIM, "models": ["sim-b"]}) as url_b,
    ):
        endpoints = {"a": {"base_url": url_a, "model": "sim-a"}, "b": {"base_url": url_b, "model": "sim-b"}}
        config = write_config(tmp_path / "config.yaml", endpoints, "a")
        assert cli("run", "--config", str(config), "-n", "5", "--out", str(tmp_path / "ra")).returncode == 0
        text = config.read_text()
        config.write_text(text.replace("generator: a", "generator: b", 1))
        assert len(set(text.splitlines()) ^ set(config.read_text().splitlines())) == 2  # one line changed
        result = cli("run", "--config", str(config), "-n", "5", "--out", str(tmp_path / "rb"))
        assert result.returncode == 0, result.stderr
        a_requests, b_requests = sim_stats(url_a)["requests"], sim_stats(url_b)["requests"]
    assert a_requests > 0 and b_requests > 0
    samples = read_jsonl(sorted((tmp_path / "rb").glob("samples-*.jsonl")))
    assert len(samples) == 5
    assert {m for s in samples for m in s["meta"]["models"].values()} == {"sim-b"}
    first_run = read_jsonl(sorted((tmp_path / "ra").glob("samples-*.jsonl")))
    assert {m for s in first_run for m in s["meta"]["models"].values()} == {"sim-a"}


def test_persona_file_with_duplicates_and_bad_lines(tmp_path: Path) -> None:
    personas = [
        f"A {job} who works in {city}."
        for job, city in [
            ("baker", "Porto"),
            ("nurse", "Oslo"),
            ("pilot", "Lima"),
            ("chemist", "Kyoto"),
            ("ranger", "Banff"),
            ("archivist", "Ghent"),
        ]
    ]
    lines = [json.dumps({"persona": p, "lang": "en"}) for p in personas]
    lines.insert(2, json.dumps({"persona": personas[0].upper()}))  # case variant: duplicate
    lines.insert(4, "{broken json")
    lines.insert(5, json.dumps({"persona": "  " + personas[1].replace(" ", "  ") + " "}))  # spacing variant
    lines.append(json.dumps({"text": "no persona key"}))
    persona_file = tmp_path / "personas.jsonl"
    persona_file.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    config = write_config(tmp_path / "config.yaml", {"local": {"embedded": FAST_SIM}}, "local")

    result = cli(
        "run", "--config", str(config), "-n", "20", "--personas", str(persona_file), "--out", str(out)
    )

    assert result.returncode == 4, result.stderr  # 6 distinct personas for 20: stopped short
    summary = json.loads((out / "summary.json").read_text())
    assert summary["result"].startswith("stopped short: the persona source ran out, at ")
    assert summary["persona_duplicates_skipped"] == 2
    assert summary["malformed_persona_lines"] == 2
    samples = read_jsonl(sorted(out.glob("samples-*.jsonl")))
    assert 0 < len(samples) <= 6 and all(s["meta"]["persona_meta"] == {"lang": "en"} for s in samples)
    rejects = read_jsonl([out / "rejects.jsonl"])
    malformed = [r for r in rejects if r["kind"] == "malformed"]
    assert [(r["source"], r["message"].split(":")[0]) for r in malformed] == [
        (f"{persona_file}:5", "invalid JSON"),
        (f"{persona_file}:10", "missing or empty 'persona' string"),
    ]
    assert {r["duplicate_of"] for r in rejects if r["kind"] == "duplicate"} <= {s["id"] for s in samples}
    assert f"{persona_file}:5" in result.stderr  # the skipped line is reported as it happens

    args = ["run", "--config", str(config), "--personas", str(persona_file), "--strict"]
    resumed = cli(*args, "-n", "20", "--out", str(out))
    assert resumed.returncode == 4  # the bad lines were consumed before: strict mode has nothing to stop on
    strict = cli(*args, "-n", "5", "--out", str(tmp_path / "strict"))
    assert strict.returncode == 2
    expected = f"error: {persona_file}:5: invalid JSON: unexpected character, expected a string key"
    assert strict.stderr.strip() == expected
