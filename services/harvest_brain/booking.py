"""harvest_brain's booking of one fill (pure): ``execution.result`` into the open trade, the symbol's
ledger and the account (DESIGN §7) through :mod:`common.maths.ledger`, and the ``trade.closed`` of a
trade it closes. :mod:`services.harvest_brain.books` reads and writes the hashes around it; the backtest
books its simulated fills with the same function."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from common.books import SymbolLedger
from common.contracts import ExecutionResult, FillKind, TradeClosed
from common.ids import hex16
from common.maths.ledger import Account, LedgerPosition, apply_fill, book, usdt
from common.streams import Service

ZERO = Decimal(0)

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


# --- booking ----------------------------------------------------------------------------------


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
        realized = usdt(fill.realized_pnl) if fill.realized_pnl is not None else ZERO
        after_ledger = replace(ledger, realized_pnl=ledger.realized_pnl + realized, fees=ledger.fees + fill.fee,
                               last_fill_id=fill.fill_id, updated_at=ts)
        return Booking(trade, after_ledger, book(account, realized, fill.fee, ts), realized, None, orphan=True)

    # a reduce-only fill never opens the other way, whatever it says: the exchange caps it at the position
    qty = min(fill.qty, position.qty) if fill.reduce_only else fill.qty
    fee = fill.fee if qty == fill.qty else usdt(fill.fee * qty / fill.qty)
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
