"""Drift between the position hashes and the exchange (pure), and what ``monitor.resolution`` does
about it.

Each drift kind is reported once when it starts (``reconcile.events`` and ``alerts``) and once more as
``RESOLVED`` when it ends. ``report`` only says so. ``adopt`` also publishes an ``ADOPT_EXCHANGE`` plan:
apply_layer — the only writer of position hashes — rewrites the symbol's hash from the exchange's
position under its symbol lock (or deletes it when the exchange holds nothing) and publishes RESOLVED.
Per kind, what adopting means:

- ``MISSING_ON_EXCHANGE``: the hash is deleted (the position is gone; its protective orders cancelled).
- ``MISSING_IN_REDIS``: the exchange's position is taken over under the plan's id; it has no stop or
  target on record, so exitbrain manages it with the default levels (an operator may prefer to close it).
- ``QTY_MISMATCH``: the hash takes the exchange's quantity and entry price; its plan_id is kept.
- ``SIDE_MISMATCH``: the hash is replaced by the exchange's position (as for MISSING_IN_REDIS).

A drift seen once is re-checked after ``confirm_delay_s`` first: an order in flight between the exchange
and apply_layer's commit is not a drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from common.contracts import ReconcileKind
from common.positions import drift_kind

ZERO = Decimal(0)
Resolution = Literal["report", "adopt"]


@dataclass(frozen=True)
class Drift:
    """One symbol whose signed quantity in Redis differs from the exchange's (or RESOLVED: no longer)."""

    symbol: str
    kind: ReconcileKind
    redis_qty: Decimal
    exchange_qty: Decimal


@dataclass(frozen=True)
class Remedy:
    """What was done about a drift: ``action_taken`` as published."""

    action_taken: str


def find_drift(ours: Mapping[str, Decimal], theirs: Mapping[str, Decimal]) -> dict[str, Drift]:
    """Every symbol whose signed quantities differ (a symbol absent from a side holds 0 there)."""
    found: dict[str, Drift] = {}
    for symbol in sorted(set(ours) | set(theirs)):
        our_qty, their_qty = ours.get(symbol, ZERO), theirs.get(symbol, ZERO)
        kind = drift_kind(our_qty, their_qty)
        if kind is not None:
            found[symbol] = Drift(symbol, kind, our_qty, their_qty)
    return found


def confirmed(first: Mapping[str, Drift], second: Mapping[str, Drift],
              known: Mapping[str, Drift]) -> dict[str, Drift]:
    """The drift of ``second`` that is real: already known, or seen the same in both looks (a drift seen
    once is an order in flight between the exchange and apply_layer's commit)."""
    return {symbol: drift for symbol, drift in second.items()
            if (symbol in known and known[symbol].kind is drift.kind)
            or (symbol in first and first[symbol].kind is drift.kind)}


def changes(known: Mapping[str, Drift], current: Mapping[str, Drift],
            ours: Mapping[str, Decimal]) -> tuple[list[Drift], list[Drift]]:
    """(drifts that started — new, or a different kind — and RESOLVED ones that ended)."""
    started = [d for s, d in current.items() if s not in known or known[s].kind is not d.kind]
    ended = [Drift(s, ReconcileKind.RESOLVED, ours.get(s, ZERO), ours.get(s, ZERO))
             for s in sorted(known) if s not in current]
    return started, ended


def resolve(drift: Drift, resolution: Resolution) -> Remedy:
    """What ``resolution`` does about a drift that started (see the module docstring)."""
    if drift.kind is ReconcileKind.RESOLVED:
        return Remedy("none")
    if resolution == "report":
        return Remedy("reported")
    return Remedy("adopt_exchange_planned")


def operator_hint(action_taken: str) -> str:
    """What an operator must do after an action (the alert's reason text)."""
    hints = {
        "reported": "resolution=report: compare the exchange and the position hash and settle by hand",
        "adopt_exchange_planned": "resolution=adopt: apply_layer rewrites the position hash from the exchange",
        "awaiting_apply_layer_fill_catch_up": "apply_layer books the missed closing fill on its next catch-up; "
                                              "if the drift stays, the position was closed outside the fleet",
        "manual:untracked_exchange_position": "the exchange holds a position the fleet does not manage "
                                              "(no protective orders): close it on the exchange",
        "manual:side_mismatch": "the exchange holds the other side: close it on the exchange",
        "manual:untracked_excess_on_exchange": "the exchange holds more than the fleet manages: reduce it on "
                                               "the exchange",
        "manual:exchange_holds_less": "the exchange holds less than the position hash: a fill was missed; "
                                      "close the rest on the exchange",
    }
    return hints.get(action_taken, "")
