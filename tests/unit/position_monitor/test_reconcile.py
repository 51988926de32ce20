"""Drift detection (pure): each kind, one report per drift start, RESOLVED when it ends, a drift seen
once is not confirmed, and what each resolution does for each kind."""

from __future__ import annotations

from decimal import Decimal

from common.contracts import ReconcileKind
from services.position_monitor.reconcile import (
    Drift,
    changes,
    confirmed,
    drift_kind,
    find_drift,
    operator_hint,
    resolve,
)

D = Decimal
K = ReconcileKind


def test_each_kind_of_drift() -> None:
    """Equal quantities are no drift; 0 in Redis is MISSING_IN_REDIS, 0 on the exchange
    MISSING_ON_EXCHANGE, opposite signs SIDE_MISMATCH, same sign different size QTY_MISMATCH."""
    assert drift_kind(D("1.5"), D("1.5")) is None
    assert drift_kind(D(0), D("2")) is K.MISSING_IN_REDIS
    assert drift_kind(D("-2"), D(0)) is K.MISSING_ON_EXCHANGE
    assert drift_kind(D("1"), D("-1")) is K.SIDE_MISMATCH
    assert drift_kind(D("-1"), D("-3")) is K.QTY_MISMATCH
    found = find_drift({"A": D("1"), "B": D("2"), "币安人生USDT": D("-10")},
                       {"A": D("1"), "B": D("1"), "C": D("4")})
    assert found == {"B": Drift("B", K.QTY_MISMATCH, D("2"), D("1")),
                     "C": Drift("C", K.MISSING_IN_REDIS, D(0), D("4")),
                     "币安人生USDT": Drift("币安人生USDT", K.MISSING_ON_EXCHANGE, D("-10"), D(0))}


def test_a_drift_is_reported_when_it_starts_and_when_it_ends() -> None:
    """A new drift starts once; the same drift the next pass is not reported again; a different kind is
    a new start; a drift gone is RESOLVED with the now-equal quantities."""
    first = {"B": Drift("B", K.QTY_MISMATCH, D("2"), D("1"))}
    started, ended = changes({}, first, {"B": D("2")})
    assert (started, ended) == ([first["B"]], [])
    assert changes(first, {"B": Drift("B", K.QTY_MISMATCH, D("2"), D("1.5"))}, {"B": D("2")}) == ([], [])
    flipped = {"B": Drift("B", K.SIDE_MISMATCH, D("2"), D("-1"))}
    assert changes(first, flipped, {"B": D("2")})[0] == [flipped["B"]]
    assert changes(first, {}, {"B": D("1")}) == ([], [Drift("B", K.RESOLVED, D("1"), D("1"))])


def test_a_drift_seen_once_is_not_confirmed() -> None:
    """A drift must be seen the same in both looks (or be known already) to count: an order between the
    exchange and apply_layer's commit shows once and is gone at the second look."""
    first = {"A": Drift("A", K.MISSING_IN_REDIS, D(0), D("1")), "B": Drift("B", K.QTY_MISMATCH, D("2"), D("1"))}
    second = {"B": Drift("B", K.QTY_MISMATCH, D("2"), D("1")), "C": Drift("C", K.MISSING_ON_EXCHANGE, D("1"), D(0)),
              "D": Drift("D", K.SIDE_MISMATCH, D("1"), D("-1"))}
    known = {"D": Drift("D", K.SIDE_MISMATCH, D("1"), D("-1"))}
    assert sorted(confirmed(first, second, known)) == ["B", "D"]


def test_report_mode_reports_every_kind() -> None:
    """resolution=report says ``reported`` for every kind and nothing for RESOLVED."""
    for kind in (K.MISSING_IN_REDIS, K.MISSING_ON_EXCHANGE, K.QTY_MISMATCH, K.SIDE_MISMATCH):
        assert resolve(Drift("A", kind, D("2"), D("1")), "report").action_taken == "reported"
    assert resolve(Drift("A", K.RESOLVED, D("1"), D("1")), "report").action_taken == "none"


def test_adopt_plans_an_adoption_for_every_kind() -> None:
    """resolution=adopt answers every drift kind with an ADOPT_EXCHANGE plan (apply_layer rewrites the
    hash from the exchange), and nothing for RESOLVED."""
    for kind, ours, theirs in ((K.MISSING_ON_EXCHANGE, D("2"), D(0)), (K.MISSING_IN_REDIS, D(0), D("2")),
                               (K.SIDE_MISMATCH, D("2"), D("-2")), (K.QTY_MISMATCH, D("-2"), D("-1.5"))):
        remedy = resolve(Drift("A", kind, ours, theirs), "adopt")
        assert remedy.action_taken == "adopt_exchange_planned", kind
        assert operator_hint(remedy.action_taken).startswith("resolution=adopt")
    assert resolve(Drift("A", K.RESOLVED, D("1"), D("1")), "adopt").action_taken == "none"
