"""The operator's ``qt`` commands against a real Redis: their output and what they write."""

from __future__ import annotations

import json
from decimal import Decimal

import redis

from common import keys
from common.books import account_to_hash
from common.contracts import (
    ApplyPlan,
    ApplyResult,
    ExecutionResult,
    PlanStep,
    TradeClosed,
    decode,
    encode,
)
from common.contracts.enums import PositionSide
from common.ess import tripped
from common.market import price_mapping
from common.maths.ledger import Account
from common.positions import PositionRecord
from common.streams import Stream
from tests.helpers import entry_plan, hex16, intent
from tests.integration.cli.qt import qt

NOW = 1_795_000_000_000
D = Decimal


_clock = iter(range(NOW, NOW + 1_000_000, 7))


def add(client: redis.Redis, stream: str, message: object) -> None:
    """XADD with ids a few ms apart, as a real chain's entries are."""
    client.xadd(keys.stream(stream), encode(message), id=f"{next(_clock)}-0")  # type: ignore[arg-type]


def seed_chain(client: redis.Redis) -> tuple[str, str]:
    """intent → entry plan → result → fill → (exitbrain's own trace) exit plan → result → fill →
    trade.closed, plus an unrelated chain. Returns (intent_id, entry plan_id)."""
    first = intent(1)
    plan = entry_plan(first)
    add(client, Stream.TRADE_INTENT, first)
    add(client, Stream.APPLY_PLAN, plan)
    add(client, Stream.APPLY_RESULT, ApplyResult(source="apply_layer", trace_id=first.trace_id, plan_id=plan.plan_id,
                                                 symbol="BTCUSDT", action="ENTRY_PROPOSED", decision="EXECUTE",
                                                 executed=True, filled_qty=D("0.02")))
    add(client, Stream.EXECUTION_RESULT, ExecutionResult(
        source="apply_layer", trace_id=first.trace_id, fill_id="f1", plan_id=plan.plan_id, symbol="BTCUSDT",
        side="BUY", qty=D("0.02"), price=D("100"), fee=D("0.001"), reduce_only=False, kind="ENTRY",
        position_after=D("0.02"), position_plan_id=plan.plan_id))
    exit_trace, exit_id = hex16("exit-trace"), hex16("exit-plan")
    add(client, Stream.APPLY_PLAN, ApplyPlan(
        source="exitbrain", trace_id=exit_trace, plan_id=exit_id, symbol="BTCUSDT", action="FULL_CLOSE_PROPOSED",
        position_plan_id=plan.plan_id, reason="take_profit", steps=[PlanStep(step="CLOSE_FULL", pct=100.0)]))
    add(client, Stream.EXECUTION_RESULT, ExecutionResult(
        source="apply_layer", trace_id=exit_trace, fill_id="f2", plan_id=exit_id, symbol="BTCUSDT", side="SELL",
        qty=D("0.02"), price=D("104"), fee=D("0.001"), reduce_only=True, kind="EXIT", position_after=D("0"),
        position_plan_id=plan.plan_id, reason="take_profit"))
    add(client, Stream.TRADE_CLOSED, TradeClosed(
        source="harvest_brain", trace_id=exit_trace, position_plan_id=plan.plan_id, symbol="BTCUSDT", side="LONG",
        qty=D("0.02"), entry_price=D("100"), exit_price=D("104"), realized_pnl=D("0.08"), fees=D("0.002"),
        pnl_net=D("0.078"), opened_at=NOW, closed_at=NOW + 1, exit_reason="take_profit"))
    other = intent(2, "ETHUSDT")
    add(client, Stream.TRADE_INTENT, other)
    add(client, Stream.APPLY_PLAN, entry_plan(other))
    return first.intent_id, plan.plan_id


def test_trace_follows_an_intent_to_its_trade_closed(redis_url: str) -> None:
    """qt trace <intent_id> lists the whole chain in time order — through the exit's own trace to
    trade.closed — and nothing of another chain."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    intent_id, plan_id = seed_chain(client)
    done = qt(redis_url, "trace", intent_id, "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["stream"] for r in rows] == ["trade.intent", "apply.plan", "apply.result", "execution.result",
                                          "apply.plan", "execution.result", "trade.closed"]
    assert rows[-1]["exit_reason"] == "take_profit" and rows[-1]["position_plan_id"] == plan_id
    assert all(r.get("symbol") == "BTCUSDT" for r in rows)
    assert qt(redis_url, "trace", "0" * 16).returncode == 1


def test_positions_pnl_and_trades(redis_url: str) -> None:
    """positions shows mark and unrealized PnL; pnl the account and per-symbol books; trades the closed
    trades, newest first."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed_chain(client)
    pos = PositionRecord("币安人生USDT", PositionSide.SHORT, D("1000"), D("0.15"), 5, D("0.16"), D("0.14"),
                         "e" * 16, NOW, NOW, "f" * 16)
    client.hset(keys.position(pos.symbol), mapping=pos.to_hash())
    client.hset(keys.market_price(pos.symbol), mapping=price_mapping(D("0.14"), D("0.14"), NOW))
    client.hset(keys.ledger_account(), mapping=account_to_hash(
        Account(D("10012.5"), D("12.5"), D("1.5"), D("10020"), D("0.00074850"), "2026-11-25", D("10000")), NOW))
    client.hset(keys.position_ledger("BTCUSDT"), mapping={"realized_pnl": "0.08", "fees": "0.002", "trades": "1",
                                                          "wins": "1", "losses": "0"})
    positions = qt(redis_url, "positions").stdout
    assert "open positions: 1" in positions
    row = next(line for line in positions.splitlines() if "币安人生USDT" in line)
    assert "SHORT" in row and "10.00" in row  # (0.14 - 0.15) x -1000
    pnl = qt(redis_url, "pnl").stdout
    assert "equity 10012.5  realized 12.5  fees 1.5" in pnl and "drawdown 0.00074850" in pnl
    assert next(line for line in pnl.splitlines() if "BTCUSDT" in line).split("│")[2].strip() == "0.08"
    trades = qt(redis_url, "trades").stdout
    assert "closed trades: 1" in trades and "take_profit" in trades and "0.078" in trades


def test_close_publishes_a_manual_exit_plan(redis_url: str) -> None:
    """qt close SYMBOL --pct 40 publishes one PARTIAL_CLOSE_PROPOSED naming the position's plan, as qt;
    with no position it says so and exits 1."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    pos = PositionRecord("ETHUSDT", PositionSide.LONG, D("1"), D("3000"), 10, None, None, "a" * 16, NOW, NOW,
                         "b" * 16)
    client.hset(keys.position("ETHUSDT"), mapping=pos.to_hash())
    done = qt(redis_url, "close", "ETHUSDT", "--pct", "40")
    assert done.returncode == 0, done.stderr
    [(_, fields)] = client.xrange(keys.stream(Stream.APPLY_PLAN))
    plan = decode(ApplyPlan, fields)
    assert (plan.action.value, plan.position_plan_id, plan.close_pct, plan.reason.value if plan.reason else "",
            plan.source) == ("PARTIAL_CLOSE_PROPOSED", "a" * 16, 40.0, "manual", "qt")
    assert plan.plan_id in done.stdout
    missing = qt(redis_url, "close", "SOLUSDT")
    assert missing.returncode == 1 and "no open position for SOLUSDT" in missing.stdout


def test_contract_check_finds_the_bad_entry(redis_url: str) -> None:
    """contract-check validates the newest entries of every stream and names the bad one."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed_chain(client)
    assert qt(redis_url, "contract-check").returncode == 0
    bad = dict(encode(intent(9)))
    del bad["side"]
    entry_id = client.xadd(keys.stream(Stream.TRADE_INTENT), bad)
    done = qt(redis_url, "contract-check")
    assert done.returncode == 1
    assert f"{entry_id}: TradeIntent.side: missing" in done.stdout
    assert "1 invalid" in done.stdout


def test_prune_consumers_and_trim(redis_url: str) -> None:
    """prune-consumers removes idle consumers with nothing pending and keeps the others; trim refuses to
    drop entries a group has not read."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    key = keys.stream(Stream.TRADE_INTENT)
    client.xgroup_create(key, "intent_bridge", id="0", mkstream=True)
    client.xgroup_createconsumer(key, "intent_bridge", "intent_bridge@gone")
    client.xadd(key, encode(intent(1)))
    client.xreadgroup("intent_bridge", "intent_bridge@busy", {key: ">"})
    done = qt(redis_url, "streams", "prune-consumers", "--idle-s", "0")
    assert "removed consumer intent_bridge@gone of trade.intent → intent_bridge" in done.stdout
    assert [c["name"] for c in client.xinfo_consumers(key, "intent_bridge")] == ["intent_bridge@busy"]
    trimmed = qt(redis_url, "streams", "trim")
    assert trimmed.returncode == 0 and "trade.intent: 0 dropped (ok)" in trimmed.stdout


def test_status_reports_a_tripped_kill_switch(redis_url: str) -> None:
    """status prints the kill switch with its reason and exits 1 while it is tripped."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset(keys.ess(), mapping=tripped("daily loss 5.2 %", "governor").to_hash())
    done = qt(redis_url, "status")
    assert done.returncode == 1
    assert "kill switch: TRIPPED (daily loss 5.2 %, by governor)" in done.stdout
    assert "SERVICE_DOWN" in done.stdout
