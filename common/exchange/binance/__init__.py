"""Binance USD-M futures, one module a concern: :mod:`.client` (the one python-binance client and its
``call()``), :mod:`.errors` (vendor errors translated), :mod:`.wire` and :mod:`.market` (payloads as
domain values), :mod:`.exchange` (the :class:`BinanceExchange` on REST), :mod:`.user_stream` (its
events), with :mod:`.fills` and :mod:`.tracking` beside them."""

from common.exchange.binance.client import BinanceClient
from common.exchange.binance.exchange import BinanceExchange
from common.exchange.binance.user_stream import user_stream_url

__all__ = ["BinanceClient", "BinanceExchange", "user_stream_url"]
