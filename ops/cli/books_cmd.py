"""``qt positions``, ``qt pnl``, ``qt trades`` (read-only) and ``qt close`` (publishes a manual exit)."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_EVEN, Decimal

import typer
from redis.asyncio import Redis
from rich.table import Table

from common import keys
from common.books import SymbolLedger
from common.bus import publish
from common.config import Settings
from common.contracts import (
    ApplyPlan,
    ExitReason,
    PlanStep,
    TradeClosed,
    decode,
    new_trace_id,
    now_ms,
    plain_decimal,
)
from common.ids import exit_plan_id
from common.maths.ledger import Account, usdt
from common.positions import PositionRecord
from common.redis_client import xrange
from common.store import all_positions, read_account, read_ledgers, read_position, read_price
from common.streams import Service, Stream
from ops.cli.context import EXIT_PROBLEMS, FORMAT_OPTION, console, output_format, when, with_redis

PRICE_PLACES = Decimal("0.00000001")


def money(amount: Decimal) -> str:
    """A USDT amount as the books hold it: on the 1e-8 grid (:func:`common.maths.ledger.usdt`)."""
    return plain_decimal(usdt(amount))


def price(value: Decimal) -> str:
    """A price as a person reads it: an average (VWAP) to 8 decimals, as Binance shows entry prices."""
    return plain_decimal(value.quantize(PRICE_PLACES, rounding=ROUND_HALF_EVEN).normalize() + 0)


def positions() -> None:
    """Open positions with mark price and unrealized PnL."""

    async def go(redis: Redis, _: Settings) -> list[tuple[PositionRecord, Decimal | None]]:
        rows = []
        for p in (await all_positions(redis)).values():
            price = await read_price(redis, p.symbol)
            rows.append((p, price.mark_price if price else None))
        return rows

    rows = with_redis(go)
    table = Table(title=f"open positions: {len(rows)}", title_justify="left")
    for col in ("symbol", "side", "qty", "entry", "mark", "uPnL", "lev", "stop", "take profit", "plan_id"):
        table.add_column(col)
    for p, mark in rows:
        upnl = "-" if mark is None else f"{(mark - p.entry_price) * p.signed_qty:.2f}"
        table.add_row(p.symbol, p.side.value, str(p.quantity), str(p.entry_price), str(mark or "-"), upnl,
                      str(p.leverage), str(p.stop_loss or "-"), str(p.take_profit or "-"), p.plan_id)
    console.print(table)


def pnl() -> None:
    """The account (equity, realized PnL, fees, drawdown) and realized PnL per symbol."""

    async def go(redis: Redis, _: Settings) -> tuple[Account | None, dict[str, SymbolLedger]]:
        return await read_account(redis), await read_ledgers(redis)

    account, ledgers = with_redis(go)
    if account is None:
        console.print("no fills booked yet (quantum:ledger:account is empty)")
    else:
        console.print(f"equity {money(account.equity)}  realized {money(account.realized_pnl)}  "
                      f"fees {money(account.fees)}  peak {money(account.peak_equity)}  drawdown {account.drawdown}  "
                      f"day {account.day} (started at {money(account.day_start_equity)})")
    table = Table(title="per symbol", title_justify="left")
    for col in ("symbol", "realized", "fees", "trades", "wins", "losses"):
        table.add_column(col)
    for symbol, ledger in sorted(ledgers.items()):
        table.add_row(symbol, money(ledger.realized_pnl), money(ledger.fees), str(ledger.trades), str(ledger.wins),
                      str(ledger.losses))
    console.print(table)


def trades(
    limit: int = typer.Option(20, help="How many, newest first."),
    fmt: str = FORMAT_OPTION,
) -> None:
    """Closed trades from trade.closed, newest first (times local ISO; --format json: one object per trade,
    times in epoch ms)."""
    as_json = output_format(fmt)

    async def go(redis: Redis, _: Settings) -> list[TradeClosed]:
        entries = await xrange(redis, keys.stream(Stream.TRADE_CLOSED), count=limit, reverse=True)
        return [decode(TradeClosed, f) for _, f in entries]

    rows = with_redis(go)
    if as_json:
        for t in rows:
            print(json.dumps(t.model_dump(mode="json"), ensure_ascii=False))
        return
    table = Table(title=f"closed trades: {len(rows)}", title_justify="left")
    for col in ("closed_at", "symbol", "side", "qty", "entry", "exit", "pnl", "fees", "net", "reason"):
        table.add_column(col)
    for t in rows:
        table.add_row(when(t.closed_at), t.symbol, t.side.value, str(t.qty), price(t.entry_price), price(t.exit_price),
                      money(t.realized_pnl), money(t.fees), money(t.pnl_net), t.exit_reason)
    console.print(table)


def manual_exit(position: PositionRecord, pct: float, at_ms: int) -> ApplyPlan:
    """The operator's exit plan for ``position`` (plan_id = sha256(position_plan_id|manual|<ms>)[:16])."""
    plan_id = exit_plan_id(position.plan_id, ExitReason.MANUAL, at_ms)
    full = pct >= 100.0
    return ApplyPlan(source=Service.QT, trace_id=new_trace_id(), plan_id=plan_id, symbol=position.symbol,
                     action="FULL_CLOSE_PROPOSED" if full else "PARTIAL_CLOSE_PROPOSED",
                     position_plan_id=position.plan_id, reason="manual",
                     steps=[PlanStep(step="CLOSE_FULL" if full else "CLOSE_PARTIAL", pct=min(pct, 100.0))])


def close(
    symbol: str = typer.Argument(..., help="The symbol, as the exchange lists it."),
    pct: float = typer.Option(100.0, "--pct", min=0.01, max=100.0, help="Percent of the position to close."),
) -> None:
    """Publish a manual exit plan (reduce-only) for SYMBOL's open position. Writes apply.plan."""

    async def go(redis: Redis, _: Settings) -> ApplyPlan | None:
        position = await read_position(redis, symbol)
        if position is None:
            return None
        plan = manual_exit(position, pct, now_ms())
        await publish(redis, Service.QT, (Stream.APPLY_PLAN, plan))
        return plan

    plan = with_redis(go)
    if plan is None:
        console.print(f"no open position for {symbol}")
        raise typer.Exit(EXIT_PROBLEMS)
    console.print(f"published {plan.action.value} {plan.close_pct:g}% of {symbol}: plan_id {plan.plan_id} "
                  f"trace_id {plan.trace_id} (follow it: qt trace {plan.plan_id})")
