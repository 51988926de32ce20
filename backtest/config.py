"""What a backtest runs with: the fleet's own settings (``config/default.toml``, and ``--config FILE``
over it), the risk policy of ``policy_file``, the paper exchange's symbol rules, and the trained model
when one is given (else trading_bot's fallback, as when ai_engine has no model)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from common.config import ConfigurationError, Settings
from common.exchange.rules import SymbolRules, load_rules_file
from common.exit_levels import LadderParams
from common.maths.sizing import SizingParams
from common.policy import Policy, load_policy_file
from services.ai_engine.model import TrainedModel, load, load_latest, versions
from services.exitbrain.decide import ExitParams
from services.trading_bot.intents import sizing_params
from services.trading_bot.signals import TrendParams


@dataclass(frozen=True)
class BacktestConfig:
    """A backtest's inputs besides the klines."""

    settings: Settings
    policy: Policy
    rules: Mapping[str, SymbolRules]
    #: the direction model trading_bot asks (ai_engine's); None: the fallback trend-following signal
    model: TrainedModel | None = None
    #: skip the path points that provably change nothing (:mod:`backtest.quiet`); False runs every
    #: decision function at every path point (the reference the fast path is tested against)
    fast: bool = True
    #: entries only from this time on (epoch ms): the klines before it only warm the indicators
    trade_from_ms: int | None = None
    #: a kill switch the governor tripped is re-armed when the next UTC day begins (an operator's
    #: ``qt ess reset`` every morning); False: it stays tripped for the rest of the run, as in the fleet
    rearm_next_day: bool = False
    #: free-form facts about the inputs, for the report (the files, the model's origin)
    notes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, *, model: TrainedModel | None = None, **kwargs: Any) -> BacktestConfig:
        """The policy file and the rules file that ``settings`` name (ConfigurationError when unreadable)."""
        policy = load_policy_file(settings.config_file(settings.policy_file))
        rules_path = settings.config_file(settings.paper.rules_file)
        try:
            rules = load_rules_file(rules_path)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigurationError("paper.rules_file", f"cannot read {rules_path}: {e}") from e
        return cls(settings=settings, policy=policy, rules=rules, model=model, **kwargs)

    @cached_property
    def exit_params(self) -> ExitParams:
        return ExitParams.from_settings(self.settings)

    @cached_property
    def ladder(self) -> LadderParams:
        return LadderParams.from_settings(self.settings)

    @cached_property
    def trend(self) -> TrendParams:
        conf = self.settings.signal
        return TrendParams(ema_fast=conf.ema_fast, ema_slow=conf.ema_slow)

    @cached_property
    def sizing(self) -> SizingParams:
        return sizing_params(self.settings.signal)


def load_model(path: Path) -> TrainedModel:
    """A saved model: a model directory (its newest version), or one version's ``.json`` or ``.npz``.
    ValueError when there is none or it cannot be read."""
    try:
        if path.is_dir():
            found = load_latest(path)
            if found is None:
                raise ValueError(f"{path}: no model in this directory")
            return found
        stem = path.with_suffix("")
        version = next((v for v in versions(path.parent) if stem.name.endswith(f"-v{v:04d}")), None)
        if version is None:
            raise ValueError(f"{path}: not a saved model (ai-logreg-vNNNN.json with its .npz)")
        return load(path.parent, version)
    except (OSError, KeyError) as e:
        raise ValueError(f"{path}: cannot read the model: {e}") from e
