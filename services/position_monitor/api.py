"""position_monitor's HTTP API (127.0.0.1:8005 by default). Every route is read-only — no token — and
only delegates to :class:`services.position_monitor.queries.Queries`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.position_monitor.queries import (
    HealthView,
    PnlView,
    PositionView,
    Queries,
    ReconcileView,
    ResultsView,
    TradeView,
)

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No position hash for the symbol"}}


def build_app(queries: Queries, health: Callable[[], HealthView]) -> FastAPI:
    app = FastAPI(
        title="Quantum Trader position_monitor",
        version="1",
        description="Positions, snapshots, PnL, closed trades and reconciliation of the fleet (read-only).",
    )

    @app.get("/positions", response_model=list[PositionView], summary="Every open position",
             description="The position hashes (written by apply_layer), each with its latest snapshot.")
    async def positions() -> list[PositionView]:
        return await queries.positions()

    @app.get("/positions/{symbol}", response_model=PositionView, responses=NOT_FOUND, summary="One open position",
             description="The position of one symbol as the exchange lists it (non-ASCII symbols are "
                         "URL-encoded), 404 when none is open.")
    async def position(symbol: Annotated[str, Path(min_length=1, max_length=64)]) -> PositionView:
        found = await queries.position(symbol)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no open position for {symbol}")
        return found

    @app.get("/pnl", response_model=PnlView, summary="Account and per-symbol PnL",
             description="The account ledger and each symbol's ledger as harvest_brain booked them, with the "
                         "unrealized PnL of open positions. Once every trade is closed the account's "
                         "realized_pnl equals the sum of realized_pnl over trade.closed.")
    async def pnl() -> PnlView:
        return await queries.pnl()

    @app.get("/trades", response_model=list[TradeView], summary="Closed trades, newest first",
             description="Entries of trade.closed, newest first.")
    async def trades(limit: Annotated[int, Query(ge=1, le=1000, description="How many")] = 50) -> list[TradeView]:
        return await queries.trades(limit)

    @app.get("/reconcile", response_model=ReconcileView, summary="The last reconciliation",
             description="The last comparison of the position hashes with the exchange: open drift and "
                         "what the pass published.")
    async def reconcile() -> ReconcileView:
        return queries.reconcile()

    @app.get("/results", response_model=ResultsView, summary="Recent executor results",
             description="Recent apply.result and execution.result entries, newest first, and counts by "
                         "decision and fill kind since the service started.")
    async def results(limit: Annotated[int, Query(ge=1, le=10_000, description="How many")] = 50) -> ResultsView:
        return queries.results(limit)

    @app.get("/health", response_model=HealthView, summary="Liveness",
             description="Healthy while every loop made progress within the last minute.")
    async def health_route() -> HealthView:
        return health()

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics",
             description="The process's metrics in Prometheus' text format.",
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
