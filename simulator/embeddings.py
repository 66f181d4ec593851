"""The simulator's `/v1/embeddings`: deterministic vectors derived from the text.

Each input is normalised (NFKC, case-folded, punctuation dropped); its character trigrams
and its words are hashed into `dimensions` signed buckets and the vector is L2-normalised.
Texts sharing most of their n-grams (case or punctuation variants, a few words changed,
clauses reordered) get a high cosine; unrelated texts get one near 0. It is not a language
model: a paraphrase with new words scores lower than a real model would give it.

The request and response follow OpenAI's: `input` a string or a list of strings, optional
`dimensions` and `encoding_format` ("float", or "base64" of little-endian float32, which
the openai SDK asks for by default).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import unicodedata
from array import array
from typing import Any

DEFAULT_DIMENSIONS = 1536
MAX_INPUTS = 2048
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def embed_text(text: str, dimensions: int) -> list[float]:
    vector = [0.0] * dimensions
    normalised = _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    padded = f" {normalised} "
    features = [padded[i : i + 3] for i in range(len(padded) - 2)] + normalised.split()
    for feature in features:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dimensions
        vector[bucket] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def problem(body: Any) -> str | None:
    """An error message for a malformed embeddings request, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        return "'input' must be a non-empty string or a non-empty array of non-empty strings."
    if len(texts) > MAX_INPUTS:
        return f"Invalid 'input': array too long, at most {MAX_INPUTS} items."
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        return "Invalid 'dimensions': expected a positive integer."
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return "Invalid 'encoding_format': expected 'float' or 'base64'."
    return None


def inputs(body: dict[str, Any]) -> list[str]:
    texts = body["input"]
    return [texts] if isinstance(texts, str) else texts


def response(body: dict[str, Any], prompt_tokens: int) -> dict[str, Any]:
    """The embeddings answer for a valid request."""
    dimensions = body.get("dimensions") or DEFAULT_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs(body)):
        vector = embed_text(text, dimensions)
        encoded: Any = base64.b64encode(array("f", vector).tobytes()).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
