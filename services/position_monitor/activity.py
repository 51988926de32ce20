"""What position_monitor reads from the executor's streams: a bounded list of recent apply.result and
execution.result entries for ``GET /results``, and counts by decision and kind for ``/metrics``."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from common.bus import Delivery, Effects
from common.contracts import ApplyResult, ExecutionResult, plain_decimal
from common.streams import Stream
from services.position_monitor.metrics import METRICS


@dataclass(frozen=True)
class Recent:
    """One entry as ``GET /results`` shows it."""

    stream: str
    entry_id: str
    ts: int
    symbol: str
    plan_id: str
    trace_id: str
    #: apply.result: the decision; execution.result: the fill's kind
    outcome: str
    #: apply.result: the reason code; execution.result: ``side qty @ price``
    detail: str


class Activity:
    """The recent entries (newest last, at most ``limit``) and the counts since start."""

    def __init__(self, limit: int) -> None:
        self.recent: deque[Recent] = deque(maxlen=limit)
        self.decisions: Counter[str] = Counter()
        self.fill_kinds: Counter[str] = Counter()

    async def on_apply_result(self, delivery: Delivery) -> Effects:
        result = delivery.message
        assert isinstance(result, ApplyResult)
        self.decisions[result.decision.value] += 1
        METRICS.results.labels(result.action.value, result.decision.value).inc()
        self.recent.append(Recent(Stream.APPLY_RESULT, delivery.entry_id, result.ts, result.symbol, result.plan_id,
                                  result.trace_id, result.decision.value, result.error))
        return Effects()

    async def on_execution_result(self, delivery: Delivery) -> Effects:
        fill = delivery.message
        assert isinstance(fill, ExecutionResult)
        self.fill_kinds[fill.kind.value] += 1
        METRICS.fills.labels(fill.kind.value).inc()
        detail = f"{fill.side.value} {plain_decimal(fill.qty)} @ {plain_decimal(fill.price)}"
        self.recent.append(Recent(Stream.EXECUTION_RESULT, delivery.entry_id, fill.ts, fill.symbol, fill.plan_id,
                                  fill.trace_id, fill.kind.value, detail))
        return Effects()
