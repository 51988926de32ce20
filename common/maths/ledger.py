"""The ledger (DESIGN §7): a position booked fill by fill against its average entry, and the account.

Realized PnL per reducing fill is ``(exit − entry)·qty`` for a long and ``(entry − exit)·qty`` for a
short, against the average entry; fees are kept apart, never inside the realized PnL. A fill larger
than the position closes it and opens the rest the other way at the fill price.

The rounding rule of the books (:func:`usdt`): every USDT amount is quantized to 1e-8 USDT (Binance's
precision for commissions and PnL) with ROUND_HALF_EVEN, once, where it is computed — the PnL one fill
realizes against the average entry (a division result), the share of a fee a split fill pays. Every
total (a trade's, a symbol ledger's, the account's) is a sum of such amounts, so it stays on the grid
and the books add up exactly: the account's realized PnL is the sum of the symbols', and equity is the
start plus realized minus fees, to the last 1e-8. The hash codecs (:mod:`common.books`) quantize what
they store again, a no-op for amounts already on the grid. Prices (average entry, VWAPs) and fractions
(drawdown) are not USDT amounts and keep their precision.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from common.contracts.enums import PositionSide, Side

ZERO = Decimal(0)
#: the grid of every USDT amount the books hold
USDT_PLACES = Decimal("0.00000001")


def usdt(amount: Decimal) -> Decimal:
    """``amount`` on the 1e-8 USDT grid, ROUND_HALF_EVEN (the rounding rule of the module docstring),
    without trailing zeros (``12.5``, not ``12.50000000``; never an exponent above 0)."""
    on_grid = amount.quantize(USDT_PLACES, rounding=ROUND_HALF_EVEN).normalize() + ZERO  # -0 is 0
    exponent = on_grid.as_tuple().exponent
    return on_grid.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else on_grid


@dataclass(frozen=True, slots=True)
class LedgerPosition:
    """One symbol's position as the ledger sees it, with the running totals of the trade it belongs to.

    ``entry_notional`` sums qty·price over every opening fill of the trade, ``exit_notional`` and
    ``exit_qty`` over every closing fill; ``max_qty`` is the largest size held.
    """

    side: PositionSide | None
    qty: Decimal
    avg_entry: Decimal
    realized_pnl: Decimal
    fees: Decimal
    opened_at: int | None
    entry_notional: Decimal
    exit_notional: Decimal
    exit_qty: Decimal
    max_qty: Decimal

    @classmethod
    def flat(cls) -> LedgerPosition:
        """No position."""
        return cls(None, ZERO, ZERO, ZERO, ZERO, None, ZERO, ZERO, ZERO, ZERO)

    @property
    def is_flat(self) -> bool:
        """True when no position is open."""
        return self.side is None

    @property
    def signed_qty(self) -> Decimal:
        """The quantity, negative for a short."""
        return self.qty * self.side.sign if self.side is not None else ZERO


@dataclass(frozen=True, slots=True)
class TradeSummary:
    """A closed trade, as ``trade.closed`` publishes it. Prices are VWAPs over the trade's fills."""

    side: PositionSide
    qty: Decimal
    entry_price: Decimal
    exit_price: Decimal
    realized_pnl: Decimal
    fees: Decimal
    pnl_net: Decimal
    opened_at: int
    closed_at: int


@dataclass(frozen=True, slots=True)
class FillOutcome:
    """The position after a fill, the PnL the fill realized, and the trade it closed, if any."""

    position_after: LedgerPosition
    realized_pnl: Decimal
    closed: bool
    flipped: bool
    trade: TradeSummary | None


def _open(side: PositionSide, qty: Decimal, price: Decimal, fee: Decimal, ts_ms: int) -> LedgerPosition:
    return LedgerPosition(
        side=side,
        qty=qty,
        avg_entry=price,
        realized_pnl=ZERO,
        fees=fee,
        opened_at=ts_ms,
        entry_notional=qty * price,
        exit_notional=ZERO,
        exit_qty=ZERO,
        max_qty=qty,
    )


def apply_fill(pos: LedgerPosition, side: Side, qty: Decimal, price: Decimal, fee: Decimal, ts_ms: int) -> FillOutcome:
    """Book one fill of ``qty`` at ``price`` on ``side`` paying ``fee`` (quote currency; a negative fee
    is a rebate). Raises ``ValueError`` for a non-positive quantity or price."""
    if qty <= 0:
        raise ValueError(f"fill qty must be positive, got {qty}")
    if price <= 0:
        raise ValueError(f"fill price must be positive, got {price}")

    if pos.side is None:
        return FillOutcome(_open(side.position_side, qty, price, fee, ts_ms), ZERO, False, False, None)

    if side.position_side is pos.side:
        new_qty = pos.qty + qty
        added = replace(
            pos,
            qty=new_qty,
            avg_entry=(pos.avg_entry * pos.qty + price * qty) / new_qty,
            fees=pos.fees + fee,
            entry_notional=pos.entry_notional + qty * price,
            max_qty=max(pos.max_qty, new_qty),
        )
        return FillOutcome(added, ZERO, False, False, None)

    close_qty = min(qty, pos.qty)
    realized = usdt((price - pos.avg_entry) * close_qty * pos.side.sign)
    # a flipping fill pays its fee pro rata: the closing part to this trade, the rest to the next
    close_fee = fee if close_qty == qty else usdt(fee * close_qty / qty)
    reduced = replace(
        pos,
        qty=pos.qty - close_qty,
        realized_pnl=pos.realized_pnl + realized,
        fees=pos.fees + close_fee,
        exit_notional=pos.exit_notional + close_qty * price,
        exit_qty=pos.exit_qty + close_qty,
    )
    if reduced.qty > 0:
        return FillOutcome(reduced, realized, False, False, None)

    trade = _summary(reduced, ts_ms)
    rest = qty - close_qty
    if rest > 0:
        flipped = _open(side.position_side, rest, price, fee - close_fee, ts_ms)
        return FillOutcome(flipped, realized, True, True, trade)
    return FillOutcome(LedgerPosition.flat(), realized, True, False, trade)


def _summary(closed: LedgerPosition, closed_at: int) -> TradeSummary:
    if closed.side is None or closed.opened_at is None:
        raise ValueError("a trade summary needs a position that was open")
    # every unit opened was closed, so exit_qty is also the total opened
    return TradeSummary(
        side=closed.side,
        qty=closed.max_qty,
        entry_price=closed.entry_notional / closed.exit_qty,
        exit_price=closed.exit_notional / closed.exit_qty,
        realized_pnl=usdt(closed.realized_pnl),
        fees=usdt(closed.fees),
        pnl_net=usdt(closed.realized_pnl - closed.fees),
        opened_at=closed.opened_at,
        closed_at=closed_at,
    )


@dataclass(frozen=True, slots=True)
class Account:
    """The account as the ledger books it. ``drawdown`` is a fraction of the peak; ``day`` the UTC date
    (YYYY-MM-DD) that ``day_start_equity`` belongs to."""

    equity: Decimal
    realized_pnl: Decimal
    fees: Decimal
    peak_equity: Decimal
    drawdown: Decimal
    day: str
    day_start_equity: Decimal


def utc_day(ts_ms: int) -> str:
    """The UTC date of an epoch-milliseconds timestamp, as YYYY-MM-DD."""
    return datetime.fromtimestamp(ts_ms // 1000, tz=UTC).date().isoformat()


def new_account(equity: Decimal, ts_ms: int) -> Account:
    """An account starting with ``equity`` on the UTC day of ``ts_ms``."""
    return Account(
        equity=equity,
        realized_pnl=ZERO,
        fees=ZERO,
        peak_equity=equity,
        drawdown=ZERO,
        day=utc_day(ts_ms),
        day_start_equity=equity,
    )


def roll_day(account: Account, ts_ms: int) -> Account:
    """The account on the UTC day of ``ts_ms``: on a new day the day starts at the current equity."""
    day = utc_day(ts_ms)
    if day == account.day:
        return account
    return replace(account, day=day, day_start_equity=account.equity)


def book(account: Account, realized: Decimal, fee: Decimal, ts_ms: int) -> Account:
    """Book a fill's realized PnL and fee: equity moves by ``realized − fee``, the peak and drawdown
    follow, and a new UTC day starts from the equity before this booking."""
    rolled = roll_day(account, ts_ms)
    equity = rolled.equity + realized - fee
    peak = max(rolled.peak_equity, equity)
    return replace(
        rolled,
        equity=equity,
        realized_pnl=rolled.realized_pnl + realized,
        fees=rolled.fees + fee,
        peak_equity=peak,
        drawdown=(peak - equity) / peak if peak > 0 else ZERO,
    )


def daily_loss_pct(account: Account) -> Decimal:
    """Today's loss as a percentage of the day's starting equity (5 = 5 %, as in ``policy.toml``);
    0 on a day that is not losing."""
    if account.day_start_equity <= 0:
        return ZERO
    loss = account.day_start_equity - account.equity
    return max(loss, ZERO) * 100 / account.day_start_equity


def drawdown_pct(account: Account) -> Decimal:
    """The drawdown from peak equity as a percentage (15 = 15 %, as in ``policy.toml``)."""
    return account.drawdown * 100
