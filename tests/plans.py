"""Plans as the fleet's producers publish them, for tests: entries, closes and stop updates with
deterministic ids derived from a name."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from common.contracts import ApplyPlan, PlanStep
from common.ids import hex16 as hid
from common.streams import Service

D = Decimal


def entry(name: str, symbol: str = "BTCUSDT", side: str = "BUY", qty: str = "0.01", price: str = "50000",
          leverage: int = 10, ts: int | None = None, **extra: Any) -> ApplyPlan:
    p = D(price)
    sl, tp = (p * D("0.97"), p * D("1.04")) if side == "BUY" else (p * D("1.03"), p * D("0.96"))
    fields: dict[str, Any] = dict(
        source=Service.INTENT_BRIDGE, trace_id=hid("t" + name), plan_id=hid(name), symbol=symbol,
        action="ENTRY_PROPOSED", side=side, qty=D(qty), order_type="MARKET", reduce_only=False, leverage=leverage,
        entry_price=p, stop_loss=sl, take_profit=tp, intent_id=hid("i" + name))
    if ts is not None:
        fields["ts"] = ts
    fields.update(extra)
    return ApplyPlan(**fields)


def close(name: str, position_plan_id: str, symbol: str = "BTCUSDT", pct: float = 100.0,
          reason: str = "manual") -> ApplyPlan:
    action = "FULL_CLOSE_PROPOSED" if pct == 100.0 else "PARTIAL_CLOSE_PROPOSED"
    step = "CLOSE_FULL" if pct == 100.0 else "CLOSE_PARTIAL"
    return ApplyPlan(source=Service.EXITBRAIN, trace_id=hid("t" + name), plan_id=hid(name), symbol=symbol,
                     action=action, position_plan_id=position_plan_id, reason=reason,
                     steps=[PlanStep(step=step, pct=pct)])


def update_stop(name: str, position_plan_id: str, stop: str, symbol: str = "BTCUSDT",
                reason: str = "trailing_stop") -> ApplyPlan:
    return ApplyPlan(source=Service.EXITBRAIN, trace_id=hid("t" + name), plan_id=hid(name), symbol=symbol,
                     action="UPDATE_STOP", position_plan_id=position_plan_id, new_stop_loss=D(stop), reason=reason)
