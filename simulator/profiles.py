"""Named latency profiles of the embedded endpoint: provider shapes chosen with
`profile: NAME` in its settings (`endpoints.X.embedded.profile` in config.yaml).

A profile is a set of setting values; any key given beside `profile` overrides the
profile's value. The figures are public orders of magnitude, not measurements of a
provider: gpt-4o writes about 80 output tokens/s, DeepSeek 30-40; a vLLM server decodes
up to `max_num_seqs` sequences at once, each slower as the batch grows.

- ``fast``: the settings' defaults: sub-second answers delivered whole, no limits (what
  the tests and the default `make run` use);
- ``gpt-4o-like``: a tier-4 OpenAI key: 80 tokens/s after a ~0.5 s first token, 5000 RPM
  and 2M TPM charged at admission as prompt + max_tokens, the charge standing (no refund of
  the unused max_tokens: OpenAI documents none), with `x-ratelimit-*` headers;
- ``deepseek-like``: 35 tokens/s, no RPM/TPM; at most 256 requests at once per key
  (429 beyond, no rate-limit headers); blank lines (or `: keep-alive` SSE comments) while
  a request waits; DeepSeek's usage block;
- ``vllm-like``: continuous batching: 256 sequences at once (vLLM's default
  `max_num_seqs`), 100 tokens/s for a lone sequence falling as
  100 / (1 + batch / 128); requests beyond the batch queue; never a 429.
"""

from __future__ import annotations

from typing import Any

DEFAULT_PROFILE = "fast"

PROFILES: dict[str, dict[str, Any]] = {
    "fast": {},
    "gpt-4o-like": {
        "latency_median_s": 0.5,
        "latency_sigma": 0.4,
        "prefill_tokens_per_s": 10_000.0,
        "output_tokens_per_s": 80.0,
        "rpm": 5000,
        "tpm": 2_000_000,
        "tpm_refund": False,
    },
    "deepseek-like": {
        "latency_median_s": 1.2,
        "latency_sigma": 0.5,
        "prefill_tokens_per_s": 6000.0,
        "output_tokens_per_s": 35.0,
        "max_concurrent": 256,
        "batches": {"enabled": False},  # DeepSeek has no batch API
        "keepalive_s": 2.0,
        "usage_style": "deepseek",
    },
    "vllm-like": {
        "latency_median_s": 0.15,
        "latency_sigma": 0.3,
        "prefill_tokens_per_s": 20_000.0,
        "output_tokens_per_s": 100.0,
        "max_num_seqs": 256,
        "batches": {"enabled": False},  # vLLM's server has no batch API
        "batch_half_speed": 128.0,
    },
}
