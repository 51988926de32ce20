"""The bodies of the paper exchange's fill transactions: a market order, a triggered conditional,
a liquidation — and how conditionals end without a fill.

Each runs inside :meth:`PaperStore.transact`: it reads under WATCH, decides (raising a Binance
rejection when it must), then queues every write of the fill at once — order or conditional record,
position, account, fill log, and the expiry of the conditionals of a position that is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from functools import partial

import structlog
from redis.asyncio.client import Pipeline

from common.config import PaperSettings
from common.contracts.enums import FillKind, Side
from common.exchange.base import (
    ConditionalEnded,
    ConditionalStatus,
    ExchangeEvent,
    Fill,
    OrderResult,
    OrderStatus,
)
from common.exchange.errors import DuplicateClientOrderId, TemporaryError
from common.exchange.paper.book import (
    FEE_ASSET,
    PaperAccount,
    PaperPosition,
    Unfilled,
    check_margin,
    conditional_fill,
    default_leverage,
    liquidation_fill,
    market_fill,
)
from common.exchange.paper.codec import ConditionalRecord
from common.exchange.paper.store import OnCommit, PaperStore
from common.exchange.rules import SymbolRules

log = structlog.get_logger()
#: told of every conditional the exchange ended without a fill, once its transaction committed
OnEnded = Callable[[ConditionalEnded], None]


def _ends_with_position(record: ConditionalRecord) -> bool:
    """A close-position conditional ends with its position (Binance: EXPIRED, the GTE_GTC example of the
    EXPIRED status). A quantity-based reduce-only one is not documented to end so and stays open."""
    return record.order.close_position


class FillBooker:
    """Turns a decision to fill into the queued writes of one transaction."""

    def __init__(
        self, store: PaperStore, settings: PaperSettings, clock: Callable[[], int], on_ended: OnEnded | None = None
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._on_ended = on_ended

    async def market(
        self,
        pipe: Pipeline,
        on_commit: OnCommit,
        rules: SymbolRules,
        side: Side,
        qty: Decimal,
        client_order_id: str,
        reduce_only: bool,
        mark: Decimal | None,
    ) -> OrderResult:
        """A market order. Checks that depend on the book, in order: the duplicate first (a resent
        order must be recognised whatever the market did since), then the mark, reduce-only,
        notional and margin (:func:`market_fill`, :func:`check_margin`)."""
        symbol = rules.symbol
        if await self._store.order_exists(pipe, client_order_id):
            raise DuplicateClientOrderId(-4116, "ClientOrderId is duplicated.")
        if mark is None:
            raise TemporaryError(f"paper: no fresh mark price for {symbol}")
        position = await self._store.position(pipe, symbol)
        leverage = await self._store.leverage(pipe, symbol) or default_leverage(rules)
        ts = self._clock()
        decision = market_fill(rules, side, qty, reduce_only, mark, position, leverage,
                               self._settings.slippage_bps, self._settings.taker_fee, ts)
        account = await self._store.account(pipe)
        if decision.trade.opening_qty > 0:
            held = await self._store.positions(pipe)
            check_margin(decision, position, leverage, account, list(held.values()),
                         await self._store.marks(list(held)))
        trade = decision.trade
        fill = await self._fill(pipe, client_order_id, symbol, side, decision.qty, decision.price, decision.fee,
                                reduce_only, trade.realized_pnl, ts)
        order = OrderResult(
            symbol, client_order_id, fill.order_id, side, OrderStatus.FILLED, qty, decision.qty, decision.price,
            reduce_only, ts, (fill,),
        )
        kind = FillKind.EXIT if reduce_only else FillKind.ENTRY
        leftovers = await self._leftovers(pipe, symbol) if trade.position is None else []
        self._store.begin(pipe)
        self._store.put_order(pipe, order, kind)
        self._book(pipe, on_commit, fill, kind, trade.position, account.after(trade.realized_pnl, decision.fee),
                   leftovers)
        return order

    async def conditional(
        self, pipe: Pipeline, on_commit: OnCommit, rules: SymbolRules, client_algo_id: str, mark: Decimal
    ) -> ExchangeEvent | None:
        """Fill a triggered conditional against the position, atomically with marking it FINISHED. With
        nothing on its side to reduce it ends unfilled (:func:`conditional_fill`: a close-position one
        EXPIRED, a quantity-based one CANCELED "Reduce Only reject"). A quantity above the position closes
        the position and no more (not confirmed from Binance's docs: a Binance FAQ says reduce-only
        stop-market orders at or above the position size are not limited; the executor keeps a stop's
        quantity equal to the position anyway). None when nothing filled."""
        symbol = rules.symbol
        record = await self._store.conditional(pipe, client_algo_id)
        if record is None or record.order.status is not ConditionalStatus.NEW:
            return None
        o = record.order
        ts = self._clock()
        position = await self._store.position(pipe, symbol)
        decision = conditional_fill(o, position, rules, mark, self._settings.slippage_bps,
                                    self._settings.taker_fee, ts)
        if decision is None:
            return None
        if isinstance(decision, Unfilled):
            self._store.begin(pipe)
            self.end(pipe, on_commit, record, ts, decision.status, decision.reason)
            return None
        trade = decision.trade
        account = await self._store.account(pipe)
        fill = await self._fill(pipe, client_algo_id, symbol, o.side, decision.qty, decision.price, decision.fee,
                                True, trade.realized_pnl, ts)
        leftovers = [] if trade.position is not None else [
            r for r in await self._leftovers(pipe, symbol) if r.order.client_algo_id != client_algo_id
        ]
        finished = replace(o, status=ConditionalStatus.FINISHED)
        self._store.begin(pipe)
        self._store.put_conditional(
            pipe, replace(record, order=finished, updated_ms=ts, order_id=fill.order_id, fill=fill), open_=False
        )
        account = account.after(trade.realized_pnl, decision.fee)
        self._book(pipe, on_commit, fill, o.kind.fill_kind, trade.position, account, leftovers)
        return ExchangeEvent(kind=o.kind.fill_kind, fill=fill, origin_id=client_algo_id)

    async def liquidation(
        self, pipe: Pipeline, on_commit: OnCommit, rules: SymbolRules, mark: Decimal
    ) -> ExchangeEvent | None:
        """Close the whole position at its liquidation price as an ``autoclose-<n>`` order (Binance's
        name for them), with the taker fee (:func:`liquidation_fill`). None when the position is gone or no
        longer crossed."""
        symbol = rules.symbol
        position = await self._store.position(pipe, symbol)
        ts = self._clock()
        decision = liquidation_fill(position, rules, mark, self._settings.taker_fee, ts)
        if decision is None:
            return None
        trade, side, qty, price = decision.trade, decision.side, decision.qty, decision.price
        account = await self._store.account(pipe)
        fill = await self._fill(pipe, "", symbol, side, qty, price, decision.fee, True, trade.realized_pnl, ts)
        origin = f"autoclose-{fill.order_id}"
        fill = replace(fill, client_order_id=origin)
        order = OrderResult(symbol, origin, fill.order_id, side, OrderStatus.FILLED, qty, qty, price, True, ts, (fill,))
        leftovers = await self._leftovers(pipe, symbol)
        self._store.begin(pipe)
        self._store.put_order(pipe, order, FillKind.LIQUIDATION)
        account = account.after(trade.realized_pnl, decision.fee)
        self._book(pipe, on_commit, fill, FillKind.LIQUIDATION, trade.position, account, leftovers)
        return ExchangeEvent(kind=FillKind.LIQUIDATION, fill=fill, origin_id=origin)

    async def _fill(
        self,
        pipe: Pipeline,
        client_id: str,
        symbol: str,
        side: Side,
        qty: Decimal,
        price: Decimal,
        fee: Decimal,
        reduce_only: bool,
        realized_pnl: Decimal,
        ts_ms: int,
    ) -> Fill:
        """A fill with a fresh order id ``<n>`` and fill id ``paper-<n+1>``."""
        first = await self._store.next_id(pipe, 2)
        return Fill(
            fill_id=f"paper-{first + 1}",
            order_id=str(first),
            client_order_id=client_id,
            symbol=symbol,
            side=side,
            qty=qty,
            price=price,
            fee=fee,
            fee_asset=FEE_ASSET,
            reduce_only=reduce_only,
            realized_pnl=realized_pnl,
            ts_ms=ts_ms,
        )

    def _book(
        self,
        pipe: Pipeline,
        on_commit: OnCommit,
        fill: Fill,
        kind: FillKind,
        position: PaperPosition | None,
        account: PaperAccount,
        expire: list[ConditionalRecord],
    ) -> None:
        """Queue what every fill writes: position, account, fill log, and — when the position is
        gone — the expiry of its close-position conditionals (Binance expires those with the position;
        quantity-based reduce-only ones stay open, to be cancelled by their owner)."""
        self._store.put_position(pipe, fill.symbol, position)
        self._store.put_account(pipe, account, fill.ts_ms)
        self._store.log_fill(pipe, fill, kind)
        for record in expire:
            self._expire(pipe, on_commit, record, fill.ts_ms)

    async def _leftovers(self, pipe: Pipeline, symbol: str) -> list[ConditionalRecord]:
        """The conditionals that end when the symbol's position is gone."""
        return [r for r in await self._store.open_conditionals(pipe, symbol) if _ends_with_position(r)]

    def _expire(self, pipe: Pipeline, on_commit: OnCommit, record: ConditionalRecord, ts_ms: int) -> None:
        self.end(pipe, on_commit, record, ts_ms, ConditionalStatus.EXPIRED, "")

    def end(
        self, pipe: Pipeline, on_commit: OnCommit, record: ConditionalRecord, ts_ms: int,
        status: ConditionalStatus, reason: str,
    ) -> None:
        """Queue the end of an open conditional by the exchange's doing (EXPIRED, REJECTED, CANCELED with
        a reason); :class:`ConditionalEnded` is told once the transaction commits."""
        ended = replace(record.order, status=status)
        self._store.put_conditional(pipe, replace(record, order=ended, updated_ms=ts_ms), open_=False)
        event = ConditionalEnded(ended.symbol, ended.client_algo_id, status, reason, ts_ms)
        on_commit.append(
            partial(log.info, "paper_conditional_ended", symbol=ended.symbol, client_algo_id=ended.client_algo_id,
                    status=status.value, reason=reason)
        )
        if self._on_ended is not None:
            on_commit.append(partial(self._on_ended, event))
