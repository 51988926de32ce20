"""Parity (issue 15): a slice of klines replayed through the real fleet — marketdata on
``QT_MARKET_SOURCE=replay:<file>`` in lockstep, trading_bot, intent_bridge, apply_layer on the paper
exchange, exitbrain, harvest_proposal, harvest_brain, the governor, each its own process on a real
Redis — and through the backtest gives the same trades: entry and exit times, sides, quantities, prices,
exit reasons, realized PnL and fees.

Both run the same settings, chosen where the fleet's clock and the backtest's cannot agree: the fleet
stamps fills and positions with the wall clock while it replays hours of klines in a minute, so the rules
that measure time are neutralised on both sides — no cooldown (``apply.cooldown_s = 0``), no age in the
kill score (``exit.w_age_penalty = 0``), loss limits that never trip (a UTC day is a wall-clock day in the
fleet) — and the services' one-second scans are off (they would re-evaluate at wall-clock moments the
replay cannot place). Protective orders are off: with them the paper exchange's trigger loop and
exitbrain race for the same crossing (the same fill either way; the reason could differ). Fleet times are
mapped to the replay's clock: each fill happened after the publication of the tick or kline that caused it
and before the next (lockstep), so it takes that event's time.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from backtest import synthetic
from backtest.config import BacktestConfig
from backtest.engine import run
from common import keys
from common.bus.inspect import parse_id
from common.config import load_settings
from common.contracts import TradeClosed, decode
from common.kline_files import load_kline_files
from common.klines import interval_ms
from common.streams import Service, Stream
from ops.redis_server import free_port
from services.marketdata import lockstep
from services.marketdata.replay import ReplaySource, ReplayTick
from tests.e2e.fleet import FAST, fleet
from tests.helpers import poll_sync

SYMBOL = "XRPUSDT"
INTERVAL = "5m"
KLINES = 260
SEED = 5  # a slice with stop-loss, kill-score and trailing-stop exits and a harvest
CONSUMERS = ["governor", "intent_bridge", "apply_layer", "harvest_brain", "exitbrain", "harvest_proposal",
             "trading_bot"]
#: the consumer groups the trading chain runs through: waited for before marketdata starts
GROUPS = [(Stream.TRADE_INTENT, Service.INTENT_BRIDGE), (Stream.APPLY_PLAN, Service.APPLY_LAYER),
          (Stream.EXECUTION_RESULT, Service.HARVEST_BRAIN), (Stream.EXECUTION_RESULT, Service.GOVERNOR),
          (Stream.HARVEST_PROPOSAL, Service.EXITBRAIN), (Stream.TRADE_CLOSED, Service.GOVERNOR)]
POLICY = '''allowlist = ["XRPUSDT"]
[limits]
max_open_positions = 5
max_margin_per_trade_usd = "500"
max_total_notional_usd = "25000"
max_leverage = 20
daily_loss_limit_pct = "100"
max_drawdown_pct = "100"
'''


def compared(t: TradeClosed, opened_at: int, closed_at: int) -> dict[str, Any]:
    return {"side": t.side.value, "qty": t.qty, "opened_at": opened_at, "closed_at": closed_at,
            "entry_price": t.entry_price, "exit_price": t.exit_price, "realized_pnl": t.realized_pnl,
            "fees": t.fees, "pnl_net": t.pnl_net, "exit_reason": t.exit_reason}


def replay_clock(client: redis.Redis, path: Path) -> tuple[list[int], list[int]]:
    """(wall ms of each published market event, its time on the replay's clock), in publication order."""
    length = interval_ms(INTERVAL)
    events = [e.ts if isinstance(e, ReplayTick) else e.open_time + length
              for _, e in ReplaySource(path, SYMBOL, INTERVAL, 0).events()]
    published = sorted([parse_id(str(i)) for i, _ in client.xrange(keys.stream(Stream.MARKET_TICK))] +
                       [parse_id(str(i)) for i, _ in client.xrange(keys.stream(Stream.MARKET_KLINES))])
    assert len(published) == len(events), "every event published once, none trimmed"
    return [ms for ms, _ in published], events


@pytest.mark.timeout(900)
def test_the_fleet_and_the_backtest_make_the_same_trades(redis_url: str, tmp_path: Path) -> None:
    params = synthetic.MarketParams(start_price=0.6, tick="0.0001", sigma=0.004)
    klines = {SYMBOL: synthetic.generate(SYMBOL, KLINES, seed=SEED, params=params)}
    [data] = synthetic.write_klines(tmp_path / "data", klines)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")

    # the backtest
    base = load_settings(symbols=(SYMBOL,), policy_file=str(policy))
    settings = base.model_copy(update={
        "apply": base.apply.model_copy(update={"cooldown_s": 0, "protective_orders": False}),
        "exit": base.exit.model_copy(update={"w_age_penalty": 0.0})})
    result = run(load_kline_files([data]), BacktestConfig.from_settings(settings))
    expected = {t.position_plan_id: compared(t, t.opened_at, t.closed_at) for t in result.trades}
    assert len(expected) >= 5, "the slice trades enough to compare"

    # the fleet
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    env = {**FAST, "QT_SYMBOLS": SYMBOL, "QT_MARKET_SOURCE": f"replay:{data}", "QT_MARKETDATA__REPLAY_SPEED": "0",
           "QT_MARKETDATA__REPLAY_SYMBOL": SYMBOL, "QT_MARKETDATA__REPLAY_INTERVAL": INTERVAL,
           "QT_MARKETDATA__REPLAY_LOCKSTEP": "true", "QT_POLICY_FILE": str(policy), "QT_APPLY__COOLDOWN_S": "0",
           "QT_APPLY__PROTECTIVE_ORDERS": "false", "QT_EXIT__W_AGE_PENALTY": "0",
           "QT_EXIT__EVALUATE_INTERVAL_S": "1000000", "QT_HTTP__AI_ENGINE_URL": "http://127.0.0.1:9",
           "QT_HTTP__PORTS__TRADING_BOT": str(free_port())}
    with fleet(redis_url, tmp_path, CONSUMERS, **env) as procs:
        def consuming() -> bool:
            for stream, group in GROUPS:
                try:
                    found = {g["name"]: g for g in client.xinfo_groups(keys.stream(stream))}
                except redis.ResponseError:
                    return False
                if not found.get(group, {}).get("consumers"):
                    return False
            return asyncio.run(_readers(redis_url)) >= lockstep.latest_readers()

        poll_sync(consuming, timeout_s=120, interval_s=0.2)
        with fleet(redis_url, tmp_path, ["marketdata"], **env):
            poll_sync(lambda: client.xlen(keys.stream(Stream.MARKET_KLINES)) >= KLINES, timeout_s=780, interval_s=0.5)
            asyncio.run(_idle(redis_url))
        assert all(p.alive for p in procs.values())
        walls, times = replay_clock(client, data)

        def replayed(wall_ms: int) -> int:
            return times[bisect.bisect_right(walls, wall_ms) - 1]

        closed = [decode(TradeClosed, f) for _, f in client.xrange(keys.stream(Stream.TRADE_CLOSED))]
    got = {t.position_plan_id: compared(t, replayed(t.opened_at), replayed(t.closed_at)) for t in closed}
    (tmp_path / "parity.json").write_text(json.dumps({"backtest": expected, "fleet": got}, default=str, indent=1))
    assert set(got) == set(expected), f"fleet only {set(got) - set(expected)}, backtest only {set(expected) - set(got)}"
    differences = {plan: {k: (got[plan][k], v) for k, v in trade.items() if got[plan][k] != v}
                   for plan, trade in expected.items() if got[plan] != trade}
    assert differences == {}, f"(fleet, backtest) per differing field: {differences}"
    cents = Decimal("0.01")
    assert sum((t["realized_pnl"] for t in got.values()), Decimal(0)).quantize(cents) == \
        sum((t["realized_pnl"] for t in expected.values()), Decimal(0)).quantize(cents)
    print(f"\nparity: {len(got)} trades of {KLINES} {INTERVAL} klines (seed {SEED}) equal in the fleet and the "
          f"backtest: {sorted({t['exit_reason'] for t in got.values()})}")


async def _readers(url: str) -> int:
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    try:
        return await lockstep.readers_waiting(client)
    finally:
        await client.aclose()


async def _idle(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    try:
        await asyncio.wait_for(lockstep.wait_idle(client), timeout=60)
    finally:
        await client.aclose()
