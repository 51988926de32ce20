"""exitbrain's memory of one position: the hash ``quantum:exit:state:{symbol}`` (DESIGN §4).

It holds what the pure decisions need between two marks: the ladder as harvest proposals moved it
(stage reached) and as marks moved it (best price, the stop in force in software), the stop exitbrain
last asked the exchange for, the market state at entry (for the kill score), the position's base stop
and target (so the levels do not drift once its stop moves), what has been proposed already (one plan
per position and stage) and the close in flight (to retry it). It is started afresh when the
position's ``plan_id`` changes, and written in the same commit as the plans it explains. A hash written
by an older exitbrain still loads: a field it lacks takes its default.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal

from common.contracts import plain_decimal


@dataclass(frozen=True)
class ExitState:
    """One position's exit memory. Prices are ``Decimal``; ``stage`` is the harvest stage reached (0..3)."""

    position_plan_id: str
    stage: int
    #: the best mark seen since entry (highest for a long, lowest for a short): the trailing anchor
    peak_price: Decimal
    #: the stop in force in software (the ladder's): crossing it closes the position
    ladder_stop: Decimal
    #: the stop exitbrain last asked for (or the position's own at first sight): what the exchange holds
    stop_loss: Decimal | None
    #: base stop and target distances (price-move fractions) of the position at first sight
    base_sl: float
    base_tp: float
    #: market state when the position was first seen with one (None until then)
    sigma_at_entry: float | None = None
    ts_strength_at_entry: float | None = None
    #: harvest stages already turned into plans ("TP1", "TP2", "TP3")
    proposed: frozenset[str] = frozenset()
    #: True once the regime was seen *not* against the position: only then can it turn against it (a
    #: position opened in a market without a trend has no trend to lose)
    regime_armed: bool = False
    #: the reason of the full close already proposed ("" while none): nothing more is proposed after it
    closing: str = ""
    #: when that full close was proposed, and how many times one was (a close that did not happen — an
    #: outage past its retries, a rejection — is proposed again after ``exit.close_retry_s``)
    closing_at: int = 0
    close_attempts: int = 0
    #: when the TP3 harvest (all that is open) was proposed (0 while not): a position still open
    #: ``exit.close_retry_s`` later is closed in full
    tp3_proposed_at: int = 0
    updated_at: int = 0

    @property
    def has_entry_market(self) -> bool:
        return self.sigma_at_entry is not None and self.ts_strength_at_entry is not None

    def with_changes(self, **changes: object) -> ExitState:
        """A copy with ``changes`` (field names only): ``dataclasses.replace`` without its per-call
        introspection, on the path of every mark."""
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"ExitState has no field {sorted(unknown)[0]!r}")
        copy = object.__new__(ExitState)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    def to_hash(self) -> dict[str, str]:
        return {
            "position_plan_id": self.position_plan_id,
            "stage": str(self.stage),
            "peak_price": plain_decimal(self.peak_price),
            "ladder_stop": plain_decimal(self.ladder_stop),
            "stop_loss": "" if self.stop_loss is None else plain_decimal(self.stop_loss),
            "base_sl": repr(self.base_sl),
            "base_tp": repr(self.base_tp),
            "sigma_at_entry": "" if self.sigma_at_entry is None else repr(self.sigma_at_entry),
            "ts_strength_at_entry": "" if self.ts_strength_at_entry is None else repr(self.ts_strength_at_entry),
            "proposed": ",".join(sorted(self.proposed)),
            "regime_armed": "true" if self.regime_armed else "false",
            "closing": self.closing,
            "closing_at": str(self.closing_at),
            "close_attempts": str(self.close_attempts),
            "tp3_proposed_at": str(self.tp3_proposed_at),
            "updated_at": str(self.updated_at),
        }

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> ExitState | None:
        """The state in a hash, or None when it is absent or unreadable (it is then started afresh)."""
        if not fields:
            return None
        try:
            proposed = frozenset(s for s in fields.get("proposed", "").split(",") if s)
            updated_at = int(fields.get("updated_at") or 0)
            tp3_proposed_at = int(fields.get("tp3_proposed_at") or 0)
            if "tp3_proposed_at" not in fields and "TP3" in proposed:
                # a hash written before the TP3 harvest was timed (a position the old exitbrain left at
                # stage 3): its last change is when TP3 was proposed at the latest
                tp3_proposed_at = updated_at
            return cls(
                position_plan_id=fields["position_plan_id"],
                stage=int(fields["stage"]),
                peak_price=Decimal(fields["peak_price"]),
                ladder_stop=Decimal(fields["ladder_stop"]),
                stop_loss=Decimal(fields["stop_loss"]) if fields.get("stop_loss") else None,
                base_sl=float(fields["base_sl"]),
                base_tp=float(fields["base_tp"]),
                sigma_at_entry=_optional_float(fields.get("sigma_at_entry")),
                ts_strength_at_entry=_optional_float(fields.get("ts_strength_at_entry")),
                proposed=proposed,
                regime_armed=fields.get("regime_armed") == "true",
                closing=fields.get("closing", ""),
                closing_at=int(fields.get("closing_at") or 0),
                close_attempts=int(fields.get("close_attempts") or 0),
                tp3_proposed_at=tp3_proposed_at,
                updated_at=updated_at,
            )
        except (KeyError, ValueError, ArithmeticError):
            return None


_FIELDS = frozenset(f.name for f in fields(ExitState))


def _optional_float(raw: str | None) -> float | None:
    return float(raw) if raw else None
