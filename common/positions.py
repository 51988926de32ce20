"""The position hash ``quantum:position:{symbol}`` — written only by apply_layer, read by everyone.

One hash per symbol: side, quantity, entry price, leverage, stop-loss and take-profit, the entry plan
that opened it (``plan_id``: exits must name it), the protective orders' ids, timestamps in epoch ms.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from common.contracts.base import plain_decimal
from common.contracts.enums import PositionSide, ReconcileKind


@dataclass(frozen=True)
class PositionRecord:
    symbol: str
    side: PositionSide
    quantity: Decimal
    entry_price: Decimal
    leverage: int
    stop_loss: Decimal | None
    take_profit: Decimal | None
    plan_id: str
    created_at: int
    updated_at: int
    trace_id: str
    sl_order_id: str = ""
    tp_order_id: str = ""
    #: why the stop sits where it does (stop_loss, breakeven, trailing_stop): the reason of its fill
    stop_reason: str = "stop_loss"

    @property
    def signed_qty(self) -> Decimal:
        return self.quantity * self.side.sign

    def notional(self, price: Decimal | None = None) -> Decimal:
        return self.quantity * (price if price is not None else self.entry_price)

    def margin(self) -> Decimal:
        return self.notional() / self.leverage

    def with_changes(self, **changes: object) -> PositionRecord:
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_hash(self) -> dict[str, str]:
        return {
            "symbol": self.symbol,
            "side": self.side.value,
            "quantity": plain_decimal(self.quantity),
            "entry_price": plain_decimal(self.entry_price),
            "leverage": str(self.leverage),
            "stop_loss": "" if self.stop_loss is None else plain_decimal(self.stop_loss),
            "take_profit": "" if self.take_profit is None else plain_decimal(self.take_profit),
            "plan_id": self.plan_id,
            "created_at": str(self.created_at),
            "updated_at": str(self.updated_at),
            "trace_id": self.trace_id,
            "sl_order_id": self.sl_order_id,
            "tp_order_id": self.tp_order_id,
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> PositionRecord:
        return cls(
            symbol=fields["symbol"],
            side=PositionSide(fields["side"]),
            quantity=Decimal(fields["quantity"]),
            entry_price=Decimal(fields["entry_price"]),
            leverage=int(fields.get("leverage") or 1),
            stop_loss=Decimal(fields["stop_loss"]) if fields.get("stop_loss") else None,
            take_profit=Decimal(fields["take_profit"]) if fields.get("take_profit") else None,
            plan_id=fields["plan_id"],
            created_at=int(fields.get("created_at") or 0),
            updated_at=int(fields.get("updated_at") or 0),
            trace_id=fields.get("trace_id") or "",
            sl_order_id=fields.get("sl_order_id", ""),
            tp_order_id=fields.get("tp_order_id", ""),
            stop_reason=fields.get("stop_reason") or "stop_loss",
        )


def drift_kind(ours: Decimal, theirs: Decimal) -> ReconcileKind | None:
    """What differs between our signed quantity of a symbol and the exchange's, or None when they agree."""
    if ours == theirs:
        return None
    if ours == 0:
        return ReconcileKind.MISSING_IN_REDIS
    if theirs == 0:
        return ReconcileKind.MISSING_ON_EXCHANGE
    if (ours > 0) != (theirs > 0):
        return ReconcileKind.SIDE_MISMATCH
    return ReconcileKind.QTY_MISMATCH
