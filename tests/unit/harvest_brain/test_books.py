"""harvest_brain's books through its handler: scripted execution.result fills (open, add, partial, full
close, both sides, fees) give hand-computed PnL in the ledger hashes and one trade.closed per trade with
its reason; a redelivered fill changes nothing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis

from common import keys, streams
from common.books import SymbolLedger
from common.bus import Delivery, Effects, commit
from common.contracts import ExecutionResult, TradeClosed, decode
from common.maths.ledger import new_account
from common.redis_client import hgetall
from common.streams import Service, Stream
from services.harvest_brain.booking import OpenTrade, book_fill, exit_reason
from services.harvest_brain.books import Bookkeeper, trade_from_hash, trade_to_hash
from tests.helpers import hex16, run

D = Decimal
JAN_1 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
BTC_PLAN, ETH_PLAN, ETH_PLAN2 = hex16("btc-entry"), hex16("eth-entry"), hex16("eth-entry-2")


def fill(n: int, symbol: str, side: str, qty: str, price: str, fee: str, kind: str, position_after: str,
         plan: str, reason: str | None = None, **extra: Any) -> ExecutionResult:
    fields: dict[str, Any] = dict(
        source=Service.APPLY_LAYER, trace_id=hex16(f"trace-{plan}"), ts=JAN_1 + n * 60_000, fill_id=f"fill-{n}",
        plan_id=plan if kind == "ENTRY" else hex16(f"exit-{n}"), symbol=symbol, side=side, qty=D(qty),
        price=D(price), fee=D(fee), reduce_only=kind != "ENTRY", kind=kind, position_after=D(position_after),
        position_plan_id=plan, reason=reason)
    fields.update(extra)
    return ExecutionResult(**fields)


#: long BTC: add, partial TP, stop; short ETH closed by a take-profit; short ETH closed at a loss
SCRIPT = [
    fill(1, "BTCUSDT", "BUY", "1", "100", "0.05", "ENTRY", "1", BTC_PLAN),
    fill(2, "BTCUSDT", "BUY", "1", "110", "0.055", "ENTRY", "2", BTC_PLAN),
    fill(3, "BTCUSDT", "SELL", "0.5", "120", "0.06", "EXIT", "1.5", BTC_PLAN, reason="harvest_tp1"),
    fill(4, "BTCUSDT", "SELL", "1.5", "104", "0.078", "STOP", "0", BTC_PLAN),
    fill(5, "ETHUSDT", "SELL", "2", "2000", "2", "ENTRY", "-2", ETH_PLAN),
    fill(6, "ETHUSDT", "BUY", "2", "1900", "1.9", "TAKE_PROFIT", "0", ETH_PLAN),
    fill(7, "ETHUSDT", "SELL", "1", "1900", "0.95", "ENTRY", "-1", ETH_PLAN2),
    fill(8, "ETHUSDT", "BUY", "1", "1950", "0.975", "EXIT", "0", ETH_PLAN2, reason="kill_score"),
]


@pytest.fixture
def redis() -> Redis:
    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)


async def deliver(redis: Redis, keeper: Bookkeeper, message: ExecutionResult, entry_id: str = "1-0") -> Effects:
    """Handle one delivery and commit its effects the way the runtime does."""
    effects = await keeper.handle(Delivery(streams.get(Stream.EXECUTION_RESULT), entry_id, message, 1))
    await commit(redis, effects.ops, service=Service.HARVEST_BRAIN)
    return effects


async def closed_trades(redis: Redis) -> list[TradeClosed]:
    return [decode(TradeClosed, f) for _, f in await redis.xrange(keys.stream(Stream.TRADE_CLOSED))]


async def books(redis: Redis) -> dict[str, dict[str, str]]:
    return {
        "account": await hgetall(redis, keys.ledger_account()),
        "BTCUSDT": await hgetall(redis, keys.position_ledger("BTCUSDT")),
        "ETHUSDT": await hgetall(redis, keys.position_ledger("ETHUSDT")),
    }


def test_scripted_fills_give_hand_computed_books(redis: Redis) -> None:
    """Long BTC 1 @ 100 + 1 @ 110 (avg 105), sell 0.5 @ 120 (+7.50), stop 1.5 @ 104 (−1.50): realized 6,
    fees 0.243. Short ETH 2 @ 2000 closed by TP @ 1900 (+200, fees 3.9), then 1 @ 1900 closed @ 1950
    (−50, fees 1.925). Account from 10000: realized 156, fees 6.068, equity 10149.932, peak 10201.857."""
    keeper = Bookkeeper(redis, D("10000"))

    async def scenario() -> tuple[dict[str, dict[str, str]], list[TradeClosed]]:
        for n, message in enumerate(SCRIPT):
            await deliver(redis, keeper, message, f"{n + 1}-0")
        return await books(redis), await closed_trades(redis)

    state, trades = run(scenario())

    account = state["account"]
    assert D(account["realized_pnl"]) == D("156")
    assert D(account["fees"]) == D("6.068")
    assert D(account["equity"]) == D("10149.932")
    assert D(account["peak_equity"]) == D("10201.857")
    assert D(account["drawdown"]).quantize(D("1e-9")) == (D("51.925") / D("10201.857")).quantize(D("1e-9"))
    assert account["day"] == "2024-01-01" and D(account["day_start_equity"]) == D("10000")
    btc, eth = state["BTCUSDT"], state["ETHUSDT"]
    assert (D(btc["realized_pnl"]), D(btc["fees"]), btc["trades"], btc["wins"], btc["losses"]) == (
        D("6"), D("0.243"), "1", "1", "0")
    assert btc["last_fill_id"] == "fill-4" and btc["updated_at"] == str(JAN_1 + 4 * 60_000)
    assert (D(eth["realized_pnl"]), D(eth["fees"]), eth["trades"], eth["wins"], eth["losses"]) == (
        D("150"), D("5.825"), "2", "1", "1")

    assert [(t.symbol, t.side.value, t.exit_reason) for t in trades] == [
        ("BTCUSDT", "LONG", "stop_loss"), ("ETHUSDT", "SHORT", "take_profit"), ("ETHUSDT", "SHORT", "kill_score")]
    long_trade = trades[0]
    assert (long_trade.qty, long_trade.entry_price, long_trade.exit_price) == (D("2"), D("105"), D("108"))
    assert (long_trade.realized_pnl, long_trade.fees, long_trade.pnl_net) == (D("6"), D("0.243"), D("5.757"))
    assert (long_trade.opened_at, long_trade.closed_at) == (JAN_1 + 60_000, JAN_1 + 4 * 60_000)
    assert long_trade.position_plan_id == BTC_PLAN and long_trade.trace_id == SCRIPT[3].trace_id
    assert [(t.realized_pnl, t.fees, t.pnl_net) for t in trades[1:]] == [
        (D("200"), D("3.9"), D("196.1")), (D("-50"), D("1.925"), D("-51.925"))]
    assert trades[2].position_plan_id == ETH_PLAN2
    # the account's realized PnL is the sum of trade.closed once every trade is closed
    assert sum((t.realized_pnl for t in trades), D(0)) == D(account["realized_pnl"])
    assert sum((t.pnl_net for t in trades), D(0)) == D(account["equity"]) - D("10000")
    assert run(redis.exists(keys.ledger_trade("BTCUSDT"), keys.ledger_trade("ETHUSDT"))) == 0


def test_open_trade_is_kept_between_fills(redis: Redis) -> None:
    """After the add and the partial close the trade hash holds 1.5 long at 105 with 7.50 realized, the
    entry plan and the trace id, so a restarted harvest_brain continues the same trade."""
    keeper = Bookkeeper(redis, D("10000"))

    async def scenario() -> dict[str, str]:
        for n, message in enumerate(SCRIPT[:3]):
            await deliver(redis, keeper, message, f"{n + 1}-0")
        return await hgetall(redis, keys.ledger_trade("BTCUSDT"))

    fields = run(scenario())
    trade = trade_from_hash(fields)
    assert trade is not None
    assert (trade.position.qty, trade.position.avg_entry, trade.position.realized_pnl) == (D("1.5"), D("105"),
                                                                                           D("7.5"))
    assert trade.position.fees == D("0.165") and trade.position.opened_at == JAN_1 + 60_000
    assert (trade.position_plan_id, trade.trace_id) == (BTC_PLAN, SCRIPT[0].trace_id)
    assert trade_from_hash(trade_to_hash(trade, 5)) == trade


def test_redelivered_fills_change_nothing(redis: Redis) -> None:
    """Handling every delivery twice (a redelivery after a lost XACK) books each fill once: the same
    books, the same three trade.closed, and the second handling returns no writes."""
    keeper = Bookkeeper(redis, D("10000"))

    async def scenario() -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]], int, list[int]]:
        second_ops = []
        for n, message in enumerate(SCRIPT):
            await deliver(redis, keeper, message, f"{n + 1}-0")
            if n == 3:
                before = await books(redis)
            second_ops.append(len((await deliver(redis, keeper, message, f"{n + 1}-0")).ops))
        after_all = await books(redis)
        for n, message in enumerate(SCRIPT):  # and the whole stream once more
            await deliver(redis, keeper, message, f"{n + 1}-0")
        return before, after_all, len(await closed_trades(redis)), second_ops

    after_close, after_all, trades, second_ops = run(scenario())
    assert second_ops == [0] * len(SCRIPT)
    assert D(after_close["BTCUSDT"]["realized_pnl"]) == D("6") and after_close["BTCUSDT"]["trades"] == "1"
    assert D(after_all["account"]["equity"]) == D("10149.932")
    assert D(after_all["account"]["fees"]) == D("6.068")
    assert after_all["ETHUSDT"]["trades"] == "2"
    assert trades == 3
    assert run(redis.pttl(keys.ledger_fill("fill-1"))) > 29 * 86_400_000


def test_exit_reason_from_the_fill_or_its_kind() -> None:
    """A closing fill's own reason wins; without one STOP→stop_loss, TAKE_PROFIT→take_profit,
    LIQUIDATION→liquidation; a trailing stop's fill says trailing_stop."""
    base = dict(n=9, symbol="BTCUSDT", side="SELL", qty="1", price="100", fee="0", position_after="0",
                plan=BTC_PLAN)
    assert exit_reason(fill(kind="STOP", **base)) == "stop_loss"  # type: ignore[arg-type]
    assert exit_reason(fill(kind="TAKE_PROFIT", **base)) == "take_profit"  # type: ignore[arg-type]
    assert exit_reason(fill(kind="LIQUIDATION", **base)) == "liquidation"  # type: ignore[arg-type]
    assert exit_reason(fill(kind="STOP", reason="trailing_stop", **base)) == "trailing_stop"  # type: ignore[arg-type]


def test_liquidation_closes_a_short_at_a_loss_with_its_reason() -> None:
    """Short 3 @ 50 (fee 0.075) liquidated by a BUY 3 @ 60 (fee 0.09): realized −30, fees 0.165,
    pnl_net −30.165, exit_reason liquidation, a loss in the symbol's ledger."""
    account = new_account(D("1000"), JAN_1)
    opened = book_fill(fill(1, "SOLUSDT", "SELL", "3", "50", "0.075", "ENTRY", "-3", ETH_PLAN), None,
                       SymbolLedger(), account)
    closed = book_fill(fill(2, "SOLUSDT", "BUY", "3", "60", "0.09", "LIQUIDATION", "0", ETH_PLAN),
                       opened.trade, opened.ledger, opened.account)
    assert closed.trade is None and closed.closed is not None
    assert (closed.closed.realized_pnl, closed.closed.fees, closed.closed.pnl_net) == (D("-30"), D("0.165"),
                                                                                       D("-30.165"))
    assert closed.closed.exit_reason == "liquidation"
    assert (closed.ledger.trades, closed.ledger.wins, closed.ledger.losses) == (1, 0, 1)
    assert closed.account.equity == D("969.835")


def test_reduce_only_fill_without_an_open_trade_books_only_its_fee() -> None:
    """A stop fill whose opening fill was never seen (booked before harvest_brain existed) books its
    fee and the exchange's reported PnL, opens nothing and publishes no trade.closed."""
    account = new_account(D("1000"), JAN_1)
    orphan = fill(1, "XRPUSDT", "SELL", "10", "0.5", "0.0025", "STOP", "0", BTC_PLAN, realized_pnl=D("-0.4"))
    booking = book_fill(orphan, None, SymbolLedger(), account)
    assert booking.orphan and booking.trade is None and booking.closed is None
    assert booking.account.equity == D("999.5975")
    assert (booking.ledger.realized_pnl, booking.ledger.fees) == (D("-0.4"), D("0.0025"))


def test_reduce_only_fill_larger_than_the_trade_never_opens_the_other_way() -> None:
    """A reduce-only fill of 2 against a long of 1 closes the long (the exchange caps it) and leaves the
    books flat instead of opening a short of 1."""
    account = new_account(D("1000"), JAN_1)
    opened = book_fill(fill(1, "XRPUSDT", "BUY", "1", "10", "0", "ENTRY", "1", BTC_PLAN), None, SymbolLedger(),
                       account)
    closed = book_fill(fill(2, "XRPUSDT", "SELL", "2", "11", "0", "EXIT", "0", BTC_PLAN, reason="manual"),
                       opened.trade, opened.ledger, opened.account)
    assert closed.trade is None and closed.closed is not None and closed.closed.realized_pnl == D("1")
    assert isinstance(opened.trade, OpenTrade) and opened.trade.position_plan_id == BTC_PLAN
