"""Snapshots (pure): the exchange's position marked at the latest mark price."""

from __future__ import annotations

from decimal import Decimal

from common.contracts import PositionSide
from common.exchange.base import ExchangePosition
from common.market import LatestPrice
from common.positions import PositionRecord
from services.position_monitor.snapshot import build_snapshot

D = Decimal
TRACE = "0123456789abcdef"


def test_a_short_is_marked_at_the_price_hash() -> None:
    """Short 3 at 50 on the exchange, mark 48 in the price hash: unrealized (48 − 50)·(−3) = 6, the
    exchange's leverage and liquidation price, the position's trace id."""
    held = ExchangePosition("SOLUSDT", D("-3"), D("50"), D("49"), D("3"), 10, D("54.5"))
    ours = PositionRecord("SOLUSDT", PositionSide.SHORT, D("3"), D("50"), 10, None, None, "a" * 16, 1, 1, TRACE)
    snap = build_snapshot("SOLUSDT", held, ours, LatestPrice("SOLUSDT", D("48.1"), D("48"), 5), 1234)
    assert snap.to_hash() == {"position_amt": "-3", "entry_price": "50", "mark_price": "48",
                              "unrealized_pnl": "6", "leverage": "10", "liquidation_price": "54.5",
                              "synced_at": "1234"}
    assert snap.message().trace_id == TRACE and snap.message().unrealized_pnl == D("6")


def test_without_a_price_hash_the_exchange_mark_is_used() -> None:
    """Long 0.5 at 100, no price hash, exchange mark 103: unrealized 1.5."""
    held = ExchangePosition("BTCUSDT", D("0.5"), D("100"), D("103"), D("1.5"), 5, D("80.3"))
    snap = build_snapshot("BTCUSDT", held, None, None, 9)
    assert (snap.position.mark_price, snap.position.unrealized_pnl, snap.position.leverage) == (D("103"), D("1.5"), 5)
    assert len(snap.trace_id) == 16


def test_a_position_only_in_redis_snapshots_as_flat_on_the_exchange() -> None:
    """The snapshot is the exchange's view: a hash with nothing on the exchange shows position_amt 0."""
    ours = PositionRecord("XRPUSDT", PositionSide.LONG, D("10"), D("0.5"), 3, None, None, "b" * 16, 1, 1, TRACE)
    snap = build_snapshot("XRPUSDT", None, ours, LatestPrice("XRPUSDT", D("0.6"), D("0.6"), 1), 2)
    assert snap.position == ExchangePosition("XRPUSDT", D(0), D(0), D("0.6"), D(0), 3, D(0))
