"""exitbrain and harvest_proposal on the backtest's clock: per path point of a symbol with a position.

harvest_proposal walks the position's take-profit ladder (:func:`services.harvest_proposal.propose.propose`,
its ladder kept in memory as the service keeps it); each proposal goes to exitbrain
(:func:`services.exitbrain.decide.on_proposal`), whose harvest plans are executed at once, the position
read again before the next; then exitbrain's risk exits at the mark
(:func:`services.exitbrain.decide.evaluate`: stop, break-even, trailing, kill score, time exit, close
retries), their plans executed in order. A symbol whose position is gone has its exit state and ladder
dropped, as the services drop theirs.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from backtest.apply import SimApply
from common.exit_levels import LadderParams
from common.maths.marketstate import MarketView
from services.exitbrain.decide import ExitParams, evaluate, on_proposal
from services.exitbrain.exit_state import ExitState
from services.harvest_proposal.propose import Ladder, propose


class SimExits:
    """The exit states and ladders of the open positions, and the decisions at each mark."""

    def __init__(self, apply: SimApply, params: ExitParams, ladder: LadderParams) -> None:
        self.apply = apply
        self.params = params
        self.ladder_params = ladder
        self.states: dict[str, ExitState] = {}
        self.ladders: dict[str, Ladder] = {}
        self.proposals = 0
        #: proposals exitbrain ignored, by reason
        self.ignored: Counter[str] = Counter()

    def forget(self, symbol: str) -> None:
        self.states.pop(symbol, None)
        self.ladders.pop(symbol, None)

    def on_mark(self, symbol: str, mark: Decimal, market: MarketView | None, now: int) -> bool:
        """One mark of ``symbol``: the ladder's proposals turned into plans, then the risk exits. True
        when something was proposed or planned."""
        apply = self.apply
        position = apply.positions.get(symbol)
        if position is None:
            self.forget(symbol)
            return False
        ladder, proposals = propose(position, self.ladders.get(symbol), mark, now, self.ladder_params)
        self.ladders[symbol] = ladder
        for proposal in proposals:
            self.proposals += 1
            outcome = on_proposal(proposal, apply.positions.get(symbol), self.states.get(symbol), market, now,
                                  self.params)
            if outcome.ignored:
                self.ignored[outcome.ignored] += 1
                continue
            self.states[symbol] = outcome.state
            for plan in outcome.plans:
                apply.execute(plan, now)
        position = apply.positions.get(symbol)
        if position is None:
            self.forget(symbol)
            return True
        outcome = evaluate(position, self.states.get(symbol), mark, market, now, self.params)
        self.states[symbol] = outcome.state
        for plan in outcome.plans:
            apply.execute(plan, now)
        return bool(proposals or outcome.plans)
