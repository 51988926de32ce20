"""Entry sizing (WIRING_MAP §5A, DESIGN §7)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.contracts.enums import Side
from common.maths.sizing import SizingParams, size_entry


def test_the_logged_example_balance_10000_atr_10pct() -> None:
    """Balance 10000 and ATR 10 %: margin 200, SL 3 %, TP 3.99 % (the logs' "4 %"), leverage 10."""
    sizing = size_entry(Side.BUY, Decimal("100"), 0.10, Decimal("10000"), max_leverage=20)

    # base_sl = max(0.10·0.3, 0.03) = 0.03; base_tp = 0.03·1.33 = 0.0399; margin = 10000·0.02
    assert sizing.sl_pct == Decimal("0.03")
    assert sizing.tp_pct == Decimal("0.0399")
    assert sizing.leverage == 10
    assert sizing.margin_usd == Decimal("200")
    assert sizing.notional_usd == Decimal("2000")


def test_buy_levels_are_below_and_above_the_entry() -> None:
    """A BUY puts the stop at entry·(1 − sl) and the target at entry·(1 + tp)."""
    sizing = size_entry(Side.BUY, Decimal("250"), 0.10, Decimal("10000"), max_leverage=10)

    assert sizing.stop_loss == Decimal("242.5")  # 250·0.97
    assert sizing.take_profit == Decimal("259.975")  # 250·1.0399


def test_sell_levels_are_mirrored() -> None:
    """A SELL puts the stop above the entry and the target below it."""
    sizing = size_entry(Side.SELL, Decimal("250"), 0.10, Decimal("10000"), max_leverage=10)

    assert sizing.stop_loss == Decimal("257.5")  # 250·1.03
    assert sizing.take_profit == Decimal("240.025")  # 250·0.9601


def test_a_wide_atr_widens_the_stop_past_the_floor() -> None:
    """ATR 20 %: 0.2·0.3 = 0.06 beats the 3 % floor; TP = 0.06·1.33 = 0.0798."""
    sizing = size_entry(Side.BUY, Decimal("100"), 0.20, Decimal("5000"), max_leverage=10)

    assert sizing.sl_pct == Decimal("0.06")
    assert sizing.tp_pct == Decimal("0.0798")
    assert sizing.margin_usd == Decimal("100")  # 5000·0.02
    assert sizing.stop_loss == Decimal("94")
    assert sizing.take_profit == Decimal("107.98")


def test_a_narrow_atr_keeps_the_three_percent_floor() -> None:
    """ATR 2 %: 0.02·0.3 = 0.006 is below the floor, so the stop stays at 3 %."""
    sizing = size_entry(Side.BUY, Decimal("100"), 0.02, Decimal("10000"), max_leverage=10)

    assert sizing.sl_pct == Decimal("0.03")


@pytest.mark.parametrize(("max_leverage", "expected"), [(1, 1), (5, 5), (10, 10), (20, 10), (125, 10)])
def test_leverage_is_the_symbol_max_capped_at_ten(max_leverage: int, expected: int) -> None:
    """Leverage = min(the symbol's max leverage, 10)."""
    sizing = size_entry(Side.BUY, Decimal("100"), 0.1, Decimal("1000"), max_leverage=max_leverage)

    assert sizing.leverage == expected


def test_params_change_the_constants() -> None:
    """Every constant comes from SizingParams: cap 20, margin 5 %, R:R 2, floor 1 %, multiplier 0.5."""
    params = SizingParams(sl_atr_mult=0.5, min_sl_frac=0.01, reward_risk=2.0, leverage_cap=20, margin_fraction=0.05)

    sizing = size_entry(Side.SELL, Decimal("10"), 0.04, Decimal("1000"), max_leverage=50, params=params)

    # sl = max(0.04·0.5, 0.01) = 0.02; tp = 0.04; margin = 50; leverage = min(50, 20)
    assert (sizing.sl_pct, sizing.tp_pct, sizing.leverage, sizing.margin_usd) == (
        Decimal("0.02"),
        Decimal("0.04"),
        20,
        Decimal("50"),
    )
    assert (sizing.stop_loss, sizing.take_profit) == (Decimal("10.2"), Decimal("9.6"))


@pytest.mark.parametrize(
    ("entry", "balance", "atr", "max_leverage"),
    [
        (Decimal("0"), Decimal("1000"), 0.1, 10),
        (Decimal("-1"), Decimal("1000"), 0.1, 10),
        (Decimal("100"), Decimal("0"), 0.1, 10),
        (Decimal("100"), Decimal("-5"), 0.1, 10),
        (Decimal("100"), Decimal("1000"), -0.1, 10),
        (Decimal("100"), Decimal("1000"), float("nan"), 10),
        (Decimal("100"), Decimal("1000"), 0.1, 0),
        (Decimal("100"), Decimal("1000"), 4.0, 10),  # sl = 120 %: the stop would be below zero
    ],
)
def test_impossible_inputs_are_rejected(entry: Decimal, balance: Decimal, atr: float, max_leverage: int) -> None:
    """Non-positive entry or balance, a bad ATR or leverage, or a level at or below zero: ValueError."""
    with pytest.raises(ValueError):
        size_entry(Side.BUY, entry, atr, balance, max_leverage)
