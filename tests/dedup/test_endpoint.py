"""The endpoint embedder: the simulator's /v1/embeddings (float and base64, as the openai SDK
asks), its errors, and a run whose dedup embeds through the embedded endpoint."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import numpy as np
import openai
import pytest

from dedup.remote import EndpointEmbedder
from llm import Endpoint, LLMClient
from tests.conftest import FAST_SIM, cli, read_jsonl, simulator, write_config

NURSE = "A night-shift nurse on a cardiology ward who coordinates medication rounds for twelve patients."
NURSE_REORDERED = (
    "A nurse who coordinates medication rounds for twelve patients on a cardiology ward, night shift."
)
LIBRARIAN = "A university librarian digitizing a fragile collection of nineteenth-century maps."


def test_simulated_embeddings_are_deterministic_unit_vectors() -> None:
    with simulator(FAST_SIM) as url:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        as_base64 = client.embeddings.create(model="text-embedding-3-small", input=[NURSE, LIBRARIAN])
        as_float = client.embeddings.create(
            model="text-embedding-3-small", input=[NURSE], encoding_format="float", dimensions=256
        )
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="sim-gpt-4o", input=NURSE)
        with pytest.raises(openai.BadRequestError, match="input"):
            client.embeddings.create(model="text-embedding-3-small", input=[])

        endpoint = Endpoint(model="text-embedding-3-small", name="sim", base_url=url)
        embedder = EndpointEmbedder(LLMClient(endpoint))

        async def embed() -> np.ndarray:
            try:
                return await embedder.embed([NURSE, NURSE_REORDERED, LIBRARIAN, NURSE])
            finally:
                await embedder.aclose()

        vectors = asyncio.run(embed())
    assert [len(d.embedding) for d in as_base64.data] == [1536, 1536]  # the SDK decoded base64
    assert len(as_float.data[0].embedding) == 256 and as_base64.usage.prompt_tokens > 0
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], np.array(as_base64.data[0].embedding), atol=1e-6)
    assert vectors[0] @ vectors[3] == pytest.approx(1.0)
    assert vectors[0] @ vectors[1] > 0.6 > 0.3 > vectors[0] @ vectors[2]


def test_a_run_can_dedup_through_the_embedded_endpoint(tmp_path: Path) -> None:
    personas = tmp_path / "personas.txt"
    personas.write_text("\n".join([NURSE, LIBRARIAN, NURSE_REORDERED, NURSE.upper()]) + "\n")
    config = write_config(tmp_path / "config.yaml", {"local": {"embedded": FAST_SIM}}, "local")
    out = tmp_path / "run"
    settings = ["--set", "dedup.embedder=local", "--set", "dedup.persona.threshold=0.6"]
    result = cli(
        "run", "--config", str(config), *settings, "-n", "5", "--personas", str(personas), "--out", str(out)
    )
    assert result.returncode == 4, result.stderr  # 2 distinct personas for 5: stopped short
    duplicates = [r for r in read_jsonl([out / "rejects.jsonl"]) if r["kind"] == "duplicate"]
    assert [(r["source"].rsplit(":", 1)[1], r["similarity"] < 1.0) for r in duplicates] == [
        ("3", True),
        ("4", False),
    ]
    with sqlite3.connect(out / "state.sqlite") as db:
        (used,) = db.execute("SELECT value FROM meta WHERE key = 'dedup_embedder'").fetchone()
    assert used == "endpoint:local:text-embedding-3-small"
    assert json.loads((out / "summary.json").read_text())["persona_duplicates_skipped"] == 2

    same_threshold = settings[2:]  # the embedder alone changes
    again = cli(
        "run",
        "--config",
        str(config),
        *same_threshold,
        "-n",
        "5",
        "--personas",
        str(personas),
        "--out",
        str(out),
    )
    assert again.returncode == 2
    assert again.stderr.strip().startswith("error: dedup.embedder: this run directory was deduplicated with")
