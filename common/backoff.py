"""Capped exponential backoff with full jitter: the one retry delay of the fleet."""

from __future__ import annotations

import asyncio
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


async def pause(stop: asyncio.Event | None, seconds: float) -> bool:
    """Wait ``seconds`` unless ``stop`` is set first; True when it was (the caller should return)."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    if seconds <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
