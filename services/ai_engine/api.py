"""ai_engine's HTTP routes: ``POST /predict`` and ``/health`` (``/metrics`` is mounted by the runner)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.ai_engine.predictor import ModelStore, predict

PREDICTIONS = Counter("qt_ai_engine_predictions_total", "Predictions answered, by side", ["side"])
NOT_READY = Counter("qt_ai_engine_not_ready_total", "Predictions refused because no model is loaded")

Cell = float | int | str


class PredictRequest(BaseModel):
    """Recent closed klines of one symbol, oldest first, as Binance kline rows."""

    model_config = ConfigDict(extra="forbid")

    symbol: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    interval: Annotated[str, StringConstraints(pattern=r"^[0-9]+[smhdwM]$")] = "1m"
    klines: Annotated[list[list[Cell]], Field(min_length=1, max_length=5000)]


class PredictResponse(BaseModel):
    symbol: str
    side: str
    confidence: float
    p_up: float
    model: str
    version: int
    horizon: int


def build_app(store: ModelStore, health: Callable[[], dict[str, object]]) -> FastAPI:
    app = FastAPI(title="ai_engine")

    @app.get("/health")
    def get_health() -> dict[str, Any]:
        current = store.current
        return {**health(), "ready": current is not None,
                "model": current.describe() if current is not None else None,
                "model_dir": str(store.directory)}

    @app.post("/predict")
    def post_predict(request: PredictRequest) -> PredictResponse:
        trained = store.current
        if trained is None:
            NOT_READY.inc()
            raise HTTPException(status_code=503, detail="not ready")
        try:
            prediction = predict(trained, request.klines)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from e
        PREDICTIONS.labels(prediction.side.value).inc()
        return PredictResponse(symbol=request.symbol, side=prediction.side.value,
                               confidence=prediction.confidence, p_up=prediction.p_up, model=prediction.model,
                               version=prediction.version, horizon=prediction.horizon)

    return app
