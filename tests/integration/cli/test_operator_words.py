"""What ``qt`` says to an operator: help without ``<bool>``, local times (epoch ms in ``--format json``),
folded monitoring entries in ``qt trace``, a dead letter as a finding, the last reconcile from
position_monitor's /health, an allowlist checked against the exchange, negative numbers as values, and no
"added" column on Redis 6.2."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from zoneinfo import ZoneInfo

import pytest
import redis

from common import keys
from common.contracts import DeadLetter, ExitbrainPnl, PositionSnapshot, TradeClosed, encode
from common.exchange.rules import SymbolRules
from common.policy import Policy
from common.streams import Stream
from ops.redis_server import free_port
from tests.integration.cli.qt import qt
from tests.integration.cli.test_commands import NOW, add, seed_chain
from tests.integration.cli.test_wiring import healthy

D = Decimal
#: a zone with a half-hour offset, so a local time cannot pass for UTC by chance
ZONE = "Asia/Kolkata"
TZ = {"TZ": ZONE}


def local(ms: int, spec: str = "seconds") -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ZoneInfo(ZONE)).isoformat(timespec=spec)


@pytest.mark.parametrize("args", [(), ("trace",), ("policy", "set"), ("ess", "trip"), ("streams",), ("run",)])
def test_help_shows_no_type_after_a_flag(redis_url: str, args: tuple[str, ...]) -> None:
    """`--help` lists `--help` (and every flag) without a `<bool>` as if it took a value."""
    done = qt(redis_url, *args, "--help")
    assert done.returncode == 0, done.stderr
    assert "<bool>" not in done.stdout and "--help" in done.stdout


def test_trades_show_local_times_and_json_keeps_epoch_ms(redis_url: str) -> None:
    """qt trades prints closed_at as a local ISO time; --format json one object per trade, times in ms."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed_chain(client)
    add(client, Stream.TRADE_CLOSED, TradeClosed(
        source="harvest_brain", trace_id="cd" * 8, position_plan_id="ef" * 8, symbol="SOLUSDT", side="LONG",
        qty=D("36"), entry_price=D("153.4733333333333333333333333"), exit_price=D("152.53"),
        realized_pnl=D("-33.96"), fees=D("5.50806"), pnl_net=D("-39.46806"), opened_at=NOW, closed_at=NOW + 90_000,
        exit_reason="stop_loss"))
    text = qt(redis_url, "trades", env=TZ)
    assert text.returncode == 0, text.stderr
    assert local(NOW + 1) in text.stdout and "+05:30" in text.stdout and str(NOW + 1) not in text.stdout
    assert "153.47333333 " in text.stdout and "1533333" not in text.stdout  # a VWAP to 8 decimals
    as_json = qt(redis_url, "trades", "--format", "json", env=TZ)
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["symbol"] for r in rows] == ["SOLUSDT", "BTCUSDT"]  # newest first
    row = rows[1]
    assert row["closed_at"] == NOW + 1 and row["opened_at"] == NOW and row["exit_reason"] == "take_profit"
    assert row["pnl_net"] == "0.078"
    assert qt(redis_url, "trades", "--format", "yaml").returncode == 2


def seed_monitoring(client: redis.Redis, position_plan_id: str, trace_id: str, n: int) -> None:
    """``n`` position.snapshot and ``n`` exitbrain.pnl entries of the open position, interleaved."""
    for i in range(n):
        add(client, Stream.POSITION_SNAPSHOT, PositionSnapshot(
            source="position_monitor", trace_id=trace_id, symbol="BTCUSDT", position_amt=D("0.02"),
            entry_price=D("100"), mark_price=D(100 + i), unrealized_pnl=D(i) / 50, leverage=10))
        add(client, Stream.EXITBRAIN_PNL, ExitbrainPnl(
            source="exitbrain", trace_id=trace_id, symbol="BTCUSDT", position_plan_id=position_plan_id,
            mark_price=D(100 + i), unrealized_pnl=D(i) / 50, r_multiple=0.1 * i, kill_score=0.1))


def streams_of(lines: list[str]) -> list[str]:
    """The stream of every entry line of qt trace's text (``<time>  <stream>  <summary>``)."""
    return [line.split()[1] for line in lines if line and not line[0].isspace()]


def test_trace_folds_monitoring_entries_unless_all(redis_url: str) -> None:
    """An open position's 12 snapshots and 12 PnL entries show as the first and the last of each with the
    count; --all shows all 24; --format json folds too, the last carrying how many it stands for."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    intent_id, plan_id = seed_chain(client)
    trace_id = json.loads(qt(redis_url, "trace", intent_id, "--format", "json").stdout.splitlines()[0])["trace_id"]
    seed_monitoring(client, plan_id, trace_id, 12)

    folded = qt(redis_url, "trace", intent_id, env=TZ)
    assert folded.returncode == 0, folded.stderr
    lines = folded.stdout.splitlines()
    assert streams_of(lines).count("position.snapshot") == 2 and streams_of(lines).count("exitbrain.pnl") == 2
    assert "… 10 more position.snapshot entries (--all shows them)" in folded.stdout
    assert "… 10 more exitbrain.pnl entries" in folded.stdout and "(last of 12)" in folded.stdout

    everything = qt(redis_url, "trace", intent_id, "--all", env=TZ).stdout.splitlines()
    assert streams_of(everything).count("position.snapshot") == 12
    assert streams_of(everything).count("exitbrain.pnl") == 12 and "more" not in "".join(everything)

    rows = [json.loads(line) for line in qt(redis_url, "trace", intent_id, "--format", "json").stdout.splitlines()]
    snapshots = [r for r in rows if r["stream"] == "position.snapshot"]
    assert len(snapshots) == 2 and snapshots[-1]["folded"] == 10 and "folded" not in snapshots[0]
    assert all(r["at"] == int(r["id"].split("-")[0]) for r in rows)
    assert lines[0].startswith(local(rows[0]["at"], "milliseconds") + "  trade.intent")
    assert len(qt(redis_url, "trace", intent_id, "--all", "--format", "json").stdout.splitlines()) == 7 + 24


def dead_letter(client: redis.Redis, error: str) -> None:
    client.xadd(keys.dlq_stream(Stream.APPLY_PLAN), encode(DeadLetter(
        source="apply_layer", trace_id="ab" * 8, origin_stream=Stream.APPLY_PLAN, origin_id="1-0",
        group="apply_layer", error=error, deliveries=6, payload={"plan_id": "x"})))


def test_a_dead_letter_is_a_finding_with_its_newest_error(redis_url: str) -> None:
    """qt wiring and qt status count a non-empty dead-letter stream as a finding naming the newest error
    (exit 1); a healthy fleet with empty DLQs has none."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    healthy(client)
    assert qt(redis_url, "wiring").returncode == 0
    dead_letter(client, "max_deliveries: delivered 6 times (limit 5); last error: old")
    dead_letter(client, "contract: ApplyPlan.steps: missing")
    done = qt(redis_url, "wiring", "--format", "json")
    assert done.returncode == 1
    [finding] = [f for f in json.loads(done.stdout)["findings"] if f["kind"] == "DLQ_NOT_EMPTY"]
    assert finding["subject"] == "apply.plan.dlq"
    assert "2 dead letter(s)" in finding["detail"] and "contract: ApplyPlan.steps: missing" in finding["detail"]
    assert "old" not in finding["detail"]
    status = qt(redis_url, "status")
    assert status.returncode == 1
    assert "findings: 1" in status.stdout and "DLQ_NOT_EMPTY apply.plan.dlq" in status.stdout
    assert "contract: ApplyPlan.steps: missing" in status.stdout


@pytest.fixture
def monitor_health() -> Iterator[tuple[int, dict[str, object]]]:
    """A stand-in for position_monitor's /health on a free port; the test sets what it answers."""
    body: dict[str, object] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps(body).encode()
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], body
    server.shutdown()
    server.server_close()


def test_status_shows_the_last_reconcile_from_position_monitor(redis_url: str,
                                                               monitor_health: tuple[int, dict[str, object]]) -> None:
    """qt status reads last_reconcile_at from position_monitor's /health (local time, age, open drifts);
    with nothing answering it says so instead of `none`."""
    port, body = monitor_health
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    healthy(client)
    at = int(datetime.now(tz=UTC).timestamp() * 1000) - 42_000
    body.update({"service": "position_monitor", "healthy": True, "last_reconcile_at": at, "open_drifts": 0})
    env = {**TZ, "QT_HTTP__PORTS__POSITION_MONITOR": str(port)}
    done = qt(redis_url, "status", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"last reconcile: {re.escape(local(at))} \((4[2-9]|5[0-9])s ago\), open drifts 0", done.stdout)
    body["last_reconcile_at"] = None
    assert "last reconcile: none yet" in qt(redis_url, "status", env=env).stdout
    away = qt(redis_url, "status", env={**TZ, "QT_HTTP__PORTS__POSITION_MONITOR": str(free_port())})
    assert "last reconcile: unknown (http://127.0.0.1:" in away.stdout and "did not answer" in away.stdout


def rules(symbol: str, status: str = "TRADING") -> str:
    return SymbolRules(symbol=symbol, status=status, tick_size=D("0.1"), step_size=D("0.001"), min_qty=D("0.001"),
                       max_qty=D("1000"), market_max_qty=D("100"), min_notional=D("5"), max_leverage=20).to_json()


def test_policy_set_checks_the_allowlist_and_takes_negative_values(redis_url: str) -> None:
    """An allowlist naming a symbol the exchange does not list (or not as TRADING) is refused, exit 2,
    nothing published, unless --force (then a warning); an empty allowlist is published with a warning;
    a negative number is a value (refused by its bound, not taken for an option)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset(keys.exchange_symbols(), mapping={"BTCUSDT": rules("BTCUSDT"), "ETHUSDT": rules("ETHUSDT"),
                                                  "LUNAUSDT": rules("LUNAUSDT", "SETTLING")})
    refused = qt(redis_url, "policy", "set", "allowlist", "BTCUSDT,NOPEUSDT,LUNAUSDT")
    assert refused.returncode == 2, refused.stdout
    assert "not listed by the exchange: NOPEUSDT" in refused.stdout
    assert "listed but not TRADING: LUNAUSDT (SETTLING)" in refused.stdout and "--force" in refused.stdout
    assert not client.exists(keys.policy_current())

    forced = qt(redis_url, "policy", "set", "allowlist", "BTCUSDT,NOPEUSDT", "--force")
    assert forced.returncode == 0, forced.stdout
    assert "warning (--force): not listed by the exchange: NOPEUSDT" in forced.stdout
    assert Policy.from_hash(client.hgetall(keys.policy_current())).allowlist == ("BTCUSDT", "NOPEUSDT")

    fine = qt(redis_url, "policy", "set", "allowlist", "BTCUSDT,ETHUSDT")
    assert fine.returncode == 0 and "warning" not in fine.stdout
    empty = qt(redis_url, "policy", "set", "allowlist", "")
    assert empty.returncode == 0 and "the allowlist is empty: no new position opens" in empty.stdout
    assert Policy.from_hash(client.hgetall(keys.policy_current())).allowlist == ()

    negative = qt(redis_url, "policy", "set", "max_leverage", "-5")
    assert negative.returncode == 2 and "invalid policy" in negative.stdout and "max_leverage" in negative.stdout
    assert "No such option" not in negative.stdout + negative.stderr
    typo = qt(redis_url, "policy", "set", "max_leverage", "--froce")
    assert typo.returncode == 2 and "no such option: --froce" in typo.stdout


def test_streams_has_no_added_column_on_redis_62(redis_url: str) -> None:
    """The bundled Redis 6.2 gives no entries-added: qt streams leaves the column out instead of `-`."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    version = str(client.info("server")["redis_version"])
    client.xadd(keys.stream(Stream.TRADE_INTENT), {"x": "1"})
    done = qt(redis_url, "streams")
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if "stream" in line and "length" in line)
    assert ("added" in header) == (int(version.split(".")[0]) >= 7), (version, header)
