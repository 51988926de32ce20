"""harvest_proposal's decisions (pure): a position and a mark in, ``harvest.proposal`` entries out.

The position's adaptive take-profit ladder (DESIGN §7, from its own stop and target and its leverage)
is walked mark by mark; each stage reached gives one proposal — stage, trigger price, the share of what
is open to close, the stop after it and the R multiple at the mark. harvest_proposal owns the take-profit
ladder (exitbrain does not walk it); proposals, not orders: exitbrain turns each stage into its plans
once, and keeps the stop, the trailing and the other risk exits to itself. The ladder lives in memory;
after a restart a stage may be proposed again, which exitbrain ignores.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.contracts import HarvestProposal, HarvestStage
from common.exit_levels import LadderParams, base_fractions, levels_of
from common.ids import hex16
from common.maths.levels import (
    ExitLadderState,
    Harvest,
    advance,
    start_ladder,
)
from common.positions import PositionRecord
from common.streams import Service

STAGES: dict[int, HarvestStage] = {1: HarvestStage.TP1, 2: HarvestStage.TP2, 3: HarvestStage.TP3}


@dataclass(frozen=True)
class Ladder:
    """One position's walk up the ladder, as harvest_proposal remembers it."""

    position_plan_id: str
    base_sl: float
    base_tp: float
    state: ExitLadderState


def start(position: PositionRecord, params: LadderParams) -> Ladder:
    """The ladder of a position seen for the first time: stage 0, the stop its leverage-aware SL."""
    base_sl, base_tp = base_fractions(position, params)
    prices, _ = levels_of(position, base_sl, base_tp, params)
    return Ladder(position.plan_id, base_sl, base_tp, start_ladder(position.entry_price, prices))


def proposal_trace_id(position_plan_id: str, stage: HarvestStage) -> str:
    """A proposal starts a chain; its trace id is deterministic so a re-proposal is recognisable."""
    return hex16(position_plan_id, stage.value, "proposal")


def r_multiple(position: PositionRecord, ladder: Ladder, mark: Decimal) -> float:
    """Profit per unit at ``mark`` over the initial risk per unit (entry to the position's first stop)."""
    risk = position.entry_price * Decimal(repr(ladder.base_sl))
    return float((mark - position.entry_price) * position.side.sign / risk) if risk > 0 else 0.0


def propose(position: PositionRecord, ladder: Ladder | None, mark: Decimal, now: int,
            params: LadderParams) -> tuple[Ladder, list[HarvestProposal]]:
    """Walk the ladder to ``mark``: the new ladder and a proposal per take-profit stage reached."""
    if ladder is None or ladder.position_plan_id != position.plan_id:
        ladder = start(position, params)
    prices, split = levels_of(position, ladder.base_sl, ladder.base_tp, params)
    state, actions = advance(position.side, position.entry_price, mark, ladder.state, prices, split, params.levels)
    ladder = Ladder(ladder.position_plan_id, ladder.base_sl, ladder.base_tp, state)
    r = r_multiple(position, ladder, mark)
    proposals = [
        HarvestProposal(
            source=Service.HARVEST_PROPOSAL, trace_id=proposal_trace_id(position.plan_id, STAGES[a.stage]), ts=now,
            symbol=position.symbol, position_plan_id=position.plan_id, stage=STAGES[a.stage],
            trigger_price=a.trigger_price, close_pct=a.close_pct_of_current, new_stop_loss=a.new_stop, r_multiple=r,
        )
        for a in actions
        if isinstance(a, Harvest)
    ]
    return ladder, proposals
