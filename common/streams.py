"""The stream registry: DESIGN §3 as data, the single source for names of streams and groups.

For every stream: its key, its contract, the services that produce it, its consumer groups (the
group name is the consuming service's name), its MAXLEN, and whether it is read through groups or
latest-only. The runtime, ``qt streams init``, ``qt wiring``, the ACL generator and the contract tests
all read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from common import keys
from common.contracts import messages as m
from common.contracts.base import Message


class Service:
    """Names of the fleet's processes (and the operator tool), spelled once."""

    MARKETDATA = "marketdata"
    AI_ENGINE = "ai_engine"
    TRADING_BOT = "trading_bot"
    INTENT_BRIDGE = "intent_bridge"
    GOVERNOR = "governor"
    APPLY_LAYER = "apply_layer"
    EXITBRAIN = "exitbrain"
    HARVEST_PROPOSAL = "harvest_proposal"
    HARVEST_BRAIN = "harvest_brain"
    POSITION_MONITOR = "position_monitor"
    QT = "qt"

    ALL: tuple[str, ...] = (
        MARKETDATA,
        AI_ENGINE,
        TRADING_BOT,
        INTENT_BRIDGE,
        GOVERNOR,
        APPLY_LAYER,
        EXITBRAIN,
        HARVEST_PROPOSAL,
        HARVEST_BRAIN,
        POSITION_MONITOR,
    )


@dataclass(frozen=True)
class StreamSpec:
    """One registered stream."""

    name: str
    contract: type[Message]
    producers: tuple[str, ...]
    groups: tuple[str, ...] = ()
    #: services that read the stream without a group (latest value only)
    readers: tuple[str, ...] = ()
    maxlen: int = 10_000
    #: a dead-letter stream (derived from a grouped stream; written by the runtime)
    dead_letter_of: str | None = None

    @property
    def key(self) -> str:
        return keys.stream(self.name)

    @property
    def grouped(self) -> bool:
        return bool(self.groups)

    @property
    def dlq(self) -> StreamSpec:
        """The dead-letter stream of this stream."""
        return STREAMS[self.name + ".dlq"]


class Stream:
    """Registry names of the streams, spelled once."""

    MARKET_TICK = "market.tick"
    MARKET_KLINES = "market.klines"
    MARKETSTATE = "marketstate"
    TRADE_INTENT = "trade.intent"
    APPLY_PLAN = "apply.plan"
    APPLY_RESULT = "apply.result"
    EXECUTION_RESULT = "execution.result"
    HARVEST_PROPOSAL = "harvest.proposal"
    TRADE_CLOSED = "trade.closed"
    EXITBRAIN_PNL = "exitbrain.pnl"
    POSITION_SNAPSHOT = "position.snapshot"
    RECONCILE_EVENTS = "reconcile.events"
    GOVERNOR_EVENTS = "governor.events"
    POLICY_AUDIT = "policy.audit"
    ALERTS = "alerts"


S = Service
_BASE: tuple[StreamSpec, ...] = (
    StreamSpec(Stream.MARKET_TICK, m.MarketTick, (S.MARKETDATA,),
               readers=(S.EXITBRAIN, S.HARVEST_PROPOSAL), maxlen=20_000),
    StreamSpec(Stream.MARKET_KLINES, m.MarketKline, (S.MARKETDATA,), readers=(S.TRADING_BOT,), maxlen=20_000),
    StreamSpec(Stream.MARKETSTATE, m.MarketState, (S.MARKETDATA,), readers=(S.EXITBRAIN,), maxlen=10_000),
    StreamSpec(Stream.TRADE_INTENT, m.TradeIntent, (S.TRADING_BOT,), groups=(S.INTENT_BRIDGE,), maxlen=50_000),
    StreamSpec(Stream.APPLY_PLAN, m.ApplyPlan, (S.INTENT_BRIDGE, S.EXITBRAIN, S.GOVERNOR, S.QT,
                                                S.POSITION_MONITOR, S.APPLY_LAYER),  # apply_layer: protection lost
               groups=(S.APPLY_LAYER,), maxlen=50_000),
    StreamSpec(Stream.APPLY_RESULT, m.ApplyResult, (S.APPLY_LAYER,), groups=(S.POSITION_MONITOR,),
               maxlen=50_000),
    StreamSpec(Stream.EXECUTION_RESULT, m.ExecutionResult, (S.APPLY_LAYER,),
               groups=(S.GOVERNOR, S.HARVEST_BRAIN, S.POSITION_MONITOR), maxlen=50_000),
    StreamSpec(Stream.HARVEST_PROPOSAL, m.HarvestProposal, (S.HARVEST_PROPOSAL,), groups=(S.EXITBRAIN,),
               maxlen=10_000),
    StreamSpec(Stream.TRADE_CLOSED, m.TradeClosed, (S.HARVEST_BRAIN,), groups=(S.GOVERNOR,), maxlen=50_000),
    StreamSpec(Stream.EXITBRAIN_PNL, m.ExitbrainPnl, (S.EXITBRAIN,), maxlen=10_000),
    StreamSpec(Stream.POSITION_SNAPSHOT, m.PositionSnapshot, (S.POSITION_MONITOR,), maxlen=10_000),
    StreamSpec(Stream.RECONCILE_EVENTS, m.ReconcileEvent, (S.POSITION_MONITOR,), maxlen=10_000),
    StreamSpec(Stream.GOVERNOR_EVENTS, m.GovernorEvent, (S.GOVERNOR, S.QT), maxlen=10_000),  # qt: ess/policy
    StreamSpec(Stream.POLICY_AUDIT, m.PolicyAudit, (S.INTENT_BRIDGE,), maxlen=10_000),
    StreamSpec(Stream.ALERTS, m.AlertEvent, (S.GOVERNOR, S.APPLY_LAYER, S.POSITION_MONITOR), maxlen=10_000),
)

DLQ_MAXLEN = 10_000


def _dead_letter_specs(base: tuple[StreamSpec, ...]) -> tuple[StreamSpec, ...]:
    return tuple(
        StreamSpec(spec.name + ".dlq", m.DeadLetter, spec.groups, maxlen=DLQ_MAXLEN, dead_letter_of=spec.name)
        for spec in base
        if spec.grouped
    )


STREAMS: dict[str, StreamSpec] = {spec.name: spec for spec in _BASE + _dead_letter_specs(_BASE)}


def get(name: str) -> StreamSpec:
    """The registered stream ``name``; KeyError names it when it is not registered."""
    try:
        return STREAMS[name]
    except KeyError:
        raise KeyError(f"stream not in the registry: {name!r}") from None


def by_key(key: str) -> StreamSpec | None:
    """The registered stream with Redis key ``key``, if any."""
    try:
        return STREAMS.get(keys.stream_name(key))
    except ValueError:
        return None


def all_streams() -> Iterator[StreamSpec]:
    return iter(STREAMS.values())


def grouped_streams() -> Iterator[StreamSpec]:
    return (spec for spec in STREAMS.values() if spec.grouped)


def consumed_by(service: str) -> tuple[StreamSpec, ...]:
    """The streams ``service`` reads through its consumer group."""
    return tuple(spec for spec in STREAMS.values() if service in spec.groups)


def produced_by(service: str) -> tuple[StreamSpec, ...]:
    return tuple(spec for spec in STREAMS.values() if service in spec.producers)


def contract_of(name: str) -> type[Message]:
    return get(name).contract
