"""The bus runtime in real processes: SIGTERM drains, a Redis restart loses nothing, and the soak —
entries through a two-hop pipeline while consumers are killed at random."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
import redis

from common import keys
from common.bus.effects import Publish, queue_ops
from common.contracts import ApplyPlan, ApplyResult, decode
from common.streams import Service, Stream
from ops.redis_server import EmbeddedRedis
from tests.helpers import intent, poll_sync
from tests.integration.processes import Proc

WORKER = ["-m", "tests.integration.bus_worker"]
FAST_BUS = {"QT_BUS__BLOCK_MS": "200", "QT_BUS__CLAIM_IDLE_MS": "1000", "QT_BUS__CLAIM_INTERVAL_MS": "300",
            "QT_BUS__RECONNECT_INITIAL_MS": "50", "QT_BUS__RECONNECT_MAX_MS": "500",
            "QT_RUNTIME__HEARTBEAT_INTERVAL_S": "0.5"}


def worker(hop: str, url: str, tmp: Path, instance: str = "", **env: str) -> Proc:
    environment = {"REDIS_URL": url, "QT_INSTANCE": instance, **FAST_BUS, **env}
    return Proc([*WORKER, hop], environment, tmp / f"{hop}-{instance or 'x'}.log")


def publish_intents(client: redis.Redis, start: int, n: int) -> None:
    """Publish intents ``start..start+n`` in pipelined transactions of 500."""
    for chunk in range(start, start + n, 500):
        pipe = client.pipeline(transaction=True)
        ops = [Publish(Stream.TRADE_INTENT, intent(i)) for i in range(chunk, min(chunk + 500, start + n))]
        queue_ops(pipe, ops, service=Service.TRADING_BOT)  # type: ignore[arg-type]  # sync pipe, same API
        pipe.execute()


def xlen(client: redis.Redis, stream: str) -> int:
    return int(client.xlen(keys.stream(stream)))


def test_sigterm_drains_the_batch_in_hand_and_exits_0(redis_url: str, tmp_path: Path) -> None:
    """SIGTERM while a batch is being handled: the batch is finished and acknowledged, nothing more is
    read, the process exits 0, and its log lines are JSON with service, event, level and ts."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    publish_intents(client, 0, 40)
    proc = worker("hop1", redis_url, tmp_path, QT_TEST_DELAY_MS="60", QT_BUS__BATCH_SIZE="10").start()
    try:
        poll_sync(lambda: xlen(client, Stream.APPLY_PLAN) >= 1)
        assert proc.terminate() == 0
    finally:
        proc.kill()
    groups = client.xinfo_groups(keys.stream(Stream.TRADE_INTENT))
    [group] = groups
    delivered = [e[0] for e in client.xrange(keys.stream(Stream.TRADE_INTENT))].index(group["last-delivered-id"]) + 1
    assert group["pending"] == 0
    assert xlen(client, Stream.APPLY_PLAN) == delivered < 40
    lines = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    assert {"service", "event", "level", "ts"} <= set(lines[0])
    assert lines[-1]["event"] == "service_stopped" and lines[-1]["exit_code"] == 0
    assert all(line["service"] == Service.INTENT_BRIDGE for line in lines)
    assert client.exists(keys.heartbeat(Service.INTENT_BRIDGE, lines[0].get("host", "") or _host())) == 0


def test_redis_restarted_under_a_running_consumer_loses_nothing(own_redis: EmbeddedRedis, tmp_path: Path) -> None:
    """Redis stops and comes back (AOF) while a consumer runs: the consumer reconnects with backoff,
    nothing is lost and nothing is handled twice."""
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    publish_intents(client, 0, 600)
    proc = worker("hop1", own_redis.url, tmp_path, QT_TEST_DELAY_MS="2").start()
    try:
        poll_sync(lambda: xlen(client, Stream.APPLY_PLAN) >= 50)
        own_redis.stop()
        time.sleep(0.5)  # the outage itself (the consumer must ride it out), not a synchronisation
        own_redis.start()
        client = redis.Redis.from_url(own_redis.url, decode_responses=True)
        publish_intents(client, 600, 400)
        poll_sync(lambda: xlen(client, Stream.APPLY_PLAN) >= 1000, timeout_s=60)
        assert proc.alive
    finally:
        code = proc.terminate()
    plan_ids = [decode(ApplyPlan, f).plan_id for _, f in client.xrange(keys.stream(Stream.APPLY_PLAN))]
    assert len(plan_ids) == 1000 == len(set(plan_ids))
    assert code == 0
    assert "redis_unavailable" in proc.log()


@pytest.mark.timeout(600)
def test_soak_two_hops_with_random_kills(redis_url: str, tmp_path: Path) -> None:
    """10,000 entries through trade.intent -> apply.plan -> apply.result with two consumers per hop, 20
    of them SIGKILLed at random and restarted under the same name: 0 lost, 0 processed twice."""
    entries = int(os.environ.get("QT_SOAK_ENTRIES", "10000"))
    kills = int(os.environ.get("QT_SOAK_KILLS", "20"))
    rng = random.Random(20261125)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    publish_intents(client, 0, entries)
    procs = {(hop, n): worker(hop, redis_url, tmp_path, instance=str(n), QT_TEST_DELAY_MS="1").start()
             for hop in ("hop1", "hop2") for n in (1, 2)}
    started = time.monotonic()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.1, 0.4))  # random kill times, not synchronisation
            victim = rng.choice(sorted(procs))
            procs[victim].kill()
            procs[victim].start()
        poll_sync(lambda: xlen(client, Stream.APPLY_RESULT) >= entries, timeout_s=300, interval_s=0.2)
        elapsed = time.monotonic() - started
    finally:
        codes = {name: proc.terminate() for name, proc in procs.items()}
    plans = [decode(ApplyPlan, f).plan_id for _, f in client.xrange(keys.stream(Stream.APPLY_PLAN))]
    results = [decode(ApplyResult, f).plan_id for _, f in client.xrange(keys.stream(Stream.APPLY_RESULT))]
    expected = {_plan_id(i) for i in range(entries)}
    lost = len(expected - set(results))
    twice_hop1 = len(plans) - len(set(plans))
    twice_hop2 = len(results) - len(set(results))
    consumers = {g: len(client.xinfo_consumers(keys.stream(s), g))
                 for s, g in ((Stream.TRADE_INTENT, Service.INTENT_BRIDGE), (Stream.APPLY_PLAN, Service.APPLY_LAYER))}
    print(f"\nsoak: entries={entries} kills={kills} elapsed_s={elapsed:.1f} "
          f"hop1_published={len(plans)} hop2_published={len(results)} lost={lost} "
          f"processed_twice={twice_hop1 + twice_hop2} consumers={consumers}")
    assert lost == 0
    assert twice_hop1 == 0 and twice_hop2 == 0
    assert len(plans) == len(results) == entries
    assert consumers == {Service.INTENT_BRIDGE: 2, Service.APPLY_LAYER: 2}
    assert set(codes.values()) == {0}


def _plan_id(i: int) -> str:
    from tests.helpers import entry_plan

    return entry_plan(intent(i)).plan_id


def _host() -> str:
    import socket

    return socket.gethostname()
