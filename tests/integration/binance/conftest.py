"""Fixtures of the Binance adapter tests: the shared fake server (tests/fakes/conftest_binance.py)."""

from __future__ import annotations

import pytest

from tests.fakes.fake_binance import FakeBinance, FakeBinanceServer


@pytest.fixture
def server(fake_binance_server: FakeBinanceServer) -> FakeBinanceServer:
    """The shared module-scoped fake server."""
    return fake_binance_server


@pytest.fixture
def fake(fake_binance: FakeBinance) -> FakeBinance:
    """The shared fake, emptied before the test."""
    return fake_binance
