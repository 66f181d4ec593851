"""Script dedup through the run's wiring: a passing script that repeats another sample's
(Goal + environment) is a duplicate naming that sample; a sample's replayed script is not;
the kept scripts survive a restart because they are in the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dedup.minilm import MiniLMEmbedder
from pipeline.job import SampleJob
from service.config import load_config
from service.dedup import RunDedup
from service.store import Store
from tests.conftest import ROOT

KITCHEN = {
    "locations": {"pastry station": "start", "walk-in fridge": "cold"},
    "items": {"truffle oil": "on the prep drawer", "torch": "carried"},
    "documents": {"prep list": "tasks", "supplier invoice": "bill"},
}
HARBOUR = {
    "locations": {"pilot boat": "start", "container terminal": "cranes"},
    "items": {"radio": "carried", "tide table": "in the wheelhouse"},
    "documents": {"berth schedule": "ships", "port notice": "rules"},
}


def job(sample_id: str, goal: str, environment: dict[str, Any]) -> SampleJob:
    sample = SampleJob(sample_id, 0, "test", "a persona")
    sample.script = {"Goal": goal, "Environment": environment}
    return sample


async def duplicates_of(dedup: RunDedup, jobs: list[SampleJob]) -> list[str | None]:
    verdicts = await asyncio.gather(*(dedup.script_duplicate(j) for j in jobs))  # checked together
    await dedup.aclose()
    return [v.duplicate_of if v else None for v in verdicts]


def test_script_duplicates_across_samples_and_restarts(
    tmp_path: Path, local_embedders: dict[str, MiniLMEmbedder]
) -> None:
    config = load_config(ROOT / "config.yaml")
    store = Store(tmp_path / "state.sqlite")
    first = [
        job(
            "s1",
            "Pick up the truffle oil and store it on the pass shelf before the health inspection.",
            KITCHEN,
        ),
        job("s2", "Guide the container ship to berth 7 before the tide turns.", HARBOUR),
        job(
            "s3",
            "Pick up the truffle oil and store it on the pass shelf before the health inspection!",
            KITCHEN,
        ),
        job(
            "s4",
            "Pick up the truffle oil and put it on the pass shelf before the health inspection.",
            KITCHEN,
        ),
    ]
    assert asyncio.run(duplicates_of(RunDedup(config, store, dict(local_embedders)), first)) == [
        None,
        None,
        "s1",
        "s1",
    ]

    resumed = [
        job("s1", first[0].script["Goal"], KITCHEN),  # replayed after a restart: its own script
        job("s5", "Guide the container ship to berth 7 before the tide turns.", HARBOUR),
        job("s6", "Taste the fish delivery and log it in the HACCP book.", KITCHEN),
    ]
    assert asyncio.run(duplicates_of(RunDedup(config, store, dict(local_embedders)), resumed)) == [
        None,
        "s2",
        None,
    ]
    kept = [owner for owner, _, _ in store.dedup_items("script")]
    assert kept == ["s1", "s2", "s6"]
    store.close()
