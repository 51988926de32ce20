"""Binance payloads as domain values (common/exchange/binance/wire.py): which ALGO_UPDATEs end one of our
conditionals, and how fills of Binance's own orders are classified."""

from __future__ import annotations

from typing import Any

import pytest

from common.contracts.enums import FillKind
from common.exchange.base import ConditionalEnded, ConditionalStatus
from common.exchange.binance.wire import classify_fill, conditional, conditional_ended


def algo_update(status: str, *, caid: str = "qt-0123456789abcdef-sl", rm: str | None = None) -> dict[str, Any]:
    """An ALGO_UPDATE shaped as the docs' sample (Event-Algo-Order-Update)."""
    o: dict[str, Any] = {"caid": caid, "aid": 2148719, "at": "CONDITIONAL", "o": "STOP_MARKET", "s": "BNBUSDT",
                         "S": "SELL", "ps": "BOTH", "f": "GTC", "q": "0.01", "X": status, "ai": "", "tp": "750",
                         "p": "0", "V": "EXPIRE_MAKER", "wt": "MARK_PRICE", "pm": "NONE", "cp": False, "pP": False,
                         "R": True, "tt": 0, "gtd": 0}
    if rm is not None:
        o["rm"] = rm
    return {"e": "ALGO_UPDATE", "T": 1750515742297, "E": 1750515742303, "o": o}


@pytest.mark.parametrize(
    ("status", "rm", "expected"),
    [
        ("REJECTED", "Margin is insufficient.", ConditionalStatus.REJECTED),
        ("EXPIRED", "", ConditionalStatus.EXPIRED),
        ("EXPIRED", None, ConditionalStatus.EXPIRED),
        ("CANCELED", "Reduce Only reject", ConditionalStatus.CANCELED),
        ("CANCELED", None, None),  # a cancel we asked for
        ("NEW", None, None),
        ("TRIGGERED", None, None),
        ("FINISHED", None, None),
    ],
)
def test_which_algo_updates_end_a_conditional(status: str, rm: str | None, expected: ConditionalStatus | None) -> None:
    """REJECTED and EXPIRED, and CANCELED with a failure reason, are ends by the exchange; the rest not."""
    ended = conditional_ended(algo_update(status, rm=rm))
    if expected is None:
        assert ended is None
    else:
        assert ended == ConditionalEnded("BNBUSDT", "qt-0123456789abcdef-sl", expected, rm or "", 1750515742297)


def test_algo_updates_of_foreign_orders_are_ignored() -> None:
    """Only our client ids (qt-...) make events."""
    assert conditional_ended(algo_update("REJECTED", caid="Q5xaq5EGKgXXa0fD7fs0Ip", rm="x")) is None


def test_a_rejected_algo_order_reads_as_rejected() -> None:
    """algoStatus REJECTED is its own status (not folded into EXPIRED)."""
    raw = {"algoId": 1, "clientAlgoId": "qt-a-sl", "orderType": "STOP_MARKET", "symbol": "BTCUSDT", "side": "SELL",
           "triggerPrice": "100", "closePosition": False, "quantity": "0.01", "algoStatus": "REJECTED"}
    assert conditional(raw).status is ConditionalStatus.REJECTED


@pytest.mark.parametrize(
    ("client_id", "order_type", "kind"),
    [
        ("autoclose-1596107620040000020", "LIMIT", FillKind.LIQUIDATION),
        ("autoclose-1596107620040000020", "LIQUIDATION", FillKind.LIQUIDATION),
        ("adl_autoclose", "LIMIT", FillKind.LIQUIDATION),
        ("settlement_autoclose-123", "MARKET", FillKind.LIQUIDATION),
        ("qt-0123456789abcdef-sl", "MARKET", FillKind.STOP),
        ("qt-0123456789abcdef-tp", "TAKE_PROFIT_MARKET", FillKind.TAKE_PROFIT),
        ("qt-0123456789abcdef", "MARKET", None),
        ("x-Cb7ytekJfoo", "MARKET", None),
    ],
)
def test_fill_classification(client_id: str, order_type: str, kind: FillKind | None) -> None:
    """Binance's own client ids (Event-Order-Update: autoclose-, adl_autoclose, settlement_autoclose-) are
    forced closes whatever the order type; ours by suffix or type; foreign orders are nobody's."""
    assert classify_fill(client_id, order_type) is kind
