"""Redis servers started with a generated ACL file (the bundled 6.2, and a Redis 7 when installed)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from ops import acl
from ops.redis_server import free_port, server_args

INSTANCE = "opshost"
PASSWORDS = {user: f"pw-{user}" for user in acl.users()}


@dataclass
class AclRedis:
    port: int
    acl_text: str

    def url(self, user: str) -> str:
        return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{self.port}/0"

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user), decode_responses=True, socket_timeout=5)


def _redis7_binary() -> str | None:
    path = shutil.which("redis-server")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    version = out.split("v=", 1)[1].split()[0] if "v=" in out else "0"
    return path if int(version.split(".")[0]) >= 7 else None


def _start(binary: str | None, dialect: acl.Dialect, tmp: Path) -> Iterator[AclRedis]:
    text = acl.render(dialect, passwords=PASSWORDS, instances=[INSTANCE])
    aclfile = tmp / "users.acl"
    aclfile.write_text(text, encoding="utf-8")
    port = free_port()
    args = [*server_args(port, tmp), "--aclfile", str(aclfile)]
    if binary is not None:
        args[0] = binary
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = AclRedis(port, text)
    deadline = time.monotonic() + 10
    try:
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"redis-server refused the ACL file: {err.strip()}")
            try:
                if server.client(acl.ADMIN).ping():
                    break
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield server
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr:
            process.stderr.close()


@pytest.fixture(scope="module")
def acl_redis62(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    """The bundled Redis 6.2 with the 6.2 ACL file."""
    yield from _start(None, "6.2", tmp_path_factory.mktemp("acl62"))


@pytest.fixture(scope="module")
def acl_redis7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    """A Redis 7 (``redis-server`` on PATH) with the 7 ACL file; skipped when there is none."""
    binary = _redis7_binary()
    if binary is None:
        pytest.skip("no Redis 7 redis-server on PATH")
    yield from _start(binary, "7", tmp_path_factory.mktemp("acl7"))


@pytest.fixture(params=["6.2", "7"])
def acl_redis(request: pytest.FixtureRequest) -> AclRedis:
    """Each dialect's server, emptied before the test."""
    server: AclRedis = request.getfixturevalue("acl_redis62" if request.param == "6.2" else "acl_redis7")
    server.client(acl.ADMIN).flushall()
    return server
