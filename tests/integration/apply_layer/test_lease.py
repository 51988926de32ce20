"""Active/standby: with two apply_layer processes only the lease holder executes; when it dies the
standby takes over after the lease's TTL and every plan still gets exactly one result."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import redis

from common import keys
from common.contracts import ApplyResult, Decision, decode, encode, now_ms
from common.market import price_mapping
from common.streams import Stream
from ops.redis_server import EmbeddedRedis, free_port
from tests.helpers import poll_sync
from tests.integration.apply_layer.harness import D
from tests.integration.processes import Proc
from tests.plans import close, entry

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


def _start(redis_url: str, n: str, tmp_path: Path, **env: str) -> Proc:
    return Proc(["-m", "services.apply_layer"], {"REDIS_URL": redis_url, "QT_INSTANCE": n, **ENV, **env},
                tmp_path / f"a{n}.log").start()


def _prices(client: redis.Redis) -> None:
    for symbol, price in (("BTCUSDT", "50000"), ("ETHUSDT", "3000")):
        client.hset(keys.market_price(symbol), mapping=price_mapping(D(price), D(price), now_ms() + 600_000))


def test_takeover_runs_the_dead_instances_pending_plans_before_newer_ones(redis_url: str, tmp_path: Path) -> None:
    """Fault 4: the active instance dies in the middle of a 50 % close, holding a full close of the same
    position behind it; a new BTC entry is published after. The standby takes over and runs the dead
    instance's plans first — the half close settled, the full close claimed at once (claim_idle_ms is
    60 s here) — and only then the new entry, which opens a fresh position of its own."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    _prices(client)
    slow = {"QT_PAPER__LATENCY_MS": "1500", "QT_BUS__CLAIM_IDLE_MS": "60000"}
    first = _start(redis_url, "1", tmp_path, **slow)
    second: Proc | None = None
    try:
        poll_sync(lambda: "lease_acquired" in first.log(), timeout_s=30)
        opened = entry("takeover-open", qty="0.01")
        client.xadd(keys.stream(Stream.APPLY_PLAN), encode(opened))  # type: ignore[arg-type]
        poll_sync(lambda: len(results(client)) == 1, timeout_s=30)
        second = _start(redis_url, "2", tmp_path, **slow)
        poll_sync(lambda: '"standby"' in second.log(), timeout_s=30)
        half = close("takeover-half", opened.plan_id, pct=50.0, reason="harvest_tp1")
        full = close("takeover-full", opened.plan_id, reason="stop_loss")
        with client.pipeline(transaction=True) as pipe:  # one read takes both
            pipe.xadd(keys.stream(Stream.APPLY_PLAN), encode(half))  # type: ignore[arg-type]
            pipe.xadd(keys.stream(Stream.APPLY_PLAN), encode(full))  # type: ignore[arg-type]
            pipe.execute()
        # the half close is in flight (recorded SUBMITTING before its send; the send takes 1.5 s)
        poll_sync(lambda: client.hget(keys.apply_plan(half.plan_id), "state") == "SUBMITTING", timeout_s=30)
        first.kill()
        newer = entry("takeover-newer", qty="0.02")
        client.xadd(keys.stream(Stream.APPLY_PLAN), encode(newer))  # type: ignore[arg-type]
        started = time.monotonic()
        poll_sync(lambda: len(results(client)) == 4, timeout_s=40)
        assert time.monotonic() - started < 30  # not claim_idle_ms later
        got = [(r.plan_id, r.decision, r.error) for r in results(client)]
        assert got == [(opened.plan_id, Decision.EXECUTE, ""), (half.plan_id, Decision.EXECUTE, ""),
                       (full.plan_id, Decision.EXECUTE, ""), (newer.plan_id, Decision.EXECUTE, "")]
        position = client.hgetall(keys.position("BTCUSDT"))
        assert position["plan_id"] == newer.plan_id and D(position["quantity"]) == D("0.02")
        assert "entries_claimed_from_dead_consumer" in second.log()
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_the_lease_is_renewed_while_the_active_instance_prepares(redis_url: str, tmp_path: Path) -> None:
    """Fault 5: the active instance's start outlasts the lease's TTL (its exchange does not answer). It
    keeps renewing the lease meanwhile: it stays alive, it keeps holding the lease, and a standby started
    beside it stays a standby."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    unreachable = {"QT_EXCHANGE": "binance-testnet", "QT_BINANCE__BASE_URL": f"http://127.0.0.1:{free_port()}",
                   "QT_BINANCE__API_KEY": "k", "QT_BINANCE__API_SECRET": "s", "QT_BINANCE__TIMEOUT_S": "0.5"}
    first = _start(redis_url, "1", tmp_path, **unreachable)
    second: Proc | None = None
    try:
        poll_sync(lambda: "lease_acquired" in first.log(), timeout_s=30)
        owner = client.get(keys.apply_lease())
        second = _start(redis_url, "2", tmp_path, **unreachable)
        poll_sync(lambda: '"standby"' in second.log(), timeout_s=30)
        deadline = time.monotonic() + 3 * 2.0  # three lease TTLs
        while time.monotonic() < deadline:
            assert client.get(keys.apply_lease()) == owner
            assert first.alive and second.alive
            time.sleep(0.2)  # sampling the lease over time, not a synchronisation
        assert "lease_acquired" not in second.log()
        assert '"waiting"' in first.log()  # its start is still waiting for the exchange
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_a_standby_stops_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    """Fault 10: a standby waiting for the lease exits 0 promptly on SIGTERM, and the active instance's
    heartbeat and lease are untouched."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    _prices(client)
    first = _start(redis_url, "1", tmp_path)
    second: Proc | None = None
    try:
        poll_sync(lambda: "lease_acquired" in first.log(), timeout_s=30)
        owner = client.get(keys.apply_lease())
        second = _start(redis_url, "2", tmp_path)
        poll_sync(lambda: '"standby"' in second.log(), timeout_s=30)
        started = time.monotonic()
        assert second.terminate(timeout_s=10) == 0
        assert time.monotonic() - started < 5
        assert client.get(keys.apply_lease()) == owner
        assert client.exists(keys.heartbeat("apply_layer", f"{socket.gethostname()}-1")) == 1
        assert client.exists(keys.heartbeat("apply_layer", f"{socket.gethostname()}-2")) == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_a_standby_rides_out_a_redis_restart(own_redis: EmbeddedRedis, tmp_path: Path) -> None:
    """Fault 11: Redis restarts (same AOF) while one instance is active and one waits as standby: both stay
    up, and when the active one dies afterwards the standby takes over and executes."""
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    _prices(client)
    first = _start(own_redis.url, "1", tmp_path)
    second: Proc | None = None
    try:
        poll_sync(lambda: "lease_acquired" in first.log(), timeout_s=30)
        second = _start(own_redis.url, "2", tmp_path)
        poll_sync(lambda: '"standby"' in second.log(), timeout_s=30)
        own_redis.stop()
        time.sleep(1.0)  # the outage itself (both must ride it out), not a synchronisation
        own_redis.start()
        client = redis.Redis.from_url(own_redis.url, decode_responses=True)
        poll_sync(lambda: second.log().count("redis_unavailable") >= 1, timeout_s=30)
        assert first.alive and second.alive
        first.kill()
        plan = entry("after-restart", qty="0.01")
        client.xadd(keys.stream(Stream.APPLY_PLAN), encode(plan))  # type: ignore[arg-type]
        poll_sync(lambda: len(results(client)) == 1, timeout_s=40)
        assert results(client)[0].decision is Decision.EXECUTE
        assert second.alive and "lease_acquired" in second.log()
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_sigterm_during_a_send_finishes_the_plan_and_protects_it(redis_url: str, tmp_path: Path) -> None:
    """SIGTERM arrives while an entry's order is on its way; each exchange call takes 4 s, so finishing the
    plan outlasts the lease's 2 s TTL. The lease stays held (renewed) the whole time the plan is in hand —
    no standby could take over and settle it under the stopping instance — the entry is booked with its
    result and its stop is placed, and only then does the process exit 0 and release the lease."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    _prices(client)
    proc = _start(redis_url, "1", tmp_path, QT_PAPER__LATENCY_MS="4000")
    try:
        poll_sync(lambda: "service_ready" in proc.log(), timeout_s=30)
        owner = client.get(keys.apply_lease())
        plan = entry("sigterm-midsend", qty="0.01")
        client.xadd(keys.stream(Stream.APPLY_PLAN), encode(plan))  # type: ignore[arg-type]
        poll_sync(lambda: client.hget(keys.apply_plan(plan.plan_id), "state") == "SUBMITTING", timeout_s=30)
        assert proc.popen is not None
        proc.popen.send_signal(15)
        while not results(client):  # sampling the lease over the drain, not a synchronisation
            assert client.get(keys.apply_lease()) == owner
            assert proc.alive
            time.sleep(0.1)
        assert proc.popen.wait(40) == 0
        [result] = results(client)
        assert result.decision is Decision.EXECUTE
        position = client.hgetall(keys.position("BTCUSDT"))
        assert position["sl_order_id"] == f"qt-{plan.plan_id}-sl" and position["tp_order_id"]
        assert client.get(keys.apply_lease()) is None
        assert "LeaseLost" not in proc.log()
    finally:
        proc.kill()


def test_a_lease_that_lapsed_with_nobody_taking_it_is_taken_again(redis_url: str) -> None:
    """Redis restarted and the lease's TTL ran out meanwhile (the key is gone): the active instance takes
    it again on its next renewal instead of stopping. Held by another instance, the renewal refuses."""
    import asyncio

    from services.apply_layer.lease import Lease, LeaseLost

    async def scenario() -> None:
        r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        lease = Lease(r, "apply_layer@test", 3000)
        assert await lease.acquire(asyncio.Event(), 0.1)
        await r.delete(keys.apply_lease())
        await lease.renew()
        assert await r.get(keys.apply_lease()) == lease.owner
        await r.set(keys.apply_lease(), "apply_layer@other/1/x")
        try:
            await lease.renew()
            raise AssertionError("renewed a lease another instance holds")
        except LeaseLost:
            pass
        await lease.release()
        await r.aclose()

    asyncio.run(scenario())


def test_a_renewal_that_races_changes_of_its_key_many_times_renews(redis_url: str, monkeypatch: Any) -> None:
    """Found by the long fleet chaos run on Binance: right after a Redis restart a renewal met WatchError
    more than three times in a row, gave the lease up ("kept changing") and the active instance exited 1. It
    tries again for up to a TTL; a holder that is not us still ends it at once."""
    import asyncio

    from redis.asyncio.client import Pipeline
    from redis.exceptions import WatchError

    from services.apply_layer.lease import Lease, LeaseLost

    real = Pipeline.execute
    races = {"left": 0}

    async def racing(self: Any, *args: Any, **kwargs: Any) -> Any:
        if races["left"]:
            races["left"] -= 1
            await self.reset()
            raise WatchError("Watched variable changed.")
        return await real(self, *args, **kwargs)

    async def scenario() -> None:
        r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        lease = Lease(r, "apply_layer@test", 3000)
        assert await lease.acquire(asyncio.Event(), 0.1)
        monkeypatch.setattr(Pipeline, "execute", racing)
        races["left"] = 8
        before = lease.renewed_at
        await lease.renew()
        assert races["left"] == 0 and lease.renewed_at > before
        assert await r.get(keys.apply_lease()) == lease.owner
        await r.set(keys.apply_lease(), "apply_layer@other/1/x")
        races["left"] = 2
        try:
            await lease.renew()
            raise AssertionError("renewed a lease another instance holds")
        except LeaseLost as e:
            assert "held by" in str(e)
        monkeypatch.setattr(Pipeline, "execute", real)
        await lease.release()
        await r.aclose()

    asyncio.run(scenario())
