"""When the governor trips the kill switch (pure): the ledger's daily loss or drawdown at its limit."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from common.contracts import plain_decimal
from common.maths.ledger import Account, daily_loss_pct, drawdown_pct, roll_day
from common.policy import Limits

DAILY_LOSS = "daily_loss"
DRAWDOWN = "drawdown"
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class Breach:
    """A loss limit reached: which, the value and the limit (percent of equity)."""

    limit: str
    value_pct: Decimal
    limit_pct: Decimal

    @property
    def reason(self) -> str:
        """The switch's reason, e.g. ``drawdown 16.20% >= 15%``."""
        return f"{self.limit} {plain_decimal(self.value_pct.quantize(_CENT))}% >= {plain_decimal(self.limit_pct)}%"

    def details(self) -> dict[str, Any]:
        return {"limit": self.limit, "value_pct": plain_decimal(self.value_pct.quantize(_CENT)),
                "limit_pct": plain_decimal(self.limit_pct)}


def breach(account: Account | None, limits: Limits, now_ms: int) -> Breach | None:
    """The limit ``account`` has reached, or None. The daily loss counts from the start of the current UTC
    day: an account last booked yesterday has lost nothing today. Reaching a limit trips (``>=``)."""
    if account is None:
        return None
    daily = daily_loss_pct(roll_day(account, now_ms))
    if daily >= limits.daily_loss_limit_pct:
        return Breach(DAILY_LOSS, daily, limits.daily_loss_limit_pct)
    drawdown = drawdown_pct(account)
    if drawdown >= limits.max_drawdown_pct:
        return Breach(DRAWDOWN, drawdown, limits.max_drawdown_pct)
    return None
