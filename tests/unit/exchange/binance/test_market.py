"""Binance market data as domain values (common/exchange/binance/market.py): websocket messages (recorded
samples), REST kline rows, stream names."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from common.exchange.binance.market import (
    BadMessage,
    KlineUpdate,
    MarkPrice,
    StreamError,
    parse_rest_klines,
    parse_ws_events,
    parse_ws_message,
    stream_names,
)
from common.klines import Kline

D = Decimal

#: a combined-stream markPriceUpdate as Binance USD-M sends it (``<symbol>@markPrice@1s``)
MARK_PRICE = json.loads("""
{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1731577260000,"s":"BTCUSDT",
 "p":"90321.40000000","P":"90412.88517493","i":"90362.19065217","r":"0.00010000","T":1731585600000}}
""")
#: an in-progress kline update (``x`` false), then the final update that closes it
KLINE_OPEN = json.loads("""
{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1731577259750,"s":"BTCUSDT","k":{
 "t":1731577200000,"T":1731577259999,"s":"BTCUSDT","i":"1m","f":5581471112,"L":5581473901,
 "o":"90288.10","c":"90321.30","h":"90355.00","l":"90250.00","v":"152.412","n":2790,"x":false,
 "q":"13762144.98710","V":"80.117","Q":"7234621.51330","B":"0"}}}
""")
KLINE_CLOSED = json.loads("""
{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1731577260003,"s":"BTCUSDT","k":{
 "t":1731577200000,"T":1731577259999,"s":"BTCUSDT","i":"1m","f":5581471112,"L":5581474012,
 "o":"90288.10","c":"90330.00","h":"90355.00","l":"90250.00","v":"153.905","n":2901,"x":true,
 "q":"13896990.31220","V":"81.002","Q":"7314522.77350","B":"0"}}}
""")
#: a non-ASCII symbol's mark price, bare (not wrapped by the combined stream)
MARK_PRICE_CN = {"e": "markPriceUpdate", "E": 1731577261000, "s": "币安人生USDT", "p": "0.10312000",
                 "P": "0.10298811", "i": "0.10305102", "r": "0.00005000", "T": 1731585600000}
#: what python-binance puts on the socket's queue when the connection drops
WS_ERROR = {"e": "error", "type": "BinanceWebsocketClosed", "m": "Connection closed. Reconnecting..."}


def test_mark_price_update_parses_to_decimal_mark_and_index() -> None:
    """markPriceUpdate → MarkPrice with the mark ``p``, index ``i`` and event time, as Decimals."""
    event = parse_ws_message(MARK_PRICE)
    assert event == MarkPrice("BTCUSDT", D("90321.40000000"), D("90362.19065217"), 1731577260000)


def test_kline_updates_parse_with_their_closed_flag() -> None:
    """kline events → Kline values; ``x`` says whether the kline is closed."""
    opened = parse_ws_message(KLINE_OPEN)
    closed = parse_ws_message(KLINE_CLOSED)
    assert opened == KlineUpdate(Kline("BTCUSDT", "1m", 1731577200000, D("90288.10"), D("90355.00"),
                                       D("90250.00"), D("90321.30"), D("152.412"), False), 1731577259750)
    assert isinstance(closed, KlineUpdate)
    assert closed.kline.closed is True and closed.kline.close == D("90330.00")
    assert closed.kline.volume == D("153.905")


def test_bare_messages_and_non_ascii_symbols_pass_unchanged() -> None:
    """A message without the combined-stream wrapper parses too; 币安人生USDT is kept as is."""
    event = parse_ws_message(MARK_PRICE_CN)
    assert isinstance(event, MarkPrice) and event.symbol == "币安人生USDT" and event.mark_price == D("0.10312")


def test_error_messages_become_stream_errors_and_other_events_are_ignored() -> None:
    """python-binance's error dict → StreamError; an event type not parsed → None."""
    assert parse_ws_message(WS_ERROR) == StreamError("BinanceWebsocketClosed", "Connection closed. Reconnecting...")
    agg = {"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade", "E": 1, "s": "BTCUSDT", "p": "1", "q": "1"}}
    assert parse_ws_message(agg) is None


def _broken(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    message: dict[str, Any] = copy.deepcopy(KLINE_CLOSED)
    target = message
    for part in path[:-1]:
        target = target[part]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return message


@pytest.mark.parametrize(("message", "problem"), [
    (_broken(("data", "k", "c"), None), "c: missing"),
    (_broken(("data", "k", "c"), "abc"), "c: missing or not a number"),
    (_broken(("data", "k", "l"), "90400.00"), "inconsistent kline"),
    (_broken(("data", "k", "o"), "-1"), "o: must be a positive"),
    (_broken(("data", "k", "x"), "true"), "x: not a boolean"),
    (_broken(("data", "k", "v"), "-5"), "v: must not be negative"),
    (_broken(("data", "k"), None), "kline: KeyError"),
    ({"stream": "x", "data": "nope"}, "data: not an object"),
])
def test_malformed_messages_raise_bad_message_naming_the_problem(message: dict[str, Any], problem: str) -> None:
    """A message missing a field, with a bad number, or an impossible candle → BadMessage."""
    with pytest.raises(BadMessage, match=problem):
        parse_ws_message(message)


def test_rest_rows_leave_out_the_kline_in_progress() -> None:
    """REST rows → closed klines; the last row, whose interval has not ended by ``now``, is left out."""
    rows = [[1731577080000, "90100.0", "90200.0", "90050.0", "90150.0", "10.5", 1731577139999, "1", 3, "1", "1", "0"],
            [1731577140000, "90150.0", "90300.0", "90150.0", "90288.1", "12.0", 1731577199999, "1", 3, "1", "1", "0"],
            [1731577200000, "90288.1", "90355.0", "90250.0", "90321.3", "1.0", 1731577259999, "1", 3, "1", "1", "0"]]
    klines = parse_rest_klines(rows, "BTCUSDT", "1m", now=1731577230000)
    assert [k.open_time for k in klines] == [1731577080000, 1731577140000]
    assert klines[1] == Kline("BTCUSDT", "1m", 1731577140000, D("90150.0"), D("90300.0"), D("90150.0"),
                              D("90288.1"), D("12.0"), True)
    assert len(parse_rest_klines(rows, "BTCUSDT", "1m", now=1731577260000)) == 3


def test_stream_names_are_the_all_market_mark_price_and_a_kline_stream_per_symbol() -> None:
    """``!markPrice@arr@1s`` once, and ``<symbol>@kline_<interval>`` lower-cased: 580 symbols are 581
    streams on the connection, not 1,160."""
    assert stream_names(["BTCUSDT", "XRPUSDT"], "5m") == ["!markPrice@arr@1s", "btcusdt@kline_5m", "xrpusdt@kline_5m"]
    assert len(stream_names([f"S{i}USDT" for i in range(580)], "1m")) == 581


def test_the_all_market_mark_price_array_gives_one_event_per_symbol() -> None:
    """The all-market stream's message is an array of ``markPriceUpdate`` objects (the shape of the
    single-symbol stream's): one MarkPrice each."""
    element = dict(MARK_PRICE["data"])
    other = {**element, "s": "XRPUSDT", "p": "0.5123"}
    events = parse_ws_events({"stream": "!markPrice@arr@1s", "data": [element, other]})
    assert [e.symbol for e in events if isinstance(e, MarkPrice)] == [element["s"], "XRPUSDT"]
    assert parse_ws_events(KLINE_CLOSED) == [parse_ws_message(KLINE_CLOSED)]
    with pytest.raises(BadMessage):
        parse_ws_events({"stream": "!markPrice@arr@1s", "data": [element, {**other, "p": "abc"}]})
