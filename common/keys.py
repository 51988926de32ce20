"""Every Redis key name of the fleet, built in one place (DESIGN §4).

No service spells a ``quantum:`` string; it calls one of these functions. Symbols pass through
unchanged (``币安人生USDT`` included): Redis keys are binary-safe.
"""

from __future__ import annotations

from collections.abc import Callable

PREFIX = "quantum"
STREAM_PREFIX = f"{PREFIX}:stream:"


def stream(name: str) -> str:
    """The key of stream ``name`` (``trade.intent`` -> ``quantum:stream:trade.intent``)."""
    return f"{STREAM_PREFIX}{name}"


def dlq_stream(name: str) -> str:
    """The dead-letter stream of stream ``name``."""
    return f"{STREAM_PREFIX}{name}.dlq"


def stream_name(key: str) -> str:
    """The registry name of a stream key (inverse of :func:`stream`)."""
    if not key.startswith(STREAM_PREFIX):
        raise ValueError(f"not a stream key: {key!r}")
    return key[len(STREAM_PREFIX) :]


# --- positions and the books -------------------------------------------------------------------


def position(symbol: str) -> str:
    """The one position hash of ``symbol``, written only by apply_layer."""
    return f"{PREFIX}:position:{symbol}"


def position_pattern() -> str:
    """SCAN pattern that finds position hashes (filter with :func:`symbol_of_position_key`)."""
    return f"{PREFIX}:position:*"


def tail(key: str, of: Callable[[str], str]) -> str | None:
    """The variable part (a symbol, a plan id) of ``key`` when ``of`` builds it, else None: the one way
    to read a name back from a key. ``tail("quantum:position:BTCUSDT", position)`` is ``"BTCUSDT"``; a
    ledger or snapshot key, which shares the position prefix, is not a position key (None)."""
    head = of("")
    if not key.startswith(head):
        return None
    rest = key[len(head):]
    return rest if rest and ":" not in rest else None


def symbol_of_position_key(key: str) -> str | None:
    """The symbol of a position hash key, or None for ledger/snapshot keys that share the prefix."""
    return tail(key, position)


def position_ledger(symbol: str) -> str:
    return f"{PREFIX}:position:ledger:{symbol}"


def position_ledger_pattern() -> str:
    return f"{PREFIX}:position:ledger:*"


def ledger_account() -> str:
    return f"{PREFIX}:ledger:account"


def ledger_fill(fill_id: str) -> str:
    """Marker that a fill was booked by harvest_brain (idempotency by ``fill_id``)."""
    return f"{PREFIX}:ledger:fill:{fill_id}"


def ledger_trade(symbol: str) -> str:
    """harvest_brain's running record of the open trade of ``symbol`` (entry VWAP, fills, fees)."""
    return f"{PREFIX}:ledger:trade:{symbol}"


def position_snapshot(symbol: str) -> str:
    return f"{PREFIX}:position:snapshot:{symbol}"


def position_snapshot_pattern() -> str:
    return f"{PREFIX}:position:snapshot:*"


def exit_state(symbol: str) -> str:
    return f"{PREFIX}:exit:state:{symbol}"


# --- execution -------------------------------------------------------------------------------------


def apply_plan(plan_id: str) -> str:
    """The execution record of one plan (state SUBMITTING|DONE)."""
    return f"{PREFIX}:apply:plan:{plan_id}"


def apply_plan_pattern() -> str:
    return f"{PREFIX}:apply:plan:*"


def reconcile_drift(symbol: str) -> str:
    """position_monitor's open drift of ``symbol`` (hash: kind, redis_qty, exchange_qty, since): written
    when a drift is confirmed, deleted when it is resolved. apply_layer blocks entries while it exists."""
    return f"{PREFIX}:reconcile:drift:{symbol}"


def apply_lease() -> str:
    """The active apply_layer's lease (active/standby)."""
    return f"{PREFIX}:apply:lease"


def cooldown(symbol: str) -> str:
    return f"{PREFIX}:cooldown:{symbol}"


# --- policy and the kill switch -------------------------------------------------------------------


def ess() -> str:
    """The one kill switch: state ARMED|TRIPPED, reason, at, by."""
    return f"{PREFIX}:ess"


def policy_current() -> str:
    return f"{PREFIX}:policy:current"


# --- market ----------------------------------------------------------------------------------------


def market_price(symbol: str) -> str:
    return f"{PREFIX}:market:price:{symbol}"


def marketstate(symbol: str) -> str:
    return f"{PREFIX}:marketstate:{symbol}"


def synthetic_market() -> str:
    """JSON of where the synthetic market stands (its clock, each symbol's price and regime), written by
    marketdata as it runs and at stop: a restart resumes there instead of replaying the seed's series."""
    return f"{PREFIX}:marketdata:synthetic"


def exchange_symbols() -> str:
    """Hash symbol -> JSON trading rules (status, tick size, step size, min notional, max leverage)."""
    return f"{PREFIX}:exchange:symbols"


# --- the paper exchange's own book -----------------------------------------------------------------


def paper_orders() -> str:
    """Hash client order id -> JSON order with its fills (the paper exchange's orders, kept across
    restarts; also the duplicate check of client order ids)."""
    return f"{PREFIX}:paper:orders"


def paper_conditionals() -> str:
    """Hash client algo id -> JSON conditional order in any status (NEW, FINISHED, CANCELED, EXPIRED),
    with the fill of a triggered one."""
    return f"{PREFIX}:paper:conditionals"


def paper_open_conditionals() -> str:
    """Hash client algo id -> symbol, of the conditional orders still open (what the trigger loop
    watches)."""
    return f"{PREFIX}:paper:conditionals:open"


def paper_positions() -> str:
    """Hash symbol -> JSON position held on the paper exchange (signed qty, entry VWAP, leverage,
    realized PnL); a closed position is deleted."""
    return f"{PREFIX}:paper:positions"


def paper_account() -> str:
    """Hash of the paper account: wallet_balance, fees, realized_pnl, updated_at."""
    return f"{PREFIX}:paper:account"


def paper_leverage() -> str:
    """Hash symbol -> leverage set on the paper exchange (absent: the default)."""
    return f"{PREFIX}:paper:leverage"


def paper_sequence() -> str:
    """Counter behind paper order, algo and fill ids."""
    return f"{PREFIX}:paper:seq"


def paper_fills(symbol: str) -> str:
    """Sorted set of the symbol's fills (JSON, scored by fill time in ms), trimmed to the newest N."""
    return f"{PREFIX}:paper:fills:{symbol}"


# --- liveness --------------------------------------------------------------------------------------


def heartbeat(service: str, instance: str) -> str:
    return f"{PREFIX}:heartbeat:{service}:{instance}"


def heartbeat_pattern() -> str:
    return f"{PREFIX}:heartbeat:*"


def all_keys_pattern() -> str:
    return f"{PREFIX}:*"


def apply_fill(fill_id: str) -> str:
    """Marker that apply_layer published the fill (execution.result is one per fill, whatever retries)."""
    return f"{PREFIX}:apply:fill:{fill_id}"


def apply_fill_cursor() -> str:
    """Hash symbol -> epoch ms of the last exchange fill apply_layer booked (the polling fallback's start)."""
    return f"{PREFIX}:apply:fill_cursor"



