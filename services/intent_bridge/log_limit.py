"""Once per key per window: a refusal is logged the first time in a minute, then counted (bounded)."""

from __future__ import annotations

from collections import OrderedDict


class OncePerWindow:
    """Says whether a line for ``key`` may be logged now: yes the first time in ``window_ms``; otherwise
    the occurrence is counted and reported with the next line that may go out. At most ``max_keys``
    keys are remembered (the oldest window is forgotten first), so memory stays bounded whatever the
    symbols."""

    def __init__(self, window_ms: int = 60_000, max_keys: int = 4096) -> None:
        self.window_ms = window_ms
        self.max_keys = max_keys
        self._opened: OrderedDict[tuple[str, ...], tuple[int, int]] = OrderedDict()

    def allow(self, key: tuple[str, ...], now_ms: int) -> tuple[bool, int]:
        """(may log, occurrences suppressed since the last line for ``key``)."""
        seen = self._opened.get(key)
        if seen is not None and now_ms - seen[0] < self.window_ms:
            self._opened[key] = (seen[0], seen[1] + 1)
            return False, 0
        suppressed = seen[1] if seen is not None else 0
        self._opened.pop(key, None)
        self._opened[key] = (now_ms, 0)
        while len(self._opened) > self.max_keys:
            self._opened.popitem(last=False)
        return True, suppressed

    def __len__(self) -> int:
        return len(self._opened)
