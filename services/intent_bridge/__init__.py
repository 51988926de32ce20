"""intent_bridge: ``trade.intent`` -> ``apply.plan`` entries, or a ``policy.audit`` refusal."""
