"""Binance USD-M market data as domain values: pure functions over the websocket messages
(``!markPrice@arr@1s`` — every symbol's mark price in one array message each second — and
``<symbol>@kline_<interval>``, one combined stream) and the REST kline rows (``GET /fapi/v1/klines``),
into Decimal-valued events and :class:`~common.klines.Kline` values.

One all-market mark price stream instead of one per symbol: 580 symbols are 581 streams on one
connection, not 1,160, and one message a second instead of 580. The cap on streams per connection is not
settled: Binance's USD-M "Connect" page says 1,024; its options page for the same routed endpoints
(``/market``) and NautilusTrader's adapter say 200. Not confirmed for USD-M ``/market``: above 200 symbols
the subscription may have to be split over several connections.

- mark price (one symbol, the element's shape): https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Mark-Price-Stream
- mark price of all symbols (an array of those elements): https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Mark-Price-Stream-for-All-market
- klines: https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Kline-Candlestick-Streams
- REST klines: https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Kline-Candlestick-Data
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from common.klines import Kline, interval_ms

#: Binance serves at most this many klines per REST call
REST_LIMIT: Final = 1_500


class BadMessage(ValueError):
    """A websocket message that does not have the shape of its event type (logged and skipped)."""


@dataclass(frozen=True)
class MarkPrice:
    """A ``markPriceUpdate`` event."""

    symbol: str
    mark_price: Decimal
    index_price: Decimal
    event_time: int


@dataclass(frozen=True)
class KlineUpdate:
    """A ``kline`` event: the kline so far (``closed`` once its interval ended)."""

    kline: Kline
    event_time: int


@dataclass(frozen=True)
class StreamError:
    """The error python-binance puts on the socket's queue when its connection fails."""

    kind: str
    message: str


WsEvent = MarkPrice | KlineUpdate | StreamError


def _price(data: Mapping[str, Any], field: str) -> Decimal:
    try:
        value = Decimal(str(data[field]))
    except (KeyError, InvalidOperation) as e:
        raise BadMessage(f"{field}: missing or not a number") from e
    if not value.is_finite() or value <= 0:
        raise BadMessage(f"{field}: must be a positive number, got {data[field]!r}")
    return value


def _mark_price(data: Mapping[str, Any]) -> MarkPrice:
    return MarkPrice(symbol=str(data["s"]), mark_price=_price(data, "p"),
                     index_price=_price(data, "i") if data.get("i") not in (None, "") else _price(data, "p"),
                     event_time=int(data["E"]))


def _kline(data: Mapping[str, Any]) -> KlineUpdate:
    k = data["k"]
    o, h, low, c = (_price(k, f) for f in ("o", "h", "l", "c"))
    try:
        volume = Decimal(str(k["v"]))
    except (KeyError, InvalidOperation) as e:
        raise BadMessage("v: missing or not a number") from e
    if not volume.is_finite() or volume < 0:
        raise BadMessage(f"v: must not be negative, got {k['v']!r}")
    if low > min(o, c) or h < max(o, c):
        raise BadMessage(f"inconsistent kline: o={o} h={h} l={low} c={c}")
    closed = k["x"]
    if not isinstance(closed, bool):
        raise BadMessage(f"x: not a boolean: {closed!r}")
    kline = Kline(symbol=str(k.get("s") or data["s"]), interval=str(k["i"]), open_time=int(k["t"]),
                  open=o, high=h, low=low, close=c, volume=volume, closed=closed)
    return KlineUpdate(kline, int(data["E"]))


def _error(data: Mapping[str, Any]) -> StreamError:
    return StreamError(kind=str(data.get("type", "")), message=str(data.get("m", "")))


_PARSERS: dict[str, Callable[[Mapping[str, Any]], WsEvent]] = {
    "markPriceUpdate": _mark_price,
    "kline": _kline,
    "error": _error,
}


def parse_ws_events(message: Mapping[str, Any]) -> list[WsEvent]:
    """One websocket message as its events: the all-market mark price array gives one per symbol (a
    malformed element is skipped by raising for the whole message: BadMessage), anything else what
    :func:`parse_ws_message` gives."""
    data = message.get("data") if "stream" in message else message
    if isinstance(data, list):
        events = [parse_ws_message(item) for item in data]
        return [event for event in events if event is not None]
    event = parse_ws_message(message)
    return [] if event is None else [event]


def parse_ws_message(message: Mapping[str, Any]) -> WsEvent | None:
    """One websocket message (combined-stream ``{"stream", "data"}`` or bare) as an event; None for
    event types not parsed here. Raises :class:`BadMessage` for a malformed one."""
    data = message.get("data") if "stream" in message else message
    if not isinstance(data, Mapping):
        raise BadMessage("data: not an object")
    parser = _PARSERS.get(str(data.get("e", "")))
    if parser is None:
        return None
    try:
        return parser(data)
    except BadMessage:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise BadMessage(f"{data.get('e')}: {type(e).__name__}: {e}") from e


def parse_rest_klines(rows: Sequence[Sequence[Any]], symbol: str, interval: str, now: int) -> list[Kline]:
    """The closed klines among REST rows ``[open_time, o, h, l, c, v, close_time, ...]`` (a row whose
    interval has not ended by ``now`` is the kline in progress, and left out)."""
    length = interval_ms(interval)
    klines = []
    for row in rows:
        open_time = int(row[0])
        if open_time + length > now:
            continue
        o, h, low, c, v = (Decimal(str(x)) for x in row[1:6])
        klines.append(Kline(symbol, interval, open_time, o, h, low, c, v, True))
    return klines


#: every symbol's mark price, each second, in one message
ALL_MARK_PRICES: Final = "!markPrice@arr@1s"


def stream_names(symbols: Sequence[str], interval: str) -> list[str]:
    """The combined-stream names: the all-market mark price stream, and klines per symbol (lower-cased)."""
    return [ALL_MARK_PRICES, *(f"{symbol.lower()}@kline_{interval}" for symbol in symbols)]
