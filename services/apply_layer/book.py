"""How a fill changes the position hash (pure): open, increase, reduce, close."""

from __future__ import annotations

from decimal import Decimal

from common.contracts import ApplyPlan, PositionSide, Side
from common.positions import PositionRecord

PRICE_PLACES = Decimal("0.00000001")


def opened(plan: ApplyPlan, qty: Decimal, price: Decimal, now: int) -> PositionRecord:
    """A new position from an entry plan's fill."""
    assert plan.side is not None and plan.leverage is not None
    return PositionRecord(
        symbol=plan.symbol, side=plan.side.position_side, quantity=qty, entry_price=price,
        leverage=plan.leverage, stop_loss=plan.stop_loss, take_profit=plan.take_profit, plan_id=plan.plan_id,
        created_at=now, updated_at=now, trace_id=plan.trace_id,
    )


def increased(position: PositionRecord, qty: Decimal, price: Decimal, now: int) -> PositionRecord:
    """More of the same side: the entry price becomes the volume-weighted average."""
    total = position.quantity + qty
    average = ((position.entry_price * position.quantity + price * qty) / total).quantize(PRICE_PLACES)
    return position.with_changes(quantity=total, entry_price=average.normalize(), updated_at=now)


def reduced(position: PositionRecord, qty: Decimal, now: int) -> PositionRecord | None:
    """Less of it; None when nothing is left (the hash is deleted)."""
    left = position.quantity - qty
    if left <= 0:
        return None
    return position.with_changes(quantity=left, updated_at=now)


def after_fill(position: PositionRecord | None, side: Side, qty: Decimal, price: Decimal, now: int,
               plan: ApplyPlan | None = None) -> PositionRecord | None:
    """The position after any fill of ``side``: it adds to a position of its side, reduces the other."""
    if position is None:
        if plan is None:
            return None  # a reducing fill of a position we do not hold: nothing to record
        return opened(plan, qty, price, now)
    if side.position_side is position.side:
        return increased(position, qty, price, now)
    return reduced(position, qty, now)


def signed(position: PositionRecord | None) -> Decimal:
    return position.signed_qty if position is not None else Decimal(0)


def side_of(position_amt: Decimal) -> PositionSide | None:
    if position_amt > 0:
        return PositionSide.LONG
    if position_amt < 0:
        return PositionSide.SHORT
    return None
