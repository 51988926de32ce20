"""The messages apply_layer publishes: one apply.result per plan, one execution.result per fill."""

from __future__ import annotations

from decimal import Decimal

from common.contracts import (
    ApplyPlan,
    ApplyResult,
    Decision,
    ExecutionResult,
    ExitReason,
    FillKind,
)
from common.exchange.base import Fill, OrderResult
from common.exchange.errors import FillsIncomplete
from common.streams import Service


def skip(plan: ApplyPlan, reason: str) -> ApplyResult:
    return ApplyResult(source=Service.APPLY_LAYER, trace_id=plan.trace_id, plan_id=plan.plan_id, symbol=plan.symbol,
                       action=plan.action, decision=Decision.SKIP, executed=False, error=reason,
                       reduce_only=plan.action.is_exit)


def error(plan: ApplyPlan, reason: str, client_order_id: str = "", latency_ms: int = 0) -> ApplyResult:
    return ApplyResult(source=Service.APPLY_LAYER, trace_id=plan.trace_id, plan_id=plan.plan_id, symbol=plan.symbol,
                       action=plan.action, decision=Decision.ERROR, executed=False, error=reason,
                       client_order_id=client_order_id, reduce_only=plan.action.is_exit, latency_ms=latency_ms)


def executed(plan: ApplyPlan, order: OrderResult | None, client_order_id: str, latency_ms: int) -> ApplyResult:
    """EXECUTE: with the order's fill (an UPDATE_STOP has no order fill)."""
    return ApplyResult(
        source=Service.APPLY_LAYER, trace_id=plan.trace_id, plan_id=plan.plan_id, symbol=plan.symbol,
        action=plan.action, decision=Decision.EXECUTE, executed=True, client_order_id=client_order_id,
        order_id=order.order_id if order else "", filled_qty=order.executed_qty if order else Decimal(0),
        avg_price=order.avg_price if order else Decimal(0), fee=order.fee if order else Decimal(0),
        reduce_only=order.reduce_only if order else False, latency_ms=latency_ms,
    )


def fills_of(order: OrderResult) -> tuple[Fill, ...]:
    """The order's fills, complete: an executed quantity its fills do not add up to is never booked short
    (FillsIncomplete: the plan stays SUBMITTING and is settled again later)."""
    filled = sum((f.qty for f in order.fills), Decimal(0))
    if filled != order.executed_qty:
        raise FillsIncomplete(f"order {order.client_order_id}: fills add up to {filled} of the executed "
                              f"{order.executed_qty}")
    return order.fills


def execution(fill: Fill, *, plan_id: str, trace_id: str, kind: FillKind, position_after: Decimal,
              position_plan_id: str | None, reason: ExitReason | None) -> ExecutionResult:
    return ExecutionResult(
        source=Service.APPLY_LAYER, trace_id=trace_id, fill_id=fill.fill_id, plan_id=plan_id, symbol=fill.symbol,
        side=fill.side, qty=fill.qty, price=fill.price, fee=fill.fee, fee_asset=fill.fee_asset or "USDT",
        reduce_only=fill.reduce_only, kind=kind, position_after=position_after, realized_pnl=fill.realized_pnl,
        position_plan_id=position_plan_id, reason=reason,
    )
