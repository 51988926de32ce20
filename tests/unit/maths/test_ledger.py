"""The ledger: fill-by-fill position books and the account (DESIGN §7)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.contracts.enums import PositionSide, Side
from common.maths.ledger import (
    FillOutcome,
    LedgerPosition,
    TradeSummary,
    apply_fill,
    book,
    daily_loss_pct,
    drawdown_pct,
    new_account,
    utc_day,
)

D = Decimal
BUY, SELL = Side.BUY, Side.SELL
JAN_1 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000


def fills(*script: tuple[Side, str, str, str, int]) -> list[FillOutcome]:
    """Apply (side, qty, price, fee, ts) fills from flat; return every outcome."""
    pos, outcomes = LedgerPosition.flat(), []
    for side, qty, price, fee, ts in script:
        outcome = apply_fill(pos, side, D(qty), D(price), D(fee), ts)
        outcomes.append(outcome)
        pos = outcome.position_after
    return outcomes


def test_adds_average_the_entry() -> None:
    """Buy 1 @ 100 then 1 @ 110: a long of 2 at VWAP 105, nothing realized, fees 0.05 + 0.055."""
    outcomes = fills((BUY, "1", "100", "0.05", 1), (BUY, "1", "110", "0.055", 2))

    pos = outcomes[-1].position_after
    assert (pos.side, pos.qty, pos.avg_entry, pos.fees, pos.opened_at) == (
        PositionSide.LONG,
        D("2"),
        D("105"),
        D("0.105"),
        1,
    )
    assert all(o.realized_pnl == 0 and not o.closed for o in outcomes)


def test_long_partial_then_full_close() -> None:
    """Long 2 @ 105; sell 0.5 @ 120 realizes (120 − 105)·0.5 = 7.50; sell 1.5 @ 104 realizes
    (104 − 105)·1.5 = −1.50 and closes. Total 6.00, fees 0.24, net 5.76; exit VWAP (60 + 156)/2 = 108."""
    outcomes = fills(
        (BUY, "1", "100", "0.05", 1_000),
        (BUY, "1", "110", "0.055", 2_000),
        (SELL, "0.5", "120", "0.06", 3_000),
        (SELL, "1.5", "104", "0.075", 4_000),
    )

    assert outcomes[2].realized_pnl == D("7.50")
    assert outcomes[2].position_after.qty == D("1.5")
    assert outcomes[2].position_after.avg_entry == D("105")  # a reduction leaves the average alone
    last = outcomes[3]
    assert last.realized_pnl == D("-1.50")
    assert last.closed and not last.flipped
    assert last.position_after.is_flat
    assert last.trade == TradeSummary(
        side=PositionSide.LONG,
        qty=D("2"),
        entry_price=D("105"),
        exit_price=D("108"),
        realized_pnl=D("6.00"),
        fees=D("0.24"),
        pnl_net=D("5.76"),
        opened_at=1_000,
        closed_at=4_000,
    )


def test_short_realizes_entry_minus_exit() -> None:
    """Short 2 @ 50; buy 1 @ 45 realizes (50 − 45)·1 = 5; buy 1 @ 52 realizes (50 − 52)·1 = −2.
    Total 3, fees 0.1 + 0.045 + 0.052 = 0.197, net 2.803."""
    outcomes = fills(
        (SELL, "2", "50", "0.1", 10),
        (BUY, "1", "45", "0.045", 20),
        (BUY, "1", "52", "0.052", 30),
    )

    assert [o.realized_pnl for o in outcomes] == [D("0"), D("5"), D("-2")]
    trade = outcomes[-1].trade
    assert trade is not None
    assert (trade.side, trade.qty, trade.entry_price, trade.exit_price) == (
        PositionSide.SHORT,
        D("2"),
        D("50"),
        D("48.5"),
    )
    assert (trade.realized_pnl, trade.fees, trade.pnl_net) == (D("3"), D("0.197"), D("2.803"))


def test_a_fill_larger_than_the_position_flips_it() -> None:
    """Long 1 @ 100 (fee 0.05); sell 3 @ 90 with fee 0.27: the long closes realizing (90 − 100)·1 = −10
    and pays a third of the fee (0.09); a short of 2 opens at 90 carrying the other 0.18."""
    outcomes = fills((BUY, "1", "100", "0.05", 5), (SELL, "3", "90", "0.27", 6))

    flip = outcomes[-1]
    assert flip.closed and flip.flipped
    assert flip.realized_pnl == D("-10")
    assert flip.trade is not None
    assert (flip.trade.fees, flip.trade.pnl_net, flip.trade.closed_at) == (D("0.14"), D("-10.14"), 6)
    after = flip.position_after
    assert (after.side, after.qty, after.avg_entry, after.fees, after.realized_pnl, after.opened_at) == (
        PositionSide.SHORT,
        D("2"),
        D("90"),
        D("0.18"),
        D("0"),
        6,
    )


def test_adding_after_a_partial_close_keeps_the_books_straight() -> None:
    """Buy 1 @ 100, sell 0.5 @ 110 (+5), buy 0.5 @ 120 (average (0.5·100 + 0.5·120)/1 = 110),
    sell 1 @ 130 (+20): total 25; entry VWAP 160/1.5, exit VWAP 185/1.5, largest size 1."""
    outcomes = fills(
        (BUY, "1", "100", "0", 1),
        (SELL, "0.5", "110", "0", 2),
        (BUY, "0.5", "120", "0", 3),
        (SELL, "1", "130", "0", 4),
    )

    assert outcomes[2].position_after.avg_entry == D("110")
    trade = outcomes[-1].trade
    assert trade is not None
    assert trade.realized_pnl == D("25")
    assert trade.qty == D("1")
    assert trade.entry_price == D("160") / D("1.5")
    assert trade.exit_price == D("185") / D("1.5")
    # (exit VWAP − entry VWAP)·total traded = (185 − 160) = the realized PnL
    assert (trade.exit_price - trade.entry_price) * D("1.5") == pytest.approx(D("25"))


def test_a_vwap_with_a_repeating_decimal_realizes_to_the_cent() -> None:
    """Buy 1 @ 100 and 2 @ 101: average 302/3 = 100.666…; selling 3 @ 102 realizes 306 − 302 = 4.00."""
    outcomes = fills((BUY, "1", "100", "0", 1), (BUY, "2", "101", "0", 2), (SELL, "3", "102", "0", 3))

    assert outcomes[-1].realized_pnl.quantize(D("0.01")) == D("4.00")


@pytest.mark.parametrize(("qty", "price"), [("0", "100"), ("-1", "100"), ("1", "0")])
def test_impossible_fills_are_rejected(qty: str, price: str) -> None:
    """A fill needs a positive quantity and price."""
    with pytest.raises(ValueError):
        apply_fill(LedgerPosition.flat(), BUY, D(qty), D(price), D("0"), 1)


def test_utc_day_changes_at_midnight_utc() -> None:
    """The last millisecond of 1 January is still 2024-01-01; the next is 2024-01-02."""
    assert utc_day(JAN_1 + DAY_MS - 1) == "2024-01-01"
    assert utc_day(JAN_1 + DAY_MS) == "2024-01-02"


def test_account_books_equity_peak_and_drawdown() -> None:
    """From 10000: +100 − 1 fee -> 10099 (new peak); −500 − 1 -> 9598, drawdown 501/10099 = 4.9609 %,
    daily loss (10000 − 9598)/10000 = 4.02 %."""
    account = new_account(D("10000"), JAN_1 + 1000)

    account = book(account, D("100"), D("1"), JAN_1 + 2000)
    assert (account.equity, account.peak_equity, account.drawdown) == (D("10099"), D("10099"), D("0"))
    account = book(account, D("-500"), D("1"), JAN_1 + 3000)

    assert account.equity == D("9598")
    assert account.peak_equity == D("10099")
    assert account.realized_pnl == D("-400")
    assert account.fees == D("2")
    assert account.drawdown == D("501") / D("10099")
    assert drawdown_pct(account) == pytest.approx(D("4.960887216556094663828101792"))
    assert daily_loss_pct(account) == D("4.02")


def test_a_new_utc_day_starts_from_the_equity_before_the_booking() -> None:
    """Equity 9598 at the end of 1 January; a −100 booking on 2 January starts the day at 9598, so the
    daily loss is 100/9598 = 1.0419 %, while the drawdown still counts from the old peak 10000."""
    account = book(new_account(D("10000"), JAN_1), D("-402"), D("0"), JAN_1 + 5000)

    account = book(account, D("-100"), D("0"), JAN_1 + DAY_MS + 5000)

    assert (account.day, account.day_start_equity, account.equity) == ("2024-01-02", D("9598"), D("9498"))
    assert daily_loss_pct(account) == D("100") * 100 / D("9598")
    assert float(daily_loss_pct(account)) == pytest.approx(1.041883726)
    assert drawdown_pct(account) == D("5.02")  # (10000 − 9498)/10000


def test_a_winning_day_has_no_daily_loss() -> None:
    """Up on the day: daily loss 0, drawdown 0."""
    account = book(new_account(D("1000"), JAN_1), D("50"), D("1"), JAN_1 + 1)

    assert daily_loss_pct(account) == 0
    assert drawdown_pct(account) == 0
