"""harvest_brain and position_monitor as real processes over a real Redis and the paper exchange: fills
booked once across a restart, drift of each kind reported within one interval, snapshots, and the API
(positions, the non-ASCII symbol, 404, PnL equal to the sum of trade.closed, trades, reconcile, OpenAPI)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis as sync_redis
from redis.asyncio import Redis

from common import keys
from common.bus import publish
from common.contracts import ExecutionResult, PositionSide, ReconcileEvent, Side, TradeClosed, decode, now_ms
from common.exchange.paper import PaperExchange
from common.market import price_mapping
from common.positions import PositionRecord
from common.streams import Service, Stream
from ops.redis_server import free_port
from tests.helpers import fast_settings, hex16, poll_sync, run
from tests.integration.processes import Proc

D = Decimal
BNB_LIFE = "币安人生USDT"
FAST = {"QT_BUS__BLOCK_MS": "100", "QT_BUS__CLAIM_IDLE_MS": "500", "QT_RUNTIME__HEARTBEAT_INTERVAL_S": "0.5",
        "QT_RUNTIME__METRICS_PORTS__HARVEST_BRAIN": "0"}


def fill(n: int, symbol: str, side: str, qty: str, price: str, fee: str, kind: str, after: str, plan: str,
         reason: str | None = None) -> ExecutionResult:
    return ExecutionResult(
        source=Service.APPLY_LAYER, trace_id=hex16(f"trace-{plan}"), fill_id=f"f-{n}",
        plan_id=plan if kind == "ENTRY" else hex16(f"exit-{n}"), symbol=symbol, side=side, qty=D(qty),
        price=D(price), fee=D(fee), reduce_only=kind != "ENTRY", kind=kind, position_after=D(after),
        position_plan_id=plan, reason=reason)


class Monitor:
    """position_monitor as a process, and a client of its API."""

    def __init__(self, redis_url: str, tmp_path: Path, **monitor: str) -> None:
        self.port = free_port()
        env = {"REDIS_URL": redis_url, "QT_HTTP__PORTS__POSITION_MONITOR": str(self.port), **FAST}
        env.update({f"QT_MONITOR__{k.upper()}": v for k, v in monitor.items()})
        self.proc = Proc(["-m", "services.position_monitor"], env, tmp_path / "position_monitor.log")

    def get(self, path: str, **params: object) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", params=params, timeout=5)  # type: ignore[arg-type]

    def wait_ready(self) -> None:
        def up() -> bool:
            try:
                return self.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        poll_sync(up, timeout_s=30)


@pytest.fixture
def client(redis_url: str) -> Iterator[sync_redis.Redis]:
    c = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()


def stream(client: sync_redis.Redis, name: str) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(keys.stream(name))]


def test_books_across_a_restart_and_pnl_equals_the_trades(redis_url: str, client: sync_redis.Redis,
                                                          tmp_path: Path) -> None:
    """harvest_brain books fills from the real stream; killed mid-trade and restarted it continues the
    same trade; a fill published twice is booked once. position_monitor's /pnl then shows the account
    realized PnL equal to the sum of /trades (and of trade.closed), newest trade first."""
    btc, eth = hex16("btc"), hex16("eth")
    first_half = [fill(1, "BTCUSDT", "BUY", "0.02", "50000", "0.5", "ENTRY", "0.02", btc),
                  fill(2, "BTCUSDT", "SELL", "0.01", "51000", "0.255", "EXIT", "0.01", btc, "harvest_tp1"),
                  fill(3, BNB_LIFE, "SELL", "100", "0.2", "0.01", "ENTRY", "-100", eth)]
    second_half = [fill(4, "BTCUSDT", "SELL", "0.01", "50500", "0.2525", "STOP", "0", btc, "trailing_stop"),
                   fill(4, "BTCUSDT", "SELL", "0.01", "50500", "0.2525", "STOP", "0", btc, "trailing_stop"),
                   fill(5, BNB_LIFE, "BUY", "100", "0.25", "0.0125", "STOP", "0", eth)]

    async def send(fills: list[ExecutionResult]) -> None:
        r = Redis.from_url(redis_url, decode_responses=True)
        for f in fills:
            await publish(r, Service.APPLY_LAYER, (Stream.EXECUTION_RESULT, f))
        await r.aclose()

    env = {"REDIS_URL": redis_url, **FAST}
    run(send(first_half))
    brain = Proc(["-m", "services.harvest_brain"], env, tmp_path / "harvest_brain.log").start()
    monitor = Monitor(redis_url, tmp_path)
    monitor.proc.start()
    try:
        poll_sync(lambda: client.hget(keys.position_ledger(BNB_LIFE), "last_fill_id") == "f-3", timeout_s=30)
        assert D(client.hget(keys.ledger_trade("BTCUSDT"), "qty") or 0) == D("0.01")  # mid-trade
        assert brain.terminate() == 0, brain.log()[-3000:]
        run(send(second_half))
        brain = Proc(["-m", "services.harvest_brain"], env, tmp_path / "harvest_brain.log").start()
        poll_sync(lambda: len(stream(client, Stream.TRADE_CLOSED)) == 2, timeout_s=30)
        poll_sync(lambda: client.hget(keys.position_ledger(BNB_LIFE), "trades") == "1", timeout_s=10)

        trades = [decode(TradeClosed, f) for f in stream(client, Stream.TRADE_CLOSED)]
        # BTC: 0.01·(51000 − 50000) + 0.01·(50500 − 50000) = 15; fees 1.0075
        assert (trades[0].realized_pnl, trades[0].fees, trades[0].exit_reason) == (D("15"), D("1.0075"),
                                                                                  "trailing_stop")
        assert (trades[0].qty, trades[0].exit_price) == (D("0.02"), D("50750"))
        # 币安人生 short 100 at 0.2 stopped at 0.25: −5; fees 0.0225
        assert (trades[1].symbol, trades[1].realized_pnl, trades[1].exit_reason) == (BNB_LIFE, D("-5"), "stop_loss")
        monitor.wait_ready()
        pnl = monitor.get("/pnl").json()
        listed = monitor.get("/trades", limit=10).json()
        assert [t["symbol"] for t in listed] == [BNB_LIFE, "BTCUSDT"]
        assert D(pnl["account"]["realized_pnl"]) == sum((D(t["realized_pnl"]) for t in listed), D(0)) == D("10")
        assert D(pnl["account"]["fees"]) == D("1.03")
        assert D(pnl["account"]["equity"]) == D("10000") + sum((t.pnl_net for t in trades), D(0)) == D("10008.97")
        by_symbol = {row["symbol"]: row for row in pnl["symbols"]}
        assert (by_symbol["BTCUSDT"]["wins"], by_symbol[BNB_LIFE]["losses"]) == (1, 1)
        assert monitor.get("/trades", limit=1).json()[0]["symbol"] == BNB_LIFE
        poll_sync(lambda: monitor.get("/results").json()["fills"].get("STOP") == 3, timeout_s=10)
        results = monitor.get("/results").json()
        assert results["fills"] == {"ENTRY": 2, "EXIT": 1, "STOP": 3}
        assert results["recent"][0]["entry_id"] > results["recent"][-1]["entry_id"]
        assert brain.terminate() == 0, brain.log()[-3000:]
        assert monitor.proc.terminate() == 0, monitor.proc.log()[-3000:]
    finally:
        brain.kill()
        monitor.proc.kill()


async def open_on_paper(redis_url: str, orders: list[tuple[str, Side, str]], prices: dict[str, str]) -> dict[str, D]:
    """Set the price hashes and open positions on the paper exchange; the fill price of each."""
    r = Redis.from_url(redis_url, decode_responses=True)
    paper = PaperExchange.from_settings(r, fast_settings(redis_url))
    await paper.start()
    for symbol, price in prices.items():
        await r.hset(keys.market_price(symbol), mapping=price_mapping(D(price), D(price), now_ms()))
    filled = {}
    for n, (symbol, side, qty) in enumerate(orders):
        order = await paper.place_market_order(symbol, side, D(qty), f"t{now_ms()}-{n}", reduce_only=False)
        filled[symbol] = order.avg_price
    await r.aclose()
    return filled


def seed_hash(client: sync_redis.Redis, symbol: str, side: PositionSide, qty: str, price: D) -> None:
    record = PositionRecord(symbol=symbol, side=side, quantity=D(qty), entry_price=price, leverage=5,
                            stop_loss=None, take_profit=None, plan_id=hex16("plan" + symbol), created_at=now_ms(),
                            updated_at=now_ms(), trace_id=hex16("trace" + symbol))
    client.hset(keys.position(symbol), mapping=record.to_hash())


def test_reconcile_snapshots_and_api(redis_url: str, client: sync_redis.Redis, tmp_path: Path) -> None:
    """With the hashes agreeing with the paper exchange there is no drift; each kind injected afterwards
    is reported once, within one reconcile interval, in reconcile.events and alerts; fixing one gives
    RESOLVED. Snapshots mark every position; the API serves positions (the non-ASCII symbol too), 404,
    the last reconciliation, /health, /metrics, and an OpenAPI document listing every route."""
    prices = {"BTCUSDT": "50000", BNB_LIFE: "0.2", "ETHUSDT": "3000", "XRPUSDT": "0.5", "HYPEUSDT": "30",
              "SOLUSDT": "150"}
    filled = run(open_on_paper(redis_url, [("BTCUSDT", Side.BUY, "0.01"), (BNB_LIFE, Side.BUY, "100")], prices))
    seed_hash(client, "BTCUSDT", PositionSide.LONG, "0.01", filled["BTCUSDT"])
    seed_hash(client, BNB_LIFE, PositionSide.LONG, "100", filled[BNB_LIFE])
    interval_s = 2.0
    monitor = Monitor(redis_url, tmp_path, reconcile_interval_s=str(interval_s), snapshot_interval_s="0.5",
                      confirm_delay_s="0.2")
    monitor.proc.start()
    try:
        monitor.wait_ready()
        poll_sync(lambda: monitor.get("/reconcile").json()["at"] is not None, timeout_s=20)
        clean = monitor.get("/reconcile").json()
        assert (clean["drifts"], clean["redis_positions"], clean["exchange_positions"]) == ([], 2, 2)

        # snapshots: BTC long 0.01 marked at 50000 (entry includes 2 bps slippage)
        poll_sync(lambda: client.exists(keys.position_snapshot(BNB_LIFE)) == 1, timeout_s=10)
        snap = client.hgetall(keys.position_snapshot("BTCUSDT"))
        assert D(snap["position_amt"]) == D("0.01") and D(snap["mark_price"]) == D("50000")
        assert D(snap["unrealized_pnl"]) == (D("50000") - filled["BTCUSDT"]) * D("0.01")
        assert 0 < client.pttl(keys.position_snapshot("BTCUSDT")) <= 60_000
        assert {f["symbol"] for f in stream(client, Stream.POSITION_SNAPSHOT)} == {"BTCUSDT", BNB_LIFE}

        # inject one drift of each kind
        injected = now_ms()
        run(open_on_paper(redis_url, [("ETHUSDT", Side.BUY, "0.5"), ("XRPUSDT", Side.BUY, "60"),
                                      ("HYPEUSDT", Side.SELL, "1")], {}))
        seed_hash(client, "SOLUSDT", PositionSide.LONG, "2", D("150"))
        seed_hash(client, "XRPUSDT", PositionSide.LONG, "100", D("0.5"))
        seed_hash(client, "HYPEUSDT", PositionSide.LONG, "1", D("30"))
        poll_sync(lambda: len(stream(client, Stream.RECONCILE_EVENTS)) >= 4, timeout_s=15)
        elapsed_s = (now_ms() - injected) / 1000
        events = {e.symbol: e for e in (decode(ReconcileEvent, f) for f in stream(client, Stream.RECONCILE_EVENTS))}
        assert elapsed_s <= interval_s + 0.2 + 1.5, elapsed_s
        assert {s: e.kind.value for s, e in events.items()} == {
            "ETHUSDT": "MISSING_IN_REDIS", "SOLUSDT": "MISSING_ON_EXCHANGE", "XRPUSDT": "QTY_MISMATCH",
            "HYPEUSDT": "SIDE_MISMATCH"}
        assert (events["XRPUSDT"].redis_qty, events["XRPUSDT"].exchange_qty) == (D("100"), D("60"))
        assert (events["HYPEUSDT"].redis_qty, events["HYPEUSDT"].exchange_qty) == (D("1"), D("-1"))
        assert all(e.action_taken == "reported" for e in events.values())
        alerts = stream(client, Stream.ALERTS)
        assert sorted(a["reason"].split(":")[0] for a in alerts) == sorted(e.kind.value for e in events.values())
        assert stream(client, Stream.APPLY_PLAN) == []  # report only

        # still drifting two passes later: not reported again; then one drift ends -> RESOLVED once
        seen = monitor.get("/reconcile").json()["at"]
        poll_sync(lambda: monitor.get("/reconcile").json()["at"] > seen + interval_s * 1000, timeout_s=15)
        assert len(stream(client, Stream.RECONCILE_EVENTS)) == 4
        client.delete(keys.position("SOLUSDT"))
        poll_sync(lambda: len(stream(client, Stream.RECONCILE_EVENTS)) == 5, timeout_s=15)
        resolved = decode(ReconcileEvent, stream(client, Stream.RECONCILE_EVENTS)[-1])
        assert (resolved.symbol, resolved.kind.value) == ("SOLUSDT", "RESOLVED")
        poll_sync(lambda: len(monitor.get("/reconcile").json()["drifts"]) == 3, timeout_s=10)
        report = monitor.get("/reconcile").json()
        assert {d["symbol"]: d["kind"] for d in report["drifts"]} == {
            "ETHUSDT": "MISSING_IN_REDIS", "XRPUSDT": "QTY_MISMATCH", "HYPEUSDT": "SIDE_MISMATCH"}

        # the API
        positions = monitor.get("/positions").json()
        assert [p["symbol"] for p in positions] == sorted(["BTCUSDT", BNB_LIFE, "XRPUSDT", "HYPEUSDT"])
        one = monitor.get("/positions/" + quote(BNB_LIFE))
        assert one.status_code == 200
        body = one.json()
        assert (body["symbol"], body["side"], D(body["quantity"])) == (BNB_LIFE, "LONG", D("100"))
        assert D(body["snapshot"]["position_amt"]) == D("100")
        missing = monitor.get("/positions/NOPEUSDT")
        assert missing.status_code == 404 and "NOPEUSDT" in missing.json()["detail"]
        health = monitor.get("/health").json()
        assert health["healthy"] is True and health["open_drifts"] == 3 and health["exchange"] == "paper"
        metrics = monitor.get("/metrics").text
        assert "qt_monitor_drift 3.0" in metrics
        spec = monitor.get("/openapi.json").json()
        assert set(spec["paths"]) == {"/positions", "/positions/{symbol}", "/pnl", "/trades", "/reconcile",
                                      "/results", "/health", "/metrics"}
        for path, item in spec["paths"].items():
            assert item["get"]["description"], path
            if path != "/metrics":
                assert item["get"]["responses"]["200"]["content"]["application/json"]["schema"], path
        assert "404" in spec["paths"]["/positions/{symbol}"]["get"]["responses"]
        assert monitor.proc.terminate() == 0
    finally:
        monitor.proc.kill()
    # position_monitor never writes a position hash
    assert client.hget(keys.position("XRPUSDT"), "quantity") == "100"
