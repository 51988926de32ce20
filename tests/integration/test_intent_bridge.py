"""intent_bridge as a real process over a real Redis: plans for both sides, audit entries for refusals
(logged once per reason and symbol per minute), the DLQ for a malformed intent, the same plan_id on a
redelivered intent, and the symbol rules from marketdata's hash or, while it is empty, the paper file."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import redis

from common import keys
from common.bus.effects import Publish, queue_ops
from common.contracts import ApplyPlan, DeadLetter, IntentRefusal, PolicyAudit, TradeIntent, decode
from common.market import rules_mapping
from common.streams import Service, Stream
from services.intent_bridge import bridge as b
from tests.helpers import hex16, poll_sync
from tests.integration.processes import Proc
from tests.unit.intent_bridge.test_bridge import RULES, make_intent

FAST = {"QT_BUS__BLOCK_MS": "100", "QT_BUS__CLAIM_INTERVAL_MS": "200", "QT_BUS__CLAIM_IDLE_MS": "1000"}


def send(client: redis.Redis, *intents: TradeIntent) -> None:
    pipe = client.pipeline(transaction=True)
    queue_ops(pipe, [Publish(Stream.TRADE_INTENT, i) for i in intents],  # type: ignore[arg-type]  # sync pipe
              service=Service.TRADING_BOT)
    pipe.execute()


def plans(client: redis.Redis) -> list[ApplyPlan]:
    return [decode(ApplyPlan, f) for _, f in client.xrange(keys.stream(Stream.APPLY_PLAN))]


def audits(client: redis.Redis) -> list[PolicyAudit]:
    return [decode(PolicyAudit, f) for _, f in client.xrange(keys.stream(Stream.POLICY_AUDIT))]


def log_events(proc: Proc, event: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def test_intents_become_plans_or_audited_refusals(redis_url: str, tmp_path: Path) -> None:
    """BUY and SELL intents of allowed, tradable symbols become ENTRY_PROPOSED plans (trace_id copied,
    qty rounded down); a symbol outside the allowlist, or halted on the exchange, becomes a policy.audit
    INTENT_REFUSED entry each time while the log says so once per (reason, symbol); the same intent sent
    twice gives two plans with one plan_id; a malformed intent lands in trade.intent.dlq."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    proc = Proc(["-m", "services.intent_bridge"], {"REDIS_URL": redis_url, **FAST}, tmp_path / "bridge.log").start()
    try:
        # the exchange-rules hash is empty: the paper rules file decides what is tradable
        long = make_intent("BTCUSDT", "BUY", price="30000")
        short = make_intent("ETHUSDT", "SELL", price="2000", margin="100", leverage=5)
        send(client, long, short, long)
        poll_sync(lambda: len(plans(client)) == 3)
        first, second, again = plans(client)
        assert (first.symbol, first.side, first.qty, first.plan_id) == ("BTCUSDT", "BUY", Decimal("0.066"),
                                                                       hex16(long.intent_id))
        assert (second.symbol, second.side, second.qty) == ("ETHUSDT", "SELL", Decimal("0.25"))
        assert second.trace_id == short.trace_id and second.source == Service.INTENT_BRIDGE
        assert again.plan_id == first.plan_id  # a redelivery is recognised downstream (duplicate_plan)

        # now marketdata's hash says the non-ASCII symbol is halted; ANKRUSDT is tradable but not allowed
        halted = dict(RULES)
        halted["币安人生USDT"] = replace(RULES["币安人生USDT"], status="BREAK")
        client.hset(keys.exchange_symbols(), mapping=rules_mapping(halted))
        refused = [make_intent("ANKRUSDT", price="0.02", intent_id=hex16(f"ankr{i}")) for i in range(3)]
        refused.append(make_intent("币安人生USDT", price="0.25", margin="50", leverage=5))
        send(client, *refused)
        client.xadd(keys.stream(Stream.TRADE_INTENT), {"v": "1", "source": "trading_bot", "symbol": "BTCUSDT"})
        poll_sync(lambda: len(audits(client)) == 4 and client.xlen(keys.dlq_stream(Stream.TRADE_INTENT)) == 1)

        entries = audits(client)
        assert [(a.kind, a.reason, a.details["symbol"]) for a in entries] == [
            *[(b.INTENT_REFUSED, IntentRefusal.NOT_IN_ALLOWLIST, "ANKRUSDT")] * 3,
            (b.INTENT_REFUSED, IntentRefusal.NOT_TRADABLE, "币安人生USDT")]
        assert [a.details["intent_id"] for a in entries[:3]] == [i.intent_id for i in refused[:3]]
        assert entries[3].details["status"] == "BREAK" and entries[3].trace_id == refused[3].trace_id
        assert len(plans(client)) == 3  # nothing refused became a plan

        [(_, fields)] = client.xrange(keys.dlq_stream(Stream.TRADE_INTENT))
        letter = decode(DeadLetter, fields)
        assert letter.origin_stream == Stream.TRADE_INTENT and letter.error.startswith("contract:")
        assert letter.payload == {"v": "1", "source": "trading_bot", "symbol": "BTCUSDT"}
        assert client.xpending(keys.stream(Stream.TRADE_INTENT), Service.INTENT_BRIDGE)["pending"] == 0

        logged = log_events(proc, "intent_refused")
        assert [(line["reason"], line["symbol"]) for line in logged] == [
            (IntentRefusal.NOT_IN_ALLOWLIST, "ANKRUSDT"), (IntentRefusal.NOT_TRADABLE, "币安人生USDT")]
        assert len(log_events(proc, "symbol_rules_from_file")) == 1
        proc.terminate()  # the exit code is the runner's (tests/integration/test_runner.py)
    finally:
        proc.kill()
