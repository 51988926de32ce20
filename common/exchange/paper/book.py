"""The paper exchange's arithmetic: rule checks, fill prices, positions, margin and liquidation.

Pure functions over values (no Redis), so each can be checked directly. Error codes and messages are
Binance USD-M's (``/fapi`` error-code list), so apply_layer meets the same rejections on paper as live.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal

from common.contracts.base import plain_decimal
from common.contracts.enums import Side
from common.exchange.base import CLIENT_ID_RE, ConditionalKind, ConditionalOrder, ConditionalStatus
from common.exchange.errors import REDUCE_ONLY_REJECTED, OrderRejected
from common.exchange.rules import SymbolRules

#: money and average prices are kept to 8 decimals, as Binance reports commissions and entry prices
MONEY_PLACES = Decimal("0.00000001")
BPS = Decimal(10_000)
#: maintenance margin rate of the liquidation formula (Binance's lowest bracket for the majors)
MAINTENANCE_MARGIN_RATE = Decimal("0.004")
DEFAULT_LEVERAGE = 20
ZERO = Decimal(0)
#: the asset of the wallet and of every fee
FEE_ASSET = "USDT"
#: Binance's answer to a second close-position conditional of one type and direction (public captures;
#: -4130 is not on Binance's error-code page)
CLOSE_POSITION_EXISTS = "An open stop or take profit order with GTE and closePosition in the direction is existing."


# --- Binance's rejections ------------------------------------------------------------------------


def invalid_symbol() -> OrderRejected:
    return OrderRejected(-1121, "Invalid symbol.")


def precision_over_maximum() -> OrderRejected:
    return OrderRejected(-1111, "Precision is over the maximum defined for this asset.")


def invalid_leverage(leverage: int) -> OrderRejected:
    return OrderRejected(-4028, f"Leverage {leverage} is not valid")


def margin_insufficient() -> OrderRejected:
    return OrderRejected(-2019, "Margin is insufficient.")


def reduce_only_rejected() -> OrderRejected:
    return OrderRejected(REDUCE_ONLY_REJECTED, "ReduceOnly Order is rejected.")


def would_immediately_trigger() -> OrderRejected:
    return OrderRejected(-2021, "Order would immediately trigger.")


def tradable_rules(rules: dict[str, SymbolRules], symbol: str) -> SymbolRules:
    """The rules of a symbol that is listed and TRADING; -1121 otherwise (as Binance answers)."""
    found = rules.get(symbol)
    if found is None or not found.tradable:
        raise invalid_symbol()
    return found


def check_client_id(client_id: str) -> None:
    """-4015 for an id Binance would refuse (more than 36 chars or outside ``[A-Za-z0-9._-]``)."""
    if not CLIENT_ID_RE.match(client_id):
        raise OrderRejected(-4015, "Client order id is not valid.")


def check_quantity(rules: SymbolRules, qty: Decimal) -> None:
    """A market quantity against LOT_SIZE / MARKET_LOT_SIZE, in Binance's order of checks."""
    if not qty.is_finite() or qty <= 0:
        raise OrderRejected(-4003, "Quantity less than or equal to zero.")
    if qty % rules.step_size != 0:
        raise precision_over_maximum()
    if qty < rules.min_qty:
        raise OrderRejected(-4004, "Quantity less than min quantity.")
    if qty > rules.market_max_qty:
        raise OrderRejected(-4005, "Quantity greater than max quantity.")


def check_min_notional(rules: SymbolRules, qty: Decimal, price: Decimal) -> None:
    """-4164 when ``qty × price`` is below MIN_NOTIONAL (the caller skips reduce-only orders)."""
    if qty * price < rules.min_notional:
        raise OrderRejected(
            -4164,
            f"Order's notional must be no smaller than {plain_decimal(rules.min_notional)} "
            "(unless you choose reduce only).",
        )


def check_trigger_price(rules: SymbolRules, trigger_price: Decimal) -> None:
    if not trigger_price.is_finite() or trigger_price <= 0:
        raise OrderRejected(-4006, "Stop price less than zero.")
    if trigger_price % rules.tick_size != 0:
        raise precision_over_maximum()


def check_conditional(rules: dict[str, SymbolRules], symbol: str, client_algo_id: str, trigger_price: Decimal,
                      close_position: bool, quantity: Decimal | None) -> None:
    """A new conditional's parameters as Binance checks them (client id, symbol, trigger on the tick grid,
    ``closePosition`` xor a valid ``quantity``); OrderRejected when one is wrong."""
    check_client_id(client_algo_id)
    symbol_rules = tradable_rules(rules, symbol)
    check_trigger_price(symbol_rules, trigger_price)
    if close_position and quantity is not None:
        raise OrderRejected(-1106, "Parameter 'quantity' sent when not required.")
    if not close_position:
        if quantity is None:
            raise OrderRejected(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        check_quantity(symbol_rules, quantity)


def default_leverage(rules: SymbolRules) -> int:
    return min(DEFAULT_LEVERAGE, rules.max_leverage)


def check_leverage(rules: SymbolRules, leverage: int) -> None:
    if leverage < 1 or leverage > rules.max_leverage:
        raise invalid_leverage(leverage)


# --- prices and fees -----------------------------------------------------------------------------


def fill_price(rules: SymbolRules, mark: Decimal, side: Side, slippage_bps: Decimal) -> Decimal:
    """The mark worsened by the slippage (a BUY pays more, a SELL gets less), to the nearest tick."""
    factor = 1 + slippage_bps / BPS if side is Side.BUY else 1 - slippage_bps / BPS
    return rules.round_price(mark * factor)


def fee_of(qty: Decimal, price: Decimal, rate: Decimal) -> Decimal:
    """The taker commission in USDT, to 8 decimals."""
    return money(qty * price * rate)


def money(value: Decimal) -> Decimal:
    return value.quantize(MONEY_PLACES, rounding=ROUND_HALF_EVEN)


def triggers(kind: ConditionalKind, side: Side, trigger_price: Decimal, mark: Decimal) -> bool:
    """Whether a conditional fires at ``mark`` (equality fires, as on Binance).

    A SELL stop (protecting a long) fires when the mark falls to the trigger, a BUY stop (a short)
    when it rises to it; a take-profit the other way round."""
    falling = (kind is ConditionalKind.STOP_MARKET) == (side is Side.SELL)
    return mark <= trigger_price if falling else mark >= trigger_price


# --- positions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperPosition:
    """One symbol's position on the paper exchange (one-way mode: ``qty`` signed, + long)."""

    symbol: str
    qty: Decimal
    entry_price: Decimal
    leverage: int
    #: PnL realized by partial closes of this position so far
    realized_pnl: Decimal
    opened_ms: int
    updated_ms: int

    @property
    def close_side(self) -> Side:
        return Side.SELL if self.qty > 0 else Side.BUY

    @property
    def initial_margin(self) -> Decimal:
        return abs(self.qty) * self.entry_price / self.leverage

    def unrealized_pnl(self, mark: Decimal) -> Decimal:
        return money((mark - self.entry_price) * self.qty)

    def liquidation_price(self, rules: SymbolRules | None) -> Decimal:
        """Isolated-margin liquidation price, maintenance margin rate ``m`` = 0.4 %, no maintenance
        amount, the posted margin being the initial margin ``|q|·E/L``:

        - long:  ``LP = E · (1 − 1/L) / (1 − m)``
        - short: ``LP = E · (1 + 1/L) / (1 + m)``

        (Binance's ``LP = (WB − Σ sign·q·E) / (|q|·m − sign·q)`` with ``WB = |q|·E/L``.) Rounded to
        the tick (to 8 decimals without rules); a 1× long gives 0, which is never reached."""
        inverse = Decimal(1) / self.leverage
        if self.qty > 0:
            raw = self.entry_price * (1 - inverse) / (1 - MAINTENANCE_MARGIN_RATE)
        else:
            raw = self.entry_price * (1 + inverse) / (1 + MAINTENANCE_MARGIN_RATE)
        return money(raw) if rules is None else rules.round_price(raw)

    def liquidated_at(self, rules: SymbolRules, mark: Decimal) -> bool:
        price = self.liquidation_price(rules)
        if self.qty > 0:
            return price > 0 and mark <= price
        return mark >= price


@dataclass(frozen=True)
class Trade:
    """What one fill does to a position."""

    position: PaperPosition | None
    realized_pnl: Decimal
    #: the part of the fill that opens or adds to exposure (needs margin)
    opening_qty: Decimal
    #: the part that closes existing exposure
    closing_qty: Decimal


def signed(side: Side, qty: Decimal) -> Decimal:
    return qty if side is Side.BUY else -qty


def apply_fill(
    position: PaperPosition | None,
    symbol: str,
    side: Side,
    qty: Decimal,
    price: Decimal,
    leverage: int,
    ts_ms: int,
) -> Trade:
    """The position after a fill: an average entry when adding, realized PnL against the average
    entry when reducing, a fresh entry at the fill price when the fill flips the side."""
    delta = signed(side, qty)
    old = position.qty if position is not None else ZERO
    new = old + delta
    if position is None or old == 0:
        opened = PaperPosition(symbol, new, price, leverage, ZERO, ts_ms, ts_ms)
        return Trade(opened, ZERO, qty, ZERO)
    if (old > 0) == (delta > 0):
        entry = money((abs(old) * position.entry_price + qty * price) / abs(new))
        added = replace(position, qty=new, entry_price=entry, leverage=leverage, updated_ms=ts_ms)
        return Trade(added, ZERO, qty, ZERO)
    closing = min(qty, abs(old))
    realized = money((price - position.entry_price) * closing * (1 if old > 0 else -1))
    if new == 0:
        return Trade(None, realized, ZERO, closing)
    if (new > 0) == (old > 0):
        reduced = replace(position, qty=new, realized_pnl=position.realized_pnl + realized, updated_ms=ts_ms)
        return Trade(reduced, realized, ZERO, closing)
    flipped = PaperPosition(symbol, new, price, leverage, ZERO, ts_ms, ts_ms)
    return Trade(flipped, realized, qty - closing, closing)


@dataclass(frozen=True)
class PaperAccount:
    """The USDT wallet: balance after realized PnL and fees, and their running totals."""

    wallet_balance: Decimal
    fees: Decimal
    realized_pnl: Decimal

    def after(self, realized: Decimal, fee: Decimal) -> PaperAccount:
        return PaperAccount(self.wallet_balance + realized - fee, self.fees + fee, self.realized_pnl + realized)


def available_balance(
    account: PaperAccount, positions: list[PaperPosition], marks: dict[str, Decimal]
) -> tuple[Decimal, Decimal]:
    """``(available, unrealized)``: available = wallet − initial margin of open positions + uPnL.
    A position without a mark counts at its entry (no uPnL)."""
    unrealized = sum(
        (p.unrealized_pnl(marks.get(p.symbol, p.entry_price)) for p in positions), ZERO
    )
    margin = sum((p.initial_margin for p in positions), ZERO)
    return money(account.wallet_balance - margin + unrealized), unrealized


# --- fill decisions ------------------------------------------------------------------------------
#
# What a fill will be, decided from values: the paper exchange runs these inside its Redis transactions
# (:mod:`.fills`), the backtest over its in-memory book.


@dataclass(frozen=True)
class FillDecision:
    """A fill decided: its side, quantity, price and fee, and what it does to the position."""

    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    trade: Trade


@dataclass(frozen=True)
class Unfilled:
    """A triggered conditional that ends without a fill: its new status and Binance's reason."""

    status: ConditionalStatus
    reason: str


#: the one failure reason Binance's docs show for an algo order (ALGO_UPDATE sample: CANCELED so)
REDUCE_ONLY_REJECT = "Reduce Only reject"


def market_fill(
    rules: SymbolRules,
    side: Side,
    qty: Decimal,
    reduce_only: bool,
    mark: Decimal,
    position: PaperPosition | None,
    leverage: int,
    slippage_bps: Decimal,
    taker_fee: Decimal,
    ts_ms: int,
) -> FillDecision:
    """A market order at ``mark``: reduce-only against the position (-2022 without one to reduce; capped
    at its size), else the minimum notional (-4164); the fill at the slipped mark with the taker fee. The
    margin is checked apart (:func:`check_margin`), against the book as it is."""
    fill_qty = qty
    if reduce_only:
        if position is None or position.close_side is not side:
            raise reduce_only_rejected()
        fill_qty = min(qty, abs(position.qty))
    else:
        check_min_notional(rules, qty, mark)
    price = fill_price(rules, mark, side, slippage_bps)
    fee = fee_of(fill_qty, price, taker_fee)
    trade = apply_fill(position, rules.symbol, side, fill_qty, price, leverage, ts_ms)
    return FillDecision(side, fill_qty, price, fee, trade)


def check_margin(
    decision: FillDecision,
    position: PaperPosition | None,
    leverage: int,
    account: PaperAccount,
    held: list[PaperPosition],
    marks: dict[str, Decimal],
) -> None:
    """-2019 when the part of the fill that opens exposure needs more initial margin (plus the fee) than
    is available. A flip first closes the old position: its margin and PnL are back before the new one
    opens. Nothing to check for a fill that opens nothing."""
    trade = decision.trade
    if trade.opening_qty <= 0:
        return
    available, _ = available_balance(account, held, marks)
    released = position.initial_margin + trade.realized_pnl if trade.closing_qty and position else ZERO
    if trade.opening_qty * decision.price / leverage + decision.fee > available + released:
        raise margin_insufficient()


def conditional_fill(
    order: ConditionalOrder,
    position: PaperPosition | None,
    rules: SymbolRules,
    mark: Decimal,
    slippage_bps: Decimal,
    taker_fee: Decimal,
    ts_ms: int,
) -> FillDecision | Unfilled | None:
    """An open conditional at ``mark``: None when it does not trigger; :class:`Unfilled` when it triggers
    with nothing on its side to reduce (a close-position one EXPIRED — its position is gone —, a
    quantity-based one CANCELED "Reduce Only reject", Binance's docs sample); else its fill against the
    position, at the slipped mark. A quantity above the position closes the position and no more."""
    if not triggers(order.kind, order.side, order.trigger_price, mark):
        return None
    if position is None or position.close_side is not order.side:
        if order.close_position:
            return Unfilled(ConditionalStatus.EXPIRED, "")
        return Unfilled(ConditionalStatus.CANCELED, REDUCE_ONLY_REJECT)
    qty = abs(position.qty)
    if not order.close_position and order.quantity is not None:
        qty = min(order.quantity, qty)
    price = fill_price(rules, mark, order.side, slippage_bps)
    fee = fee_of(qty, price, taker_fee)
    trade = apply_fill(position, rules.symbol, order.side, qty, price, position.leverage, ts_ms)
    return FillDecision(order.side, qty, price, fee, trade)


def liquidation_fill(
    position: PaperPosition | None, rules: SymbolRules, mark: Decimal, taker_fee: Decimal, ts_ms: int
) -> FillDecision | None:
    """The whole position closed at its liquidation price with the taker fee, when ``mark`` crossed it;
    None otherwise."""
    if position is None or not position.liquidated_at(rules, mark):
        return None
    price = position.liquidation_price(rules)
    qty = abs(position.qty)
    side = position.close_side
    fee = fee_of(qty, price, taker_fee)
    trade = apply_fill(position, rules.symbol, side, qty, price, position.leverage, ts_ms)
    return FillDecision(side, qty, price, fee, trade)
