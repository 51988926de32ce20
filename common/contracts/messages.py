"""One contract per stream (DESIGN §4). Field names follow the wiring map where it gives them."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from common.contracts.base import (
    EpochMs,
    Fraction,
    HexId,
    Message,
    Money,
    Price,
    Quantity,
    Symbol,
)
from common.contracts.enums import (
    Action,
    Decision,
    ExitReason,
    FillKind,
    HarvestStage,
    PositionSide,
    ReconcileKind,
    Side,
)

Leverage = Annotated[int, Field(ge=1, le=125)]
Score = Annotated[float, Field(allow_inf_nan=False)]
Text = Annotated[str, StringConstraints(max_length=512)]
Code = Annotated[str, StringConstraints(min_length=1, max_length=128)]

# --- signals and plans ---------------------------------------------------------------------------


class TradeIntent(Message):
    """``trade.intent``: a signal sized by the trading mathematician, from trading_bot."""

    intent_id: HexId
    symbol: Symbol
    side: Side
    confidence: Fraction
    entry_price: Price
    stop_loss: Price
    take_profit: Price
    position_size_usd: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
    leverage: Leverage
    model: Code
    #: ATR(14) / close, a fraction (0.012 = 1.2 %): the wiring map's name, kept on the wire
    atr_pct: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    regime: Code

    @model_validator(mode="after")
    def _levels_on_the_right_side(self) -> TradeIntent:
        if self.side is Side.BUY and not (self.stop_loss < self.entry_price < self.take_profit):
            raise ValueError("a BUY needs stop_loss < entry_price < take_profit")
        if self.side is Side.SELL and not (self.take_profit < self.entry_price < self.stop_loss):
            raise ValueError("a SELL needs take_profit < entry_price < stop_loss")
        return self


class PlanStep(BaseModel):
    """One step of an exit plan, e.g. ``{"step":"CLOSE_FULL","type":"market_reduce_only",...}``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    step: Code
    type: Literal["market_reduce_only"] = "market_reduce_only"
    side: Literal["close"] = "close"
    pct: Annotated[float, Field(gt=0.0, le=100.0)]


_ENTRY_FIELDS = ("side", "qty", "order_type", "reduce_only", "leverage", "entry_price", "stop_loss",
                 "take_profit", "intent_id")
_EXIT_FIELDS = ("position_plan_id", "steps", "reason")
_STOP_FIELDS = ("position_plan_id", "new_stop_loss", "reason")
_REQUIRED_BY_ACTION: dict[Action, tuple[str, ...]] = {
    Action.ENTRY_PROPOSED: _ENTRY_FIELDS,
    Action.FULL_CLOSE_PROPOSED: _EXIT_FIELDS,
    Action.PARTIAL_CLOSE_PROPOSED: _EXIT_FIELDS,
    Action.UPDATE_STOP: _STOP_FIELDS,
    Action.ADOPT_EXCHANGE: ("reason",),
}
_KILL_FIELDS = ("kill_score", "k_regime_flip", "k_sigma_spike", "k_ts_drop", "k_age_penalty")


class ApplyPlan(Message):
    """``apply.plan``: what apply_layer is asked to do. Fields depend on ``action``."""

    JSON_FIELDS: ClassVar[frozenset[str]] = frozenset({"steps"})

    plan_id: HexId
    symbol: Symbol
    action: Action
    decision: Literal[Decision.EXECUTE] = Decision.EXECUTE
    # ENTRY_PROPOSED
    side: Side | None = None
    qty: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] | None = None
    order_type: Literal["MARKET"] | None = None
    reduce_only: bool | None = None
    leverage: Leverage | None = None
    entry_price: Price | None = None
    stop_loss: Price | None = None
    take_profit: Price | None = None
    intent_id: HexId | None = None
    # exits and stop updates
    position_plan_id: HexId | None = None
    steps: list[PlanStep] | None = None
    reason: ExitReason | None = None
    new_stop_loss: Price | None = None
    # kill-score exits
    kill_score: Score | None = None
    k_regime_flip: Score | None = None
    k_sigma_spike: Score | None = None
    k_ts_drop: Score | None = None
    k_age_penalty: Score | None = None

    @model_validator(mode="after")
    def _fields_of_the_action(self) -> ApplyPlan:
        for field in _REQUIRED_BY_ACTION[self.action]:
            if getattr(self, field) is None:
                raise ValueError(f"{field} is required for {self.action.value}")
        if self.action is Action.ENTRY_PROPOSED and self.reduce_only:
            raise ValueError("reduce_only must be false for an entry")
        if self.action.is_exit:
            assert self.steps is not None
            if not self.steps:
                raise ValueError("steps must not be empty")
            if self.action is Action.FULL_CLOSE_PROPOSED and self.close_pct != 100.0:
                raise ValueError("a FULL_CLOSE_PROPOSED closes 100 pct")
        if self.reason is ExitReason.KILL_SCORE and self.action.is_exit:
            missing = [f for f in _KILL_FIELDS if getattr(self, f) is None]
            if missing:
                raise ValueError(f"{missing[0]} is required for a kill_score exit")
        return self

    @property
    def close_pct(self) -> float:
        """The percentage of the position an exit plan closes (sum of its steps, at most 100)."""
        return min(100.0, sum(step.pct for step in self.steps or []))


class ApplyResult(Message):
    """``apply.result``: exactly one per plan — EXECUTE, SKIP or ERROR with a reason code."""

    plan_id: HexId
    symbol: Symbol
    action: Action
    decision: Decision
    executed: bool
    error: Text = ""
    client_order_id: Text = ""
    order_id: Text = ""
    filled_qty: Quantity = Decimal(0)
    avg_price: Quantity = Decimal(0)
    fee: Money = Decimal(0)
    reduce_only: bool = False
    latency_ms: Annotated[int, Field(ge=0)] = 0


class ExecutionResult(Message):
    """``execution.result``: one per fill, whatever order it came from."""

    fill_id: Code
    plan_id: Code
    symbol: Symbol
    side: Side
    qty: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
    price: Price
    fee: Money
    fee_asset: Code = "USDT"
    reduce_only: bool
    kind: FillKind
    position_after: Money
    realized_pnl: Money | None = None
    #: the entry plan of the position this fill belongs to, and the exit reason where there is one
    position_plan_id: HexId | None = None
    reason: ExitReason | None = None


class HarvestProposal(Message):
    """``harvest.proposal``: a ladder stage reached — a proposal, not an order."""

    symbol: Symbol
    position_plan_id: HexId
    stage: HarvestStage
    trigger_price: Price
    close_pct: Annotated[float, Field(ge=0.0, le=100.0)]
    new_stop_loss: Price | None = None
    r_multiple: Score


class TradeClosed(Message):
    """``trade.closed``: a position fully closed, with its books."""

    position_plan_id: HexId
    symbol: Symbol
    side: PositionSide
    qty: Quantity
    entry_price: Price
    exit_price: Price
    realized_pnl: Money
    fees: Money
    pnl_net: Money
    opened_at: EpochMs
    closed_at: EpochMs
    exit_reason: Code


# --- market data ---------------------------------------------------------------------------------


class MarketTick(Message):
    """``market.tick``: the latest trade and mark price."""

    symbol: Symbol
    price: Price
    mark_price: Price


class MarketKline(Message):
    """``market.klines``: one kline, open or closed."""

    symbol: Symbol
    interval: Annotated[str, StringConstraints(pattern=r"^[0-9]+[smhdwM]$")]
    open_time: EpochMs
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Quantity
    closed: bool

    @model_validator(mode="after")
    def _ohlc_consistent(self) -> MarketKline:
        if not (self.low <= min(self.open, self.close) and self.high >= max(self.open, self.close)):
            raise ValueError("high/low do not bound open/close")
        return self


class MarketState(Message):
    """``marketstate``: the regime estimate of a symbol from closed klines."""

    symbol: Symbol
    sigma: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    mu: Score
    ts_strength: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    p_trend: Fraction
    p_mr: Fraction
    p_chop: Fraction
    regime: Code
    #: ATR(14) / close, a fraction (0.012 = 1.2 %): the wiring map's name, kept on the wire
    atr_pct: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


# --- the books and monitoring --------------------------------------------------------------------


class ExitbrainPnl(Message):
    """``exitbrain.pnl``: exitbrain's view of one open position (throttled)."""

    symbol: Symbol
    position_plan_id: HexId
    mark_price: Price
    unrealized_pnl: Money
    r_multiple: Score
    kill_score: Fraction


class PositionSnapshot(Message):
    """``position.snapshot``: position_monitor's view of a position on the exchange."""

    symbol: Symbol
    position_amt: Money
    entry_price: Quantity
    mark_price: Quantity
    unrealized_pnl: Money
    leverage: Leverage
    liquidation_price: Quantity = Decimal(0)


class ReconcileEvent(Message):
    """``reconcile.events``: a difference between the position hashes and the exchange."""

    symbol: Symbol
    kind: ReconcileKind
    redis_qty: Money
    exchange_qty: Money
    action_taken: Text


class _Event(Message):
    JSON_FIELDS: ClassVar[frozenset[str]] = frozenset({"details"})

    kind: Code
    reason: Text
    details: dict[str, Any] = Field(default_factory=dict)


class GovernorEvent(_Event):
    """``governor.events``: policy updates and kill-switch changes."""


class PolicyAudit(_Event):
    """``policy.audit``: an intent refused by policy, with the reason."""


class AlertEvent(_Event):
    """``alerts``: something an operator should look at."""


class DeadLetter(Message):
    """``<stream>.dlq``: an entry that failed its contract or was delivered too often."""

    JSON_FIELDS: ClassVar[frozenset[str]] = frozenset({"payload"})

    origin_stream: Code
    origin_id: Annotated[str, StringConstraints(pattern=r"^[0-9]+-[0-9]+$")]
    group: Code
    error: Annotated[str, StringConstraints(max_length=2048)]
    deliveries: Annotated[int, Field(ge=0)]
    #: the entry's fields, each value cut to its first ``DLQ_FIELD_CHARS`` characters
    payload: dict[str, str]
    #: characters of the whole original entry (names and values) and their SHA-256 (hex): what was cut can
    #: still be matched against the original while it is in its stream
    payload_chars: Annotated[int, Field(ge=0)] = 0
    payload_sha256: str = ""
    truncated: bool = False
