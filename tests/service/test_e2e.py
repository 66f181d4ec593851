"""End to end through the CLI: the service starts the embedded endpoint itself, generates
N samples that meet the contract, exercises every rule and both recovery paths; switching
the generator is one line of config."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from service.export import MASKS
from service.formats import export_run
from service.validate import validate_run
from tests.conftest import CITIES, FAST_SIM, JOBS, cli, read_jsonl, sim_stats, simulator, write_config

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

    assert_dataset_card(out, samples, summary)
    assert_ablation_exports(out, samples)


def assert_dataset_card(out: Path, samples: list[dict], summary: dict) -> None:
    """README.md: Hugging Face YAML front matter with the fields the Hub reads, then the text."""
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "apache-2.0" and meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["text-generation"]
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "train-*.jsonl"}]}
    ]
    info = meta["dataset_info"]
    assert info["splits"] == [{"name": "train", "num_examples": len(samples)}]
    line = read_jsonl(sorted(out.glob("train-*.jsonl")))[0]
    assert [f["name"] for f in info["features"]] == list(line)
    assert [f["name"] for f in info["features"][2]["list"]] == list(line["messages"][0])
    assert "`sim-gpt-4o` (50)" in text and f"${summary['cost_usd']:.4f}" in text
    for rule, failed in summary["check_failures_by_rule"].items():
        assert f"| {rule} | " in text and f" | {failed} | " in text


def assert_ablation_exports(out: Path, samples: list[dict]) -> None:
    """The paper's re-masking ablations, written from the store: the same turns, other masks."""
    paper = {s["id"]: s["messages"] for s in samples}
    for mask in MASKS:
        export_run(out, "axolotl", mask)
        rows = read_jsonl(
            sorted((out / "export" / ("axolotl" if mask == "paper" else f"axolotl-{mask}")).glob("*.jsonl"))
        )
        assert len(rows) == len(samples)
        for row in rows:
            ours, base = row["messages"], paper[row["id"]]
            assert [m["content"] for m in ours] == [m["content"] for m in base]
            assistant = [
                (m["train"], b["train"]) for m, b in zip(ours, base, strict=True) if m["role"] == "assistant"
            ]
            if mask == "paper":
                assert ours == base
            elif mask == "erroneous-loss":
                assert all(train for train, _ in assistant)
            else:  # no-refinement-loss: the paper's mask minus each correction right after an error
                refinements = [
                    i for i in range(1, len(assistant)) if not assistant[i - 1][1] and assistant[i][1]
                ]
                assert refinements
                assert [train for train, _ in assistant] == [
                    paper_train and i not in refinements for i, (_, paper_train) in enumerate(assistant)
                ]
            assert ours[-1]["role"] == "assistant"


def test_no_refinement_data_mode_generates_trajectories_without_mistakes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "config.yaml",
        {"local": {"embedded": {**FAST_SIM, "flaws": {"script_rate": 0.0, "trajectory_rate": 1.0}}}},
        "local",
        run={"refinement_data": False},
    )
    result = cli("run", "--config", str(config), "-n", "8", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["check_failures_by_rule"].values()) >= 8  # flawed answers were refused
    report = validate_run(out)
    assert report.ok, report.problems[:5]
    assert report.samples == 8 and report.masked_turns == 0 and report.trained_turns > 8 * 3
    for sample in read_jsonl(sorted(out.glob("samples-*.jsonl"))):
        assert sample["meta"]["refinement_data"] is False and sample["meta"]["error_refine_turns"] == 0
    assert "w/o refinement data" in (out / "README.md").read_text()


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


NAMES = ("Ada", "Bram", "Chiara", "Dmitri", "Esi", "Farid", "Greta", "Hiro", "Ines", "Jomo")
HOBBIES = (
    "keeps bees on the roof",
    "restores old motorcycles",
    "sings in a harbour choir",
    "maps forgotten footpaths",
    "brews cider from wild apples",
    "collects antique clocks",
    "teaches chess to children",
    "photographs thunderstorms",
)


def test_a_slow_endpoint_gets_far_more_than_96_samples_in_flight(tmp_path: Path) -> None:
    # Answers take 3 s (30 s compressed tenfold) and the endpoint sets no limit: keeping it
    # busy takes hundreds of samples in flight (rate x latency), where a fixed pool of 96
    # (the old run.max_in_flight) held the run down. Nothing in the config asks for them.
    personas = [
        f"{name}, a {job} in {city} who {hobby}."
        for name in NAMES
        for job, city in zip(JOBS, CITIES, strict=True)
        for hobby in HOBBIES[:4]
    ]
    persona_file = tmp_path / "personas.txt"
    persona_file.write_text("\n".join(personas) + "\n")
    slow = {**FAST_SIM, "latency_median_s": 3.0, "latency_sigma": 0.3}
    endpoints = {
        "local": {"embedded": slow, "limits": {}, "timeout_s": 60},
        "embeddings": {"embedded": FAST_SIM},  # dedup's: quick, and no local model's CPU in the way
    }
    uncapped = {"script": {"attempts": 2}}  # no stage caps: the limiter is the only gate
    run = {"max_in_flight": 10_000, "report": False}
    config = write_config(tmp_path / "config.yaml", endpoints, "local", stages=uncapped, run=run)
    out = tmp_path / "run"
    result = cli(
        "run",
        "--config",
        str(config),
        "-n",
        "300",
        "--personas",
        str(persona_file),
        "--out",
        str(out),
        "--set",
        "dedup.embedder=embeddings",
        "--set",
        "dedup.persona.threshold=0.99",  # its n-gram vectors call these personas alike
        "--set",
        "dedup.script.threshold=0.99",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accepted"] == 300
    this_process = summary["this_process"]
    assert this_process["peak_samples_in_flight"] >= 200
    assert this_process["peak_requests_in_flight"] >= 150
    assert "in flight at the peak:" in result.stdout
    events = [json.loads(line) for line in (out / "run.log").read_text().splitlines()]
    decisions = [e for e in events if e["event"] == "concurrency"]
    assert decisions and all(e["endpoint"] == "local" for e in decisions)
    assert len(decisions) <= len(events) // 20  # decisions, not one line per request
