"""Settings (DESIGN §9): ``config/default.toml``, then ``QT_CONFIG``, then systemd credentials, then
``QT_*`` environment variables (nested with ``__``) and ``REDIS_URL``.

Settings are frozen and strict: an unknown key is refused, in a file or in the environment, and so is
an environment variable naming a section that does not exist (``QT_NOPE__X``). A wrong value stops the
process at start with exit code 78 (EX_CONFIG) and one line naming the setting (and the variable, when
it came from the environment): a JSON object like every log line, or a plain sentence on a terminal.

``profile = "demo"`` (``config/demo.toml``, what ``make run`` layers over the defaults through
``QT_CONFIG``) is refused unless the exchange is the paper one and the market the synthetic one.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    RedisDsn,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

EX_CONFIG = 78
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = REPO_ROOT / "config"


class ConfigurationError(Exception):
    """A setting is wrong. The process cannot start; the operator must fix the setting."""

    def __init__(self, setting: str, problem: str, variable: str | None = None) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem
        #: the environment variable the wrong value came from, when it came from one
        self.variable = variable


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BusSettings(_Section):
    """The bus runtime (DESIGN §5)."""

    batch_size: Annotated[int, Field(ge=1, le=1000)] = 32
    #: entries a consumer holds in memory at most (read, not yet handled): the reader waits for room
    in_flight_max: Annotated[int, Field(ge=1, le=100_000)] = 256
    block_ms: Annotated[int, Field(ge=1, le=60_000)] = 1000
    claim_idle_ms: Annotated[int, Field(ge=1)] = 30_000
    claim_interval_ms: Annotated[int, Field(ge=1)] = 5_000
    max_deliveries: Annotated[int, Field(ge=1, le=1000)] = 5
    #: after a handler fails, the consumer waits this long (doubling, capped) before trying again
    retry_initial_ms: Annotated[int, Field(ge=1)] = 200
    retry_max_ms: Annotated[int, Field(ge=1)] = 5_000
    reconnect_initial_ms: Annotated[int, Field(ge=1)] = 100
    reconnect_max_ms: Annotated[int, Field(ge=1)] = 5_000
    socket_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    lag_interval_s: Annotated[float, Field(gt=0)] = 10.0


class RuntimeSettings(_Section):
    """The service runner: heartbeat, metrics, systemd."""

    heartbeat_interval_s: Annotated[float, Field(gt=0)] = 5.0
    heartbeat_ttl_s: Annotated[int, Field(ge=1)] = 20
    metrics_host: str = "127.0.0.1"
    #: metrics port per service; 0 = no metrics listener
    metrics_ports: dict[str, Annotated[int, Field(ge=0, le=65535)]] = Field(default_factory=dict)
    #: the longest a SIGTERM drain may take before the process gives up (below systemd's stop timeout)
    stop_timeout_s: Annotated[float, Field(gt=0)] = 20.0


class PaperSettings(_Section):
    """The paper exchange (the default)."""

    slippage_bps: Annotated[Decimal, Field(ge=0, le=1000)] = Decimal("2")
    taker_fee: Annotated[Decimal, Field(ge=0, le=Decimal("0.01"))] = Decimal("0.0005")
    starting_balance: Annotated[Decimal, Field(gt=0)] = Decimal("10000")
    rules_file: str = "paper_symbols.json"
    #: how old the mark price may be before an order is refused (ms)
    max_price_age_ms: Annotated[int, Field(ge=0)] = 120_000
    #: simulated exchange latency per order call (ms), to exercise crashes mid-flight
    latency_ms: Annotated[int, Field(ge=0, le=10_000)] = 0


class ApplySettings(_Section):
    """apply_layer, the one executor (DESIGN §6)."""

    cooldown_s: Annotated[int, Field(ge=0)] = 900
    #: an entry plan older than this is skipped as stale_plan (exits never are)
    entry_max_age_s: Annotated[int, Field(ge=1)] = 300
    #: an entry whose mark moved more than this fraction from its entry_price is skipped as price_moved
    entry_max_move_frac: Annotated[float, Field(gt=0, lt=1)] = 0.01
    record_ttl_s: Annotated[int, Field(ge=60)] = 7 * 86_400
    protective_orders: bool = True
    #: the settling round: missed exchange fills booked and stuck SUBMITTING records settled this often
    settle_interval_s: Annotated[float, Field(gt=0)] = 60.0
    #: a SUBMITTING record not updated for this long is settled by the round (0: one settle interval)
    submitting_max_age_s: Annotated[float, Field(ge=0)] = 0.0
    #: a position whose protective stop the exchange rejected or expired, and that cannot be protected
    #: again: "close" it (a reduce-only market exit) or only "alert"
    unprotected: Literal["close", "alert"] = "close"
    #: active/standby: the lease's TTL; the active instance renews it every third of that
    lease_ttl_ms: Annotated[int, Field(ge=1000)] = 15_000
    #: orders per second the executor sends at most (exits go first when it binds)
    orders_per_s: Annotated[float, Field(gt=0)] = 20.0
    order_burst: Annotated[int, Field(ge=1)] = 40

    @property
    def submitting_max_age_ms(self) -> int:
        return int((self.submitting_max_age_s or self.settle_interval_s) * 1000)


class HttpSettings(_Section):
    """The HTTP services (FastAPI under uvicorn, in the service's own event loop)."""

    host: str = "127.0.0.1"
    ports: dict[str, Annotated[int, Field(ge=0, le=65535)]] = Field(default_factory=dict)
    #: URL trading_bot asks for predictions
    ai_engine_url: str = "http://127.0.0.1:8001"


class MarketdataSettings(_Section):
    """marketdata: sources, klines and market state."""

    seed: int = 42
    #: real time between two synthetic tick rounds (every symbol ticks once per round)
    tick_interval_ms: Annotated[int, Field(ge=10)] = 250
    kline_interval: str = "1m"
    #: synthetic time per real time: 20 makes a 250 ms round 5 s of market and closes a 1m kline
    #: every 3 real seconds (1 = real time)
    time_factor: Annotated[float, Field(gt=0)] = 20.0
    replay_speed: Annotated[float, Field(ge=0)] = 60.0
    replay_symbol: str = "XRPUSDT"
    replay_interval: str = "5m"
    #: replay only: publish each price and kline alone, the next only once the fleet has handled it (its
    #: latest-value readers wait on their streams again, every consumer group is caught up), as fast as
    #: that allows — what the backtest parity test runs (services.marketdata.lockstep)
    replay_lockstep: bool = False
    #: closed klines published at start (Binance REST, or the synthetic market's own history)
    backfill_klines: Annotated[int, Field(ge=0, le=1500)] = 200
    symbols_refresh_s: Annotated[float, Field(gt=0)] = 300.0
    #: an in-progress kline is published at most this often per symbol (real ms; 0 = closed only)
    kline_update_ms: Annotated[int, Field(ge=0)] = 1000
    #: synthetic start prices; a symbol not listed starts at 10,000 ticks
    start_prices: dict[str, Annotated[Decimal, Field(gt=0)]] = Field(default_factory=lambda: {
        "BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000"), "SOLUSDT": Decimal("150"),
        "XRPUSDT": Decimal("0.6"), "ANKRUSDT": Decimal("0.02"), "RIVERUSDT": Decimal("10"),
        "HYPEUSDT": Decimal("30"), "币安人生USDT": Decimal("0.1")})
    #: Binance source: the futures websocket base URL (empty: python-binance's, by testnet or not)
    binance_ws_url: str = ""
    #: Binance source: no message for this long means the websocket is dead (reconnect)
    stale_after_s: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("kline_interval", "replay_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        if not re.fullmatch(r"[1-9][0-9]*[smhdw]", value):
            raise ValueError("a kline interval such as 1m, 5m, 1h")
        return value


class SignalSettings(_Section):
    """trading_bot, ai_engine and the trading mathematician (DESIGN §7)."""

    min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.55
    ai_timeout_ms: Annotated[int, Field(ge=1)] = 300
    ema_fast: Annotated[int, Field(ge=2)] = 9
    ema_slow: Annotated[int, Field(ge=3)] = 21
    default_balance_usd: Annotated[Decimal, Field(gt=0)] = Decimal("10000")
    sl_atr_mult: Annotated[float, Field(gt=0)] = 0.3
    min_sl_frac: Annotated[float, Field(gt=0)] = 0.03
    reward_risk: Annotated[float, Field(gt=0)] = 1.33
    leverage_cap: Annotated[int, Field(ge=1, le=125)] = 10
    margin_fraction: Annotated[float, Field(gt=0, le=1)] = 0.02
    model_dir: str = "var/models"
    #: how often ai_engine looks for a newer model in model_dir
    model_reload_s: Annotated[float, Field(gt=0)] = 10.0
    #: closed klines trading_bot keeps per symbol (seeded from the stream's history at start)
    window_klines: Annotated[int, Field(ge=30, le=5000)] = 200
    #: an unchanged signal is published again only after this many klines (the cooldown: 15 x 1m)
    repeat_after_klines: Annotated[int, Field(ge=1)] = 15
    #: signals GET /signals remembers
    recent_signals: Annotated[int, Field(ge=1, le=10_000)] = 200
    #: market.klines entries one XREAD returns at most, and how long it blocks
    kline_read_count: Annotated[int, Field(ge=1, le=10_000)] = 500
    kline_block_ms: Annotated[int, Field(ge=1, le=60_000)] = 1000
    #: the most market.klines entries read back (XREVRANGE) to seed the windows at start
    seed_max_entries: Annotated[int, Field(ge=0)] = 20_000


class ExitSettings(_Section):
    """exitbrain and harvest_proposal (DESIGN §7)."""

    kill_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.70
    #: a full close (or the TP3 harvest) still not done this long after it was proposed is proposed again
    #: as a full close (a new attempt id)
    close_retry_s: Annotated[float, Field(gt=0)] = 120.0
    #: a position open this long is closed in full (reason time_exit); 0 = no time exit
    max_hold_s: Annotated[int, Field(ge=0)] = 0
    trailing_callback_frac: Annotated[float, Field(gt=0, lt=1)] = 0.008
    min_stop_step_frac: Annotated[float, Field(ge=0, lt=1)] = 0.001
    pnl_interval_s: Annotated[float, Field(gt=0)] = 5.0
    evaluate_interval_s: Annotated[float, Field(gt=0)] = 1.0
    #: break-even is entry plus the round trip's fees: entry·(1 ± 2·fee_rate)
    fee_rate: Annotated[Decimal, Field(ge=0, lt=Decimal("0.01"))] = Decimal("0.0005")
    #: kill score weights and horizon: z = w_regime_flip·k1 + w_sigma_spike·k2 + w_ts_drop·k3 + w_age_penalty·k4
    w_regime_flip: Annotated[float, Field(ge=0)] = 1.0
    w_sigma_spike: Annotated[float, Field(ge=0)] = 0.5
    w_ts_drop: Annotated[float, Field(ge=0)] = 0.5
    w_age_penalty: Annotated[float, Field(ge=0)] = 0.3
    kill_age_horizon_s: Annotated[int, Field(ge=1)] = 86_400
    #: adaptive level clamps (price-move fractions): every TP at least tp_min, SL within [sl_min, sl_max]
    tp_min: Annotated[float, Field(gt=0, lt=1)] = 0.003
    sl_min: Annotated[float, Field(gt=0, lt=1)] = 0.001
    sl_max: Annotated[float, Field(gt=0, lt=1)] = 0.02
    #: harvest split of the original position at TP1/TP2/TP3 by leverage band
    split_low: tuple[float, float, float] = (0.3, 0.3, 0.4)
    split_low_max_leverage: Annotated[int, Field(ge=1)] = 10
    split_mid: tuple[float, float, float] = (0.4, 0.4, 0.2)
    split_mid_max_leverage: Annotated[int, Field(ge=1)] = 30
    split_high: tuple[float, float, float] = (0.5, 0.3, 0.2)

    @model_validator(mode="after")
    def _levels_consistent(self) -> ExitSettings:
        for name in ("split_low", "split_mid", "split_high"):
            split = getattr(self, name)
            if min(split) < 0 or abs(sum(split) - 1.0) > 1e-9:
                raise ValueError(f"{name} must be three non-negative shares summing to 1")
        if self.split_low_max_leverage >= self.split_mid_max_leverage:
            raise ValueError("split_low_max_leverage must be below split_mid_max_leverage")
        if self.sl_min > self.sl_max:
            raise ValueError("sl_min must not exceed sl_max")
        return self


class MonitorSettings(_Section):
    """position_monitor: snapshots and reconciliation."""

    snapshot_interval_s: Annotated[float, Field(gt=0)] = 5.0
    reconcile_interval_s: Annotated[float, Field(gt=0)] = 30.0
    #: report: publish drift only; adopt: publish the plan that makes Redis follow the exchange
    resolution: Literal["report", "adopt"] = "report"
    #: a drift seen is looked at again after this long before it is reported (an order in flight between
    #: the exchange and apply_layer's commit is not drift)
    confirm_delay_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    #: how many recent apply.result / execution.result entries GET /results keeps
    recent_results: Annotated[int, Field(ge=1, le=10_000)] = 200


class GovernorSettings(_Section):
    """governor: policy publication and the kill switch."""

    policy_check_interval_s: Annotated[float, Field(gt=0)] = 10.0
    risk_check_interval_s: Annotated[float, Field(gt=0)] = 5.0
    #: when the governor trips the switch itself (loss limits), also publish a full close of every position
    flatten_on_trip: bool = False


class BinanceSettings(_Section):
    """Binance USD-M futures through python-binance."""

    api_key: SecretStr = SecretStr("")
    api_secret: SecretStr = SecretStr("")
    #: overrides the futures base URL (tests point it at the fake server)
    base_url: str = ""
    recv_window_ms: Annotated[int, Field(ge=1, le=60_000)] = 5_000
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    max_retries: Annotated[int, Field(ge=0, le=20)] = 5
    backoff_initial_ms: Annotated[int, Field(ge=1)] = 200
    backoff_max_ms: Annotated[int, Field(ge=1)] = 10_000
    #: exchangeInfo and the leverage brackets are re-read this often
    rules_ttl_s: Annotated[int, Field(ge=1)] = 3_600
    listen_key_keepalive_s: Annotated[int, Field(ge=1)] = 1_800
    poll_interval_s: Annotated[float, Field(gt=0)] = 5.0
    #: the contract types traded; symbols of other types (e.g. TRADIFI_PERPETUAL) are left out
    contract_types: tuple[Annotated[str, Field(pattern=r"^[A-Z][A-Z_]*$")], ...] = ("PERPETUAL",)
    #: how long a filled order's trades may take to add up to its executed quantity before the fill
    #: is left to be settled later (re-read a few times within this)
    fills_wait_s: Annotated[float, Field(ge=0, le=30)] = 2.0

    @field_validator("contract_types")
    @classmethod
    def _some_contract_type(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one contract type (e.g. PERPETUAL)")
        return value


class Settings(BaseSettings):
    """Every setting of the fleet. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="QT_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    redis_url: RedisDsn = Field(
        default=RedisDsn("redis://127.0.0.1:6379/0"),
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
    )
    #: the Redis user and password of this service, when the server enforces ACLs (``qt redis-acl``)
    redis_username: str = ""
    redis_password: SecretStr = SecretStr("")
    exchange: Literal["paper", "binance-testnet", "binance"] = "paper"
    market_source: str = "synthetic"
    symbols: Annotated[tuple[str, ...], NoDecode] = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
    api_token: SecretStr = SecretStr("")
    #: another settings file, applied over config/default.toml
    config: str = ""
    #: "demo": the settings of config/demo.toml, for the paper exchange and the synthetic market only
    profile: Literal["", "demo"] = ""
    #: where default.toml, policy.toml and the paper exchange's rules live
    config_dir: str = str(DEFAULT_CONFIG_DIR)
    #: the ``-<n>`` of a consumer name when several instances of a service share a host
    instance: str = ""
    host: str = Field(default_factory=socket.gethostname)
    policy_file: str = "policy.toml"

    bus: BusSettings = BusSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    paper: PaperSettings = PaperSettings()
    binance: BinanceSettings = BinanceSettings()
    apply: ApplySettings = ApplySettings()
    http: HttpSettings = HttpSettings()
    marketdata: MarketdataSettings = MarketdataSettings()
    signal: SignalSettings = SignalSettings()
    exit: ExitSettings = ExitSettings()
    monitor: MonitorSettings = MonitorSettings()
    governor: GovernorSettings = GovernorSettings()

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, (list, tuple)):
            if not value or any(not isinstance(s, str) or not s or s != s.strip() for s in value):
                raise ValueError("a comma-separated list of exchange symbols, none empty")
            if len(set(value)) != len(value):
                raise ValueError("a symbol is listed twice")
        return value

    @field_validator("market_source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value in ("synthetic", "binance") or (value.startswith("replay:") and len(value) > len("replay:")):
            return value
        raise ValueError("one of synthetic, replay:<file>, binance")

    @model_validator(mode="after")
    def _demo_only_on_paper(self) -> Settings:
        if self.profile == "demo" and (self.exchange != "paper" or self.market_source != "synthetic"):
            raise ValueError(f"profile=demo runs only with exchange=paper and market_source=synthetic (got "
                             f"exchange={self.exchange}, market_source={self.market_source}): its settings "
                             "trade far too eagerly for a real market")
        return self

    @model_validator(mode="after")
    def _binance_needs_keys(self) -> Settings:
        if self.exchange != "paper" and not (
            self.binance.api_key.get_secret_value() and self.binance.api_secret.get_secret_value()
        ):
            raise ValueError(f"exchange={self.exchange} needs binance.api_key and binance.api_secret")
        return self

    @property
    def config_path(self) -> Path:
        return Path(self.config_dir)

    def config_file(self, name: str) -> Path:
        """A file of the config directory (absolute names pass through)."""
        path = Path(name)
        return path if path.is_absolute() else self.config_path / path

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_dir = Path(os.environ.get("QT_CONFIG_DIR") or DEFAULT_CONFIG_DIR)
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            CredentialsSource(settings_cls),
        ]
        extra = os.environ.get("QT_CONFIG")
        if extra:
            path = Path(extra)
            if not path.is_file():
                raise ConfigurationError("QT_CONFIG", f"no such file: {extra}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        default = config_dir / "default.toml"
        if default.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=default))
        return tuple(sources)


#: secrets that may come from systemd credentials: file name -> setting path
CREDENTIAL_FILES: dict[str, tuple[str, ...]] = {
    "QT_BINANCE__API_KEY": ("binance", "api_key"),
    "QT_BINANCE__API_SECRET": ("binance", "api_secret"),
    "QT_API_TOKEN": ("api_token",),
    "QT_REDIS_PASSWORD": ("redis_password",),
}


class CredentialsSource(PydanticBaseSettingsSource):
    """Secrets from ``$CREDENTIALS_DIRECTORY/<name>`` (systemd ``LoadCredential=``)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            return {}
        found: dict[str, Any] = {}
        for name, path in CREDENTIAL_FILES.items():
            file = Path(directory) / name
            if not file.is_file():
                continue
            value = file.read_text(encoding="utf-8").strip()
            target = found
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
        return found


def _env_name(loc: tuple[str | int, ...]) -> str | None:
    """The environment variable that set the setting at ``loc`` (``QT_BUS__MAX_DELIVERIES``), if one did."""
    if not loc:
        return None
    wanted = ("QT_" + "__".join(str(p) for p in loc)).upper()
    names = [wanted, "REDIS_URL"] if loc == ("redis_url",) else [wanted]
    return next((name for name in os.environ if name.upper() in names), None)


def _secret(setting: str) -> bool:
    return any(word in setting for word in ("secret", "token", "key", "password", "url"))


def _describe(error: ValidationError) -> ConfigurationError:
    first = error.errors()[0]
    setting = ".".join(str(p) for p in first["loc"]) or "<settings>"
    problem = first["msg"]
    # the value is echoed only for one setting, never for the settings as a whole (their input holds every
    # variable, REDIS_URL with its password among them) nor for a secret
    if first["type"] != "missing" and "input" in first and first["loc"] and not _secret(setting):
        problem += f" (got {str(first['input'])[:60]!r})"
    return ConfigurationError(setting, problem, _env_name(tuple(first["loc"])))


def _sections() -> list[str]:
    """The settings that are sections (``[bus]``, ``QT_BUS__...``)."""
    return [name for name, info in Settings.model_fields.items()
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)]


def check_environment_sections(environ: dict[str, str] | None = None) -> None:
    """Refuse a ``QT_<SECTION>__<KEY>`` variable whose section does not exist (pydantic-settings would
    ignore it silently, while it refuses an unknown key of a known section)."""
    sections = _sections()
    for name in sorted(os.environ if environ is None else environ):
        upper = name.upper()
        if not upper.startswith("QT_") or "__" not in upper:
            continue
        section = upper[3:].split("__", 1)[0].lower()
        if section not in sections:
            raise ConfigurationError(name, f"no settings section {section!r} (the sections: "
                                     f"{', '.join(sections)})", name)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise :class:`ConfigurationError` naming the bad setting."""
    check_environment_sections()
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise _describe(e) from None
    except (OSError, ValueError) as e:  # unreadable or malformed toml
        raise ConfigurationError("config", str(e)) from None


def settings_or_exit(service: str, **overrides: Any) -> Settings:
    """:func:`load_settings`, or one clear line on stderr and exit code 78 (EX_CONFIG)."""
    try:
        return load_settings(**overrides)
    except ConfigurationError as e:
        exit_config_error(service, e)


def config_error_line(service: str, error: ConfigurationError) -> str:
    """The one JSON log line of a configuration error (the shape of every log line: service, event,
    level, ts in epoch ms)."""
    fields: dict[str, Any] = {"service": service, "event": "configuration_error", "level": "error",
                              "ts": time.time_ns() // 1_000_000, "setting": error.setting, "problem": error.problem}
    if error.variable:
        fields["variable"] = error.variable
    fields["exit_code"] = EX_CONFIG
    return json.dumps(fields, ensure_ascii=False)


def exit_config_error(service: str, error: ConfigurationError) -> NoReturn:
    """Exit 78 with one line: on a terminal a sentence on stderr, else the JSON line on stdout, where the
    service's log lines go."""
    if sys.stderr.isatty():
        where = f" (from {error.variable})" if error.variable and error.variable != error.setting else ""
        print(f"{service}: configuration error: {error.setting}: {error.problem}{where}", file=sys.stderr,
              flush=True)
    else:
        print(config_error_line(service, error), file=sys.stdout, flush=True)
    raise SystemExit(EX_CONFIG)
