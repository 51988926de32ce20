"""An exchange that fails on cue: the paper exchange behind a script of failures, for the fault tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from common.contracts import Side
from common.exchange.base import ConditionalKind, ConditionalOrder, Exchange, OrderResult
from common.exchange.errors import TemporaryError, UnknownOutcome
from common.exchange.paper import PaperExchange
from common.exchange.rules import SymbolRules
from services.apply_layer.throttle import OrderThrottle, ThrottledExchange


@dataclass
class Script:
    """What fails: orders of ``fail_orders_of`` symbols are refused (TemporaryError) before they reach the
    exchange; ``unknown_after_send`` orders reach it and their answer is lost (UnknownOutcome), and then
    ``get_order_failures`` queries of them fail (UnknownOutcome: the answer cannot be read) before one goes
    through; ``rules_failures`` reads of the symbol rules fail (TemporaryError); an order of a
    ``broken_for`` symbol raises an error no retry helps (a bug)."""

    fail_orders_of: set[str] = field(default_factory=set)
    broken_for: set[str] = field(default_factory=set)
    rules_failures: int = 0
    #: protective orders are refused (TemporaryError) while set
    fail_conditionals: bool = False
    #: the first market order gets a 429 with this Retry-After (seconds), then goes through
    first_order_retry_after_s: float = 0.0
    unknown_after_send: set[str] = field(default_factory=set)
    get_order_failures: int = 0
    #: how long each order call takes (to widen a race window)
    latency_s: float = 0.0
    sent: list[str] = field(default_factory=list)


class FaultyExchange(ThrottledExchange):
    def __init__(self, paper: PaperExchange, script: Script, before_send: Callable[[], None] | None = None) -> None:
        super().__init__(paper, OrderThrottle(1_000_000, 1_000_000), before_send)
        self.script = script

    async def place_market_order(self, symbol: str, side: Side, qty: Decimal, client_order_id: str, *,
                                 reduce_only: bool) -> OrderResult:
        if symbol in self.script.fail_orders_of:
            raise TemporaryError(f"{symbol}: the exchange refuses for now")
        if symbol in self.script.broken_for:
            raise RuntimeError(f"{symbol}: broken")
        if self.script.first_order_retry_after_s:
            self.before_send()
            delay, self.script.first_order_retry_after_s = self.script.first_order_retry_after_s, 0.0
            self.script.sent.append("429")
            raise TemporaryError("429 Too many requests", code=-1003, retry_after_s=delay)
        if self.script.latency_s:
            await asyncio.sleep(self.script.latency_s)
        result = await super().place_market_order(symbol, side, qty, client_order_id, reduce_only=reduce_only)
        self.script.sent.append(client_order_id)
        if client_order_id in self.script.unknown_after_send:
            raise UnknownOutcome("the answer was lost")
        return result

    async def get_order(self, symbol: str, client_order_id: str) -> OrderResult:
        if client_order_id in self.script.unknown_after_send and self.script.get_order_failures > 0:
            self.script.get_order_failures -= 1
            raise UnknownOutcome("the answer to the query cannot be read")
        return await super().get_order(symbol, client_order_id)

    async def place_conditional(self, symbol: str, kind: ConditionalKind, side: Side, trigger_price: Decimal,
                                client_algo_id: str, *, close_position: bool = True,
                                quantity: Decimal | None = None) -> ConditionalOrder:
        if self.script.fail_conditionals:
            raise TemporaryError("the exchange refuses conditional orders for now")
        return await super().place_conditional(symbol, kind, side, trigger_price, client_algo_id,
                                               close_position=close_position, quantity=quantity)

    async def symbol_rules(self) -> dict[str, SymbolRules]:
        if self.script.rules_failures > 0:
            self.script.rules_failures -= 1
            raise TemporaryError("503 while reading the rules")
        return await super().symbol_rules()


def faulty(script: Script, before_send: Callable[[], None] | None = None) -> Callable[[PaperExchange], Exchange]:
    """A ``wrap`` for the harness."""
    return lambda paper: FaultyExchange(paper, script, before_send)
