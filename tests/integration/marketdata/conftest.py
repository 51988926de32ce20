"""The fake Binance server's fixtures for the marketdata integration tests."""

from tests.fakes.conftest_binance import fake_binance, fake_binance_server

__all__ = ["fake_binance", "fake_binance_server"]
