"""End to end with real processes and the paper exchange (issue 5): positions opened by plans are closed
by a stop-loss, by the take-profit ladder, by a trailing stop and by the kill score; each close is in
trade.closed with its reason and in the ledger with the PnL its fills make; GET /pnl equals the sum."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis

from common import keys
from common.contracts import ApplyPlan, ExecutionResult, TradeClosed, decode, encode
from common.positions import PositionRecord
from common.streams import Stream
from ops.redis_server import free_port
from tests.e2e.fleet import fleet, set_price
from tests.helpers import poll_sync
from tests.integration.exits.fleet import market_state
from tests.plans import entry

D = Decimal
SERVICES = ["apply_layer", "exitbrain", "harvest_proposal", "harvest_brain", "position_monitor"]
#: symbol -> (entry price, qty, stop, take profit)
BOOK = {
    "BTCUSDT": ("50000", "0.010", "48500", "52000"),
    "ETHUSDT": ("3000", "0.100", "2910", "3120"),
    "SOLUSDT": ("150", "4", "145.5", "156"),
    "XRPUSDT": ("0.6000", "300.0", "0.5820", "0.6240"),
}


def closed(client: redis.Redis) -> dict[str, TradeClosed]:
    return {t.symbol: t for t in (decode(TradeClosed, f) for _, f in client.xrange(keys.stream(Stream.TRADE_CLOSED)))}


def position(client: redis.Redis, symbol: str) -> PositionRecord | None:
    fields = client.hgetall(keys.position(symbol))
    return PositionRecord.from_hash(fields) if fields else None


def plans(client: redis.Redis, symbol: str) -> list[ApplyPlan]:
    found = (decode(ApplyPlan, f) for _, f in client.xrange(keys.stream(Stream.APPLY_PLAN)))
    return [p for p in found if p.symbol == symbol]


@pytest.mark.timeout(300)
def test_positions_close_by_stop_ladder_trailing_and_kill_score(redis_url: str, tmp_path: Path) -> None:
    """Four positions, four ways out, each with the right reason and PnL to the cent."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for symbol, (price, *_ ) in BOOK.items():
        set_price(client, symbol, price)
        client.hset(keys.marketstate(symbol), mapping=market_state(symbol))
    port = free_port()
    with fleet(redis_url, tmp_path, SERVICES, QT_APPLY__COOLDOWN_S="0",
               QT_HTTP__PORTS__POSITION_MONITOR=str(port)):
        for symbol, (price, qty, stop, tp) in BOOK.items():
            plan = entry(f"e2e-{symbol}", symbol=symbol, qty=qty, price=price, leverage=10,
                         stop_loss=D(stop), take_profit=D(tp))
            client.xadd(keys.stream(Stream.APPLY_PLAN), encode(plan))  # type: ignore[arg-type]
        poll_sync(lambda: all(position(client, s) is not None for s in BOOK), timeout_s=30)
        # exitbrain tightens each stop to the leverage-aware 2 % before anything else
        poll_sync(lambda: all(any(p.action.value == "UPDATE_STOP" for p in plans(client, s)) for s in BOOK),
                  timeout_s=30)

        # stop-loss: BTC falls through its 2 % stop (49000.x)
        set_price(client, "BTCUSDT", "48900")
        # the ladder: ETH through TP1 (+3.56 %: 30 % of it), TP2 (+5.36 %: 3/7 of what is left), then TP3
        # (+7.46 %), where both the ladder's last harvest and the exchange-side take-profit (the guard for
        # a dead fleet, at TP3 only) close the rest — whichever the market reaches first
        set_price(client, "ETHUSDT", "3110")
        poll_sync(lambda: _reduced(client, "ETHUSDT", D("0.070")), timeout_s=30)
        set_price(client, "ETHUSDT", "3170")
        poll_sync(lambda: _reduced(client, "ETHUSDT", D("0.040")), timeout_s=30)
        set_price(client, "ETHUSDT", "3240")
        # trailing: SOL through TP1, the stop trails the peak, then a 1 % dip takes it
        set_price(client, "SOLUSDT", "155.60")
        poll_sync(lambda: _reduced(client, "SOLUSDT", D("3")), timeout_s=30)
        poll_sync(lambda: (p := position(client, "SOLUSDT")) is not None and p.stop_reason == "trailing_stop",
                  timeout_s=30)
        set_price(client, "SOLUSDT", "154.00")
        # kill score: XRP's trend is lost
        client.hset(keys.marketstate("XRPUSDT"), mapping=market_state("XRPUSDT", flipped=True))
        set_price(client, "XRPUSDT", "0.6001")

        poll_sync(lambda: set(closed(client)) == set(BOOK), timeout_s=60)
        trades = closed(client)
        reasons = {s: t.exit_reason for s, t in trades.items()}
        assert reasons.pop("ETHUSDT") in ("harvest_tp3", "take_profit")
        assert reasons == {"BTCUSDT": "stop_loss", "SOLUSDT": "trailing_stop", "XRPUSDT": "kill_score"}
        fills = [decode(ExecutionResult, f) for _, f in client.xrange(keys.stream(Stream.EXECUTION_RESULT))]
        for symbol, trade in trades.items():
            mine = [f for f in fills if f.symbol == symbol]
            opening = [f for f in mine if not f.reduce_only]
            closing = [f for f in mine if f.reduce_only]
            entry_px = sum((f.price * f.qty for f in opening), D(0)) / sum((f.qty for f in opening), D(0))
            realized = sum(((f.price - entry_px) * f.qty for f in closing), D(0))
            fees = sum((f.fee for f in mine), D(0))
            assert trade.realized_pnl.quantize(D("0.01")) == realized.quantize(D("0.01")), symbol
            assert trade.fees == fees and trade.pnl_net == trade.realized_pnl - trade.fees
            assert sum((f.qty for f in closing), D(0)) == sum((f.qty for f in opening), D(0)) == trade.qty
            ledger = client.hgetall(keys.position_ledger(symbol))
            assert D(ledger["realized_pnl"]) == trade.realized_pnl and ledger["trades"] == "1"
            assert position(client, symbol) is None
        assert {"harvest_tp1", "harvest_tp2"} <= {f.reason.value for f in fills if f.symbol == "ETHUSDT" and f.reason}
        assert "harvest_tp1" in {f.reason.value for f in fills if f.symbol == "SOLUSDT" and f.reason}
        total = sum((t.pnl_net for t in trades.values()), D(0))
        pnl = httpx.get(f"http://127.0.0.1:{port}/pnl", timeout=5).json()
        assert D(str(pnl["account"]["realized_pnl"])) - D(str(pnl["account"]["fees"])) == total
        assert D(str(pnl["account"]["realized_pnl"])) == sum((t.realized_pnl for t in trades.values()), D(0))
        print("\ne2e exits: " + ", ".join(f"{s} {t.exit_reason} net={t.pnl_net}" for s, t in trades.items()))


def _reduced(client: redis.Redis, symbol: str, qty: Decimal) -> bool:
    p = position(client, symbol)
    return p is not None and p.quantity == qty

