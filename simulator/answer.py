"""One admitted chat completion request and the answer the endpoint writes for it.

The text is written when the model's first token is due (`write`), not at admission: its
length sets how long the decoding takes, and writing it earlier would spend the endpoint's
CPU while other requests wait for their admission or refusal. A "length" fault cuts it,
"empty_choices" drops its choices, `min_completion_tokens` pads it with whitespace.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from simulator import faults, tokens
from simulator.content import content_digest, generate, max_tokens_of
from simulator.state import SimState


@dataclass
class Answer:
    body: dict[str, Any]
    digest: str
    prompt_tokens: int
    charged_tokens: int  # what the rate limiter took (with tpm_refund, down to use at the end)
    fault: str | None
    admitted_at: float
    completion: dict[str, Any] = field(default_factory=dict)  # the chat.completion, once written
    contents: list[tuple[str, int]] = field(default_factory=list)  # each choice's text and tokens
    outcome: str | None = None  # the by_status entry once it is known
    sent_at: float = 0.0  # time.monotonic() of the last byte sent (admission before any)

    @property
    def decode_tokens(self) -> int:
        """Tokens the sequence decodes: the choices are decoded side by side."""
        return max((n for _, n in self.contents), default=0)

    @property
    def completion_tokens(self) -> int:
        return sum(n for _, n in self.contents)


def write(st: SimState, answer: Answer) -> None:
    """Write the answer's text and its chat.completion object."""
    s, body = st.settings, answer.body
    seed_digest = content_digest(body)
    gens = [generate(body, s, i, seed_digest) for i in range(body.get("n") or 1)]
    if s.min_completion_tokens:
        least = min(s.min_completion_tokens, max_tokens_of(body) or s.min_completion_tokens)
        gens = [replace(g, content=tokens.pad_to_tokens(g.content, least)) for g in gens]
    if answer.fault == "length":
        gens = [
            replace(g, content=faults.cut_content(g.content, st.rng), finish_reason="length") for g in gens
        ]
    answer.contents = [(g.content, tokens.count_text(g.content)) for g in gens]
    cached = st.cache.cached_tokens(body["messages"])
    answer.completion = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": g.content, "refusal": None},
                "finish_reason": g.finish_reason,
                "logprobs": None,
            }
            for i, g in enumerate(gens)
            if answer.fault != "empty_choices"
        ],
        "usage": tokens.usage_block(answer.prompt_tokens, answer.completion_tokens, cached, s.usage_style),
        "system_fingerprint": st.fingerprint,
    }
