"""The intent handler: reads the policy and the symbol's rules, asks :func:`bridge`, returns the plan or
the audit entry as Effects (the runtime commits them with the XACK)."""

from __future__ import annotations

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis

from common import keys
from common.bus import Delivery, Effects
from common.config import Settings
from common.contracts import ApplyPlan, PolicyAudit, TradeIntent, now_ms
from common.exchange.rules import SymbolRules, load_rules_file
from common.logging import bound
from common.store import current_policy, read_symbol_rule
from common.streams import Service, Stream
from services.intent_bridge.bridge import INTENT_REFUSED, bridge
from services.intent_bridge.log_limit import OncePerWindow

log = structlog.get_logger()

OUTCOMES = Counter("qt_intent_bridge_intents_total", "Intents handled, by outcome (plan or refusal reason)",
                   ("outcome",))


class IntentBridge:
    """Turns each ``trade.intent`` into an ``apply.plan`` entry or a ``policy.audit`` refusal."""

    def __init__(self, redis: Redis, settings: Settings, limiter: OncePerWindow | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.limiter = limiter or OncePerWindow()
        self._file_rules: dict[str, SymbolRules] | None = None

    async def symbol_rules(self, symbol: str) -> SymbolRules | None:
        """The symbol's rules as marketdata published them; the paper rules file while that hash is empty
        (marketdata has not run yet)."""
        rules = await read_symbol_rule(self.redis, symbol)
        if rules is not None or await self.redis.exists(keys.exchange_symbols()):
            return rules
        if self._file_rules is None:
            self._file_rules = load_rules_file(self.settings.config_file(self.settings.paper.rules_file))
            log.warning("symbol_rules_from_file", file=self.settings.paper.rules_file, symbols=len(self._file_rules))
        return self._file_rules.get(symbol)

    async def handle(self, delivery: Delivery) -> Effects:
        intent = delivery.message
        assert isinstance(intent, TradeIntent)
        with bound(trace_id=intent.trace_id, symbol=intent.symbol, intent_id=intent.intent_id):
            return await self.decide(intent)

    async def decide(self, intent: TradeIntent) -> Effects:
        now = now_ms()
        policy = await current_policy(self.redis, self.settings)
        outcome = bridge(intent, policy, await self.symbol_rules(intent.symbol), now_ms=now,
                         max_age_ms=self.settings.apply.entry_max_age_s * 1000, source=Service.INTENT_BRIDGE)
        if isinstance(outcome, ApplyPlan):
            OUTCOMES.labels("plan").inc()
            log.info("intent_bridged", plan_id=outcome.plan_id, side=outcome.side, qty=str(outcome.qty),
                     leverage=outcome.leverage, entry_price=str(outcome.entry_price), model=intent.model)
            return Effects().publish(Stream.APPLY_PLAN, outcome)
        OUTCOMES.labels(outcome.reason).inc()
        details = {"symbol": intent.symbol, "intent_id": intent.intent_id, "side": intent.side.value,
                   "model": intent.model, **outcome.details}
        audit = PolicyAudit(source=Service.INTENT_BRIDGE, trace_id=intent.trace_id, kind=INTENT_REFUSED,
                            reason=outcome.reason, details=details)
        may_log, suppressed = self.limiter.allow((outcome.reason, intent.symbol), now)
        if may_log:
            log.warning("intent_refused", reason=outcome.reason, suppressed_last_window=suppressed,
                        **{k: v for k, v in details.items() if k != "symbol"})
        return Effects().publish(Stream.POLICY_AUDIT, audit)
