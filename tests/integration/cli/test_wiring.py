"""``qt wiring`` names every fault of the old wiring map, and none on a healthy fleet."""

from __future__ import annotations

import json
from decimal import Decimal

import redis

from common import keys, streams
from common.contracts import encode
from common.contracts.enums import PositionSide
from common.policy import Policy
from common.positions import PositionRecord
from common.streams import Service, Stream
from tests.helpers import intent
from tests.integration.cli.qt import qt

NOW = 1_795_000_000_000


def healthy(client: redis.Redis) -> None:
    """Every service beating, every registered group created, one position with its ledger."""
    for service in Service.ALL:
        client.set(keys.heartbeat(service, "host1"), json.dumps({"pid": 1, "healthy": True}), px=60_000)
    for spec in streams.grouped_streams():
        for group in spec.groups:
            client.xgroup_create(spec.key, group, id="0", mkstream=True)
            client.xgroup_createconsumer(spec.key, group, f"{group}@host1")
    client.hset(keys.policy_current(), mapping=Policy(allowlist=("BTCUSDT", "ETHUSDT")).to_hash())
    position = PositionRecord("BTCUSDT", PositionSide.LONG, Decimal("0.01"), Decimal("50000"), 10, None, None,
                              "a" * 16, NOW, NOW, "b" * 16)
    client.hset(keys.position("BTCUSDT"), mapping=position.to_hash())
    client.hset(keys.position_ledger("BTCUSDT"), mapping={"realized_pnl": "0", "fees": "0.25"})


def test_healthy_fleet_has_no_findings(redis_url: str) -> None:
    """All services beating, groups registered and keeping up, positions with ledgers: exit 0, none."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    healthy(client)
    done = qt(redis_url, "wiring")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "## Findings (0)" in done.stdout and "\nnone" in done.stdout
    # the bundled Redis is 6.2: XINFO has no entries-added, so there is no "added" column
    assert "| stream | length | producers | group |" in done.stdout
    row = ("| apply.plan | 0 | intent_bridge, exitbrain, governor, qt, position_monitor, apply_layer "
           "| apply_layer | 1 | 0 | 0 |")
    assert row in done.stdout
    assert "| `quantum:position:*` | 1 |" in done.stdout
    as_json = json.loads(qt(redis_url, "wiring", "--format", "json").stdout)
    assert as_json["findings"] == []
    assert {s["name"] for s in as_json["wiring"]["services"]} == set(Service.ALL)


def test_every_old_fault_is_a_finding(redis_url: str) -> None:
    """Seeded with the old map's faults, qt wiring reports each one and exits 1: a consumed stream whose
    producer is gone (execution.result), an unregistered group (metricpack_builder) and stream, lag and
    lag near MAXLEN, 44 consumers in a group, a consumer idle with pending entries, a position outside
    the allowlist, an open position with an empty ledger, a service with no heartbeat."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    healthy(client)
    client.delete(keys.heartbeat(Service.APPLY_LAYER, "host1"))  # execution.result's only producer is gone
    client.xadd(keys.stream(Stream.EXECUTION_RESULT), {"stale": "1"}, id="1770000000000-0")
    result_key = keys.stream(Stream.APPLY_RESULT)
    client.xgroup_create(result_key, "metricpack_builder", id="0", mkstream=True)
    client.xadd(keys.stream("metricpack.raw"), {"x": "1"})
    proposals = streams.get(Stream.HARVEST_PROPOSAL).key
    pipe = client.pipeline(transaction=False)
    for i in range(8_100):
        pipe.xadd(proposals, {"n": str(i)})
    pipe.execute()
    intents = keys.stream(Stream.TRADE_INTENT)
    for n in range(44):
        client.xgroup_createconsumer(intents, Service.INTENT_BRIDGE, f"intent_bridge@old-{n}")
    client.xadd(intents, encode(intent(1)))
    client.xreadgroup(Service.INTENT_BRIDGE, "intent_bridge@old-0", {intents: ">"})
    chess = PositionRecord("CHESSUSDT", PositionSide.SHORT, Decimal("13"), Decimal("0.2"), 10, None, None,
                           "c" * 16, NOW, NOW, "d" * 16)
    client.hset(keys.position("CHESSUSDT"), mapping=chess.to_hash())

    done = qt(redis_url, "wiring", "--format", "json", "--idle-pending-s", "0.001")
    assert done.returncode == 1
    found = {(f["kind"], f["subject"]) for f in json.loads(done.stdout)["findings"]}
    assert ("SERVICE_DOWN", Service.APPLY_LAYER) in found
    assert ("CONSUMED_NOT_PRODUCED", Stream.EXECUTION_RESULT) in found
    assert ("GROUP_NOT_REGISTERED", "apply.result → metricpack_builder") in found
    assert ("STREAM_NOT_REGISTERED", "metricpack.raw") in found
    assert ("LAG", "harvest.proposal → exitbrain") in found
    assert ("LAG_NEAR_MAXLEN", "harvest.proposal → exitbrain") in found
    assert ("TOO_MANY_CONSUMERS", "trade.intent → intent_bridge") in found
    assert ("IDLE_WITH_PENDING", "trade.intent → intent_bridge / intent_bridge@old-0") in found
    assert ("POSITION_OUTSIDE_ALLOWLIST", "CHESSUSDT") in found
    assert ("POSITION_WITHOUT_LEDGER", "CHESSUSDT") in found
    assert ("POSITION_WITHOUT_LEDGER", "BTCUSDT") not in found
    md = qt(redis_url, "wiring", "--idle-pending-s", "0.001").stdout
    assert "**CONSUMED_NOT_PRODUCED** execution.result: read by ['governor', 'harvest_brain', 'position_monitor']" \
        in md
    assert "metricpack_builder (not registered)" in md
