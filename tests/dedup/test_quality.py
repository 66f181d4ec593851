"""Calibration of the default thresholds on the labelled sets (tests/data): personas (planted
paraphrases, reorderings and case/punctuation variants among distinct personas on the same
themes, some sharing a job) and script keys (simulator scripts of distinct personas, plus
reworded goals in the same environment). Duplicates are caught, distinct items kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dedup.calibrate import load_labelled, score
from dedup.minilm import MiniLMEmbedder
from service.config import Dedup
from tests.conftest import LABELLED_PERSONAS, LABELLED_SCRIPTS


@pytest.mark.parametrize(
    ("kind", "path", "threshold", "planted", "distinct"),
    [
        ("persona", LABELLED_PERSONAS, Dedup().persona.threshold, 80, 120),
        ("script", LABELLED_SCRIPTS, Dedup().script.threshold, 20, 120),
    ],
    ids=["personas", "scripts"],
)
def test_default_threshold_on_the_labelled_set(
    local_embedders: dict[str, MiniLMEmbedder],
    kind: str,
    path: Path,
    threshold: float,
    planted: int,
    distinct: int,
) -> None:
    items = load_labelled(path)
    scores = score(items, local_embedders[kind].embed_now([item["text"] for item in items]), threshold)
    print(f"\n{path.name}: {scores.line()}")
    assert scores.planted >= planted and scores.distinct >= distinct
    assert scores.recall >= 0.95
    assert scores.distinct_kept >= 0.99
    assert scores.precision >= 0.99


def test_a_lower_threshold_flags_more(local_embedders: dict[str, MiniLMEmbedder]) -> None:
    items = load_labelled(LABELLED_PERSONAS)
    assert {item["variant"] for item in items} == {
        "distinct",
        "distinct_same_job",
        "paraphrase",
        "reordering",
        "case_punct",
    }
    vectors = local_embedders["persona"].embed_now([item["text"] for item in items])
    strict, loose = score(items, vectors, 0.99), score(items, vectors, 0.5)
    assert strict.flagged < loose.flagged
    assert loose.distinct_kept < 1.0  # same-theme personas start to collide


def test_a_text_embeds_the_same_alone_or_among_others(
    local_embedders: dict[str, MiniLMEmbedder],
) -> None:
    """The int8 models scale activations per tensor: a vector must not depend on its batch."""
    longer = "Goal: repair the loom in the weaving hall. " * 12
    texts = ["Goal: find the key.", longer, "Goal: feed the bees."]
    for embedder in local_embedders.values():
        together = embedder.embed_now(texts)
        alone = np.vstack([embedder.embed_now([text]) for text in texts])
        assert np.array_equal(together, alone)
        assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
