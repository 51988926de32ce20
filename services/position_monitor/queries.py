"""The query layer behind the API: reads the hashes and streams, returns the response models. The routes
in :mod:`services.position_monitor.api` only delegate here."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from common import keys
from common.contracts import ContractError, TradeClosed, decode
from common.positions import PositionRecord
from common.redis_client import hgetall
from common.store import all_positions, read_account, read_ledgers, read_position
from common.streams import Stream
from services.position_monitor.activity import Activity
from services.position_monitor.reconciler import Reconciler

ZERO = Decimal(0)


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class SnapshotView(_View):
    """position_monitor's last view of the position on the exchange."""

    position_amt: Decimal = Field(description="Signed quantity on the exchange (negative: short)")
    entry_price: Decimal = Field(description="The exchange's entry price")
    mark_price: Decimal = Field(description="Mark price at the snapshot")
    unrealized_pnl: Decimal = Field(description="(mark − entry) · position_amt, quote currency")
    leverage: int
    liquidation_price: Decimal
    synced_at: int = Field(description="Epoch ms of the snapshot")


class PositionView(_View):
    """A position hash (apply_layer's) with its latest snapshot."""

    symbol: str
    side: str = Field(description="LONG or SHORT")
    quantity: Decimal
    entry_price: Decimal
    leverage: int
    stop_loss: Decimal | None
    take_profit: Decimal | None
    plan_id: str = Field(description="The entry plan that opened the position")
    created_at: int
    updated_at: int
    trace_id: str
    snapshot: SnapshotView | None = Field(description="None until the first snapshot of the position")


class AccountView(_View):
    """``quantum:ledger:account`` as harvest_brain booked it."""

    equity: Decimal
    realized_pnl: Decimal = Field(description="Sum of realized PnL of every fill (gross of fees)")
    fees: Decimal
    peak_equity: Decimal
    drawdown: Decimal = Field(description="Fraction of the peak equity")
    day: str = Field(description="UTC day of day_start_equity")
    day_start_equity: Decimal


class SymbolPnlView(_View):
    """``quantum:position:ledger:{symbol}`` with the open position's unrealized PnL."""

    symbol: str
    realized_pnl: Decimal
    fees: Decimal
    trades: int
    wins: int
    losses: int
    last_fill_id: str
    updated_at: int
    unrealized_pnl: Decimal = Field(description="From the latest snapshot; 0 when flat")


class PnlView(_View):
    account: AccountView | None = Field(description="None until harvest_brain books its first fill")
    symbols: list[SymbolPnlView]
    unrealized_pnl: Decimal = Field(description="Sum over the snapshots of open positions")


class TradeView(_View):
    """A closed trade from ``trade.closed``."""

    entry_id: str = Field(description="The trade.closed stream entry")
    trace_id: str
    position_plan_id: str
    symbol: str
    side: str
    qty: Decimal
    entry_price: Decimal = Field(description="VWAP of the opening fills")
    exit_price: Decimal = Field(description="VWAP of the closing fills")
    realized_pnl: Decimal
    fees: Decimal
    pnl_net: Decimal
    opened_at: int
    closed_at: int
    exit_reason: str


class DriftView(_View):
    symbol: str
    kind: str = Field(description="MISSING_IN_REDIS, MISSING_ON_EXCHANGE, QTY_MISMATCH, SIDE_MISMATCH or RESOLVED")
    redis_qty: Decimal = Field(description="Signed quantity of the position hash (0: none)")
    exchange_qty: Decimal = Field(description="Signed quantity on the exchange (0: none)")


class DriftEventView(DriftView):
    action_taken: str = Field(description="reported, none (RESOLVED), or the remedy resolution=adopt names")


class ReconcileView(_View):
    """The last reconciliation pass."""

    at: int | None = Field(description="Epoch ms of the pass; None before the first")
    resolution: str = Field(description="report or adopt (monitor.resolution)")
    redis_positions: int
    exchange_positions: int
    drifts: list[DriftView] = Field(description="Drift open after the pass")
    events: list[DriftEventView] = Field(description="What the pass published (started and resolved drift)")


class RecentView(_View):
    stream: str
    entry_id: str
    ts: int
    symbol: str
    plan_id: str
    trace_id: str
    outcome: str = Field(description="apply.result: the decision; execution.result: the fill kind")
    detail: str


class ResultsView(_View):
    """Recent apply.result and execution.result entries, and the counts since start."""

    decisions: dict[str, int] = Field(description="apply.result seen, by decision")
    fills: dict[str, int] = Field(description="execution.result seen, by kind")
    recent: list[RecentView] = Field(description="Newest first")


class HealthView(_View):
    service: str
    instance: str
    healthy: bool
    started_at: int
    ts: int
    exchange: str
    last_snapshot_at: int | None
    last_reconcile_at: int | None
    open_drifts: int


def _decimal(fields: dict[str, str], name: str) -> Decimal:
    return Decimal(fields.get(name) or 0)


def _snapshot(fields: dict[str, str]) -> SnapshotView | None:
    if not fields:
        return None
    return SnapshotView(position_amt=_decimal(fields, "position_amt"), entry_price=_decimal(fields, "entry_price"),
                        mark_price=_decimal(fields, "mark_price"), unrealized_pnl=_decimal(fields, "unrealized_pnl"),
                        leverage=int(fields.get("leverage") or 1),
                        liquidation_price=_decimal(fields, "liquidation_price"),
                        synced_at=int(fields.get("synced_at") or 0))


class Queries:
    def __init__(self, redis: Redis, activity: Activity, reconciler: Reconciler) -> None:
        self.redis = redis
        self.activity = activity
        self.reconciler = reconciler

    async def _position_view(self, p: PositionRecord) -> PositionView:
        snapshot = _snapshot(await hgetall(self.redis, keys.position_snapshot(p.symbol)))
        return PositionView(symbol=p.symbol, side=p.side.value, quantity=p.quantity, entry_price=p.entry_price,
                            leverage=p.leverage, stop_loss=p.stop_loss, take_profit=p.take_profit,
                            plan_id=p.plan_id, created_at=p.created_at, updated_at=p.updated_at,
                            trace_id=p.trace_id, snapshot=snapshot)

    async def positions(self) -> list[PositionView]:
        held = await all_positions(self.redis)
        return [await self._position_view(held[s]) for s in sorted(held)]

    async def position(self, symbol: str) -> PositionView | None:
        held = await read_position(self.redis, symbol)
        return await self._position_view(held) if held is not None else None

    async def pnl(self) -> PnlView:
        account = await read_account(self.redis)
        rows: list[SymbolPnlView] = []
        for symbol, ledger in sorted((await read_ledgers(self.redis)).items()):
            snap = _snapshot(await hgetall(self.redis, keys.position_snapshot(symbol)))
            rows.append(SymbolPnlView(
                symbol=symbol, realized_pnl=ledger.realized_pnl, fees=ledger.fees, trades=ledger.trades,
                wins=ledger.wins, losses=ledger.losses, last_fill_id=ledger.last_fill_id,
                updated_at=ledger.updated_at, unrealized_pnl=snap.unrealized_pnl if snap else ZERO))
        unrealized = ZERO
        held = await all_positions(self.redis)
        for symbol in held:
            snap = _snapshot(await hgetall(self.redis, keys.position_snapshot(symbol)))
            unrealized += snap.unrealized_pnl if snap else ZERO
        view = None
        if account is not None:
            view = AccountView(equity=account.equity, realized_pnl=account.realized_pnl, fees=account.fees,
                               peak_equity=account.peak_equity, drawdown=account.drawdown, day=account.day,
                               day_start_equity=account.day_start_equity)
        return PnlView(account=view, symbols=rows, unrealized_pnl=unrealized)

    async def trades(self, limit: int) -> list[TradeView]:
        entries: Any = await self.redis.xrevrange(keys.stream(Stream.TRADE_CLOSED), count=limit)
        views: list[TradeView] = []
        for entry_id, fields in entries:
            try:
                t = decode(TradeClosed, fields)
            except ContractError:
                continue  # a malformed entry is the producer's fault; the others still show
            views.append(TradeView(entry_id=str(entry_id), trace_id=t.trace_id, position_plan_id=t.position_plan_id,
                                   symbol=t.symbol, side=t.side.value, qty=t.qty, entry_price=t.entry_price,
                                   exit_price=t.exit_price, realized_pnl=t.realized_pnl, fees=t.fees,
                                   pnl_net=t.pnl_net, opened_at=t.opened_at, closed_at=t.closed_at,
                                   exit_reason=t.exit_reason))
        return views

    def reconcile(self) -> ReconcileView:
        last = self.reconciler.last
        if last is None:
            return ReconcileView(at=None, resolution=self.reconciler.settings.resolution, redis_positions=0,
                                 exchange_positions=0, drifts=[], events=[])
        return ReconcileView(
            at=last.at, resolution=last.resolution, redis_positions=last.redis_positions,
            exchange_positions=last.exchange_positions,
            drifts=[DriftView(symbol=d.symbol, kind=d.kind.value, redis_qty=d.redis_qty, exchange_qty=d.exchange_qty)
                    for d in last.drifts],
            events=[DriftEventView(symbol=e.drift.symbol, kind=e.drift.kind.value, redis_qty=e.drift.redis_qty,
                                   exchange_qty=e.drift.exchange_qty, action_taken=e.action_taken)
                    for e in last.events],
        )

    def results(self, limit: int) -> ResultsView:
        recent = list(self.activity.recent)[::-1][:limit]
        return ResultsView(decisions=dict(self.activity.decisions), fills=dict(self.activity.fill_kinds),
                           recent=[RecentView(stream=r.stream, entry_id=r.entry_id, ts=r.ts, symbol=r.symbol,
                                              plan_id=r.plan_id, trace_id=r.trace_id, outcome=r.outcome,
                                              detail=r.detail) for r in recent])
