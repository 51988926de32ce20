"""Symbol rules: Binance's leverage brackets (list or object), the rules built from exchangeInfo with them,
and the JSON kept in quantum:exchange:symbols (old JSON without brackets still reads)."""

from __future__ import annotations

import json
from decimal import Decimal

from common.exchange.rules import (
    NO_BRACKET_MAX_LEVERAGE,
    LeverageBracket,
    SymbolRules,
    build_rules,
    parse_leverage_brackets,
)

D = Decimal
# the documented sample of GET /fapi/v1/leverageBracket (numbers are JSON numbers), brackets out of order
SAMPLE = {
    "symbol": "ETHUSDT",
    "notionalCoef": 1.50,
    "brackets": [
        {"bracket": 2, "initialLeverage": 50, "notionalCap": 50000, "notionalFloor": 10000,
         "maintMarginRatio": 0.01, "cum": 35.0},
        {"bracket": 1, "initialLeverage": 75, "notionalCap": 10000, "notionalFloor": 0,
         "maintMarginRatio": 0.0065, "cum": 0.0},
    ],
}
ENTRY = {
    "symbol": "ETHUSDT", "pair": "ETHUSDT", "contractType": "PERPETUAL", "status": "TRADING",
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "100000", "tickSize": "0.01"},
        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "10000", "stepSize": "0.001"},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "2000", "stepSize": "0.001"},
        {"filterType": "MIN_NOTIONAL", "notional": "20"},
        {"filterType": "POSITION_RISK_CONTROL", "positionControlSide": "NONE"},
    ],
}


def test_brackets_parse_from_a_list_or_one_object_lowest_first() -> None:
    """Without symbol Binance answers a list, with symbol (per the docs) one object: both parse, brackets
    ordered by bracket number, caps as Decimals."""
    expected = (LeverageBracket(D("10000"), 75), LeverageBracket(D("50000"), 50))
    assert parse_leverage_brackets([SAMPLE]) == {"ETHUSDT": expected}
    assert parse_leverage_brackets(SAMPLE) == {"ETHUSDT": expected}
    assert parse_leverage_brackets([]) == {}


def test_rules_take_the_first_brackets_leverage_and_default_without_brackets() -> None:
    """max_leverage is bracket 1's initialLeverage (exchangeInfo has none); a symbol without brackets
    gets NO_BRACKET_MAX_LEVERAGE (1) and is reported; other contract types are left out and reported."""
    info = {"symbols": [ENTRY, {**ENTRY, "symbol": "NEWUSDT"}, {**ENTRY, "symbol": "AAPLUSDT",
                                                                   "contractType": "TRADIFI_PERPETUAL"}]}
    load = build_rules(info, parse_leverage_brackets([SAMPLE]), ("PERPETUAL",))
    assert load.rules["ETHUSDT"].max_leverage == 75 and len(load.rules["ETHUSDT"].leverage_brackets) == 2
    assert load.rules["NEWUSDT"].max_leverage == NO_BRACKET_MAX_LEVERAGE == 1
    assert load.without_brackets == ["NEWUSDT"] and load.excluded == {"AAPLUSDT": "TRADIFI_PERPETUAL"}
    assert set(build_rules(info, {}, None).rules) == {"ETHUSDT", "NEWUSDT", "AAPLUSDT"}


def test_max_leverage_at_follows_the_brackets() -> None:
    """The leverage a notional may use: its bracket's; 0 above the last cap."""
    rules = SymbolRules.from_exchange_info(ENTRY, parse_leverage_brackets(SAMPLE)["ETHUSDT"])
    assert [rules.max_leverage_at(D(n)) for n in ("0", "10000", "10000.01", "50000", "50001")] == [75, 75, 50, 50, 0]
    assert SymbolRules.from_exchange_info(ENTRY).max_leverage_at(D("1e9")) == NO_BRACKET_MAX_LEVERAGE


def test_json_round_trip_keeps_the_brackets_and_old_json_still_reads() -> None:
    """to_json/from_json carry the brackets; JSON written before them (no leverage_brackets) reads with
    none, its max_leverage kept."""
    rules = SymbolRules.from_exchange_info(ENTRY, parse_leverage_brackets(SAMPLE)["ETHUSDT"])
    assert SymbolRules.from_json(rules.to_json()) == rules
    assert json.loads(rules.to_json())["leverage_brackets"] == [
        {"notional_cap": "10000", "initial_leverage": 75}, {"notional_cap": "50000", "initial_leverage": 50}]
    old = json.loads(rules.to_json())
    del old["leverage_brackets"]
    restored = SymbolRules.from_json(json.dumps(old))
    assert restored.leverage_brackets == () and restored.max_leverage == 75
