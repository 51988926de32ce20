"""How a fill changes the position hash (pure): open, add at the average price, reduce, close."""

from __future__ import annotations

from decimal import Decimal

from common.contracts import PositionSide, Side
from services.apply_layer import book
from tests.plans import entry

D = Decimal
NOW = 1_800_000_000_000


def test_an_entry_fill_opens_the_position_of_its_plan() -> None:
    """No position and an entry's fill: a position of the plan's side, quantity and levels, under the
    plan's id and trace."""
    plan = entry("open", side="SELL", qty="0.01")
    after = book.after_fill(None, Side.SELL, D("0.01"), D("49990"), NOW, plan)
    assert after is not None
    assert (after.side, after.quantity, after.entry_price, after.plan_id, after.trace_id) == (
        PositionSide.SHORT, D("0.01"), D("49990"), plan.plan_id, plan.trace_id)
    assert (after.stop_loss, after.take_profit, after.leverage) == (plan.stop_loss, plan.take_profit, 10)


def test_more_of_the_same_side_averages_the_entry_price() -> None:
    """0.01 at 50,000 plus 0.03 at 51,000: 0.04 at 50,750 (volume-weighted), same plan id."""
    plan = entry("avg")
    opened = book.opened(plan, D("0.01"), D("50000"), NOW)
    after = book.after_fill(opened, Side.BUY, D("0.03"), D("51000"), NOW + 1)
    assert after is not None and (after.quantity, after.entry_price, after.plan_id) == (D("0.04"), D("50750"),
                                                                                      plan.plan_id)
    assert after.updated_at == NOW + 1


def test_the_other_side_reduces_and_closes() -> None:
    """A reducing fill leaves the rest at the same entry price; one for all of it leaves nothing."""
    opened = book.opened(entry("reduce"), D("0.03"), D("50000"), NOW)
    part = book.after_fill(opened, Side.SELL, D("0.01"), D("52000"), NOW)
    assert part is not None and (part.quantity, part.entry_price) == (D("0.02"), D("50000"))
    assert book.after_fill(part, Side.SELL, D("0.02"), D("52000"), NOW) is None
    assert book.signed(part) == D("0.02") and book.signed(None) == 0


def test_a_reducing_fill_without_a_position_records_nothing() -> None:
    """A fill that reduces a position we do not hold (no plan to open one) leaves no position."""
    assert book.after_fill(None, Side.SELL, D("0.01"), D("50000"), NOW) is None
