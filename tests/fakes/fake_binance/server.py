"""Run the fake Binance server in-process (a uvicorn thread on a free port) or as a process."""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import uvicorn

from tests.fakes.fake_binance.app import create_app
from tests.fakes.fake_binance.state import DEFAULT_API_KEY, DEFAULT_API_SECRET, FakeBinance


class FakeBinanceServer:
    """A running fake: ``base_url`` (what ``BinanceSettings.base_url`` takes), ``fake`` (its state)."""

    def __init__(self, fake: FakeBinance, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake = fake
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(
            create_app(fake),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            lifespan="off",
            ws_ping_interval=None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"fake-binance-{self.port}", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self, timeout_s: float = 10.0) -> FakeBinanceServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake Binance server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Drop websockets, stop uvicorn, join the thread."""
        self.fake.disconnect_websockets()
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> FakeBinanceServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_fake_binance(**fake_options: Any) -> FakeBinanceServer:
    """A fake Binance USD-M server running in a background thread; ``stop()`` it when done (or use it as
    a context manager). ``fake_options`` go to :class:`FakeBinance` (api_key, api_secret, ...)."""
    return FakeBinanceServer(FakeBinance(**fake_options)).start()


@contextmanager
def running_fake_binance(**fake_options: Any) -> Iterator[FakeBinanceServer]:
    server = start_fake_binance(**fake_options)
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.fake_binance", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--api-secret", default=DEFAULT_API_SECRET)
    args = parser.parse_args(argv)
    fake = FakeBinance(api_key=args.api_key, api_secret=args.api_secret)
    server = FakeBinanceServer(fake, host=args.host, port=args.port)
    print(f"fake binance listening on {server.base_url}", flush=True)
    server._run()
