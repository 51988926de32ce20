"""The one python-binance client (common/exchange/binance/client.py): where it points, with which keys,
timeout and recvWindow — for the adapter (keys) and the market-data feed (none) alike."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import SecretStr

from common.config import BinanceSettings, load_settings
from common.exchange.binance.client import BinanceClient, futures_root

SETTINGS = BinanceSettings(api_key=SecretStr("key"), api_secret=SecretStr("secret"), base_url="http://127.0.0.1:9/fapi/",
                           timeout_s=3.0, recv_window_ms=7_000)


def opened(client: BinanceClient) -> dict[str, Any]:
    """Open the client inside a loop and read back how python-binance's AsyncClient was set up."""

    async def main() -> dict[str, Any]:
        client.open()
        try:
            raw = client._client  # the AsyncClient itself: what this test is about
            return {"futures": raw.FUTURES_URL, "testnet": raw.FUTURES_TESTNET_URL, "key": raw.API_KEY,
                    "recv_window": raw.REQUEST_RECVWINDOW, "timeout": raw._requests_params["timeout"].total}
        finally:
            await client.close()

    return asyncio.run(main())


def test_base_url_replaces_the_mainnet_url_with_keys_timeout_and_recv_window() -> None:
    """Mainnet: ``base_url`` (with or without ``/fapi``) becomes the futures URL; the keys, the timeout
    and the recvWindow are the settings'."""
    seen = opened(BinanceClient(SETTINGS, testnet=False))
    assert seen["futures"] == "http://127.0.0.1:9/fapi"
    assert seen["testnet"] == "https://testnet.binancefuture.com/fapi"
    assert (seen["key"], seen["recv_window"], seen["timeout"]) == ("key", 7_000, 3.0)


def test_on_testnet_the_base_url_replaces_the_testnet_url() -> None:
    """Testnet (``exchange = "binance-testnet"``): the testnet URL is the one replaced."""
    client = BinanceClient.from_settings(load_settings(exchange="binance-testnet", binance=SETTINGS))
    seen = opened(client)
    assert client.testnet and seen["testnet"] == "http://127.0.0.1:9/fapi"
    assert seen["futures"] != "http://127.0.0.1:9/fapi"


def test_without_keys_the_client_is_public() -> None:
    """``keys=False`` (market data): no API key is sent, even when the settings hold one."""
    assert opened(BinanceClient(SETTINGS, testnet=False, keys=False))["key"] is None


def test_futures_root_drops_the_fapi_suffix() -> None:
    """The root is the same whether the base URL names ``/fapi`` or not."""
    assert futures_root("http://h:1/fapi/") == futures_root("http://h:1") == "http://h:1"
