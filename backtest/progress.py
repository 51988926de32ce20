"""A progress bar on stderr for long runs: klines done, the rate and the time left, redrawn at most every
``every_s`` seconds on one line (a carriage return, no newline until the end)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Call with ``(done, total)`` as the run goes; :meth:`close` ends the line."""

    def __init__(self, label: str = "backtest", *, stream: TextIO | None = None, width: int = 30,
                 every_s: float = 0.2) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.every_s = every_s
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._last = ""

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._drawn_at < self.every_s:
            return
        self._drawn_at = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        share = done / total if total else 1.0
        filled = int(share * self.width)
        left = (total - done) / rate if rate > 0 else 0.0
        self._last = (f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {share * 100:5.1f}% "
                      f"{done}/{total} klines {rate:,.0f}/s eta {left:,.0f}s")
        self.stream.write(self._last)
        self.stream.flush()

    def close(self) -> None:
        if self._last:
            self.stream.write("\n")
            self.stream.flush()
