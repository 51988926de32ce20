"""The paper exchange's book in memory: Binance USD-M in one-way mode, simulated on the backtest's clock.

The fill model is the paper exchange's own (:mod:`common.exchange.paper.book`): market orders fill at
once and in full at the mark worsened by ``paper.slippage_bps``, with the taker fee; the symbol rules are
enforced with Binance's error codes; conditional orders and liquidations trigger on the mark, farthest
first, and fill at the mark (slipped) that crossed them. What the fleet's paper exchange keeps in Redis
(positions, the wallet, leverage, open conditionals) lives here in dicts; an order placed twice under
one client id returns the first (what :mod:`common.exchange.placement` does on -4116).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from common.config import PaperSettings
from common.contracts.enums import FillKind, Side
from common.exchange.base import (
    ConditionalEnded,
    ConditionalKind,
    ConditionalOrder,
    ConditionalStatus,
    Fill,
    OrderResult,
    OrderStatus,
)
from common.exchange.errors import OrderNotFound, OrderRejected, TemporaryError
from common.exchange.paper.book import (
    CLOSE_POSITION_EXISTS,
    FEE_ASSET,
    FillDecision,
    PaperAccount,
    PaperPosition,
    Unfilled,
    check_client_id,
    check_conditional,
    check_leverage,
    check_margin,
    check_quantity,
    conditional_fill,
    default_leverage,
    liquidation_fill,
    market_fill,
    tradable_rules,
    triggers,
    would_immediately_trigger,
)
from common.exchange.rules import SymbolRules

ZERO = Decimal(0)


@dataclass(frozen=True)
class ExchangeFill:
    """A fill the exchange made on its own: a conditional that triggered, or a liquidation."""

    kind: FillKind
    fill: Fill
    origin_id: str


ExchangeEvent = ExchangeFill | ConditionalEnded


class SimExchange:
    """The paper exchange of one backtest (see the module docstring)."""

    def __init__(self, rules: dict[str, SymbolRules], settings: PaperSettings) -> None:
        self.rules = rules
        self.settings = settings
        self.account = PaperAccount(settings.starting_balance, ZERO, ZERO)
        self.positions: dict[str, PaperPosition] = {}
        self.leverage: dict[str, int] = {}
        self.marks: dict[str, Decimal] = {}
        #: open conditionals per symbol, in the order they were placed
        self.open: dict[str, list[ConditionalOrder]] = {}
        #: conditionals the exchange ended on a market order's fill (the position gone), not yet taken
        self.ended: list[ConditionalEnded] = []
        self._orders: dict[str, OrderResult] = {}
        self._conditional_ids: set[str] = set()
        self._next_id = 0

    # --- market orders ---------------------------------------------------------------------------

    def set_leverage(self, symbol: str, leverage: int) -> int:
        rules = tradable_rules(self.rules, symbol)
        check_leverage(rules, leverage)
        self.leverage[symbol] = leverage
        position = self.positions.get(symbol)
        if position is not None:
            self.positions[symbol] = replace(position, leverage=leverage)
        return leverage

    def place_market_order(self, symbol: str, side: Side, qty: Decimal, client_order_id: str, *,
                           reduce_only: bool, ts_ms: int) -> OrderResult:
        """A market order filled at once (the checks of the paper exchange, in its order); OrderRejected
        with Binance's code when refused."""
        check_client_id(client_order_id)
        rules = tradable_rules(self.rules, symbol)
        check_quantity(rules, qty)
        placed = self._orders.get(client_order_id)
        if placed is not None:
            return placed
        mark = self.marks.get(symbol)
        if mark is None:
            raise TemporaryError(f"paper: no fresh mark price for {symbol}")
        position = self.positions.get(symbol)
        leverage = self.leverage.get(symbol) or default_leverage(rules)
        decision = market_fill(rules, side, qty, reduce_only, mark, position, leverage,
                               self.settings.slippage_bps, self.settings.taker_fee, ts_ms)
        if decision.trade.opening_qty > 0:
            check_margin(decision, position, leverage, self.account, list(self.positions.values()), self.marks)
        fill = self._book(symbol, client_order_id, decision, reduce_only, ts_ms)
        self.ended.extend(self._ended_with_position(symbol, ts_ms))
        order = OrderResult(symbol, client_order_id, fill.order_id, side, OrderStatus.FILLED, qty, decision.qty,
                            decision.price, reduce_only, ts_ms, (fill,))
        self._orders[client_order_id] = order
        return order

    # --- conditional orders ----------------------------------------------------------------------

    def place_conditional(self, symbol: str, kind: ConditionalKind, side: Side, trigger_price: Decimal,
                          client_algo_id: str, *, close_position: bool = True,
                          quantity: Decimal | None = None) -> ConditionalOrder:
        """A protective conditional, with the paper exchange's checks (-4130 for a second close-position
        one of a type and direction, -2021 when the mark has crossed it already)."""
        check_conditional(self.rules, symbol, client_algo_id, trigger_price, close_position, quantity)
        if client_algo_id in self._conditional_ids:
            found = next((o for o in self.open.get(symbol, ()) if o.client_algo_id == client_algo_id), None)
            if found is not None:
                return found
            raise OrderRejected(-4116, "ClientOrderId is duplicated.")
        held = self.open.setdefault(symbol, [])
        if close_position and any(o.close_position and o.kind is kind and o.side is side for o in held):
            raise OrderRejected(-4130, CLOSE_POSITION_EXISTS)
        mark = self.marks.get(symbol)
        if mark is None:
            raise TemporaryError(f"paper: no fresh mark price for {symbol}")
        if triggers(kind, side, trigger_price, mark):
            raise would_immediately_trigger()
        order = ConditionalOrder(symbol, client_algo_id, str(self._ids(1)), kind, side, trigger_price,
                                 close_position, quantity, ConditionalStatus.NEW)
        held.append(order)
        self._conditional_ids.add(client_algo_id)
        return order

    def cancel_conditional(self, symbol: str, client_algo_id: str) -> None:
        held = self.open.get(symbol, [])
        for i, order in enumerate(held):
            if order.client_algo_id == client_algo_id:
                del held[i]
                return
        raise OrderNotFound(f"-2011: Unknown order sent. ({client_algo_id})")

    def watched(self, symbol: str) -> bool:
        """Whether a mark of ``symbol`` can make the exchange act (a position or an open conditional)."""
        return symbol in self.positions or bool(self.open.get(symbol))

    def check_triggers(self, symbol: str, ts_ms: int) -> list[ExchangeEvent]:
        """What the mark of ``symbol`` crossed, in the order a price moving there meets it (farthest from
        the mark first), as :meth:`common.exchange.paper.exchange.PaperExchange.check_triggers`."""
        rules = self.rules.get(symbol)
        mark = self.marks.get(symbol)
        if rules is None or mark is None:
            return []
        crossed: list[tuple[Decimal, str | None]] = [
            (abs(o.trigger_price - mark), o.client_algo_id)
            for o in self.open.get(symbol, ()) if triggers(o.kind, o.side, o.trigger_price, mark)
        ]
        position = self.positions.get(symbol)
        if position is not None and position.liquidated_at(rules, mark):
            crossed.append((abs(position.liquidation_price(rules) - mark), None))
        crossed.sort(key=lambda item: item[0], reverse=True)
        events: list[ExchangeEvent] = []
        for _, algo_id in crossed:
            events.extend(self._liquidate(rules, mark, ts_ms) if algo_id is None
                          else self._trigger(rules, algo_id, mark, ts_ms))
        return events

    def _trigger(self, rules: SymbolRules, client_algo_id: str, mark: Decimal, ts_ms: int) -> list[ExchangeEvent]:
        symbol = rules.symbol
        order = next((o for o in self.open.get(symbol, ()) if o.client_algo_id == client_algo_id), None)
        if order is None:
            return []
        decision = conditional_fill(order, self.positions.get(symbol), rules, mark, self.settings.slippage_bps,
                                    self.settings.taker_fee, ts_ms)
        if decision is None:
            return []
        self.open[symbol].remove(order)
        if isinstance(decision, Unfilled):
            return [ConditionalEnded(symbol, client_algo_id, decision.status, decision.reason, ts_ms)]
        fill = self._book(symbol, client_algo_id, decision, True, ts_ms)
        return [ExchangeFill(order.kind.fill_kind, fill, client_algo_id), *self._ended_with_position(symbol, ts_ms)]

    def _liquidate(self, rules: SymbolRules, mark: Decimal, ts_ms: int) -> list[ExchangeEvent]:
        decision = liquidation_fill(self.positions.get(rules.symbol), rules, mark, self.settings.taker_fee, ts_ms)
        if decision is None:
            return []
        fill = self._book(rules.symbol, "", decision, True, ts_ms)
        fill = replace(fill, client_order_id=f"autoclose-{fill.order_id}")
        return [ExchangeFill(FillKind.LIQUIDATION, fill, fill.client_order_id),
                *self._ended_with_position(rules.symbol, ts_ms)]

    def take_ended(self) -> list[ConditionalEnded]:
        """The conditionals market orders ended since the last call."""
        ended, self.ended = self.ended, []
        return ended

    def _ended_with_position(self, symbol: str, ts_ms: int) -> list[ConditionalEnded]:
        """A position gone takes its close-position conditionals with it (EXPIRED); quantity-based
        reduce-only ones stay open for their owner to cancel."""
        if symbol in self.positions:
            return []
        held = self.open.get(symbol, [])
        ended = [o for o in held if o.close_position]
        self.open[symbol] = [o for o in held if not o.close_position]
        return [ConditionalEnded(symbol, o.client_algo_id, ConditionalStatus.EXPIRED, "", ts_ms) for o in ended]

    # --- the book --------------------------------------------------------------------------------

    def _book(self, symbol: str, client_id: str, decision: FillDecision, reduce_only: bool, ts_ms: int) -> Fill:
        """The fill booked: the position and the wallet."""
        first = self._ids(2)
        trade = decision.trade
        fill = Fill(fill_id=f"paper-{first + 1}", order_id=str(first), client_order_id=client_id, symbol=symbol,
                    side=decision.side, qty=decision.qty, price=decision.price, fee=decision.fee, fee_asset=FEE_ASSET,
                    reduce_only=reduce_only, realized_pnl=trade.realized_pnl, ts_ms=ts_ms)
        if trade.position is None:
            self.positions.pop(symbol, None)
        else:
            self.positions[symbol] = trade.position
        self.account = self.account.after(trade.realized_pnl, decision.fee)
        return fill

    def _ids(self, count: int) -> int:
        """The first of ``count`` fresh ids (the paper exchange's counter)."""
        first = self._next_id + 1
        self._next_id += count
        return first

    def unrealized(self) -> Decimal:
        """The unrealized PnL of every position at its mark."""
        return sum((p.unrealized_pnl(self.marks.get(s, p.entry_price)) for s, p in self.positions.items()), ZERO)
