"""The one kill switch, ``quantum:ess``: ARMED (entries allowed) or TRIPPED (entries stopped).

Only entries are stopped: exits always go through. The governor trips it (daily loss, drawdown) and the
operator through ``qt ess``; everything else only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from common.contracts.base import now_ms


class EssState(StrEnum):
    ARMED = "ARMED"
    TRIPPED = "TRIPPED"


@dataclass(frozen=True)
class Ess:
    state: EssState
    reason: str = ""
    at: int = 0
    by: str = ""

    @property
    def tripped(self) -> bool:
        return self.state is EssState.TRIPPED

    def to_hash(self) -> dict[str, str]:
        return {"state": self.state.value, "reason": self.reason, "at": str(self.at), "by": self.by}


def parse_ess(fields: dict[str, str]) -> Ess:
    """The switch from its hash. Absent means ARMED; an unreadable state counts as TRIPPED (fail safe)."""
    if not fields:
        return Ess(EssState.ARMED)
    try:
        state = EssState(fields.get("state", ""))
    except ValueError:
        return Ess(EssState.TRIPPED, reason=f"unreadable state {fields.get('state')!r}")
    return Ess(state, fields.get("reason", ""), int(fields.get("at", "0") or 0), fields.get("by", ""))


def tripped(reason: str, by: str) -> Ess:
    return Ess(EssState.TRIPPED, reason, now_ms(), by)


def armed(by: str) -> Ess:
    return Ess(EssState.ARMED, "", now_ms(), by)
