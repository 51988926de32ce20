"""End to end with real processes (issue 4): the synthetic market → marketdata → trading_bot →
intent_bridge → apply_layer on the paper exchange opens positions; tripping the kill switch stops new
entries while an exit still runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from common import keys
from common.contracts import Action, ApplyResult, Decision, TradeIntent, decode
from common.positions import PositionRecord
from common.streams import Stream
from ops.redis_server import free_port
from tests.e2e.fleet import fleet
from tests.helpers import poll_sync
from tests.integration.cli.qt import qt

SERVICES = ["governor", "marketdata", "trading_bot", "intent_bridge", "apply_layer"]


def results(client: redis.Redis) -> list[ApplyResult]:
    return [decode(ApplyResult, f) for _, f in client.xrange(keys.stream(Stream.APPLY_RESULT))]


def positions(client: redis.Redis) -> list[PositionRecord]:
    found = []
    for key in client.scan_iter(match=keys.position_pattern()):
        symbol = keys.symbol_of_position_key(key)
        if symbol:
            found.append(PositionRecord.from_hash(client.hgetall(key)))
    return found


@pytest.mark.timeout(300)
def test_market_to_positions_and_the_kill_switch(redis_url: str, tmp_path: Path) -> None:
    """Intents from the fallback model become plans and paper positions whose hashes carry the entry plan;
    after `qt ess trip` every new entry is SKIP ess_tripped, and `qt close` still executes."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    env = {"QT_MARKETDATA__TICK_INTERVAL_MS": "50", "QT_MARKETDATA__TIME_FACTOR": "20", "QT_APPLY__COOLDOWN_S": "0",
           "QT_SIGNAL__MIN_CONFIDENCE": "0.5", "QT_SIGNAL__REPEAT_AFTER_KLINES": "1",
           "QT_HTTP__PORTS__TRADING_BOT": str(free_port()), "QT_HTTP__AI_ENGINE_URL": "http://127.0.0.1:9"}
    with fleet(redis_url, tmp_path, SERVICES, **env):
        poll_sync(lambda: any(r.action is Action.ENTRY_PROPOSED and r.decision is Decision.EXECUTE
                              for r in results(client)), timeout_s=120, interval_s=0.2)
        opened = positions(client)
        assert opened, "an executed entry leaves a position hash"
        intents = {decode(TradeIntent, f).intent_id for _, f in client.xrange(keys.stream(Stream.TRADE_INTENT))}
        for p in opened:
            assert p.plan_id and p.sl_order_id == f"qt-{p.plan_id}-sl" and p.quantity > 0
        assert intents, "the bot published intents"

        tripped = qt(redis_url, "ess", "trip", "--reason", "e2e")
        assert tripped.returncode == 0, tripped.stdout + tripped.stderr
        mark = len(results(client))
        poll_sync(lambda: any(r.action is Action.ENTRY_PROPOSED for r in results(client)[mark:]), timeout_s=120,
                  interval_s=0.2)
        later = [r for r in results(client)[mark:] if r.action is Action.ENTRY_PROPOSED]
        assert later and all((r.decision, r.error) == (Decision.SKIP, "ess_tripped") for r in later)

        symbol = positions(client)[0].symbol
        done = qt(redis_url, "close", symbol)
        assert done.returncode == 0, done.stdout
        poll_sync(lambda: any(r.action is Action.FULL_CLOSE_PROPOSED and r.decision is Decision.EXECUTE
                              for r in results(client)[mark:]), timeout_s=30, interval_s=0.2)
        assert symbol not in {p.symbol for p in positions(client)}
        entries = [r for r in results(client) if r.action is Action.ENTRY_PROPOSED]
        print(f"\ne2e entries: intents={len(intents)} entry_results={len(entries)} "
              f"executed={sum(r.decision is Decision.EXECUTE for r in entries)} "
              f"skipped_after_trip={len(later)} closed={symbol}")
