"""The fake's answers and events have Binance's documented shapes: every key it sends is documented, and
the documented keys are there. The field lists are written down here from Binance's pages (named on
each list), not taken from the fake; where a live answer is known to carry more than the page shows
(a real capture), the extra keys are listed apart with their source.

Requests go through a bare python-binance AsyncClient; events through a websocket of the user stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

import aiohttp
from binance import AsyncClient

from tests.fakes.fake_binance import DEFAULT_API_KEY, DEFAULT_API_SECRET, FakeBinance, FakeBinanceServer
from tests.integration.binance.support import cid, wait_until

DOCS = "https://developers.binance.com/docs/derivatives/usds-margined-futures"

# Exchange Information — {DOCS}/market-data/rest-api/Exchange-Information
EXCHANGE_INFO = {"exchangeFilters", "rateLimits", "serverTime", "assets", "symbols", "timezone"}
EXCHANGE_INFO_REQUIRED = {"rateLimits", "serverTime", "symbols", "timezone"}
SYMBOL = {
    "symbol", "pair", "contractType", "deliveryDate", "onboardDate", "status", "maintMarginPercent",
    "requiredMarginPercent", "baseAsset", "quoteAsset", "marginAsset", "pricePrecision", "quantityPrecision",
    "baseAssetPrecision", "quotePrecision", "underlyingType", "underlyingSubType", "settlePlan", "triggerProtect",
    "filters", "orderTypes", "timeInForce", "liquidationFee", "marketTakeBound",
}
SYMBOL_REQUIRED = {"symbol", "pair", "contractType", "status", "baseAsset", "quoteAsset", "marginAsset",
                   "pricePrecision", "quantityPrecision", "filters", "orderTypes", "timeInForce"}
# New Order (POST /fapi/v1/order) — {DOCS}/trade/rest-api
NEW_ORDER = {
    "clientOrderId", "cumQty", "cumQuote", "executedQty", "orderId", "avgPrice", "origQty", "price", "reduceOnly",
    "side", "positionSide", "status", "stopPrice", "closePosition", "symbol", "timeInForce", "type", "origType",
    "updateTime", "workingType", "priceProtect", "priceMatch", "selfTradePreventionMode", "goodTillDate",
}
# Query Order (GET /fapi/v1/order) — {DOCS}/trade/rest-api/Query-Order (activatePrice/priceRate: trailing only)
QUERY_ORDER = {
    "avgPrice", "clientOrderId", "cumQuote", "executedQty", "orderId", "origQty", "origType", "price", "reduceOnly",
    "side", "positionSide", "status", "stopPrice", "closePosition", "symbol", "time", "timeInForce", "type",
    "activatePrice", "priceRate", "updateTime", "workingType", "priceProtect",
}
# ... and in live answers (and the New Order sample), though not on the Query Order page
QUERY_ORDER_LIVE = {"priceMatch", "selfTradePreventionMode", "goodTillDate"}
# New Algo Order (POST /fapi/v1/algoOrder) — {DOCS}/trade/rest-api/New-Algo-Order
NEW_ALGO = {
    "algoId", "clientAlgoId", "algoType", "orderType", "symbol", "side", "positionSide", "timeInForce", "quantity",
    "algoStatus", "triggerPrice", "price", "icebergQuantity", "selfTradePreventionMode", "workingType",
    "priceMatch", "closePosition", "priceProtect", "reduceOnly", "activatePrice", "callbackRate", "createTime",
    "updateTime", "triggerTime", "goodTillDate",
}
# Query Algo Order (GET /fapi/v1/algoOrder; openAlgoOrders and allAlgoOrders list the same objects) —
# {DOCS}/trade/rest-api/Query-Algo-Order, .../Current-All-Algo-Open-Orders, .../Query-All-Algo-Orders
QUERY_ALGO = {
    "algoId", "clientAlgoId", "algoType", "orderType", "symbol", "side", "positionSide", "timeInForce", "quantity",
    "algoStatus", "actualOrderId", "actualPrice", "triggerPrice", "price", "icebergQuantity", "tpTriggerPrice",
    "tpPrice", "slTriggerPrice", "slPrice", "tpOrderType", "selfTradePreventionMode", "workingType", "priceMatch",
    "closePosition", "priceProtect", "reduceOnly", "createTime", "updateTime", "triggerTime", "goodTillDate",
}
# ... and of a FINISHED order in a real capture (JKorf/Binance.Net PR #1575), not on the page
QUERY_ALGO_FINISHED = {"actualQty", "actualType"}
# Account Trade List (GET /fapi/v1/userTrades) — {DOCS}/trade/rest-api/Account-Trade-List
USER_TRADE = {"buyer", "commission", "commissionAsset", "id", "maker", "orderId", "price", "qty", "quoteQty",
              "realizedPnl", "side", "positionSide", "symbol", "time"}
# Position Information V3 (GET /fapi/v3/positionRisk) — {DOCS}/trade/rest-api/Position-Information-V3
POSITION_RISK_V3 = {
    "symbol", "positionSide", "positionAmt", "entryPrice", "breakEvenPrice", "markPrice", "unRealizedProfit",
    "liquidationPrice", "isolatedMargin", "notional", "marginAsset", "isolatedWallet", "initialMargin",
    "maintMargin", "positionInitialMargin", "openOrderInitialMargin", "adl", "bidNotional", "askNotional",
    "updateTime",
}
# Futures Account Balance V3 (GET /fapi/v3/balance) — {DOCS}/account/rest-api/Futures-Account-Balance-V3
BALANCE_V3 = {"accountAlias", "asset", "balance", "crossWalletBalance", "crossUnPnl", "availableBalance",
              "maxWithdrawAmount", "marginAvailable", "updateTime"}
# Notional and Leverage Brackets (GET /fapi/v1/leverageBracket) — {DOCS}/account/rest-api/Notional-and-Leverage-Brackets
# (notionalCoef "only appears when user's symbol bracket is adjusted")
LEVERAGE_BRACKET = {"symbol", "notionalCoef", "brackets"}
LEVERAGE_BRACKET_REQUIRED = {"symbol", "brackets"}
BRACKET = {"bracket", "initialLeverage", "notionalCap", "notionalFloor", "maintMarginRatio", "cum"}
# Get Current Position Mode (GET /fapi/v1/positionSide/dual) — {DOCS}/account/rest-api/Get-Current-Position-Mode
POSITION_MODE = {"dualSidePosition"}
# Event: Order Update — {DOCS}/user-data-streams/Event-Order-Update (AP, cr: trailing stops only)
ORDER_UPDATE_ENVELOPE = {"e", "E", "T", "o"}
ORDER_UPDATE = {
    "s", "c", "S", "o", "f", "q", "p", "ap", "sp", "x", "X", "i", "l", "z", "L", "N", "n", "T", "t", "b", "a", "m",
    "R", "wt", "ot", "ps", "cp", "AP", "cr", "pP", "si", "ss", "rp", "V", "pm", "gtd", "er",
}
ORDER_UPDATE_REQUIRED = ORDER_UPDATE - {"AP", "cr"}
# Event: Algo Order Update — {DOCS}/user-data-streams/Event-Algo-Order-Update
# (ap, aq, act "only display when order is triggered and placed in matching engine"; rm: the failure reason)
ALGO_UPDATE_ENVELOPE = {"e", "T", "E", "o"}
ALGO_UPDATE = {"caid", "aid", "at", "o", "s", "S", "ps", "f", "q", "X", "ai", "ap", "aq", "act", "tp", "p", "V",
               "wt", "pm", "cp", "pP", "R", "tt", "gtd", "rm"}
ALGO_UPDATE_REQUIRED = ALGO_UPDATE - {"ap", "aq", "act", "rm"}


def keys_ok(name: str, rows: Iterable[dict[str, Any]], documented: set[str], required: set[str]) -> None:
    """Every row sends only documented keys and every required one."""
    for row in rows:
        extra = set(row) - documented
        missing = required - set(row)
        assert not extra, f"{name}: keys Binance does not document: {sorted(extra)}"
        assert not missing, f"{name}: documented keys missing: {sorted(missing)}"


def client(server: FakeBinanceServer) -> AsyncClient:
    c = AsyncClient(DEFAULT_API_KEY, DEFAULT_API_SECRET)
    c.FUTURES_URL = server.base_url + "/fapi"
    return c


async def listen(server: FakeBinanceServer, c: AsyncClient, into: list[dict[str, Any]]) -> aiohttp.ClientSession:
    """Open the user stream and gather its messages into ``into`` (until the session closes)."""
    key = await c.futures_stream_get_listen_key()
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(server.base_url.replace("http://", "ws://") + "/private/ws/" + key)

    async def read() -> None:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                into.append(json.loads(message.data))

    asyncio.get_running_loop().create_task(read())
    return session


def test_rest_answers_have_the_documented_keys(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """exchangeInfo (no maxLeverage), orders (RESULT and ACK, queried), algo orders (placed, open, in the
    history, FINISHED), userTrades, positionRisk v3, balance v3, leverageBracket and the position mode."""

    async def main() -> dict[str, Any]:
        c = client(server)
        try:
            got: dict[str, Any] = {"info": await c.futures_exchange_info()}
            got["result"] = await c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                                         quantity="0.010", newClientOrderId=cid("s1"),
                                                         newOrderRespType="RESULT")
            got["ack"] = await c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                                                      newClientOrderId=cid("s2"))
            got["query"] = await c.futures_get_order(symbol="BTCUSDT", origClientOrderId=cid("s1"))
            got["algo"] = await c.futures_create_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
                                                       triggerPrice="59000", quantity="0.010", reduceOnly="true",
                                                       clientAlgoId=cid("s1", "sl"), workingType="MARK_PRICE")
            await c.futures_create_order(symbol="BTCUSDT", side="SELL", type="TAKE_PROFIT_MARKET",
                                         triggerPrice="63000", closePosition="true", clientAlgoId=cid("s1", "tp"))
            got["open_algos"] = await c.futures_get_open_orders(conditional=True, symbol="BTCUSDT")
            got["algo_query"] = await c.futures_get_algo_order(clientAlgoId=cid("s1", "tp"))
            fake.set_mark_price("BTCUSDT", "58900")  # the stop fires: FINISHED
            got["finished"] = await c.futures_get_algo_order(clientAlgoId=cid("s1", "sl"))
            got["all_algos"] = await c.futures_get_all_orders(conditional=True, symbol="BTCUSDT")
            got["trades"] = await c.futures_account_trades(symbol="BTCUSDT")
            got["risk"] = await c.futures_position_information()
            got["balance"] = await c.futures_account_balance()
            got["brackets"] = await c.futures_leverage_bracket()
            got["bracket"] = await c.futures_leverage_bracket(symbol="BTCUSDT")
            got["mode"] = await c.futures_get_position_mode()
            return got
        finally:
            await c.close_connection()

    got = asyncio.run(asyncio.wait_for(main(), 20))
    keys_ok("exchangeInfo", [got["info"]], EXCHANGE_INFO, EXCHANGE_INFO_REQUIRED)
    keys_ok("exchangeInfo.symbols[]", got["info"]["symbols"], SYMBOL, SYMBOL_REQUIRED)
    assert "maxLeverage" not in json.dumps(got["info"])
    keys_ok("POST order (RESULT)", [got["result"]], NEW_ORDER, NEW_ORDER)
    keys_ok("POST order (ACK)", [got["ack"]], NEW_ORDER, NEW_ORDER)
    assert (got["ack"]["status"], got["ack"]["executedQty"], got["ack"]["avgPrice"]) == ("NEW", "0", "0.00000")
    assert got["result"]["status"] == "FILLED" and got["result"]["executedQty"] == "0.010"
    keys_ok("GET order", [got["query"]], QUERY_ORDER | QUERY_ORDER_LIVE, QUERY_ORDER - {"activatePrice", "priceRate"})
    keys_ok("POST algoOrder", [got["algo"]], NEW_ALGO, NEW_ALGO)
    assert "orderId" not in got["algo"]  # an algo order has an algoId only
    keys_ok("openAlgoOrders", got["open_algos"], QUERY_ALGO, QUERY_ALGO)
    keys_ok("GET algoOrder", [got["algo_query"]], QUERY_ALGO, QUERY_ALGO)
    keys_ok("GET algoOrder (FINISHED)", [got["finished"]], QUERY_ALGO | QUERY_ALGO_FINISHED, QUERY_ALGO)
    assert got["finished"]["algoStatus"] == "FINISHED" and got["finished"]["actualType"] == "MARKET"
    assert isinstance(got["finished"]["actualOrderId"], str) and got["finished"]["actualOrderId"]
    keys_ok("allAlgoOrders", got["all_algos"], QUERY_ALGO | QUERY_ALGO_FINISHED, QUERY_ALGO)
    keys_ok("userTrades", got["trades"], USER_TRADE, USER_TRADE)
    keys_ok("positionRisk v3", got["risk"], POSITION_RISK_V3, POSITION_RISK_V3)
    keys_ok("balance v3", got["balance"], BALANCE_V3, BALANCE_V3)
    assert isinstance(got["brackets"], list) and isinstance(got["bracket"], dict)
    keys_ok("leverageBracket", [*got["brackets"], got["bracket"]], LEVERAGE_BRACKET, LEVERAGE_BRACKET_REQUIRED)
    keys_ok("leverageBracket.brackets[]", [b for e in got["brackets"] for b in e["brackets"]], BRACKET, BRACKET)
    assert isinstance(got["bracket"]["brackets"][0]["notionalCap"], int | float)  # JSON numbers, not strings
    keys_ok("positionSide/dual", [got["mode"]], POSITION_MODE, POSITION_MODE)


def test_user_stream_events_have_the_documented_keys_and_lifecycle(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """ORDER_TRADE_UPDATE and ALGO_UPDATE carry only documented keys. A stop's ALGO_UPDATEs go NEW ->
    TRIGGERING -> TRIGGERED (``ai`` = the child orderId, ``act`` "MARKET") -> FINISHED; a rejected one
    TRIGGERING -> REJECTED with ``rm``; the matching-engine fields appear only once triggered."""

    async def main() -> list[dict[str, Any]]:
        c = client(server)
        messages: list[dict[str, Any]] = []
        session = await listen(server, c, messages)
        try:
            await wait_until(lambda: fake.ws_connections == 1)
            await c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                                         newClientOrderId=cid("e1"))
            for name, trigger in (("a", "59000"), ("b", "58000")):
                await c.futures_create_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET", triggerPrice=trigger,
                                             quantity="0.010", reduceOnly="true", clientAlgoId=f"qt-e1-sl-{name}")
            fake.reject_algo("qt-e1-sl-b", "Margin is insufficient.")
            fake.set_mark_price("BTCUSDT", "58900")
            await wait_until(lambda: sum(m["e"] == "ALGO_UPDATE" and m["o"]["X"] == "FINISHED" for m in messages) == 1)
            return messages
        finally:
            await session.close()
            await c.close_connection()

    messages = asyncio.run(asyncio.wait_for(main(), 20))
    orders = [m for m in messages if m["e"] == "ORDER_TRADE_UPDATE"]
    algos = [m for m in messages if m["e"] == "ALGO_UPDATE"]
    keys_ok("ORDER_TRADE_UPDATE", orders, ORDER_UPDATE_ENVELOPE, ORDER_UPDATE_ENVELOPE)
    keys_ok("ORDER_TRADE_UPDATE.o", [m["o"] for m in orders], ORDER_UPDATE, ORDER_UPDATE_REQUIRED)
    keys_ok("ALGO_UPDATE", algos, ALGO_UPDATE_ENVELOPE, ALGO_UPDATE_ENVELOPE)
    keys_ok("ALGO_UPDATE.o", [m["o"] for m in algos], ALGO_UPDATE, ALGO_UPDATE_REQUIRED)
    a = [m["o"] for m in algos if m["o"]["caid"] == "qt-e1-sl-a"]
    b = [m["o"] for m in algos if m["o"]["caid"] == "qt-e1-sl-b"]
    assert [o["X"] for o in a] == ["NEW", "TRIGGERING", "TRIGGERED", "FINISHED"]
    assert [o["X"] for o in b] == ["NEW", "TRIGGERING", "REJECTED"] and b[-1]["rm"] == "Margin is insufficient."
    assert all("act" not in o and "ap" not in o and "rm" not in o for o in (*a[:2], *b[:2]))
    triggered, finished = a[2], a[3]
    assert triggered["act"] == "MARKET" and triggered["ai"] and (triggered["ap"], triggered["aq"]) == ("0", "0")
    assert finished["ap"] == "58900" and finished["aq"] == "0.010"
    child = [o["o"] for o in orders if str(o["o"]["i"]) == triggered["ai"]]
    assert [(o["x"], o["X"], o["o"]) for o in child] == [("NEW", "NEW", "MARKET"), ("TRADE", "FILLED", "MARKET")]
    assert child[0]["c"] != "qt-e1-sl-a"  # linked by ai / actualOrderId only
