"""Exactly-once order placement over any :class:`~common.exchange.base.Exchange` (DESIGN §6 step 3).

One client id, at most one order. The rules, in the order they are applied:

- ``TemporaryError`` — the request did not take effect: wait (capped exponential backoff with jitter,
  at least the exchange's Retry-After) and send again with the *same* client id;
- ``UnknownOutcome`` — it may have taken effect: never resend blindly; query the order by its client
  id (retrying the query itself): found → that is the result; "does not exist" → send again, same id;
- ``DuplicateClientOrderId`` — an earlier send was placed: look the order up and return it;
- ``OrderRejected`` — permanent: raise it (the plan gets ``ERROR exchange:<code>``).

When the retries run out the last error is raised: a ``TemporaryError`` means nothing was placed, an
``UnknownOutcome`` means the plan stays ``SUBMITTING`` and is settled by querying later.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

import structlog

from common.backoff import Backoff
from common.config import BinanceSettings
from common.contracts.base import plain_decimal
from common.contracts.enums import Side
from common.exchange.base import ConditionalKind, ConditionalOrder, Exchange, OrderResult
from common.exchange.errors import (
    DuplicateClientOrderId,
    OrderNotFound,
    TemporaryError,
    UnknownOutcome,
)

log = structlog.get_logger()

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: ``max_retries`` retries after the first try, delays of
    ``backoff_initial_ms * 2**n`` capped at ``backoff_max_ms`` with jitter, never shorter than the
    exchange's Retry-After."""

    max_retries: int = 5
    backoff_initial_ms: int = 200
    backoff_max_ms: int = 10_000
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: BinanceSettings) -> RetryPolicy:
        return cls(settings.max_retries, settings.backoff_initial_ms, settings.backoff_max_ms)

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """The pause before retry number ``attempt`` (0-based)."""
        backoff = Backoff(self.backoff_initial_ms / 1000, self.backoff_max_ms / 1000).delay_s(attempt, self.rng)
        return max(backoff, retry_after_s or 0.0)


async def place_market_once(
    exchange: Exchange,
    symbol: str,
    side: Side,
    qty: Decimal,
    client_order_id: str,
    *,
    reduce_only: bool,
    policy: RetryPolicy,
    sleep: Sleep = asyncio.sleep,
) -> OrderResult:
    """Place a market order exactly once under ``client_order_id``; see the module docstring."""

    async def submit() -> OrderResult:
        return await exchange.place_market_order(symbol, side, qty, client_order_id, reduce_only=reduce_only)

    async def lookup() -> OrderResult:
        return await exchange.get_order(symbol, client_order_id)

    with structlog.contextvars.bound_contextvars(symbol=symbol, client_order_id=client_order_id):
        log.debug("placement_started", kind="market", side=side.value, qty=plain_decimal(qty))
        return await _place_once(submit, lookup, policy, sleep)


async def place_conditional_once(
    exchange: Exchange,
    symbol: str,
    kind: ConditionalKind,
    side: Side,
    trigger_price: Decimal,
    client_algo_id: str,
    *,
    close_position: bool = True,
    quantity: Decimal | None = None,
    policy: RetryPolicy,
    sleep: Sleep = asyncio.sleep,
) -> ConditionalOrder:
    """Place a protective conditional order exactly once under ``client_algo_id``."""

    async def submit() -> ConditionalOrder:
        return await exchange.place_conditional(
            symbol, kind, side, trigger_price, client_algo_id, close_position=close_position, quantity=quantity
        )

    async def lookup() -> ConditionalOrder:
        return await exchange.get_conditional(symbol, client_algo_id)

    with structlog.contextvars.bound_contextvars(symbol=symbol, client_order_id=client_algo_id):
        log.debug("placement_started", kind=kind.value, side=side.value, trigger_price=plain_decimal(trigger_price))
        return await _place_once(submit, lookup, policy, sleep)


async def _place_once(
    submit: Callable[[], Awaitable[T]],
    lookup: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Sleep,
) -> T:
    attempt = 0  # retries spent, shared by sends and settling queries
    while True:
        try:
            return await submit()
        except DuplicateClientOrderId:
            log.info("placement_already_placed")
            found, attempt = await _settle(lookup, policy, sleep, attempt, missing_ok=False)
            assert found is not None
            return found
        except UnknownOutcome:
            log.warning("placement_outcome_unknown", attempt=attempt)
            found, attempt = await _settle(lookup, policy, sleep, attempt, missing_ok=True)
            if found is not None:
                log.info("placement_settled", found=True)
                return found
            log.info("placement_settled", found=False)
        except TemporaryError as e:
            if attempt >= policy.max_retries:
                log.warning("placement_gave_up", attempts=attempt + 1, error=str(e))
                raise
            delay = policy.delay_s(attempt, e.retry_after_s)
            log.info("placement_retry", attempt=attempt, delay_ms=int(delay * 1000), code=e.code)
            await sleep(delay)
            attempt += 1
            continue
        # Settled as "not placed": send again with the same id, which counts as a retry.
        if attempt >= policy.max_retries:
            raise UnknownOutcome("order not found after an unknown outcome, and no retries left")
        await sleep(policy.delay_s(attempt))
        attempt += 1


async def _settle(
    lookup: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Sleep,
    attempt: int,
    *,
    missing_ok: bool,
) -> tuple[T | None, int]:
    """Query the order until the exchange answers: (the order | None when it does not exist, retries
    spent). A query that keeps failing raises UnknownOutcome: the outcome is still unknown."""
    while True:
        try:
            return await lookup(), attempt
        except OrderNotFound:
            if missing_ok:
                return None, attempt
            # -4116 said it exists; a lookup that cannot see it yet is lagging: ask again
            error: Exception = UnknownOutcome("duplicate client id, but the order cannot be found")
        except (TemporaryError, UnknownOutcome) as e:
            error = e
        if attempt >= policy.max_retries:
            raise UnknownOutcome(f"could not settle the order: {error}") from error
        await sleep(policy.delay_s(attempt, getattr(error, "retry_after_s", None)))
        attempt += 1
