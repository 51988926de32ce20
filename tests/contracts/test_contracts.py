"""Every contract survives its wire encoding, and malformed input is refused naming the field."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import streams
from common.contracts import ApplyPlan, ContractError, MarketTick, TradeIntent, decode, encode, plain_decimal
from common.contracts.base import Message
from tests.contracts.strategies import STRATEGIES
from tests.helpers import intent

PLAIN = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def test_every_registered_contract_has_a_strategy() -> None:
    """The round-trip below covers every contract the registry names."""
    assert {spec.contract for spec in streams.all_streams()} == set(STRATEGIES)


@pytest.mark.parametrize("contract", list(STRATEGIES), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip(contract: type[Message], data: st.DataObject) -> None:
    """encode then decode gives the same message; every field is a string; numbers are plain decimals."""
    message = data.draw(STRATEGIES[contract])
    fields = encode(message)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
    for name in type(message).model_fields:
        value = getattr(message, name)
        if isinstance(value, (Decimal, float)) and not isinstance(value, bool) and name in fields:
            assert PLAIN.match(fields[name]), (name, fields[name])
        if isinstance(value, bool):
            assert fields[name] in ("true", "false")
    assert decode(contract, fields) == message
    assert decode(contract, {k.encode(): v.encode() for k, v in fields.items()}) == message


def test_plain_decimal_never_uses_exponents() -> None:
    """1e-05 is written 0.00001; large and negative-zero values are plain too."""
    assert plain_decimal(1e-05) == "0.00001"
    assert plain_decimal(Decimal("1E+3")) == "1000"
    assert plain_decimal(Decimal("-0.0")) == "0.0"
    assert plain_decimal(Decimal("12.5000")) == "12.5000"
    with pytest.raises(ValueError):
        plain_decimal(float("nan"))


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"side": None}, "side", "missing"),
        ({"side": "LONG"}, "side", "Input should be 'BUY' or 'SELL'"),
        ({"entry_price": "abc"}, "entry_price", "valid decimal"),
        ({"entry_price": "NaN"}, "entry_price", "finite"),
        ({"entry_price": "-1"}, "entry_price", "greater than 0"),
        ({"confidence": "1.5"}, "confidence", "less than or equal to 1"),
        ({"leverage": "10.5"}, "leverage", "valid integer"),
        ({"trace_id": "XYZ"}, "trace_id", "pattern"),
        ({"ts": "yesterday"}, "ts", "valid integer"),
        ({"reduceOnly": "true"}, "reduceOnly", "Extra inputs are not permitted"),
        ({"v": "2"}, "v", "less than or equal to 1"),
    ],
)
def test_malformed_intent_is_refused_naming_the_field(change: dict[str, Any], field: str, problem: str) -> None:
    """A missing or malformed field raises ContractError whose message names the field."""
    fields: dict[str, Any] = dict(encode(intent(1)))
    for key, value in change.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    with pytest.raises(ContractError) as caught:
        decode(TradeIntent, fields)
    assert caught.value.field == field
    assert problem in str(caught.value)
    assert str(caught.value).startswith(f"TradeIntent.{field}: ")


def test_intent_levels_must_sit_on_the_side() -> None:
    """A BUY with its stop above the entry is refused (levels are absolute prices on the right side)."""
    fields = dict(encode(intent(1)))
    fields["stop_loss"] = "105"
    with pytest.raises(ContractError, match="BUY needs stop_loss < entry_price < take_profit"):
        decode(TradeIntent, fields)


def test_plan_requires_the_fields_of_its_action() -> None:
    """An exit plan without position_plan_id, or an entry without qty, is refused naming the field."""
    exit_plan = {"v": "1", "ts": "1", "source": "exitbrain", "trace_id": "0" * 16, "plan_id": "1" * 16,
                 "symbol": "BTCUSDT", "action": "FULL_CLOSE_PROPOSED", "decision": "EXECUTE", "reason": "manual",
                 "steps": '[{"step":"CLOSE_FULL","type":"market_reduce_only","side":"close","pct":100.0}]'}
    with pytest.raises(ContractError, match="position_plan_id is required for FULL_CLOSE_PROPOSED"):
        decode(ApplyPlan, exit_plan)
    with pytest.raises(ContractError, match="steps: not JSON"):
        decode(ApplyPlan, {**exit_plan, "position_plan_id": "2" * 16, "steps": "[{"})
    ok = decode(ApplyPlan, {**exit_plan, "position_plan_id": "2" * 16})
    assert ok.close_pct == 100.0
    with pytest.raises(ContractError, match="closes 100 pct"):
        decode(ApplyPlan, {**exit_plan, "position_plan_id": "2" * 16,
                           "steps": '[{"step":"CLOSE_PARTIAL","pct":50}]'})


def test_non_ascii_symbol_passes_unchanged() -> None:
    """币安人生USDT goes through encode/decode byte for byte."""
    tick = MarketTick(source="marketdata", trace_id="a" * 16, symbol="币安人生USDT", price=Decimal("0.1234"),
                      mark_price=Decimal("0.1235"))
    raw = {k.encode(): v.encode() for k, v in encode(tick).items()}
    assert decode(MarketTick, raw).symbol == "币安人生USDT"
