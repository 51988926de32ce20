"""The deterministic ids of DESIGN §4, so that a repeated proposal is recognised as the same one.

Each is the first 16 hex of a sha256 over ``|``-joined parts: two services (or two instances of one)
deriving an id from the same facts agree on it, and apply_layer answers the second ``duplicate_plan``.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from common.contracts.base import plain_decimal
from common.contracts.enums import Action, ExitReason


def hex16(*parts: object) -> str:
    """First 16 hex chars of sha256 of the parts joined with ``|``."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:16]


def intent_id(symbol: str, open_time: int, model: str) -> str:
    """sha256(``symbol|kline open_time|model``): two bots seeing one kline agree."""
    return hex16(symbol, open_time, model)


def entry_plan_id(intent_id: str) -> str:
    """sha256(``intent_id``): a re-delivered intent yields the same plan."""
    return hex16(intent_id)


def exit_plan_id(position_plan_id: str, reason: ExitReason, stage: int, attempt: int = 0) -> str:
    """sha256(``position_plan_id|reason|stage``); a repeated attempt of the same close adds ``|<n>``."""
    if attempt:
        return hex16(position_plan_id, reason.value, stage, attempt)
    return hex16(position_plan_id, reason.value, stage)


def stop_text(stop: Decimal) -> str:
    """A stop price as one canonical string (``100.10`` and ``100.1`` are the same stop)."""
    return plain_decimal(stop.normalize())


def stop_plan_id(position_plan_id: str, new_stop_loss: Decimal) -> str:
    """sha256(``position_plan_id|UPDATE_STOP|new_stop_loss``)."""
    return hex16(position_plan_id, Action.UPDATE_STOP.value, stop_text(new_stop_loss))
