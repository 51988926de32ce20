"""trading_bot as a real process with ai_engine down: it seeds its window from the stream's history,
falls back to trend-following on the next closed kline, publishes a trade.intent that decodes, and
guards POST /intents with the bearer token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import redis

from common import keys
from common.contracts import TradeIntent, decode
from common.streams import Stream
from ops.redis_server import free_port
from services.trading_bot.signals import FALLBACK_MODEL
from tests.helpers import hex16, poll_sync, run
from tests.integration.processes import Proc
from tests.integration.signals.klines import send, set_rules, trend

TOKEN = "s3cret-token"


def test_bot_process_falls_back_and_publishes(redis_url: str, tmp_path: Path) -> None:
    """40 closed klines already on the stream (plus an open one) fill the window at start; the first new
    closed kline gives a fallback BUY intent at once (ai_engine is down), the next ones are repeats. The
    intent decodes as TradeIntent with the deterministic id. /signals lists the decisions newest first."""
    from redis.asyncio import Redis

    async def prepare() -> None:
        r = Redis.from_url(redis_url, decode_responses=True)
        await set_rules(r)
        await send(r, trend(40) + trend(1, first=40, closed=False))
        await r.aclose()

    run(prepare())
    port, dead = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    proc = Proc(["-m", "services.trading_bot"],
                {"REDIS_URL": redis_url, "QT_HTTP__PORTS__TRADING_BOT": str(port), "QT_SYMBOLS": "BTCUSDT",
                 "QT_HTTP__AI_ENGINE_URL": f"http://127.0.0.1:{dead}", "QT_SIGNAL__KLINE_BLOCK_MS": "100",
                 "QT_API_TOKEN": TOKEN}, tmp_path / "trading_bot.log").start()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        poll_sync(up, timeout_s=30)
        assert httpx.get(f"{base}/health", timeout=2).json()["windows"] == {"BTCUSDT:1m": 40}
        new = trend(3, first=40)

        async def more(kline: Any) -> None:
            r = Redis.from_url(redis_url, decode_responses=True)
            await send(r, [kline])
            await r.aclose()

        for n, kline in enumerate(new, start=1):  # one closed kline at a time, as a live market sends them
            run(more(kline))

            def decided(n: int = n) -> bool:
                return len(httpx.get(f"{base}/signals", timeout=2).json()["signals"]) >= n

            poll_sync(decided, timeout_s=15)
        entries = client.xrange(keys.stream(Stream.TRADE_INTENT))
        [intent] = [decode(TradeIntent, fields) for _, fields in entries]
        assert intent.side.value == "BUY" and intent.model == FALLBACK_MODEL
        assert intent.intent_id == hex16(f"BTCUSDT|{new[0].open_time}|{FALLBACK_MODEL}")
        assert intent.entry_price == new[0].close and intent.stop_loss < intent.entry_price < intent.take_profit
        assert intent.confidence >= 0.55 and intent.source == "trading_bot"
        signals = httpx.get(f"{base}/signals", params={"limit": 10}, timeout=2).json()["signals"]
        assert [s["open_time"] for s in signals] == [k.open_time for k in reversed(new)]
        assert [s["published"] for s in signals] == [False, False, True]
        assert {s["ai"] for s in signals} == {"down"} and signals[0]["reason"] == "repeat"
        assert signals[-1]["intent_id"] == intent.intent_id and signals[-1]["trace_id"] == intent.trace_id

        manual: dict[str, Any] = {"symbol": "ETHUSDT", "side": "SELL", "confidence": 0.8, "entry_price": "3000",
                                  "stop_loss": "3090", "take_profit": "2880", "position_size_usd": "200",
                                  "leverage": 10, "atr_pct": 0.01, "regime": "TREND"}
        url = f"{base}/intents"
        assert httpx.post(url, json=manual, timeout=2).status_code == 401
        assert httpx.post(url, json=manual, headers={"Authorization": "Bearer wrong"}, timeout=2).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        wrong_side = httpx.post(url, json={**manual, "stop_loss": "2900"}, headers=auth, timeout=2)
        assert wrong_side.status_code == 422 and "take_profit < entry_price < stop_loss" in wrong_side.json()["detail"]
        missing = httpx.post(url, json={k: v for k, v in manual.items() if k != "take_profit"}, headers=auth,
                             timeout=2)
        assert missing.status_code == 422 and missing.json()["field"] == "take_profit"
        assert client.xlen(keys.stream(Stream.TRADE_INTENT)) == 1
        created = httpx.post(url, json=manual, headers=auth, timeout=2)
        assert created.status_code == 201
        last = decode(TradeIntent, client.xrange(keys.stream(Stream.TRADE_INTENT))[-1][1])
        assert last.intent_id == created.json()["intent_id"] and last.model == "manual" and last.symbol == "ETHUSDT"
        assert last.trace_id == created.json()["trace_id"] != intent.trace_id
        assert proc.terminate() == 0
    finally:
        proc.kill()
        client.close()
