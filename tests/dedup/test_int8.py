"""The int8 form of a bundled model: built once from the packaged file, cached, and the same
bytes whether it comes from the cache or from a build where the cache cannot be written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dedup import int8
from dedup.minilm import MINILM_L6


def test_the_int8_model_is_built_once_then_read_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTREFINE_CACHE_DIR", str(tmp_path / "cache"))
    built = int8.int8_model(MINILM_L6.path(), "l6")
    cached = list((tmp_path / "cache" / "models").iterdir())
    assert [path.name[:3] for path in cached] == ["l6-"] and cached[0].read_bytes() == built

    def no_build(source: Path, work: Path) -> Path:
        raise AssertionError("built again although cached")

    monkeypatch.setattr(int8, "_quantize", no_build)
    assert int8.int8_model(MINILM_L6.path(), "l6") == built

    # the matrix products are integer ones now, and the model still runs
    assert any(node.op_type == "MatMulInteger" for node in onnx.load_from_string(built).graph.node)
    session = ort.InferenceSession(built, providers=["CPUExecutionProvider"])
    ids = np.array([[101, 2175, 1996, 3145, 102]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    hidden = session.run([MINILM_L6.hidden_output], feed)[0]
    assert hidden.shape == (1, 5, 384) and np.isfinite(hidden).all()


def test_an_unwritable_cache_still_gives_the_same_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTREFINE_CACHE_DIR", str(tmp_path / "cache"))
    reference = int8.int8_model(MINILM_L6.path(), "l6")
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("AGENTREFINE_CACHE_DIR", str(blocked))
    assert int8.int8_model(MINILM_L6.path(), "l6") == reference  # built again, deterministically
    assert blocked.read_text().startswith("a file")
