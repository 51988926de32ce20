"""The paper exchange (``QT_EXCHANGE=paper``, the default): Binance USD-M in one-way mode, simulated.

Market orders fill at once and in full at the latest mark price (``quantum:market:price:{s}``)
worsened by ``slippage_bps``, with the taker fee; the symbol rules of ``config/paper_symbols.json``
are enforced with Binance's error codes; conditional orders and liquidations trigger on the mark price
in :meth:`PaperExchange.check_triggers`, which :meth:`PaperExchange.events` runs every
``poll_interval_s``. All state lives in Redis (``keys.paper_*``) and every change is one MULTI/EXEC,
so a restart — or a SIGKILL — of the process that hosts it keeps orders, positions and the balance.

Protective orders behave as on Binance as far as Binance documents it: one close-position conditional
per type and direction (a second is -4130, a take-profit beside a stop is fine), any number of
quantity-based reduce-only ones; close-position ones end (EXPIRED) with their position, quantity-based
ones stay open; what the exchange ends without a fill (EXPIRED, REJECTED, CANCELED "Reduce Only
reject") comes out of :meth:`PaperExchange.events` as :class:`ConditionalEnded`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from common import keys
from common.config import PaperSettings, Settings
from common.contracts.base import now_ms, plain_decimal
from common.contracts.enums import Side
from common.exchange.base import (
    Balance,
    ConditionalEnded,
    ConditionalKind,
    ConditionalOrder,
    ConditionalStatus,
    Exchange,
    ExchangeEvent,
    ExchangePosition,
    Fill,
    OrderEvent,
    OrderResult,
)
from common.exchange.errors import (
    DuplicateClientOrderId,
    ExchangeError,
    OrderNotFound,
    OrderRejected,
    TemporaryError,
)
from common.exchange.paper.book import (
    CLOSE_POSITION_EXISTS,
    FEE_ASSET,
    available_balance,
    check_client_id,
    check_conditional,
    check_leverage,
    check_quantity,
    tradable_rules,
    triggers,
    would_immediately_trigger,
)
from common.exchange.paper.codec import ConditionalRecord
from common.exchange.paper.fills import FillBooker
from common.exchange.paper.store import OnCommit, PaperStore
from common.exchange.rules import SymbolRules, load_rules_file
from common.store import read_price

log = structlog.get_logger()

#: conditionals ended by the exchange, kept for :meth:`PaperExchange.events` at most
ENDED_MAX = 1_000


@contextlib.contextmanager
def _redis_errors(what: str) -> Iterator[None]:
    """A read that Redis could not answer: nothing changed, try again."""
    try:
        yield
    except RedisError as e:
        raise TemporaryError(f"paper {what}: redis unavailable: {e}") from e


class PaperExchange(Exchange):
    """Binance USD-M (one-way mode) simulated over Redis. See the module docstring."""

    name = "paper"

    def __init__(
        self,
        redis: Redis,
        settings: PaperSettings,
        rules: dict[str, SymbolRules],
        *,
        poll_interval_s: float = 0.2,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._rules = dict(rules)
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._store = PaperStore(redis, settings.starting_balance)
        self._ended: deque[ConditionalEnded] = deque(maxlen=ENDED_MAX)
        self._booker = FillBooker(self._store, settings, clock, on_ended=self._ended.append)
        self._closed = asyncio.Event()

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings, **kwargs: Any) -> PaperExchange:
        """The fleet's paper exchange: rules from ``settings.paper.rules_file`` in the config dir."""
        rules = load_rules_file(settings.config_file(settings.paper.rules_file))
        return cls(redis, settings.paper, rules, **kwargs)

    async def start(self) -> None:
        """Open the account at the starting balance the first time (a restart keeps the old one)."""
        with _redis_errors("start"):
            created = await self._redis.hsetnx(
                keys.paper_account(), "wallet_balance", plain_decimal(self._settings.starting_balance)
            )
        log.info("paper_exchange_started", symbols=len(self._rules), account_created=bool(created))

    async def close(self) -> None:
        """Ends :meth:`events` at its next wake-up."""
        self._closed.set()

    # --- market data and settings ----------------------------------------------------------------

    async def symbol_rules(self) -> dict[str, SymbolRules]:
        return dict(self._rules)

    async def mark_price(self, symbol: str) -> Decimal:
        tradable_rules(self._rules, symbol)
        return self._require_fresh(symbol, await self._fresh_mark(symbol))

    async def _fresh_mark(self, symbol: str) -> Decimal | None:
        """The mark price if there is one no older than ``max_price_age_ms``."""
        with _redis_errors("mark price"):
            price = await read_price(self._redis, symbol)
        if price is None or self._clock() - price.ts > self._settings.max_price_age_ms:
            return None
        return price.mark_price

    @staticmethod
    def _require_fresh(symbol: str, mark: Decimal | None) -> Decimal:
        if mark is None:
            raise TemporaryError(f"paper: no fresh mark price for {symbol}")
        return mark

    async def set_leverage(self, symbol: str, leverage: int) -> int:
        rules = tradable_rules(self._rules, symbol)
        check_leverage(rules, leverage)

        async def body(pipe: Pipeline, _: OnCommit) -> int:
            position = await self._store.position(pipe, symbol)
            self._store.begin(pipe)
            self._store.put_leverage(pipe, symbol, leverage)
            if position is not None:
                self._store.put_position(pipe, symbol, replace(position, leverage=leverage))
            return leverage

        accepted = await self._store.transact(
            [keys.paper_positions(), keys.paper_leverage()], body, what="set_leverage"
        )
        log.info("paper_leverage_set", symbol=symbol, leverage=accepted)
        return accepted

    # --- market orders ---------------------------------------------------------------------------

    async def place_market_order(
        self, symbol: str, side: Side, qty: Decimal, client_order_id: str, *, reduce_only: bool
    ) -> OrderResult:
        try:
            check_client_id(client_order_id)
            rules = tradable_rules(self._rules, symbol)
            check_quantity(rules, qty)
            mark = await self._fresh_mark(symbol)
            await self._latency()
            order = await self._store.transact(
                [
                    keys.paper_orders(),
                    keys.paper_positions(),
                    keys.paper_account(),
                    keys.paper_leverage(),
                    keys.paper_open_conditionals(),
                ],
                lambda pipe, on_commit: self._booker.market(
                    pipe, on_commit, rules, side, qty, client_order_id, reduce_only, mark
                ),
                what="market order",
            )
        except OrderRejected as e:
            log.info("paper_order_rejected", symbol=symbol, client_order_id=client_order_id, code=e.code)
            raise
        await self._latency()  # the answer travels back: a caller may die before it arrives
        fill = order.fills[0]
        log.info(
            "paper_order_filled",
            symbol=symbol,
            client_order_id=client_order_id,
            order_id=order.order_id,
            side=side.value,
            qty=plain_decimal(order.executed_qty),
            price=plain_decimal(order.avg_price),
            fee=plain_decimal(fill.fee),
            reduce_only=reduce_only,
        )
        return order

    async def _latency(self) -> None:
        """Half the configured round trip (``paper.latency_ms``), to make a real exchange's delay."""
        if self._settings.latency_ms:
            await asyncio.sleep(self._settings.latency_ms / 2000)

    async def get_order(self, symbol: str, client_order_id: str) -> OrderResult:
        with _redis_errors("get_order"):
            order = await self._store.order(self._redis, client_order_id)
        if order is None or order.symbol != symbol:
            raise OrderNotFound(f"-2013: Order does not exist. ({client_order_id})")
        return order

    # --- conditional orders ----------------------------------------------------------------------

    async def place_conditional(
        self,
        symbol: str,
        kind: ConditionalKind,
        side: Side,
        trigger_price: Decimal,
        client_algo_id: str,
        *,
        close_position: bool = True,
        quantity: Decimal | None = None,
    ) -> ConditionalOrder:
        check_conditional(self._rules, symbol, client_algo_id, trigger_price, close_position, quantity)
        mark = await self._fresh_mark(symbol)

        async def body(pipe: Pipeline, _: OnCommit) -> ConditionalOrder:
            if await self._store.conditional(pipe, client_algo_id) is not None:
                raise DuplicateClientOrderId(-4116, "ClientOrderId is duplicated.")
            if close_position and any(
                r.order.close_position and r.order.kind is kind and r.order.side is side
                for r in await self._store.open_conditionals(pipe, symbol)
            ):
                raise OrderRejected(-4130, CLOSE_POSITION_EXISTS)
            if triggers(kind, side, trigger_price, self._require_fresh(symbol, mark)):
                raise would_immediately_trigger()
            algo_id = str(await self._store.next_id(pipe))
            order = ConditionalOrder(
                symbol, client_algo_id, algo_id, kind, side, trigger_price, close_position, quantity,
                ConditionalStatus.NEW,
            )
            ts = self._clock()
            self._store.begin(pipe)
            self._store.put_conditional(pipe, ConditionalRecord(order, ts, ts), open_=True)
            return order

        placed = await self._store.transact(
            [keys.paper_conditionals(), keys.paper_open_conditionals()], body, what="place_conditional"
        )
        log.info(
            "paper_conditional_placed",
            symbol=symbol,
            client_algo_id=client_algo_id,
            kind=kind.value,
            side=side.value,
            trigger_price=plain_decimal(trigger_price),
        )
        return placed

    async def get_conditional(self, symbol: str, client_algo_id: str) -> ConditionalOrder:
        with _redis_errors("get_conditional"):
            record = await self._store.conditional(self._redis, client_algo_id)
        if record is None or record.order.symbol != symbol:
            raise OrderNotFound(f"-2013: Order does not exist. ({client_algo_id})")
        return record.order

    async def cancel_conditional(self, symbol: str, client_algo_id: str) -> None:
        async def body(pipe: Pipeline, _: OnCommit) -> None:
            record = await self._store.conditional(pipe, client_algo_id)
            if record is None or record.order.symbol != symbol or record.order.status is not ConditionalStatus.NEW:
                raise OrderNotFound(f"-2011: Unknown order sent. ({client_algo_id})")
            cancelled = replace(record.order, status=ConditionalStatus.CANCELED)
            self._store.begin(pipe)
            self._store.put_conditional(
                pipe, replace(record, order=cancelled, updated_ms=self._clock()), open_=False
            )

        await self._store.transact(
            [keys.paper_conditionals(), keys.paper_open_conditionals()], body, what="cancel_conditional"
        )
        log.info("paper_conditional_cancelled", symbol=symbol, client_algo_id=client_algo_id)

    async def expire_conditional(self, symbol: str, client_algo_id: str, reason: str = "") -> None:
        """End an open conditional as the exchange would: EXPIRED with ``reason`` (for tests and drills;
        :meth:`events` yields the :class:`ConditionalEnded`)."""
        await self._end_conditional(symbol, client_algo_id, ConditionalStatus.EXPIRED, reason)

    async def reject_conditional(
        self, symbol: str, client_algo_id: str, reason: str = "Margin is insufficient."
    ) -> None:
        """As :meth:`expire_conditional`, REJECTED (Binance: the matching engine refused the triggered
        order, "such as in scenarios of margin check failures")."""
        await self._end_conditional(symbol, client_algo_id, ConditionalStatus.REJECTED, reason)

    async def _end_conditional(
        self, symbol: str, client_algo_id: str, status: ConditionalStatus, reason: str
    ) -> None:
        async def body(pipe: Pipeline, on_commit: OnCommit) -> None:
            record = await self._store.conditional(pipe, client_algo_id)
            if record is None or record.order.symbol != symbol or record.order.status is not ConditionalStatus.NEW:
                raise OrderNotFound(f"-2011: Unknown order sent. ({client_algo_id})")
            self._store.begin(pipe)
            self._booker.end(pipe, on_commit, record, self._clock(), status, reason)

        await self._store.transact(
            [keys.paper_conditionals(), keys.paper_open_conditionals()], body, what="end_conditional"
        )

    def take_ended(self) -> list[ConditionalEnded]:
        """The conditionals this instance saw the exchange end since the last call (what :meth:`events`
        yields besides fills)."""
        ended = list(self._ended)
        self._ended.clear()
        return ended

    async def open_conditionals(self, symbol: str | None = None) -> list[ConditionalOrder]:
        with _redis_errors("open_conditionals"):
            return [r.order for r in await self._store.open_conditionals(self._redis, symbol)]

    # --- account ---------------------------------------------------------------------------------

    async def positions(self) -> dict[str, ExchangePosition]:
        with _redis_errors("positions"):
            held = await self._store.positions(self._redis)
            marks = await self._store.marks(list(held))
        result: dict[str, ExchangePosition] = {}
        for symbol, p in held.items():
            mark = marks.get(symbol, p.entry_price)
            result[symbol] = ExchangePosition(
                symbol=symbol,
                position_amt=p.qty,
                entry_price=p.entry_price,
                mark_price=mark,
                unrealized_pnl=p.unrealized_pnl(mark),
                leverage=p.leverage,
                liquidation_price=p.liquidation_price(self._rules.get(symbol)),
            )
        return result

    async def balance(self) -> Balance:
        with _redis_errors("balance"):
            account = await self._store.account(self._redis)
            held = await self._store.positions(self._redis)
            marks = await self._store.marks(list(held))
        available, unrealized = available_balance(account, list(held.values()), marks)
        return Balance(FEE_ASSET, account.wallet_balance, available, unrealized)

    async def fills_since(self, symbol: str, since_ms: int) -> list[Fill]:
        with _redis_errors("fills_since"):
            return await self._store.fills_since(self._redis, symbol, since_ms)

    # --- triggers --------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[OrderEvent]:
        """Poll the marks of every symbol with an open conditional or a position, every
        ``poll_interval_s``, and yield what fired — after it is committed, so a consumer that dies
        before handling an event finds the fill again with :meth:`fills_since` — and the conditionals
        the exchange ended without a fill (:class:`ConditionalEnded`). Those are told by the instance
        whose transaction ended them (in the fleet, apply_layer's own); a restart finds them by their
        status (:meth:`get_conditional`)."""
        while not self._closed.is_set():
            for ended in self.take_ended():
                yield ended
            try:
                symbols = sorted(await self._store.open_symbols(self._redis))
            except RedisError as e:
                log.warning("paper_trigger_poll_failed", error=str(e))
                symbols = []
            for symbol in symbols:
                try:
                    fired = await self.check_triggers(symbol)
                except (RedisError, ExchangeError) as e:
                    log.warning("paper_trigger_check_failed", symbol=symbol, error=str(e))
                    continue
                for event in fired:
                    yield event
            for ended in self.take_ended():
                yield ended
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout=self._poll_interval_s)

    async def check_triggers(self, symbol: str) -> list[ExchangeEvent]:
        """Fire what the current mark of ``symbol`` has crossed: conditionals and the liquidation, in
        the order a price moving to the mark would have met them (farthest from the mark first). A
        missing or stale mark fires nothing."""
        rules = self._rules.get(symbol)
        mark = await self._fresh_mark(symbol)
        if rules is None or mark is None:
            return []
        crossed: list[tuple[Decimal, str | None]] = []  # (distance from the mark, algo id | None = liquidation)
        for record in await self._store.open_conditionals(self._redis, symbol):
            o = record.order
            if triggers(o.kind, o.side, o.trigger_price, mark):
                crossed.append((abs(o.trigger_price - mark), o.client_algo_id))
        position = await self._store.position(self._redis, symbol)
        if position is not None and position.liquidated_at(rules, mark):
            crossed.append((abs(position.liquidation_price(rules) - mark), None))
        crossed.sort(key=lambda item: item[0], reverse=True)
        events: list[ExchangeEvent] = []
        for _, client_algo_id in crossed:
            event = await (
                self._liquidate(rules, mark) if client_algo_id is None else self._trigger(rules, client_algo_id, mark)
            )
            if event is not None:
                events.append(event)
        return events

    async def _trigger(self, rules: SymbolRules, client_algo_id: str, mark: Decimal) -> ExchangeEvent | None:
        event = await self._store.transact(
            [keys.paper_conditionals(), keys.paper_open_conditionals(), keys.paper_positions(), keys.paper_account()],
            lambda pipe, on_commit: self._booker.conditional(pipe, on_commit, rules, client_algo_id, mark),
            what="trigger",
        )
        if event is not None:
            log.info(
                "paper_conditional_triggered",
                symbol=rules.symbol,
                client_algo_id=client_algo_id,
                kind=event.kind.value,
                qty=plain_decimal(event.fill.qty),
                price=plain_decimal(event.fill.price),
                mark_price=plain_decimal(mark),
            )
        return event

    async def _liquidate(self, rules: SymbolRules, mark: Decimal) -> ExchangeEvent | None:
        event = await self._store.transact(
            [
                keys.paper_orders(),
                keys.paper_conditionals(),
                keys.paper_open_conditionals(),
                keys.paper_positions(),
                keys.paper_account(),
            ],
            lambda pipe, on_commit: self._booker.liquidation(pipe, on_commit, rules, mark),
            what="liquidation",
        )
        if event is not None:
            log.warning(
                "paper_liquidation",
                symbol=rules.symbol,
                origin_id=event.origin_id,
                qty=plain_decimal(event.fill.qty),
                price=plain_decimal(event.fill.price),
                realized_pnl=plain_decimal(event.fill.realized_pnl or Decimal(0)),
                mark_price=plain_decimal(mark),
            )
        return event
