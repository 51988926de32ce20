"""The JSON the paper exchange keeps in Redis: orders, fills, conditional orders and positions.

Decimals are plain strings (never ``1e-05``), timestamps epoch milliseconds, enums their values.
Reading tolerates ``bytes`` as ``HGET`` returns them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from common.contracts.base import plain_decimal
from common.contracts.enums import FillKind, Side
from common.exchange.base import (
    ConditionalKind,
    ConditionalOrder,
    ConditionalStatus,
    Fill,
    OrderResult,
    OrderStatus,
)
from common.exchange.paper.book import PaperPosition


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def loads(raw: str | bytes) -> dict[str, Any]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("paper record is not a JSON object")
    return data


def _opt_decimal(value: Decimal | None) -> str | None:
    return None if value is None else plain_decimal(value)


def _read_opt_decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


# --- fills ---------------------------------------------------------------------------------------


def fill_to_dict(fill: Fill, kind: FillKind) -> dict[str, Any]:
    return {
        "fill_id": fill.fill_id,
        "order_id": fill.order_id,
        "client_order_id": fill.client_order_id,
        "symbol": fill.symbol,
        "side": fill.side.value,
        "qty": plain_decimal(fill.qty),
        "price": plain_decimal(fill.price),
        "fee": plain_decimal(fill.fee),
        "fee_asset": fill.fee_asset,
        "reduce_only": fill.reduce_only,
        "realized_pnl": _opt_decimal(fill.realized_pnl),
        "ts_ms": fill.ts_ms,
        "kind": kind.value,
    }


def fill_from_dict(data: dict[str, Any]) -> Fill:
    return Fill(
        fill_id=data["fill_id"],
        order_id=data["order_id"],
        client_order_id=data["client_order_id"],
        symbol=data["symbol"],
        side=Side(data["side"]),
        qty=Decimal(data["qty"]),
        price=Decimal(data["price"]),
        fee=Decimal(data["fee"]),
        fee_asset=data["fee_asset"],
        reduce_only=bool(data["reduce_only"]),
        realized_pnl=_read_opt_decimal(data.get("realized_pnl")),
        ts_ms=int(data["ts_ms"]),
    )


def fill_sequence(fill: Fill) -> int:
    """The counter value in ``paper-<n>`` (orders fills of one millisecond)."""
    return int(fill.fill_id.rpartition("-")[2])


# --- orders --------------------------------------------------------------------------------------


def order_to_json(order: OrderResult, kind: FillKind) -> str:
    return dumps(
        {
            "symbol": order.symbol,
            "client_order_id": order.client_order_id,
            "order_id": order.order_id,
            "side": order.side.value,
            "status": order.status.value,
            "orig_qty": plain_decimal(order.orig_qty),
            "executed_qty": plain_decimal(order.executed_qty),
            "avg_price": plain_decimal(order.avg_price),
            "reduce_only": order.reduce_only,
            "update_time_ms": order.update_time_ms,
            "fills": [fill_to_dict(f, kind) for f in order.fills],
        }
    )


def order_from_json(raw: str | bytes) -> OrderResult:
    data = loads(raw)
    return OrderResult(
        symbol=data["symbol"],
        client_order_id=data["client_order_id"],
        order_id=data["order_id"],
        side=Side(data["side"]),
        status=OrderStatus(data["status"]),
        orig_qty=Decimal(data["orig_qty"]),
        executed_qty=Decimal(data["executed_qty"]),
        avg_price=Decimal(data["avg_price"]),
        reduce_only=bool(data["reduce_only"]),
        update_time_ms=int(data["update_time_ms"]),
        fills=tuple(fill_from_dict(f) for f in data.get("fills", [])),
    )


# --- conditional orders --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionalRecord:
    """A conditional order as stored: the public view plus when it changed and what it filled."""

    order: ConditionalOrder
    created_ms: int
    updated_ms: int
    #: the order the trigger placed, and its fill (once FINISHED)
    order_id: str | None = None
    fill: Fill | None = None

    def to_json(self) -> str:
        o = self.order
        return dumps(
            {
                "symbol": o.symbol,
                "client_algo_id": o.client_algo_id,
                "algo_id": o.algo_id,
                "kind": o.kind.value,
                "side": o.side.value,
                "trigger_price": plain_decimal(o.trigger_price),
                "close_position": o.close_position,
                "quantity": _opt_decimal(o.quantity),
                "status": o.status.value,
                "created_ms": self.created_ms,
                "updated_ms": self.updated_ms,
                "order_id": self.order_id,
                "fill": None if self.fill is None else fill_to_dict(self.fill, o.kind.fill_kind),
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> ConditionalRecord:
        data = loads(raw)
        order = ConditionalOrder(
            symbol=data["symbol"],
            client_algo_id=data["client_algo_id"],
            algo_id=data["algo_id"],
            kind=ConditionalKind(data["kind"]),
            side=Side(data["side"]),
            trigger_price=Decimal(data["trigger_price"]),
            close_position=bool(data["close_position"]),
            quantity=_read_opt_decimal(data.get("quantity")),
            status=ConditionalStatus(data["status"]),
        )
        fill = data.get("fill")
        return cls(
            order=order,
            created_ms=int(data["created_ms"]),
            updated_ms=int(data["updated_ms"]),
            order_id=data.get("order_id"),
            fill=None if fill is None else fill_from_dict(fill),
        )


# --- positions -----------------------------------------------------------------------------------


def position_to_json(position: PaperPosition) -> str:
    return dumps(
        {
            "symbol": position.symbol,
            "qty": plain_decimal(position.qty),
            "entry_price": plain_decimal(position.entry_price),
            "leverage": position.leverage,
            "realized_pnl": plain_decimal(position.realized_pnl),
            "opened_ms": position.opened_ms,
            "updated_ms": position.updated_ms,
        }
    )


def position_from_json(raw: str | bytes) -> PaperPosition:
    data = loads(raw)
    return PaperPosition(
        symbol=data["symbol"],
        qty=Decimal(data["qty"]),
        entry_price=Decimal(data["entry_price"]),
        leverage=int(data["leverage"]),
        realized_pnl=Decimal(data["realized_pnl"]),
        opened_ms=int(data["opened_ms"]),
        updated_ms=int(data["updated_ms"]),
    )
