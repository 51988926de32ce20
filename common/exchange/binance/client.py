"""The one python-binance client: built inside the running loop with our timeout, pointed at the
configured base URL (mainnet, testnet or the fake server), and one :meth:`BinanceClient.call` through
which every REST request goes, its failures translated (:mod:`common.exchange.binance.errors`).

What python-binance does not do, this does: a timeout on every request (its default has none), the
clock offset synced on demand and again on -1021. Retries are not done here:
:mod:`common.exchange.placement` owns them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import structlog
from binance import AsyncClient
from binance.exceptions import BinanceAPIException

from common.config import BinanceSettings, Settings
from common.exchange.binance.errors import (
    TIMESTAMP_OUTSIDE_RECV_WINDOW,
    TRANSPORT_ERRORS,
    translate_api_error,
    translate_transport_error,
)

log = structlog.get_logger()


def futures_root(base_url: str) -> str:
    """``http://host:port`` from a base URL given with or without the ``/fapi`` suffix."""
    root = base_url.rstrip("/")
    return root[: -len("/fapi")] if root.endswith("/fapi") else root


def is_testnet(settings: Settings) -> bool:
    """Whether the settings name Binance's testnet (``exchange = "binance-testnet"``)."""
    return settings.exchange == "binance-testnet"


class BinanceClient:
    """python-binance's ``AsyncClient``, opened with :meth:`open` and called through :meth:`call`.

    ``keys=False`` builds it without the API key and secret: public endpoints only (market data).
    """

    def __init__(self, settings: BinanceSettings, *, testnet: bool, keys: bool = True) -> None:
        self.settings = settings
        self.testnet = testnet
        self.keys = keys
        self._client: Any = None
        self._time_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, keys: bool = True) -> BinanceClient:
        return cls(settings.binance, testnet=is_testnet(settings), keys=keys)

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def open(self) -> None:
        """Build the client; call it inside the running loop (its HTTP session binds to the loop). Not
        ``AsyncClient.create()``: that pings spot."""
        s = self.settings
        timeout = aiohttp.ClientTimeout(total=s.timeout_s, sock_connect=min(s.timeout_s, 5.0) / 2)
        api_key = s.api_key.get_secret_value() if self.keys else None
        api_secret = s.api_secret.get_secret_value() if self.keys else None
        client = AsyncClient(api_key, api_secret, requests_params={"timeout": timeout}, testnet=self.testnet)
        client.REQUEST_RECVWINDOW = s.recv_window_ms  # signed requests only
        if s.base_url:
            url = futures_root(s.base_url) + "/fapi"
            if self.testnet:
                client.FUTURES_TESTNET_URL = url
            else:
                client.FUTURES_URL = url
        self._client = client

    async def close(self) -> None:
        """Release the HTTP session (a no-op when not open)."""
        if self._client is not None:
            await self._client.close_connection()
            self._client = None

    async def call(self, endpoint: str, /, *, mutation: bool, **params: Any) -> Any:
        """Call ``AsyncClient.<endpoint>(**params)``, translating every failure; a -1021 re-syncs the
        clock and tries once more (the request was refused, so resending cannot double anything).
        ``mutation``: whether the request may change something on the exchange (see the errors' table)."""
        if self._client is None:
            raise RuntimeError("BinanceClient is not open")
        for attempt in (1, 2):
            try:
                return await getattr(self._client, endpoint)(**params)
            except BinanceAPIException as e:
                if e.code == TIMESTAMP_OUTSIDE_RECV_WINDOW and attempt == 1:
                    log.warning("binance_timestamp_rejected", endpoint=endpoint)
                    await self.sync_time()
                    continue
                error = translate_api_error(e, mutation=mutation)
                log.warning(
                    "binance_request_failed",
                    endpoint=endpoint,
                    code=e.code,
                    status=e.status_code,
                    error=type(error).__name__,
                )
                raise error from e
            except TRANSPORT_ERRORS as e:
                error = translate_transport_error(e, mutation=mutation)
                log.warning("binance_request_failed", endpoint=endpoint, transport=type(e).__name__,
                            error=type(error).__name__)
                raise error from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def sync_time(self) -> None:
        """Set the offset signed requests add to our clock: the server's time minus ours, at the middle
        of the round trip."""
        async with self._time_lock:
            before = time.time() * 1000
            raw = await self.call("futures_time", mutation=False)
            after = time.time() * 1000
            offset = int(int(raw["serverTime"]) - (before + after) / 2)
            self._client.timestamp_offset = offset
            log.info("binance_time_synced", offset_ms=offset, round_trip_ms=int(after - before))

    def server_now_ms(self) -> int:
        """The exchange's clock now, as far as the last sync knows it."""
        offset = int(self._client.timestamp_offset) if self._client is not None else 0
        return int(time.time() * 1000) + offset
