"""trading_bot's HTTP routes: ``/health``, ``GET /signals``, ``POST /intents`` (``/metrics`` is mounted
by the runner). Routes only delegate to the bot."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse

from common.config import Settings
from common.contracts import ContractError, TradeIntent, decode, new_trace_id, now_ms
from common.ids import intent_id
from common.streams import Service
from services.trading_bot.bot import Bot

MANUAL_MODEL = "manual"
#: envelope fields the bot sets itself on a manual intent
_ENVELOPE = ("v", "ts", "source")


def check_token(settings: Settings, authorization: str | None) -> None:
    """``Authorization: Bearer <api_token>``: 503 when no token is configured, 401 when missing or wrong."""
    token = settings.api_token.get_secret_value()
    if not token:
        raise HTTPException(status_code=503, detail="no api token configured (QT_API_TOKEN)")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(status_code=401, detail="a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})


def manual_intent(body: dict[str, Any], now: int) -> TradeIntent:
    """A manual intent from a JSON body of TradeIntent fields; the bot sets the envelope, a fresh
    trace_id (unless one is given), ``model=manual`` and a deterministic intent_id (unless given).
    Raises ContractError naming the first bad field."""
    fields: dict[str, str] = {k: _text(v) for k, v in body.items() if k not in _ENVELOPE}
    fields["source"] = Service.TRADING_BOT
    fields.setdefault("trace_id", new_trace_id())
    fields.setdefault("model", MANUAL_MODEL)
    fields.setdefault("intent_id", intent_id(fields.get("symbol", ""), now, fields["model"]))
    return decode(TradeIntent, fields)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def build_app(bot: Bot, settings: Settings, health: Callable[[], dict[str, object]]) -> FastAPI:
    app = FastAPI(title="trading_bot")

    @app.get("/health")
    def get_health() -> dict[str, Any]:
        return {**health(), "ai_engine": bot.ai_status or "unknown", "windows": bot.windows.counts(),
                "last_kline_at": bot.last_kline_at, "intents_published": bot.intents_published}

    @app.get("/signals")
    def get_signals(limit: Annotated[int, Query(ge=1, le=10_000)] = 50) -> dict[str, Any]:
        return {"signals": bot.recent_signals(limit)}

    @app.post("/intents", status_code=201)
    async def post_intent(body: Annotated[dict[str, Any], Body()],
                          authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
        check_token(settings, authorization)
        try:
            intent = manual_intent(body, now_ms())
        except ContractError as e:
            return JSONResponse(status_code=422, content={"detail": str(e), "field": e.field, "problem": e.problem})
        record = await bot.manual(intent)
        return JSONResponse(status_code=201, content={"published": True, "intent_id": intent.intent_id,
                                                      "trace_id": intent.trace_id, "signal": record.to_dict()})

    return app
