"""What the adapter remembers about orders between calls, shared by the REST side and the user stream:
facts userTrades does not carry, the child orders of triggered algo orders, our conditionals believed
open, and the symbols worth polling. Bounded: the oldest entries are forgotten first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final, TypeVar

from common.exchange.binance.wire import child_order_id

SEEN_MAX: Final = 10_000

V = TypeVar("V")


def remember(cache: OrderedDict[str, V], key: str, value: V) -> None:
    """Put ``key`` last in ``cache``, dropping the oldest entries beyond :data:`SEEN_MAX`."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > SEEN_MAX:
        cache.popitem(last=False)


#: (client id, order type, reduce-only) of an order
OrderFacts = tuple[str, str, bool]


class OrderTracking:
    """The adapter's memory of orders (one per adapter)."""

    def __init__(self) -> None:
        #: (symbol, orderId) -> (clientOrderId, original type, reduce-only): userTrades carries none of them
        self.order_info: dict[tuple[str, str], OrderFacts] = {}
        #: child orderId -> (our clientAlgoId, the algo order's type), from ``ai`` / ``actualOrderId``
        self.algo_children: OrderedDict[str, tuple[str, str]] = OrderedDict()
        #: symbol -> when its algo order history was last read (monotonic seconds)
        self.algo_history_read: dict[str, float] = {}
        #: our conditionals believed open, by symbol (to notice the ones that vanish while polling)
        self.open_algos: dict[str, set[str]] = {}
        #: symbols traded, protected, held or asked about: the user stream polls them while it is down
        self.watched: set[str] = set()

    def remember_order(self, raw: Mapping[str, Any]) -> None:
        """Keep an order answer's facts (POST/GET /fapi/v1/order)."""
        key = (raw["symbol"], str(raw["orderId"]))
        if len(self.order_info) > SEEN_MAX:
            self.order_info.clear()
        self.order_info[key] = (raw["clientOrderId"], raw.get("origType") or raw["type"], bool(raw["reduceOnly"]))

    def note_algo(self, raw: Mapping[str, Any]) -> None:
        """Remember the child order of a triggered algo order, and forget a closed one as open."""
        child = child_order_id(raw)
        if child:
            remember(self.algo_children, child, (raw["clientAlgoId"], raw["orderType"]))
        if raw.get("algoStatus", "NEW") != "NEW":
            self.forget_open(raw["symbol"], raw["clientAlgoId"])

    def track_open(self, symbol: str, client_algo_id: str) -> None:
        self.open_algos.setdefault(symbol, set()).add(client_algo_id)

    def forget_open(self, symbol: str, client_algo_id: str) -> None:
        self.open_algos.get(symbol, set()).discard(client_algo_id)
