"""The enumerations the contracts share (sides, actions, decisions, reasons)."""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    """Order side as the exchange spells it."""

    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY

    @property
    def position_side(self) -> PositionSide:
        """The side of the position an opening order of this side makes."""
        return PositionSide.LONG if self is Side.BUY else PositionSide.SHORT


class PositionSide(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"

    @property
    def sign(self) -> int:
        return 1 if self is PositionSide.LONG else -1

    @property
    def close_side(self) -> Side:
        """The order side that reduces a position of this side."""
        return Side.SELL if self is PositionSide.LONG else Side.BUY

    @property
    def open_side(self) -> Side:
        return Side.BUY if self is PositionSide.LONG else Side.SELL


class Action(StrEnum):
    ENTRY_PROPOSED = "ENTRY_PROPOSED"
    FULL_CLOSE_PROPOSED = "FULL_CLOSE_PROPOSED"
    PARTIAL_CLOSE_PROPOSED = "PARTIAL_CLOSE_PROPOSED"
    UPDATE_STOP = "UPDATE_STOP"
    #: make the position hash equal the exchange's position (reconciliation with resolution=adopt)
    ADOPT_EXCHANGE = "ADOPT_EXCHANGE"

    @property
    def is_exit(self) -> bool:
        return self in (Action.FULL_CLOSE_PROPOSED, Action.PARTIAL_CLOSE_PROPOSED)


class Decision(StrEnum):
    EXECUTE = "EXECUTE"
    SKIP = "SKIP"
    ERROR = "ERROR"


class ExitReason(StrEnum):
    KILL_SCORE = "kill_score"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    HARVEST_TP1 = "harvest_tp1"
    HARVEST_TP2 = "harvest_tp2"
    HARVEST_TP3 = "harvest_tp3"
    TIME_EXIT = "time_exit"
    MANUAL = "manual"
    ESS_FLATTEN = "ess_flatten"
    RECONCILE = "reconcile"
    LIQUIDATION = "liquidation"
    BREAKEVEN = "breakeven"
    #: the exchange dropped the position's stop and it could not be placed again
    PROTECTION_LOST = "protection_lost"


class FillKind(StrEnum):
    ENTRY = "ENTRY"
    EXIT = "EXIT"
    STOP = "STOP"
    TAKE_PROFIT = "TAKE_PROFIT"
    LIQUIDATION = "LIQUIDATION"


class HarvestStage(StrEnum):
    TP1 = "TP1"
    TP2 = "TP2"
    TP3 = "TP3"
    BREAKEVEN = "BREAKEVEN"
    TRAIL = "TRAIL"


class ReconcileKind(StrEnum):
    MISSING_IN_REDIS = "MISSING_IN_REDIS"
    MISSING_ON_EXCHANGE = "MISSING_ON_EXCHANGE"
    QTY_MISMATCH = "QTY_MISMATCH"
    SIDE_MISMATCH = "SIDE_MISMATCH"
    RESOLVED = "RESOLVED"
