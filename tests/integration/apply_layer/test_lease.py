"""Active/standby: with two apply_layer processes only the lease holder executes; when it dies the
standby takes over after the lease's TTL and every plan still gets exactly one result."""

from __future__ import annotations

from pathlib import Path

import redis

from common import keys
from common.contracts import ApplyResult, Decision, decode, encode, now_ms
from common.market import price_mapping
from common.streams import Stream
from tests.helpers import poll_sync
from tests.integration.apply_layer.harness import D, entry
from tests.integration.processes import Proc

ENV = {"QT_APPLY__LEASE_TTL_MS": "2000", "QT_APPLY__COOLDOWN_S": "0", "QT_BUS__BLOCK_MS": "100",
       "QT_BUS__CLAIM_IDLE_MS": "1000", "QT_BUS__CLAIM_INTERVAL_MS": "200",
       "QT_RUNTIME__METRICS_PORTS__APPLY_LAYER": "0"}


def results(client: redis.Redis) -> list[ApplyResult]:
    return [decode(ApplyResult, f) for _, f in client.xrange(keys.stream(Stream.APPLY_RESULT))]


def test_standby_takes_over_when_the_active_instance_dies(redis_url: str, tmp_path: Path) -> None:
    """Instance 1 takes the lease and executes; instance 2 waits as standby (and says so); after instance 1
    is SIGKILLed, instance 2 takes the lease once it lapses and executes the next plan. One result per
    plan, one position."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for symbol, price in (("BTCUSDT", "50000"), ("ETHUSDT", "3000")):
        client.hset(keys.market_price(symbol), mapping=price_mapping(D(price), D(price), now_ms() + 600_000))
    first = Proc(["-m", "services.apply_layer"], {"REDIS_URL": redis_url, "QT_INSTANCE": "1", **ENV},
                 tmp_path / "a1.log").start()
    second: Proc | None = None
    try:
        poll_sync(lambda: "lease_acquired" in first.log(), timeout_s=30)
        second = Proc(["-m", "services.apply_layer"], {"REDIS_URL": redis_url, "QT_INSTANCE": "2", **ENV},
                      tmp_path / "a2.log").start()
        poll_sync(lambda: '"standby"' in second.log(), timeout_s=30)
        a = entry("lease-a", qty="0.01")
        client.xadd(keys.stream(Stream.APPLY_PLAN), encode(a))  # type: ignore[arg-type]
        poll_sync(lambda: len(results(client)) == 1, timeout_s=30)
        assert "plan_applied" in first.log() and "plan_applied" not in second.log()

        first.kill()
        b = entry("lease-b", symbol="ETHUSDT", qty="0.1", price="3000")
        client.xadd(keys.stream(Stream.APPLY_PLAN), encode(b))  # type: ignore[arg-type]
        poll_sync(lambda: len(results(client)) == 2, timeout_s=30)
        assert "lease_acquired" in second.log()
        assert [(r.plan_id, r.decision) for r in results(client)] == [(a.plan_id, Decision.EXECUTE),
                                                                      (b.plan_id, Decision.EXECUTE)]
        assert second.terminate() == 0
        assert client.get(keys.apply_lease()) is None  # released on a clean stop
    finally:
        first.kill()
        if second is not None:
            second.kill()
