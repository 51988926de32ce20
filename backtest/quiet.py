"""The fast path: the prices at which a path point of a symbol provably changes nothing.

After the decisions ran at a path point and did nothing (no plan, no proposal, no exchange fill), the
next points of the same kline change nothing either as long as their price stays inside the band
below and their time before its end — so they are skipped. The band is the intersection of what each
decision needs to act, for the position, its exit state, its ladder and the exchange's orders as they
are now (any change of the position, and every closed kline — the market state — drops the band):

- the paper exchange: no conditional triggers (:func:`common.exchange.paper.book.triggers`: a long's
  stop above the price, its take-profit below it) and the liquidation price is not crossed;
- harvest_proposal (:func:`services.harvest_proposal.propose.propose`): the price is not better than
  the ladder's best price (the best is always below the next take-profit, and its trailing was applied
  when it was set), or the ladder is done (TP3);
- exitbrain (:func:`services.exitbrain.decide.evaluate`): the stop in force is not crossed and the
  price is not better than the exit state's peak (so neither the peak nor the trailing stop moves, and
  the stop update already judged for this state does not change); the kill score does not close at the
  kline's last path point — it only grows with the position's age, the market state being fixed until
  the kline closes (with a non-negative age weight) —; the time exit and the TP3 retry are not due; no
  close is in flight.

Prices at a band's edge are evaluated (a stop fires at equality). :class:`backtest.config.BacktestConfig`
``fast=False`` evaluates every point, the reference this is tested against (same trades).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from backtest.apply import SimApply
from backtest.exchange import SimExchange
from backtest.exits import SimExits
from common.contracts import PositionSide, Side
from common.exchange.base import ConditionalKind
from common.exchange.paper.book import PaperPosition
from common.exchange.rules import SymbolRules
from common.maths.marketstate import MarketView
from services.exitbrain.decide import ExitParams, current_state, score, stop_in_force


@dataclass(frozen=True, slots=True)
class Band:
    """Prices ``low < p < high`` (each bound inclusive when its flag says so) before ``until`` (ms)."""

    low: Decimal | None
    low_inclusive: bool
    high: Decimal | None
    high_inclusive: bool
    until: int

    def holds(self, price: Decimal, now: int) -> bool:
        if now >= self.until:
            return False
        low, high = self.low, self.high
        if low is not None and (price < low or (price == low and not self.low_inclusive)):
            return False
        return high is None or price < high or (price == high and self.high_inclusive)


class _Bounds:
    """A band being built: the tightest lower and upper bounds seen."""

    def __init__(self) -> None:
        self.low: Decimal | None = None
        self.low_inclusive = False
        self.high: Decimal | None = None
        self.high_inclusive = False

    def above(self, bound: Decimal, inclusive: bool) -> None:
        """The price must be above ``bound`` (or at it, when ``inclusive``)."""
        if self.low is None or bound > self.low or (bound == self.low and not inclusive):
            self.low, self.low_inclusive = bound, inclusive

    def below(self, bound: Decimal, inclusive: bool) -> None:
        if self.high is None or bound < self.high or (bound == self.high and not inclusive):
            self.high, self.high_inclusive = bound, inclusive


class QuietBands:
    """The band of each symbol with a position, learnt after an uneventful evaluation."""

    def __init__(self, exchange: SimExchange, apply: SimApply, exits: SimExits, params: ExitParams) -> None:
        self.exchange = exchange
        self.apply = apply
        self.exits = exits
        self.params = params
        self.bands: dict[str, Band] = {}
        #: the liquidation price of each exchange position (the same position object: the same price)
        self._liquidation: dict[str, tuple[PaperPosition, Decimal]] = {}

    def forget(self, symbol: str) -> None:
        self.bands.pop(symbol, None)

    def quiet(self, symbol: str, price: Decimal, now: int) -> bool:
        band = self.bands.get(symbol)
        return band is not None and band.holds(price, now)

    def learn(self, symbol: str, eventful: bool, market: MarketView | None, now: int, horizon_ms: int) -> None:
        """After the decisions of a path point at ``now``: the band for the next points up to
        ``horizon_ms`` (the kline's last path point), or none when the point did something."""
        self.bands.pop(symbol, None)
        if eventful:
            return
        band = self._band(symbol, market, now, horizon_ms)
        if band is not None:
            self.bands[symbol] = band

    def on_market(self, symbol: str, market: MarketView | None, horizon_ms: int) -> None:
        """A closed kline brought a new market state: the band holds on into the next kline, up to
        ``horizon_ms`` (its last path point), when that state changes nothing but the kill score and the
        score does not close there; else it is dropped. The exit state keeps the market at entry and an
        armed regime flip already; an unarmed one stays unarmed when the regime is against the position
        in the new state too (:func:`services.exitbrain.decide.current_state` changes nothing then). Its
        prices do not depend on the market state."""
        band = self.bands.pop(symbol, None)
        if band is None:
            return
        position = self.apply.positions.get(symbol)
        state = self.exits.states.get(symbol)
        if position is None or state is None or market is None or not state.has_entry_market:
            return
        if current_state(position, state, market, self.params, horizon_ms) is not state:
            return
        until = self._until(symbol, market, horizon_ms, horizon_ms)
        if until is not None:
            self.bands[symbol] = Band(band.low, band.low_inclusive, band.high, band.high_inclusive, until)

    def _until(self, symbol: str, market: MarketView | None, now: int, horizon_ms: int) -> int | None:
        """Until when (ms, exclusive) nothing is due by time alone for the symbol's position, at most past
        ``horizon_ms``; None when something is (or could be) due by then, or the position is not settled in
        its exit state and ladder."""
        position = self.apply.positions.get(symbol)
        state = self.exits.states.get(symbol)
        ladder = self.exits.ladders.get(symbol)
        if (position is None or state is None or ladder is None or state.closing
                or state.position_plan_id != position.plan_id or ladder.position_plan_id != position.plan_id):
            return None
        params = self.params
        until = horizon_ms + 1
        if params.max_hold_ms:
            until = min(until, position.created_at + params.max_hold_ms)
        if state.tp3_proposed_at:
            until = min(until, state.tp3_proposed_at + params.close_retry_ms)
        if market is not None and state.has_entry_market:
            if params.kill.w_age_penalty < 0:
                return None  # the score could fall and rise again within the kline: judge every point
            kill = score(position, state, market, horizon_ms, params)
            if kill is not None and kill.close:
                return None
        return until if until > now else None

    def _band(self, symbol: str, market: MarketView | None, now: int, horizon_ms: int) -> Band | None:
        until = self._until(symbol, market, now, horizon_ms)
        rules = self.exchange.rules.get(symbol)
        if until is None or rules is None:
            return None
        position = self.apply.positions[symbol]
        state = self.exits.states[symbol]
        ladder = self.exits.ladders[symbol]
        long = position.side is PositionSide.LONG
        bounds = _Bounds()
        # exitbrain: the stop in force not crossed (crossing is at or beyond it), the peak not bettered
        stop = stop_in_force(position, state)
        if long:
            bounds.above(stop, False)
            bounds.below(state.peak_price, True)
        else:
            bounds.below(stop, False)
            bounds.above(state.peak_price, True)
        # harvest_proposal: the ladder's best not bettered, unless the ladder is done
        if ladder.state.stage < 3:
            if long:
                bounds.below(ladder.state.best_price, True)
            else:
                bounds.above(ladder.state.best_price, True)
        self._exchange_bounds(symbol, rules, bounds)
        return Band(bounds.low, bounds.low_inclusive, bounds.high, bounds.high_inclusive, until)

    def _exchange_bounds(self, symbol: str, rules: SymbolRules, bounds: _Bounds) -> None:
        """No conditional triggers (equality fires) and no liquidation."""
        for order in self.exchange.open.get(symbol, ()):
            falling = (order.kind is ConditionalKind.STOP_MARKET) == (order.side is Side.SELL)
            if falling:
                bounds.above(order.trigger_price, False)
            else:
                bounds.below(order.trigger_price, False)
        held = self.exchange.positions.get(symbol)
        if held is not None:
            cached = self._liquidation.get(symbol)
            if cached is None or cached[0] is not held:
                cached = self._liquidation[symbol] = (held, held.liquidation_price(rules))
            liquidation = cached[1]
            if held.qty > 0:
                if liquidation > 0:
                    bounds.above(liquidation, False)
            else:
                bounds.below(liquidation, False)
