"""A fake Binance USD-M futures server for tests: Binance's paths, shapes, signatures and error codes,
fills at a mark price the test sets, and per-request fault injection. Every response builder names the
Binance documentation page it follows; where Binance's docs are silent, the module says what the fake
does and why (``algo.py``).

In-process::

    with running_fake_binance() as server:
        server.fake.set_mark_price("BTCUSDT", Decimal("60000"))
        ...  # point BinanceSettings.base_url at server.base_url

Beyond prices and faults, a test can list symbols (``add_symbol``), switch the account to hedge mode
(``set_position_mode``), end algo orders as the exchange does (``reject_algo``, ``expire_algo``), make
GET algoOrder answer -2013 (``set_algo_query_retention_ms``, ``hide_algo_from_query``), hide trades for a
while (``delay_trades``), split fills (``split_next_fill``), charge fees in BNB (``charge_fees_in``),
liquidate or auto-deleverage (``liquidate``, ``adl``).

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
