"""marketdata: the fleet's source of prices (DESIGN §3).

It publishes ``market.tick``, ``market.klines`` and ``marketstate`` and keeps the latest price hashes,
from one of three sources chosen by ``QT_MARKET_SOURCE``: the exchange, a replay file, or the
synthetic generator. The modules here are the pure parts, with no Redis inside:

- :mod:`services.marketdata.klines` — Binance intervals and the tick → kline builder;
- :mod:`services.marketdata.synthetic` — a seeded, regime-switching tick generator;
- :mod:`services.marketdata.replay` — klines (and ticks derived from them) read from a file.
"""
