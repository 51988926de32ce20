"""Capped exponential backoff with full jitter: the one retry delay of the fleet."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays of ``initial_s * 2**attempt``, capped at ``max_s``, with full jitter."""

    initial_s: float
    max_s: float

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before retry number ``attempt`` (0-based): uniform in [cap/2, cap]."""
        cap = min(self.max_s, self.initial_s * float(2 ** min(attempt, 32)))
        r: float = (rng or random).random()
        return float(cap / 2 + r * cap / 2)
