"""trading_bot's decisions over a real Redis, in-process: ai_engine answering, slow, not ready; the
fallback; sizing from the ledger's equity; the manual-intent endpoint's 503 without a token."""

from __future__ import annotations

import time
from decimal import Decimal

from fastapi.testclient import TestClient
from redis.asyncio import Redis

from common import keys
from common.books import account_to_hash
from common.config import SignalSettings, load_settings
from common.contracts import TradeIntent, decode, encode
from common.maths.ledger import Account
from common.streams import Stream
from services.trading_bot.ai_client import AiClient
from services.trading_bot.api import build_app
from services.trading_bot.bot import Bot, SignalRecord
from services.trading_bot.signals import FALLBACK_MODEL
from tests.helpers import hex16, run
from tests.integration.signals.fake_engine import FakeEngine
from tests.integration.signals.klines import set_rules, trend

AI_REPLY = {"symbol": "BTCUSDT", "side": "SELL", "confidence": 0.9, "p_up": 0.1, "model": "ai-logreg",
            "version": 3, "horizon": 5}


async def decide(redis_url: str, engine_url: str | None, **signal: object) -> tuple[SignalRecord | None,
                                                                                    list[TradeIntent], float]:
    """Seed 40 rising klines, then one more as a new entry: the decision, the intents, the seconds it took."""
    settings = load_settings(redis_url=redis_url, symbols="BTCUSDT", signal=SignalSettings(**signal))  # type: ignore[arg-type]
    redis = Redis.from_url(redis_url, decode_responses=True)
    ai = AiClient(engine_url, settings.signal.ai_timeout_ms) if engine_url else None
    try:
        await set_rules(redis)
        bot = Bot(redis, settings, ai)
        assert bot.windows.seed(trend(40)) == 40
        [kline] = trend(1, first=40)
        started = time.monotonic()
        record = await bot.on_entry("1-0", encode(kline))
        took = time.monotonic() - started
        entries = await redis.xrange(keys.stream(Stream.TRADE_INTENT))
        return record, [decode(TradeIntent, fields) for _, fields in entries], took
    finally:
        if ai is not None:
            await ai.aclose()
        await redis.aclose()


def test_engine_answer_is_used_and_sized_from_equity(redis_url: str) -> None:
    """When ai_engine answers, its side and confidence make the intent (model ai-logreg-v3); the margin is
    2 % of the ledger's equity (5000 -> 100.00); the engine got the 41 klines of the window."""
    async def scenario() -> tuple[SignalRecord | None, list[TradeIntent], float]:
        redis = Redis.from_url(redis_url, decode_responses=True)
        account = Account(equity=Decimal("5000"), realized_pnl=Decimal(0), fees=Decimal(0),
                          peak_equity=Decimal("5000"), drawdown=Decimal(0), day="2026-01-01",
                          day_start_equity=Decimal("5000"))
        await redis.hset(keys.ledger_account(), mapping=account_to_hash(account, 1))  # type: ignore[arg-type]
        await redis.aclose()
        return await decide(redis_url, engine.url)

    with FakeEngine(reply=AI_REPLY) as engine:
        record, intents, _ = run(scenario())
    assert record is not None and record.published and record.ai == "answered"
    [intent] = intents
    assert intent.side.value == "SELL" and intent.confidence == 0.9 and intent.model == "ai-logreg-v3"
    assert intent.position_size_usd == Decimal("100.00") and intent.leverage == 10
    assert intent.intent_id == hex16(f"BTCUSDT|{trend(1, first=40)[0].open_time}|ai-logreg-v3")
    assert intent.take_profit < intent.entry_price < intent.stop_loss
    [request] = engine.requests
    assert request["symbol"] == "BTCUSDT" and len(request["klines"]) == 41
    assert request["klines"][-1][4] == "54100.0"


def test_slow_engine_falls_back_within_the_timeout(redis_url: str) -> None:
    """An engine slower than ai_timeout_ms (300 ms) is abandoned at the deadline: the fallback decides
    (BUY on the rising series) and the whole decision takes well under the engine's 2 s."""
    with FakeEngine(reply=AI_REPLY, delay_s=2.0) as engine:
        record, intents, took = run(decide(redis_url, engine.url, ai_timeout_ms=300))
    assert record is not None and record.ai == "timeout" and record.model == FALLBACK_MODEL
    assert 0.29 < took < 0.8
    [intent] = intents
    assert intent.model == FALLBACK_MODEL and intent.side.value == "BUY"
    assert intent.position_size_usd == Decimal("200.00")  # no ledger yet: 2 % of default_balance_usd
    assert intent.regime == "UNKNOWN"


def test_engine_not_ready_falls_back(redis_url: str) -> None:
    """A 503 "not ready" engine is noted as not_ready and the fallback decides."""
    with FakeEngine(status=503, reply={"detail": "not ready"}) as engine:
        record, intents, _ = run(decide(redis_url, engine.url))
    assert record is not None and record.ai == "not_ready" and record.model == FALLBACK_MODEL
    assert len(intents) == 1


def test_unsure_engine_makes_no_intent(redis_url: str) -> None:
    """An engine answer below min_confidence (0.52 < 0.55) is the decision: no intent, and no fallback."""
    with FakeEngine(reply={**AI_REPLY, "confidence": 0.52}) as engine:
        record, intents, _ = run(decide(redis_url, engine.url))
    assert record is not None and not record.published and record.reason == "below_min_confidence"
    assert record.model == "ai-logreg-v3" and intents == []


def test_manual_intents_refused_without_a_configured_token(redis_url: str) -> None:
    """With no api_token configured POST /intents answers 503 and publishes nothing."""
    settings = load_settings(redis_url=redis_url)
    redis = Redis.from_url(redis_url, decode_responses=True)
    app = build_app(Bot(redis, settings, None), settings, lambda: {})
    with TestClient(app) as client:
        answer = client.post("/intents", json={"symbol": "BTCUSDT"}, headers={"Authorization": "Bearer x"})
    assert answer.status_code == 503
    assert run(_count_intents(redis_url)) == 0


async def _count_intents(redis_url: str) -> int:
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        return int(await redis.xlen(keys.stream(Stream.TRADE_INTENT)))
    finally:
        await redis.aclose()


def test_signals_published_once_per_side_until_repeat(redis_url: str) -> None:
    """On a steady rise the bot publishes the first BUY, then records 'repeat' for the next 14 klines and
    publishes again on the 15th kline after (the cooldown)."""
    async def scenario() -> list[SignalRecord]:
        settings = load_settings(redis_url=redis_url, symbols="BTCUSDT")
        redis = Redis.from_url(redis_url, decode_responses=True)
        try:
            await set_rules(redis)
            bot = Bot(redis, settings, None)
            bot.windows.seed(trend(40))
            records = []
            for i, kline in enumerate(trend(16, first=40)):
                record = await bot.on_entry(f"{i + 1}-0", encode(kline))
                assert record is not None
                records.append(record)
            return records
        finally:
            await redis.aclose()

    records = run(scenario())
    assert [r.published for r in records] == [True] + [False] * 14 + [True]
    assert {r.reason for r in records[1:15]} == {"repeat"}
    assert all(r.ai == "disabled" and r.side == "BUY" for r in records)
