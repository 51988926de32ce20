"""Entry sizing, the trading mathematician (WIRING_MAP §5A, DESIGN §7).

``base_sl = max(atr_pct·0.3, 0.03)``, ``base_tp = base_sl·1.33``, ``leverage = min(max_leverage, 10)``,
margin ``= balance·0.02``; stop-loss and take-profit become absolute prices on the entry's side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from common.contracts.enums import Side


@dataclass(frozen=True, slots=True)
class SizingParams:
    """The constants of entry sizing, with the DESIGN §7 defaults."""

    sl_atr_mult: float = 0.3
    min_sl_frac: float = 0.03
    reward_risk: float = 1.33
    leverage_cap: int = 10
    margin_fraction: float = 0.02


@dataclass(frozen=True, slots=True)
class EntrySizing:
    """What an entry should be: stop/target as fractions and prices, leverage and margin."""

    sl_pct: Decimal
    tp_pct: Decimal
    leverage: int
    margin_usd: Decimal
    stop_loss: Decimal
    take_profit: Decimal

    @property
    def notional_usd(self) -> Decimal:
        """The position's notional value: margin times leverage."""
        return self.margin_usd * self.leverage


def to_decimal(value: float) -> Decimal:
    """A float as the Decimal it reads as (``0.3`` -> ``Decimal("0.3")``, not its binary expansion)."""
    return Decimal(repr(value))


def size_entry(
    side: Side,
    entry_price: Decimal,
    atr_pct: float,
    balance: Decimal,
    max_leverage: int,
    params: SizingParams = SizingParams(),
) -> EntrySizing:
    """Size an entry. ``atr_pct`` is a fraction (0.10 = 10 %); prices are not rounded to the tick size.

    Raises ``ValueError`` for a non-positive entry price, balance or max leverage, a negative or
    non-finite ATR, or an ATR so large that a level would fall to zero or below.
    """
    if entry_price <= 0:
        raise ValueError(f"entry_price must be positive, got {entry_price}")
    if balance <= 0:
        raise ValueError(f"balance must be positive, got {balance}")
    if max_leverage < 1:
        raise ValueError(f"max_leverage must be at least 1, got {max_leverage}")
    if not math.isfinite(atr_pct) or atr_pct < 0:
        raise ValueError(f"atr_pct must be a finite non-negative fraction, got {atr_pct}")

    # Decimal arithmetic on the decimal reading of the floats: 0.10·0.3 is 0.030, not 0.030000000000000002.
    sl_pct = max(to_decimal(atr_pct) * to_decimal(params.sl_atr_mult), to_decimal(params.min_sl_frac))
    tp_pct = sl_pct * to_decimal(params.reward_risk)
    leverage = min(max_leverage, params.leverage_cap)
    margin_usd = balance * to_decimal(params.margin_fraction)
    if side is Side.BUY:
        stop_loss, take_profit = entry_price * (1 - sl_pct), entry_price * (1 + tp_pct)
    else:
        stop_loss, take_profit = entry_price * (1 + sl_pct), entry_price * (1 - tp_pct)
    if stop_loss <= 0 or take_profit <= 0:
        raise ValueError(f"ATR {atr_pct} puts a level at or below zero (sl {sl_pct}, tp {tp_pct})")
    return EntrySizing(
        sl_pct=sl_pct,
        tp_pct=tp_pct,
        leverage=leverage,
        margin_usd=margin_usd,
        stop_loss=stop_loss,
        take_profit=take_profit,
    )
