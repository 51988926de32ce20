"""``python -m services.governor``: the policy in force and the one kill switch."""

from __future__ import annotations

import structlog

from common import governance
from common.service import ServiceContext, run
from common.streams import Service, Stream
from services.governor.watch import PolicyWatch, RiskWatch

log = structlog.get_logger()


async def setup(ctx: ServiceContext) -> None:
    settings = ctx.settings.governor
    policy = PolicyWatch(ctx.redis, ctx.settings)
    await policy.sync()  # a bad policy file stops the start here (exit 78)
    if await governance.ensure_ess(ctx.redis):
        log.info("ess_created", state="ARMED")
    risk = RiskWatch(ctx.redis, ctx.settings)
    await risk.check()  # a ledger already past a limit trips the switch before anything is consumed
    ctx.consume(Stream.EXECUTION_RESULT, risk.handle, guard=risk.guard)
    ctx.consume(Stream.TRADE_CLOSED, risk.handle, guard=risk.guard)
    ctx.every("policy", settings.policy_check_interval_s, policy.check)  # setup ran each once already
    ctx.every("risk", settings.risk_check_interval_s, risk.check)


def main() -> None:
    run(Service.GOVERNOR, setup)


if __name__ == "__main__":
    main()
