"""Exactly-once placement (common/exchange/placement.py) against a small scripted in-memory exchange."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.contracts.enums import Side
from common.exchange.base import (
    Balance,
    ConditionalKind,
    ConditionalOrder,
    ConditionalStatus,
    Exchange,
    ExchangeEvent,
    ExchangePosition,
    Fill,
    OrderResult,
    OrderStatus,
)
from common.exchange.errors import (
    DuplicateClientOrderId,
    OrderNotFound,
    OrderRejected,
    TemporaryError,
    UnknownOutcome,
)
from common.exchange.placement import RetryPolicy, place_conditional_once, place_market_once
from common.exchange.rules import SymbolRules

CID = "qt-0123456789abcdef"
POLICY = RetryPolicy(max_retries=4, backoff_initial_ms=100, backoff_max_ms=1_000, rng=random.Random(7))


@dataclass(frozen=True)
class Step:
    """What the scripted exchange does with one send or one lookup.

    ``place`` — whether the order takes effect; ``error`` — what the caller sees (None: the answer)."""

    place: bool = True
    error: Exception | None = None


class ScriptedExchange(Exchange):
    """Orders by client id. Sends and lookups follow their scripts, then behave normally.

    ``unique_ids``: a send under a known id answers -4116. Binance only promises that among *open*
    orders, so a filled market order's id may be accepted again: ``unique_ids=False`` models that, and
    then only placement itself stands between a retry and a second order."""

    name = "scripted"

    def __init__(
        self, sends: list[Step] | None = None, lookups: list[Step] | None = None, *, unique_ids: bool = True
    ) -> None:
        self.sends = deque(sends or [])
        self.lookups = deque(lookups or [])
        self.unique_ids = unique_ids
        self.placed: list[OrderResult] = []
        self.conditionals: dict[str, ConditionalOrder] = {}
        self.send_count = 0
        self.lookup_count = 0

    @property
    def orders(self) -> dict[str, OrderResult]:
        return {o.client_order_id: o for o in self.placed}

    async def place_market_order(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str, *, reduce_only: bool
    ) -> OrderResult:
        self.send_count += 1
        step = self.sends.popleft() if self.sends else Step()
        if self.unique_ids and client_order_id in self.orders:
            raise DuplicateClientOrderId(-4116, "ClientOrderId is duplicated.")
        if step.place:
            self.placed.append(OrderResult(
                symbol, client_order_id, str(1000 + len(self.placed)), side, OrderStatus.FILLED, qty, qty,
                Decimal("100"), reduce_only, 1,
            ))
        if step.error is not None:
            raise step.error
        return self.placed[-1]

    async def get_order(self, symbol: str, client_order_id: str) -> OrderResult:
        self.lookup_count += 1
        step = self.lookups.popleft() if self.lookups else Step()
        if step.error is not None:
            raise step.error
        if client_order_id not in self.orders:
            raise OrderNotFound(f"-2013: {client_order_id}")
        return self.orders[client_order_id]

    async def place_conditional(
        self, symbol: str, kind: ConditionalKind, side: Side, trigger_price: Decimal, client_algo_id: str, *,
        close_position: bool = True, quantity: Decimal | None = None,
    ) -> ConditionalOrder:
        self.send_count += 1
        step = self.sends.popleft() if self.sends else Step()
        if client_algo_id in self.conditionals:
            raise DuplicateClientOrderId(-4116, "ClientOrderId is duplicated.")
        if step.place:
            self.conditionals[client_algo_id] = ConditionalOrder(
                symbol, client_algo_id, str(len(self.conditionals)), kind, side, trigger_price, close_position,
                quantity, ConditionalStatus.NEW,
            )
        if step.error is not None:
            raise step.error
        return self.conditionals[client_algo_id]

    async def get_conditional(self, symbol: str, client_algo_id: str) -> ConditionalOrder:
        self.lookup_count += 1
        step = self.lookups.popleft() if self.lookups else Step()
        if step.error is not None:
            raise step.error
        if client_algo_id not in self.conditionals:
            raise OrderNotFound(client_algo_id)
        return self.conditionals[client_algo_id]

    # not used by placement
    async def symbol_rules(self) -> dict[str, SymbolRules]:
        raise NotImplementedError

    async def mark_price(self, symbol: str) -> Decimal:
        raise NotImplementedError

    async def set_leverage(self, symbol: str, leverage: int) -> int:
        raise NotImplementedError

    async def cancel_conditional(self, symbol: str, client_algo_id: str) -> None:
        raise NotImplementedError

    async def open_conditionals(self, symbol: str | None = None) -> list[ConditionalOrder]:
        raise NotImplementedError

    async def positions(self) -> dict[str, ExchangePosition]:
        raise NotImplementedError

    async def balance(self) -> Balance:
        raise NotImplementedError

    async def fills_since(self, symbol: str, since_ms: int) -> list[Fill]:
        raise NotImplementedError

    async def events(self) -> AsyncIterator[ExchangeEvent]:
        raise NotImplementedError
        yield  # pragma: no cover


class Sleeps:
    """Records the pauses placement asks for instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


def place(exchange: ScriptedExchange, sleeps: Sleeps | None = None, policy: RetryPolicy = POLICY) -> OrderResult:
    return asyncio.run(place_market_once(
        exchange, "BTCUSDT", Side.BUY, Decimal("0.01"), CID, reduce_only=False, policy=policy,
        sleep=sleeps or Sleeps(),
    ))


def test_success_first_time_sends_once() -> None:
    """No failure: one send, no lookup, no pause."""
    exchange, sleeps = ScriptedExchange(), Sleeps()
    result = place(exchange, sleeps)
    assert result.client_order_id == CID and exchange.send_count == 1
    assert exchange.lookup_count == 0 and sleeps.delays == []


def test_temporary_errors_are_retried_with_backoff() -> None:
    """TemporaryError (nothing placed) is retried under the same id after growing, capped pauses."""
    exchange = ScriptedExchange(sends=[Step(place=False, error=TemporaryError("502"))] * 3)
    sleeps = Sleeps()
    result = place(exchange, sleeps)
    assert exchange.send_count == 4 and list(exchange.orders) == [CID] and result.client_order_id == CID
    assert len(sleeps.delays) == 3
    for attempt, delay in enumerate(sleeps.delays):
        cap = min(1.0, 0.1 * 2**attempt)
        assert cap / 2 <= delay <= cap


def test_retry_after_is_honoured() -> None:
    """A 429's Retry-After is a floor under the backoff."""
    exchange = ScriptedExchange(sends=[Step(place=False, error=TemporaryError("429", code=-1003, retry_after_s=7))])
    sleeps = Sleeps()
    place(exchange, sleeps)
    assert sleeps.delays == [7]


def test_temporary_errors_give_up_after_max_retries() -> None:
    """When the retries run out the TemporaryError is raised; nothing was placed."""
    exchange = ScriptedExchange(sends=[Step(place=False, error=TemporaryError("503"))] * 10)
    with pytest.raises(TemporaryError):
        place(exchange)
    assert exchange.send_count == POLICY.max_retries + 1 and exchange.orders == {}


def test_unknown_outcome_that_was_placed_is_settled_by_lookup() -> None:
    """The order took effect but the answer was lost: found by the lookup, never sent again."""
    exchange = ScriptedExchange(sends=[Step(place=True, error=UnknownOutcome("503 unknown"))])
    result = place(exchange)
    assert exchange.send_count == 1 and exchange.lookup_count == 1
    assert result is exchange.orders[CID]


def test_unknown_outcome_that_was_not_placed_is_resent_with_the_same_id() -> None:
    """The lookup says "does not exist": sent again, same id, one order."""
    exchange = ScriptedExchange(sends=[Step(place=False, error=UnknownOutcome("timeout"))])
    result = place(exchange)
    assert exchange.send_count == 2 and list(exchange.orders) == [CID] and result.client_order_id == CID


def test_failing_lookups_are_retried_until_they_answer() -> None:
    """A lookup that fails temporarily is asked again; the order it finds is returned."""
    exchange = ScriptedExchange(
        sends=[Step(place=True, error=UnknownOutcome("timeout"))],
        lookups=[Step(error=TemporaryError("502")), Step(error=TemporaryError("429", retry_after_s=3))],
    )
    sleeps = Sleeps()
    result = place(exchange, sleeps)
    assert exchange.send_count == 1 and exchange.lookup_count == 3 and result is exchange.orders[CID]
    assert sleeps.delays[-1] == 3


def test_lookups_that_never_answer_leave_the_outcome_unknown() -> None:
    """If the order cannot be queried within the retries, UnknownOutcome is raised: never a blind resend."""
    exchange = ScriptedExchange(
        sends=[Step(place=True, error=UnknownOutcome("timeout"))],
        lookups=[Step(error=TemporaryError("down"))] * 10,
    )
    with pytest.raises(UnknownOutcome):
        place(exchange)
    assert exchange.send_count == 1


def test_duplicate_client_id_means_already_placed() -> None:
    """-4116 on a send: the earlier send was placed; the existing order is returned."""
    exchange = ScriptedExchange()
    first = place(exchange)
    again = place(exchange)
    assert again is first and len(exchange.orders) == 1 and exchange.lookup_count == 1


def test_duplicate_with_a_lagging_lookup_asks_again() -> None:
    """-4116 but the lookup cannot see the order yet: the lookup is retried, not the send."""
    exchange = ScriptedExchange()
    place(exchange)
    exchange.lookups.extend([Step(error=OrderNotFound("lagging"))])
    result = place(exchange)
    assert result is exchange.orders[CID] and exchange.send_count == 2 and exchange.lookup_count == 2


def test_rejection_is_raised_without_retry() -> None:
    """OrderRejected is permanent: raised at once, with its code."""
    exchange = ScriptedExchange(sends=[Step(place=False, error=OrderRejected(-2019, "Margin is insufficient."))])
    sleeps = Sleeps()
    with pytest.raises(OrderRejected) as caught:
        place(exchange, sleeps)
    assert caught.value.reason_code == "exchange:-2019"
    assert exchange.send_count == 1 and sleeps.delays == []


def test_conditional_unknown_outcome_is_settled_by_lookup() -> None:
    """The same rules hold for protective orders, keyed by clientAlgoId."""
    exchange = ScriptedExchange(sends=[Step(place=True, error=UnknownOutcome("503"))])
    order = asyncio.run(place_conditional_once(
        exchange, "BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, Decimal("59000"), CID + "-sl",
        policy=POLICY, sleep=Sleeps(),
    ))
    assert order.client_algo_id == CID + "-sl" and exchange.send_count == 1 and len(exchange.conditionals) == 1


def test_retry_policy_delay_is_capped_jittered_and_floored_by_retry_after() -> None:
    """delay_s: within [cap/2, cap] of the capped exponential, never below Retry-After."""
    policy = RetryPolicy(max_retries=3, backoff_initial_ms=200, backoff_max_ms=1_000, rng=random.Random(1))
    assert 0.1 <= policy.delay_s(0) <= 0.2
    assert 0.5 <= policy.delay_s(10) <= 1.0
    assert policy.delay_s(0, retry_after_s=5) == 5


STEPS = st.sampled_from([
    Step(place=False, error=TemporaryError("5xx")),
    Step(place=False, error=TemporaryError("429", retry_after_s=1)),
    Step(place=True, error=UnknownOutcome("503 placed")),
    Step(place=False, error=UnknownOutcome("timeout not placed")),
    Step(place=False, error=UnknownOutcome("503 not placed")),
    Step(place=True),
])
TINY = RetryPolicy(max_retries=6, backoff_initial_ms=1, backoff_max_ms=1)


@settings(max_examples=300, deadline=None)
@given(
    sends=st.lists(STEPS, max_size=10),
    lookups=st.lists(st.sampled_from([Step(), Step(error=TemporaryError("502"))]), max_size=10),
)
def test_never_two_orders_even_when_the_exchange_accepts_a_reused_id(sends: list[Step], lookups: list[Step]) -> None:
    """Against an exchange that would accept the same client id twice, whatever the failures: at most one
    order is ever placed, and a returned result is that order."""
    exchange = ScriptedExchange(sends=list(sends), lookups=list(lookups), unique_ids=False)
    try:
        result = place(exchange, policy=TINY)
    except (TemporaryError, UnknownOutcome):
        assert len(exchange.placed) <= 1
    else:
        assert len(exchange.placed) == 1 and result is exchange.placed[0]


@settings(max_examples=300, deadline=None)
@given(
    sends=st.lists(STEPS, max_size=10),
    lookups=st.lists(
        st.sampled_from([Step(), Step(error=TemporaryError("502")), Step(error=OrderNotFound("lagging"))]),
        max_size=10,
    ),
)
def test_lagging_lookups_are_caught_by_the_duplicate_id_check(sends: list[Step], lookups: list[Step]) -> None:
    """With lookups that may not see a fresh order yet, the exchange's -4116 still leads placement to the
    one order instead of a second."""
    exchange = ScriptedExchange(sends=list(sends), lookups=list(lookups), unique_ids=True)
    try:
        result = place(exchange, policy=TINY)
    except (TemporaryError, UnknownOutcome):
        assert len(exchange.placed) <= 1
    else:
        assert len(exchange.placed) == 1 and result is exchange.placed[0]
