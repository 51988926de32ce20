"""The closed klines trading_bot remembers per symbol, and reading them from ``market.klines``.

``market.klines`` is a latest-value stream (no consumer group): the bot XREADs what is new after the
last id it saw, and at start reads the recent history back (XREVRANGE, bounded) to fill its windows,
so it does not wait ``ema_slow`` klines before its first signal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import structlog
from redis.asyncio import Redis

from common import keys
from common.contracts import ContractError, MarketKline, decode, plain_decimal
from common.streams import Stream

log = structlog.get_logger()
KLINES_KEY = keys.stream(Stream.MARKET_KLINES)


def kline_row(k: MarketKline) -> list[str]:
    """A kline as a Binance kline row ``[open_time, open, high, low, close, volume]`` (strings)."""
    return [str(k.open_time), plain_decimal(k.open), plain_decimal(k.high), plain_decimal(k.low),
            plain_decimal(k.close), plain_decimal(k.volume)]


class KlineWindows:
    """A bounded window of closed klines per (symbol, interval), in open-time order, without repeats."""

    def __init__(self, size: int, symbols: Iterable[str] | None = None) -> None:
        self.size = size
        self.symbols = frozenset(symbols) if symbols is not None else None
        self._windows: dict[tuple[str, str], deque[MarketKline]] = {}

    def add(self, kline: MarketKline) -> bool:
        """Keep ``kline`` if it is closed, of a watched symbol, and newer than the window's last; True
        when it was kept."""
        if not kline.closed or (self.symbols is not None and kline.symbol not in self.symbols):
            return False
        window = self._windows.setdefault((kline.symbol, kline.interval), deque(maxlen=self.size))
        if window and kline.open_time <= window[-1].open_time:
            return False
        window.append(kline)
        return True

    def get(self, symbol: str, interval: str) -> list[MarketKline]:
        return list(self._windows.get((symbol, interval), ()))

    def counts(self) -> dict[str, int]:
        return {f"{s}:{i}": len(w) for (s, i), w in sorted(self._windows.items())}

    def seed(self, klines: Iterable[MarketKline]) -> int:
        """Add klines read newest first (XREVRANGE order); the number kept."""
        ordered = sorted((k for k in klines if k.closed), key=lambda k: k.open_time)
        return sum(self.add(k) for k in ordered)


def parse(entry_id: str, fields: dict[Any, Any]) -> MarketKline | None:
    try:
        return decode(MarketKline, fields)
    except ContractError as e:
        log.warning("kline_unreadable", entry_id=entry_id, field=e.field, problem=e.problem)
        return None


async def seed_windows(redis: Redis, windows: KlineWindows, max_entries: int, page: int = 1000) -> str:
    """Fill ``windows`` from the newest ``max_entries`` entries of ``market.klines`` (fewer once every
    watched symbol's window is full); the id to read on from (``0-0`` when the stream is empty: what
    comes first is new)."""
    newest = "0-0"
    upper = "+"
    read = 0
    found: list[MarketKline] = []
    per_symbol: dict[str, int] = {}
    while read < max_entries:
        entries: Any = await redis.xrevrange(KLINES_KEY, max=upper, min="-", count=min(page, max_entries - read))
        if not entries:
            break
        if newest == "0-0":
            newest = str(entries[0][0])
        for entry_id, fields in entries:
            kline = parse(str(entry_id), fields)
            if kline is not None and kline.closed:
                found.append(kline)
                per_symbol[kline.symbol] = per_symbol.get(kline.symbol, 0) + 1
        read += len(entries)
        upper = f"({entries[-1][0]}"
        watched = windows.symbols
        if watched is not None and all(per_symbol.get(s, 0) >= windows.size for s in watched):
            break
    kept = windows.seed(found)
    log.info("windows_seeded", entries_read=read, klines_kept=kept, windows=windows.counts())
    return newest


async def read_after(redis: Redis, last_id: str, count: int, block_ms: int) -> list[tuple[str, dict[Any, Any]]]:
    """The entries after ``last_id`` (blocking up to ``block_ms``), at most ``count``."""
    reply: Any = await redis.xread({KLINES_KEY: last_id}, count=count, block=block_ms)
    if not reply:
        return []
    return [(str(entry_id), fields) for entry_id, fields in reply[0][1]]


class DecisionPoints:
    """Which klines of the reads are decisions: per symbol and interval, only the newest closed kline —
    older ones (a backfill burst, a catch-up after an outage) only feed the windows.

    A read that came back full has more behind it: nothing is decided yet, and each symbol's newest closed
    kline of it is held (one per symbol and interval) until a read that is not full, where it is decided
    unless a newer kline of its symbol came meanwhile. (580 symbols closing at once are more than one read:
    every one of them is decided, not only those of the last read.)"""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], tuple[str, dict[Any, Any]]] = {}

    def of(self, entries: list[tuple[str, dict[Any, Any]]], full: bool
           ) -> tuple[set[str], list[tuple[str, dict[Any, Any]]]]:
        """(the ids of this read's entries that are decisions, the held entries of earlier reads that are
        decisions now — their klines are in the windows already)."""
        newest = dict(self._held)
        for entry_id, fields in entries:
            kline = parse(entry_id, fields)
            if kline is not None and kline.closed:
                newest[(kline.symbol, kline.interval)] = (entry_id, fields)
        if full:
            self._held = newest
            return set(), []
        self._held = {}
        ids = {entry_id for entry_id, _ in entries}
        return ({entry_id for entry_id, _ in newest.values() if entry_id in ids},
                [entry for entry in newest.values() if entry[0] not in ids])
