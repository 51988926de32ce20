"""``qt redis-acl``: one Redis user per service, checked against real servers loaded with the file."""

from __future__ import annotations

import asyncio
import hashlib
import stat
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.retry import Retry

from common import keys, streams
from common.bus import Consumer, Delivery, Effects, publish
from common.bus.metrics import BusMetrics
from common.contracts import ApplyPlan, DeadLetter, TradeIntent, decode
from common.streams import Service, Stream
from ops import acl
from tests.helpers import entry_plan, fast_settings, intent, poll, run
from tests.integration.cli.qt import qt
from tests.ops.conftest import INSTANCE, AclRedis

S = Service
POSITION = keys.position("BTCUSDT")


def refused(client: redis.Redis, *command: str) -> bool:
    """True when the server answers NOPERM to ``command``."""
    try:
        client.execute_command(*command)
    except NoPermissionError:
        return True
    return False


def test_grants_follow_the_stream_registry() -> None:
    """A service may XADD exactly the streams it produces plus the dead letters of what it consumes."""
    assert acl.grants(S.TRADING_BOT).produces == (keys.stream(Stream.TRADE_INTENT),)
    assert acl.grants(S.TRADING_BOT).consumes == ()
    assert acl.grants(S.TRADING_BOT).latest == (keys.stream(Stream.MARKET_KLINES),)
    bridge = acl.grants(S.INTENT_BRIDGE)
    assert bridge.consumes == (keys.stream(Stream.TRADE_INTENT),)
    assert set(bridge.produces) == {keys.stream(Stream.APPLY_PLAN), keys.stream(Stream.POLICY_AUDIT),
                                    keys.dlq_stream(Stream.TRADE_INTENT)}
    for service in S.ALL:
        g = acl.grants(service)
        for spec in streams.consumed_by(service):
            assert spec.dlq.key in g.produces, (service, spec.name)
        assert {spec.key for spec in streams.produced_by(service) if spec.dead_letter_of is None} <= set(g.produces)


def test_each_key_has_one_owner() -> None:
    """Only apply_layer owns position hashes; no key is owned twice except the kill switch and the
    policy, which the operator writes through the governor's code."""
    owners: dict[str, set[str]] = {}
    for service, patterns in acl.KEY_OWNERS.items():
        for pattern in patterns:
            owners.setdefault(pattern, set()).add(service)
    assert owners[acl.POSITION_KEYS] == {S.APPLY_LAYER}
    shared = {k: v for k, v in owners.items() if len(v) > 1}
    assert shared == {keys.ess(): {S.GOVERNOR, S.QT}, keys.policy_current(): {S.GOVERNOR, S.QT}}


def test_redis_62_needs_instance_names() -> None:
    """The 6.2 file names each heartbeat key exactly, so it cannot be rendered without instances."""
    with pytest.raises(ValueError, match="--instance"):
        acl.render("6.2")
    assert f"+set|{keys.heartbeat(S.TRADING_BOT, 'h1')}" in acl.render("6.2", instances=["h1"])


def test_default_user_is_off(acl_redis: AclRedis) -> None:
    """Without logging in nothing works; the default user cannot log in."""
    once = Retry(NoBackoff(), 0)  # an auth failure is not worth redis-py's reconnect retries
    anonymous = redis.Redis(port=acl_redis.port, socket_timeout=5, retry=once)
    with pytest.raises((AuthenticationError, ResponseError)):
        anonymous.ping()
    as_default = redis.Redis(port=acl_redis.port, username="default", password="x", socket_timeout=5, retry=once)
    with pytest.raises((AuthenticationError, ResponseError)):
        as_default.ping()
    assert acl_redis.client(S.TRADING_BOT).ping() is True


def test_trading_bot_may_only_add_trade_intents(acl_redis: AclRedis) -> None:
    """trading_bot adds to trade.intent and reads klines, market state, ledger and rules — and may
    write nothing else, not even a stream it reads."""
    bot = acl_redis.client(S.TRADING_BOT)
    assert bot.xadd(keys.stream(Stream.TRADE_INTENT), {"k": "v"})
    assert bot.xrevrange(keys.stream(Stream.MARKET_KLINES), count=1) == []
    assert bot.hgetall(keys.marketstate("BTCUSDT")) == {}
    assert bot.hgetall(keys.ledger_account()) == {}
    assert bot.set(keys.heartbeat(S.TRADING_BOT, INSTANCE), "1", px=1000)
    assert refused(bot, "XADD", keys.stream(Stream.APPLY_PLAN), "*", "k", "v")
    assert refused(bot, "XADD", keys.stream(Stream.MARKET_KLINES), "*", "k", "v")
    assert refused(bot, "HSET", keys.ledger_account(), "equity", "1")
    assert refused(bot, "DEL", keys.ledger_account())
    assert refused(bot, "SET", keys.heartbeat(S.APPLY_LAYER, INSTANCE), "1")
    assert refused(bot, "HGETALL", POSITION)
    assert acl_redis.client(acl.ADMIN).xlen(keys.stream(Stream.APPLY_PLAN)) == 0


def test_services_are_refused_what_they_do_not_own(acl_redis: AclRedis) -> None:
    """Streams and keys of another service are refused (NOPERM), what a service owns is allowed."""
    governor = acl_redis.client(S.GOVERNOR)
    assert governor.hset(keys.ess(), mapping={"state": "TRIPPED"}) == 1
    assert refused(governor, "HSET", POSITION, "quantity", "1")
    assert refused(governor, "XADD", keys.stream(Stream.EXECUTION_RESULT), "*", "k", "v")
    exitbrain = acl_redis.client(S.EXITBRAIN)
    assert exitbrain.hset(keys.exit_state("BTCUSDT"), mapping={"stage": "TP1"}) == 1
    assert exitbrain.xadd(keys.stream(Stream.APPLY_PLAN), {"k": "v"})
    assert refused(exitbrain, "XADD", keys.stream(Stream.APPLY_RESULT), "*", "k", "v")
    assert refused(exitbrain, "HSET", keys.position_ledger("BTCUSDT"), "fees", "1")
    assert refused(exitbrain, "HSET", keys.ess(), "state", "ARMED")
    bridge = acl_redis.client(S.INTENT_BRIDGE)
    assert refused(bridge, "XADD", keys.stream(Stream.TRADE_INTENT), "*", "k", "v")  # it consumes it
    assert refused(bridge, "HSET", keys.cooldown("BTCUSDT"), "x", "1")  # it reads cooldowns only
    assert refused(acl_redis.client(S.HARVEST_BRAIN), "XADD", keys.stream(Stream.APPLY_PLAN), "*", "k", "v")
    apply_layer = acl_redis.client(S.APPLY_LAYER)
    assert apply_layer.hset(keys.position("币安人生USDT"), mapping={"quantity": "1"}) == 1
    assert apply_layer.hset(keys.apply_plan("ab" * 8), mapping={"state": "DONE"}) == 1
    assert refused(apply_layer, "HSET", keys.position_ledger("BTCUSDT"), "fees", "1")
    assert refused(apply_layer, "HSET", keys.position_snapshot("BTCUSDT"), "position_amt", "1")
    operator = acl_redis.client(acl.OPERATOR)
    assert operator.hgetall(keys.position("币安人生USDT")) == {"quantity": "1"}
    assert operator.xadd(keys.stream(Stream.APPLY_PLAN), {"k": "v"})
    assert refused(operator, "HSET", POSITION, "quantity", "1")
    assert refused(operator, "XADD", keys.stream(Stream.TRADE_INTENT), "*", "k", "v")


def test_redis7_keeps_reads_read_only(acl_redis7: AclRedis) -> None:
    """Redis 7 (%R~ and selectors) refuses what 6.2 cannot: a write of a key the service only reads."""
    exitbrain = acl_redis7.client(S.EXITBRAIN)
    assert exitbrain.hgetall(POSITION) == {}
    assert refused(exitbrain, "HSET", POSITION, "quantity", "1")
    assert refused(exitbrain, "XADD", keys.stream(Stream.MARKET_TICK), "*", "k", "v")
    assert refused(exitbrain, "XADD", keys.stream(Stream.HARVEST_PROPOSAL), "*", "k", "v")
    assert refused(acl_redis7.client(S.APPLY_LAYER), "HSET", keys.ess(), "state", "ARMED")
    assert refused(acl_redis7.client(S.POSITION_MONITOR), "HSET", keys.paper_positions(), "BTCUSDT", "{}")
    assert refused(acl_redis7.client(S.HARVEST_BRAIN), "HSET", POSITION, "quantity", "1")
    assert acl_redis7.client(S.HARVEST_BRAIN).hset(keys.position_ledger("BTCUSDT"), "fees", "1") == 1


def test_intent_bridge_consumes_and_publishes_as_its_own_user(acl_redis: AclRedis) -> None:
    """The real bus runtime, logged in as intent_bridge, creates its group, reads trade.intent,
    publishes apply.plan, acknowledges, and dead-letters a poison entry."""
    settings = fast_settings(acl_redis.url(S.INTENT_BRIDGE))

    async def scenario() -> tuple[list[ApplyPlan], list[DeadLetter], int]:
        bot = Redis.from_url(acl_redis.url(S.TRADING_BOT), decode_responses=True)
        bridge = Redis.from_url(acl_redis.url(S.INTENT_BRIDGE), decode_responses=True)
        admin = Redis.from_url(acl_redis.url(acl.ADMIN), decode_responses=True)

        async def handle(delivery: Delivery) -> Effects:
            assert isinstance(delivery.message, TradeIntent)
            return Effects().publish(Stream.APPLY_PLAN, entry_plan(delivery.message))

        consumer = Consumer(bridge, streams.get(Stream.TRADE_INTENT), S.INTENT_BRIDGE, "intent_bridge@ops",
                            handle, settings.bus, metrics=BusMetrics(CollectorRegistry()))
        for i in range(3):
            await publish(bot, S.TRADING_BOT, (Stream.TRADE_INTENT, intent(i)))
        await bot.xadd(keys.stream(Stream.TRADE_INTENT), {"v": "1", "symbol": "BTCUSDT"})  # fails its contract
        stop = asyncio.Event()
        await consumer.setup()
        task = asyncio.create_task(consumer.run(stop))
        try:
            async def done() -> bool:
                return int(await admin.xlen(keys.dlq_stream(Stream.TRADE_INTENT))) == 1 and \
                    int(await admin.xlen(keys.stream(Stream.APPLY_PLAN))) == 3
            await poll(done)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        plans = [decode(ApplyPlan, f) for _, f in await admin.xrange(keys.stream(Stream.APPLY_PLAN))]
        letters = [decode(DeadLetter, f) for _, f in await admin.xrange(keys.dlq_stream(Stream.TRADE_INTENT))]
        pending = (await admin.xpending(keys.stream(Stream.TRADE_INTENT), S.INTENT_BRIDGE))["pending"]
        for client in (bot, bridge, admin):
            await client.aclose()
        return plans, letters, int(pending)

    plans, letters, pending = run(scenario())
    assert [p.intent_id for p in plans] == [intent(i).intent_id for i in range(3)]
    assert [p.source for p in plans] == [S.INTENT_BRIDGE] * 3
    assert len(letters) == 1 and letters[0].error.startswith("contract:") and letters[0].group == S.INTENT_BRIDGE
    assert pending == 0


def test_cli_writes_the_acl_with_hashed_passwords(tmp_path: Path, redis_url: str) -> None:
    """`qt redis-acl --password-dir` creates a 0600 password per user and stores only its sha256."""
    out, secrets_dir = tmp_path / "users.acl", tmp_path / "credstore"
    result = qt(redis_url, "redis-acl", "--out", str(out), "--password-dir", str(secrets_dir), "--instance", "h1")
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    lines = [line for line in text.splitlines() if line.startswith("user ")]
    assert [line.split()[1] for line in lines] == ["default", *acl.users()]
    for user in acl.users():
        path = secrets_dir / f"quantum-{user}.redis"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        password = path.read_text().strip()
        assert len(password) >= 32 and password not in text
        assert "#" + hashlib.sha256(password.encode()).hexdigest() in text
    again = qt(redis_url, "redis-acl", "--out", str(out), "--password-dir", str(secrets_dir), "--instance", "h1")
    assert again.returncode == 0 and out.read_text() == text  # existing passwords are kept
