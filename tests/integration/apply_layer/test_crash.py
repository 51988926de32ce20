"""Crash test: apply_layer as a real process, SIGKILLed at random points while it works through 500
plans, restarted each time. Every plan gets exactly one apply.result of EXECUTE or a gate's SKIP (a
re-published plan gets duplicate_plan), the exchange holds exactly one order per executed plan and none
for the others, and every position hash equals the exchange's position."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from common import keys
from common.bus.effects import Publish, queue_ops
from common.contracts import ApplyPlan, ApplyResult, Decision, ExecutionResult, decode, now_ms
from common.market import price_mapping
from common.policy import Limits, Policy
from common.streams import Stream
from tests.helpers import poll_sync
from tests.integration.processes import Proc
from tests.plans import close, entry

D = Decimal
# symbol -> (price, entry quantity): notionals well above each symbol's minimum, margins small
BOOK = {
    "BTCUSDT": ("50000", "0.004"), "ETHUSDT": ("3000", "0.050"), "SOLUSDT": ("150", "2"),
    "XRPUSDT": ("0.6000", "200.0"), "ANKRUSDT": ("0.020000", "10000"), "RIVERUSDT": ("5.0000", "40.0"),
    "HYPEUSDT": ("30.000", "5.00"), "币安人生USDT": ("0.15000", "1000"),
}
ENV = {
    "QT_APPLY__COOLDOWN_S": "0", "QT_APPLY__ORDERS_PER_S": "1000", "QT_APPLY__ORDER_BURST": "1000",
    "QT_APPLY__SETTLE_INTERVAL_S": "3600", "QT_PAPER__LATENCY_MS": "40", "QT_PAPER__MAX_PRICE_AGE_MS": "3600000",
    "QT_BUS__BLOCK_MS": "100", "QT_BUS__CLAIM_IDLE_MS": "2000", "QT_BUS__BATCH_SIZE": "16",
    "QT_RUNTIME__HEARTBEAT_INTERVAL_S": "0.5", "QT_BINANCE__MAX_RETRIES": "3", "QT_BINANCE__BACKOFF_INITIAL_MS": "20",
}


def plans_for(total: int, rng: random.Random) -> list[ApplyPlan]:
    """Cycles of entry -> partial close -> full close per symbol, interleaved across symbols."""
    queues: dict[str, list[ApplyPlan]] = {}
    per_symbol = total // len(BOOK) + 3
    for symbol, (price, qty) in BOOK.items():
        plans: list[ApplyPlan] = []
        for cycle in range(per_symbol // 3 + 1):
            name = f"{symbol}-{cycle}"
            opened = entry(name, symbol=symbol, qty=qty, price=price, leverage=5)
            plans += [opened, close(name + "-half", opened.plan_id, symbol=symbol, pct=50.0, reason="harvest_tp1"),
                      close(name + "-full", opened.plan_id, symbol=symbol, reason="manual")]
        queues[symbol] = plans
    ordered: list[ApplyPlan] = []
    while len(ordered) < total:
        symbol = rng.choice([s for s, q in queues.items() if q])
        ordered.append(queues[symbol].pop(0))
    return ordered


@pytest.mark.timeout(600)
def test_apply_layer_killed_at_random_points(redis_url: str, tmp_path: Path) -> None:
    """500 plans, apply_layer SIGKILLed and restarted 10 times: 0 duplicates, 0 lost."""
    total = int(os.environ.get("QT_CHAOS_PLANS", "500"))
    rounds = int(os.environ.get("QT_CHAOS_ROUNDS", "10"))
    rng = random.Random(7)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for symbol, (price, _) in BOOK.items():
        client.hset(keys.market_price(symbol), mapping=price_mapping(D(price), D(price), now_ms()))
    policy = Policy(allowlist=tuple(BOOK), limits=Limits(max_open_positions=20, max_leverage=20,
                                                        max_margin_per_trade_usd=D("1000"),
                                                        max_total_notional_usd=D("1000000")))
    client.hset(keys.policy_current(), mapping=policy.to_hash())
    plans = plans_for(total, rng)
    republished = rng.sample(plans, 20)
    pipe = client.pipeline(transaction=True)
    queue_ops(pipe, [Publish(Stream.APPLY_PLAN, p) for p in plans + republished])  # type: ignore[arg-type]
    pipe.execute()

    proc = Proc(["-m", "services.apply_layer"], {"REDIS_URL": redis_url, **ENV}, tmp_path / "apply_layer.log")
    proc.start()
    kills = 0
    started = time.monotonic()
    try:
        for _ in range(rounds):
            time.sleep(rng.uniform(0.3, 1.6))  # a random moment, not a synchronisation
            if _all_done(client, total + len(republished)):
                break
            proc.kill()
            kills += 1
            proc.start()
        poll_sync(lambda: _all_done(client, total + len(republished)), timeout_s=240, interval_s=0.2)
        elapsed = time.monotonic() - started
    finally:
        assert proc.terminate() == 0

    results = [decode(ApplyResult, f) for _, f in client.xrange(keys.stream(Stream.APPLY_RESULT))]
    fills = [decode(ExecutionResult, f) for _, f in client.xrange(keys.stream(Stream.EXECUTION_RESULT))]
    orders = {cid: json.loads(raw) for cid, raw in client.hgetall(keys.paper_orders()).items()}
    by_plan: dict[str, list[ApplyResult]] = {}
    for r in results:
        by_plan.setdefault(r.plan_id, []).append(r)
    unique = {p.plan_id for p in plans}
    firsts = {pid: [r for r in by_plan.get(pid, []) if r.error != "duplicate_plan"] for pid in unique}
    lost = sorted(pid for pid, rs in firsts.items() if len(rs) == 0)
    doubled = sorted(pid for pid, rs in firsts.items() if len(rs) > 1)
    decisions = Counter(rs[0].decision.value + (":" + rs[0].error if rs[0].error else "")
                        for rs in firsts.values() if rs)
    duplicates = sum(1 for r in results if r.error == "duplicate_plan")
    executed = {pid for pid, rs in firsts.items() if rs and rs[0].decision is Decision.EXECUTE}
    main_orders = {cid[3:] for cid in orders if cid.startswith("qt-") and not cid.endswith(("-sl", "-tp"))}
    orders_without_result = sorted(main_orders - executed)
    executed_without_order = sorted(executed - main_orders)
    fill_ids = Counter(f.fill_id for f in fills)
    fills_twice = sum(1 for n in fill_ids.values() if n > 1)
    drift = _position_drift(client)
    settled = proc.log().count('"plan_settled"')
    print(f"\ncrash: plans={total} republished={len(republished)} kills={kills} elapsed_s={elapsed:.1f} "
          f"results={len(results)} decisions={dict(decisions)} duplicate_plan={duplicates} "
          f"exchange_orders={len(main_orders)} settled_by_query={settled} lost={len(lost)} "
          f"processed_twice={len(doubled)} orders_without_result={len(orders_without_result)} "
          f"fills_twice={fills_twice} position_drift={drift}")
    assert lost == [] and doubled == []
    assert duplicates == len(republished)
    assert orders_without_result == [] and executed_without_order == []
    assert fills_twice == 0
    assert drift == {}
    assert all(rs[0].decision is not Decision.ERROR for rs in firsts.values())
    assert kills == rounds


def _all_done(client: redis.Redis, expected: int) -> bool:
    if int(client.xlen(keys.stream(Stream.APPLY_RESULT))) < expected:
        return False
    groups = client.xinfo_groups(keys.stream(Stream.APPLY_PLAN))
    return all(g["pending"] == 0 for g in groups)


def _position_drift(client: redis.Redis) -> dict[str, tuple[str, str]]:
    """Symbols whose position hash differs from the paper exchange's position (signed quantities)."""
    theirs = {s: D(json.loads(raw)["qty"]) for s, raw in client.hgetall(keys.paper_positions()).items()}
    ours: dict[str, Decimal] = {}
    for symbol in BOOK:
        fields = client.hgetall(keys.position(symbol))
        if fields:
            ours[symbol] = D(fields["quantity"]) * (1 if fields["side"] == "LONG" else -1)
    return {s: (str(ours.get(s, 0)), str(theirs.get(s, 0))) for s in set(ours) | set(theirs)
            if ours.get(s, D(0)) != theirs.get(s, D(0))}
