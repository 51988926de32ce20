"""harvest_brain's books: one ``execution.result`` booked into the open trade, the symbol's ledger and
the account (DESIGN §7), by :func:`services.harvest_brain.booking.book_fill` (pure: the backtest books
with it too) — this module only reads, converts and writes.

Three hashes per booking, written with the fill's marker and the XACK in one commit:

- ``quantum:ledger:trade:{s}`` — the open trade (:class:`LedgerPosition` plus the entry plan and trace
  id), so a restart continues the same trade; deleted when the trade closes;
- ``quantum:position:ledger:{s}`` — the symbol's totals: realized PnL, fees, trades, wins, losses;
- ``quantum:ledger:account`` — equity, realized PnL, fees, peak, drawdown, day start.

A fill whose marker ``quantum:ledger:fill:{fill_id}`` exists was booked already: it changes nothing.
"""

from __future__ import annotations

from decimal import Decimal

import structlog
from prometheus_client import Gauge
from redis.asyncio import Redis

from common import keys
from common.books import account_from_hash, account_to_hash, ledger_from_hash, ledger_to_hash
from common.bus import Delivery, Effects
from common.contracts import ExecutionResult, PositionSide, plain_decimal
from common.logging import bound
from common.maths.ledger import Account, LedgerPosition, new_account
from common.redis_client import hgetall
from common.streams import Stream
from services.harvest_brain.booking import Booking, OpenTrade, book_fill

EQUITY = Gauge("qt_ledger_equity", "Account equity as the ledger books it (USDT)")
DRAWDOWN = Gauge("qt_ledger_drawdown", "Drawdown from peak equity (fraction)")

log = structlog.get_logger()

ZERO = Decimal(0)
#: how long a booked fill is remembered (far beyond any redelivery of execution.result)
FILL_MARKER_TTL_MS = 30 * 86_400_000

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
