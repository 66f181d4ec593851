"""Charge-aware max_tokens: how many completion tokens to ask for, per endpoint and stage.

OpenAI counts a request against the key's tokens-per-minute limit as prompt + `max_tokens`
when it admits it (and advises setting max_tokens close to the expected answer), so a stage
cap of 4096 or 8192 against answers of ~900 tokens spends most of the limit on tokens that
are never written. The LLM layer asks an answer that a tighter limit cuts
(`finish_reason: length` below the cap) again with more room, so the choice is a trade: a
lower max_tokens is charged less on every answer, and a re-ask on the few it cuts.

`CompletionSizes` keeps the (prompt, completion) tokens of one (endpoint, stage)'s recent
answers (each question once, by its last ask; one cut at the cap counted as the cap) and
sends the max_tokens with the lowest expected charge per answer over them:
m + P(completion > m) × (mean prompt + r), for m just above (MARGIN) one of the answers seen
at or above the MIN_QUANTILE: so at most about one answer in ten is paid twice, never above
the stage's cap, never below FLOOR, and the cap itself until LEARN_FROM answers have been
seen. The re-ask sends r = just above the longest recent answer (`reask_max_tokens`), not
the cap: with caps of 12,288 against answers of ~1000 tokens, a re-ask at the cap cost 13x
a first ask and pushed m up the tail; one cut again (rarer than one in a thousand) is asked
at the cap. A fixed high quantile would be simpler but pays for the tail on every request:
on the embedded endpoint's script answers (median 970 tokens, 99th percentile 1800, longest
3500) its 99th percentile with a margin charges more than this choice, and sending the cap
charges 3.3x the tokens used.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque

MIN_QUANTILE = 0.9  # never below the answers' 90th percentile: at most ~10% are re-asked
MARGIN = 1.05  # just above an answer seen, not exactly at it
FLOOR = 256
LEARN_FROM = 50  # answers seen before max_tokens is sized at all
WINDOW = 1000  # the most recent answers it is chosen from (lengths drift over a run)
REFRESH_EVERY = 25  # answers between two choices (each sorts the window)


class CompletionSizes:
    """The recent answers of one (endpoint, stage), and the max_tokens they call for."""

    def __init__(self) -> None:
        self._prompts: deque[int] = deque(maxlen=WINDOW)  # tokens of the recent answers
        self._completions: deque[int] = deque(maxlen=WINDOW)
        self._lengths: list[int] | None = None  # `_completions`, sorted
        self._prompt = 0.0  # their mean prompt tokens
        self._chosen: dict[int, int] = {}  # cap -> max_tokens, until the next refresh
        self._unseen = 0  # answers observed since the last refresh

    def observe(self, prompt_tokens: int, completion_tokens: int) -> None:
        """An answer: its completion tokens, or the cap for one cut by max_tokens (it needed at
        least that much; left out, only the short answers of a long tail would be seen)."""
        self._prompts.append(prompt_tokens)
        self._completions.append(completion_tokens)
        self._unseen += 1
        if len(self._completions) >= LEARN_FROM and (self._lengths is None or self._unseen >= REFRESH_EVERY):
            self._lengths = sorted(self._completions)
            self._prompt = sum(self._prompts) / len(self._prompts)
            self._chosen.clear()
            self._unseen = 0

    def max_tokens(self, cap: int) -> int:
        """What to send as max_tokens for a stage whose configured limit is `cap`."""
        if self._lengths is None:
            return cap
        chosen = self._chosen.get(cap)
        if chosen is None:
            chosen = self._chosen[cap] = self._cheapest(self._lengths, cap)
        return chosen

    def reask_max_tokens(self, cap: int) -> int:
        """What to send when an answer was cut by the sized max_tokens: just above the longest
        recent answer, never above the cap (an answer cut there too is asked at the cap)."""
        if self._lengths is None:
            return cap
        return min(cap, max(FLOOR, math.ceil(self._lengths[-1] * MARGIN)))

    def _cheapest(self, lengths: list[int], cap: int) -> int:
        """The max_tokens with the lowest expected charge per answer (the prompt, the same
        for every choice, left out); a cut answer is asked again at `reask_max_tokens`, at
        the cap nothing is re-asked."""
        best, best_charge = cap, float(cap)
        count = len(lengths)
        reask = self._prompt + self.reask_max_tokens(cap)
        for length in lengths[math.ceil(MIN_QUANTILE * count) - 1 :]:
            limit = max(FLOOR, math.ceil(length * MARGIN))
            if limit >= cap:
                break
            longer = count - bisect_right(lengths, limit)
            charge = limit + longer / count * reask
            if charge < best_charge:
                best, best_charge = limit, charge
        return best
