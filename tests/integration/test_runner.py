"""The service runner as systemd sees it: READY=1 once groups exist, WATCHDOG=1 from the loop,
STOPPING=1 on SIGTERM, and a heartbeat key with a TTL."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import redis

from common import keys
from common.streams import Service, Stream
from tests.integration.processes import Proc


def test_notify_protocol_and_heartbeat(redis_url: str, tmp_path: Path) -> None:
    """A service under a notify socket says READY=1 after creating its group, WATCHDOG=1 repeatedly,
    keeps quantum:heartbeat:<service>:<host> alive with a TTL, and says STOPPING=1 on SIGTERM."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    proc = Proc(["-m", "tests.integration.bus_worker", "hop1"],
                {"REDIS_URL": redis_url, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000",
                 "QT_RUNTIME__HEARTBEAT_INTERVAL_S": "0.2", "QT_BUS__BLOCK_MS": "100"},
                tmp_path / "worker.log").start()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert sock.recv(64) == b"READY=1"
        groups = client.xinfo_groups(keys.stream(Stream.TRADE_INTENT))
        assert [g["name"] for g in groups] == [Service.INTENT_BRIDGE]
        watchdogs = 0
        while watchdogs < 3:
            assert sock.recv(64) == b"WATCHDOG=1"
            watchdogs += 1
        [key] = client.keys(keys.heartbeat(Service.INTENT_BRIDGE, "*"))
        beat = json.loads(client.get(key) or "{}")
        assert beat["pid"] == proc.popen.pid if proc.popen else False
        assert 0 < client.pttl(key) <= 20_000
        assert beat["consumer"] == f"{Service.INTENT_BRIDGE}@{socket.gethostname()}"
        proc.popen.send_signal(15) if proc.popen else None
        messages = []
        deadline = time.monotonic() + 20
        while b"STOPPING=1" not in messages and time.monotonic() < deadline:
            messages.append(sock.recv(64))
        assert b"STOPPING=1" in messages
        assert proc.popen is not None and proc.popen.wait(20) == 0
        assert client.exists(key) == 0
    finally:
        proc.kill()
        sock.close()


def test_http_service_serves_health_and_metrics_and_stops_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    """A service that serves HTTP answers /health and /metrics on its configured port (127.0.0.1), and
    SIGTERM stops the server and the process with exit code 0."""
    import httpx

    from ops.redis_server import free_port
    from tests.helpers import poll_sync

    port = free_port()
    proc = Proc(["-m", "tests.integration.bus_worker", "http"],
                {"REDIS_URL": redis_url, "QT_HTTP__PORTS__TRADING_BOT": str(port)}, tmp_path / "http.log").start()
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        poll_sync(up)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
        assert health["service"] == Service.TRADING_BOT and health["healthy"] is True
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics/", timeout=2, follow_redirects=True).text
        assert "python_info" in metrics
        assert proc.terminate() == 0
    finally:
        proc.kill()


def test_a_hung_loop_withholds_the_watchdog(redis_url: str, tmp_path: Path) -> None:
    """WATCHDOG=1 is sent only while every loop makes progress: once a loop hangs, the pings stop (so
    systemd's WatchdogSec restarts the service) and the runner logs watchdog_withheld."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    proc = Proc(["-m", "tests.integration.bus_worker", "hang"],
                {"REDIS_URL": redis_url, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000",
                 "QT_BUS__BLOCK_MS": "100"}, tmp_path / "hang.log").start()
    try:
        assert sock.recv(64) == b"READY=1"
        assert sock.recv(64) == b"WATCHDOG=1"  # healthy at first
        sock.settimeout(0.2)
        deadline = time.monotonic() + 15
        while "watchdog_withheld" not in proc.log() and time.monotonic() < deadline:
            try:
                sock.recv(64)
            except TimeoutError:
                continue
        assert "watchdog_withheld" in proc.log()
        sock.settimeout(1.5)  # three watchdog periods: nothing more arrives while the loop hangs
        got = []
        try:
            while True:
                got.append(sock.recv(64))
        except TimeoutError:
            pass
        assert b"WATCHDOG=1" not in got
        assert proc.alive
    finally:
        proc.kill()
        sock.close()


def test_a_second_instance_under_the_same_name_refuses_to_start(redis_url: str, tmp_path: Path) -> None:
    """Two instances of one service on one host under one name would share a consumer name and a
    heartbeat: the second refuses to start — one line naming QT_INSTANCE, exit 78 — and the first's
    heartbeat is untouched (a differently named instance starts fine)."""
    env = {"REDIS_URL": redis_url, "QT_BUS__BLOCK_MS": "100"}
    first = Proc(["-m", "tests.integration.bus_worker", "hop1"], env, tmp_path / "first.log").start()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    key = keys.heartbeat(Service.INTENT_BRIDGE, socket.gethostname())
    try:
        from tests.helpers import poll_sync

        poll_sync(lambda: "service_ready" in first.log())
        second = Proc(["-m", "tests.integration.bus_worker", "hop1"], env, tmp_path / "second.log").start()
        assert second.popen is not None and second.popen.wait(30) == 78
        assert "QT_INSTANCE" in second.log() and "configuration_error" in second.log()
        assert first.alive
        assert json.loads(client.get(key) or "{}")["pid"] == (first.popen.pid if first.popen else None)
        third = Proc(["-m", "tests.integration.bus_worker", "hop1"], {**env, "QT_INSTANCE": "2"},
                     tmp_path / "third.log").start()
        poll_sync(lambda: "service_ready" in third.log())
        assert third.terminate() == 0
        assert client.exists(key) == 1
    finally:
        first.kill()


def test_a_start_that_meets_an_outage_waits_and_starts_again(redis_url: str, tmp_path: Path) -> None:
    """Found by the fleet chaos run in CI: position_monitor restarted while Redis restarted, its setup met
    "redis unavailable" and the process died (exit 1). A start that meets an outage (Redis, or the exchange
    answering TemporaryError) waits and starts again — what the failed attempt registered is dropped (one
    consumer, not three) — and the service comes up, consumes, and stops with 0."""
    proc = Proc(["-m", "tests.integration.bus_worker", "flaky_setup"],
                {"REDIS_URL": redis_url, "QT_BUS__BLOCK_MS": "100", "QT_BUS__RECONNECT_INITIAL_MS": "50"},
                tmp_path / "worker.log").start()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + 20
        while '"service_ready"' not in proc.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
        events = [line["event"] for line in lines]
        assert events.count("setup_waiting") == 2 and "service_ready" in events
        ready = next(line for line in lines if line["event"] == "service_ready")
        assert ready["consumes"] == [Stream.TRADE_INTENT]
        assert proc.popen is not None and proc.popen.poll() is None
        proc.popen.send_signal(15)
        assert proc.popen.wait(20) == 0
    finally:
        proc.kill()
        client.close()
