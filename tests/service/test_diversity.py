"""Diversity of a run's accepted data from the embeddings dedup stored (`service.diversity`),
on real small runs (the embedded endpoint, the bundled embedder, the real store): the figures
match a brute-force computation, every report has them and the map, and `agentrefine
diversity A B` compares two runs with different persona sources."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from service.diversity import action_verbs, kinds, measure, nearest_neighbours, pca_map
from service.store import Store
from tests.conftest import FAST_SIM, cli, read_jsonl, write_config, write_personas

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two runs of 20: personas expanded from the built-in seeds, and a file of personas that
    differ only in job and city."""
    tmp = tmp_path_factory.mktemp("diversity")
    config = write_config(tmp / "config.yaml", {"local": {"embedded": FAST_SIM}}, "local")
    personas = write_personas(tmp / "personas.txt", 100)
    outs = {"seeds": tmp / "seeds", "file": tmp / "file"}
    for name, extra in (("seeds", ()), ("file", ("--personas", str(personas)))):
        result = cli("run", "--config", str(config), "-n", "20", "--out", str(outs[name]), *extra)
        assert result.returncode == 0, result.stderr
    return outs


def stored_vectors(out: Path, kind: str) -> np.ndarray:
    """The accepted samples' last stored vector of `kind`, read with plain SQL."""
    with sqlite3.connect(out / "state.sqlite") as db:
        rows = db.execute(
            "SELECT d.owner, d.vector FROM dedup_items d JOIN samples s ON s.id = d.owner"
            " WHERE d.kind = ? AND s.state = 'accepted' ORDER BY d.seq",
            (kind,),
        ).fetchall()
    last = {owner: np.frombuffer(blob, dtype=np.float32) for owner, blob in rows}
    return np.stack(list(last.values()))


def brute_force_nearest(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.max(axis=1)


def test_figures_match_a_brute_force_computation(runs: dict[str, Path]) -> None:
    out = runs["seeds"]
    store = Store(out / "state.sqlite")
    try:
        figures = measure(store)
    finally:
        store.close()
    assert figures.accepted == 20
    for kind, neighbours in (("script", figures.scripts), ("persona", figures.personas)):
        expected = brute_force_nearest(stored_vectors(out, kind))
        assert neighbours is not None and neighbours.items == neighbours.queries == 20
        assert neighbours.mean == pytest.approx(float(expected.mean()), abs=1e-5)
        assert neighbours.quantiles["p50"] == pytest.approx(float(np.median(expected)), abs=1e-5)
        assert sum(neighbours.histogram) == 20
    verbs = set().union(*(action_verbs(s["script"]) for s in read_jsonl(sorted(out.glob("samples-*.jsonl")))))
    assert figures.action_verbs == len(verbs) >= 5
    assert 1 < figures.environment_kinds < 20
    assert figures.script_vectors.shape[0] == 20


def sequential_kinds(vectors: np.ndarray, cosine: float) -> int:
    leaders: list[np.ndarray] = []
    for vector in vectors:
        if not leaders or max(float(leader @ vector) for leader in leaders) < cosine:
            leaders.append(vector)
    return len(leaders)


def test_sampled_queries_and_kinds_and_the_map() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = brute_force_nearest(vectors)
    sampled = nearest_neighbours(vectors, max_queries=10)
    assert sampled is not None and sampled.queries == 10 and sampled.items == 50
    assert all(np.isclose(exact, value, atol=1e-5).any() for value in sampled.values)
    assert nearest_neighbours(vectors[:1]) is None
    assert kinds(vectors, cosine=1.01) == 50 and kinds(vectors, cosine=-1.01) == 1
    for cosine in (0.0, 0.2, 0.4):  # in blocks, the same groups as one item at a time
        assert kinds(vectors, cosine, block=7) == sequential_kinds(vectors, cosine)
    first, second = pca_map(vectors[:30], vectors[30:])
    assert first.shape == (30, 2) and second.shape == (20, 2)
    both = np.concatenate([first, second])
    assert both[:, 0].var() >= both[:, 1].var() and abs(both.mean()) < 1e-5


def test_every_report_has_the_figures_and_the_map(runs: dict[str, Path]) -> None:
    report = (runs["seeds"] / "report.md").read_text()
    assert "## Diversity of the accepted samples" in report
    assert "script nearest-neighbour cosine" in report and "distinct action verbs" in report
    assert (runs["seeds"] / "report" / "diversity.png").read_bytes().startswith(PNG)


def test_diversity_cli_compares_two_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    result = cli("diversity", str(runs["seeds"]), str(runs["file"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "| | seeds | file |"
    drawn = Path(lines[-1].removeprefix("map: "))
    assert drawn == runs["seeds"] / "report" / "diversity-vs-file.png"
    assert drawn.read_bytes().startswith(PNG)

    as_json = cli(
        "diversity", str(runs["seeds"]), str(runs["file"]), "--json", "--png", str(tmp_path / "m.png")
    )
    figures = json.loads(as_json.stdout)
    assert set(figures) == {"seeds", "file"} and (tmp_path / "m.png").read_bytes().startswith(PNG)
    seeds, file = figures["seeds"], figures["file"]
    assert seeds["accepted"] == file["accepted"] == 20
    # personas that differ only in job and city are closer to each other than expanded ones
    assert file["persona_nearest_cosine"]["mean"] > seeds["persona_nearest_cosine"]["mean"]

    missing = cli("diversity", str(tmp_path))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "not a run directory" in missing.stderr
