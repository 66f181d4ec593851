"""The embedded endpoint's mutable state, one per app: its settings, the RNG of faults and
latencies, the rate limiter, the latency model, the prefix cache, and its counters."""

from __future__ import annotations

import random
from collections import Counter

from simulator import latency, tokens
from simulator.content import canonical_digest
from simulator.limits import RateLimiter
from simulator.load import Load
from simulator.settings import SimSettings


class SimState:
    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.rng = random.Random(f"sim-faults:{settings.seed}")
        scale = settings.time_scale
        # under time_scale the buckets are the same size in model time: they refill 1/scale
        # faster, and their headers announce the limits per real minute
        self.limiter = RateLimiter(
            settings.rpm / scale,
            settings.tpm / scale,
            burst_s=settings.burst_s * scale,
            start_full=settings.start_full,
        )
        self.model = latency.Model(settings, self.rng)
        self.load = Load()
        self.cache = tokens.PrefixCache()
        self.requests = 0
        self.by_status: Counter[str] = Counter()
        self.concurrency_429 = 0  # 429s for the cap on concurrent requests (max_concurrent)
        self.received: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.fingerprint = "fp_" + canonical_digest(settings.to_dict())[:10]

    def limits(self) -> dict[str, object]:
        """The limits in force, per real minute (for /_sim/stats)."""
        s = self.settings
        return {
            "profile": s.profile,
            "time_scale": s.time_scale,
            "rpm": round(self.limiter.rpm),
            "tpm": round(self.limiter.tpm),
            "max_concurrent": s.max_concurrent,
            "max_num_seqs": s.max_num_seqs,
            "knee": latency.knee(s),
        }
