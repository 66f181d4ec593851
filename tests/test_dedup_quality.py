"""Calibration of the default persona threshold on the labelled set (tests/data): planted
paraphrases, reorderings and case/punctuation variants are caught, distinct personas on the
same themes (same job, other place) are kept."""

from __future__ import annotations

from dedup.calibrate import load_labelled, score
from dedup.minilm import MiniLMEmbedder
from service.config import Dedup
from tests.conftest import LABELLED_PERSONAS


def test_default_persona_threshold_on_the_labelled_set(minilm: MiniLMEmbedder) -> None:
    items = load_labelled(LABELLED_PERSONAS)
    variants = {item["variant"] for item in items}
    assert variants == {"distinct", "distinct_same_job", "paraphrase", "reordering", "case_punct"}
    vectors = minilm.embed_now([item["text"] for item in items])

    scores = score(items, vectors, Dedup().persona.threshold)

    print(f"\nlabelled set: {scores.line()}")
    assert scores.planted >= 80 and scores.distinct >= 120
    assert scores.recall >= 0.95
    assert scores.distinct_kept >= 0.99
    assert scores.precision >= 0.99


def test_a_lower_threshold_flags_more(minilm: MiniLMEmbedder) -> None:
    items = load_labelled(LABELLED_PERSONAS)
    vectors = minilm.embed_now([item["text"] for item in items])
    strict, loose = score(items, vectors, 0.99), score(items, vectors, 0.5)
    assert strict.flagged < loose.flagged
    assert loose.distinct_kept < 1.0  # same-theme personas start to collide
