"""Fault injection through the whole service (the CLI, real HTTP against the simulator's
fault settings): every transport and content fault at once is survived and counted
exactly; 401/403/404 stop the run at once with one line and never print the key; an
endpoint that fails every try trips the breaker and the run resumes once it is back; a
400 fails only its own sample, while 400 after 400 stops the run as a configuration error."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.validate import validate_run
from tests.conftest import (
    FAST_SIM,
    assert_intact,
    cli,
    output_files,
    sim_stats,
    simulator,
    write_config,
    write_personas,
)

MAX_IN_FLIGHT = 24  # write_config's run.max_in_flight: no more samples than this ever start


def run(
    config: Path, out: Path, n: int, personas: Path, *more: str, env: dict[str, str] | None = None
) -> Any:
    args = ["--config", str(config), "-n", str(n), "--out", str(out), "--personas", str(personas), *more]
    return cli("run", *args, env=env)


def sample_states(out: Path) -> Counter[str]:
    with sqlite3.connect(out / "state.sqlite") as db:
        return Counter(dict(db.execute("SELECT state, COUNT(*) FROM samples GROUP BY state")))


def endpoint_outcomes(url: str) -> Counter[str]:
    """The endpoint's own count of what it did, in the client's outcome names. A request whose
    client went away (timed out, or was cancelled when the run reached its target) is counted
    the moment the connection closes."""
    deadline = time.monotonic() + 10
    while (stats := sim_stats(url))["in_flight"]["now"] and time.monotonic() < deadline:
        time.sleep(0.1)
    s = Counter(stats["by_status"])
    return Counter(
        {
            "ok": s["200"] + s["length"],
            "5xx": s["500"] + s["502"] + s["503"],
            "reset": s["reset"],
            "bad_response": s["truncated"] + s["empty_choices"],
            "gone": s["hang"] + s["499"],
        }
    )


def test_every_fault_at_once_is_survived_and_counted(tmp_path: Path) -> None:
    # each fault is drawn per request; over the ~80 requests of 20 samples the chance that a
    # fault of 10% never occurs is below 0.03%
    faults = {
        "p_5xx": 0.1,
        "p_reset": 0.1,
        "p_hang": 0.1,
        "p_truncated_body": 0.1,
        "p_empty_choices": 0.06,
        "p_length": 0.1,
        "hang_s": 6.0,
    }
    out = tmp_path / "run"
    with simulator({**FAST_SIM, "faults": faults}) as url:
        config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": url, "timeout_s": 1.5}}, "sim")
        result = cli("run", "--config", str(config), "-n", "20", "--out", str(out))
        assert result.returncode == 0, result.stderr
        summary = json.loads((out / "summary.json").read_text())
        client = Counter(summary["this_process"]["requests"])
        endpoint = endpoint_outcomes(url)
        length_cut = sim_stats(url)["by_status"].get("length", 0)

    assert summary["accepted"] == 20 and validate_run(out).ok
    # every fault the endpoint injected was seen and classified right: complete answers (ok,
    # 5xx, cut or empty bodies) exactly; connection faults at least as often as injected (on a
    # loaded machine a connection can also drop or time out before the endpoint has read it),
    # less the requests cancelled when the target was reached (at most one per sample in flight)
    for kind in ("ok", "5xx", "bad_response"):
        assert client[kind] == endpoint[kind], kind
    assert client["reset"] + client["timeout"] + MAX_IN_FLIGHT >= endpoint["reset"] + endpoint["gone"]
    assert all(client[kind] > 0 for kind in ("5xx", "reset", "bad_response", "timeout"))
    assert length_cut > 0  # cut answers went back to the rules (S1/T1) and were re-asked
    assert re.search(r"requests .*\bok \d+", result.stdout) and "5xx" in result.stdout  # in the summary


@pytest.mark.parametrize(
    ("status", "sim", "endpoint"),
    [
        ("401", {"api_key": "sk-the-right-key"}, {"api_key_env": "AGENTREFINE_TEST_KEY"}),
        ("403", {"denied_models": ["sim-gpt-4o"]}, {}),
        ("404", {}, {"model": "no-such-model"}),
    ],
)
def test_refusal_stops_the_run_at_once_with_one_line(
    tmp_path: Path, status: str, sim: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    personas = write_personas(tmp_path / "personas.txt", 40)
    out = tmp_path / "run"
    secret = "sk-wrong-secret-0123456789"
    env = {"AGENTREFINE_TEST_KEY": secret}
    with simulator(FAST_SIM) as url:  # earlier output, made while the endpoint still worked
        config = write_config(tmp_path / "ok.yaml", {"sim": {"base_url": url}}, "sim")
        assert run(config, out, 5, personas).returncode == 0
    before = output_files(out)
    with simulator({**FAST_SIM, **sim}) as url:
        config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": url, **endpoint}}, "sim")
        allow = ["--allow-change", "stages"] if "model" in endpoint else []  # resumed with another model
        result = run(config, out, 20, personas, *allow, env=env)
        requests = sim_stats(url)["requests"]

    assert result.returncode == 2
    *applied, line = result.stderr.strip().splitlines()
    assert [said.split(":")[0] for said in applied] == ["resume"]  # N 5 -> 20, said
    assert line.startswith(f"error: endpoint sim ({endpoint.get('model', 'sim-gpt-4o')}) answered {status}")
    assert requests <= MAX_IN_FLIGHT  # stopped at once, not one refusal per persona
    assert sample_states(out)["failed"] == 0  # nothing burned: the refused samples resume later
    assert_intact(before, out)
    written = b"".join(p.read_bytes() for p in out.iterdir() if p.is_file())
    assert secret.encode() not in written and secret not in result.stderr + result.stdout


def test_endpoint_down_trips_the_breaker_and_the_run_resumes_after(tmp_path: Path) -> None:
    personas = write_personas(tmp_path / "personas.txt", 40)
    out = tmp_path / "run"
    breaker = {"failures": 6, "outage_s": 0.0}
    with simulator({**FAST_SIM, "faults": {"p_5xx": 1.0}}) as url:
        config = write_config(tmp_path / "down.yaml", {"sim": {"base_url": url, "breaker": breaker}}, "sim")
        down = run(config, out, 10, personas)
        requests = sim_stats(url)["requests"]
    assert down.returncode == 2
    [line] = down.stderr.strip().splitlines()
    assert line.startswith("error: endpoint sim (sim-gpt-4o): ") and "tries failed in a row" in line
    assert line.endswith("then run the same command to resume")
    assert requests <= breaker["failures"] + MAX_IN_FLIGHT  # not a retry storm through every persona
    assert sample_states(out)["failed"] == 0

    with simulator(FAST_SIM) as url:
        config = write_config(tmp_path / "up.yaml", {"sim": {"base_url": url}}, "sim")
        back = run(config, out, 10, personas)
    assert back.returncode == 0, back.stderr
    assert "accepted: 10 / 10" in back.stdout and validate_run(out).ok
    assert sample_states(out)["failed"] == 0


def test_one_bad_request_fails_its_sample_and_the_run_goes_on(tmp_path: Path) -> None:
    refused = "A chemist who explains nerve agent synthesis."
    personas = write_personas(tmp_path / "personas.txt", 12)
    personas.write_text(refused + "\n" + personas.read_text())  # first in line
    out = tmp_path / "run"
    with simulator({**FAST_SIM, "refused_phrases": ["nerve agent"]}) as url:
        endpoint = {"base_url": url, "breaker": {"bad_requests": 3}}
        config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim")
        result = run(config, out, 10, personas)
    assert result.returncode == 0, result.stderr
    assert "accepted: 10 / 10" in result.stdout
    failed = [json.loads(r) for r in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["persona"]) for r in failed] == [("failed", refused)]
    assert "answered 400" in failed[0]["message"]


def test_bad_request_after_bad_request_stops_the_run(tmp_path: Path) -> None:
    personas = write_personas(tmp_path / "personas.txt", 40)
    out = tmp_path / "run"
    with simulator({**FAST_SIM, "max_context_tokens": 50}) as url:  # a model too small for the prompts
        endpoint = {"base_url": url, "breaker": {"bad_requests": 3}}
        config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim")
        result = run(config, out, 10, personas)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "3 requests in a row refused as invalid" in line and "maximum context length" in line
    assert sample_states(out)["failed"] <= 2  # the ones before the streak was long enough
