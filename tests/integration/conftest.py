"""The fake Binance server fixtures for every integration test (tests/fakes/conftest_binance.py)."""

from tests.fakes.conftest_binance import fake_binance, fake_binance_server

__all__ = ["fake_binance", "fake_binance_server"]
