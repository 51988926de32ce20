"""The governor as a real process: it publishes config/policy.toml (versioned, POLICY_UPDATED once per
change, an operator's version left alone until the file changes), creates the kill switch ARMED, and
trips it once on a drawdown or a daily loss read from quantum:ledger:account."""

from __future__ import annotations

import shutil
import time
from decimal import Decimal
from pathlib import Path

import redis

from common import keys
from common.books import account_to_hash
from common.bus.effects import Publish, queue_ops
from common.config import DEFAULT_CONFIG_DIR
from common.contracts import AlertEvent, GovernorEvent, TradeClosed, decode, now_ms
from common.governance import ESS_TRIPPED, POLICY_UPDATED
from common.maths.ledger import Account, utc_day
from common.policy import Policy, load_policy_file
from common.streams import Service, Stream
from tests.helpers import hex16, poll_sync
from tests.integration.processes import Proc
from tests.integration.test_cli_streams import qt

D = Decimal
FAST = {"QT_BUS__BLOCK_MS": "100", "QT_RUNTIME__HEARTBEAT_INTERVAL_S": "0.5"}


def config_dir(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, target)
    return target


def governor(redis_url: str, tmp_path: Path, conf: Path, **env: str) -> Proc:
    return Proc(["-m", "services.governor"],
                {"REDIS_URL": redis_url, "QT_CONFIG_DIR": str(conf), **FAST, **env},
                tmp_path / "governor.log").start()


def events(client: redis.Redis, kind: str | None = None) -> list[GovernorEvent]:
    found = [decode(GovernorEvent, f) for _, f in client.xrange(keys.stream(Stream.GOVERNOR_EVENTS))]
    return [e for e in found if kind is None or e.kind == kind]


def alerts(client: redis.Redis) -> list[AlertEvent]:
    return [decode(AlertEvent, f) for _, f in client.xrange(keys.stream(Stream.ALERTS))]


def seed_account(client: redis.Redis, equity: str, peak: str, day_start: str) -> None:
    e, p = D(equity), D(peak)
    account = Account(equity=e, realized_pnl=e - D(day_start), fees=D("3"), peak_equity=p, drawdown=(p - e) / p,
                      day=utc_day(now_ms()), day_start_equity=D(day_start))
    client.hset(keys.ledger_account(), mapping=account_to_hash(account, now_ms()))


def test_policy_published_once_per_change_and_operator_version_kept(redis_url: str, tmp_path: Path) -> None:
    """At start the file's policy is written with its content version and one POLICY_UPDATED, and the
    switch is created ARMED; repeated checks publish nothing more; an operator's `qt policy set` holds
    over repeated checks; editing the file publishes the file's new version once."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    conf = config_dir(tmp_path)
    proc = governor(redis_url, tmp_path, conf, QT_GOVERNOR__POLICY_CHECK_INTERVAL_S="0.1")
    try:
        poll_sync(lambda: len(events(client, POLICY_UPDATED)) == 1 and client.exists(keys.ess()) == 1)
        from_file = load_policy_file(conf / "policy.toml")
        stored = client.hgetall(keys.policy_current())
        assert Policy.from_hash(stored).version == from_file.version == stored["file_version"]
        assert stored["origin"] == "file" and Policy.from_hash(stored).allowlist == from_file.allowlist
        assert client.hgetall(keys.ess())["state"] == "ARMED" and client.hgetall(keys.ess())["by"] == "governor"
        [loaded] = events(client, POLICY_UPDATED)
        assert loaded.source == Service.GOVERNOR and loaded.details["version"] == from_file.version

        done = qt(redis_url, "policy", "set", "max_open_positions", "3")
        assert done.returncode == 0, done.stdout + done.stderr
        operator_version = client.hget(keys.policy_current(), "version")
        assert operator_version != from_file.version
        time.sleep(1.0)  # an observation window of ~10 policy checks for a wrong revert to show up
        assert client.hget(keys.policy_current(), "version") == operator_version
        assert len(events(client, POLICY_UPDATED)) == 2

        text = (conf / "policy.toml").read_text(encoding="utf-8")
        (conf / "policy.toml").write_text(text.replace("max_leverage = 20", "max_leverage = 12"), encoding="utf-8")
        poll_sync(lambda: len(events(client, POLICY_UPDATED)) == 3)
        edited = Policy.from_hash(client.hgetall(keys.policy_current()))
        assert edited.limits.max_leverage == 12 and edited.limits.max_open_positions == 5
        assert events(client, POLICY_UPDATED)[-1].details["previous_version"] == operator_version
        proc.terminate()  # the exit code is the runner's (tests/integration/test_runner.py)
    finally:
        proc.kill()


def test_drawdown_trips_the_switch_once_on_the_timer(redis_url: str, tmp_path: Path) -> None:
    """A ledger 16 % below its peak (limit 15 %) trips the switch (by governor, reason naming the
    drawdown) with one ESS_TRIPPED and one alert, however many checks follow."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    proc = governor(redis_url, tmp_path, config_dir(tmp_path), QT_GOVERNOR__RISK_CHECK_INTERVAL_S="0.1")
    try:
        seed_account(client, equity="10080", peak="12000", day_start="10100")
        poll_sync(lambda: client.hget(keys.ess(), "state") == "TRIPPED")
        switch = client.hgetall(keys.ess())
        assert switch["by"] == "governor" and switch["reason"] == "drawdown 16.00% >= 15%"
        time.sleep(1.0)  # ~10 more checks: none may trip it again
        [tripped] = events(client, ESS_TRIPPED)
        assert tripped.details["limit"] == "drawdown" and tripped.details["value_pct"] == "16.00"
        [alert] = alerts(client)
        assert (alert.kind, alert.reason, alert.source) == (ESS_TRIPPED, switch["reason"], Service.GOVERNOR)
        proc.terminate()  # the exit code is the runner's (tests/integration/test_runner.py)
    finally:
        proc.kill()


def test_daily_loss_trips_on_a_closed_trade(redis_url: str, tmp_path: Path) -> None:
    """With the timer far away, a trade.closed makes the governor check the ledger at once: a 6 % loss
    today (limit 5 %) trips the switch, and the entry is acknowledged."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    proc = governor(redis_url, tmp_path, config_dir(tmp_path), QT_GOVERNOR__RISK_CHECK_INTERVAL_S="3600")
    try:
        poll_sync(lambda: client.hget(keys.ess(), "state") == "ARMED")
        poll_sync(lambda: "service_ready" in proc.log())
        seed_account(client, equity="9400", peak="10000", day_start="10000")
        closed = TradeClosed(source=Service.HARVEST_BRAIN, trace_id=hex16("loss"), position_plan_id=hex16("p"),
                             symbol="BTCUSDT", side="LONG", qty=D("0.1"), entry_price=D("50000"),
                             exit_price=D("44000"), realized_pnl=D("-600"), fees=D("3"), pnl_net=D("-603"),
                             opened_at=now_ms() - 60_000, closed_at=now_ms(), exit_reason="stop_loss")
        pipe = client.pipeline(transaction=True)
        queue_ops(pipe, [Publish(Stream.TRADE_CLOSED, closed)], service=Service.HARVEST_BRAIN)  # type: ignore[arg-type]
        pipe.execute()
        poll_sync(lambda: client.hget(keys.ess(), "state") == "TRIPPED", timeout_s=10)
        assert client.hget(keys.ess(), "reason") == "daily_loss 6.00% >= 5%"
        [tripped] = events(client, ESS_TRIPPED)
        assert tripped.trace_id == closed.trace_id  # the chain continues from the trade that caused it
        poll_sync(lambda: client.xpending(keys.stream(Stream.TRADE_CLOSED), Service.GOVERNOR)["pending"] == 0)
        proc.terminate()  # the exit code is the runner's (tests/integration/test_runner.py)
    finally:
        proc.kill()


def test_bad_policy_file_stops_the_start_with_exit_78(redis_url: str, tmp_path: Path) -> None:
    """A policy file that fails validation stops the governor at start with one line and exit 78."""
    conf = config_dir(tmp_path)
    (conf / "policy.toml").write_text('allowlist = ["BTCUSDT"]\n[limits]\nmax_leverage = 500\n', encoding="utf-8")
    proc = governor(redis_url, tmp_path, conf)
    assert proc.popen is not None and proc.popen.wait(30) == 78
    assert "limits.max_leverage" in proc.log()
