"""``python -m services.intent_bridge``: trade.intent -> apply.plan (entries) or policy.audit."""

from __future__ import annotations

from common.service import ServiceContext, run
from common.streams import Service, Stream
from services.intent_bridge.handler import IntentBridge


async def setup(ctx: ServiceContext) -> None:
    # an intent reads the policy and the symbol rules, never what the plans of earlier intents write: the
    # entries a lane holds are committed together
    ctx.consume(Stream.TRADE_INTENT, IntentBridge(ctx.redis, ctx.settings).handle, batched=True)


def main() -> None:
    run(Service.INTENT_BRIDGE, setup)


if __name__ == "__main__":
    main()
