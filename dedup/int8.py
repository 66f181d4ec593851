"""The dynamic-int8 form of a bundled ONNX model, built on this machine once and cached.

ONNX Runtime's `quantize_dynamic` stores each MatMul's weights as int8 (one scale per output
channel) and quantizes the activations on the fly, so the matrix products run on int8
instructions. On this machine's CPU (AVX-512 VNNI) that halves the CPU per text of both
embedders; the vectors stay within cosine 0.98 of fp32 and the labelled sets separate as before
(docs/decisions.md has the figures). The weights use 7 of the 8 bits (`reduce_range`): CPUs
without VNNI multiply uint8 by int8 with instructions whose 16-bit sums saturate on full-range
weights, and with 7 bits they cannot, so every x86 CPU computes the same integer products.

ONNX Runtime's quantization pre-processing first writes the packaged model out as a plain fp32
graph with its shapes inferred (the L6 package stores int8 weights behind DequantizeLinear
nodes; they are folded back to fp32), then `quantize_dynamic` quantizes that. The result is
deterministic given the source file and the ONNX Runtime version, so it is cached under a name
holding a hash of both (the file by its path, size and modification time): in
$AGENTREFINE_CACHE_DIR, else $XDG_CACHE_HOME/agentrefine, else ~/.cache/agentrefine. A build
(about 2 s of CPU) writes a temporary file and renames it, so processes that build at the same
time never load half a model; where the cache cannot be written, each process builds its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

import onnxruntime as ort

# part of the cache key: change it when the recipe in `_quantize` changes
RECIPE = "dynamic-qint8-per-channel-reduce-range-v1"


def cache_dir() -> Path:
    explicit = os.environ.get("AGENTREFINE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "agentrefine"


def int8_model(source: Path, name: str) -> bytes:
    """The serialised dynamic-int8 form of the ONNX model `source` (cached as `name`-HASH.onnx):
    from the cache, or built now."""
    stat = source.stat()  # an installed file changes with its size or time (hashing 70 MB took 0.1 s)
    stamp = f"{RECIPE}:{ort.__version__}:{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    cached = cache_dir() / "models" / f"{name}-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.onnx"
    try:
        return cached.read_bytes()
    except OSError:
        pass
    with tempfile.TemporaryDirectory(prefix="agentrefine-int8-") as work:
        built = _quantize(source, Path(work))
        model = built.read_bytes()
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(model)
            os.replace(partial, cached)  # a reader sees the whole file or none
        except OSError:  # no cache: the next process builds it again
            with contextlib.suppress(OSError):
                partial.unlink()
    return model


def _quantize(source: Path, work: Path) -> Path:
    # imports onnx: only when building
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folded = work / "fp32.onnx"
    quant_pre_process(source, folded, skip_symbolic_shape=True)  # folds DequantizeLinear, infers shapes
    quantized = work / "int8.onnx"
    quantize_dynamic(folded, quantized, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    return quantized
