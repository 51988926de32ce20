"""The governor's two duties with their I/O: keep the policy file published, and trip the kill switch on
a loss limit (on every fill and trade close, and on a timer)."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager

import structlog
from prometheus_client import Gauge
from redis.asyncio import Redis

from common import governance
from common.bus import Delivery, Effects, Publish, commit
from common.config import ConfigurationError, Settings
from common.contracts import AlertEvent, Message, new_trace_id, now_ms
from common.ess import tripped
from common.logging import bound
from common.maths.ledger import daily_loss_pct, drawdown_pct, roll_day
from common.policy import Policy, load_policy_file
from common.store import all_positions, current_policy, read_account, read_ess
from common.streams import Service, Stream
from services.governor.policy_loader import file_update_reason
from services.governor.risk import breach

log = structlog.get_logger()

DAILY_LOSS = Gauge("qt_governor_daily_loss_pct", "Today's loss, percent of the day's starting equity")
DRAWDOWN = Gauge("qt_governor_drawdown_pct", "Drawdown from peak equity, percent")
TRIPPED = Gauge("qt_governor_ess_tripped", "1 while the kill switch is TRIPPED")

POLICY_FILE_INVALID = "POLICY_FILE_INVALID"


class PolicyWatch:
    """Publishes ``config/policy.toml`` when no policy is in force or the file changed."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.path = settings.config_file(settings.policy_file)
        self._last_error = ""

    async def sync(self) -> Policy | None:
        """Load the file and publish it if it should be; the policy published, or None. A bad file raises
        :class:`ConfigurationError`."""
        policy = load_policy_file(self.path)
        reason = file_update_reason(policy, await governance.read_policy_record(self.redis))
        if reason is None:
            return None
        published = await governance.publish_policy(
            self.redis, policy, origin=governance.ORIGIN_FILE, service=Service.GOVERNOR, trace_id=new_trace_id(),
            file_version=policy.version, only_if=lambda current: file_update_reason(policy, current) is not None)
        if published is not None:
            log.info("policy_loaded", reason=reason, version=published.version, file=str(self.path))
        return published

    async def check(self) -> None:
        """:meth:`sync` in the loop: a file broken while running keeps the policy in force, and is logged
        and alerted once per distinct error."""
        try:
            await self.sync()
            self._last_error = ""
        except ConfigurationError as e:
            if str(e) != self._last_error:
                self._last_error = str(e)
                log.error("policy_file_invalid", file=str(self.path), error=str(e))
                alert = AlertEvent(source=Service.GOVERNOR, trace_id=new_trace_id(), kind=POLICY_FILE_INVALID,
                                   reason=str(e)[:500], details={"file": str(self.path)})
                await commit(self.redis, [Publish(Stream.ALERTS, alert)], service=Service.GOVERNOR)


class RiskWatch:
    """Checks the ledger against the policy's loss limits and trips the switch — once: while it is
    TRIPPED nothing more is written. One lock covers every check and its commit (the consumers' guard
    and the timer), so two checks never both trip it."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.lock = asyncio.Lock()

    def guard(self, _: Message) -> AbstractAsyncContextManager[object]:
        return self.lock

    async def handle(self, delivery: Delivery) -> Effects:
        """A fill or a closed trade: check now (the effects are committed with the XACK, under the lock)."""
        with bound(trace_id=delivery.message.trace_id):
            return await self.assess(delivery.message.trace_id)

    async def check(self) -> Effects:
        """The timer's check; commits what it decides."""
        async with self.lock:
            await governance.ensure_ess(self.redis)
            effects = await self.assess(new_trace_id())
            if effects.ops:
                await commit(self.redis, effects.ops, service=Service.GOVERNOR)
            return effects

    async def assess(self, trace_id: str) -> Effects:
        """The trip's effects when a limit is reached and the switch is ARMED; else nothing. The caller
        holds the lock."""
        account = await read_account(self.redis)
        switch = await read_ess(self.redis)
        TRIPPED.set(1 if switch.tripped else 0)
        if account is not None:
            DAILY_LOSS.set(float(daily_loss_pct(roll_day(account, now_ms()))))
            DRAWDOWN.set(float(drawdown_pct(account)))
        if switch.tripped:
            return Effects()
        policy = await current_policy(self.redis, self.settings)
        found = breach(account, policy.limits, now_ms())
        if found is None:
            return Effects()
        assert account is not None
        details = {**found.details(), "policy_version": policy.version, "equity": str(account.equity),
                   "day_start_equity": str(account.day_start_equity), "peak_equity": str(account.peak_equity)}
        effects = Effects(governance.trip_ops(tripped(found.reason, Service.GOVERNOR), service=Service.GOVERNOR,
                                              trace_id=trace_id, details=details, alert=True))
        closes = 0
        if self.settings.governor.flatten_on_trip:
            plans = governance.flatten_plans((await all_positions(self.redis)).values(), source=Service.GOVERNOR,
                                             trace_id=trace_id)
            for plan in plans:
                effects.publish(Stream.APPLY_PLAN, plan)
            closes = len(plans)
        log.warning("ess_tripping", reason=found.reason, limit=found.limit, value_pct=str(found.value_pct),
                    limit_pct=str(found.limit_pct), flatten_plans=closes)
        TRIPPED.set(1)
        return effects


