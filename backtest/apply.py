"""apply_layer on the backtest's clock: one plan at a time, against :class:`~backtest.exchange.SimExchange`.

The steps are the executor's (:mod:`services.apply_layer.executor`) without what only a distributed
fleet needs (plan records across crashes, the lease, the reconciliation with the exchange, which always
agrees here): a plan id seen before is ``SKIP duplicate_plan``; an entry passes the entry gates
(:func:`services.apply_layer.gates.entry_gate`: kill switch, symbol, cooldown, allowlist, price moved or
beyond its levels, opposite position, open positions, leverage, margin, total notional), is rounded to
the step, sets the leverage and fills; an exit must name the position it means
(:func:`~services.apply_layer.gates.position_gate`) and closes ``pct`` of it
(:func:`~services.apply_layer.gates.exit_quantity`); a stop update only tightens. Positions change as
:mod:`services.apply_layer.book` says. The protective orders are the protector's
(:mod:`services.apply_layer.protection`): a reduce-only stop for the position's quantity at its
stop-loss and a close-position take-profit at the ladder's TP3, the stop re-placed (new first, then the
old cancelled) when the quantity or the stop changes, both cancelled on a full close. Fills the
exchange makes on its own (those orders, a liquidation) are booked as the fill router books them
(:mod:`services.apply_layer.fills`). Every fill goes to the books (:class:`backtest.books.SimBooks`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from decimal import Decimal

from backtest.books import SimBooks
from backtest.exchange import ExchangeEvent, ExchangeFill, SimExchange
from common.config import Settings
from common.contracts import Action, ApplyPlan, ExecutionResult, ExitReason, FillKind, PlanReason
from common.exchange.base import ConditionalEnded, ConditionalKind, Fill, OrderResult, client_order_id
from common.exchange.errors import OrderNotFound, OrderRejected, TemporaryError
from common.exchange.rules import SymbolRules
from common.exit_levels import LadderParams, base_fractions, levels_of
from common.policy import Policy
from common.positions import PositionRecord
from services.apply_layer import book, results
from services.apply_layer.gates import EntryFacts, entry_gate, exit_quantity, loosens_stop, position_gate

#: a protective order could not be placed (the protector's PLACE_FAILED, without unknown outcomes)
_PLACE_FAILED = (OrderRejected, TemporaryError)

#: the exit reason of a fill the exchange made on its own, by kind (a stop: the position's stop_reason)
_EXCHANGE_REASONS = {FillKind.TAKE_PROFIT: ExitReason.TAKE_PROFIT, FillKind.LIQUIDATION: ExitReason.LIQUIDATION}


class SimApply:
    """The executor, its protector and its fill router over one simulated exchange and one set of books."""

    def __init__(self, exchange: SimExchange, books: SimBooks, settings: Settings, policy: Policy) -> None:
        self.exchange = exchange
        self.books = books
        self.settings = settings
        self.apply = settings.apply
        self.policy = policy
        self.protective = settings.apply.protective_orders
        self.ladder = LadderParams.from_settings(settings)
        self.positions: dict[str, PositionRecord] = {}
        self.cooldown_until: dict[str, int] = {}
        self._done: set[str] = set()
        #: (action, decision, error) of every plan's result
        self.results: Counter[tuple[str, str, str]] = Counter()
        #: protective orders that could not be placed, and exchange-ended ones of a live position
        self.protection_failures = 0
        self.protection_ended = 0
        #: told of every position change (symbol, position after or None): the fast path forgets its bands
        self.on_change: Callable[[str], None] = lambda symbol: None
        self._by_action: dict[Action, Callable[[ApplyPlan, int], OrderResult | None]] = {
            Action.ENTRY_PROPOSED: self._entry,
            Action.FULL_CLOSE_PROPOSED: self._exit,
            Action.PARTIAL_CLOSE_PROPOSED: self._exit,
            Action.UPDATE_STOP: self._update_stop,
        }

    # --- plans ---------------------------------------------------------------------------------------

    def execute(self, plan: ApplyPlan, now: int) -> None:
        """Run one plan to its one result."""
        if plan.plan_id in self._done:
            self._result(plan, "SKIP", PlanReason.DUPLICATE_PLAN)
            return
        self._done.add(plan.plan_id)
        handler = self._by_action.get(plan.action)
        if handler is None:
            self._result(plan, "SKIP", "unsupported_in_backtest")
            return
        handler(plan, now)

    def _result(self, plan: ApplyPlan, decision: str, error: str = "") -> None:
        self.results[(plan.action.value, decision, error)] += 1

    def _entry(self, plan: ApplyPlan, now: int) -> None:
        assert plan.side is not None and plan.qty is not None and plan.leverage is not None
        symbol = plan.symbol
        rules = self.exchange.rules.get(symbol)
        facts = EntryFacts(
            ess=self.books.ess_at(now), rules=rules, cooldown_active=now < self.cooldown_until.get(symbol, 0),
            reconcile_blocked=False, policy=self.policy, positions=self.positions,
            mark_price=self.exchange.marks.get(symbol), now_ms=now,
            entry_max_age_ms=self.apply.entry_max_age_s * 1000, entry_max_move_frac=self.apply.entry_max_move_frac)
        reason = entry_gate(plan, facts)
        if reason is not None:
            self._result(plan, "SKIP", reason)
            return
        assert rules is not None
        qty = rules.round_qty(plan.qty)
        if qty <= 0:
            self._result(plan, "SKIP", PlanReason.BELOW_STEP)
            return
        cid = client_order_id(plan.plan_id)
        try:
            self.exchange.set_leverage(symbol, plan.leverage)
            order = self.exchange.place_market_order(symbol, plan.side, qty, cid, reduce_only=False, ts_ms=now)
        except OrderRejected as e:
            self._result(plan, "ERROR", e.reason_code)
            return
        except TemporaryError:
            self._result(plan, "ERROR", PlanReason.EXCHANGE_UNAVAILABLE)
            return
        position = self.positions.get(symbol)
        after = self._book_fills(plan, order, position, FillKind.ENTRY, now)
        if after is not None:
            if position is None:
                after = self._protect(after, rules)
            elif after.quantity != position.quantity:
                after = self._resize(after, rules, plan.plan_id)
            self._set(symbol, after)
        if self.apply.cooldown_s:
            self.cooldown_until[symbol] = now + self.apply.cooldown_s * 1000
        self._result(plan, "EXECUTE")

    def _exit(self, plan: ApplyPlan, now: int) -> None:
        symbol = plan.symbol
        position = self.positions.get(symbol)
        reason = position_gate(plan, position)
        if reason is not None:
            self._result(plan, "SKIP", reason)
            return
        assert position is not None
        rules = self.exchange.rules.get(symbol)
        qty = exit_quantity(plan, position, rules, self.exchange.marks.get(symbol)) if rules else position.quantity
        if qty <= 0:
            self._result(plan, "SKIP", PlanReason.BELOW_STEP)
            return
        try:
            order = self.exchange.place_market_order(symbol, position.side.close_side, qty,
                                                     client_order_id(plan.plan_id), reduce_only=True, ts_ms=now)
        except OrderRejected as e:
            self._result(plan, "ERROR", e.reason_code)
            return
        after = self._book_fills(plan, order, position, FillKind.EXIT, now)
        if after is None:
            self._set(symbol, None)
            self._cancel_all(position)
        else:
            if rules is not None and after.quantity != position.quantity:
                after = self._resize(after, rules, plan.plan_id)
            self._set(symbol, after)
        self._ended(self.exchange.take_ended())  # the fleet hears of them after its commit
        self._result(plan, "EXECUTE")

    def _update_stop(self, plan: ApplyPlan, now: int) -> None:
        assert plan.new_stop_loss is not None and plan.reason is not None
        symbol = plan.symbol
        position = self.positions.get(symbol)
        reason = position_gate(plan, position)
        if reason is not None:
            self._result(plan, "SKIP", reason)
            return
        assert position is not None
        rules = self.exchange.rules.get(symbol)
        stop = rules.round_price(plan.new_stop_loss) if rules else plan.new_stop_loss
        if loosens_stop(position, stop):
            self._result(plan, "SKIP", PlanReason.STOP_NOT_TIGHTER)
            return
        if rules is None:
            self._result(plan, "SKIP", PlanReason.SYMBOL_NOT_TRADABLE)
            return
        try:
            after = self._replace_stop(position, rules, stop, client_order_id(plan.plan_id, "sl"))
        except OrderRejected as e:
            self._result(plan, "ERROR", e.reason_code)
            return
        self._set(symbol, after.with_changes(stop_reason=plan.reason.value, updated_at=now))
        self._result(plan, "EXECUTE")

    def _book_fills(self, plan: ApplyPlan, order: OrderResult, position: PositionRecord | None, kind: FillKind,
                    now: int) -> PositionRecord | None:
        """The order's fills to the books, with the position after each; the position after all."""
        after = position
        for fill in results.fills_of(order):
            after = book.after_fill(after, fill.side, fill.qty, fill.price, now,
                                    plan if kind is FillKind.ENTRY else None)
            owner = after.plan_id if after is not None else (position.plan_id if position else plan.position_plan_id)
            self._to_books(results.execution(
                fill, plan_id=plan.plan_id, trace_id=plan.trace_id, kind=kind, position_after=book.signed(after),
                position_plan_id=owner, reason=plan.reason), fill)
        return after

    def _to_books(self, result: ExecutionResult, fill: Fill) -> None:
        self.books.book(result.model_copy(update={"ts": fill.ts_ms}))

    def _set(self, symbol: str, position: PositionRecord | None) -> None:
        if position is None:
            self.positions.pop(symbol, None)
        else:
            self.positions[symbol] = position
        self.on_change(symbol)

    # --- exchange events -----------------------------------------------------------------------------

    def on_exchange(self, events: list[ExchangeEvent]) -> None:
        """Book what the exchange did on its own, in order."""
        for event in events:
            if isinstance(event, ExchangeFill):
                self._exchange_fill(event)
            else:
                self._ended([event])

    def _exchange_fill(self, event: ExchangeFill) -> None:
        fill, kind = event.fill, event.kind
        symbol = fill.symbol
        position = self.positions.get(symbol)
        after = book.after_fill(position, fill.side, fill.qty, fill.price, fill.ts_ms)
        reason = (ExitReason(position.stop_reason) if kind is FillKind.STOP and position is not None
                  else _EXCHANGE_REASONS.get(kind, ExitReason.STOP_LOSS))
        trace_id = position.trace_id if position and position.trace_id else "0" * 16
        self._to_books(results.execution(
            fill, plan_id=event.origin_id, trace_id=trace_id, kind=kind, position_after=book.signed(after),
            position_plan_id=position.plan_id if position else None, reason=reason), fill)
        if position is not None:
            if after is None:
                self._cancel_all(position, except_id=fill.client_order_id)
            self._set(symbol, after)

    def _ended(self, events: list[ConditionalEnded]) -> None:
        """A protective order the exchange ended: nothing to do once its position is gone (the fleet logs
        ``protection_ended_ignored``); for a live position it is counted (the fleet re-protects it)."""
        for event in events:
            position = self.positions.get(event.symbol)
            if position is not None and event.client_algo_id in (position.sl_order_id, position.tp_order_id):
                self.protection_ended += 1

    # --- protective orders -------------------------------------------------------------------------

    def _tp3_price(self, position: PositionRecord) -> Decimal:
        base_sl, base_tp = base_fractions(position, self.ladder)
        prices, _ = levels_of(position, base_sl, base_tp, self.ladder)
        return prices.tp3

    def _protect(self, position: PositionRecord, rules: SymbolRules) -> PositionRecord:
        """A new position: its stop (for its quantity) and a take-profit at TP3."""
        if not self.protective:
            return position
        sl_id = tp_id = ""
        if position.stop_loss is not None:
            sl_id = self._place(position, rules, ConditionalKind.STOP_MARKET, position.stop_loss,
                                client_order_id(position.plan_id, "sl"))
        tp_id = self._place(position, rules, ConditionalKind.TAKE_PROFIT_MARKET, self._tp3_price(position),
                            client_order_id(position.plan_id, "tp"))
        return position.with_changes(sl_order_id=sl_id, tp_order_id=tp_id)

    def _replace_stop(self, position: PositionRecord, rules: SymbolRules, stop: Decimal,
                      new_id: str) -> PositionRecord:
        """The new stop first, then the old one cancelled: never a moment without a stop."""
        if not self.protective:
            return position.with_changes(stop_loss=stop)
        self._send(position, rules, ConditionalKind.STOP_MARKET, stop, new_id)
        if position.sl_order_id and position.sl_order_id != new_id:
            self._cancel(position.symbol, position.sl_order_id)
        return position.with_changes(stop_loss=stop, sl_order_id=new_id)

    def _resize(self, position: PositionRecord, rules: SymbolRules, plan_id: str) -> PositionRecord:
        """After a fill changed the quantity: the stop again for exactly what is held."""
        if not self.protective or position.stop_loss is None:
            return position
        try:
            return self._replace_stop(position, rules, position.stop_loss, client_order_id(plan_id, "sl"))
        except _PLACE_FAILED:
            self.protection_failures += 1
            return position

    def _cancel_all(self, position: PositionRecord, *, except_id: str = "") -> None:
        for cid in (position.sl_order_id, position.tp_order_id):
            if cid and cid != except_id:
                self._cancel(position.symbol, cid)

    def _cancel(self, symbol: str, cid: str) -> None:
        try:
            self.exchange.cancel_conditional(symbol, cid)
        except OrderNotFound:
            pass  # triggered, expired or cancelled already

    def _place(self, position: PositionRecord, rules: SymbolRules, kind: ConditionalKind, price: Decimal,
               cid: str) -> str:
        try:
            self._send(position, rules, kind, price, cid)
            return cid
        except _PLACE_FAILED:
            self.protection_failures += 1
            return ""

    def _send(self, position: PositionRecord, rules: SymbolRules, kind: ConditionalKind, price: Decimal,
              cid: str) -> None:
        stop = kind is ConditionalKind.STOP_MARKET
        self.exchange.place_conditional(position.symbol, kind, position.side.close_side, rules.round_price(price), cid,
                                        close_position=not stop, quantity=position.quantity if stop else None)
