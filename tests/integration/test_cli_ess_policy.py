"""``qt ess`` and ``qt policy`` as subprocesses against a real Redis: what they print, the keys they
write and the events and plans they publish."""

from __future__ import annotations

from decimal import Decimal

import redis

from common import keys
from common.config import DEFAULT_CONFIG_DIR
from common.contracts import ApplyPlan, GovernorEvent, decode, now_ms
from common.contracts.enums import PositionSide
from common.governance import ESS_RESET, ESS_TRIPPED, POLICY_UPDATED
from common.policy import Policy, load_policy_file
from common.positions import PositionRecord
from common.streams import Service, Stream
from tests.helpers import hex16
from tests.integration.test_cli_streams import qt
from tests.integration.test_governor import seed_account

D = Decimal


def events(client: redis.Redis, kind: str) -> list[GovernorEvent]:
    found = [decode(GovernorEvent, f) for _, f in client.xrange(keys.stream(Stream.GOVERNOR_EVENTS))]
    return [e for e in found if e.kind == kind]


def seed_position(client: redis.Redis, symbol: str, side: PositionSide, qty: str) -> PositionRecord:
    record = PositionRecord(symbol=symbol, side=side, quantity=D(qty), entry_price=D("100"), leverage=5,
                            stop_loss=None, take_profit=None, plan_id=hex16("entry" + symbol), created_at=now_ms(),
                            updated_at=now_ms(), trace_id=hex16("t" + symbol))
    client.hset(keys.position(symbol), mapping=record.to_hash())
    return record


def test_status_trip_and_reset(redis_url: str) -> None:
    """status with no switch says ARMED (exit 0); trip writes TRIPPED by operator with the reason and one
    ESS_TRIPPED from qt; status then exits 1 showing the reason; a second trip changes nothing; reset
    re-arms with one ESS_RESET."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    fresh = qt(redis_url, "ess", "status")
    assert fresh.returncode == 0 and "state:  ARMED" in fresh.stdout and "governor has not run" in fresh.stdout

    tripped = qt(redis_url, "ess", "trip", "--reason", "exchange incident")
    assert tripped.returncode == 0, tripped.stdout + tripped.stderr
    assert "kill switch TRIPPED (reason 'exchange incident', by operator" in tripped.stdout
    switch = client.hgetall(keys.ess())
    assert (switch["state"], switch["reason"], switch["by"]) == ("TRIPPED", "exchange incident", "operator")
    assert abs(int(switch["at"]) - now_ms()) < 60_000
    [event] = events(client, ESS_TRIPPED)
    assert event.source == Service.QT and event.reason == "exchange incident" and event.details["by"] == "operator"

    status = qt(redis_url, "ess", "status")
    assert status.returncode == 1
    assert "state:  TRIPPED" in status.stdout and "reason: exchange incident" in status.stdout
    assert "by:     operator" in status.stdout and f"at:     {switch['at']} (" in status.stdout

    again = qt(redis_url, "ess", "trip", "--reason", "other")
    assert again.returncode == 0 and "already TRIPPED" in again.stdout
    assert client.hget(keys.ess(), "reason") == "exchange incident" and len(events(client, ESS_TRIPPED)) == 1

    reset = qt(redis_url, "ess", "reset")
    assert reset.returncode == 0 and "kill switch ARMED" in reset.stdout and "warning" not in reset.stdout
    assert client.hgetall(keys.ess())["state"] == "ARMED" and client.hget(keys.ess(), "by") == "operator"
    [re_armed] = events(client, ESS_RESET)
    assert re_armed.details["was"] == "exchange incident"
    assert qt(redis_url, "ess", "status").returncode == 0
    assert "already ARMED" in qt(redis_url, "ess", "reset").stdout and len(events(client, ESS_RESET)) == 1


def test_reset_warns_when_a_limit_is_still_reached(redis_url: str) -> None:
    """Resetting while the ledger is past the drawdown limit re-arms but warns the governor will trip
    it again."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed_account(client, equity="8000", peak="10000", day_start="8000")
    qt(redis_url, "ess", "trip")
    reset = qt(redis_url, "ess", "reset")
    assert client.hget(keys.ess(), "state") == "ARMED"
    assert "warning: drawdown 20.00% >= limit 15%: the governor will trip it again" in reset.stdout


def test_trip_flatten_publishes_one_close_per_position(redis_url: str) -> None:
    """--flatten publishes one FULL_CLOSE_PROPOSED per open position (reason ess_flatten, source qt,
    plan_id = sha256(position_plan_id|ess_flatten|0)[:16], position_plan_id = the entry plan); a second
    flatten publishes the same plan ids (apply_layer answers duplicate_plan)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    positions = [seed_position(client, "BTCUSDT", PositionSide.LONG, "0.01"),
                 seed_position(client, "币安人生USDT", PositionSide.SHORT, "1000")]
    client.hset(keys.position_ledger("BTCUSDT"), mapping={"realized_pnl": "0"})  # not a position
    done = qt(redis_url, "ess", "trip", "--flatten")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "flatten: 2 close plan(s) published to apply.plan" in done.stdout
    plans = [decode(ApplyPlan, f) for _, f in client.xrange(keys.stream(Stream.APPLY_PLAN))]
    assert [(p.symbol, p.action, p.reason, p.source, p.close_pct) for p in plans] == [
        ("BTCUSDT", "FULL_CLOSE_PROPOSED", "ess_flatten", Service.QT, 100.0),
        ("币安人生USDT", "FULL_CLOSE_PROPOSED", "ess_flatten", Service.QT, 100.0)]
    assert [p.position_plan_id for p in plans] == [p.plan_id for p in positions]
    assert [p.plan_id for p in plans] == [hex16(f"{p.plan_id}|ess_flatten|0") for p in positions]
    assert len({p.trace_id for p in plans}) == 1 and plans[0].trace_id == events(client, ESS_TRIPPED)[0].trace_id
    qt(redis_url, "ess", "trip", "--flatten")
    again = [decode(ApplyPlan, f) for _, f in client.xrange(keys.stream(Stream.APPLY_PLAN))][2:]
    assert [p.plan_id for p in again] == [p.plan_id for p in plans]


def test_policy_show_and_set(redis_url: str) -> None:
    """show prints the file's policy while none is published; `set max_open_positions 3` publishes a new
    version (POLICY_UPDATED from qt) that show then prints; the same value again is unchanged; a bad value
    or an unknown key exits 2 and writes nothing; `set --file` publishes a whole file; `set allowlist`
    takes a comma-separated list."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    from_file = load_policy_file(DEFAULT_CONFIG_DIR / "policy.toml")
    shown = qt(redis_url, "policy", "show")
    assert shown.returncode == 0
    assert f"version:    {from_file.version}  (from " in shown.stdout and "no policy published yet" in shown.stdout
    assert "max_open_positions:       5" in shown.stdout and "币安人生USDT" in shown.stdout

    changed = qt(redis_url, "policy", "set", "max_open_positions", "3")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "max_open_positions: 5 -> 3" in changed.stdout
    stored = client.hgetall(keys.policy_current())
    policy = Policy.from_hash(stored)
    assert policy.limits.max_open_positions == 3 and policy.allowlist == from_file.allowlist
    assert stored["origin"] == "qt" and stored["file_version"] == from_file.version
    [event] = events(client, POLICY_UPDATED)
    assert event.source == Service.QT and event.details["version"] == policy.version
    assert event.details["previous_version"] == ""
    shown = qt(redis_url, "policy", "show")
    assert f"version:    {policy.version}\n" in shown.stdout and "origin:     qt" in shown.stdout
    assert "max_open_positions:       3" in shown.stdout

    assert "policy unchanged" in qt(redis_url, "policy", "set", "max_open_positions", "3").stdout
    bad = qt(redis_url, "policy", "set", "max_leverage", "500")
    unknown = qt(redis_url, "policy", "set", "max_positions", "3")
    assert bad.returncode == 2 and "invalid policy" in bad.stdout and "max_leverage" in bad.stdout
    assert unknown.returncode == 2 and "not a policy setting" in unknown.stdout
    assert client.hget(keys.policy_current(), "version") == policy.version
    assert len(events(client, POLICY_UPDATED)) == 1

    whole = qt(redis_url, "policy", "set", "--file", str(DEFAULT_CONFIG_DIR / "policy.toml"))
    assert whole.returncode == 0 and "max_open_positions: 3 -> 5" in whole.stdout
    assert client.hget(keys.policy_current(), "version") == from_file.version
    assert len(events(client, POLICY_UPDATED)) == 2

    narrowed = qt(redis_url, "policy", "set", "allowlist", "BTCUSDT,币安人生USDT")
    assert narrowed.returncode == 0 and 'allowlist: ["BTCUSDT", "ETHUSDT"' in narrowed.stdout
    assert Policy.from_hash(client.hgetall(keys.policy_current())).allowlist == ("BTCUSDT", "币安人生USDT")
