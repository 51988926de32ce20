"""``qt streams init`` and ``qt streams`` against a real Redis: the table an operator reads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import redis

from common import keys, streams
from common.streams import Service, Stream
from tests.integration.test_bus_processes import publish_intents

REPO = Path(__file__).resolve().parents[2]


def qt(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update({"REDIS_URL": redis_url, "PYTHONPATH": str(REPO), "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_init_creates_every_registered_group_at_zero(redis_url: str) -> None:
    """init creates each registered group once (at 0, with the stream); running it again creates none."""
    first = qt(redis_url, "streams", "init")
    assert first.returncode == 0, first.stderr
    total = sum(len(s.groups) for s in streams.grouped_streams())
    assert f"{total} groups registered, {total} created, 0 existed" in first.stdout
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for spec in streams.grouped_streams():
        groups = client.xinfo_groups(spec.key)
        assert sorted(g["name"] for g in groups) == sorted(spec.groups)
        assert all(g["last-delivered-id"] == "0-0" for g in groups)
    again = qt(redis_url, "streams", "init")
    assert f"{total} groups registered, 0 created, {total} existed" in again.stdout


def test_table_shows_length_groups_pending_lag_and_unregistered(redis_url: str) -> None:
    """The table gives each stream's length, groups, consumers, pending and lag, and flags a stream that
    is not in the registry (the old metricpack_builder kind of finding)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    qt(redis_url, "streams", "init")
    publish_intents(client, 0, 7)
    client.xreadgroup(Service.INTENT_BRIDGE, "intent_bridge@h", {keys.stream(Stream.TRADE_INTENT): ">"}, count=2)
    client.xadd(keys.stream("metricpack.raw"), {"x": "1"})
    done = qt(redis_url, "streams")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if "trade.intent " in line)
    cells = [c.strip() for c in re.split(r"[│|]", row) if c.strip()]
    # stream, length, added (Redis 7 only: 6.2's XINFO has no entries-added), groups, consumers, pending, lag,
    # last entry
    header = next(line for line in done.stdout.splitlines() if "length" in line)
    at = 3 if "added" in header else 2
    assert cells[0] == "trade.intent"
    assert cells[1] == "7"
    assert cells[at] == Service.INTENT_BRIDGE
    assert cells[at + 1:at + 4] == ["1", "2", "5"]
    assert "metricpack.raw (not registered)" in done.stdout


def test_streams_without_redis_exits_69_with_one_line(tmp_path: Path) -> None:
    """With nothing at REDIS_URL the command says so in one line and exits 69 (EX_UNAVAILABLE)."""
    done = qt("redis://127.0.0.1:1/0", "streams")
    assert done.returncode == 69
    assert "redis unavailable at redis://127.0.0.1:1/0" in done.stdout
