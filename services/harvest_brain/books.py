"""harvest_brain's books: one ``execution.result`` booked into the open trade, the symbol's ledger and
the account (DESIGN §7), through :mod:`common.maths.ledger` — this module only reads, converts and
writes.

Three hashes per booking, written with the fill's marker and the XACK in one commit:

- ``quantum:ledger:trade:{s}`` — the open trade (:class:`LedgerPosition` plus the entry plan and trace
  id), so a restart continues the same trade; deleted when the trade closes;
- ``quantum:position:ledger:{s}`` — the symbol's totals: realized PnL, fees, trades, wins, losses;
- ``quantum:ledger:account`` — equity, realized PnL, fees, peak, drawdown, day start.

A fill whose marker ``quantum:ledger:fill:{fill_id}`` exists was booked already: it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

import structlog
from prometheus_client import Gauge
from redis.asyncio import Redis

from common import keys
from common.books import SymbolLedger, account_from_hash, account_to_hash, ledger_from_hash, ledger_to_hash
from common.bus import Delivery, Effects
from common.contracts import ExecutionResult, FillKind, PositionSide, TradeClosed, plain_decimal
from common.ids import hex16
from common.logging import bound
from common.maths.ledger import Account, LedgerPosition, apply_fill, book, new_account
from common.redis_client import hgetall
from common.streams import Service, Stream

EQUITY = Gauge("qt_ledger_equity", "Account equity as the ledger books it (USDT)")
DRAWDOWN = Gauge("qt_ledger_drawdown", "Drawdown from peak equity (fraction)")

log = structlog.get_logger()

ZERO = Decimal(0)
#: how long a booked fill is remembered (far beyond any redelivery of execution.result)
FILL_MARKER_TTL_MS = 30 * 86_400_000

#: the exit reason of a closing fill that carries none, by the kind of order that made it
_REASON_BY_KIND = {
    FillKind.STOP: "stop_loss",
    FillKind.TAKE_PROFIT: "take_profit",
    FillKind.LIQUIDATION: "liquidation",
}


# --- the values --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenTrade:
    """The open trade of a symbol: the ledger position and the entry plan and trace it started with."""

    position: LedgerPosition
    position_plan_id: str
    trace_id: str


@dataclass(frozen=True)
class Booking:
    """What one fill did: the trade after it (None: flat), the ledger, the account, the PnL it realized
    and the trade it closed, if any."""

    trade: OpenTrade | None
    ledger: SymbolLedger
    account: Account
    realized: Decimal
    closed: TradeClosed | None
    orphan: bool = False


# --- codecs ------------------------------------------------------------------------------------------

_POSITION_DECIMALS = ("qty", "avg_entry", "realized_pnl", "fees", "entry_notional", "exit_notional", "exit_qty",
                      "max_qty")


def trade_to_hash(trade: OpenTrade, updated_at: int) -> dict[str, str]:
    pos = trade.position
    assert pos.side is not None and pos.opened_at is not None
    fields = {name: plain_decimal(getattr(pos, name)) for name in _POSITION_DECIMALS}
    fields.update(side=pos.side.value, opened_at=str(pos.opened_at), position_plan_id=trade.position_plan_id,
                  trace_id=trade.trace_id, updated_at=str(updated_at))
    return fields


def trade_from_hash(fields: dict[str, str]) -> OpenTrade | None:
    if not fields:
        return None
    decimals = {name: Decimal(fields[name]) for name in _POSITION_DECIMALS}
    position = LedgerPosition(side=PositionSide(fields["side"]), opened_at=int(fields["opened_at"]), **decimals)
    return OpenTrade(position, fields.get("position_plan_id", ""), fields.get("trace_id", ""))


# --- booking (pure) ----------------------------------------------------------------------------------


def exit_reason(fill: ExecutionResult) -> str:
    """The closing fill's own reason, else what its kind says (a stop is a stop-loss), else unknown."""
    if fill.reason is not None:
        return fill.reason.value
    return _REASON_BY_KIND.get(fill.kind, "unknown")


def _plan_id_of(fill: ExecutionResult, trade: OpenTrade | None, opened_at: int) -> str:
    """The entry plan a closed trade belongs to: the fill's, the trade's, or one derived from the trade."""
    if fill.position_plan_id:
        return fill.position_plan_id
    if trade is not None and trade.position_plan_id:
        return trade.position_plan_id
    return hex16(fill.symbol, opened_at)


def _opening_plan_id(fill: ExecutionResult) -> str:
    if fill.position_plan_id:
        return fill.position_plan_id
    return fill.plan_id if fill.kind is FillKind.ENTRY else ""


def book_fill(fill: ExecutionResult, trade: OpenTrade | None, ledger: SymbolLedger, account: Account) -> Booking:
    """Book ``fill`` (its envelope ``ts`` is the fill time). A reduce-only fill with no open trade of the
    other side to reduce (its opening fill was never seen) is an orphan: only its fee and the PnL the
    exchange reported are booked, and no trade is opened."""
    ts = fill.ts
    position = trade.position if trade is not None else LedgerPosition.flat()
    reduces = position.side is not None and fill.side.position_side is not position.side
    if fill.reduce_only and not reduces:
        realized = fill.realized_pnl if fill.realized_pnl is not None else ZERO
        after_ledger = replace(ledger, realized_pnl=ledger.realized_pnl + realized, fees=ledger.fees + fill.fee,
                               last_fill_id=fill.fill_id, updated_at=ts)
        return Booking(trade, after_ledger, book(account, realized, fill.fee, ts), realized, None, orphan=True)

    # a reduce-only fill never opens the other way, whatever it says: the exchange caps it at the position
    qty = min(fill.qty, position.qty) if fill.reduce_only else fill.qty
    fee = fill.fee if qty == fill.qty else fill.fee * qty / fill.qty
    outcome = apply_fill(position, fill.side, qty, fill.price, fee, ts)
    after_ledger = replace(ledger, realized_pnl=ledger.realized_pnl + outcome.realized_pnl,
                           fees=ledger.fees + fill.fee, last_fill_id=fill.fill_id, updated_at=ts)
    closed: TradeClosed | None = None
    if outcome.trade is not None:
        summary = outcome.trade
        win = summary.pnl_net > 0
        after_ledger = replace(after_ledger, trades=after_ledger.trades + 1, wins=after_ledger.wins + int(win),
                               losses=after_ledger.losses + int(not win))
        closed = TradeClosed(
            source=Service.HARVEST_BRAIN, trace_id=fill.trace_id,
            position_plan_id=_plan_id_of(fill, trade, summary.opened_at), symbol=fill.symbol, side=summary.side,
            qty=summary.qty, entry_price=summary.entry_price, exit_price=summary.exit_price,
            realized_pnl=summary.realized_pnl, fees=summary.fees, pnl_net=summary.pnl_net,
            opened_at=summary.opened_at, closed_at=summary.closed_at, exit_reason=exit_reason(fill),
        )
    after = outcome.position_after
    if after.is_flat:
        next_trade = None
    elif trade is None or outcome.flipped:
        next_trade = OpenTrade(after, _opening_plan_id(fill), fill.trace_id)
    else:
        next_trade = replace(trade, position=after,
                             position_plan_id=trade.position_plan_id or _opening_plan_id(fill))
    # the whole fee paid reaches the account, a capped or flipped remainder's share included
    return Booking(next_trade, after_ledger, book(account, outcome.realized_pnl, fill.fee, ts),
                   outcome.realized_pnl, closed)


def booking_effects(fill: ExecutionResult, booking: Booking, *, now: int) -> Effects:
    """The writes of a booking: trade, ledger, account, the fill's marker, and trade.closed."""
    effects = Effects()
    if booking.trade is None:
        effects.delete(keys.ledger_trade(fill.symbol))
    else:
        effects.hset(keys.ledger_trade(fill.symbol), trade_to_hash(booking.trade, now), replace=True)
    effects.hset(keys.position_ledger(fill.symbol), ledger_to_hash(booking.ledger))
    effects.hset(keys.ledger_account(), account_to_hash(booking.account, now))
    EQUITY.set(float(booking.account.equity))
    DRAWDOWN.set(float(booking.account.drawdown))
    effects.set(keys.ledger_fill(fill.fill_id), str(now), ttl_ms=FILL_MARKER_TTL_MS)
    if booking.closed is not None:
        effects.publish(Stream.TRADE_CLOSED, booking.closed)
    return effects


# --- the handler -------------------------------------------------------------------------------------


class Bookkeeper:
    """The ``execution.result`` handler: reads the books, books the fill, returns the writes."""

    def __init__(self, redis: Redis, starting_equity: Decimal) -> None:
        self.redis = redis
        self.starting_equity = starting_equity

    async def account(self, ts: int) -> Account:
        fields = await hgetall(self.redis, keys.ledger_account())
        return account_from_hash(fields) if fields else new_account(self.starting_equity, ts)

    async def handle(self, delivery: Delivery) -> Effects:
        fill = delivery.message
        assert isinstance(fill, ExecutionResult)
        with bound(symbol=fill.symbol, trace_id=fill.trace_id, plan_id=fill.plan_id):
            if await self.redis.exists(keys.ledger_fill(fill.fill_id)):
                log.info("fill_already_booked", fill_id=fill.fill_id)
                return Effects()
            trade = trade_from_hash(await hgetall(self.redis, keys.ledger_trade(fill.symbol)))
            ledger = ledger_from_hash(await hgetall(self.redis, keys.position_ledger(fill.symbol)))
            booking = book_fill(fill, trade, ledger, await self.account(fill.ts))
            position = booking.trade.position if booking.trade else LedgerPosition.flat()
            if position.signed_qty != fill.position_after:
                log.warning("ledger_position_differs", fill_id=fill.fill_id, ledger_qty=str(position.signed_qty),
                            position_after=str(fill.position_after))
            if booking.orphan:
                log.warning("fill_without_open_trade", fill_id=fill.fill_id, kind=fill.kind.value,
                            fee=str(fill.fee), realized_pnl=str(booking.realized))
            log.info("fill_booked", fill_id=fill.fill_id, kind=fill.kind.value, side=fill.side.value,
                     qty=str(fill.qty), price=str(fill.price), fee=str(fill.fee), realized_pnl=str(booking.realized),
                     equity=str(booking.account.equity))
            if booking.closed is not None:
                c = booking.closed
                log.info("trade_closed", position_plan_id=c.position_plan_id, side=c.side.value, qty=str(c.qty),
                         entry_price=str(c.entry_price), exit_price=str(c.exit_price),
                         realized_pnl=str(c.realized_pnl), fees=str(c.fees), pnl_net=str(c.pnl_net),
                         exit_reason=c.exit_reason)
            return booking_effects(fill, booking, now=fill.ts)
