"""The governor's writes, shared with ``qt ess`` and ``qt policy`` (DESIGN §3: the operator writes
``quantum:ess`` and ``quantum:policy:current`` through the governor's code).

Every change is a compare-and-set (WATCH/MULTI) on its key with its ``governor.events`` entry in the
same transaction: a trip of a switch already TRIPPED, or a policy whose version is already in force,
writes and publishes nothing — so each change is announced exactly once, whoever races for it. The
callers log what happened (the governor as JSON lines; ``qt`` prints it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import WatchError

from common import keys
from common.bus.effects import HashSet, Op, Publish, queue_ops
from common.contracts import Action, AlertEvent, ApplyPlan, GovernorEvent, PlanStep, now_ms
from common.contracts.enums import ExitReason
from common.ess import Ess, EssState, armed, parse_ess, tripped
from common.ids import exit_plan_id
from common.policy import Policy
from common.positions import PositionRecord
from common.streams import Service, Stream

log = structlog.get_logger()

POLICY_UPDATED = "POLICY_UPDATED"
ESS_TRIPPED = "ESS_TRIPPED"
ESS_RESET = "ESS_RESET"
#: who trips or resets the switch by hand (the ``by`` field)
OPERATOR = "operator"
#: ``origin`` of a policy loaded from the policy file / set with ``qt policy set``
ORIGIN_FILE = "file"
ORIGIN_OPERATOR = "qt"

_CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class PolicyRecord:
    """``quantum:policy:current`` as stored: the policy, where it came from, and the version of the
    policy file the governor last loaded (an operator's ``qt policy set`` holds until the file changes)."""

    policy: Policy
    origin: str
    file_version: str


def parse_policy_record(fields: dict[str, str]) -> PolicyRecord | None:
    if not fields:
        return None
    return PolicyRecord(Policy.from_hash(fields), fields.get("origin", ""), fields.get("file_version", ""))


async def read_policy_record(redis: Redis) -> PolicyRecord | None:
    """The policy in force as stored (None while the governor has not published one)."""
    fields: Any = await redis.hgetall(keys.policy_current())
    return parse_policy_record({str(k): str(v) for k, v in fields.items()})


async def _compare_and_set(redis: Redis, key: str, decide: Callable[[dict[str, str]], list[Op] | None],
                           service: str) -> list[Op] | None:
    """WATCH ``key``, let ``decide`` look at its fields and return the ops to apply (None: nothing), and
    apply them in MULTI/EXEC; retried when someone else changed the key meanwhile."""
    for _ in range(_CAS_ATTEMPTS):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw: Any = await pipe.hgetall(key)
                ops = decide({str(k): str(v) for k, v in raw.items()})
                if not ops:
                    await pipe.unwatch()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                    return None
                pipe.multi()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                queue_ops(pipe, ops, service=service)
                await pipe.execute()
                return ops
            except WatchError:
                continue
    raise RuntimeError(f"{key} kept changing under {_CAS_ATTEMPTS} attempts to update it")


# --- the policy ------------------------------------------------------------------------------------


def policy_details(policy: Policy, previous: PolicyRecord | None, origin: str) -> dict[str, Any]:
    return {
        "version": policy.version,
        "previous_version": previous.policy.version if previous else "",
        "origin": origin,
        "allowlist": list(policy.allowlist),
        "limits": policy.limits.model_dump(mode="json"),
    }


async def publish_policy(redis: Redis, policy: Policy, *, origin: str, service: str, trace_id: str,
                         file_version: str | None = None,
                         only_if: Callable[[PolicyRecord | None], bool] | None = None) -> Policy | None:
    """Make ``policy`` the policy in force and publish ``POLICY_UPDATED`` — unless its version is in force
    already (or ``only_if`` says no, looking at the stored record). The policy written (with its version
    and ``updated_at``), or None when nothing changed. ``file_version`` None keeps the stored one."""
    written: list[Policy] = []

    def decide(fields: dict[str, str]) -> list[Op] | None:
        written.clear()
        current = parse_policy_record(fields)
        if only_if is not None and not only_if(current):
            return None
        versioned = policy.with_version(now_ms())
        if current is not None and current.policy.version == versioned.version:
            if file_version is not None and current.file_version != file_version:
                # same content: only remember which file version it matches (no new version, no event)
                return [HashSet(keys.policy_current(), {"file_version": file_version})]
            return None
        kept = file_version if file_version is not None else (current.file_version if current else "")
        mapping = {**versioned.to_hash(), "origin": origin, "file_version": kept}
        event = GovernorEvent(source=service, trace_id=trace_id, kind=POLICY_UPDATED,
                              reason=f"policy {versioned.version} from {origin}",
                              details=policy_details(versioned, current, origin))
        written.append(versioned)
        return [HashSet(keys.policy_current(), mapping, replace=True), Publish(Stream.GOVERNOR_EVENTS, event)]

    await _compare_and_set(redis, keys.policy_current(), decide, service)
    if not written:
        return None
    return written[0]


# --- the kill switch -------------------------------------------------------------------------------


async def ensure_ess(redis: Redis, by: str = Service.GOVERNOR) -> bool:
    """Create the switch ARMED when it is absent; True when it was created."""

    def decide(fields: dict[str, str]) -> list[Op] | None:
        return None if fields else [HashSet(keys.ess(), armed(by).to_hash())]

    return await _compare_and_set(redis, keys.ess(), decide, by) is not None


def trip_ops(switch: Ess, *, service: str, trace_id: str, details: dict[str, Any],
             alert: bool) -> list[Op]:
    """What tripping is: the switch hash, the ``ESS_TRIPPED`` event and (from the governor) an alert."""
    info = {**details, "by": switch.by, "at": switch.at}
    ops: list[Op] = [
        HashSet(keys.ess(), switch.to_hash(), replace=True),
        Publish(Stream.GOVERNOR_EVENTS, GovernorEvent(source=service, trace_id=trace_id, kind=ESS_TRIPPED,
                                                      reason=switch.reason, details=info)),
    ]
    if alert:
        ops.append(Publish(Stream.ALERTS, AlertEvent(source=service, trace_id=trace_id, kind=ESS_TRIPPED,
                                                     reason=switch.reason, details=info)))
    return ops


async def trip(redis: Redis, reason: str, *, by: str, service: str, trace_id: str,
               details: dict[str, Any] | None = None, alert: bool = False) -> Ess | None:
    """Trip the switch unless it is TRIPPED already; the new switch, or None when it was tripped."""
    switch = tripped(reason, by)

    def decide(fields: dict[str, str]) -> list[Op] | None:
        if parse_ess(fields).tripped:
            return None
        return trip_ops(switch, service=service, trace_id=trace_id, details=details or {}, alert=alert)

    if await _compare_and_set(redis, keys.ess(), decide, service) is None:
        return None
    return switch


async def reset(redis: Redis, *, by: str, service: str, trace_id: str, reason: str = "reset") -> Ess | None:
    """Re-arm the switch and publish ``ESS_RESET``; None when it was not TRIPPED (an absent switch is
    created ARMED, with no event)."""
    switch = armed(by)

    def decide(fields: dict[str, str]) -> list[Op] | None:
        before = parse_ess(fields)
        if not fields:
            return [HashSet(keys.ess(), switch.to_hash())]
        if before.state is EssState.ARMED:
            return None
        event = GovernorEvent(source=service, trace_id=trace_id, kind=ESS_RESET, reason=reason,
                              details={"by": by, "at": switch.at, "was": before.reason, "was_by": before.by})
        return [HashSet(keys.ess(), switch.to_hash(), replace=True), Publish(Stream.GOVERNOR_EVENTS, event)]

    ops = await _compare_and_set(redis, keys.ess(), decide, service)
    if ops is None or not any(isinstance(op, Publish) for op in ops):
        return None
    return switch


# --- flattening ------------------------------------------------------------------------------------


def flatten_plan_id(position_plan_id: str) -> str:
    """The exit plan id of DESIGN §4 for the kill switch's flatten: reason ess_flatten, stage 0."""
    return exit_plan_id(position_plan_id, ExitReason.ESS_FLATTEN, 0)


def flatten_plans(positions: Iterable[PositionRecord], *, source: str, trace_id: str) -> list[ApplyPlan]:
    """A full reduce-only close of every position (reason ``ess_flatten``), one plan each, by symbol. A
    position whose hash names no valid entry plan cannot be closed by plan; it is logged and left out."""
    plans = []
    for p in sorted(positions, key=lambda p: p.symbol):
        try:
            plans.append(ApplyPlan(
                source=source, trace_id=trace_id, plan_id=flatten_plan_id(p.plan_id), symbol=p.symbol,
                action=Action.FULL_CLOSE_PROPOSED, position_plan_id=p.plan_id, reason=ExitReason.ESS_FLATTEN,
                steps=[PlanStep(step="CLOSE_FULL", pct=100.0)]))
        except ValidationError as e:
            log.error("flatten_position_skipped", symbol=p.symbol, position_plan_id=p.plan_id, error=str(e))
    return plans
