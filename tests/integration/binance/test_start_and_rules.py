"""What BinanceExchange learns at start, through python-binance against the fake: the position mode (hedge
mode is refused), the symbol rules from exchangeInfo and the leverage brackets, and the contract types
it trades."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from common.config import ConfigurationError
from common.contracts.enums import Side
from common.exchange.binance import BinanceExchange
from common.exchange.errors import SymbolNotTradable
from common.exchange.rules import NO_BRACKET_MAX_LEVERAGE, LeverageBracket
from tests.fakes.fake_binance import FakeBinance, FakeBinanceServer
from tests.helpers import poll
from tests.integration.binance.support import cid, run, settings

BRACKETS = "/fapi/v1/leverageBracket"


# --- item 1: leverage from /fapi/v1/leverageBracket ------------------------------------------------------


def test_max_leverage_and_brackets_come_from_the_leverage_bracket_endpoint(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """exchangeInfo carries no maxLeverage (as on Binance); the rules' max leverage is the first bracket's
    initialLeverage of the signed GET /fapi/v1/leverageBracket, with every bracket's notional cap."""

    async def body(ex: BinanceExchange) -> Any:
        return await ex.symbol_rules()

    rules = run(server, body)
    assert "maxLeverage" not in str(fake.exchange_information({}))
    btc, xrp = rules["BTCUSDT"], rules["XRPUSDT"]
    assert btc.max_leverage == 125 and xrp.max_leverage == 75
    first, second = btc.leverage_brackets[:2]
    assert (first, second) == (LeverageBracket(Decimal("50000"), 125), LeverageBracket(Decimal("600000"), 100))
    assert len(btc.leverage_brackets) == 12 and btc.leverage_brackets[-1].initial_leverage == 1
    assert btc.max_leverage_at(Decimal("100000")) == 100
    [request] = fake.requests(BRACKETS, "GET")
    assert request.status == 200 and "timestamp" in request.params  # signed (USER_DATA)


def test_brackets_are_refreshed_with_the_rules(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """After rules_ttl_s, exchangeInfo and the brackets are both read again: a changed bracket shows."""

    async def body(ex: BinanceExchange) -> int:
        assert (await ex.symbol_rules())["BTCUSDT"].max_leverage == 125
        with fake.lock:
            fake.brackets["BTCUSDT"]["brackets"][0]["initialLeverage"] = 50

        async def lowered() -> bool:
            return (await ex.symbol_rules())["BTCUSDT"].max_leverage == 50

        await poll(lowered, timeout_s=5)
        return len(fake.requests(BRACKETS))

    assert run(server, body, rules_ttl_s=1) == 2
    assert len(fake.requests("/fapi/v1/exchangeInfo")) == 2


def test_a_symbol_without_brackets_gets_a_conservative_max_leverage(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """A listed symbol the brackets do not name is kept at max leverage 1, with one warning naming it."""
    fake.add_symbol("NEWUSDT", with_brackets=False)

    async def body(ex: BinanceExchange) -> Any:
        return await ex.symbol_rules()

    with capture_logs() as logs:
        rules = run(server, body)
    assert rules["NEWUSDT"].max_leverage == NO_BRACKET_MAX_LEVERAGE == 1
    assert rules["NEWUSDT"].leverage_brackets == ()
    [line] = [entry for entry in logs if entry["event"] == "binance_symbols_without_leverage_brackets"]
    assert line["count"] == 1 and line["examples"] == ["NEWUSDT"] and line["max_leverage"] == 1


def test_the_fake_serves_one_bracket_object_when_asked_for_one_symbol(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """With ``symbol`` the docs show one object, without it a list; the adapter's parser takes both."""

    async def body(ex: BinanceExchange) -> Any:
        return (await ex.client.call("futures_leverage_bracket", mutation=False, symbol="ETHUSDT"),
                await ex.client.call("futures_leverage_bracket", mutation=False))

    one, every = run(server, body)
    assert isinstance(one, dict) and one["symbol"] == "ETHUSDT" and one["brackets"][0]["initialLeverage"] == 125
    assert isinstance(every, list) and {b["symbol"] for b in every} >= {"BTCUSDT", "ETHUSDT"}


# --- item 4: hedge mode is refused ------------------------------------------------------------------------


def test_hedge_mode_is_refused_at_start(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """An account in hedge mode (GET /fapi/v1/positionSide/dual: dualSidePosition=true) stops start() with
    a ConfigurationError naming what to change; nothing else is asked, the client is released."""
    fake.set_position_mode(dual=True)

    async def main() -> BinanceExchange:
        exchange = BinanceExchange(settings(server))
        with pytest.raises(ConfigurationError) as caught:
            await exchange.start()
        assert caught.value.setting == "binance.position_mode"
        assert "hedge mode" in caught.value.problem and "one-way" in caught.value.problem
        return exchange

    exchange = asyncio.run(main())
    assert not exchange.client.is_open  # closed
    assert [r.path for r in fake.requests() if r.path != "/fapi/v1/time"] == ["/fapi/v1/positionSide/dual"]


def test_one_way_mode_starts(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """The same check passes in one-way mode (the default), before the rules are read."""

    async def body(ex: BinanceExchange) -> None:
        return None

    run(server, body)
    paths = [r.path for r in fake.requests()]
    assert paths.index("/fapi/v1/positionSide/dual") < paths.index("/fapi/v1/exchangeInfo")


# --- item 8: contract types -----------------------------------------------------------------------------------


def test_symbols_of_other_contract_types_are_left_out_with_one_log_line(
    server: FakeBinanceServer, fake: FakeBinance
) -> None:
    """By default only PERPETUAL symbols are traded: a TRADIFI_PERPETUAL one is left out (not tradable),
    with one line saying how many, which types and a few names."""
    fake.add_symbol("AAPLUSDT", contract_type="TRADIFI_PERPETUAL")
    fake.add_symbol("XAUUSDT", contract_type="TRADIFI_PERPETUAL")

    async def body(ex: BinanceExchange) -> Any:
        rules = await ex.symbol_rules()
        with pytest.raises(SymbolNotTradable):
            await ex.place_market_order("AAPLUSDT", Side.BUY, Decimal("1"), cid("ct1"), reduce_only=False)
        return rules

    with capture_logs() as logs:
        rules = run(server, body)
    assert "AAPLUSDT" not in rules and "XAUUSDT" not in rules and "BTCUSDT" in rules
    [line] = [entry for entry in logs if entry["event"] == "binance_symbols_left_out"]
    assert line["count"] == 2 and line["by_type"] == {"TRADIFI_PERPETUAL": 2}
    assert line["examples"] == ["AAPLUSDT", "XAUUSDT"] and line["contract_types"] == ["PERPETUAL"]
    assert fake.requests("/fapi/v1/order", "POST") == []


def test_contract_types_setting_admits_tradfi_perpetuals(server: FakeBinanceServer, fake: FakeBinance) -> None:
    """binance.contract_types = [PERPETUAL, TRADIFI_PERPETUAL] trades both, and logs nothing left out."""
    fake.add_symbol("AAPLUSDT", contract_type="TRADIFI_PERPETUAL", mark="200")

    async def body(ex: BinanceExchange) -> Any:
        return await ex.symbol_rules()

    with capture_logs() as logs:
        rules = run(server, body, contract_types=("PERPETUAL", "TRADIFI_PERPETUAL"))
    assert rules["AAPLUSDT"].tradable and rules["AAPLUSDT"].max_leverage == 125
    assert not [entry for entry in logs if entry["event"] == "binance_symbols_left_out"]
