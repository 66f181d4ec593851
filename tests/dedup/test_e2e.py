"""Dedup end to end through the CLI: a persona file with 20% planted near-duplicates, and a
SIGKILL mid-run followed by a resume. No exported persona duplicates another, no request is
spent on a duplicate persona, and no persona is admitted twice."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from dedup.calibrate import decide, load_labelled
from dedup.minilm import MiniLMEmbedder
from service.config import Dedup
from tests.conftest import (
    FAST_SIM,
    LABELLED_PERSONAS,
    cli,
    kill_when,
    read_jsonl,
    sim_stats,
    simulator,
    write_config,
)

THRESHOLD = Dedup().persona.threshold


def persona_file(path: Path, distinct: int, planted: int, planted_last: bool) -> set[int]:
    """`distinct` personas of the labelled set plus `planted` near-duplicates (paraphrases or
    reorderings) of the first of them; returns the 1-based lines of the planted ones."""
    items = load_labelled(LABELLED_PERSONAS)
    near = [i for i in items if i["variant"] in ("paraphrase", "reordering")][:planted]
    bases = {i["duplicate_of"] for i in near}
    chosen = [i for i in items if i["id"] in bases]
    chosen += [i for i in items if i["duplicate_of"] is None and i["id"] not in bases][
        : distinct - len(chosen)
    ]
    if planted_last:
        lines = chosen + near
    else:  # each planted duplicate comes some lines after its original
        lines = []
        for item in chosen:
            lines.append(item)
            lines.extend(n for n in near if n["duplicate_of"] == item["id"])
    path.write_text("".join(json.dumps({"persona": i["text"]}) + "\n" for i in lines))
    return {n + 1 for n, i in enumerate(lines) if i["duplicate_of"] is not None}


def line_of(record: dict[str, Any]) -> int:
    return int(record["source"].rsplit(":", 1)[1])


def max_pairwise_similarity(embedder: MiniLMEmbedder, texts: list[str]) -> float:
    vectors = embedder.embed_now(texts)
    gram = vectors @ vectors.T
    np.fill_diagonal(gram, -1.0)
    return float(gram.max())


def test_planted_near_duplicates_cost_nothing(
    tmp_path: Path, local_embedders: dict[str, MiniLMEmbedder]
) -> None:
    personas = tmp_path / "personas.jsonl"
    planted = persona_file(personas, distinct=80, planted=20, planted_last=False)
    out = tmp_path / "run"
    with simulator(FAST_SIM) as url:
        config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": url}}, "sim")
        result = cli(
            "run", "--config", str(config), "-n", "500", "--personas", str(personas), "--out", str(out)
        )
        requests = sim_stats(url)["requests"]
    assert result.returncode == 4, result.stderr  # 100 personas for 500: the source runs out

    rejects = read_jsonl([out / "rejects.jsonl"])
    duplicates = [r for r in rejects if r["rule"] == "persona_duplicate"]
    flagged = {line_of(r) for r in duplicates}
    assert flagged <= planted and len(flagged) >= 0.95 * len(planted)  # no distinct persona lost
    assert all(r["similarity"] >= THRESHOLD and r["duplicate_of"].startswith("s") for r in duplicates)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["persona_duplicates_skipped"] == len(duplicates)
    assert f"personas skipped {len(duplicates)}" in result.stdout

    samples = read_jsonl(sorted(out.glob("samples-*.jsonl")))
    assert max_pairwise_similarity(local_embedders["persona"], [s["persona"] for s in samples]) < THRESHOLD
    # every request the endpoint saw belongs to an admitted persona's sample: none to a duplicate
    finished = samples + [r for r in rejects if "meta" in r]
    assert len(finished) == 100 - len(duplicates)
    assert requests == sum(r["meta"]["requests"] for r in finished)


def test_sigkill_then_resume_admits_no_persona_twice(
    tmp_path: Path, local_embedders: dict[str, MiniLMEmbedder]
) -> None:
    personas = tmp_path / "personas.jsonl"
    planted = persona_file(personas, distinct=60, planted=15, planted_last=True)  # after the kill point
    out = tmp_path / "run"
    with simulator({**FAST_SIM, "latency_median_s": 0.05}) as url:
        config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": url}}, "sim")
        args = ["run", "--config", str(config), "-n", "500", "--personas", str(personas), "--out", str(out)]
        kill_when(lambda: admitted(out) >= 20, *args)
        before = admitted(out)
        assert 20 <= before < 60, "the kill must land mid-run"
        result = cli(*args)
    assert result.returncode == 4, result.stderr  # 75 personas for 500: the source runs out

    # the decisions of one uninterrupted pass over the file, with the same model and threshold
    texts = [json.loads(line)["persona"] for line in personas.read_text().splitlines()]
    verdicts = decide(
        [str(n) for n in range(len(texts))], texts, local_embedders["persona"].embed_now(texts), THRESHOLD
    )
    expected_kept = [n + 1 for n, v in enumerate(verdicts) if v.duplicate_of is None]
    assert len(set(expected_kept) & planted) <= 1 and len(expected_kept) >= 60

    with sqlite3.connect(out / "state.sqlite") as db:
        admitted_lines = [n for (n,) in db.execute("SELECT position FROM samples ORDER BY position")]
        personas_admitted = [text for (text,) in db.execute("SELECT persona FROM samples")]
        kept = db.execute("SELECT COUNT(*) FROM dedup_items WHERE kind = 'persona'").fetchone()[0]
    assert admitted_lines == expected_kept and kept == len(expected_kept)
    duplicates = [r for r in read_jsonl([out / "rejects.jsonl"]) if r["rule"] == "persona_duplicate"]
    assert sorted(line_of(r) for r in duplicates) == sorted(
        set(range(1, len(texts) + 1)) - set(expected_kept)
    )
    assert max_pairwise_similarity(local_embedders["persona"], personas_admitted) < THRESHOLD


def admitted(out: Path) -> int:
    if not (out / "state.sqlite").exists():
        return 0
    try:
        with sqlite3.connect(out / "state.sqlite", timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    except sqlite3.OperationalError:  # the run has not created its tables yet
        return 0
