"""The execution record of a plan, ``quantum:apply:plan:{plan_id}``: SUBMITTING before the send, DONE
in the commit. It is what makes a plan execute at most once whatever is killed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from common import keys
from common.bus.effects import HashSet
from common.contracts import ApplyPlan, Decision, decode, encode, now_ms
from common.redis_client import hgetall


class PlanState(StrEnum):
    SUBMITTING = "SUBMITTING"
    DONE = "DONE"


@dataclass(frozen=True)
class PlanRecord:
    plan_id: str
    state: PlanState
    client_order_id: str
    order_id: str
    decision: str
    error: str
    updated_at: int
    #: the stream entry of the plan and the plan itself, so a SUBMITTING record can be settled at start
    entry_id: str
    plan: ApplyPlan | None

    @classmethod
    def from_hash(cls, plan_id: str, fields: dict[str, str]) -> PlanRecord:
        plan = decode(ApplyPlan, json.loads(fields["plan"])) if fields.get("plan") else None
        return cls(plan_id, PlanState(fields["state"]), fields.get("client_order_id", ""),
                   fields.get("order_id", ""), fields.get("decision", ""), fields.get("error", ""),
                   int(fields.get("updated_at") or 0), fields.get("entry_id", ""), plan)


async def load_record(redis: Redis, plan_id: str) -> PlanRecord | None:
    fields = await hgetall(redis, keys.apply_plan(plan_id))
    return PlanRecord.from_hash(plan_id, fields) if fields else None


async def mark_submitting(redis: Redis, plan: ApplyPlan, client_order_id: str, entry_id: str, ttl_s: int) -> None:
    """Written *before* the order is sent: a crash after this is settled by asking the exchange."""
    key = keys.apply_plan(plan.plan_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={
            "state": PlanState.SUBMITTING.value,
            "client_order_id": client_order_id,
            "updated_at": str(now_ms()),
            "entry_id": entry_id,
            "plan": json.dumps(encode(plan), ensure_ascii=False),
        })
        pipe.expire(key, ttl_s)
        await pipe.execute()


def done(plan_id: str, decision: Decision, *, error: str = "", client_order_id: str = "", order_id: str = "",
         entry_id: str = "", ttl_s: int) -> HashSet:
    """The commit's write of the record: DONE with the outcome and the stream entry it answered (the plan
    itself is dropped). The same entry delivered again is then acknowledged without a second result."""
    return HashSet(
        keys.apply_plan(plan_id),
        {"state": PlanState.DONE.value, "decision": decision.value, "error": error,
         "client_order_id": client_order_id, "order_id": order_id, "entry_id": entry_id,
         "updated_at": str(now_ms())},
        replace=True,
        ttl_ms=ttl_s * 1000,
    )


async def submitting_records(redis: Redis, *, older_than_ms: int | None = None) -> list[PlanRecord]:
    """Every record left SUBMITTING (by a crash between the send and the commit, or a plan whose outcome
    could not be read), oldest first; with ``older_than_ms``, only those not updated for that long."""
    found = []
    now = now_ms()
    async for key in redis.scan_iter(match=keys.apply_plan_pattern(), count=500):
        plan_id = keys.tail(str(key), keys.apply_plan)
        record = await load_record(redis, plan_id) if plan_id else None
        if record is None or record.state is not PlanState.SUBMITTING:
            continue
        if older_than_ms is not None and now - record.updated_at < older_than_ms:
            continue
        found.append(record)
    return sorted(found, key=lambda r: (r.updated_at, r.plan_id))
