"""Pytest fixtures for the fake Binance server; import them into a test module or a conftest.py::

    from tests.fakes.conftest_binance import fake_binance_server, fake_binance  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.fake_binance import FakeBinance, FakeBinanceServer, start_fake_binance


@pytest.fixture(scope="module")
def fake_binance_server() -> Iterator[FakeBinanceServer]:
    """One fake server per test module (starting uvicorn costs a few hundred ms)."""
    server = start_fake_binance()
    yield server
    server.stop()


@pytest.fixture
def fake_binance(fake_binance_server: FakeBinanceServer) -> FakeBinance:
    """The module's fake, emptied before the test: no orders, faults or logged requests."""
    fake_binance_server.fake.reset()
    return fake_binance_server.fake
