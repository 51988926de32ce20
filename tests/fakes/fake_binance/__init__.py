"""A fake Binance USD-M futures server for tests: Binance's paths, shapes, signatures and error codes,
fills at a mark price the test sets, and per-request fault injection.

In-process::

    with running_fake_binance() as server:
        server.fake.set_mark_price("BTCUSDT", Decimal("60000"))
        ...  # point BinanceSettings.base_url at server.base_url

As a process: ``python -m tests.fakes.fake_binance --port 8765`` (drive it through ``/_fake/*``).
"""

from tests.fakes.fake_binance.server import FakeBinanceServer, running_fake_binance, start_fake_binance
from tests.fakes.fake_binance.state import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    BinanceError,
    FakeBinance,
    Fault,
    LoggedRequest,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "BinanceError",
    "FakeBinance",
    "FakeBinanceServer",
    "Fault",
    "LoggedRequest",
    "running_fake_binance",
    "start_fake_binance",
]
