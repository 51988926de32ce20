"""A restart of marketdata resumes the synthetic market where it stopped — price and clock — instead of
replaying the seed's series from its start (``python -m services.marketdata`` over a real Redis)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import redis

from common import keys
from common.contracts import MarketTick, decode
from common.streams import Stream
from tests.helpers import poll_sync
from tests.integration.marketdata.test_service import _client, _closed, _entries, _start, _stop

SYMBOLS = ("BTCUSDT", "币安人生USDT")


def _ticks(r: redis.Redis, after: str = "-") -> list[tuple[str, MarketTick]]:
    return [(i, decode(MarketTick, f)) for i, f in _entries(r, Stream.MARKET_TICK, after)]


def test_a_restart_resumes_the_market_where_it_stopped(redis_url: str, tmp_path: Path) -> None:
    """Run, stop (SIGTERM: the state is saved), restart: the first new tick of each symbol is one step from
    the last one before the stop, not the seed's first tick again; klines go on after the last one
    published, with no second warm-up; a fresh start of the same seed replays the seed's first ticks."""
    r = _client(redis_url)
    proc = _start(redis_url, tmp_path / "first.log")
    try:
        poll_sync(lambda: len(_ticks(r)) >= 2 * 120, timeout_s=30)
    finally:
        _stop(proc)
    before = _ticks(r)
    first_tick = {s: next(t for _, t in before if t.symbol == s) for s in SYMBOLS}
    last_tick = {s: [t for _, t in before if t.symbol == s][-1] for s in SYMBOLS}
    closed_before = _closed(r)
    saved = json.loads(r.get(keys.synthetic_market()) or "{}")
    assert set(saved["market"]["symbols"]) == set(SYMBOLS) and saved["now"] > max(k.open_time for k in closed_before)

    last_id = before[-1][0]
    proc = _start(redis_url, tmp_path / "second.log")
    try:
        poll_sync(lambda: len(_ticks(r, f"({last_id}")) >= 2 * 40, timeout_s=30)
    finally:
        _stop(proc)
    after = _ticks(r, f"({last_id}")
    assert "synthetic_market_resumed" in (tmp_path / "second.log").read_text()
    for symbol in SYMBOLS:
        resumed = next(t for _, t in after if t.symbol == symbol)
        step = abs(math.log(float(resumed.price) / float(last_tick[symbol].price)))
        assert step < 0.01, (symbol, last_tick[symbol].price, resumed.price)
        # the seed's series from its start would begin at the first tick of the first run again
        assert [t.price for _, t in after if t.symbol == symbol][:20] != \
            [t.price for _, t in before if t.symbol == symbol][:20]
        assert resumed.ts > last_tick[symbol].ts
    closed_after = [k for k in _closed(r) if k not in closed_before]
    assert closed_after and min(k.open_time for k in closed_after) > max(k.open_time for k in closed_before)
    # no second warm-up: the new klines are the live ones only (about one per 300 ms of running)
    assert len(closed_after) < 2 * 45

    r.delete(keys.synthetic_market())
    last_id = after[-1][0]
    proc = _start(redis_url, tmp_path / "fresh.log")
    try:
        poll_sync(lambda: len(_ticks(r, f"({last_id}")) >= 2, timeout_s=30)
    finally:
        _stop(proc)
    fresh = _ticks(r, f"({last_id}")
    assert all(next(t for _, t in fresh if t.symbol == s).price == first_tick[s].price for s in SYMBOLS)
