"""The envelope every stream entry carries, and the flat string encoding of a contract.

Stream entries are flat maps of strings (what ``redis-cli XRANGE`` shows): booleans are
``true``/``false``, numbers are plain decimal strings (never ``1e-05``), lists and maps are JSON.
Decoding is strict: a missing or malformed field raises :class:`ContractError` naming the field.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

CONTRACT_VERSION = 1

TraceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
HexId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
Symbol = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\s:*?\[\]]+$")]
Price = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
Quantity = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
Money = Annotated[Decimal, Field(allow_inf_nan=False)]
EpochMs = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


def now_ms() -> int:
    """The current time as integer epoch milliseconds (the fleet's only timestamp format)."""
    return time.time_ns() // 1_000_000


def new_trace_id() -> str:
    """A fresh 16-hex-char trace id, set where a chain starts."""
    return secrets.token_hex(8)


def plain_decimal(value: Decimal | float | int) -> str:
    """A plain decimal string: never exponent notation, no trailing ``.0`` noise beyond the value."""
    if isinstance(value, bool):
        raise TypeError("bool is not a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        value = Decimal(repr(value))
    elif isinstance(value, int):
        return str(value)
    if not value.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    text = format(value, "f")
    if text in ("-0", "-0.0") or (text.startswith("-") and Decimal(text) == 0):
        text = text[1:]
    return text


class ContractError(ValueError):
    """An entry does not satisfy its contract. ``field`` names the first offending field."""

    def __init__(self, contract: str, field: str, problem: str) -> None:
        super().__init__(f"{contract}.{field}: {problem}")
        self.contract = contract
        self.field = field
        self.problem = problem


class Message(BaseModel):
    """Base of every stream contract: the envelope ``v, ts, source, trace_id``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True)

    #: fields carried as JSON strings on the wire (lists, maps)
    JSON_FIELDS: ClassVar[frozenset[str]] = frozenset()

    v: Annotated[int, Field(ge=1, le=CONTRACT_VERSION)] = CONTRACT_VERSION
    ts: EpochMs = Field(default_factory=now_ms)
    source: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    trace_id: TraceId


M = TypeVar("M", bound=Message)


def _to_json_ready(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {k: _to_json_ready(v) for k, v in value.model_dump().items()}
    if isinstance(value, Mapping):
        return {str(k): _to_json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_ready(v) for v in value]
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, Enum):
        return value.value
    return value


def encode_value(value: Any) -> str:
    """One field value as its wire string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (Decimal, float, int)):
        return plain_decimal(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (BaseModel, Mapping, list, tuple)):
        return json.dumps(_to_json_ready(value), separators=(",", ":"), ensure_ascii=False)
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode(message: Message) -> dict[str, str]:
    """A contract as the flat string fields of a stream entry (None fields are left out)."""
    fields: dict[str, str] = {}
    for name in type(message).model_fields:
        value = getattr(message, name)
        if value is None:
            continue
        fields[name] = encode_value(value)
    return fields


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def decode(contract: type[M], fields: Mapping[Any, Any]) -> M:
    """Decode a stream entry into ``contract``; raise :class:`ContractError` naming the bad field."""
    name = contract.__name__
    try:
        data: dict[str, Any] = {_text(k): _text(v) for k, v in fields.items()}
    except UnicodeDecodeError as e:
        raise ContractError(name, "<entry>", f"not UTF-8: {e}") from e
    for field in contract.JSON_FIELDS:
        raw = data.get(field)
        if raw is None or raw == "":
            continue
        try:
            data[field] = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ContractError(name, field, f"not JSON: {e.msg}") from e
    try:
        return contract.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(part) for part in first["loc"]) or "<entry>"
        got = "" if first["type"] == "missing" else f" (got {str(first.get('input'))[:80]!r})"
        problem = "missing" if first["type"] == "missing" else first["msg"] + got
        raise ContractError(name, loc, problem) from e
